"""Prompt travel: a prompt per keyframe, `{0: "a red circle moving right", 24: "a blue circle moving right"}`.

As diffusers' FreeNoise pipelines treat a dict prompt (`AnimateDiffFreeNoiseMixin._encode_prompt_free_noise`): each
keyframe's prompt is encoded, and the text embeddings of the frames between two keyframes are interpolated between
theirs, linearly by default (`(1 - a) * start + a * end`, a from 0 at one keyframe to 1 at the next). After the last
keyframe its prompt holds. Unlike diffusers, a first keyframe after frame 0 is allowed: the frames before it take
its prompt. The spatial cross-attention of each frame then reads that frame's text.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from vidiff.errors import VidiffInputError

Interpolation = Callable[[int, int, torch.Tensor, torch.Tensor], torch.Tensor]


def check_prompt_travel(prompt: dict, num_frames: int, name: str = "prompt") -> dict[int, str]:
    """The keyframes of a prompt dict, sorted: integer keys within [0, num_frames), string prompts."""
    if not prompt:
        raise VidiffInputError(f"the {name} dict is empty; give at least {{0: \"a prompt\"}}")
    for key, text in prompt.items():
        if isinstance(key, bool) or not isinstance(key, int):
            raise VidiffInputError(f"{name} travel keys must be integer frame indices, got {key!r}")
        if not 0 <= key < num_frames:
            raise VidiffInputError(f"{name} travel key {key} is outside [0, {num_frames}), the frames of this clip")
        if not isinstance(text, str):
            raise VidiffInputError(f"{name} travel frame {key}: the prompt must be a string, got {type(text).__name__}")
    return dict(sorted(prompt.items()))


def lerp(start_frame: int, end_frame: int, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """(end_frame - start_frame + 1, n, d): `start` (1, n, d) at start_frame to `end` at end_frame, linearly
    (diffusers' `_lerp`)."""
    count = end_frame - start_frame + 1
    return torch.cat([(1 - i / (count - 1)) * start + i / (count - 1) * end for i in range(count)])


def frame_embeddings(keyframes: list[int], embeds: torch.Tensor, num_frames: int,
                     interpolate: Interpolation = lerp) -> torch.Tensor:
    """Keyframe text embeddings (k, n, d) at frames `keyframes` (sorted) -> one per frame (num_frames, n, d)."""
    out = embeds.new_empty((num_frames, *embeds.shape[1:]))
    out[: keyframes[0] + 1] = embeds[0]
    for i, (start, end) in enumerate(zip(keyframes, keyframes[1:])):
        out[start : end + 1] = interpolate(start, end, embeds[i : i + 1], embeds[i + 1 : i + 2])
    out[keyframes[-1] :] = embeds[-1]
    return out


def prompt_at(prompt: str | dict[int, str], frame: int) -> str:
    """The prompt in force at `frame`: the string itself, or the last keyframe's at or before it (the first's
    before the first keyframe)."""
    if isinstance(prompt, str):
        return prompt
    keys = sorted(prompt)
    return prompt[max((k for k in keys if k <= frame), default=keys[0])]


def encode_travel(pipe, prompt: str | dict[int, str], num_frames: int, device) -> torch.Tensor:
    """One text embedding per frame, (num_frames, tokens, d), for a prompt dict (or a plain prompt, repeated)."""
    if isinstance(prompt, str):
        return pipe.encode_prompt([prompt], None, device).expand(num_frames, -1, -1)
    keyframes = check_prompt_travel(prompt, num_frames)
    embeds = pipe.encode_prompt(list(keyframes.values()), None, device)  # (k, tokens, d)
    return frame_embeddings(list(keyframes), embeds, num_frames, pipe._free_noise_prompt_interpolation_callback)
