import sys

from vidiff.cli import run

sys.exit(run())
