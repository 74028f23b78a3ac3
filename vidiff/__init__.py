"""vidiff: inflate text-to-image latent diffusion U-Nets into video models."""

__version__ = "0.1.0"

from vidiff.models import (  # noqa: E402
    VideoUNet,
    freeze_spatial,
    inflate_unet,
    temporal_parameters,
)

__all__ = ["VideoUNet", "freeze_spatial", "inflate_unet", "temporal_parameters", "__version__"]
