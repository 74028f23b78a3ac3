"""A lossless, parameter-free stand-in for a VAE: space-to-depth (`pixel_unshuffle`) by `factor`.

Super-resolution is judged in PSNR against bicubic, which already reaches about 36 dB on the shapes world at 128
pixels, while the tiny KL VAEs trainable on a CPU reconstruct those frames at 17-23 dB (scripts/tiny_default/
README.md). A latent upscaler behind such a VAE cannot beat bicubic whatever its U-Net does. This codec reconstructs
exactly, so the U-Net works in pixel space, as Make-A-Video's and Imagen's super-resolution stages do, at the
latent resolution and with the API of diffusers' `AutoencoderKL` (`encode(x).latent_dist`, `decode(z).sample`,
`config.latent_channels`, `config.block_out_channels`, `config.scaling_factor`), so every pipeline and the trainer
take it where they take a VAE.

    (n, c, H, W) in [-1, 1]  --encode-->  (n, c f^2, H / f, W / f)  --decode-->  (n, c, H, W), bit for bit
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKLOutput
from diffusers.models.autoencoders.vae import DecoderOutput
from diffusers.models.modeling_utils import ModelMixin


class PointDistribution:
    """The `latent_dist` of an exact codec: every sample is the mean."""

    def __init__(self, mean: torch.Tensor):
        self.mean = mean
        self.std = torch.zeros_like(mean)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.mean

    def mode(self) -> torch.Tensor:
        return self.mean


class PixelShuffleCodec(ModelMixin, ConfigMixin):
    """Frames <-> `pixel_unshuffle` by `factor`; see the module docstring. `latent_channels` and
    `block_out_channels` are derived (in_channels * factor^2, and log2(factor) + 1 entries so that a pipeline's
    `2 ** (len(block_out_channels) - 1)` is the factor); they are stored so that config readers need no import."""

    @register_to_config
    def __init__(self, factor: int = 4, in_channels: int = 3, scaling_factor: float = 1.0,
                 latent_channels: int | None = None, block_out_channels: tuple[int, ...] | None = None):
        super().__init__()
        if factor < 1 or factor & (factor - 1):
            raise ValueError(f"factor {factor} must be a power of 2 (1, 2, 4, 8, ...)")
        derived = (in_channels * factor * factor, (in_channels,) * (int(math.log2(factor)) + 1))
        given = (latent_channels or derived[0], tuple(block_out_channels or derived[1]))
        if given != derived:
            raise ValueError(f"latent_channels {latent_channels} and block_out_channels {block_out_channels} do not "
                             f"follow from factor {factor}: expected {derived[0]} and {list(derived[1])}; omit them")
        self.register_to_config(latent_channels=derived[0], block_out_channels=list(derived[1]))
        # one weightless buffer: .dtype and .device answer, and the folder holds the weights file diffusers expects
        self.register_buffer("anchor", torch.zeros(()))

    def encode(self, x: torch.Tensor, return_dict: bool = True):
        z = F.pixel_unshuffle(x, self.config.factor).to(self.anchor.dtype)  # (n, c f^2, H / f, W / f)
        dist = PointDistribution(z)
        return AutoencoderKLOutput(latent_dist=dist) if return_dict else (dist,)

    def decode(self, z: torch.Tensor, return_dict: bool = True, generator=None):
        x = F.pixel_shuffle(z, self.config.factor)  # (n, c, H, W)
        return DecoderOutput(sample=x) if return_dict else (x,)
