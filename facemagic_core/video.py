"""Reading and writing videos and animations (GIF, animated WebP, APNG) as FaceMagic image batches.

Frames come and go as ``(B, 3, H, W)`` float32 RGB tensors in [0, 1] (the layout of
:mod:`facemagic_core.types`), in chunks, so that a long video never has to fit in memory:

- :func:`read_video_info` — frame count, frames per second, size and whether there is sound,
  without decoding the frames;
- :func:`iter_frames` — the frames in chunks of at most ``chunk`` frames; :func:`read_frames` — all at once;
- :func:`write_video` — a video or an animation from an iterable of chunks, streamed (one frame
  in memory at a time, whatever the length) and written atomically: the file appears under its
  name only when every frame was written, so an error, Ctrl-C, SIGTERM or a cancelled run leaves
  nothing behind (not even the temporary ``.partial`` file).

Videos (``.mp4``/``.mov``/``.m4v``/``.mkv``/``.webm``/``.avi``) are decoded and encoded with PyAV
(FFmpeg's libraries, in the ``av`` wheels): H.264 (libx264, ``yuv420p``, CRF 18), which every
player plays. 4:2:0 H.264 cannot hold an odd width or height, so such frames get their last
column/row repeated and the true size is written into the file's comment; FaceMagic reads it
back at the true size. ``audio_from`` copies the sound of another file (the target video) into
the output, trimmed to the frames written. Without PyAV, OpenCV's MPEG-4 Part 2 (``mp4v``) is
used for writing, with a warning, and for reading.

GIFs, animated WebPs and APNGs are decoded with Pillow; a file that ends inside a frame is
reported with the number of that frame instead of giving garbage or fewer frames. GIFs are
written frame by frame (Pillow's palette for each frame), WebPs (libwebp, quality 90) and APNGs
through PyAV. A GIF's frame rate comes from its frame delays; a GIF whose delays are 0
(browsers show those at 10 frames per second) gets OpenCV's reading or :data:`DEFAULT_GIF_FPS`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt
import torch
from PIL import GifImagePlugin, Image, UnidentifiedImageError

from .errors import BadInputError
from .files import atomic_path, check_output_path
from .images import (
    check_images,
    open_picture,
    rgb_uint8_to_bytes,
    rgb_uint8_to_tensors,
    tensor_to_rgb_uint8,
)

try:  # PyAV: H.264, sound, WebP/APNG animations
    import av as _av
except ImportError:  # pragma: no cover - av is a dependency; OpenCV remains as the fallback
    _av = None  # type: ignore[assignment]
av: Any = _av

logger = logging.getLogger(__name__)

#: Suffixes that always hold a video or an animation.
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm", ".gif", ".apng"})
#: Picture suffixes that may hold an animation (read as one when they have more than one frame).
ANIMATION_SUFFIXES = frozenset({".webp", ".png", ".apng", ".gif"})
#: Suffixes :func:`write_video` can write.
WRITABLE_VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".mkv", ".avi", ".gif", ".webp", ".apng"})
#: Outputs that can carry sound.
AUDIO_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".mkv"})
#: Frame rate of a GIF whose frame delays are all 0 and that OpenCV cannot read either.
DEFAULT_GIF_FPS = 10.0
#: Frames per chunk when none is given.
DEFAULT_CHUNK = 16
#: libx264's constant rate factor: 18 is visually lossless for most material (23 is FFmpeg's default).
H264_CRF = 18
#: Quality of animated WebP output (libwebp, 0-100).
WEBP_QUALITY = 90
#: What :func:`write_video` writes into a video's comment when it pads an odd size ("facemagic-size=WxH").
SIZE_TAG = "facemagic-size="

VideoKind = Literal["video", "gif", "animation"]


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds (read without decoding every frame)."""

    path: Path
    kind: VideoKind  # "gif" for GIFs, "animation" for animated WebP/APNG, else "video"
    frame_count: int  # frames in the file (as the container states it; iter_frames yields what it decodes)
    fps: float  # frames per second
    width: int
    height: int
    has_audio: bool = False  # the file has a sound track (videos only)

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frame_count / self.fps if self.fps > 0 else 0.0


