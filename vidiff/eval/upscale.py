"""Super-resolution against bicubic: PSNR, SSIM and temporal error on clips whose high-resolution truth is known.

temporal_error is the flicker measure: the mean absolute difference between the output's frame-to-frame change
and the truth's, (|(o[t+1] - o[t]) - (g[t+1] - g[t])|, 0-255 scale). Motion that the truth has costs nothing;
detail that changes from frame to frame where the truth does not (flicker) does.
"""

from __future__ import annotations

import numpy as np


def bicubic_frames(frames: np.ndarray, scale: int) -> np.ndarray:
    """uint8 (f, h, w, 3) -> (f, h * scale, w * scale, 3), PIL's bicubic filter."""
    from PIL import Image

    h, w = frames.shape[1:3]
    return np.stack([np.asarray(Image.fromarray(f).resize((w * scale, h * scale), Image.Resampling.BICUBIC))
                     for f in frames])


def box_downsample(frames: np.ndarray, scale: int) -> np.ndarray:
    """uint8 (f, H, W, 3) -> (f, H / scale, W / scale, 3): means of scale x scale blocks (as training degrades)."""
    f, h, w, c = frames.shape
    blocks = frames.reshape(f, h // scale, scale, w // scale, scale, c).astype(np.float64)
    return np.rint(blocks.mean(axis=(2, 4))).astype(np.uint8)


def temporal_error(frames: np.ndarray, truth: np.ndarray) -> float:
    change = np.diff(frames.astype(np.float64), axis=0)
    return float(np.abs(change - np.diff(truth.astype(np.float64), axis=0)).mean())


def score_upscale(frames: np.ndarray, truth: np.ndarray) -> dict:
    """Mean PSNR (dB) and SSIM over frames, and the temporal error."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    if frames.shape != truth.shape:
        raise ValueError(f"upscaled frames {frames.shape} and truth {truth.shape} differ in shape")
    psnr = [min(peak_signal_noise_ratio(g, o, data_range=255), 100.0) for o, g in zip(frames, truth)]
    ssim = [structural_similarity(g, o, data_range=255, channel_axis=-1) for o, g in zip(frames, truth)]
    return {"psnr": float(np.mean(psnr)), "ssim": float(np.mean(ssim)), "temporal_error": temporal_error(frames, truth)}
