"""Temporal layers that turn an image U-Net into a video U-Net, both the identity at initialisation.

- `TemporalConv`: Make-A-Video's pseudo-3-D convolution (Singer et al. 2022, sec. 3.2): the spatial layer is
  followed by a 1-D convolution over frames, initialised to the identity with `nn.init.dirac_`.
- `TemporalAttention`: self-attention over the frame axis at every spatial position, with AnimateDiff's
  motion-module structure (Guo et al. 2023) and its parameter names, as in diffusers' `AnimateDiffTransformer3D`:
  GroupNorm -> proj_in -> transformer blocks (two frame self-attentions + feed-forward, sinusoidal frame
  positions) -> proj_out. Unlike diffusers, `proj_out` starts at zero, so the module starts as the identity.

Both take and return spatial-layout activations `(b f) c h w`, the layout the 2-D U-Net blocks run in, and are
told the frame count. `temporal_named_parameters` is the one place that says which parameters are temporal.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from einops import rearrange
from torch import nn

from vidiff.models.free_noise import FrameContext


class TemporalConv(nn.Module):
    """1-D convolution over frames at every spatial position; the identity at init."""

    def __init__(self, channels: int, kernel_size: int = 3):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"temporal kernel_size must be odd to keep the frame count, got {kernel_size}")
        self.conv = nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2)
        nn.init.dirac_(self.conv.weight)  # initialised to be the identity
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """x: `(b f) c h w`. A Conv2d with a (k, 1) kernel over the view `b c f (h w)`: frames on one axis,
        positions on the other. On channels-last activations (`(b f) h w c` in memory) the view and its inverse copy
        nothing; contiguous input costs one copy in. Either way the result is channels-last.

        Measured (BENCHMARKS.md): the textbook Conv1d over `(b h w) c f` rows, with a transposing copy in and out,
        was 2x slower on the CPU and made the U-Net step 4 % slower on an H200; on contiguous input this form
        (one copy in) was also faster on the CPU than one matmul of the stacked taps plus shifted adds.
        """
        channels, height, width = x.shape[1:]
        if type(self.conv) is not nn.Conv1d or self.conv._forward_hooks or self.conv._forward_pre_hooks:
            # an adapter (peft LoRA), wrapper or hook on the conv: run its own forward, on the textbook layout
            h = self.conv(rearrange(x, "(b f) c h w -> (b h w) c f", f=num_frames))
            return rearrange(h, "(b h w) c f -> (b f) c h w", h=height, w=width)
        h = x.permute(0, 2, 3, 1).reshape(-1, num_frames, height * width, channels).permute(0, 3, 1, 2)
        h = F.conv2d(h, self.conv.weight.unsqueeze(-1), self.conv.bias, padding=(self.conv.padding[0], 0))
        return h.permute(0, 2, 3, 1).reshape(-1, height, width, channels).permute(0, 3, 1, 2)


class TemporalAttention(nn.Module):
    """AnimateDiff-style motion module: attention over frames, residual, zeroed output projection at init.

    Parameter names match diffusers' `AnimateDiffTransformer3D` (`norm`, `proj_in`, `transformer_blocks.N.attn1`,
    `attn2`, `ff`, `proj_out`), so `MotionAdapter` weights load by name.
    """

    def __init__(
        self,
        channels: int,
        num_attention_heads: int = 8,
        num_layers: int = 1,
        norm_num_groups: int = 32,
        max_frames: int = 32,
    ):
        super().__init__()
        if channels % num_attention_heads != 0:
            raise ValueError(
                f"temporal attention: {channels} channels do not split into {num_attention_heads} heads; "
                "choose temporal_num_attention_heads that divides every block width"
            )
        if channels % norm_num_groups != 0:
            raise ValueError(f"temporal attention: {channels} channels do not split into {norm_num_groups} groups")
        self.norm = nn.GroupNorm(num_groups=norm_num_groups, num_channels=channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(
                channels,
                num_attention_heads,
                channels // num_attention_heads,
                cross_attention_dim=None,
                activation_fn="geglu",
                attention_bias=False,
                double_self_attention=True,  # attn2 is a second self-attention over frames, not cross-attention
                positional_embeddings="sinusoidal",
                num_positional_embeddings=max_frames,
            )
            for _ in range(num_layers)
        )
        self.proj_out = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj_out.weight)  # the residual branch adds nothing at init
        nn.init.zeros_(self.proj_out.bias)
        # Set by VideoUNet.set_frame_context / set_split_inference, not saved: FreeNoise's windows over frames, and
        # how many spatial positions go through proj_in -> blocks -> proj_out at a time (None: all at once).
        self.frame_context: FrameContext | None = None
        self.split_size: int | None = None

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """x: `(b f) c h w` in either memory layout; the result has x's layout.

        One copy of the activations, into attention order `(b h w) f c`: the GroupNorm reads a view of x, and the
        residual add reads the attention output transposed. The textbook form (`rearrange` to `b c f h w`, norm,
        `rearrange` to `(b h w) f c`, and back) copies three times.
        """
        channels, height, width = x.shape[1:]
        tokens = x.permute(0, 2, 3, 1).unflatten(0, (-1, num_frames)).flatten(2, 3)  # (b, f, h w, c): a view of dense x
        # statistics over the whole clip per group, as diffusers' AnimateDiffTransformer3D; on channels-last x the
        # (b, c, f, h w) view is itself channels-last, which the GroupNorm kernel reads in place
        h = tokens.permute(0, 3, 1, 2)
        if torch.is_grad_enabled() and h.is_contiguous(memory_format=torch.channels_last):
            # torch's CPU GroupNorm backward (2.13) crashed with a segfault on this channels-last view when x needed
            # no gradient and the gradient came back in the copy's layout: training a U-Net without temporal convs
            # (AnimateDiff's structure) in the CPU's channels-last layout. A contiguous input avoids that kernel.
            h = h.contiguous()
        h = self.norm(h)
        h = h.permute(0, 3, 2, 1).reshape(-1, num_frames, channels)  # (b h w, f, c): the one copy
        if self.split_size is None or h.shape[0] <= self.split_size:
            h = self._attend_frames(h)
        else:  # positions are independent here: chunks of them bound the attention's and feed-forward's memory
            h = torch.cat([self._attend_frames(part) for part in h.split(self.split_size)])
        h = h.view(-1, height * width, num_frames, channels).transpose(1, 2)  # (b, f, h w, c)
        out = tokens + h  # laid out like `tokens`, i.e. like x
        return out.unflatten(2, (height, width)).flatten(0, 1).permute(0, 3, 1, 2)

    def _attend_frames(self, h: torch.Tensor) -> torch.Tensor:
        """proj_in -> transformer blocks -> proj_out over (N, f, c) rows of frames."""
        h = self.proj_in(h)
        for block in self.transformer_blocks:
            h = _transformer_block(block, h, self.frame_context)
        return self.proj_out(h)


def _transformer_block(block: BasicTransformerBlock, h: torch.Tensor,
                       context: FrameContext | None = None) -> torch.Tensor:
    """`BasicTransformerBlock.forward` for two frame self-attentions + GEGLU feed-forward, written lean.

    Same parameters and the same result as diffusers' block (tested), with one fused QKV matmul per attention and
    SDPA called directly: on the 2-core CPU this made the temporal attention measurably faster (BENCHMARKS.md).
    Only where no adapter, wrapper, hook or custom processor sits on an attention (`_is_plain`); else that
    attention runs its own forward.
    With a `context`, the two attentions run over its windows and are blended, as diffusers'
    `FreeNoiseTransformerBlock` does; the feed-forward then runs over every frame.
    h: (N, f, c) with N = batch * height * width.
    """

    def attend(x: torch.Tensor) -> torch.Tensor:
        positions = block.pos_embed.pe[:, : x.shape[1]].to(x.dtype)  # (1, f, c): positions from the first frame
        x = x + _frame_self_attention(block.attn1, block.norm1(x) + positions)
        return x + _frame_self_attention(block.attn2, block.norm2(x) + positions)

    h = attend(h) if context is None else context.blend(h, attend)
    return h + block.ff(block.norm3(h))


def _frame_self_attention(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """Self-attention over frames, x: (N, f, c). The lean form reads the projection weights itself, so it runs only
    where that means the same as `attn(x)`: plain `nn.Linear` projections and diffusers' default SDPA processor,
    with no hooks. Anything else (a peft LoRA, a fused or wrapped projection, a custom processor, a hook) goes
    through the attention's own forward, exactly as diffusers' `UNetMotionModel` runs it (tested)."""
    if not _is_plain(attn):
        return attn(x)
    weight = torch.cat([attn.to_q.weight, attn.to_k.weight, attn.to_v.weight])  # attention_bias=False: no biases
    q, k, v = rearrange(F.linear(x, weight), "n f (three h d) -> three n h f d", three=3, h=attn.heads)
    out = F.scaled_dot_product_attention(q, k, v)  # (N, heads, f, d)
    return attn.to_out[0](rearrange(out, "n h f d -> n f (h d)"))


def _is_plain(attn: Attention) -> bool:
    """True where the lean attention computes exactly what `attn(x)` would: nothing wraps or hooks the layers it
    reads, and the processor is the default one."""
    layers = (attn, attn.to_q, attn.to_k, attn.to_v)
    return (type(attn.processor) is AttnProcessor2_0
            and all(type(layer) is nn.Linear for layer in layers[1:])
            and not any(layer._forward_hooks or layer._forward_pre_hooks for layer in layers))


TEMPORAL_MODULE_TYPES = (TemporalConv, TemporalAttention)


def temporal_named_parameters(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """Yield `(name, parameter)` for every parameter that belongs to a temporal layer, found by module type."""
    for module_name, module in model.named_modules():
        if isinstance(module, TEMPORAL_MODULE_TYPES):
            for name, param in module.named_parameters():
                yield f"{module_name}.{name}" if module_name else name, param


def temporal_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The temporal parameters of `model`: what training updates by default."""
    return [param for _, param in temporal_named_parameters(model)]


def freeze_spatial(model: nn.Module) -> None:
    """Train temporal layers only: every other parameter of `model` stops requiring gradients."""
    model.requires_grad_(False)
    for param in temporal_parameters(model):
        param.requires_grad_(True)
