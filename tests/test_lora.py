"""LoRA files in vidiff and in diffusers' AnimateDiffPipeline: the same SD, MotionAdapter, file and latents give the
same U-Net output (max abs diff <= 1e-4, fp32) and the same uint8 frames (within 2/255), for one adapter at 0.8,
two mixed at 0.7 and 0.5, fused and unfused, and after unloading vidiff is back to its base output exactly.

The files are made as their own formats define them: diffusers' and peft's own saving code; kohya / A1111 names
(`lora_unet_<diffusers module path with _>.lora_down.weight`, `.lora_up.weight`, `.alpha`); the original AnimateDiff
MotionLoRA from AnimateDiff's module names (animatediff/models/motion_module.py: `motion_modules.N.
temporal_transformer.transformer_blocks.0.attention_blocks.{0,1}`, diffusers' LoRA processor
`processor.to_q_lora.down.weight`), merged by AnimateDiff as W += alpha * up @ down."""

import copy
import hashlib
import os
import re

import numpy as np
import pytest
import torch
from conftest import TINY_CONFIGS, video_inputs
from diffusers import AnimateDiffPipeline, MotionAdapter, StableDiffusionPipeline, UNetMotionModel
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file

from vidiff.models.motion_adapter import inflate_with_motion_adapter
from vidiff.pipelines.lora import lora_record, load_loras, parse_lora_spec
from vidiff.pipelines.text_to_video import TextToVideoPipeline

MOTION = r".*motion_modules.*\.(to_q|to_k|to_v|to_out\.0)"
SPATIAL = r".*attentions.*\.(to_q|to_k|to_v|to_out\.0)"
PROMPT = "a red circle moving right"


def _text_encoder_takes_lora() -> bool:
    """transformers loads text-encoder adapters only with a peft it accepts (transformers 5.24 wants peft >= 0.22;
    0.21.2 was the newest on PyPI when this was written): both pipelines then refuse text-encoder LoRAs."""
    from transformers import CLIPTextConfig, CLIPTextModel

    model = CLIPTextModel(CLIPTextConfig(hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                                         num_attention_heads=2))
    try:
        model.add_adapter(LoraConfig(r=1, target_modules=["q_proj"]))
    except ValueError:
        return False
    return True


TEXT_LORA = pytest.mark.skipif(not _text_encoder_takes_lora(), reason="transformers refuses this peft version")


@pytest.fixture(scope="module")
def adapter_folder(tmp_path_factory, tiny_sd_folder):
    from diffusers import UNet2DConditionModel

    config = UNet2DConditionModel.load_config(tiny_sd_folder / "unet")
    torch.manual_seed(0)
    adapter = MotionAdapter(block_out_channels=tuple(config["block_out_channels"]), motion_layers_per_block=1,
                            motion_num_attention_heads=4, motion_norm_num_groups=8, motion_max_seq_length=16)
    with torch.no_grad():  # every motion module does something
        for name, param in adapter.named_parameters():
            if "proj_out" in name:
                param.normal_(0, 0.2)
    folder = tmp_path_factory.mktemp("adapter") / "adapter"
    adapter.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def sd_components(tiny_sd_folder):
    """The tiny SD's components, loaded once; every pipeline gets its own deep copy."""
    return StableDiffusionPipeline.from_pretrained(tiny_sd_folder).components


def make_pipelines(components, adapter_folder, temporal_conv=False):
    """(vidiff TextToVideoPipeline, diffusers AnimateDiffPipeline), each on its own copy of the same weights."""
    ours_sd, theirs_sd = ({k: copy.deepcopy(components[k]) for k in ("vae", "text_encoder", "tokenizer", "unet",
                                                                     "scheduler")} for _ in range(2))
    unet = inflate_with_motion_adapter(ours_sd.pop("unet"), adapter_folder, temporal_conv=temporal_conv)
    ours = TextToVideoPipeline(unet=unet, **ours_sd)
    theirs = AnimateDiffPipeline(motion_adapter=MotionAdapter.from_pretrained(adapter_folder), **theirs_sd)
    for pipe in (ours, theirs):
        pipe.set_progress_bar_config(disable=True)
    return ours, theirs


@pytest.fixture
def pipes(sd_components, adapter_folder):
    return make_pipelines(sd_components, adapter_folder)


# ------------------------------------------------------------------------------------------ LoRA files, by format


def _randomize(model, seed, std=0.1):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * std)


