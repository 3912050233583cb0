"""Loader nodes: the face analyzer and the swap generator."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from facemagic_core.analysis import FaceAnalyzer
from facemagic_core.generators.loader import load_generator
from facemagic_core.hub import MODELS
from facemagic_core.runtime import onnx_providers, resolve_device

from ._comfy import io
from .common import (
    CATEGORY,
    DEVICE_TOOLTIP,
    ONNX_DEVICES,
    TORCH_DEVICES,
    advanced,
    comfy_device_name,
    node_schema,
    resolve_device_choice,
)
from .memory import manage_generator
from .model_folder import (
    ensure_registry_model,
    folder_holding,
    generator_choices,
    model_dirs,
    model_fingerprint,
    resolve_name,
)
from .progress import comfy_errors, comfy_progress
from .sockets import Analyzer, Generator

AnalyzerModel = Literal["buffalo_l", "antelopev2", "yunet", "yunet_dlib"]
ANALYZER_MODELS: tuple[str, ...] = get_args(AnalyzerModel)
DTYPES = ("auto", "fp32", "fp16", "bf16")
#: What a new generator loader offers first: the widely used public swapper.
DEFAULT_GENERATOR = "inswapper_128"


def dlib_recognizer_path() -> Path:
    """dlib's recogniser: its .dat file in the model folders, else face-api's tfjs copy there (a faceapi folder),
    else the file of an installed face-recognition-models package, else downloaded."""
    from facemagic_core.dlib_resnet import installed_dat_file

    for folder in model_dirs():
        if (folder / MODELS["dlib_resnet_v1"].local_path).is_file():
            return folder / MODELS["dlib_resnet_v1"].local_path
        if (folder / "faceapi" / "face_recognition_model-weights_manifest.json").is_file():
            return folder / "faceapi"
    installed = installed_dat_file()
    return installed if installed is not None else ensure_registry_model("dlib_resnet_v1")


def load_analyzer(model: str, *, device: str, det_size: int, det_threshold: float) -> FaceAnalyzer:
    """A FaceAnalyzer from the model folder (downloading what is missing, with ComfyUI's progress bar)."""
    providers = onnx_providers(resolve_device_choice(device))
    progress = comfy_progress(what=f"analyzer {model}")
    if model == "yunet_dlib":
        from facemagic_core.dlib_resnet import load_dlib_recognizer

        torch_device = resolve_device(comfy_device_name() if device not in ("cpu", "cuda") else device)
        return FaceAnalyzer(
            backend="yunet",
            detector=ensure_registry_model("yunet", progress=progress),
            recognizer=load_dlib_recognizer(dlib_recognizer_path(), device=torch_device),
            providers=providers,
            det_size=det_size,
            det_threshold=det_threshold,
        )
    if model == "yunet":
        detector = ensure_registry_model("yunet", progress=progress)
        recognizer = ensure_registry_model("arcface_w600k_r50", progress=progress)
        return FaceAnalyzer(
            backend="yunet",
            detector=detector,
            recognizer=recognizer,
            providers=providers,
            det_size=det_size,
            det_threshold=det_threshold,
        )
    pack = ensure_registry_model(model, progress=progress)
    return FaceAnalyzer.from_pack(pack, providers=providers, det_size=det_size, det_threshold=det_threshold)


class FaceMagicAnalyzerLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return node_schema(
            node_id="FaceMagicAnalyzerLoader",
            search_aliases=("insightface", "buffalo_l", "face detection", "face analysis", "face landmarks"),
            display_name="FaceMagic Analyzer Loader",
            category=CATEGORY,
            description="Loads the face detector, landmark models and face recogniser. Missing model files are "
            "downloaded into models/facemagic on first use.",
            inputs=[
                io.Combo.Input(
                    "model",
                    options=list(ANALYZER_MODELS),
                    default="buffalo_l",
                    tooltip="buffalo_l: insightface's SCRFD detector, 106/68-point landmarks and ArcFace (the usual "
                    "choice). antelopev2: the same with a larger recogniser. yunet: OpenCV's light detector with "
                    "ArcFace w600k_r50. yunet_dlib: YuNet with dlib's ResNet recogniser (public-domain weights, "
                    "128-d identities; the judge of ArcFace swaps in Swap Quality). insightface models are for "
                    "non-commercial research only.",
                ),
                io.Combo.Input(
                    "device", options=list(ONNX_DEVICES), default="auto", tooltip=DEVICE_TOOLTIP, **advanced()
                ),
                io.Int.Input(
                    "det_size",
                    default=640,
                    min=64,
                    max=2048,
                    step=32,
                    display_name="detection size",
                    tooltip="Side of the picture the detector looks at, in pixels (a multiple of 32). Larger finds "
                    "smaller faces but is slower; 640 suits most photos.",
                    **advanced(),
                ),
                io.Float.Input(
                    "det_threshold",
                    default=0.5,
                    min=0.05,
                    max=0.99,
                    step=0.01,
                    display_name="detection threshold",
                    tooltip="Lowest detector confidence kept. Lower it when faces are missed, raise it when "
                    "non-faces are found.",
                ),
            ],
            outputs=[Analyzer.Output("analyzer", display_name="analyzer", tooltip="The loaded face analyzer.")],
        )

    @classmethod
    def fingerprint_inputs(cls, model: str, **_settings: object) -> str:
        """Changes when the model files do, so a replaced pack is loaded again instead of coming from the cache."""
        if model == "yunet_dlib":
            return model_fingerprint(["yunet", "dlib_resnet_v1"])
        return model_fingerprint(["yunet", "arcface_w600k_r50"] if model == "yunet" else [model])

    @classmethod
    def execute(cls, model: str, device: str, det_size: int, det_threshold: float) -> io.NodeOutput:
        with comfy_errors():
            analyzer = load_analyzer(model, device=device, det_size=det_size, det_threshold=det_threshold)
        return io.NodeOutput(analyzer)


class FaceMagicGeneratorLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        choices = generator_choices()
        return node_schema(
            node_id="FaceMagicGeneratorLoader",
            search_aliases=("load face swap model", "inswapper", "hyperswap", "reswapper", "swapper model"),
            display_name="FaceMagic Generator Loader",
            category=CATEGORY,
            description="Loads a face swap model: a registry name (downloaded into models/facemagic on first use), "
            "an .onnx file or a native generator folder (config.json + model.safetensors) in models/facemagic.",
            inputs=[
                io.Combo.Input(
                    "model",
                    options=choices,
                    default=DEFAULT_GENERATOR if DEFAULT_GENERATOR in choices else (choices[0] if choices else None),
                    tooltip="Registry models first (inswapper_128, hyperswap_1a_256...), then the .onnx files and "
                    "native generator folders found in models/facemagic. Inswapper-style ONNX files run as a native "
                    "torch module when the conversion matches onnxruntime, which adds per-block identity mixing.",
                ),
                io.Combo.Input(
                    "device", options=list(TORCH_DEVICES), default="auto", tooltip=DEVICE_TOOLTIP, **advanced()
                ),
                io.Combo.Input(
                    "dtype",
                    options=list(DTYPES),
                    default="auto",
                    tooltip="Precision of native (torch) generators: auto is fp16 on CUDA and fp32 elsewhere. "
                    "ONNX models keep the precision of their file.",
                    **advanced(),
                ),
            ],
            outputs=[Generator.Output("generator", display_name="generator", tooltip="The loaded swap model.")],
        )

    @classmethod
    def fingerprint_inputs(cls, model: str, **_settings: object) -> str:
        """Changes when the model file does (a generator retrained into the same folder, a file copied over)."""
        return model_fingerprint([model])

    @classmethod
    def execute(cls, model: str, device: str, dtype: str) -> io.NodeOutput:
        device_name = resolve_device_choice(device)
        with comfy_errors():
            spec = MODELS.get(model)
            if spec is not None and spec.kind == "swapper":
                progress = comfy_progress(what=f"generator {model}")
                path = ensure_registry_model(model, progress=progress)
                generator = load_generator(model, model_dir=folder_holding(path), device=device_name, dtype=dtype)
            else:
                path = resolve_name(model, what="generator")
                generator = load_generator(path, model_dir=folder_holding(path), device=device_name, dtype=dtype)
        return io.NodeOutput(manage_generator(generator, name=model))


NODES: list[type[io.ComfyNode]] = [FaceMagicAnalyzerLoader, FaceMagicGeneratorLoader]
