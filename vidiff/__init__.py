"""vidiff: inflate text-to-image latent diffusion U-Nets into video models."""

__version__ = "0.1.0"

__all__ = ["PixelShuffleCodec", "TextToVideoPipeline", "VideoCascadePipeline", "VideoUNet", "freeze_spatial",
           "inflate_unet", "temporal_parameters", "__version__"]

# Every name is imported on first use (PEP 562): the models pull in diffusers and torch (about 8 s on a 2-core
# CPU), which `vidiff --help` and the command line's input checks do not need.
_LAZY = {
    "PixelShuffleCodec": "vidiff.models.pixel_codec",
    "VideoUNet": "vidiff.models.video_unet",
    "inflate_unet": "vidiff.models.inflate",
    "freeze_spatial": "vidiff.models.temporal",
    "temporal_parameters": "vidiff.models.temporal",
    "TextToVideoPipeline": "vidiff.pipelines.text_to_video",
    "VideoCascadePipeline": "vidiff.pipelines.cascade",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vidiff' has no attribute {name!r}")
