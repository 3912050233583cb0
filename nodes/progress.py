"""Progress and cancellation: ComfyUI's progress bar and Cancel button, seen from facemagic_core.

Core functions take ``progress(done, total)`` callbacks (``facemagic_core.types.ProgressCallback``)
that may raise ``facemagic_core.errors.CancelledError``. :func:`comfy_progress` makes one that
moves the node's progress bar and raises ``CancelledError`` as soon as the user pressed Cancel;
:func:`run_in_comfy` turns that ``CancelledError`` back into ComfyUI's own interrupt exception,
so ComfyUI reports "interrupted" instead of an error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from facemagic_core.errors import CancelledError
from facemagic_core.types import ProgressCallback

from ._comfy import InterruptProcessingException, new_progress_bar, throw_if_interrupted

logger = logging.getLogger(__name__)

T = TypeVar("T")


def check_interrupted(where: str = "") -> None:
    """Raise ``CancelledError`` if the user cancelled the run."""
    try:
        throw_if_interrupted()
    except InterruptProcessingException as error:
        raise CancelledError("the run was cancelled", where=where or None, fix="run the workflow again") from error


def comfy_progress(total: int = 0, *, node_id: str | None = None, what: str = "") -> ProgressCallback:
    """A core progress callback that drives ComfyUI's progress bar and checks for Cancel on every call.

    The bar belongs to ``node_id``; None (what the nodes pass) is the node ComfyUI is running.
    """
    bar = new_progress_bar(max(int(total), 1), node_id)

    def progress(done: int, total: int) -> None:
        check_interrupted(what)
        try:
            bar.update_absolute(int(done), max(int(total), 1))
        except InterruptProcessingException as error:  # ComfyUI's progress hook checks for Cancel too
            raise CancelledError("the run was cancelled", where=what or None, fix="run the workflow again") from error

    return progress


@contextmanager
def comfy_errors() -> Iterator[None]:
    """Let ``CancelledError`` from core surface as ComfyUI's interrupt; every other error passes unchanged."""
    try:
        yield
    except CancelledError as error:
        logger.info("FaceMagic: %s", error)
        raise InterruptProcessingException() from error


def run_in_comfy(function: Callable[[], T]) -> T:
    """Call ``function()`` with :func:`comfy_errors` around it."""
    with comfy_errors():
        return function()
