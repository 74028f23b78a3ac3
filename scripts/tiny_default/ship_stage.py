"""Add a trained cascade stage (interpolation or upscale) to the shipped default model, and name it in cascade.json.

    python scripts/tiny_default/ship_stage.py interpolation outputs/tiny-default/interp/model --factor 4
    python scripts/tiny_default/ship_stage.py interpolation outputs/tiny-default/interp/checkpoints/step-00001000
    python scripts/tiny_default/ship_stage.py upscale outputs/tiny-default/upscale/model --scale 2

SOURCE is the `model/` folder a `vidiff train` run writes at its end, or one of its checkpoints (its EMA weights
over the model it was trained from: the default model, widened for interpolation; --base for an upscaler). The
stage gets the U-Net, stored in fp16 (half the package bytes; cast back on load), plus every component that differs
from the base's (an upscaler's own VAE or pixel codec, scheduler and low-res scheduler) with the source's
model_index.json naming their classes. The stage folder and cascade.json are each written
atomically. Refuses more than 30 MB of weights in the whole default model.
"""

import argparse
import filecmp
import json
import shutil
from pathlib import Path

import torch

from vidiff.atomic import atomic_dir, write_text
from vidiff.model_folder import COMPONENTS, EXTRA_COMPONENTS
from vidiff.models.interpolation import widen_conv_in
from vidiff.models.video_unet import VideoUNet
from vidiff.pipelines.cascade import CASCADE_FILE, STAGE_SETTING
from vidiff.model_folder import DEFAULT_MODEL_DIR
from vidiff.training.checkpoints import load_checkpoint

MAX_BYTES = 30_000_000  # the cap on the shipped weights (issue 6)


def unet_from_checkpoint(checkpoint: Path, base: Path, stage: str) -> VideoUNet:
    unet = VideoUNet.from_pretrained(base / "unet")
    if stage == "interpolation" and unet.unet.config.in_channels == 4:
        unet = widen_conv_in(unet)
    saved = load_checkpoint(checkpoint)
    weights = saved["ema"] if saved["ema"] is not None else saved["params"]
    missing, unexpected = unet.load_state_dict(weights, strict=False)
    buffers = {name for name, _ in unet.named_buffers()}  # position tables: not trained, so not in checkpoints
    missing = [k for k in missing if k not in buffers]
    if unexpected or missing:
        raise ValueError(f"{checkpoint} does not fit {base}: missing {missing[:3]}, unexpected {unexpected[:3]}; "
                         "train with trainable: all, and pass the --base it was trained from")
    return unet


BOOKKEEPING = {"transformers_version", "_diffusers_version", "_name_or_path", "is_local", "local_files_only"}


def component_differs(source: Path, name: str) -> bool:
    """Whether the stage's component differs from the default model's. Weights and other files compare byte for
    byte; JSON configs by their common keys without library bookkeeping, since a re-saved text encoder or tokenizer
    gains the saving library's version and defaults while holding the same weights and vocabulary."""
    base = DEFAULT_MODEL_DIR / name
    if not base.is_dir():
        return True
    comparison = filecmp.dircmp(source / name, base)
    if comparison.left_only or comparison.right_only:
        return True
    for file in comparison.diff_files:
        if not file.endswith(".json"):
            return True
        ours, theirs = (json.loads(Path(folder, name, file).read_text()) for folder in (source, DEFAULT_MODEL_DIR))
        if not (isinstance(ours, dict) and isinstance(theirs, dict)):
            return True
        if any(ours[key] != theirs[key] for key in (ours.keys() & theirs.keys()) - BOOKKEEPING):
            return True
    return False


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=sorted(STAGE_SETTING), help="which stage")
    parser.add_argument("source", type=Path, help="trained model/ folder, or a checkpoint folder of the run")
    parser.add_argument("--base", type=Path, help="model the checkpoint's run started from (default: the default "
                        "model); its other components are shipped with the stage when they differ")
    parser.add_argument("--factor", type=int, default=4, help="interpolation: the default --interpolate (4)")
    parser.add_argument("--scale", type=int, default=2, help="upscale: the default --upscale (2)")
    parser.add_argument("--sampling", type=json.loads, default={}, help="JSON of the settings the stage samples best "
                        "with, e.g. '{\"init\": \"blend\", \"strength\": 0.4, \"steps\": 10}'")
    parser.add_argument("--note", default="", help="free text for the stage's provenance.json")
    args = parser.parse_args(argv)

    components = args.source if (args.source / "unet").is_dir() else (args.base or DEFAULT_MODEL_DIR)
    if (args.source / "unet").is_dir():
        unet = VideoUNet.from_pretrained(args.source / "unet")
    else:
        unet = unet_from_checkpoint(args.source, components, args.stage)
    stage_dir = DEFAULT_MODEL_DIR / args.stage
    with atomic_dir(stage_dir, overwrite=True) as tmp:
        torch.nn.Module.to(unet, torch.float16).save_pretrained(tmp / "unet")  # nn.Module.to: no diffusers warning
        own = [name for name in (*COMPONENTS, *EXTRA_COMPONENTS)
               if (components / name).is_dir() and component_differs(components, name)]
        for name in own:
            shutil.copytree(components / name, tmp / name)
        if own and (components / "model_index.json").is_file():  # the classes of those components
            shutil.copy(components / "model_index.json", tmp / "model_index.json")
        provenance = {"source": str(args.source), "components_from": str(components), "unet_dtype": "float16",
                      "note": args.note}
        (tmp / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    weights = sum(p.stat().st_size for p in DEFAULT_MODEL_DIR.rglob("*.safetensors"))
    cascade_path = DEFAULT_MODEL_DIR / CASCADE_FILE
    cascade = json.loads(cascade_path.read_text()) if cascade_path.is_file() else {}
    cascade[args.stage] = {"path": args.stage, STAGE_SETTING[args.stage]: getattr(args, STAGE_SETTING[args.stage])}
    if args.sampling:
        cascade[args.stage]["sampling"] = args.sampling
    write_text(cascade_path, json.dumps(cascade, indent=2) + "\n")
    print(f"shipped {args.stage} stage from {args.source} to {stage_dir}; the default model holds "
          f"{weights / 1e6:.1f} MB of weights")
    if weights > MAX_BYTES:
        raise SystemExit(f"the default model now holds {weights / 1e6:.1f} MB of weights, over 30 MB; remove "
                         f"{stage_dir} and ship a smaller stage")
    return stage_dir


if __name__ == "__main__":
    main()
