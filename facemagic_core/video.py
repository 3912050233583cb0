"""Reading and writing videos and animated GIFs as FaceMagic image batches.

Frames come and go as ``(B, 3, H, W)`` float32 RGB tensors in [0, 1] (the layout of
:mod:`facemagic_core.types`), in chunks, so that a long video never has to fit in memory:

- :func:`read_video_info` — frame count, frames per second and size, without decoding the frames;
- :func:`iter_frames` — the frames in chunks of at most ``chunk`` frames; :func:`read_frames` — all at once;
- :func:`write_video` — an ``.mp4``/``.mov``/``.m4v``/``.avi`` (OpenCV ``cv2.VideoWriter``, MPEG-4 Part 2
  ``mp4v``) or a ``.gif`` (Pillow) from an iterable of chunks, written atomically: the file
  appears under its name only when every frame was written, so an error or a cancelled run
  (an exception raised by whatever produces the chunks) leaves nothing behind.

Videos are decoded with OpenCV (its FFmpeg backend). GIFs are decoded with OpenCV too and
with Pillow where OpenCV cannot open them; both give the same composited frames. A GIF's
frame rate comes from its frame delays; a GIF whose delays are 0 (browsers show those at
10 frames per second) gets OpenCV's reading or :data:`DEFAULT_GIF_FPS`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt
import torch
from PIL import Image, UnidentifiedImageError

from .errors import BadInputError
from .files import atomic_path, check_output_path
from .images import check_images, rgb_uint8_to_tensor, tensor_to_rgb_uint8

logger = logging.getLogger(__name__)

#: Suffixes read as videos (OpenCV) or animations (GIF).
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm", ".gif"})
#: Suffixes :func:`write_video` can write: MPEG-4 Part 2 in an MP4/QuickTime/AVI container, or a GIF.
WRITABLE_VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".avi", ".gif"})
#: Frame rate of a GIF whose frame delays are all 0 and that OpenCV cannot read either.
DEFAULT_GIF_FPS = 10.0
#: Frames per chunk when none is given.
DEFAULT_CHUNK = 16

VideoKind = Literal["video", "gif"]


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds (read without decoding every frame)."""

    path: Path
    kind: VideoKind  # "gif" for animated GIFs, else "video"
    frame_count: int  # frames in the file (as the container states it; iter_frames yields what it decodes)
    fps: float  # frames per second
    width: int
    height: int

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frame_count / self.fps if self.fps > 0 else 0.0


def is_video_path(path: str | os.PathLike[str]) -> bool:
    """Whether the file name looks like a video or an animated GIF (by its suffix)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def _check_readable(path: str | os.PathLike[str]) -> Path:
    file = Path(path)
    if not file.exists():
        raise BadInputError(
            "the video file does not exist", where=str(file), fix="check the path and the file name's spelling"
        )
    if not file.is_file():
        raise BadInputError("the video path is not a file", where=str(file), fix="give the path of a video file")
    if file.stat().st_size == 0:
        raise BadInputError("the video file is empty", where=str(file), fix="use a complete video file")
    return file


def _unreadable(file: Path, detail: str) -> BadInputError:
    return BadInputError(
        f"cannot read the video: {detail}",
        where=str(file),
        fix="use an .mp4, .mov, .avi, .mkv, .webm or .gif file that plays elsewhere; re-encode it with "
        "'ffmpeg -i IN -c:v libx264 OUT.mp4' if it does not open",
    )


def _open_capture(file: Path) -> cv2.VideoCapture | None:
    capture = cv2.VideoCapture(str(file))
    if not capture.isOpened():
        capture.release()
        return None
    return capture


def _gif_fps(picture: Image.Image) -> float | None:
    """Frames per second from the GIF's frame delays (milliseconds), or None when they are all 0."""
    delays = []
    for index in range(getattr(picture, "n_frames", 1)):
        picture.seek(index)
        delays.append(float(picture.info.get("duration") or 0.0))
    picture.seek(0)
    positive = [delay for delay in delays if delay > 0]
    return 1000.0 / (sum(positive) / len(positive)) if positive else None


