"""``facemagic bench``: frames per second of the swap pipeline against the common baseline, in one run.

Both paths swap the same frames with the same network: an inswapper-layout generator with
random weights, run natively in torch by the pipeline and exported to ONNX (the same
weights, the public file's signature) for the baseline.

- **FaceMagic pipeline**: frames in chunks; batched torch alignment of every face, one batched
  generator call, batched torch paste-back with the ellipse mask; tensors stay on the device.
- **Baseline** (what insightface's ``INSwapper.get`` and the packs built on it do): per face,
  a least-squares similarity fit with OpenCV (``cv2.estimateAffinePartial2D``, as facefusion
  does it), ``cv2.warpAffine`` to 128 px, one onnxruntime call with a batch of one, then
  insightface's numpy/OpenCV paste-back over the whole frame
  (:func:`facemagic_core.blend.paste_back_reference`).

Detection (YuNet through OpenCV) is run once per frame, its faces given to both paths, and
its time reported on its own line (and counted in both end-to-end figures). The recogniser is
not part of the comparison: every target face gets the same random unit embedding in both
paths (the baseline's swap does not use it; the pipeline's strength-1 swap does not either).
Frames reach each path in its native form, float tensors for the pipeline (as ComfyUI passes
them) and uint8 BGR arrays for the baseline (as OpenCV reads them); those conversions are not
timed.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import torch

from ..errors import BadInputError
from ..types import EMBEDDING_DIM, Face, Identity
from . import DEFAULT_MODEL_DIR
from . import identity as identity_command

#: The clip the benchmark uses unless told otherwise: ../shared/faces beside the checkout ($FACEMAGIC_SHARED).
SHARED_DIR = Path(os.environ.get("FACEMAGIC_SHARED", Path(__file__).resolve().parents[3] / "shared"))
DEFAULT_CLIP = SHARED_DIR / "faces" / "clip_nacho.gif"
DEFAULT_YUNET = SHARED_DIR / "models" / "face_detection_yunet.onnx"
#: Width C of the inswapper layout: the public model's on a GPU, a quarter of it (1/16 of the work) on a CPU.
FULL_WIDTH = 128
CPU_WIDTH = 32
#: Crop side of the public inswapper_128.
FULL_IMAGE_SIZE = 128
STAGES = ("detect", "align", "generator", "paste-back")
#: Smallest frame side the benchmark scales to (a face must stay detectable).
MIN_FRAME_SIDE = 64
#: Tallest frames bench scales to (8K video); taller ones only exhaust memory.
MAX_FRAME_HEIGHT = 4320
#: A RANSAC threshold (pixels) beyond any landmark error: every point is an inlier, so the fit is facefusion's
#: plain least-squares similarity from the five landmarks.
RANSAC_THRESHOLD = 100


@dataclass(frozen=True)
class BenchConfig:
    """What to measure."""

    clip: Path = DEFAULT_CLIP  # video or GIF with faces
    frames: int = 16  # frames of the clip to swap (timed once each, after one warm-up frame)
    height: int = 1080  # frames are scaled to this height, keeping the aspect ratio
    width: int | None = None  # inswapper width C; None: 128 on a GPU, 32 on a CPU
    image_size: int = 128  # crop side of the generator
    device: str = "auto"
    dtype: str = "fp32"  # pipeline generator precision (the baseline's ONNX file is fp32)
    chunk: int = 8  # frames per pipeline chunk
    detector: Path | None = None  # YuNet file; None: ../shared/models, else the registry's
    repeats: int = 3  # each path runs this many times, alternating; the fastest run of each is reported
    model_dir: Path = DEFAULT_MODEL_DIR
    seed: int = 0


@dataclass(frozen=True, eq=False)
class PathTimes:
    """Seconds spent per stage over all frames (detection shared by both paths)."""

    align: float
    generator: float
    paste: float

    @property
    def swap(self) -> float:
        return self.align + self.generator + self.paste


@dataclass(frozen=True, eq=False)
class BenchResult:
    config: BenchConfig
    device_name: str
    versions: dict[str, str]
    providers: list[str]
    width: int
    gflop_per_face: float
    full_gflop_per_face: float
    frame_size: tuple[int, int]  # (H, W)
    frames: int
    faces: int
    threads: int
    detect: float  # seconds, all frames
    pipeline: PathTimes
    baseline: PathTimes
    pipeline_images: torch.Tensor  # (N, 3, H, W) float in [0, 1]
    pipeline_masks: torch.Tensor  # (N, H, W)
    baseline_images: npt.NDArray[np.uint8]  # (N, H, W, 3) BGR
    baseline_masks: npt.NDArray[np.float32]  # (N, H, W)

    def fps(self, times: PathTimes, *, with_detection: bool = True) -> float:
        total = times.swap + (self.detect if with_detection else 0.0)
        return self.frames / total if total > 0 else float("inf")


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
# Inputs


def load_clip(path: Path, frames: int, height: int) -> torch.Tensor:
    """The first ``frames`` frames scaled to ``height`` rows (aspect kept), ``(N, 3, H, W)`` float32."""
    from ..video import read_frames

    clip = read_frames(path, max_frames=frames)
    scale = height / clip.shape[2]
    width = max(MIN_FRAME_SIDE, round(clip.shape[3] * scale))
    pictures = [
        cv2.resize(
            np.ascontiguousarray(frame.permute(1, 2, 0).numpy()), (width, height), interpolation=cv2.INTER_LINEAR
        )
        for frame in clip
    ]
    return torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2).contiguous().clamp_(0, 1)


def _detector_path(config: BenchConfig) -> Path:
    if config.detector is not None:
        return config.detector
    if DEFAULT_YUNET.is_file():
        return DEFAULT_YUNET
    from ..hub import ensure_model

    return ensure_model("yunet", config.model_dir)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------
# The two paths


def _run_pipeline(
    frames: torch.Tensor,
    faces: list[list[Face]],
    identity: Identity,
    generator: Any,
    chunk: int,
) -> tuple[PathTimes, torch.Tensor, torch.Tensor]:
    from ..pipeline import align_target_faces, blend_swap, forward_swap

    device = generator.device
    align = swap = paste = 0.0
    images, masks = [], []
    for start in range(0, frames.shape[0], chunk):
        stop = min(start + chunk, frames.shape[0])
        _synchronize(device)
        t0 = time.perf_counter()
        on_device = frames[start:stop].to(device)
        batch = align_target_faces(on_device, faces[start:stop], generator, no_face="pass")
        _synchronize(device)
        t1 = time.perf_counter()
        swapped = forward_swap(batch, generator, identity)
        _synchronize(device)
        t2 = time.perf_counter()
        pasted, mask = blend_swap(on_device, batch, swapped)
        pasted, mask = pasted.cpu(), mask.cpu()
        t3 = time.perf_counter()
        align, swap, paste = align + t1 - t0, swap + t2 - t1, paste + t3 - t2
        images.append(pasted)
        masks.append(mask)
    return PathTimes(align, swap, paste), torch.cat(images), torch.cat(masks)


def _run_baseline(
    frames_bgr: Sequence[npt.NDArray[np.uint8]],
    faces: list[list[Face]],
    latent_source: npt.NDArray[np.float32],
    emap: npt.NDArray[np.float32],
    session: Any,
    size: int,
) -> tuple[PathTimes, npt.NDArray[np.uint8], npt.NDArray[np.float32]]:
    from ..align import face_template
    from ..blend import paste_back_reference

    template = face_template("arcface", size)
    names = [item.name for item in session.get_inputs()]
    output_name = session.get_outputs()[0].name
    align = swap = paste = 0.0
    images, masks = [], []
    for frame, frame_faces in zip(frames_bgr, faces, strict=True):
        result = frame.copy()
        frame_mask = np.zeros(frame.shape[:2], np.float32)
        for face in frame_faces:
            t0 = time.perf_counter()
            matrix, _ = cv2.estimateAffinePartial2D(
                face.landmarks_5.astype(np.float32), template, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_THRESHOLD
            )
            crop = cv2.warpAffine(result, matrix, (size, size), borderValue=0.0)
            blob = cv2.dnn.blobFromImage(crop, 1.0 / 255.0, (size, size), (0.0, 0.0, 0.0), swapRB=True)
            t1 = time.perf_counter()
            latent = latent_source.reshape(1, -1) @ emap  # insightface: normed embedding @ emap, re-normalised
            latent = (latent / np.linalg.norm(latent)).astype(np.float32)
            prediction = session.run([output_name], {names[0]: blob, names[1]: latent})[0]
            fake = np.clip(255 * prediction.transpose(0, 2, 3, 1)[0], 0, 255).astype(np.uint8)[:, :, ::-1]
            t2 = time.perf_counter()
            result, mask = paste_back_reference(result, np.ascontiguousarray(fake), matrix)
            t3 = time.perf_counter()
            frame_mask = np.maximum(frame_mask, mask)
            align, swap, paste = align + t1 - t0, swap + t2 - t1, paste + t3 - t2
        images.append(result)
        masks.append(frame_mask)
    return PathTimes(align, swap, paste), np.stack(images), np.stack(masks)


def run_benchmark(config: BenchConfig, progress: Callable[[str], None] | None = None) -> BenchResult:
    """Measure both paths on the same frames, faces and weights (see the module docstring)."""
    from ..analysis import FaceAnalyzer
    from ..generators import GeneratorConfig, InswapperGenerator, TorchSwapper, export_inswapper_onnx
    from ..runtime import create_session, onnx_providers, resolve_device, resolve_dtype

    say = progress or (lambda text: None)
    limits = {
        "frames": (config.frames, 1, None),
        "chunk": (config.chunk, 1, None),
        "repeats": (config.repeats, 1, None),
        "height": (config.height, MIN_FRAME_SIDE, MAX_FRAME_HEIGHT),
        "width": (FULL_WIDTH if config.width is None else config.width, 1, None),
    }
    for name, (value, low, high) in limits.items():
        if value < low or (high is not None and value > high):
            allowed = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise BadInputError(
                f"--{name} must be {allowed}, got {value}", where="facemagic bench", fix=f"give --{name} {allowed}"
            )
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    width = config.width or (FULL_WIDTH if device.type == "cuda" else CPU_WIDTH)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)

    say(f"reading {config.frames} frames of {config.clip.name}")
    frames = load_clip(config.clip, config.frames + 1, config.height)  # + 1 warm-up frame
    frames_bgr = [np.ascontiguousarray((frame.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)[:, :, ::-1])
                  for frame in frames]  # fmt: skip

    say("detecting faces (YuNet)")
    analyzer = FaceAnalyzer(backend="yunet", detector=_detector_path(config), providers=["cpu"])
    started = time.perf_counter()
    detected = [analyzer.detect_faces(frames[i : i + 1])[0] for i in range(frames.shape[0])]
    detect_seconds = (time.perf_counter() - started) * config.frames / frames.shape[0]
    target = rng.standard_normal(EMBEDDING_DIM).astype(np.float32)
    # The best-scoring face of each frame, with one random target embedding for all (see the module docstring).
    faces = [[dataclasses.replace(face, image_index=0, embedding=target) for face in found[:1]] for found in detected]
    if not any(faces):
        raise BadInputError("no face was found in the clip", where=str(config.clip), fix="use a clip with a face")

    say(f"building the inswapper layout, width {width}, with random weights")
    module = InswapperGenerator(GeneratorConfig.inswapper_layout(channels=width, image_size=config.image_size)).eval()
    with torch.no_grad():
        module.emap.copy_(torch.linalg.qr(torch.randn(EMBEDDING_DIM, EMBEDDING_DIM))[0])  # a rotation: unit latents
    source = rng.standard_normal(EMBEDDING_DIM).astype(np.float32)
    source /= np.linalg.norm(source)
    identity = Identity(source, embedding_model=module.cfg.embedding_model)
    with tempfile.TemporaryDirectory(prefix="facemagic-bench-") as folder:
        onnx_path = export_inswapper_onnx(module, Path(folder) / "inswapper_bench.onnx")
        import onnxruntime

        options = onnxruntime.SessionOptions()
        threads = torch.get_num_threads()
        if device.type == "cpu":
            options.intra_op_num_threads = threads
        providers = onnx_providers("cpu" if device.type == "cpu" else str(device))
        session = create_session(onnx_path, providers=providers, what="baseline inswapper", options=options)
    emap = module.emap.detach().cpu().numpy().copy()  # fp32, before TorchSwapper moves the module to its dtype
    generator = TorchSwapper(module, name=f"inswapper layout C={width}", device=device, dtype=dtype)

    say("warming up both paths on one frame")
    _run_pipeline(frames[:1], faces[:1], identity, generator, config.chunk)
    _run_baseline(frames_bgr[:1], faces[:1], source, emap, session, config.image_size)
    # Alternate the paths and keep each one's fastest run: other work on the machine slows single runs at random.
    best_pipeline: tuple[PathTimes, torch.Tensor, torch.Tensor] | None = None
    best_baseline: tuple[PathTimes, npt.NDArray[np.uint8], npt.NDArray[np.float32]] | None = None
    for repeat in range(config.repeats):
        say(f"timing the pipeline and the baseline, run {repeat + 1} of {config.repeats}")
        ours = _run_pipeline(frames[1:], faces[1:], identity, generator, config.chunk)
        if best_pipeline is None or ours[0].swap < best_pipeline[0].swap:
            best_pipeline = ours
        theirs = _run_baseline(frames_bgr[1:], faces[1:], source, emap, session, config.image_size)
        if best_baseline is None or theirs[0].swap < best_baseline[0].swap:
            best_baseline = theirs
    if best_pipeline is None or best_baseline is None:
        raise BadInputError("repeats must be at least 1", where="bench")
    pipeline, images, masks = best_pipeline
    baseline, baseline_images, baseline_masks = best_baseline
    return BenchResult(
        config=config,
        device_name=device_name(device),
        versions=_versions(),
        providers=list(session.get_providers()),
        width=width,
        gflop_per_face=inswapper_gflop(width, config.image_size),
        full_gflop_per_face=inswapper_gflop(FULL_WIDTH, FULL_IMAGE_SIZE),
        frame_size=(int(frames.shape[2]), int(frames.shape[3])),
        frames=config.frames,
        faces=sum(len(found) for found in faces[1:]),
        threads=threads,
        detect=detect_seconds,
        pipeline=pipeline,
        baseline=baseline,
        pipeline_images=images,
        pipeline_masks=masks,
        baseline_images=baseline_images,
        baseline_masks=baseline_masks,
    )


# ---------------------------------------------------------------------------------------------
# The table


def format_table(result: BenchResult, *, markdown: bool = False) -> str:
    """The benchmark's report: setup lines, then per-stage milliseconds per frame, fps and the ratio."""
    config, n = result.config, result.frames
    height, width = result.frame_size
    reduced = result.width != FULL_WIDTH
    setup = [
        (
            "device",
            result.device_name
            + (f", {result.threads} torch/onnxruntime threads" if "CPU" in result.device_name else ""),
        ),
        ("versions", ", ".join(f"{name} {version}" for name, version in result.versions.items())),
        ("clip", f"{config.clip.name}: {n} frames scaled to {width}x{height}, {result.faces} faces (+1 warm-up frame)"),
        (
            "generator",
            f"inswapper layout, width C={result.width}, {config.image_size} px crops, "
            f"{result.gflop_per_face:.1f} GFLOP per face"
            + (
                f" (REDUCED: the full C={FULL_WIDTH} model is {result.full_gflop_per_face:.0f} GFLOP per face; "
                "use --width 128 on a GPU)"
                if reduced
                else ""
            ),
        ),
        (
            "pipeline",
            f"torch {str(result.pipeline_images.dtype).removeprefix('torch.')} in, generator "
            f"{config.dtype}, batched in chunks of {config.chunk} frames",
        ),
        (
            "baseline",
            f"onnxruntime fp32 ({', '.join(result.providers)}), one face per call, cv2 align, "
            "numpy/OpenCV paste-back; same weights",
        ),
        ("detector", "YuNet (OpenCV), run once, shared by both paths"),
        ("timing", f"each path run {config.repeats} times, alternating; the fastest run of each is shown"),
    ]
    per_frame = 1000.0 / n
    rows = [
        ("detect (shared)", result.detect * per_frame, result.detect * per_frame),
        ("align", result.pipeline.align * per_frame, result.baseline.align * per_frame),
        ("generator", result.pipeline.generator * per_frame, result.baseline.generator * per_frame),
        ("paste-back", result.pipeline.paste * per_frame, result.baseline.paste * per_frame),
        (
            "total",
            (result.detect + result.pipeline.swap) * per_frame,
            (result.detect + result.baseline.swap) * per_frame,
        ),
    ]
    fps_rows = [
        ("fps, end to end", result.fps(result.pipeline), result.fps(result.baseline)),
        (
            "fps, without detection",
            result.fps(result.pipeline, with_detection=False),
            result.fps(result.baseline, with_detection=False),
        ),
    ]
    ratio = result.fps(result.pipeline) / result.fps(result.baseline)
    ratio_swap = result.fps(result.pipeline, with_detection=False) / result.fps(result.baseline, with_detection=False)
    ratio_line = f"speed-up (pipeline / baseline): {ratio:.2f}x end to end, {ratio_swap:.2f}x without detection"
    if markdown:
        lines = [f"- **{name}**: {value}" for name, value in setup]
        lines += ["", "| ms per frame | FaceMagic pipeline | baseline (insightface-style) |", "|---|---:|---:|"]
        lines += [f"| {name} | {a:.1f} | {b:.1f} |" for name, a, b in rows]
        lines += [f"| **{name}** | **{a:.2f}** | **{b:.2f}** |" for name, a, b in fps_rows]
        return "\n".join([*lines, "", f"**{ratio_line}**"])
    label = max(len(name) for name, _ in setup)
    lines = ["FaceMagic swap benchmark"] + [f"  {name:<{label}} : {value}" for name, value in setup]
    lines += ["", f"  {'ms per frame':<24}{'FaceMagic pipeline':>20}{'baseline':>12}", "  " + "-" * 56]
    lines += [f"  {name:<24}{a:>20.1f}{b:>12.1f}" for name, a, b in rows]
    lines += ["  " + "-" * 56]
    lines += [f"  {name:<24}{a:>20.2f}{b:>12.2f}" for name, a, b in fps_rows]
    return "\n".join([*lines, "", "  " + ratio_line])


