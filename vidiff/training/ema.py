"""The exponential moving average of trained weights: the one implementation the trainer and the recipes share."""

from __future__ import annotations

import torch


def ema_decay(peak: float, step: int) -> float:
    """Warm-up as in diffusers' EMAModel: min(peak, (1 + step) / (10 + step)), so early averages do not hold the
    random initialisation."""
    return min(peak, (1 + step) / (10 + step))


@torch.no_grad()
def update_ema(ema: dict[str, torch.Tensor], params: dict[str, torch.Tensor], decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * param, in place, for every name of `params` (kept in the EMA's dtype)."""
    for name, param in params.items():
        ema[name].mul_(decay).add_(param.detach().to(ema[name].dtype), alpha=1 - decay)
