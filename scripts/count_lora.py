"""Parameters and file size of a rank-8 MotionLoRA at Stable Diffusion 1.5 size (shapes only, no weights needed).

    python scripts/count_lora.py [--rank 8]

Two independent counts, which must agree:
- vidiff: the SD 1.5 U-Net inflated with AnimateDiff v2's motion-module layout (diffusers' `MotionAdapter` defaults:
  2 layers per block, a mid-block module, 8 heads), with the LoRA `vidiff train` puts on it (`trainable: lora`,
  `lora_targets: temporal`);
- diffusers: a `UNetMotionModel` of the same layout with a peft `LoraConfig` on every motion module's attention
  q, k, v and out, as diffusers' training scripts add it.
The file size is that of the LoRA written as `vidiff train` writes it (fp32 safetensors, zeros of the right shapes).
"""

import argparse
import tempfile
from pathlib import Path

import torch
from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel
from peft import LoraConfig, inject_adapter_in_model
from safetensors.torch import save_file

from vidiff import inflate_unet
from vidiff.models.lora import add_lora, to_diffusers_name
from vidiff.models.motion_adapter import options_from_adapter_config
from vidiff.testing.configs import PRESETS

MOTION = r".*motion_modules.*\.(to_q|to_k|to_v|to_out\.0)"


def lora_numel(model: torch.nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if ".lora_" in n)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rank", type=int, default=8)
    args = parser.parse_args(argv)
    with torch.device("meta"):  # shapes only
        adapter = MotionAdapter()  # diffusers' defaults: AnimateDiff v2's SD 1.5 motion modules
        options = options_from_adapter_config(dict(adapter.config))
        options.pop("_adapter_layout")
        video = inflate_unet(UNet2DConditionModel(**PRESETS["sd15"]), temporal_conv=False, **options)
        ours = add_lora(video, rank=args.rank, targets="temporal")
        reference = UNetMotionModel(
            block_out_channels=PRESETS["sd15"]["block_out_channels"],
            layers_per_block=adapter.config.motion_layers_per_block, cross_attention_dim=768,
            motion_num_attention_heads=adapter.config.motion_num_attention_heads,
            motion_max_seq_length=adapter.config.motion_max_seq_length,
            use_motion_mid_block=adapter.config.use_motion_mid_block)
        inject_adapter_in_model(LoraConfig(r=args.rank, lora_alpha=args.rank, target_modules=MOTION), reference)
    numel = sum(p.numel() for p in ours.values())
    print(f"motion modules: {sum(p.numel() for p in adapter.parameters()) / 1e6:.1f} M parameters")
    print(f"rank-{args.rank} MotionLoRA: vidiff {numel:,} parameters, diffusers' UNetMotionModel + peft "
          f"{lora_numel(reference):,}, on {sum(1 for n in ours if n.endswith('lora_A.default.weight'))} layers")
    if numel != lora_numel(reference):
        raise SystemExit("the two counts differ")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "lora.safetensors"
        save_file({f"unet.{to_diffusers_name(name.partition('.lora_')[0])}.lora_{name.partition('.lora_')[2]}":
                   torch.zeros(p.shape) for name, p in ours.items()}, path)
        print(f"file (fp32 safetensors): {path.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
