"""Reading, checking and converting images.

Inside ``facemagic_core`` an image batch is a ``(B, 3, H, W)`` float32 RGB tensor in [0, 1]
(see :mod:`facemagic_core.types`). :func:`check_images` guards every public entry point;
:func:`load_image` reads files from disk and converts grey and RGBA pictures to RGB, the way
users expect a command line to behave.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import BadInputError
from .files import atomic_path, check_input_file, describe_file_kind

logger = logging.getLogger(__name__)

#: Smallest image side that can hold a face a detector finds (YuNet and SCRFD need ~10 px faces).
MIN_IMAGE_SIDE = 32
#: Largest image side accepted; larger frames should be resized first.
MAX_IMAGE_SIDE = 16384
#: Most pixels a picture file may have (Pillow's own decompression-bomb limit, twice its warning limit):
#: 179 megapixels take 2 GB as a float tensor.
MAX_IMAGE_PIXELS = 2 * 89_478_485
#: Values above this mean the pixels are on another scale (0..255), not [0, 1]. Resamplers and
#: upscalers overshoot [0, 1] a little (clamped later), a photo on the 0..255 scale reaches far above.
MAX_PIXEL_VALUE = 1.5
#: Values below this mean the pixels are on the [-1, 1] scale of a network's output, not [0, 1].
MIN_PIXEL_VALUE = -0.5
#: Full scale of the 16-bit grey pictures Pillow opens in its "I;16" and "I" modes (16-bit PNG, TIFF).
_SIXTEEN_BIT_MAX = 65535.0


def check_images(
    images: object, *, where: str = "images", allow_bytes: bool = False, scan: bool = True
) -> torch.Tensor:
    """Return ``images`` if it is a usable ``(B, 3, H, W)`` batch, else raise ``BadInputError``.

    The tensor is returned as it is (no copy), so callers must not modify it in place. Values are
    checked in one pass over the pixels: NaN and infinities are refused, and so are values outside
    [:data:`MIN_PIXEL_VALUE`, :data:`MAX_PIXEL_VALUE`] (pixels on the 0..255 or -1..1 scale);
    small overshoots of [0, 1] are accepted (later stages clamp them). With ``allow_bytes``, ``uint8``
    frames (pixel values 0..255, as decoders give them: see :func:`is_byte_frames`) pass as they are,
    with nothing to scan. ``scan=False`` checks everything but the values, for a batch (or a view of one)
    that was scanned already.
    """
    if not isinstance(images, torch.Tensor):
        raise BadInputError(
            f"expected an image tensor, got {type(images).__name__}",
            where=where,
            fix="pass a (B, 3, H, W) float tensor in [0, 1]; load files with facemagic_core.images.load_image",
        )
    if images.ndim == 3:
        raise BadInputError(
            f"expected a batch of images (B, 3, H, W), got a single image of shape {tuple(images.shape)}",
            where=where,
            fix="add a batch dimension with images.unsqueeze(0)",
        )
    if images.ndim != 4:
        raise BadInputError(f"expected (B, 3, H, W) images, got shape {tuple(images.shape)}", where=where)
    if images.shape[0] == 0:
        raise BadInputError("the image batch is empty", where=where, fix="pass at least one image")
    channels = images.shape[1]
    if channels not in (1, 2, 3, 4) and images.shape[3] in (1, 2, 3, 4):
        raise BadInputError(
            f"the images look channels-last (B, H, W, C) with shape {tuple(images.shape)}, as ComfyUI's IMAGE is; "
            "FaceMagic works on channels-first (B, 3, H, W)",
            where=where,
            fix="convert with images.permute(0, 3, 1, 2) (and drop an alpha channel)",
        )
    if channels != 3:
        kind = {1: "grey", 2: "grey + alpha", 4: "RGBA"}.get(channels, f"{channels}-channel")
        raise BadInputError(
            f"{kind} images are not supported: FaceMagic works on RGB",
            where=f"{where}, shape {tuple(images.shape)}",
            fix="convert the images to RGB first (drop the alpha channel, repeat a grey channel three times)",
        )
    height, width = int(images.shape[2]), int(images.shape[3])
    if min(height, width) < MIN_IMAGE_SIDE:
        raise BadInputError(
            f"the images are {width}x{height} pixels, too small to hold a detectable face",
            where=where,
            fix=f"use images of at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} pixels",
        )
    if max(height, width) > MAX_IMAGE_SIDE:
        raise BadInputError(
            f"the images are {width}x{height} pixels, larger than the {MAX_IMAGE_SIDE} px FaceMagic accepts",
            where=where,
            fix="resize the images before swapping",
        )
    if allow_bytes and images.dtype == torch.uint8:
        return images
    if not images.is_floating_point():
        raise BadInputError(
            f"expected float images in [0, 1], got dtype {images.dtype}",
            where=where,
            fix="convert with images.float() / 255",
        )
    if not scan:
        return images
    low, high = (float(value) for value in torch.aminmax(images.detach()))  # NaN propagates into both, inf into one
    if not (math.isfinite(low) and math.isfinite(high)):
        raise BadInputError(
            "the images contain NaN or infinite values", where=where, fix="check the node or code that produced them"
        )
    if high > MAX_PIXEL_VALUE:
        raise BadInputError(
            f"the image values reach {high:g}: they look like 0..255 pixels, not the 0..1 FaceMagic expects",
            where=where,
            fix="divide the images by 255",
        )
    if low < MIN_PIXEL_VALUE:
        raise BadInputError(
            f"the image values go down to {low:g}: they look like -1..1 pixels, not the 0..1 FaceMagic expects",
            where=where,
            fix="convert them with (images + 1) / 2",
        )
    return images


@contextlib.contextmanager
def open_picture(file: Path) -> Iterator[Image.Image]:
    """``Image.open`` without Pillow's DecompressionBombWarning on stderr (sizes are checked here, with a message
    that says what to do); its DecompressionBombError above twice that limit still comes through."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(file) as picture:
            yield picture