def compare_outputs(result: BenchResult) -> dict[str, float]:
    """How alike the two paths' frames are: mean and 99th-percentile absolute difference (0..255) where both
    masks are fully on (the swapped face core), and the largest difference where both are off."""
    ours = (result.pipeline_images.permute(0, 2, 3, 1).numpy() * 255.0)[..., ::-1]  # BGR, 0..255
    theirs = result.baseline_images.astype(np.float64)
    core = (result.pipeline_masks.numpy() >= 0.999) & (result.baseline_masks >= 0.999)
    outside = (result.pipeline_masks.numpy() <= 0) & (result.baseline_masks <= 0)
    difference = np.abs(ours - theirs)
    inside = difference[core]
    return {
        "core_pixels": float(core.sum()),
        "core_mean": float(inside.mean()) if inside.size else float("nan"),
        "core_p99": float(np.percentile(inside, 99)) if inside.size else float("nan"),
        "outside_max": float(difference[outside].max()) if outside.any() else 0.0,
    }


# ---------------------------------------------------------------------------------------------
# The command


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="measure swap speed against the insightface-style baseline",
        description=identity_command.wrap_description(
            "Measure frames per second of the FaceMagic pipeline (batched torch alignment, generator and "
            "paste-back) against the common baseline (one onnxruntime call per face, OpenCV alignment, "
            "numpy/OpenCV paste-back, as insightface's INSwapper does), with the same inswapper-layout network "
            "and the same random weights in both, on the same frames, in one run. The YuNet detector is shared "
            "and timed on its own line. No model download is needed."
            f"\n\nOn a CPU the network is narrowed to width {CPU_WIDTH} by default (the full width {FULL_WIDTH} "
            "costs 349 GFLOP per face); on a GPU the full size is used."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--clip", type=Path, default=DEFAULT_CLIP, help="video or GIF with a face (default: %(default)s)"
    )
    parser.add_argument("--frames", type=int, default=16, help="frames to time (default: %(default)s)")
    parser.add_argument("--height", type=int, default=1080, help="scale frames to this height (default: %(default)s)")
    parser.add_argument(
        "--width",
        type=int,
        default=None,
        help=f"inswapper width C (default: {FULL_WIDTH} on a GPU, {CPU_WIDTH} on a CPU)",
    )
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16", "auto"),
                        help="pipeline generator precision (default: %(default)s; the baseline is fp32)")  # fmt: skip
    parser.add_argument("--chunk", type=int, default=8, help="frames per pipeline chunk (default: %(default)s)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs per path, alternating; the fastest counts (default: %(default)s)"
    )
    parser.add_argument("--yunet", type=Path, default=None, help="YuNet detector file (default: ../shared or registry)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown (for a README)")
    parser.add_argument("--models", type=Path, default=DEFAULT_MODEL_DIR, help="model folder (for YuNet)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 (default: %(default)s)")
    parser.set_defaults(handler=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    config = BenchConfig(
        clip=args.clip,
        frames=args.frames,
        height=args.height,
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
        f"\n  outputs: the two paths differ by {similarity['core_mean']:.2f}/255 on average "
        f"(99th percentile {similarity['core_p99']:.1f}/255) inside the swapped faces; "
        f"outside both masks by at most {similarity['outside_max']:.0f}/255"
    )
    return 0
