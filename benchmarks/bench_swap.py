"""Swap benchmark: the FaceMagic pipeline against the insightface-style baseline, in one run.

Same as ``facemagic bench`` (see ``facemagic bench --help``); for example::

    python benchmarks/bench_swap.py                                  # CPU: 16 frames at 1080p, width 32
    python benchmarks/bench_swap.py --device cuda --width 128 --frames 64 --dtype fp16 --markdown
"""

from __future__ import annotations

import sys

from facemagic_core.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", *sys.argv[1:]]))
