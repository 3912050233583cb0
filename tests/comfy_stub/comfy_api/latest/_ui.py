"""Test stand-in for ``comfy_api.latest._ui``: the UI outputs FaceMagic uses (``PreviewText``)."""

from __future__ import annotations

from typing import Any


class PreviewText:
    """As in ComfyUI: a text shown by the frontend, sent as ``{"text": (value,)}``."""

    def __init__(self, value: str, **kwargs: Any):
        self.value = value

    def as_dict(self) -> dict[str, Any]:
        return {"text": (self.value,)}
