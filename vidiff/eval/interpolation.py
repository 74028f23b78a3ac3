"""Frame interpolation against classical baselines: hide frames, fill them in, score against the truth.

Every method turns keyframes (N, h, w, 3) into (N - 1) * k + 1 uint8 frames with the keyframes at 0, k, 2k, ...:
  repeat     each missing frame is the keyframe before it (a frame-rate change with no new frames);
  blend      linear cross-fade of the two keyframes around it (a moving object becomes two ghosts);
  farneback  OpenCV's dense optical flow (Farnebäck 2003) both ways, each keyframe warped to the in-between time
             with Super SloMo's flow approximation (Jiang et al. 2018, eq. 4) and the two blended by time
             (opencv-python-headless; `pip install vidiff[eval]`).
Scores are PSNR and SSIM (scikit-image) over the missing frames only; the keyframes are known to every method.
"""

from __future__ import annotations

import numpy as np

from vidiff.io.video import check_frames

BASELINES = ("repeat", "blend", "farneback")


def _check(keyframes: np.ndarray, factor: int) -> None:
    check_frames(keyframes, "keyframes", min_frames=2)
    if factor < 2:
        raise ValueError(f"factor {factor} must be at least 2")


def _pairs(keyframes: np.ndarray, factor: int, pair) -> np.ndarray:
    """For each pair of neighbouring keyframes, `pair(a, b)` returns `between(t)`, called for t = 1/k .. (k-1)/k."""
    _check(keyframes, factor)
    out = [keyframes[0]]
    for a, b in zip(keyframes[:-1], keyframes[1:]):
        between = pair(a, b)
        out += [between(i / factor) for i in range(1, factor)] + [b]
    return np.stack(out)


def repeat_frames(keyframes: np.ndarray, factor: int) -> np.ndarray:
    return _pairs(keyframes, factor, lambda a, b: lambda t: a)


def blend_frames(keyframes: np.ndarray, factor: int) -> np.ndarray:
    def pair(a, b):
        a, b = a.astype(np.float64), b.astype(np.float64)
        return lambda t: np.rint((1 - t) * a + t * b).astype(np.uint8)

    return _pairs(keyframes, factor, pair)


def farneback_frames(keyframes: np.ndarray, factor: int) -> np.ndarray:
    try:
        import cv2
    except ImportError:
        raise ImportError("the farneback baseline needs OpenCV: pip install opencv-python-headless") from None

    h, w = keyframes.shape[1:3]
    grid = np.stack(np.meshgrid(np.arange(w), np.arange(h)), axis=-1).astype(np.float32)  # (h, w, 2): x, y

    def flow(a, b):  # a(x) ~ b(x + flow(x))
        grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in (a, b)]
        return cv2.calcOpticalFlowFarneback(*grey, None, 0.5, 3, 15, 3, 5, 1.2, 0)

    def warp(image, offset):  # image sampled at x + offset(x)
        where = grid + offset
        return cv2.remap(image, where[..., 0], where[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def pair(a, b):
        f01, f10 = flow(a, b), flow(b, a)  # once per pair of keyframes

        def between(t):
            f_t0 = -(1 - t) * t * f01 + t * t * f10  # Super SloMo eq. 4: where each in-between pixel was in a ...
            f_t1 = (1 - t) ** 2 * f01 - t * (1 - t) * f10  # ... and where it will be in b
            mixed = (1 - t) * warp(a, f_t0).astype(np.float64) + t * warp(b, f_t1).astype(np.float64)
            return np.rint(mixed).astype(np.uint8)

        return between

    return _pairs(keyframes, factor, pair)


BASELINE_FUNCTIONS = {"repeat": repeat_frames, "blend": blend_frames, "farneback": farneback_frames}


def missing_frames(num_frames: int, factor: int) -> np.ndarray:
    """Indices of the frames an interpolation of factor k generates (every frame but 0, k, 2k, ...)."""
    return np.array([i for i in range(num_frames) if i % factor])


def score_frames(predicted: np.ndarray, truth: np.ndarray, factor: int) -> dict:
    """PSNR (dB) and SSIM of the missing frames, each averaged over frames."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    if predicted.shape != truth.shape:
        raise ValueError(f"predicted frames {predicted.shape} and truth {truth.shape} differ in shape")
    psnr, ssim = [], []
    for i in missing_frames(len(truth), factor):
        psnr.append(min(peak_signal_noise_ratio(truth[i], predicted[i], data_range=255), 100.0))  # equal: 100
        ssim.append(structural_similarity(truth[i], predicted[i], data_range=255, channel_axis=-1))
    return {"psnr": float(np.mean(psnr)), "ssim": float(np.mean(ssim))}