def _frame_count(path: Path) -> int:
    """Frames of a WebP/PNG/APNG/GIF picture file (1 for a still), 0 when Pillow cannot read it."""
    try:
        with open_picture(path) as picture:
            return int(getattr(picture, "n_frames", 1))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return 0  # load_image then names the problem (a gigantic picture was a DecompressionBombError traceback)


def is_animation(path: str | os.PathLike[str]) -> bool:
    """Whether a ``.webp``/``.png``/``.apng``/``.gif`` file holds more than one frame."""
    file = Path(path)
    return file.suffix.lower() in ANIMATION_SUFFIXES and file.is_file() and _frame_count(file) > 1


def is_video_path(path: str | os.PathLike[str]) -> bool:
    """Whether the file is a video or an animation: by its suffix, or an animated WebP/PNG by its frames."""
    file = Path(path)
    return file.suffix.lower() in VIDEO_SUFFIXES or is_animation(file)


def _kind(file: Path) -> VideoKind:
    suffix = file.suffix.lower()
    if suffix == ".gif":
        return "gif"
    return "animation" if suffix in ANIMATION_SUFFIXES else "video"


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
        fix="use an .mp4, .mov, .avi, .mkv, .webm, .gif, animated .webp or .png file that plays elsewhere; "
        "re-encode it with 'ffmpeg -i IN -c:v libx264 OUT.mp4' if it does not open",
    )


def _truncated(file: Path, frame: int, total: int | None) -> BadInputError:
    of = f" of {total}" if total else ""
    return BadInputError(
        f"the file ends inside frame {frame + 1}{of} (index {frame}): it is truncated or damaged, "
        f"and only {frame} frame(s) can be read",
        where=str(file),
        fix="use the complete file (download or copy it again), or cut it to the frames that can be read with "
        f"--max-frames {frame}"
        if frame
        else "use the complete file (download or copy it again)",
    )


def _open_capture(file: Path) -> cv2.VideoCapture | None:
    capture = cv2.VideoCapture(str(file))
    if not capture.isOpened():
        capture.release()
        return None
    return capture


def _picture_fps(picture: Image.Image) -> float | None:
    """Frames per second from an animation's frame delays (milliseconds), or None when they are all 0."""
    delays = []
    for index in range(getattr(picture, "n_frames", 1)):
        picture.seek(index)
        if "duration" not in picture.info:
            picture.load()  # WebP states a frame's duration once it is decoded
        delays.append(float(picture.info.get("duration") or 0.0))
    picture.seek(0)
    positive = [delay for delay in delays if delay > 0]
    return 1000.0 / (sum(positive) / len(positive)) if positive else None


def _stated_size(container: Any) -> tuple[int, int] | None:
    """The true (width, height) :func:`write_video` wrote into a padded video's comment, if any."""
    comment = str(container.metadata.get("comment", ""))
    if not comment.startswith(SIZE_TAG):
        return None
    try:
        width, height = (int(part) for part in comment[len(SIZE_TAG) :].split("x"))
    except ValueError:
        return None
    return (width, height) if width > 0 and height > 0 else None


def _open_av(file: Path) -> Any:
    try:
        return av.open(str(file), metadata_errors="ignore")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as error:
        raise _unreadable(file, str(error).split(": '", 1)[0]) from error


