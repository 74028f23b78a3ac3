"""AnimateDiff motion modules: numerical parity with diffusers' UNetMotionModel and AnimateDiffPipeline."""

import os

import pytest
import torch
from conftest import TINY_CONFIGS, tiny_unet2d, video_inputs
from diffusers import AnimateDiffPipeline, MotionAdapter, UNetMotionModel
from safetensors.torch import save_file

from vidiff.models.motion_adapter import (
    ORIGINAL_TO_VIDIFF,
    export_motion_adapter,
    inflate_with_motion_adapter,
    load_weights_file,
)
from vidiff.pipelines.text_to_video import TextToVideoPipeline


def tiny_adapter(seed=0, mid=True, max_len=24):
    torch.manual_seed(seed)
    config = TINY_CONFIGS["sd15"]
    adapter = MotionAdapter(
        block_out_channels=tuple(config["block_out_channels"]),
        motion_layers_per_block=config["layers_per_block"],
        motion_num_attention_heads=4,
        motion_norm_num_groups=config["norm_num_groups"],
        motion_max_seq_length=max_len,
        use_motion_mid_block=mid,
    )
    with torch.no_grad():  # make sure every motion module does something (diffusers' init already is non-zero)
        for name, param in adapter.named_parameters():
            if "proj_out" in name:
                param.normal_(0, 0.2)
    return adapter.eval()


@pytest.fixture
def adapter_folder(tmp_path):
    tiny_adapter().save_pretrained(tmp_path / "adapter")
    return tmp_path / "adapter"


def diffusers_output(unet2d, adapter, sample, timestep, text):
    motion_unet = UNetMotionModel.from_unet2d(unet2d, adapter).eval()
    with torch.no_grad():  # diffusers >= 0.31 takes text per frame, (b f) n d, as AnimateDiffPipeline repeats it
        return motion_unet(sample, timestep, text.repeat_interleave(sample.shape[2], dim=0)).sample


@pytest.mark.parametrize("mid", [True, False])
def test_motion_adapter_folder_matches_unet_motion_model(tmp_path, mid):
    unet2d, adapter = tiny_unet2d("sd15"), tiny_adapter(mid=mid)
    adapter.save_pretrained(tmp_path / "adapter")
    video = inflate_with_motion_adapter(unet2d, tmp_path / "adapter").eval()
    assert video.config.max_frames == 24 and video.config.motion_mid_block is mid
    sample, timestep, text, _ = video_inputs(TINY_CONFIGS["sd15"], frames=6)
    with torch.no_grad():
        ours = video(sample, timestep, text).sample
    reference = diffusers_output(unet2d, adapter, sample, timestep, text)
    frame_by_frame_gap = (reference - reference.mean(dim=2, keepdim=True)).abs().max()
    assert frame_by_frame_gap > 1e-3  # the adapter really mixes frames, so the comparison means something
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def _to_original_layout(state):
    """The inverse of the documented mapping: diffusers keys -> original AnimateDiff keys (pe buffers dropped)."""
    original = {}
    for key, value in state.items():
        if key.endswith(".pe"):
            continue
        for old, new in reversed(ORIGINAL_TO_VIDIFF[1:]):
            key = key.replace(new, old)
        key = key.replace(".transformer_blocks.", ".temporal_transformer.transformer_blocks.")
        for part in ("norm.", "proj_in.", "proj_out."):
            key = key.replace(f".motion_modules.{key.split('.motion_modules.')[1].split('.')[0]}.{part}",
                              f".motion_modules.{key.split('.motion_modules.')[1].split('.')[0]}.temporal_transformer.{part}")
        original[key] = value.contiguous()
    return original


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_original_animatediff_layout_loads_and_matches(tmp_path, suffix):
    unet2d, adapter = tiny_unet2d("sd15"), tiny_adapter()
    original = _to_original_layout(adapter.state_dict())
    assert any(".temporal_transformer.transformer_blocks.0.attention_blocks.1.to_q" in k for k in original)
    assert any(".norms.0." in k for k in original) and any(".ff_norm." in k for k in original)
    path = tmp_path / f"mm_sd_v15{suffix}"
    if suffix == ".safetensors":
        save_file(original, path)
    else:
        torch.save({"state_dict": {**original, "animatediff_config": ""}}, path)  # v3 files carry this dummy
    # original files do not record head counts (AnimateDiff always used 8); this tiny adapter has 4
    video = inflate_with_motion_adapter(unet2d, path, max_frames=24, temporal_num_attention_heads=4).eval()
    sample, timestep, text, _ = video_inputs(TINY_CONFIGS["sd15"], frames=5)
    with torch.no_grad():
        ours = video(sample, timestep, text).sample
    torch.testing.assert_close(ours, diffusers_output(unet2d, adapter, sample, timestep, text), atol=1e-5, rtol=1e-5)


def test_export_round_trip_through_diffusers(tmp_path, adapter_folder):
    unet2d = tiny_unet2d("sd15")
    video = inflate_with_motion_adapter(unet2d, adapter_folder, temporal_conv=True).eval()  # convs at identity
    with torch.no_grad():
        for name, param in video.named_parameters():
            if ".motion_modules." in name:
                param.add_(torch.randn_like(param) * 0.05)  # as if vidiff had trained them
    export_motion_adapter(video, tmp_path / "exported")
    reloaded = MotionAdapter.from_pretrained(tmp_path / "exported")
    sample, timestep, text, _ = video_inputs(TINY_CONFIGS["sd15"], frames=4)
    with torch.no_grad():
        ours = video(sample, timestep, text).sample
    torch.testing.assert_close(diffusers_output(unet2d, reloaded, sample, timestep, text), ours, atol=1e-5, rtol=1e-5)


