"""Cross-attention for frames that share one text: keys and values computed once per clip.

In a video U-Net the spatial layers see frames in the batch, `(b f) n c`, and every frame of a clip attends to
the same text. diffusers' AnimateDiff repeats the text f times, so each cross-attention projects the same 77
tokens to keys and values f times. Attention is independent per query token, so folding the frames into the query
sequence, `(b f) n c -> b (f n) c`, and attending to the clip's single text gives the same result with f times
fewer key/value projections and no repeated text. Measured in `scripts/bench.py` (BENCHMARKS.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from einops import rearrange


class SharedTextAttnProcessor(AttnProcessor2_0):
    """SDPA attention; when the text has fewer rows than the frames, each clip's frames attend to its one text."""

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, *args, **kwargs) -> torch.Tensor:
        if encoder_hidden_states is None or encoder_hidden_states.shape[0] == hidden_states.shape[0]:
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        if attention_mask is not None or hidden_states.ndim != 3 or attn.spatial_norm is not None \
                or attn.group_norm is not None or attn.norm_q is not None or attn.residual_connection:
            raise ValueError("shared-text attention supports plain cross-attention only; repeat the text per frame")
        frames = hidden_states.shape[0] // encoder_hidden_states.shape[0]
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        query = rearrange(attn.to_q(hidden_states), "(b f) n (h d) -> b h (f n) d", f=frames, h=attn.heads)
        key = rearrange(attn.to_k(encoder_hidden_states), "b t (h d) -> b h t d", h=attn.heads)
        value = rearrange(attn.to_v(encoder_hidden_states), "b t (h d) -> b h t d", h=attn.heads)
        out = F.scaled_dot_product_attention(query, key, value)
        out = rearrange(out, "b h (f n) d -> (b f) n (h d)", f=frames).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        return out / attn.rescale_output_factor


def cross_attentions(module: torch.nn.Module) -> list[Attention]:
    """The attention layers of `module` that read text (SD's attn2, and attn1 under only_cross_attention)."""
    return [m for m in module.modules() if isinstance(m, Attention) and m.is_cross_attention]
