"""Build a tiny stand-in Stable Diffusion (random weights) and inflate it into a video model.

Until the trained default model ships inside the package, this gives the README's commands a model to run on a
CPU with nothing downloaded. Its clips are noise: the weights are random.

    python scripts/make_tiny_model.py [OUT_DIR]     # default: tiny-video/ (and tiny-sd/ beside it)
"""

import sys
from pathlib import Path

from vidiff.models.inflate_folder import inflate_model_folder
from vidiff.testing.tiny import make_tiny_sd

out = Path(sys.argv[1] if len(sys.argv) > 1 else "tiny-video")
base = make_tiny_sd(out.parent / "tiny-sd")
inflate_model_folder(base, out, overwrite=True, max_frames=32)
print(f"tiny image model: {base}\ntiny video model: {out}")
