"""FaceMagic core: face analysis, identities and style-delta face swapping, without ComfyUI.

This package never imports ComfyUI (``comfy``, ``comfy_api``, ``folder_paths``, ``server``);
the ComfyUI nodes in ``nodes/`` are thin glue over it.
"""

from __future__ import annotations

from .errors import (
    BadInputError,
    CancelledError,
    FaceMagicError,
    IncompatibleIdentityError,
    ModelIntegrityError,
    ModelNotFoundError,
    NoFaceError,
    ProviderError,
)
from .types import EMBEDDING_DIM, Face, Identity

__version__ = "0.1.0"

__all__ = [
    "EMBEDDING_DIM",
    "BadInputError",
    "CancelledError",
    "Face",
    "FaceMagicError",
    "Identity",
    "IncompatibleIdentityError",
    "ModelIntegrityError",
    "ModelNotFoundError",
    "NoFaceError",
    "ProviderError",
    "__version__",
]
