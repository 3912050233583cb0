"""Errors raised by FaceMagic.

Every error a user can meet is a :class:`FaceMagicError`. Its message answers three
questions: what failed, where (which file, image, frame or face), and how to fix it.
Build them with keyword arguments so that the three parts are never forgotten::

    raise NoFaceError("no face was found", where="image 3 of 8", fix="use a photo where the face is visible")
"""

from __future__ import annotations


class FaceMagicError(Exception):
    """Base class of every error FaceMagic raises on purpose."""

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None) -> None:
        self.what = what
        self.where = where
        self.fix = fix
        message = what
        if where:
            message += f" ({where})"
        if fix:
            message += f". Fix: {fix}"
        super().__init__(message)


class BadInputError(FaceMagicError):
    """An image, tensor, embedding or option that cannot be used as given."""


class NoFaceError(FaceMagicError):
    """No face (or not the face asked for) was found in an image."""


class ModelNotFoundError(FaceMagicError):
    """A model file is neither in the local model folder nor downloadable."""


class ModelIntegrityError(FaceMagicError):
    """A model file is truncated, altered or unreadable; it was not loaded."""


class IncompatibleIdentityError(FaceMagicError):
    """An identity does not fit: another embedding model, format version or size."""


class ProviderError(FaceMagicError):
    """onnxruntime cannot give the execution provider that was asked for."""


class OutOfMemoryError(FaceMagicError):
    """A device (GPU or CPU) ran out of memory; callers that work in chunks halve the chunk and retry."""


class CancelledError(FaceMagicError):
    """The run was cancelled by the user; nothing was written."""
