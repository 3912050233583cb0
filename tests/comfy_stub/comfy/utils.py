"""Test stand-in for ``comfy.utils``: a ProgressBar that records its updates."""

from __future__ import annotations

from typing import Any

#: (node_id, value, total) of every progress update, in order (tests read and clear it).
PROGRESS_UPDATES: list[tuple[Any, int, int]] = []


class ProgressBar:
    def __init__(self, total: int, node_id: Any = None):
        self.total = total
        self.current = 0
        self.node_id = node_id

    def update_absolute(self, value: int, total: int | None = None, preview: Any = None) -> None:
        if total is not None:
            self.total = total
        self.current = min(value, self.total)
        PROGRESS_UPDATES.append((self.node_id, self.current, self.total))

    def update(self, value: int) -> None:
        self.update_absolute(self.current + value)
