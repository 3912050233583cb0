"""Swap benchmark: the FaceMagic pipeline against insightface's own INSwapper, side by side, in one run.

Same as ``facemagic bench`` (see ``facemagic bench --help`` and benchmarks/README.md); for example::

    python benchmarks/bench_swap.py                          # 16 frames at 1080p, full-size network, 1 face
    python benchmarks/bench_swap.py --faces 6 --height 4k --frames 4 --chunk 4
    python benchmarks/bench_swap.py --device cuda --frames 64 --markdown       # fp16 on both sides
"""

from __future__ import annotations

import sys

from facemagic_core.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", *sys.argv[1:]]))
