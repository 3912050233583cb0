"""The ``facemagic`` command line: the FaceMagic pipeline outside ComfyUI.

Each sub-command lives in its own module of this package with a ``register(subparsers)``
function that adds its parser and sets ``handler`` (``(argparse.Namespace) -> int``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import FaceMagicError

#: Sub-command modules, in the order ``--help`` lists them.
COMMANDS = ("identity", "similarity", "swap", "evaluate", "models", "bench", "prepare", "train")

DEFAULT_MODEL_DIR = Path(os.environ.get("FACEMAGIC_MODELS", Path.home() / ".cache" / "facemagic" / "models"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facemagic",
        description=(
            "FaceMagic: swap faces by injecting a source person's identity into a target face, "
            "keeping the target's pose, expression, lighting and background. "
            "Models are downloaded from the Hugging Face Hub on first use into --models "
            f"(default: $FACEMAGIC_MODELS or {DEFAULT_MODEL_DIR})."
        ),
        epilog="Run 'facemagic COMMAND --help' for the options of one command.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("--version", action="version", version=f"facemagic {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as error:
            if error.name == f"{__name__}.{name}":
                continue  # that command is not part of this build
            raise
        module.register(subparsers)
    return parser


def add_model_options(parser: argparse.ArgumentParser, *, device: bool = True) -> None:
    """Options shared by every command that uses the model folder (``device``: and runs models)."""
    parser.add_argument(
        "--models",
        type=Path,
        default=DEFAULT_MODEL_DIR,
        help="folder holding the model files; missing ones are downloaded there (default: $FACEMAGIC_MODELS or "
        "%(default)s)",
    )
    if not device:
        return
    parser.add_argument(
        "--device",
        default="auto",
        help="where to run: auto (GPU when there is one), cpu, cuda, cuda:1, mps (default: %(default)s)",
    )


def progress_printer(label: str, unit: str = "") -> Callable[[int, int], None]:
    """A progress callback that rewrites one stderr line (``label done/total unit``) about a hundred times a run."""

    def report(done: int, total: int) -> None:
        step = max(1, total // 100)
        if done % step == 0 or done == total:
            text = f"\r{label} {done}/{total}" + (f" {unit}" if unit else "")
            print(text, end="\n" if done == total else "", file=sys.stderr, flush=True)

    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        with _terminate_like_interrupt():
            code: int = args.handler(args)
    except FaceMagicError as error:
        print(f"facemagic: error: {error}", file=sys.stderr)
        return 1
    except _Terminated:
        print("facemagic: stopped by SIGTERM; files being written were removed", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("facemagic: cancelled", file=sys.stderr)
        return 130
    return code


class _Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a container stop, a job scheduler) while a command runs."""


@contextlib.contextmanager
def _terminate_like_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt, as Ctrl-C does: files being written are removed, not left half done.

    Python's default for SIGTERM is to die at once, without running ``finally`` blocks, so an
    atomic writer's temporary ``.partial`` file stayed behind. Only the main thread gets signals.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(number: int, frame: Any) -> None:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