def test_export_refuses_to_drop_trained_temporal_convs_unless_told(tmp_path, adapter_folder, caplog):
    unet2d = tiny_unet2d("sd15")
    video = inflate_with_motion_adapter(unet2d, adapter_folder, temporal_conv=True).eval()
    conv = video.up_blocks[1].temporal_convs[0].conv
    with torch.no_grad():
        conv.weight.add_(torch.randn_like(conv.weight) * 0.05)  # one trained conv is enough
    with pytest.raises(ValueError, match=r"1 trained temporal convolutions \(e.g. up_blocks.1.temporal_convs.0\).*"
                                         r"pass include_temporal_conv=False"):
        export_motion_adapter(video, tmp_path / "exported")
    assert not (tmp_path / "exported").exists()

    export_motion_adapter(video, tmp_path / "exported", include_temporal_conv=False)
    assert "without 1 trained temporal convolutions" in caplog.text
    # what AnimateDiffPipeline gets is the model with that conv dropped (back at the identity), nothing else
    sample, timestep, text, _ = video_inputs(TINY_CONFIGS["sd15"], frames=4)
    with torch.no_grad():
        trained = video(sample, timestep, text).sample
        torch.nn.init.dirac_(conv.weight)
        without = video(sample, timestep, text).sample
    theirs = diffusers_output(unet2d, MotionAdapter.from_pretrained(tmp_path / "exported"), sample, timestep, text)
    torch.testing.assert_close(theirs, without, atol=1e-5, rtol=1e-5)
    assert (theirs - trained).abs().max() > 1e-3


def test_pipeline_matches_animatediff_pipeline(tiny_sd_folder, tmp_path):
    from diffusers import StableDiffusionPipeline

    sd = StableDiffusionPipeline.from_pretrained(tiny_sd_folder)
    torch.manual_seed(0)
    adapter = MotionAdapter(block_out_channels=tuple(sd.unet.config.block_out_channels),
                            motion_layers_per_block=sd.unet.config.layers_per_block, motion_num_attention_heads=4,
                            motion_norm_num_groups=8, motion_max_seq_length=16).eval()
    adapter.save_pretrained(tmp_path / "adapter")
    reference_pipe = AnimateDiffPipeline(vae=sd.vae, text_encoder=sd.text_encoder, tokenizer=sd.tokenizer,
                                         unet=sd.unet, motion_adapter=adapter, scheduler=sd.scheduler)
    video_unet = inflate_with_motion_adapter(sd.unet, tmp_path / "adapter")
    pipe = TextToVideoPipeline(vae=sd.vae, text_encoder=sd.text_encoder, tokenizer=sd.tokenizer, unet=video_unet,
                               scheduler=sd.scheduler)
    for p in (pipe, reference_pipe):
        p.set_progress_bar_config(disable=True)
    latents = torch.randn(1, 4, 6, 8, 8, generator=torch.Generator().manual_seed(1))
    kwargs = dict(num_frames=6, num_inference_steps=3, guidance_scale=5.0, negative_prompt="static")
    ours = pipe("a red circle moving right", latents=latents, output_type="pt", **kwargs).frames
    theirs = reference_pipe("a red circle moving right", latents=latents.clone(), output_type="pt", **kwargs).frames
    theirs = theirs.permute(0, 2, 1, 3, 4)  # AnimateDiff returns (b, f, c, h, w)
    assert theirs.std() > 0.05
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


def test_layout_mismatch_names_the_widths(tmp_path, adapter_folder):
    wider = tiny_unet2d("sd15", block_out_channels=[64, 128, 256, 256])
    with pytest.raises(ValueError, match=r"widths \[32, 64, 128, 128\].*\[64, 128, 256, 256\]"):
        inflate_with_motion_adapter(wider, adapter_folder)


def test_missing_and_unexpected_keys_are_refused(tmp_path, adapter_folder):
    state = tiny_adapter().state_dict()
    dropped = {k: v for k, v in state.items() if "up_blocks.0.motion_modules.0.proj_in" not in k}
    save_file({k: v.contiguous() for k, v in dropped.items()}, tmp_path / "partial.safetensors")
    with pytest.raises(ValueError, match="2 missing.*up_blocks.0.motion_modules.0.proj_in"):
        inflate_with_motion_adapter(tiny_unet2d("sd15"), tmp_path / "partial.safetensors", temporal_num_attention_heads=4)


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused(tmp_path):
    _Exploit.marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": _Exploit()}, path)
    with pytest.raises(ValueError, match="refused to load .*evil.ckpt.*weights_only=True"):
        load_weights_file(path)
    assert not (tmp_path / "pwned").exists()


def test_cli_inflate_with_motion_adapter(tiny_sd_folder, tmp_path, capsys):
    from vidiff.cli import main
    from vidiff.models.video_unet import VideoUNet

    torch.manual_seed(0)
    adapter = MotionAdapter(block_out_channels=(32, 64, 128, 128), motion_layers_per_block=1,
                            motion_num_attention_heads=4, motion_norm_num_groups=8, motion_max_seq_length=20)
    adapter.save_pretrained(tmp_path / "adapter")
    out = tmp_path / "video"
    assert main(["inflate", "--base", str(tiny_sd_folder), "--out", str(out), "--motion-adapter",
                 str(tmp_path / "adapter")]) == 0
    video = VideoUNet.from_pretrained(out / "unet")
    assert video.config.max_frames == 20 and video.config.temporal_num_attention_heads == 4
    key = "up_blocks.1.motion_modules.0.transformer_blocks.0.attn1.to_q.weight"
    assert torch.equal(video.state_dict()[key], adapter.state_dict()[key])

    capsys.readouterr()
    assert main(["inflate", "--base", str(tiny_sd_folder), "--out", str(tmp_path / "x"), "--motion-adapter",
                 str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