def diffusers_lora(folder, sd, adapter_folder, targets, text_encoder=False, rank=4, alpha=8, seed=0):
    """A LoRA as diffusers' training scripts save it: peft adapters on a UNetMotionModel (and CLIP), written by
    `AnimateDiffPipeline.save_lora_weights` with their LoraConfigs as metadata (alpha != rank: the metadata counts)."""
    unet = UNetMotionModel.from_unet2d(sd["unet"], MotionAdapter.from_pretrained(adapter_folder))
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets)
    unet.add_adapter(config)
    _randomize(unet, seed)
    kwargs = {}
    if text_encoder:
        text_config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=["q_proj", "k_proj", "v_proj", "out_proj"])
        text = copy.deepcopy(sd["text_encoder"])
        text.add_adapter(text_config)
        _randomize(text, seed + 1)
        kwargs = dict(text_encoder_lora_layers=get_peft_model_state_dict(text),
                      text_encoder_lora_adapter_metadata=text_config.to_dict())
    AnimateDiffPipeline.save_lora_weights(folder, unet_lora_layers=get_peft_model_state_dict(unet),
                                          unet_lora_adapter_metadata=config.to_dict(), **kwargs)
    return folder


def kohya_lora(path, sd, rank=4, alpha=2.0, seed=0, text_encoder=False):
    """A kohya / A1111 SD LoRA: spatial attention projections, the transformers' 1x1 conv proj_in / proj_out, and
    (text_encoder) CLIP's attention: each `lora_down` (rank, in), `lora_up` (out, rank), `alpha` (scale alpha/rank)."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    layers = [(f"lora_unet_{n.replace('.', '_')}", m) for n, m in sd["unet"].named_modules()
              if re.fullmatch(r".*attentions\.\d+\.(proj_in|proj_out|transformer_blocks\.\d+\.attn[12]\."
                              r"(to_q|to_k|to_v|to_out\.0))", n)]
    layers += [(f"lora_te_text_model_{n.replace('.', '_')}", m) for n, m in sd["text_encoder"].named_modules()
               if text_encoder and re.fullmatch(r"encoder\.layers\.\d+\.self_attn\.(q|k|v|out)_proj", n)]
    for name, module in layers:
        conv = isinstance(module, torch.nn.Conv2d)
        width_in, width_out = (module.in_channels, module.out_channels) if conv else (module.in_features,
                                                                                      module.out_features)
        tail = (1, 1) if conv else ()
        state[f"{name}.lora_down.weight"] = torch.randn((rank, width_in, *tail), generator=generator) * 0.1
        state[f"{name}.lora_up.weight"] = torch.randn((width_out, rank, *tail), generator=generator) * 0.1
        state[f"{name}.alpha"] = torch.tensor(alpha)
    save_file(state, path)
    return path


def animatediff_motion_lora(path, reference_unet, rank=4, seed=0, wrapper=True):
    """An original AnimateDiff MotionLoRA `.ckpt`, keyed by AnimateDiff's own module names; widths read from the
    matching diffusers layer (`reference_names`). As AnimateDiff's train.py saves it: inside a `state_dict`
    wrapper with the epoch and step, plus the dummy `animatediff_config` entry of its released files."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for original, diffusers_name in reference_names(reference_unet).items():
        layer = reference_unet.get_submodule(diffusers_name)
        state[f"{original}.down.weight"] = torch.randn(rank, layer.in_features, generator=generator) * 0.1
        state[f"{original}.up.weight"] = torch.randn(layer.out_features, rank, generator=generator) * 0.1
    checkpoint = {"epoch": 3, "global_step": 1000, "state_dict": {**state, "animatediff_config": ""}}
    torch.save(checkpoint if wrapper else state, path)
    return path, state


def reference_names(unet: UNetMotionModel) -> dict[str, str]:
    """AnimateDiff MotionLoRA name (without .down/.up.weight) -> diffusers layer, for every motion module of
    `unet`: AnimateDiff's `temporal_transformer` holds the blocks, `attention_blocks.0/1` are diffusers'
    `attn1/attn2`, and `to_out_lora` is `to_out.0` (diffusers' conversion script and AnimateDiff's loader)."""
    names = {}
    for module_name, _ in unet.named_modules():
        match = re.fullmatch(r"(.*\.motion_modules\.\d+)\.transformer_blocks\.(\d+)\.attn([12])\.to_(q|k|v|out)(\.0)?",
                             module_name)
        if match:
            stem, block, attention, projection, _ = match.groups()
            original = (f"{stem}.temporal_transformer.transformer_blocks.{block}.attention_blocks."
                        f"{int(attention) - 1}.processor.to_{projection}_lora")
            names[original] = module_name
    return names