def _video_info_av(file: Path) -> VideoInfo:
    with _open_av(file) as container:
        if not container.streams.video:
            raise _unreadable(file, "it holds no video stream")
        stream = container.streams.video[0]
        width, height = int(stream.codec_context.width), int(stream.codec_context.height)
        width, height = _stated_size(container) or (width, height)
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        count = int(stream.frames or 0)
        if count == 0 and stream.duration and stream.time_base:
            count = round(float(stream.duration * stream.time_base) * fps)
        elif count == 0 and container.duration:
            count = round(container.duration / 1_000_000 * fps)
        has_audio = bool(container.streams.audio)
    if width <= 0 or height <= 0:
        raise _unreadable(file, "it holds no video stream")
    if not (math.isfinite(fps) and fps > 0):
        logger.warning("%s does not state its frame rate; assuming 25 fps", file.name)
        fps = 25.0
    return VideoInfo(file, "video", max(count, 0), fps, width, height, has_audio)


def read_video_info(path: str | os.PathLike[str]) -> VideoInfo:
    """Frame count, fps, size and sound of a video or animation; :class:`BadInputError` naming it if unreadable."""
    file = _check_readable(path)
    kind = _kind(file)
    if kind != "video":
        try:
            with Image.open(file) as picture:
                count = int(getattr(picture, "n_frames", 1))
                width, height = picture.size
                fps = _picture_fps(picture)
        except (UnidentifiedImageError, OSError, ValueError, EOFError) as error:
            raise _unreadable(file, str(error)) from error
        if fps is None and kind == "gif":
            capture = _open_capture(file)
            opencv_fps = float(capture.get(cv2.CAP_PROP_FPS)) if capture is not None else 0.0
            if capture is not None:
                capture.release()
            fps = opencv_fps if math.isfinite(opencv_fps) and opencv_fps > 0 else DEFAULT_GIF_FPS
        return VideoInfo(file, kind, count, float(fps or DEFAULT_GIF_FPS), int(width), int(height))
    if av is not None:
        return _video_info_av(file)

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
    return VideoInfo(file, "video", max(count, 0), fps, width, height)


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
    """The frames of a GIF/WebP/APNG; a frame that cannot be decoded (the file ends in it) is reported by number."""
    try:
        picture = Image.open(file)
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise _unreadable(file, str(error)) from error
    with picture:
        try:
            count = int(getattr(picture, "n_frames", 1))
        except (OSError, EOFError, ValueError) as error:
            raise _unreadable(file, str(error)) from error
        for index in range(count):
            try:
                picture.seek(index)
                frame = np.array(picture.convert("RGB"), dtype=np.uint8)  # a writable copy
            except (OSError, EOFError, ValueError) as error:
                raise _truncated(file, index, None) from error
            yield frame


def _av_frames(file: Path) -> Iterator[npt.NDArray[np.uint8]]:
    """The frames of a video through PyAV; a file that stops before the frames its container lists is reported."""
    with _open_av(file) as container:
        if not container.streams.video:
            raise _unreadable(file, "it holds no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        size = _stated_size(container)
        stated = int(stream.frames or 0)
        decoded = 0
        try:
            for frame in container.decode(stream):
                rgb = frame.to_ndarray(format="rgb24")
                if size is not None:
                    rgb = np.ascontiguousarray(rgb[: size[1], : size[0]])
                decoded += 1
                yield rgb
        except av.error.FFmpegError as error:
            if decoded == 0:
                raise _unreadable(file, str(error)) from error
            raise _truncated(file, decoded, stated or None) from error
        if decoded == 0:
            raise _unreadable(file, "no frame could be decoded")
        if stated and decoded < stated:
            raise _truncated(file, decoded, stated)


def _rgb_frames(file: Path, kind: VideoKind) -> Iterator[npt.NDArray[np.uint8]]:
    """Decoded ``(H, W, 3)`` uint8 RGB frames, one at a time."""
    if kind != "video":
        yield from _pillow_frames(file)
        return
    if av is not None:
        yield from _av_frames(file)
        return
    capture = _open_capture(file)
    if capture is None:
        raise _unreadable(file, "OpenCV cannot open it")
    try:
        yielded = 0
        for frame in _opencv_frames(capture):
            yielded += 1
            yield frame
    finally:
        capture.release()
    if yielded == 0:
        raise _unreadable(file, "OpenCV decoded no frame")


def iter_frames(
    path: str | os.PathLike[str],
    chunk: int = DEFAULT_CHUNK,
    *,
    max_frames: int | None = None,
    as_bytes: bool = False,
) -> Iterator[torch.Tensor]:
    """The frames of a video or animation as ``(n, 3, H, W)`` float32 RGB chunks in [0, 1], ``n <= chunk``.

    ``as_bytes``: ``uint8`` byte frames (0..255) instead, as decoded: the form :func:`pipeline.swap_video`
    swaps in (a quarter of the memory, and no conversion of whole frames either way).
    Only one chunk is held at a time. ``max_frames`` stops after that many frames. A missing
    file raises :class:`BadInputError` (with the path) at once, an undecodable one on the
    first ``next()``, a truncated one when the reading reaches the frame where it stops.
    """
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise BadInputError(f"the chunk size must be a positive whole number, got {chunk!r}", where="iter_frames")
    if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1):
        raise BadInputError(f"max_frames must be a positive whole number, got {max_frames!r}", where="iter_frames")
    return _iter_frames(_check_readable(path), chunk, max_frames, as_bytes)


