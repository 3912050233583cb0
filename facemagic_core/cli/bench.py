"""``facemagic bench``: what a user pays per frame, FaceMagic's pipeline against the common baseline, in one run.

Both sides swap the same frames with the same full-size inswapper-layout network (width 128, 128 px
crops, 349 GFLOP per face; random weights, exported to ONNX in the public file's signature) at the
same precision (fp32 on a CPU; fp16 on both sides on a GPU), from the same decoded uint8 frames to
uint8 frames ready to encode (RGB for FaceMagic, as its decoder gives them; BGR for insightface).

- **FaceMagic**: frames in chunks cross to the device once as uint8 and stay bytes (only the face
  regions are converted to float, for alignment and paste-back), are aligned, swapped (the generator
  loaded as ``facemagic swap`` loads it: on a CPU onnxruntime for uniform swaps, on a GPU the native
  torch module) and pasted back in batches; the result comes back as uint8.
- **Baseline**: insightface's own ``INSwapper.get(frame, face, source, paste_back=True)`` per face, as
  the packs built on it call it (when insightface is installed; else the same steps re-implemented).

Decoding (synthetic frames, or the clip given) and detection (YuNet through OpenCV) are the same work
for both, measured once per frame and added to both totals. The two sides run in pairs, the order
alternating from pair to pair; the ratio is the median of the pairs' ratios, so a slow moment on a
busy machine hits both sides of a pair alike. Peak memory is the process's resident-set high-water
mark above what it held before each side's run (Linux), or CUDA's peak allocation on a GPU.

With no ``--clip``, the frames are insightface's sample photo ``t1.jpg`` (six faces; shipped inside
the insightface package) panning a little from frame to frame, generated chunk by chunk so that
memory does not grow with the frame count.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import torch

from ..errors import BadInputError
from ..images import rgb_uint8_to_bytes, tensor_to_bgr_uint8, tensors_to_rgb_uint8
from ..types import EMBEDDING_DIM, Face, Identity
from . import DEFAULT_MODEL_DIR
from . import identity as identity_command

#: Width C of the inswapper layout: the public model's.
FULL_WIDTH = 128
#: Crop side of the public inswapper_128.
FULL_IMAGE_SIZE = 128
#: Smallest frame side the benchmark scales to (a face must stay detectable).
MIN_FRAME_SIDE = 64
#: Tallest frames bench scales to (8K video); taller ones only exhaust memory.
MAX_FRAME_HEIGHT = 4320
#: Frame heights of the named cases.
HEIGHTS = {"720p": 720, "1080p": 1080, "4k": 2160}


@dataclass(frozen=True)
class BenchConfig:
    """What to measure."""

    clip: Path | None = None  # video or GIF with faces; None: insightface's t1.jpg, panning
    frames: int = 16  # frames timed per run (after one warm-up chunk)
    height: int = 1080  # frames are scaled to this height, keeping the aspect ratio
    faces: int = 1  # faces swapped per frame: the largest N found
    width: int = FULL_WIDTH  # inswapper width C (narrower only for quick tests)
    image_size: int = FULL_IMAGE_SIZE
    device: str = "auto"
    dtype: str = "auto"  # both sides: fp32 on a CPU, fp16 on a GPU
    chunk: int = 8  # frames per pipeline chunk
    detector: Path | None = None  # YuNet file; None: the registry's (downloaded into model_dir)
    repeats: int = 3  # pairs of runs, order alternating
    baseline: str = "auto"  # insightface (its INSwapper class), reference (the same steps here), auto
    model_dir: Path = DEFAULT_MODEL_DIR
    seed: int = 0


@dataclass
class SideTimes:
    """Seconds per stage of one run of one side over all frames (decode and detect: shared, see the docstring)."""

    convert: float = 0.0  # uint8 frames to the device and back (FaceMagic only; the baseline works in uint8)
    align: float = 0.0
    generator: float = 0.0
    paste: float = 0.0
    peak_bytes: int = 0

    @property
    def swap(self) -> float:
        return self.convert + self.align + self.generator + self.paste


@dataclass(eq=False)
class BenchResult:
    config: BenchConfig
    device_name: str
    versions: dict[str, str]
    generator_runtime: str
    baseline_kind: str
    width: int
    gflop_per_face: float
    frame_size: tuple[int, int]  # (H, W)
    frames: int
    faces: int  # faces swapped over the timed frames of one run
    threads: int
    dtype: str
    decode: float  # seconds, all timed frames (shared)
    detect: float  # seconds, all timed frames (shared)
    pipeline_runs: list[SideTimes] = field(default_factory=list)
    baseline_runs: list[SideTimes] = field(default_factory=list)
    pipeline_frame: npt.NDArray[np.uint8] | None = None  # the first timed frame of each side, BGR
    baseline_frame: npt.NDArray[np.uint8] | None = None
    source_frame: npt.NDArray[np.uint8] | None = None

    def total(self, times: SideTimes) -> float:
        return self.decode + self.detect + times.swap

    @property
    def ratio(self) -> float:
        """Median over the pairs of baseline time / FaceMagic time, end to end (> 1: FaceMagic is faster)."""
        pairs = zip(self.pipeline_runs, self.baseline_runs, strict=True)
        return statistics.median(self.total(theirs) / self.total(ours) for ours, theirs in pairs)

    @property
    def ratio_swap(self) -> float:
        """As :attr:`ratio`, without the shared decode and detection."""
        pairs = zip(self.pipeline_runs, self.baseline_runs, strict=True)
        return statistics.median(theirs.swap / ours.swap for ours, theirs in pairs)

    def median(self, runs: list[SideTimes]) -> SideTimes:
        """The run whose total is the median of the side's runs."""
        ordered = sorted(runs, key=lambda times: times.swap)
        return ordered[(len(ordered) - 1) // 2]


# ---------------------------------------------------------------------------------------------
# Facts for the table


def inswapper_gflop(width: int, size: int = 128, blocks: int = 6) -> float:
    """Multiply-adds x 2 of one face through the inswapper layout (349 GFLOP for C = 128, 128 px)."""
    c, s = width, size

    def conv(c_in: int, c_out: int, kernel: int, side: int) -> float:
        return float(c_in * c_out * kernel * kernel * side * side)

    macs = (
        conv(3, c, 7, s)
        + conv(c, 2 * c, 3, s)
        + conv(2 * c, 4 * c, 3, s // 2)
        + conv(4 * c, 8 * c, 3, s // 4)
        + 2 * blocks * conv(8 * c, 8 * c, 3, s // 4)
        + conv(8 * c, 4 * c, 3, s // 2)
        + conv(4 * c, 2 * c, 3, s)
        + conv(2 * c, c, 3, s)
        + conv(c, 3, 7, s)
    )
    return 2 * macs / 1e9


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"GPU {torch.cuda.get_device_name(device)}"
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            model = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "")
    except OSError:
        pass
    return f"CPU {model or platform.processor() or platform.machine()} ({os.cpu_count()} cores visible)"


def _versions() -> dict[str, str]:
    import onnxruntime

    return {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "opencv": cv2.__version__}


# ---------------------------------------------------------------------------------------------
# Frames


def sample_photo() -> Path:
    """insightface's sample photo ``t1.jpg`` (six faces), shipped inside the insightface package."""
    try:
        import insightface
    except ImportError as error:
        raise BadInputError(
            "insightface is not installed, so its sample photo is missing", where="facemagic bench", fix="give --clip"
        ) from error
    path = Path(insightface.__file__).parent / "data" / "images" / "t1.jpg"
    if not path.is_file():
        raise BadInputError("insightface's sample photo t1.jpg is missing", where=str(path), fix="give --clip")
    return path


def _scaled(picture: npt.NDArray[np.uint8], height: int) -> npt.NDArray[np.uint8]:
    width = max(MIN_FRAME_SIDE, round(picture.shape[1] * height / picture.shape[0]))
    return np.ascontiguousarray(cv2.resize(picture, (width, height), interpolation=cv2.INTER_LINEAR))


class FrameSource:
    """Decoded uint8 BGR frames at the benchmark's height, made chunk by chunk (memory flat in the frame count).

    A clip is read once (at most ``keep`` frames, scaled) and cycled; without one, the sample photo
    pans by a few pixels per frame.
    """

    def __init__(self, clip: Path | None, height: int, keep: int = 32) -> None:
        self.still: npt.NDArray[np.uint8] | None = None
        self.frames: list[npt.NDArray[np.uint8]] = []
        if clip is None:
            self.name = "insightface's t1.jpg (6 faces), panning"
            picture = cv2.imread(str(sample_photo()), cv2.IMREAD_COLOR)
            if picture is None:
                raise BadInputError("cannot read insightface's t1.jpg", where="facemagic bench", fix="give --clip")
            self.still = _scaled(np.asarray(picture, np.uint8), height)
        else:
            from ..video import iter_frames

            self.name = clip.name
            for chunk in iter_frames(clip, 8, max_frames=keep):
                for frame in chunk:
                    self.frames.append(_scaled(tensor_to_bgr_uint8(frame), height))
        self.shape = self.still.shape if self.still is not None else self.frames[0].shape

    def frame(self, index: int) -> npt.NDArray[np.uint8]:
        if self.still is None:
            return self.frames[index % len(self.frames)].copy()
        shift = np.array([[1, 0, 6 * np.sin(index / 4)], [0, 1, 4 * np.cos(index / 5)]], np.float32)
        size = (int(self.still.shape[1]), int(self.still.shape[0]))
        return np.asarray(cv2.warpAffine(self.still, shift, size, borderMode=cv2.BORDER_REFLECT), np.uint8)

    def chunks(self, first: int, count: int, chunk: int) -> Iterator[list[npt.NDArray[np.uint8]]]:
        for start in range(first, first + count, chunk):
            yield [self.frame(index) for index in range(start, min(start + chunk, first + count))]


# ---------------------------------------------------------------------------------------------
# Memory


def _reset_peak(device: torch.device) -> int:
    """Start a peak-memory window; returns the bytes in use now (resident set, or CUDA allocation)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return int(torch.cuda.memory_allocated(device))
    _release_free_heap()  # else one side reuses what the other freed and its peak reads too low
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: reset the resident-set high-water mark
    except OSError:
        return 0
    return _status_bytes("VmRSS")


def _release_free_heap() -> None:
    """Give freed heap memory back to the system (glibc's malloc_trim), so that the resident set is what is in use."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(name).malloc_trim(0)


def _peak_since(device: torch.device, before: int) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device)) - before
    return max(0, _status_bytes("VmHWM") - before) if before else 0


def _status_bytes(key: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------
# The two sides


class _TimedSession:
    """An onnxruntime session whose ``run`` time is added up (the generator stage of the baseline)."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.seconds = 0.0

    def run(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.session.run(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - started

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)


def _pipeline_chunk(
    frames: list[npt.NDArray[np.uint8]], faces: list[list[Face]], identity: Identity, generator: Any, times: SideTimes
) -> npt.NDArray[np.uint8]:
    """FaceMagic on one chunk of decoded RGB frames, as ``facemagic swap`` runs a video: the bytes to the device once,
    align (face regions converted to float), swap, paste back into the bytes, back to the host."""
    from ..pipeline import align_target_faces, blend_swap, forward_swap

    device = generator.device
    t0 = time.perf_counter()
    images = rgb_uint8_to_bytes(np.stack(frames), device)  # byte frames: only face regions become float
    _synchronize(device)
    t1 = time.perf_counter()
    aligned = align_target_faces(images, faces, generator, no_face="pass")
    _synchronize(device)
    t2 = time.perf_counter()
    swapped = forward_swap(aligned, generator, identity)
    _synchronize(device)
    t3 = time.perf_counter()
    pasted, _ = blend_swap(images, aligned, swapped)
    _synchronize(device)
    t4 = time.perf_counter()
    out = tensors_to_rgb_uint8(pasted)
    t5 = time.perf_counter()
    times.convert += (t1 - t0) + (t5 - t4)
    times.align += t2 - t1
    times.generator += t3 - t2
    times.paste += t4 - t3
    return out


def _baseline_chunk(
    frames: list[npt.NDArray[np.uint8]], faces: list[list[Face]], source: Any, swapper: Any, times: SideTimes
) -> list[npt.NDArray[np.uint8]]:
    """insightface's INSwapper.get per face, frame after frame, in uint8 BGR as the packs built on it run it."""
    from insightface.app.common import Face as InsightFace

    session: _TimedSession = swapper.session
    out = []
    before = session.seconds
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # scikit-image's notice about insightface's estimate() call
        for frame, found in zip(frames, faces, strict=True):
            result = frame
            for face in found:
                target = InsightFace(bbox=face.bbox, kps=face.landmarks_5, det_score=face.score)
                result = swapper.get(result, target, source, paste_back=True)
            out.append(result)
    total = time.perf_counter() - started
    generator = session.seconds - before
    times.generator += generator
    times.align += 0.0
    times.paste += total - generator  # alignment and paste-back, not separable inside INSwapper.get
    return out


def _area(face: Face) -> float:
    return float(np.prod(np.asarray(face.bbox[2:]) - np.asarray(face.bbox[:2])))


def run_benchmark(config: BenchConfig, progress: Callable[[str], None] | None = None) -> BenchResult:
    """Measure both sides on the same frames, faces and weights (see the module docstring)."""
    import io

    from ..analysis import FaceAnalyzer
    from ..generators import GeneratorConfig, InswapperGenerator, export_inswapper_onnx, load_generator
    from ..runtime import create_session, onnx_providers, resolve_device, resolve_dtype

    say = progress or (lambda text: None)
    limits = {
        "frames": (config.frames, 1, None),
        "chunk": (config.chunk, 1, None),
        "repeats": (config.repeats, 1, None),
        "faces": (config.faces, 1, None),
        "height": (config.height, MIN_FRAME_SIDE, MAX_FRAME_HEIGHT),
        "width": (config.width, 1, None),
    }
    for name, (value, low, high) in limits.items():
        if value < low or (high is not None and value > high):
            allowed = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise BadInputError(
                f"--{name} must be {allowed}, got {value}", where="facemagic bench", fix=f"give --{name} {allowed}"
            )
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)

    source_frames = FrameSource(config.clip, config.height)
    say(f"frames: {source_frames.name}, {source_frames.shape[1]}x{source_frames.shape[0]}")
    detector = config.detector
    if detector is None:
        from ..hub import ensure_model

        detector = ensure_model("yunet", config.model_dir)
    analyzer = FaceAnalyzer(backend="yunet", detector=detector, providers=["cpu"])
    target = rng.standard_normal(EMBEDDING_DIM).astype(np.float32)

    def detect(rgb: list[npt.NDArray[np.uint8]]) -> list[list[Face]]:
        found = analyzer.detect_faces(rgb_uint8_to_bytes(np.stack(rgb)))
        largest = [
            sorted(faces, key=lambda f: -float(np.prod(f.bbox[2:] - f.bbox[:2])))[: config.faces] for faces in found
        ]

        return [[dataclasses.replace(face, image_index=0, embedding=target) for face in faces] for faces in largest]

    say(f"building the inswapper layout, width {config.width}, {config.image_size} px, random weights, {dtype}")
    module = InswapperGenerator(GeneratorConfig.inswapper_layout(channels=config.width, image_size=config.image_size))
    module = module.eval()
    with torch.no_grad():
        module.emap.copy_(torch.linalg.qr(torch.randn(EMBEDDING_DIM, EMBEDDING_DIM))[0])  # a rotation: unit latents
    source = rng.standard_normal(EMBEDDING_DIM).astype(np.float32)
    source /= np.linalg.norm(source)
    identity = Identity(source, embedding_model=module.cfg.embedding_model)
    from insightface.app.common import Face as InsightFace
    from insightface.model_zoo.inswapper import INSwapper

    source_face = InsightFace(embedding=source)
    with tempfile.TemporaryDirectory(prefix="facemagic-bench-") as folder:
        exported = module.half() if dtype == torch.float16 else module
        onnx_path = export_inswapper_onnx(exported, Path(folder) / "inswapper_128.onnx")
        module.float()
        providers = onnx_providers("cpu" if device.type == "cpu" else str(device))
        session = create_session(onnx_path, providers=providers, what="baseline inswapper")
        baseline_provider = str(session.get_providers()[0])
        if device.type != "cpu" and baseline_provider == "CPUExecutionProvider":
            say(
                "WARNING: the baseline runs on the CPU: this onnxruntime has no GPU provider (insightface on a GPU "
                "needs onnxruntime-gpu; 'facemagic models doctor' says how to install it without the CPU build)"
            )
        with contextlib.redirect_stdout(io.StringIO()):  # INSwapper prints the input shape
            swapper = INSwapper(model_file=str(onnx_path), session=_TimedSession(session))
        generator = load_generator(
            onnx_path, model_dir=Path(folder), device=device, dtype=dtype, cache_conversion=False
        )
    runtime = type(generator).__name__
    if runtime == "RuntimeChoiceSwapper":
        runtime = "onnxruntime (uniform swap; torch for per-block mixing)"
    elif runtime == "TorchSwapper":
        runtime = f"torch module ({str(generator.dtype).removeprefix('torch.')})"

    say("warming up both sides on one chunk")
    warm = next(source_frames.chunks(0, config.chunk, config.chunk))
    warm_rgb = [np.ascontiguousarray(frame[:, :, ::-1]) for frame in warm]
    warm_faces = detect(warm_rgb)
    _pipeline_chunk(warm_rgb, warm_faces, identity, generator, SideTimes())
    _baseline_chunk(warm, warm_faces, source_face, swapper, SideTimes())

    result = BenchResult(
        config=config,
        device_name=device_name(device),
        versions=_versions(),
        generator_runtime=runtime,
        baseline_kind=f"insightface INSwapper.get(paste_back=True) on onnxruntime's {baseline_provider}",
        width=config.width,
        gflop_per_face=inswapper_gflop(config.width, config.image_size),
        frame_size=(int(source_frames.shape[0]), int(source_frames.shape[1])),
        frames=config.frames,
        faces=0,
        threads=torch.get_num_threads(),
        dtype=str(dtype).removeprefix("torch."),
        decode=0.0,
        detect=0.0,
    )
    decode = detect_seconds = 0.0
    for run in range(config.repeats):
        say(f"pair {run + 1} of {config.repeats}: {'FaceMagic first' if run % 2 == 0 else 'baseline first'}")
        ours, theirs = SideTimes(), SideTimes()
        faces_seen = 0
        frames_iter = source_frames.chunks(config.chunk, config.frames, config.chunk)
        while True:
            started = time.perf_counter()
            frames = next(frames_iter, None)
            if frames is None:
                break
            rgb = [np.ascontiguousarray(frame[:, :, ::-1]) for frame in frames]  # decoders give either order
            decoded = time.perf_counter()
            faces = detect(rgb)
            decode += decoded - started
            detect_seconds += time.perf_counter() - decoded
            faces_seen += sum(map(len, faces))
            order = ("ours", "theirs") if run % 2 == 0 else ("theirs", "ours")
            for side in order:
                times = ours if side == "ours" else theirs
                before = _reset_peak(device)
                if side == "ours":
                    out = _pipeline_chunk(rgb, faces, identity, generator, times)
                    if result.pipeline_frame is None:
                        result.pipeline_frame = np.ascontiguousarray(out[0][:, :, ::-1])
                        result.source_frame = frames[0].copy()
                else:
                    pictures = _baseline_chunk(frames, faces, source_face, swapper, times)
                    if result.baseline_frame is None:
                        result.baseline_frame = pictures[0].copy()
                times.peak_bytes = max(times.peak_bytes, _peak_since(device, before))
        result.pipeline_runs.append(ours)
        result.baseline_runs.append(theirs)
        result.faces = faces_seen
    if result.faces == 0:
        raise BadInputError("no face was found in the frames", where=source_frames.name, fix="use a clip with faces")
    result.decode, result.detect = decode / config.repeats, detect_seconds / config.repeats
    return result


# ---------------------------------------------------------------------------------------------
# The table


def format_table(result: BenchResult, *, markdown: bool = False) -> str:
    """The report: setup lines, per-stage milliseconds per frame (median run), fps, faces/s, memory, the ratio."""
    config, n = result.config, result.frames
    height, width = result.frame_size
    ours, theirs = result.median(result.pipeline_runs), result.median(result.baseline_runs)
    full = result.width == FULL_WIDTH and config.image_size == FULL_IMAGE_SIZE
    setup = [
        ("device", result.device_name + (f", {result.threads} threads" if "CPU" in result.device_name else "")),
        ("versions", ", ".join(f"{name} {version}" for name, version in result.versions.items())),
        ("frames", f"{n} of {width}x{height}, {result.faces / n:.1f} faces swapped per frame (+ a warm-up chunk)"),
        (
            "network",
            f"inswapper layout, width C={result.width}, {config.image_size} px crops, {result.gflop_per_face:.1f} "
            f"GFLOP per face, {result.dtype} on both sides"
            + ("" if full else " (NARROWED: not the public model's size; for tests only)"),
        ),
        (
            "FaceMagic",
            f"chunks of {config.chunk} frames, uint8 to the device once; generator: {result.generator_runtime}",
        ),
        ("baseline", result.baseline_kind + ", one face at a time"),
        ("shared", "decoding and YuNet detection: the same for both, added to both totals"),
        (
            "timing",
            f"{config.repeats} pairs of runs, order alternating; stages of the median run, ratio median of pairs",
        ),
    ]
    per_frame = 1000.0 / n
    rows = [
        ("decode (shared)", result.decode, result.decode),
        ("detect (shared)", result.detect, result.detect),
        ("uint8 <-> device", ours.convert, theirs.convert),
        ("align", ours.align, theirs.align),
        ("generator", ours.generator, theirs.generator),
        ("paste-back" if theirs.align else "align + paste-back", ours.paste, theirs.paste),
    ]
    if not theirs.align:
        rows = [*rows[:3], ("align + paste-back", ours.align + ours.paste, theirs.paste), rows[4]]
    rows.append(("total", result.total(ours), result.total(theirs)))
    ms_rows = [(name, a * per_frame, b * per_frame) for name, a, b in rows]
    fps_rows = [
        ("fps, end to end", n / result.total(ours), n / result.total(theirs)),
        ("faces per second", result.faces / result.total(ours), result.faces / result.total(theirs)),
        ("peak memory, MB", ours.peak_bytes / 2**20, theirs.peak_bytes / 2**20),
    ]
    ratio_line = (
        f"speed-up (baseline time / FaceMagic time, median of {config.repeats} pairs): {result.ratio:.2f}x end to end, "
        f"{result.ratio_swap:.2f}x without the shared decode and detection"
    )
    if markdown:
        lines = [f"- **{name}**: {value}" for name, value in setup]
        lines += ["", "| ms per frame | FaceMagic | baseline (insightface INSwapper) |", "|---|---:|---:|"]
        lines += [f"| {name} | {a:.1f} | {b:.1f} |" for name, a, b in ms_rows]
        lines += [f"| **{name}** | **{a:.2f}** | **{b:.2f}** |" for name, a, b in fps_rows[:2]]
        lines += [f"| {fps_rows[2][0]} | {fps_rows[2][1]:.0f} | {fps_rows[2][2]:.0f} |"]
        return "\n".join([*lines, "", f"**{ratio_line}**"])
    label = max(len(name) for name, _ in setup)
    lines = ["FaceMagic swap benchmark"] + [f"  {name:<{label}} : {value}" for name, value in setup]
    lines += ["", f"  {'ms per frame':<24}{'FaceMagic':>14}{'baseline':>12}", "  " + "-" * 50]
    lines += [f"  {name:<24}{a:>14.1f}{b:>12.1f}" for name, a, b in ms_rows]
    lines += ["  " + "-" * 50]
    lines += [f"  {name:<24}{a:>14.2f}{b:>12.2f}" for name, a, b in fps_rows[:2]]
    lines += [f"  {fps_rows[2][0]:<24}{fps_rows[2][1]:>14.0f}{fps_rows[2][2]:>12.0f}"]
    return "\n".join([*lines, "", "  " + ratio_line])


def compare_outputs(result: BenchResult) -> dict[str, float]:
    """How alike the two sides' first frames are (0..255): mean and largest absolute difference overall, and the
    share of pixels either side changed."""
    if result.pipeline_frame is None or result.baseline_frame is None or result.source_frame is None:
        return {"mean": float("nan"), "changed_ours": 0.0, "changed_theirs": 0.0}
    ours = result.pipeline_frame.astype(np.int16)
    theirs = result.baseline_frame.astype(np.int16)
    source = result.source_frame.astype(np.int16)
    return {
        "mean": float(np.abs(ours - theirs).mean()),
        "changed_ours": float((np.abs(ours - source).max(-1) > 2).mean()),
        "changed_theirs": float((np.abs(theirs - source).max(-1) > 2).mean()),
    }


# ---------------------------------------------------------------------------------------------
# The command


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="measure swap speed and memory against insightface's INSwapper, side by side",
        description=identity_command.wrap_description(
            "Measure what a user pays per frame, FaceMagic's pipeline against insightface's own INSwapper.get "
            "(paste_back=True), with the same full-size inswapper-layout network (random weights, the public "
            "file's signature and size: 349 GFLOP per face) at the same precision, on the same frames, in one "
            "run: pairs of runs in alternating order, per-stage times, faces per second, peak memory and the "
            "ratio. Without --clip the frames are insightface's own sample photo (six faces). Needs the YuNet "
            "detector (downloaded into --models unless --yunet names the file)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--clip", type=Path, default=None, help="video or GIF with faces (default: a generated clip)")
    parser.add_argument("--frames", type=int, default=16, help="frames timed per run (default: %(default)s)")
    parser.add_argument("--height", default="1080",
                        help="frame height in pixels, or 720p, 1080p, 4k (default: %(default)s)")  # fmt: skip
    parser.add_argument("--faces", type=int, default=1, choices=(1, 2, 3, 4, 5, 6),
                        help="faces swapped per frame, the largest first (default: %(default)s)")  # fmt: skip
    parser.add_argument("--width", type=int, default=FULL_WIDTH,
                        help=f"inswapper width C (default: {FULL_WIDTH}, the public model's)")  # fmt: skip
    parser.add_argument("--dtype", default="auto", choices=("auto", "fp32", "fp16"),
                        help="precision of both sides (default: fp16 on a GPU, fp32 on a CPU)")  # fmt: skip
    parser.add_argument("--chunk", type=int, default=8, help="frames per FaceMagic chunk (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="pairs of runs (default: %(default)s)")
    parser.add_argument("--yunet", type=Path, default=None, help="YuNet detector file (default: the model folder's)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown (for a README)")
    parser.add_argument("--models", type=Path, default=DEFAULT_MODEL_DIR, help="model folder (for YuNet)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 (default: %(default)s)")
    parser.set_defaults(handler=run_bench)


def _height(text: str) -> int:
    named = HEIGHTS.get(text.strip().lower())
    if named is not None:
        return named
    try:
        return int(text)
    except ValueError:
        raise BadInputError(
            f"cannot read the height {text!r}", where="--height", fix="give pixels (1080) or 720p, 1080p, 4k"
        ) from None


def run_bench(args: argparse.Namespace) -> int:
    config = BenchConfig(
        clip=args.clip,
        frames=args.frames,
        height=_height(args.height),
        faces=args.faces,
        width=args.width,
        device=args.device,
        dtype=args.dtype,
        chunk=args.chunk,
        repeats=args.repeats,
        detector=args.yunet,
        model_dir=args.models,
    )
    result = run_benchmark(config, progress=lambda text: print(f"... {text}", flush=True))
    print(format_table(result, markdown=args.markdown))
    similarity = compare_outputs(result)
    print(
        f"\n  outputs (first frame): the two sides differ by {similarity['mean']:.2f}/255 on average; FaceMagic "
        f"changed {100 * similarity['changed_ours']:.1f}% of the pixels, the baseline "
        f"{100 * similarity['changed_theirs']:.1f}%"
    )
    return 0