def load_image(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read an image file as a ``(1, 3, H, W)`` float32 RGB tensor in [0, 1].

    Grey (8 and 16 bit), palette, CMYK and RGBA files are converted to RGB (alpha is dropped).
    The EXIF orientation of camera photos is applied, so a portrait shot is upright as in any
    image viewer. For animated files only the first frame is read; use
    :func:`facemagic_core.video.read_frames` for all frames.
    """
    file = Path(path)
    if file.is_dir():
        raise BadInputError("expected an image file, got a folder", where=str(file), fix="name an image file in it")
    check_input_file(file, what="image", missing="image file not found")
    try:
        with open_picture(file) as picture:
            _check_picture_size(picture, file)
            picture.seek(0)
            upright = ImageOps.exif_transpose(picture)
            if upright.mode in ("I;16", "I;16L", "I;16B", "I"):
                # Pillow's convert("RGB") clips 16-bit values at 255: scale them to [0, 1] here instead.
                grey = np.asarray(upright, dtype=np.float32) / np.float32(_SIXTEEN_BIT_MAX)
                return torch.from_numpy(np.clip(grey, 0.0, 1.0)).expand(1, 3, *grey.shape).contiguous()
            rgb = np.array(upright.convert("RGB"), dtype=np.uint8)  # a writable copy
    except Image.DecompressionBombError as error:  # Image.open refuses twice its MAX_IMAGE_PIXELS itself
        size = _header_size(file)
        if size is not None:
            raise _too_large(*size, file) from error
        raise BadInputError(
            f"the image is too large to open safely ({error})",
            where=str(file),
            fix=f"resize it to at most {_pixel_limit() / 1e6:.3g} megapixels and {MAX_IMAGE_SIDE} px per side",
        ) from error
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:  # Pillow's parsers raise all four
        raise BadInputError(
            f"cannot read the image: {error}", where=str(file), fix="use a JPEG, PNG or WebP file that opens elsewhere"
        ) from error
    return rgb_uint8_to_tensor(rgb)


def check_image_file(path: str | os.PathLike[str]) -> tuple[int, int]:
    """The ``(width, height)`` of a picture file, read from its header; the errors of :func:`load_image` for a
    missing, unreadable or too large file, found without decoding the pixels (a command checks every input
    this way before it loads any model)."""
    file = Path(path)
    if file.is_dir():
        raise BadInputError("expected an image file, got a folder", where=str(file), fix="name an image file in it")
    check_input_file(file, what="image", missing="image file not found")
    try:
        with open_picture(file) as picture:
            _check_picture_size(picture, file)
            size = picture.size
            picture.verify()  # the structure and checksums of PNGs, without decoding
    except Image.DecompressionBombError as error:
        header = _header_size(file)
        raise _too_large(*(header or (0, 0)), file) from error
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise BadInputError(
            f"cannot read the image: {error}", where=str(file), fix="use a JPEG, PNG or WebP file that opens elsewhere"
        ) from error
    return int(size[0]), int(size[1])


#: Picture formats whose files keep an alpha channel when :func:`save_image` is given one.
ALPHA_SUFFIXES = frozenset({".png", ".webp", ".tif", ".tiff"})


def load_alpha(path: str | os.PathLike[str]) -> torch.Tensor | None:
    """The transparency of an image file as a ``(1, 1, H, W)`` float32 tensor in [0, 1], or None when it has none.

    Upright like :func:`load_image` (EXIF orientation applied), so it lines up with its pixels.
    Palette pictures with a transparent colour count as transparent; a fully opaque alpha
    channel gives None. Read errors are left to :func:`load_image`: this returns None then.
    """
    if describe_file_kind(Path(path)) != "a regular file":
        return None  # never open a FIFO or a device; load_image names the problem
    try:
        with open_picture(Path(path)) as picture:
            picture.seek(0)
            upright = ImageOps.exif_transpose(picture)
            if upright.mode not in ("RGBA", "LA", "PA", "La", "RGBa") and "transparency" not in upright.info:
                return None
            alpha = np.array(upright.convert("RGBA").getchannel("A"), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    if alpha.min() == 255:
        return None
    return torch.from_numpy(alpha).float().div_(255.0).reshape(1, 1, *alpha.shape)


def _pixel_limit() -> int:
    """Most pixels a picture may have: :data:`MAX_IMAGE_PIXELS`, or Pillow's own refusal limit if lower."""
    pillow = Image.MAX_IMAGE_PIXELS
    return min(MAX_IMAGE_PIXELS, 2 * int(pillow)) if pillow else MAX_IMAGE_PIXELS


def _check_picture_size(picture: Image.Image, file: Path) -> None:
    """Refuse a picture with more than :data:`MAX_IMAGE_SIDE` px per side or :func:`_pixel_limit` pixels
    (read from the header: nothing is decoded)."""
    width, height = picture.size
    if max(width, height) > MAX_IMAGE_SIDE or width * height > _pixel_limit():
        raise _too_large(width, height, file)


def _too_large(width: int, height: int, file: Path) -> BadInputError:
    """The error for a picture over the limits, naming a size that would be accepted."""
    pixels, limit = width * height, _pixel_limit()
    scale = min(1.0, MAX_IMAGE_SIDE / max(width, height), math.sqrt(limit / max(pixels, 1)))
    fit_width, fit_height = max(1, math.floor(width * scale)), max(1, math.floor(height * scale))
    reason = (
        f"more than {MAX_IMAGE_SIDE} px per side"
        if max(width, height) > MAX_IMAGE_SIDE
        else f"more than the {limit / 1e6:.3g} megapixels FaceMagic opens"
    )
    return BadInputError(
        f"the image is too large to open safely: {width}x{height} pixels ({pixels / 1e6:.3g} megapixels), {reason}",
        where=str(file),
        fix=f"resize it first, e.g. to {fit_width}x{fit_height}",
    )


def _header_size(file: Path) -> tuple[int, int] | None:
    """The size a picture's header states, read the way ``Image.open`` does but without its pixel limit
    (which raises before the size can be seen); None when no Pillow format reads it."""
    Image.init()
    with open(file, "rb") as stream:
        prefix = stream.read(16)
        for name in Image.ID:
            factory, accept = Image.OPEN[name]
            if accept is not None and not accept(prefix):
                continue
            stream.seek(0)
            try:
                return tuple(factory(stream, str(file)).size)  # type: ignore[return-value]
            except Exception:  # each format plugin raises its own errors on files of other formats
                continue
    return None


def is_byte_frames(images: torch.Tensor) -> bool:
    """Whether ``images`` are byte frames: ``uint8`` pixel values 0..255, the form video frames are swapped in.

    The pipeline takes them as well as float frames in [0, 1]: alignment samples only the face regions
    (converted to float there), paste-back writes bytes into those regions, and a whole frame is never
    converted to float (four times its bytes, and a pass over every pixel each way).
    """
    return images.dtype == torch.uint8


def as_float_images(images: torch.Tensor) -> torch.Tensor:
    """Byte frames as float32 in [0, 1]; float images as they are (no copy)."""
    return images.float().div_(255.0) if is_byte_frames(images) else images


def rgb_uint8_to_bytes(rgb: npt.NDArray[np.uint8], device: torch.device | str | None = None) -> torch.Tensor:
    """``(N, H, W, 3)`` uint8 RGB arrays → ``(N, 3, H, W)`` uint8 byte frames on ``device`` (channels-last view,
    no conversion: the array's memory itself on the CPU)."""
    return torch.from_numpy(np.ascontiguousarray(rgb)).to(device).permute(0, 3, 1, 2)


def rgb_uint8_to_tensor(rgb: npt.NDArray[np.uint8]) -> torch.Tensor:
    """``(H, W, 3)`` uint8 RGB array → ``(1, 3, H, W)`` float32 tensor in [0, 1] (see :func:`rgb_uint8_to_tensors`)."""
    return rgb_uint8_to_tensors(np.asarray(rgb)[None])


def rgb_uint8_to_tensors(rgb: npt.NDArray[np.uint8], device: torch.device | str | None = None) -> torch.Tensor:
    """``(N, H, W, 3)`` uint8 RGB arrays → ``(N, 3, H, W)`` float32 tensors in [0, 1], on ``device``.

    The bytes cross to the device once; they are converted there in the array's own pixel order (one pass
    over contiguous memory, several times faster than converting a permuted view). The result is the
    channels-last view of it, which every torch operation takes and which :func:`tensors_to_rgb_uint8`
    turns back into arrays without another copy.
    """
    return torch.from_numpy(np.ascontiguousarray(rgb)).to(device).float().div_(255.0).permute(0, 3, 1, 2)


def float_to_bytes(values: torch.Tensor) -> torch.Tensor:
    """Values in [0, 1] as bytes 0..255 on their device, rounded half up (beyond [0, 1]: clamped); a new tensor."""
    return values.detach().float().mul(255.0).add_(0.5).clamp_(0.0, 255.0).to(torch.uint8)


def _to_uint8(image: torch.Tensor) -> torch.Tensor:
    """``(3, H, W)`` float in [0, 1] → uint8 on the CPU, rounded half up; converted on the image's device first
    so a GPU image crosses the bus as bytes."""
    if image.dtype == torch.uint8:  # byte frames already
        return image.detach().cpu()
    return float_to_bytes(image).cpu()


def tensor_to_rgb_uint8(image: torch.Tensor) -> npt.NDArray[np.uint8]:
    """``(3, H, W)`` float tensor in [0, 1] (or a byte frame) → ``(H, W, 3)`` uint8 RGB array (on the CPU)."""
    return _to_uint8(image).permute(1, 2, 0).contiguous().numpy()


def tensors_to_rgb_uint8(images: torch.Tensor) -> npt.NDArray[np.uint8]:
    """``(N, 3, H, W)`` float tensors in [0, 1] → ``(N, H, W, 3)`` uint8 RGB arrays, converted on their device (no copy
    for channels-last tensors, which :func:`rgb_uint8_to_tensor` makes). Channels-last byte frames on the CPU come
    back as a view of their own memory (no copy): read it, or copy it before writing into it."""
    return _to_uint8(images).permute(0, 2, 3, 1).contiguous().numpy()


def tensor_to_bgr_uint8(image: torch.Tensor) -> npt.NDArray[np.uint8]:
    """``(3, H, W)`` float tensor in [0, 1] → ``(H, W, 3)`` uint8 BGR array, what OpenCV and insightface read."""
    return _to_uint8(image).flip(0).permute(1, 2, 0).contiguous().numpy()


def _check_image_to_save(image: object, path: str | os.PathLike[str]) -> torch.Tensor:
    """``image`` as one ``(3, H, W)`` float tensor with finite values in about [0, 1], else ``BadInputError``."""
    where = str(path)
    if not isinstance(image, torch.Tensor):
        raise BadInputError(
            f"save_image writes a torch tensor, got {type(image).__name__}",
            where=where,
            fix="pass a (3, H, W) float tensor in [0, 1], e.g. torch.from_numpy(array).permute(2, 0, 1) / 255",
        )
    if image.ndim == 4:
        if image.shape[0] != 1:
            raise BadInputError(f"save_image writes one image, got a batch of {image.shape[0]}", where=where)
        image = image[0]
    if image.ndim != 3 or image.shape[0] != 3 or image.shape[1] == 0 or image.shape[2] == 0:
        raise BadInputError(
            f"save_image writes an RGB image of shape (3, H, W) or (1, 3, H, W), got {tuple(image.shape)}",
            where=where,
            fix="move the channels first (image.permute(2, 0, 1)) and convert grey or RGBA pictures to RGB",
        )
    if not image.is_floating_point():
        raise BadInputError(
            f"save_image expects float pixels in [0, 1], got dtype {image.dtype}",
            where=where,
            fix="convert with image.float() / 255",
        )
    low, high = (float(value) for value in torch.aminmax(image.detach()))
    if not (math.isfinite(low) and math.isfinite(high)):
        raise BadInputError(
            "the image contains NaN or infinite values", where=where, fix="check the code that produced it"
        )
    if high > MAX_PIXEL_VALUE:
        raise BadInputError(
            f"the image values reach {high:g}: they look like 0..255 pixels, not the 0..1 save_image expects",
            where=where,
            fix="divide the image by 255",
        )
    if not cv2.haveImageWriter(where):
        raise BadInputError(
            f"cannot write a picture with the suffix {Path(path).suffix or '(none)'}",
            where=where,
            fix="use a .png, .jpg or .webp file name",
        )
    return image


def save_image(image: torch.Tensor, path: str | os.PathLike[str], *, alpha: torch.Tensor | None = None) -> None:
    """Write one ``(3, H, W)`` or ``(1, 3, H, W)`` float image in [0, 1] atomically; the format follows the suffix.

    ``alpha``: an optional ``(H, W)``, ``(1, H, W)`` or ``(1, 1, H, W)`` transparency in [0, 1]
    (e.g. :func:`load_alpha` of the picture the image came from), written as the file's alpha
    channel in the formats of :data:`ALPHA_SUFFIXES`; other formats (JPEG) cannot hold it and
    drop it with a log message. Anything else (another shape, integer pixels, NaN, 0..255
    values, a suffix no image writer knows) is refused with :class:`BadInputError` before any
    file is touched.
    """
    image = _check_image_to_save(image, path)
    bgr = tensor_to_bgr_uint8(image)
    if alpha is not None:
        if not isinstance(alpha, torch.Tensor) or alpha.numel() != image.shape[1] * image.shape[2]:
            got = tuple(alpha.shape) if isinstance(alpha, torch.Tensor) else type(alpha).__name__
            raise BadInputError(
                f"the alpha channel must have the image's {image.shape[2]}x{image.shape[1]} pixels, got {got}",
                where=str(path),
                fix="pass the (1, 1, H, W) alpha of the picture the image was made from (load_alpha)",
            )
        if Path(path).suffix.lower() in ALPHA_SUFFIXES:
            opacity = _to_uint8(alpha.reshape(1, *image.shape[1:])).squeeze(0).numpy()
            bgr = np.ascontiguousarray(np.dstack([bgr, opacity]))
        else:
            logger.info("%s cannot hold transparency; the alpha channel is dropped", Path(path).name)
    try:
        with atomic_path(path) as temporary:
            written = cv2.imwrite(str(temporary), bgr)
            if not written:
                raise OSError("OpenCV wrote nothing")
    except (OSError, cv2.error) as error:
        raise BadInputError(
            f"cannot write the image ({error})",
            where=str(path),
            fix="use a .png, .jpg or .webp file name in a writable folder",
        ) from error
    logger.debug("wrote %s", path)