def _iter_frames(file: Path, chunk: int, max_frames: int | None, as_bytes: bool) -> Iterator[torch.Tensor]:
    # Each decoded frame is copied at once into the chunk's own array (no list of frames beside it), and the
    # generator keeps no reference to a chunk it has handed out: a chunk's memory is freed as soon as the
    # caller lets go of it.
    batch: list[npt.NDArray[np.uint8]] = []  # [the chunk's (chunk, H, W, 3) array] while it is filled
    filled = count = 0
    frames = _rgb_frames(file, _kind(file))
    try:
        for frame in frames:
            if filled and frame.shape != batch[0].shape[1:]:
                raise _unreadable(file, f"frame {count} is {frame.shape[1]}x{frame.shape[0]}, unlike the frames before")
            if not batch:
                batch.append(np.empty((chunk, *frame.shape), np.uint8))
            batch[0][filled] = frame
            filled += 1
            count += 1
            del frame
            if filled == chunk:
                filled = 0
                yield _to_batch(batch.pop(), as_bytes)
            if max_frames is not None and count >= max_frames:
                break
    finally:
        close = getattr(frames, "close", None)
        if close is not None:
            close()
    if filled:
        yield _to_batch(batch.pop()[:filled], as_bytes)
    if count == 0:
        raise _unreadable(file, "it holds no frames")


def _to_batch(frames: npt.NDArray[np.uint8], as_bytes: bool) -> torch.Tensor:
    return rgb_uint8_to_bytes(frames) if as_bytes else rgb_uint8_to_tensors(frames)


def read_frames(path: str | os.PathLike[str], *, max_frames: int | None = None) -> torch.Tensor:
    """Every frame (or the first ``max_frames``) as one ``(N, 3, H, W)`` float32 batch."""
    return torch.cat(list(iter_frames(path, DEFAULT_CHUNK, max_frames=max_frames)), dim=0)


# ---------------------------------------------------------------------------------------------
# Writing


def _check_chunk(chunk: object, index: int, size: tuple[int, int] | None) -> torch.Tensor:
    images = check_images(chunk, where=f"frames chunk {index}", allow_bytes=True)
    shape = (int(images.shape[2]), int(images.shape[3]))
    if size is not None and shape != size:
        raise BadInputError(
            f"frame chunk {index} is {shape[1]}x{shape[0]} but the video is {size[1]}x{size[0]}",
            where="write_video",
            fix="give every frame the same size",
        )
    return images


def _rgb_stream(chunks: Iterable[torch.Tensor]) -> Iterator[npt.NDArray[np.uint8]]:
    """``(H, W, 3)`` uint8 RGB frames of the chunks, one at a time, every chunk checked for its size."""
    size: tuple[int, int] | None = None
    for index, chunk in enumerate(chunks):
        images = _check_chunk(chunk, index, size)
        size = (int(images.shape[2]), int(images.shape[3]))
        for image in images:
            yield tensor_to_rgb_uint8(image)