def diffusers_script_conversion(state):
    """diffusers' scripts/convert_animatediff_motion_lora_to_diffusers.py, applied in memory."""
    converted = {}
    for key, value in state.items():
        key = (key.replace(".norms.0", ".norm1").replace(".norms.1", ".norm2").replace(".ff_norm", ".norm3")
               .replace(".attention_blocks.0", ".attn1").replace(".attention_blocks.1", ".attn2")
               .replace(".temporal_transformer", ""))
        converted[f"unet.{key}"] = value
    return converted


# -------------------------------------------------------------------------------------------------- comparisons


def unet_outputs(ours, theirs, frames=6):
    sample, timestep, text, _ = video_inputs(TINY_CONFIGS["sd15"], batch=2, frames=frames)
    with torch.no_grad():
        mine = ours.unet(sample, timestep, text).sample
        reference = theirs.unet(sample, timestep, text.repeat_interleave(frames, dim=0)).sample
    return mine, reference


def assert_same_unet(ours, theirs):
    mine, reference = unet_outputs(ours, theirs)
    assert (mine - reference).abs().max() <= 1e-4, (mine - reference).abs().max()
    return mine


def assert_same_frames(ours, theirs):
    latents = torch.randn(1, 4, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    kwargs = dict(num_frames=4, num_inference_steps=2, guidance_scale=5.0, negative_prompt="static", output_type="np")
    mine = ours(PROMPT, latents=latents, **kwargs).frames
    reference = theirs(PROMPT, latents=latents.clone(), **kwargs).frames
    reference = (np.asarray(reference) * 255).round().astype(np.uint8)  # diffusers' np: float in [0, 1]
    assert mine.dtype == np.uint8 and mine.shape == reference.shape
    assert np.abs(mine.astype(int) - reference.astype(int)).max() <= 2
    return mine


def base_output(ours):
    ours.use_conv_layout(torch.device("cpu"))  # the layout sampling puts the U-Net in, so outputs compare bit for bit
    sample, timestep, text, _ = video_inputs(TINY_CONFIGS["sd15"], batch=2, frames=6)
    with torch.no_grad():
        return ours.unet(sample, timestep, text).sample


# ------------------------------------------------------------------------------------------------------- parity


@pytest.mark.parametrize("fmt", ["diffusers-motion", "diffusers-spatial", "kohya", "animatediff-ckpt",
                                 pytest.param("diffusers-spatial-text", marks=TEXT_LORA),
                                 pytest.param("kohya-text", marks=TEXT_LORA)])
def test_one_lora_at_0_8_matches_animatediff_pipeline(fmt, pipes, sd_components, adapter_folder, tmp_path):
    ours, theirs = pipes
    base = base_output(ours)
    base_frames = ours(PROMPT, num_frames=4, num_inference_steps=2, generator=torch.Generator().manual_seed(0)).frames
    if fmt == "diffusers-motion":
        path = their_path = diffusers_lora(tmp_path / "lora", sd_components, adapter_folder, MOTION)
    elif fmt.startswith("diffusers-spatial"):
        path = their_path = diffusers_lora(tmp_path / "lora", sd_components, adapter_folder, SPATIAL,
                                           text_encoder=fmt.endswith("text"))
    elif fmt.startswith("kohya"):
        path = their_path = kohya_lora(tmp_path / "kohya.safetensors", sd_components, text_encoder=fmt.endswith("text"))
    else:
        path, state = animatediff_motion_lora(tmp_path / "v2_lora_PanDown.ckpt", theirs.unet)
        their_path = diffusers_script_conversion(state)
    ours.load_lora_weights(path, adapter_name="x")
    theirs.load_lora_weights(their_path, adapter_name="x")
    for pipe in (ours, theirs):
        pipe.set_adapters("x", 0.8)
    assert ours.get_active_adapters() == theirs.get_active_adapters() == ["x"]
    loaded = assert_same_unet(ours, theirs)
    assert (loaded - base).abs().max() > 1e-2  # the LoRA really changes the U-Net
    assert_same_frames(ours, theirs)

    ours.unload_lora_weights()
    assert torch.equal(base_output(ours), base)  # back to the base model exactly
    again = ours(PROMPT, num_frames=4, num_inference_steps=2, generator=torch.Generator().manual_seed(0)).frames
    assert np.array_equal(again, base_frames)


def test_two_loras_mixed_fused_and_unfused_match(sd_components, adapter_folder, tmp_path):
    ours, theirs = make_pipelines(sd_components, adapter_folder, temporal_conv=True)  # identity convs
    base = base_output(ours)
    motion = diffusers_lora(tmp_path / "motion", sd_components, adapter_folder, MOTION)
    style = kohya_lora(tmp_path / "style.safetensors", sd_components, seed=1)

    def load_both(pipes):
        for pipe in pipes:
            pipe.load_lora_weights(motion, adapter_name="motion")
            pipe.load_lora_weights(style, adapter_name="style")
            pipe.set_adapters(["motion", "style"], [0.7, 0.5])

    load_both((ours, theirs))
    mixed = assert_same_unet(ours, theirs)
    assert_same_frames(ours, theirs)
    ours.unload_lora_weights()
    assert torch.equal(base_output(ours), base)

    load_both((ours,))
    for pipe in (ours, theirs):
        pipe.fuse_lora(lora_scale=1.0)
    assert ours.fused_loras == theirs.fused_loras == {"motion", "style"}
    fused = assert_same_unet(ours, theirs)
    assert (fused - mixed).abs().max() <= 1e-4  # fusing keeps the weighted mix
    assert_same_frames(ours, theirs)
    for pipe in (ours, theirs):
        pipe.unfuse_lora()
    assert (assert_same_unet(ours, theirs) - mixed).abs().max() <= 1e-5
    ours.unload_lora_weights()  # fusing added and unfusing subtracted the mix in fp32, as in diffusers: not bit-exact
    torch.testing.assert_close(base_output(ours), base, atol=1e-5, rtol=0)


def test_animatediff_motion_lora_merges_as_animatediff_does(pipes, tmp_path):
    """AnimateDiff's own meaning, W += alpha * up @ down with alpha the LoRA's weight, on diffusers' layers."""
    ours, theirs = pipes
    path, state = animatediff_motion_lora(tmp_path / "v2_lora_ZoomIn.ckpt", theirs.unet, wrapper=False)
    ours.load_lora_weights(path, adapter_name="zoom")
    ours.set_adapters("zoom", 0.8)
    with torch.no_grad():
        for original, layer in reference_names(theirs.unet).items():
            weight = theirs.unet.get_submodule(layer).weight
            weight += 0.8 * state[f"{original}.up.weight"] @ state[f"{original}.down.weight"]
    assert_same_unet(ours, theirs)


# ---------------------------------------------------------------------------------------------------- bad input


def _nothing_loaded(pipe):
    assert not any(pipe.get_list_adapters().values())
    assert not any("lora" in name for name, _ in pipe.unet.named_parameters())
    assert not any("lora" in name for name, _ in pipe.text_encoder.named_parameters())


def test_keys_that_match_no_layer_are_refused_whole(pipes, sd_components, adapter_folder, tmp_path):
    ours, _ = pipes
    folder = diffusers_lora(tmp_path / "lora", sd_components, adapter_folder, MOTION)
    from safetensors.torch import load_file

    good = load_file(folder / "pytorch_lora_weights.safetensors")
    foreign = {k.replace("down_blocks.0.", "down_blocks.7."): v for k, v in good.items()}  # another layout
    save_file(foreign, tmp_path / "foreign.safetensors")
    with pytest.raises(ValueError, match=r"foreign.safetensors: \d+ of its \d+ U-Net LoRA keys name no layer of this "
                                         r"model, e.g. unet.down_blocks.7.*; expected diffusers names") as error:
        ours.load_lora_weights(tmp_path / "foreign.safetensors")
    assert len(str(error.value).splitlines()) == 1 and str(error.value).count("down_blocks.7") == 3
    _nothing_loaded(ours)

    save_file({**good, "unet.down_blocks.9.attentions.0.proj_in.lora_A.weight": torch.zeros(4, 8)},
              tmp_path / "partial.safetensors")
    with pytest.raises(ValueError, match="1 of its .* keys name no layer"):  # one stray key: nothing half-way
        ours.load_lora_weights(tmp_path / "partial.safetensors")
    _nothing_loaded(ours)

    save_file({"model.layers.0.weight": torch.zeros(2)}, tmp_path / "not-lora.safetensors")
    with pytest.raises(ValueError, match="not a LoRA: 1 keys name no LoRA weight, e.g. model.layers.0.weight"):
        ours.load_lora_weights(tmp_path / "not-lora.safetensors")


def test_a_failing_text_encoder_part_takes_the_unet_part_out_again(pipes, sd_components, tmp_path, monkeypatch):
    ours, _ = pipes

    def refuse(*args, **kwargs):
        raise RuntimeError("text encoder refused the adapter")

    monkeypatch.setattr(type(ours), "load_lora_into_text_encoder", refuse)
    with pytest.raises(RuntimeError, match="text encoder refused"):
        ours.load_lora_weights(kohya_lora(tmp_path / "k.safetensors", sd_components, text_encoder=True), "k")
    _nothing_loaded(ours)


def test_lora_for_other_widths_names_the_layer_and_both_shapes(pipes, tmp_path):
    ours, _ = pipes
    wide = UNetMotionModel(block_out_channels=(64, 128, 256, 256), layers_per_block=1, norm_num_groups=8,
                           cross_attention_dim=32, motion_num_attention_heads=4, motion_max_seq_length=16,
                           use_motion_mid_block=True)
    wide.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=MOTION))
    AnimateDiffPipeline.save_lora_weights(tmp_path / "wide", unet_lora_layers=get_peft_model_state_dict(wide))
    layer = r"down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.to_\w+"
    shapes = r"its lora_A has shape \(4, 64\) \(input width 64\), the layer takes 32 -> 32"
    with pytest.raises(ValueError, match=rf"the LoRA for {layer} was made for other widths: {shapes}"):
        ours.load_lora_weights(tmp_path / "wide")
    _nothing_loaded(ours)


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_holds_code_is_refused(pipes, tmp_path):
    ours, theirs = pipes
    _, state = animatediff_motion_lora(tmp_path / "ok.ckpt", theirs.unet)
    _Exploit.marker = tmp_path / "pwned"
    torch.save({"state_dict": state, "animatediff_config": _Exploit()}, tmp_path / "evil.ckpt")
    with pytest.raises(ValueError, match=r"refused to load .*evil.ckpt.*weights_only=True"):
        ours.load_lora_weights(tmp_path / "evil.ckpt")
    assert not (tmp_path / "pwned").exists()
    _nothing_loaded(ours)