def read_video_info(path: str | os.PathLike[str]) -> VideoInfo:
    """Frame count, fps and size of a video or GIF; :class:`BadInputError` naming the path when unreadable."""
    file = _check_readable(path)
    kind: VideoKind = "gif" if file.suffix.lower() == ".gif" else "video"
    if kind == "gif":
        try:
            with Image.open(file) as picture:
                count = int(getattr(picture, "n_frames", 1))
                width, height = picture.size
                fps = _gif_fps(picture)
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise _unreadable(file, str(error)) from error
        if fps is None:
            capture = _open_capture(file)
            opencv_fps = float(capture.get(cv2.CAP_PROP_FPS)) if capture is not None else 0.0
            if capture is not None:
                capture.release()
            fps = opencv_fps if math.isfinite(opencv_fps) and opencv_fps > 0 else DEFAULT_GIF_FPS
        return VideoInfo(file, kind, count, float(fps), int(width), int(height))

    capture = _open_capture(file)
    if capture is None:
        raise _unreadable(file, "OpenCV cannot open it")
    try:
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(capture.get(cv2.CAP_PROP_FPS))
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    finally:
        capture.release()
    if width <= 0 or height <= 0:
        raise _unreadable(file, "it holds no video stream")
    if not (math.isfinite(fps) and fps > 0):
        logger.warning("%s does not state its frame rate; assuming 25 fps", file.name)
        fps = 25.0
    return VideoInfo(file, kind, max(count, 0), fps, width, height)


def _opencv_frames(capture: cv2.VideoCapture) -> Iterator[npt.NDArray[np.uint8]]:
    while True:
        ok, frame = capture.read()
        if not ok or frame is None:
            return
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        elif frame.shape[2] == 4:
            frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
        yield np.ascontiguousarray(frame[:, :, ::-1])  # BGR -> RGB


def _pillow_frames(file: Path) -> Iterator[npt.NDArray[np.uint8]]:
    try:
        with Image.open(file) as picture:
            for index in range(int(getattr(picture, "n_frames", 1))):
                picture.seek(index)
                yield np.array(picture.convert("RGB"), dtype=np.uint8)  # a writable copy
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise _unreadable(file, str(error)) from error


def _rgb_frames(file: Path, kind: VideoKind) -> Iterator[npt.NDArray[np.uint8]]:
    """Decoded ``(H, W, 3)`` uint8 RGB frames, one at a time."""
    capture = _open_capture(file)
    if capture is None:
        if kind != "gif":
            raise _unreadable(file, "OpenCV cannot open it")
        logger.debug("OpenCV cannot open %s; decoding it with Pillow", file.name)
        yield from _pillow_frames(file)
        return
    try:
        yielded = 0
        for frame in _opencv_frames(capture):
            yielded += 1
            yield frame
    finally:
        capture.release()
    if yielded == 0:
        if kind == "gif":
            logger.debug("OpenCV decoded no frame of %s; decoding it with Pillow", file.name)
            yield from _pillow_frames(file)
            return
        raise _unreadable(file, "OpenCV decoded no frame")


def iter_frames(
    path: str | os.PathLike[str], chunk: int = DEFAULT_CHUNK, *, max_frames: int | None = None
) -> Iterator[torch.Tensor]:
    """The frames of a video or GIF as ``(n, 3, H, W)`` float32 RGB chunks in [0, 1], ``n <= chunk``.

    Only one chunk is held at a time. ``max_frames`` stops after that many frames. A missing
    file raises :class:`BadInputError` (with the path) at once, an undecodable one on the
    first ``next()``.
    """
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise BadInputError(f"the chunk size must be a positive whole number, got {chunk!r}", where="iter_frames")
    if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1):
        raise BadInputError(f"max_frames must be a positive whole number, got {max_frames!r}", where="iter_frames")
    return _iter_frames(_check_readable(path), chunk, max_frames)


def _iter_frames(file: Path, chunk: int, max_frames: int | None) -> Iterator[torch.Tensor]:
    kind: VideoKind = "gif" if file.suffix.lower() == ".gif" else "video"
    pending: list[npt.NDArray[np.uint8]] = []
    count = 0
    for frame in _rgb_frames(file, kind):
        if pending and frame.shape != pending[0].shape:
            raise _unreadable(file, f"frame {count} is {frame.shape[1]}x{frame.shape[0]}, unlike the frames before")
        pending.append(frame)
        count += 1
        if len(pending) == chunk:
            yield _to_batch(pending)
            pending = []
        if max_frames is not None and count >= max_frames:
            break
    if pending:
        yield _to_batch(pending)
    if count == 0:
        raise _unreadable(file, "it holds no frames")


def _to_batch(frames: list[npt.NDArray[np.uint8]]) -> torch.Tensor:
    return torch.cat([rgb_uint8_to_tensor(frame) for frame in frames], dim=0)


def read_frames(path: str | os.PathLike[str], *, max_frames: int | None = None) -> torch.Tensor:
    """Every frame (or the first ``max_frames``) as one ``(N, 3, H, W)`` float32 batch."""
    return torch.cat(list(iter_frames(path, DEFAULT_CHUNK, max_frames=max_frames)), dim=0)


# ---------------------------------------------------------------------------------------------
# Writing