def _even(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """The frame with an even width and height (4:2:0 needs them): an odd last row/column is repeated."""
    height, width = rgb.shape[:2]
    if height % 2 or width % 2:
        rgb = np.pad(rgb, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    return np.ascontiguousarray(rgb)


def _write_opencv(temporary: Path, frames: Iterator[npt.NDArray[np.uint8]], fps: float, final: Path) -> int:
    """MPEG-4 Part 2 through OpenCV: the fallback when PyAV is not installed."""
    writer: cv2.VideoWriter | None = None
    written = 0
    try:
        for rgb in frames:
            even = _even(rgb)
            if writer is None:
                height, width = even.shape[:2]
                writer = cv2.VideoWriter(str(temporary), cv2.VideoWriter.fourcc(*"mp4v"), float(fps), (width, height))
                if not writer.isOpened():
                    raise BadInputError(
                        "OpenCV cannot write this video (no MPEG-4 encoder in this OpenCV build?)",
                        where=str(final),
                        fix="install PyAV (pip install av), or write a .gif instead",
                    )
            writer.write(np.ascontiguousarray(even[:, :, ::-1]))
            written += 1
    finally:
        if writer is not None:
            writer.release()
    return written


def _audio_source(audio_from: Path | None, output: Path) -> Any:
    """The opened container of ``audio_from`` when it has sound that ``output`` can carry, else None."""
    if audio_from is None:
        return None
    if av is None:
        logger.warning("%s: the sound is not copied (PyAV is not installed)", output.name)
        return None
    try:
        container = av.open(str(audio_from), metadata_errors="ignore")
    except (av.error.FFmpegError, ValueError):
        return None
    if not container.streams.audio:
        container.close()
        return None
    return container


#: Sound codecs copied as they are into MP4/QuickTime/Matroska outputs (others are re-encoded to AAC).
COPIED_AUDIO_CODECS = frozenset({"aac", "mp3", "ac3", "eac3", "opus", "flac", "alac"})


class _AudioCopy:
    """Copies the first sound track of ``source`` into ``output`` packet by packet, up to the frames written.

    Packets are copied as they are (no re-encoding) when the output container takes the codec,
    else the sound is re-encoded to AAC. Packets go out interleaved with the video: whenever
    the video has reached time t, the sound up to t follows.
    """

    def __init__(self, source: Any, output: Any, name: str) -> None:
        self.source = source
        self.input = source.streams.audio[0]
        self.name = name
        self.copy = self.input.codec_context.name in COPIED_AUDIO_CODECS
        if self.copy:
            self.output = output.add_stream_from_template(self.input)
        else:
            self.output = output.add_stream("aac", rate=self.input.codec_context.sample_rate or 48000)
        self.packets = source.demux(self.input)
        self.held: Any = None
        self.muxed = 0
        self.done = False

    def mux_until(self, container: Any, seconds: float) -> None:
        """Copy the sound that starts before ``seconds`` (the time the video has reached)."""
        while not self.done:
            packet = self.held
            self.held = None
            if packet is None:
                try:
                    packet = next(self.packets)
                except (StopIteration, av.error.FFmpegError):
                    self.done = True
                    return
            if packet.dts is None or packet.pts is None:
                continue  # the demuxer's flush packet
            if float(packet.pts * packet.time_base) >= seconds:
                self.held = packet
                return
            if self.copy:
                packet.stream = self.output
                container.mux(packet)
            else:
                for frame in packet.decode():
                    frame.pts = None
                    for encoded in self.output.encode(frame):
                        container.mux(encoded)
            self.muxed += 1

    def finish(self, container: Any, seconds: float) -> None:
        self.mux_until(container, seconds)
        if not self.copy:
            for encoded in self.output.encode(None):
                container.mux(encoded)
        self.source.close()
        logger.info("%s: copied %d sound packet(s)", self.name, self.muxed)


def _write_av_video(
    temporary: Path, frames: Iterator[npt.NDArray[np.uint8]], fps: float, final: Path, audio_from: Path | None
) -> int:
    """H.264 (libx264, yuv420p) in an MP4/QuickTime/Matroska/AVI container, with the sound of ``audio_from``."""
    suffix = final.suffix.lower()
    options = {"movflags": "+faststart"} if suffix in (".mp4", ".mov", ".m4v") else {}
    container_format = {".m4v": "mp4", ".mkv": "matroska"}.get(suffix)
    source = _audio_source(audio_from, final) if suffix in AUDIO_SUFFIXES else None
    written = 0
    rate = _fraction(fps)
    with av.open(str(temporary), "w", format=container_format, options=options) as container:
        stream: Any = None
        audio: _AudioCopy | None = None
        try:
            for rgb in frames:
                if stream is None:
                    height, width = rgb.shape[:2]
                    stream = container.add_stream("libx264", rate=rate)
                    stream.width, stream.height = width + width % 2, height + height % 2
                    stream.pix_fmt = "yuv420p"
                    stream.options = {"crf": str(H264_CRF), "preset": "medium"}
                    if (width, height) != (stream.width, stream.height):
                        container.metadata["comment"] = f"{SIZE_TAG}{width}x{height}"
                        logger.info(
                            "%s: %dx%d is stored as %dx%d (H.264 4:2:0 needs even sizes; the last column/row is "
                            "repeated and FaceMagic reads the file back at %dx%d)",
                            final.name,
                            width,
                            height,
                            stream.width,
                            stream.height,
                            width,
                            height,
                        )
                    if source is not None:
                        audio = _AudioCopy(source, container, final.name)
                frame = av.VideoFrame.from_ndarray(_even(rgb), format="rgb24")
                frame.pts = written
                for packet in stream.encode(frame):
                    container.mux(packet)
                written += 1
                if audio is not None:
                    audio.mux_until(container, written / fps)
            if stream is not None:
                for packet in stream.encode(None):
                    container.mux(packet)
            if audio is not None:
                audio.finish(container, written / fps)
        finally:
            if source is not None and audio is None:
                source.close()
    return written


def _fraction(fps: float) -> Any:
    from fractions import Fraction

    return Fraction(fps).limit_denominator(1001)


def _write_av_animation(temporary: Path, frames: Iterator[npt.NDArray[np.uint8]], fps: float, suffix: str) -> int:
    """An animated WebP (libwebp, quality :data:`WEBP_QUALITY`) or APNG through PyAV, looping forever."""
    webp = suffix == ".webp"
    options = {"loop": "0"} if webp else {"plays": "0"}
    written = 0
    with av.open(str(temporary), "w", format="webp" if webp else "apng", options=options) as container:
        stream: Any = None
        for rgb in frames:
            if stream is None:
                height, width = rgb.shape[:2]
                stream = container.add_stream("libwebp_anim" if webp else "apng", rate=_fraction(fps))
                stream.width, stream.height = width, height
                stream.pix_fmt = "yuv420p" if webp else "rgb24"
                if webp:
                    stream.options = {"quality": str(WEBP_QUALITY), "lossless": "0"}
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = written
            for packet in stream.encode(frame):
                container.mux(packet)
            written += 1
        if stream is not None:
            for packet in stream.encode(None):
                container.mux(packet)
    return written


def _write_gif(temporary: Path, frames: Iterator[npt.NDArray[np.uint8]], fps: float) -> int:
    """A looping GIF written frame by frame (each with its own palette), so memory does not grow with the frames."""
    duration = max(20, round(1000.0 / fps / 10) * 10)  # GIF delays are in 1/100 s; below 20 ms browsers slow it
    written = 0
    with open(temporary, "wb") as stream:
        for rgb in frames:
            picture = Image.fromarray(rgb, mode="RGB").convert("P", palette=Image.Palette.ADAPTIVE)
            if written == 0:
                header, _ = GifImagePlugin.getheader(picture, None, {"loop": 0, "duration": duration})
                for block in header:
                    stream.write(block)
            for block in GifImagePlugin.getdata(picture, duration=duration, include_color_table=True):
                stream.write(block)
            written += 1
        if written:
            stream.write(b";")  # the GIF trailer
    return written


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While writing, SIGTERM raises KeyboardInterrupt (as Ctrl-C does), so the temporary file is removed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(number: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {number}")

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except (ValueError, OSError):  # not allowed here (an embedded interpreter)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def write_video(
    path: str | os.PathLike[str],
    chunks: Iterable[torch.Tensor] | torch.Tensor,
    fps: float,
    *,
    audio_from: str | os.PathLike[str] | None = None,
) -> int:
    """Write frames to ``path`` atomically; returns the frame count.

    ``path`` ends in ``.mp4``/``.mov``/``.m4v``/``.mkv``/``.avi`` (H.264), ``.gif``, ``.webp``
    (animated WebP) or ``.apng`` (an animated ``.png`` is read, but a ``.png`` output stays a
    picture). ``chunks`` is one ``(N, 3, H, W)`` batch or an
    iterable of such chunks (e.g. a generator that swaps faces chunk by chunk: it is consumed
    while writing, one frame at a time, so memory stays flat however many frames there are).
    ``audio_from``: a video whose sound is copied into an ``.mp4``/``.mov``/``.m4v``/``.mkv``
    output, up to the length of the frames written (ignored when it has no sound).
    The file is written under a temporary name beside ``path`` and renamed when complete; if
    anything raises meanwhile (a :class:`~facemagic_core.errors.CancelledError` from the
    producer, Ctrl-C, or SIGTERM, which is turned into the same KeyboardInterrupt), the
    temporary file is removed and ``path`` is left as it was. An output path that cannot be
    written is refused (:func:`facemagic_core.files.check_output_path`) before the first chunk
    is asked for, so a swap feeding ``chunks`` does not even start.
    """
    file = Path(path)
    suffix = file.suffix.lower()
    if suffix not in WRITABLE_VIDEO_SUFFIXES:
        raise BadInputError(
            f"cannot write a video with the suffix {suffix or '(none)'!r}",
            where=str(file),
            fix=f"name the output {file.stem}.mp4, {file.stem}.gif or {file.stem}.webp",
        )
    if not (isinstance(fps, int | float) and math.isfinite(fps) and fps > 0):
        raise BadInputError(f"the frame rate must be a positive number, got {fps!r}", where=str(file))
    if suffix in (".webp", ".apng") and av is None:
        raise BadInputError(
            f"writing animated {suffix} needs PyAV", where=str(file), fix="install it (pip install av) or write a .gif"
        )
    check_output_path(file)
    batches: Iterable[torch.Tensor] = [chunks] if isinstance(chunks, torch.Tensor) else chunks
    sound = Path(audio_from) if audio_from is not None else None
    with _sigterm_as_interrupt(), atomic_path(file) as temporary:
        frames = _rgb_stream(batches)
        if suffix == ".gif":
            written = _write_gif(temporary, frames, fps)
        elif suffix in (".webp", ".apng"):
            written = _write_av_animation(temporary, frames, fps, suffix)
        elif av is not None:
            written = _write_av_video(temporary, frames, fps, file, sound)
        else:
            logger.warning("%s: PyAV is not installed; writing MPEG-4 Part 2 with OpenCV (pip install av)", file.name)
            written = _write_opencv(temporary, frames, fps, file)
        if written == 0:
            raise BadInputError("no frames to write", where=str(file), fix="give at least one frame")
    logger.info("wrote %d frames to %s (%.3g fps)", written, file, fps)
    return written
