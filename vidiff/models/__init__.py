from vidiff.models.inflate import inflate_unet
from vidiff.models.temporal import (TemporalAttention, TemporalConv, freeze_spatial, temporal_named_parameters,
                                    temporal_parameters)
from vidiff.models.video_unet import VideoUNet, VideoUNetOutput

__all__ = [
    "TemporalAttention",
    "TemporalConv",
    "VideoUNet",
    "VideoUNetOutput",
    "freeze_spatial",
    "inflate_unet",
    "temporal_named_parameters",
    "temporal_parameters",
]