def test_scales_must_be_numbers(pipes, sd_components, adapter_folder, tmp_path):
    ours, _ = pipes
    ours.load_lora_weights(diffusers_lora(tmp_path / "lora", sd_components, adapter_folder, MOTION), "x")
    for bad in ("abc", float("nan"), True, {"unet": {"down": 0.5}}):
        with pytest.raises(ValueError, match=r"adapter weight for 'x' .*is not a finite number"):
            ours.set_adapters("x", bad)
    with pytest.raises(ValueError, match="names 'vae'; name unet or text_encoder"):
        ours.set_adapters("x", {"vae": 0.5})
    ours.set_adapters("x", {"unet": 0.5, "text_encoder": 1.0})  # per component, as diffusers takes it
    with pytest.raises(ValueError, match="adapter name 'x' is already loaded"):
        ours.load_lora_weights(tmp_path / "lora", adapter_name="x")


def test_cli_entry_points(pipes, sd_components, adapter_folder, tmp_path):
    ours, theirs = pipes
    motion = diffusers_lora(tmp_path / "motion", sd_components, adapter_folder, MOTION)
    style = kohya_lora(tmp_path / "a=b.safetensors", sd_components)  # a path that itself holds '='
    assert parse_lora_spec(f"{motion}=0.7") == (motion, 0.7)
    assert parse_lora_spec(str(style)) == (style, 1.0)
    assert parse_lora_spec(f"{style}=-0.5") == (style, -0.5)
    with pytest.raises(ValueError, match=r"LoRA scale 'strong' in .* is not a number; write PATH=SCALE"):
        parse_lora_spec(f"{motion}=strong")
    with pytest.raises(ValueError, match="not a finite number"):
        parse_lora_spec(f"{motion}=inf")
    with pytest.raises(FileNotFoundError, match="LoRA file not found: .*missing.safetensors"):
        parse_lora_spec(f"{tmp_path / 'missing.safetensors'}=0.5")

    bad = tmp_path / "bad.safetensors"
    save_file({"unet.down_blocks.9.attentions.0.proj_in.lora_A.weight": torch.zeros(4, 8)}, bad)
    with pytest.raises(ValueError, match="name no layer"):  # the second fails: the first is taken out again
        load_loras(ours, [(motion, 0.7), (bad, 1.0)])
    _nothing_loaded(ours)
    records = load_loras(ours, [parse_lora_spec(f"{motion}=0.7"), parse_lora_spec(f"{style}=0.5")])
    expected = hashlib.sha256((motion / "pytorch_lora_weights.safetensors").read_bytes()).hexdigest()
    assert records[0] == {"path": str(motion), "sha256": expected, "scale": 0.7}
    assert records[1]["scale"] == 0.5 and records[1] == lora_record(style, 0.5)
    for name, path in (("lora0", motion), ("lora1", style)):
        theirs.load_lora_weights(path, adapter_name=name)
    theirs.set_adapters(["lora0", "lora1"], [0.7, 0.5])
    assert_same_unet(ours, theirs)
