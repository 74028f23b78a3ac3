"""Adapters on attention layers: a peft LoRA, a wrapped projection or a custom processor changes vidiff's output
exactly as it changes diffusers' UNetMotionModel on the same weights, on temporal and on spatial attention; with no
adapter the lean temporal attention runs."""

import re

import pytest
import torch
from conftest import TINY_CONFIGS, tiny_motion_adapter, tiny_unet2d, video_inputs
from diffusers import UNetMotionModel
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

from vidiff.models.motion_adapter import inflate_with_motion_adapter
from vidiff.models.temporal import TemporalAttention

TEMPORAL = r".*motion_modules.*\.(to_q|to_k|to_v|to_out\.0)"
SPATIAL = r".*attentions.*\.(to_q|to_k|to_v|to_out\.0)"


@pytest.fixture
def models(tmp_path):
    """(vidiff VideoUNet, diffusers UNetMotionModel) on the same image U-Net and MotionAdapter; vidiff has no
    temporal convs, so the two are the same function."""
    unet2d, adapter = tiny_unet2d("sd15"), tiny_motion_adapter()
    adapter.save_pretrained(tmp_path / "adapter")
    video = inflate_with_motion_adapter(unet2d, tmp_path / "adapter", temporal_conv=False).eval()
    reference = UNetMotionModel.from_unet2d(unet2d, adapter).eval()
    return video, reference


def run(model, inputs):
    sample, timestep, text = inputs
    with torch.no_grad():
        if isinstance(model, UNetMotionModel):  # diffusers >= 0.31 takes text per frame
            return model(sample, timestep, text.repeat_interleave(sample.shape[2], dim=0)).sample
        return model(sample, timestep, text).sample


def vidiff_name(diffusers_name: str) -> str:
    """Where a UNetMotionModel module lives in a VideoUNet: motion modules by the same name, the image layers
    under `unet.` (VideoUNet keeps the 2-D U-Net whole)."""
    return diffusers_name if ".motion_modules." in diffusers_name else f"unet.{diffusers_name}"


def add_same_lora(video, reference, targets: str, name: str = "default", seed: int = 0):
    """A random rank-4 peft LoRA on `targets` of the reference, copied by name into vidiff with peft's own API."""
    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=4, target_modules=targets, init_lora_weights=False)
    reference.add_adapter(config, adapter_name=name)
    video.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=targets), adapter_name=name)
    weights = get_peft_model_state_dict(reference, adapter_name=name)
    result = set_peft_model_state_dict(video, {vidiff_name(k): v for k, v in weights.items()}, adapter_name=name)
    assert not result.unexpected_keys
    return len(weights) // 2


@pytest.mark.parametrize("targets", [TEMPORAL, SPATIAL])
def test_peft_lora_changes_vidiff_as_it_changes_unet_motion_model(models, targets):
    video, reference = models
    inputs = video_inputs(TINY_CONFIGS["sd15"], frames=6)[:3]
    base = run(video, inputs)
    layers = sum(bool(re.fullmatch(targets, n)) for n, _ in reference.named_modules())
    assert add_same_lora(video, reference, targets) == layers > 50  # every targeted layer got its LoRA
    ours, theirs = run(video, inputs), run(reference, inputs)
    assert (ours - base).abs().max() > 1e-2  # the LoRA does something (the defect: exactly 0.0 on temporal layers)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)

    video.set_adapters("default", 0.6)  # peft's scaling reaches the temporal layers too
    reference.set_adapters("default", 0.6)
    torch.testing.assert_close(run(video, inputs), run(reference, inputs), atol=1e-5, rtol=1e-5)

    video.unload_lora()  # back to plain layers: the lean path, and exactly the base output
    assert torch.equal(run(video, inputs), base)


class Scaled(torch.nn.Module):
    """Some module wrapping a projection: not peft, not a Linear."""

    def __init__(self, inner: torch.nn.Linear):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return 1.5 * self.inner(x)


class HalvingProcessor(AttnProcessor2_0):
    """A custom processor: the default attention, its output halved."""

    def __call__(self, attn, hidden_states, *args, **kwargs):
        return 0.5 * super().__call__(attn, hidden_states, *args, **kwargs)


def _attentions(model, part: str):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, Attention) and f".{part}." in n]


@pytest.mark.parametrize("part", ["motion_modules", "attentions"])
def test_wrapped_projection_and_custom_processor_match_unet_motion_model(models, part):
    video, reference = models
    inputs = video_inputs(TINY_CONFIGS["sd15"], frames=5)[:3]
    base = run(video, inputs)
    for model in (video, reference):
        for _, attn in _attentions(model, part):
            attn.to_v = Scaled(attn.to_v)
    wrapped = run(video, inputs)
    assert (wrapped - base).abs().max() > 1e-2
    torch.testing.assert_close(wrapped, run(reference, inputs), atol=1e-5, rtol=1e-5)

    for model in (video, reference):
        for _, attn in _attentions(model, part):
            attn.set_processor(HalvingProcessor())
    processed = run(video, inputs)
    assert (processed - wrapped).abs().max() > 1e-3
    torch.testing.assert_close(processed, run(reference, inputs), atol=1e-5, rtol=1e-5)


def test_set_attn_processor_reaches_every_attention_layer(models):
    video, reference = models
    inputs = video_inputs(TINY_CONFIGS["sd15"], frames=4)[:3]
    assert set(video.attn_processors) >= {f"{vidiff_name(n)}" for n in reference.attn_processors}
    for model in (video, reference):
        model.set_attn_processor(HalvingProcessor())
    torch.testing.assert_close(run(video, inputs), run(reference, inputs), atol=1e-5, rtol=1e-5)


def test_lean_path_runs_only_without_adapters(models, monkeypatch):
    video, reference = models
    temporal = {id(m) for t in video.modules() if isinstance(t, TemporalAttention) for m in t.modules()}
    calls = []
    forward = Attention.forward

    def counting(self, *args, **kwargs):
        calls.append(id(self) in temporal)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(Attention, "forward", counting)
    inputs = video_inputs(TINY_CONFIGS["sd15"], frames=4)[:3]
    run(video, inputs)
    assert calls and not any(calls)  # spatial attentions ran through Attention.forward, temporal ones did not
    add_same_lora(video, reference, SPATIAL)
    calls.clear()
    run(video, inputs)
    assert not any(calls)  # a spatial LoRA leaves the temporal layers on the lean path
    add_same_lora(video, reference, TEMPORAL, name="motion")
    calls.clear()
    run(video, inputs)
    motion_modules = sum(isinstance(m, TemporalAttention) for m in video.modules())
    assert sum(calls) == 2 * motion_modules == 26  # the two frame attentions of every motion module


def test_lora_on_temporal_convs_equals_its_merged_weights(tmp_path):
    """Temporal convs (no diffusers counterpart): a peft LoRA on them counts, as peft's own merge says."""
    from vidiff.models.inflate import inflate_unet

    video = inflate_unet(tiny_unet2d("sd15"), temporal_attention=False).eval()
    inputs = video_inputs(TINY_CONFIGS["sd15"], frames=5)[:3]
    base = run(video, inputs)
    torch.manual_seed(0)
    video.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=r".*temporal_convs\.\d+\.conv",
                                 init_lora_weights=False))
    with_lora = run(video, inputs)
    assert (with_lora - base).abs().max() > 1e-2
    video.fuse_lora()  # peft merges W + B A into the conv; the merged conv is plain again after unloading
    video.unload_lora()
    torch.testing.assert_close(run(video, inputs), with_lora, atol=1e-5, rtol=1e-5)
