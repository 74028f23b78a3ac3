"""vidiff: inflate text-to-image latent diffusion U-Nets into video models."""

__version__ = "0.1.0"

from vidiff.models import (  # noqa: E402
    VideoUNet,
    freeze_spatial,
    inflate_unet,
    temporal_parameters,
)

__all__ = ["TextToVideoPipeline", "VideoUNet", "freeze_spatial", "inflate_unet", "temporal_parameters", "__version__"]


def __getattr__(name):
    # The pipeline pulls in transformers; import it only when asked for.
    if name == "TextToVideoPipeline":
        from vidiff.pipelines.text_to_video import TextToVideoPipeline

        return TextToVideoPipeline
    raise AttributeError(f"module 'vidiff' has no attribute {name!r}")