def _check_chunk(chunk: object, index: int, size: tuple[int, int] | None) -> torch.Tensor:
    images = check_images(chunk, where=f"frames chunk {index}")
    shape = (int(images.shape[2]), int(images.shape[3]))
    if size is not None and shape != size:
        raise BadInputError(
            f"frame chunk {index} is {shape[1]}x{shape[0]} but the video is {size[1]}x{size[0]}",
            where="write_video",
            fix="give every frame the same size",
        )
    return images


def _even_bgr(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """BGR with an even width and height (MPEG-4 needs them): an odd last row/column is repeated."""
    height, width = rgb.shape[:2]
    bgr = rgb[:, :, ::-1]
    if height % 2 or width % 2:
        bgr = np.pad(bgr, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    return np.ascontiguousarray(bgr)


def _write_opencv(temporary: Path, chunks: Iterable[torch.Tensor], fps: float, final: Path) -> int:
    writer: cv2.VideoWriter | None = None
    size: tuple[int, int] | None = None
    written = 0
    try:
        for index, chunk in enumerate(chunks):
            images = _check_chunk(chunk, index, size)
            if writer is None:
                size = (int(images.shape[2]), int(images.shape[3]))
                height, width = size
                even = (width + width % 2, height + height % 2)
                if even != (width, height):
                    logger.info(
                        "%s: %dx%d is padded to %dx%d (MPEG-4 needs even sizes)", final.name, width, height, *even
                    )
                writer = cv2.VideoWriter(str(temporary), cv2.VideoWriter.fourcc(*"mp4v"), float(fps), even)
                if not writer.isOpened():
                    raise BadInputError(
                        "OpenCV cannot write this video (no MPEG-4 encoder in this OpenCV build?)",
                        where=str(final),
                        fix="write a .gif instead, or install opencv-python from PyPI (it ships FFmpeg)",
                    )
            for image in images:
                writer.write(_even_bgr(tensor_to_rgb_uint8(image)))
                written += 1
    finally:
        if writer is not None:
            writer.release()
    return written


def _write_gif(temporary: Path, chunks: Iterable[torch.Tensor], fps: float) -> int:
    size: list[tuple[int, int]] = []
    count = [0]

    def pictures() -> Iterator[Image.Image]:
        for index, chunk in enumerate(chunks):
            images = _check_chunk(chunk, index, size[0] if size else None)
            if not size:
                size.append((int(images.shape[2]), int(images.shape[3])))
            for image in images:
                count[0] += 1
                yield Image.fromarray(tensor_to_rgb_uint8(image), mode="RGB")

    stream = pictures()
    first = next(stream, None)
    if first is None:
        return 0
    duration = max(20, round(1000.0 / fps / 10) * 10)  # GIF delays are in 1/100 s; below 20 ms browsers slow it
    first.save(temporary, format="GIF", save_all=True, append_images=stream, duration=duration, loop=0)
    return count[0]


def write_video(path: str | os.PathLike[str], chunks: Iterable[torch.Tensor] | torch.Tensor, fps: float) -> int:
    """Write frames to ``path`` (``.mp4``/``.mov``/``.m4v``/``.avi`` or ``.gif``) atomically; returns the frame count.

    ``chunks`` is one ``(N, 3, H, W)`` batch or an iterable of such chunks (e.g. a generator
    that swaps faces chunk by chunk: it is consumed while writing, so memory stays bounded).
    The file is written under a temporary name beside ``path`` and renamed when complete; if
    anything raises meanwhile (including a :class:`~facemagic_core.errors.CancelledError`
    from the producer), the temporary file is removed and ``path`` is left as it was.
    Odd widths or heights are padded by one repeated row/column for MPEG-4. An output path
    that cannot be written is refused (:func:`facemagic_core.files.check_output_path`) before the first chunk is
    asked for, so a swap feeding ``chunks`` does not even start.
    """
    file = Path(path)
    suffix = file.suffix.lower()
    if suffix not in WRITABLE_VIDEO_SUFFIXES:
        raise BadInputError(
            f"cannot write a video with the suffix {suffix or '(none)'!r}",
            where=str(file),
            fix=f"name the output {file.stem}.mp4 or {file.stem}.gif",
        )
    if not (isinstance(fps, int | float) and math.isfinite(fps) and fps > 0):
        raise BadInputError(f"the frame rate must be a positive number, got {fps!r}", where=str(file))
    check_output_path(file)
    batches: Iterable[torch.Tensor] = [chunks] if isinstance(chunks, torch.Tensor) else chunks
    with atomic_path(file) as temporary:
        written = (
            _write_gif(temporary, batches, fps) if suffix == ".gif" else _write_opencv(temporary, batches, fps, file)
        )
        if written == 0:
            raise BadInputError("no frames to write", where=str(file), fix="give at least one frame")
    logger.info("wrote %d frames to %s (%.3g fps)", written, file, fps)
    return written
