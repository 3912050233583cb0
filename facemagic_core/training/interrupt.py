"""Ctrl-C between units of work: long jobs (training steps, photos to prepare) stop where their state is whole."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger(__name__)


class DeferredInterrupt:
    """The first Ctrl-C (SIGINT) or SIGTERM inside :meth:`held` is held until the caller checks :attr:`requested`.

    A job checks it after each unit of work (a training step, a photo) and then saves what is
    done and raises ``KeyboardInterrupt`` itself: a unit interrupted half way could leave a state
    that cannot be saved or resumed exactly. A second Ctrl-C raises ``KeyboardInterrupt`` at once.
    Signals are only caught in the main thread (Python delivers them nowhere else).
    """

    def __init__(self, what: str = "the running step") -> None:
        self.what = what
        self.requested = False

    @contextlib.contextmanager
    def held(self) -> Iterator[DeferredInterrupt]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}

        def hold(number: int, frame: Any) -> None:
            if self.requested:  # a second Ctrl-C: stop now
                raise KeyboardInterrupt
            self.requested = True
            name = "Ctrl-C" if number == signal.SIGINT else "SIGTERM"
            logger.warning("%s: finishing %s, then saving what is done (press again to stop at once)", name, self.what)

        for number in previous:
            signal.signal(number, hold)
        try:
            yield self
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
