"""Public ONNX face swappers (inswapper_128 and its fp16 variant, hyperswap 256, reswapper) through onnxruntime.

Each file is described by an :class:`OnnxSwapperSpec` (from its registry entry, or guessed
from its signature for a local file): crop size, value range, colour order, alignment
template, and how the identity input is made:

- ``"emap"``: ``latent = normalize(e) @ emap`` (re-normalised when ``latent_renormalize``),
  where ``emap`` is the ``(512, 512)`` matrix stored as the LAST initializer of the graph
  (used by no node; read with the ``onnx`` package);
- ``"normalised"``: the L2-normalised embedding itself.

Swap strength is facefusion's: the identity fed is ``normalize(lerp(target, source, w))``.
These models have one injection point (``num_blocks == 1``). fp16 files get fp16 inputs;
files with a fixed batch of 1 are called once per face, dynamic-batch files once per chunk
of at most ``max_batch`` faces.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor

from ..align import TemplateName
from ..errors import BadInputError, ModelIntegrityError
from ..runtime import ProviderSpec, create_session, onnxruntime_errors
from .base import DEFAULT_CHUNK_SIZE, SwapOutput, check_swap_inputs
from .config import TEMPLATES, ValueRange

if TYPE_CHECKING:
    from collections.abc import Callable

    import onnx
    import onnxruntime

    from ..hub import ModelSpec

logger = logging.getLogger(__name__)

#: How the identity input of an ONNX swapper is computed from an ArcFace embedding.
IdentityInput = Literal["emap", "normalised"]
IDENTITY_INPUTS: tuple[str, ...] = get_args(IdentityInput)
#: Channel order of the image input and output.
ColourOrder = Literal["rgb", "bgr"]
COLOUR_ORDERS: tuple[str, ...] = get_args(ColourOrder)

#: onnxruntime providers whose device torch reaches as ``"cuda"``.
TORCH_CUDA_PROVIDERS = frozenset({"CUDAExecutionProvider", "TensorrtExecutionProvider", "ROCMExecutionProvider"})

_NUMPY_TYPES: dict[str, type[np.floating[Any]]] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
}


@dataclass(frozen=True)
class OnnxSwapperSpec:
    """How to feed one ONNX swapper (the swap-relevant part of a registry entry)."""

    name: str  # registry name or file stem, for messages
    input_size: int | None  # crop side; None = read from the model's input shape
    value_range: ValueRange  # range of the image input and output: [0, 1] or [-1, 1]
    colour_order: ColourOrder = "rgb"  # channel order of the image input and output
    template: TemplateName = "arcface"  # alignment template of the crops
    embedding: IdentityInput | None = None  # identity input; None = "emap" if the graph stores one, else "normalised"
    embedding_model: str = "arcface_w600k_r50"  # recogniser whose embeddings the model takes
    latent_renormalize: bool = True  # "emap": re-normalise the latent (insightface does; facefusion does not)


#: The public swappers FaceMagic knows (the registry in facemagic_core.hub is the source of truth).
KNOWN_SWAPPERS: dict[str, OnnxSwapperSpec] = {
    spec.name: spec
    for spec in (
        OnnxSwapperSpec("inswapper_128", 128, "zero_one", embedding="emap"),
        OnnxSwapperSpec("inswapper_128_fp16", 128, "zero_one", embedding="emap"),
        OnnxSwapperSpec("hyperswap_1a_256", 256, "minus_one_one", embedding="normalised"),
        OnnxSwapperSpec("hyperswap_1b_256", 256, "minus_one_one", embedding="normalised"),
        OnnxSwapperSpec("hyperswap_1c_256", 256, "minus_one_one", embedding="normalised"),
        OnnxSwapperSpec("reswapper_128", 128, "zero_one", embedding="emap"),
        OnnxSwapperSpec("reswapper_256", 256, "zero_one", embedding="emap"),
    )
}


def spec_from_registry(entry: ModelSpec) -> OnnxSwapperSpec:
    """An OnnxSwapperSpec from a ``facemagic_core.hub.ModelSpec`` (read by attribute name).

    A field the entry leaves empty takes the value FaceMagic knows for that swapper (else the
    inswapper convention); a field it fills with something this runner cannot honour (a value
    range, colour order or alignment template it does not know) is a BadInputError, never
    silently replaced by a default that would feed the model wrong crops.
    """
    name = str(getattr(entry, "name", "onnx swapper"))
    known = KNOWN_SWAPPERS.get(name)

    def field(attribute: str, parse: Callable[[object], str | None], default: str) -> str:
        raw = getattr(entry, attribute, None)
        if raw is None or raw == "":
            return default
        parsed = parse(raw)
        if parsed is None:
            raise BadInputError(
                f"the registry entry of {name} has a {attribute} this runner does not know: {raw!r}",
                where=f"registry entry {name}",
                fix="fix the registry entry (value_range (0, 1) or (-1, 1); colour_order RGB or BGR; template "
                f"one of {', '.join(TEMPLATES)})",
            )
        return parsed

    value_range = field("value_range", _value_range, known.value_range if known else "zero_one")
    colour = field("colour_order", _choice(COLOUR_ORDERS), known.colour_order if known else "rgb")
    template = field("template", _choice(TEMPLATES), known.template if known else "arcface")
    embedding = _identity_input(getattr(entry, "embedding", None))
    size = getattr(entry, "input_size", None)
    return OnnxSwapperSpec(
        name=name,
        input_size=int(size[0] if isinstance(size, tuple | list) else size) if size else None,
        value_range=cast(ValueRange, value_range),
        colour_order=cast(ColourOrder, colour),
        template=cast(TemplateName, template),
        embedding=embedding if embedding is not None else (known.embedding if known else None),
        embedding_model=str(getattr(entry, "embedding_model", None) or "arcface_w600k_r50"),
        latent_renormalize=bool(getattr(entry, "latent_renormalize", True)),
    )


def _choice(allowed: tuple[str, ...]) -> Callable[[object], str | None]:
    """A parser accepting one of ``allowed`` in any letter case."""

    def parse(value: object) -> str | None:
        text = str(value).lower()
        return text if text in allowed else None

    return parse


def _value_range(value: object) -> str | None:
    """Read a value range written as "zero_one"/"minus_one_one", "[0, 1]", or a (low, high) pair."""
    if isinstance(value, tuple | list) and len(value) == 2:
        pair = (float(value[0]), float(value[1]))
        return {(0.0, 1.0): "zero_one", (-1.0, 1.0): "minus_one_one"}.get(pair)
    text = str(value).replace(" ", "").lower()
    if text in ("minus_one_one", "[-1,1]", "-1,1", "(-1,1)", "-1..1"):
        return "minus_one_one"
    if text in ("zero_one", "[0,1]", "0,1", "(0,1)", "0..1"):
        return "zero_one"
    return None


def _identity_input(value: object) -> IdentityInput | None:
    text = str(value or "").lower()
    if "emap" in text:
        return "emap"
    if "normal" in text:
        return "normalised"
    return None


def guess_spec(path: Path, emap: npt.NDArray[np.float32] | None, input_size: int | None) -> OnnxSwapperSpec:
    """The spec of a local file outside the registry: by its name if known, else by its signature (with a warning)."""
    stem = path.stem.lower()
    for name in sorted(KNOWN_SWAPPERS, key=len, reverse=True):
        if stem.startswith(name) or stem == name.replace("_", ""):
            return replace(KNOWN_SWAPPERS[name], name=path.stem)
    if emap is not None:
        spec = OnnxSwapperSpec(path.stem, input_size, "zero_one", embedding="emap")
    else:
        spec = OnnxSwapperSpec(path.stem, input_size, "minus_one_one", embedding="normalised")
    logger.warning(
        "%s is not a known swapper: assuming it takes %s crops in %s with a %s identity (like %s); "
        "rename the file after its registry name if the results look wrong",
        path.name,
        input_size or "?",
        "[0, 1]" if spec.value_range == "zero_one" else "[-1, 1]",
        spec.embedding,
        "inswapper" if spec.embedding == "emap" else "hyperswap",
    )
    return spec


# ---------------------------------------------------------------------------------------------
# Reading the graph


def load_onnx_model(path: Path) -> onnx.ModelProto:
    """Parse an ONNX file; an unreadable one raises ModelIntegrityError naming it."""
    import onnx

    try:
        return onnx.load(str(path))
    except Exception as error:  # protobuf DecodeError, truncated external data, OSError...
        raise ModelIntegrityError(
            f"the ONNX file is truncated or corrupt and cannot be read ({type(error).__name__}: {error})",
            where=str(path),
            fix="delete it; it will be downloaded again on next use (or copy it again)",
        ) from error


def check_weights_finite(model: onnx.ModelProto, path: Path) -> None:
    """Refuse an ONNX swapper whose weights hold NaN or infinite values (it loaded, then every swap failed with an
    unrelated message about its output)."""
    import onnx
    from onnx import numpy_helper

    for tensor in model.graph.initializer:
        if tensor.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE):
            continue
        if not np.isfinite(numpy_helper.to_array(tensor)).all():
            raise ModelIntegrityError(
                f"the swapper's weights hold NaN or infinite values (tensor {tensor.name!r})",
                where=str(path),
                fix="the file is damaged, or was exported from a training run that diverged: use another file",
            )


def read_emap(model: onnx.ModelProto) -> npt.NDArray[np.float32] | None:
    """The ``(D, D)`` identity-to-latent matrix: the graph's LAST initializer, used by no node; else None."""
    from onnx import numpy_helper

    initializers = model.graph.initializer
    if not initializers:
        return None
    last = initializers[-1]
    used = {name for node in model.graph.node for name in node.input}
    dims = list(last.dims)
    if last.name in used or len(dims) != 2 or dims[0] != dims[1]:
        return None
    return np.array(numpy_helper.to_array(last), dtype=np.float32)


@dataclass(frozen=True)
class OnnxSignature:
    """What a swapper's session takes and gives, read from its inputs and outputs."""

    image_input: str
    identity_input: str
    image_type: type[np.floating[Any]]
    identity_type: type[np.floating[Any]]
    input_size: int | None  # None when the spatial size is dynamic
    fixed_batch: bool  # True when the batch axis is a fixed 1: one call per face
    image_output: str
    mask_output: str | None
    identity_dim: int


def read_signature(session: onnxruntime.InferenceSession, *, where: str) -> OnnxSignature:
    """Find the image and identity inputs (rank 4 and rank 2; names ``target``/``source`` preferred)."""
    inputs = list(session.get_inputs())
    images = [item for item in inputs if len(item.shape) == 4]
    identities = [item for item in inputs if len(item.shape) == 2]
    if len(inputs) != 2 or len(images) != 1 or len(identities) != 1:
        shapes = ", ".join(f"{item.name} {item.shape}" for item in inputs)
        raise BadInputError(
            f"this ONNX file is not a face swapper: expected an image input (1, 3, S, S) and an identity input "
            f"(1, 512), got {shapes}",
            where=where,
            fix="use an inswapper/hyperswap/reswapper-style file, or a native generator folder",
        )
    image, identity = images[0], identities[0]
    outputs = list(session.get_outputs())
    rgb = [item for item in outputs if len(item.shape) == 4 and item.shape[1] in (3, "3")]
    masks = [item for item in outputs if len(item.shape) == 4 and item.shape[1] in (1, "1")]
    if not rgb:
        raise BadInputError(
            f"this ONNX file has no (B, 3, S, S) image output (outputs: {[o.name for o in outputs]})",
            where=where,
            fix="use an inswapper/hyperswap/reswapper-style file",
        )
    height, width = image.shape[2], image.shape[3]
    size = int(height) if isinstance(height, int) and height == width else None
    dim = identity.shape[1]
    return OnnxSignature(
        image_input=image.name,
        identity_input=identity.name,
        image_type=_NUMPY_TYPES.get(image.type, np.float32),
        identity_type=_NUMPY_TYPES.get(identity.type, np.float32),
        input_size=size,
        fixed_batch=isinstance(image.shape[0], int) and image.shape[0] >= 1,
        image_output=rgb[0].name,
        mask_output=masks[0].name if masks else None,
        identity_dim=int(dim) if isinstance(dim, int) else 512,
    )


# ---------------------------------------------------------------------------------------------
# The swapper


def torch_device_of(session: onnxruntime.InferenceSession) -> torch.device:
    """Where the crops of a session's model should live: its GPU when torch can reach that GPU, else the CPU.

    Only CUDA, TensorRT and ROCm sessions share a device with torch (``"cuda"``, ROCm builds
    included); a DirectML or CoreML session, or a CPU-only torch, keeps the crops on the CPU.
    """
    used = session.get_providers()
    if not used or used[0] not in TORCH_CUDA_PROVIDERS or not torch.cuda.is_available():
        return torch.device("cpu")
    options = session.get_provider_options().get(used[0], {})
    return torch.device("cuda", int(options.get("device_id", 0)))


class OnnxSwapper:
    """An ONNX swapper behind the SwapModel protocol (see the module docstring).

    A dynamic-batch file gets at most ``max_batch`` faces per call (bounded memory), a file
    with a fixed batch of 1 one face per call.
    """

    num_blocks = 1

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        spec: OnnxSwapperSpec | None = None,
        providers: list[ProviderSpec] | None = None,
        session: onnxruntime.InferenceSession | None = None,
        model: onnx.ModelProto | None = None,
        max_batch: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        self.path = Path(path)
        label = spec.name if spec is not None else self.path.name
        self.session = session if session is not None else create_session(self.path, providers=providers, what=label)
        self.signature = read_signature(self.session, where=str(self.path))
        wants_emap = spec is None or spec.embedding in (None, "emap")
        if model is None and wants_emap:
            model = load_onnx_model(self.path)
            check_weights_finite(model, self.path)
        emap = read_emap(model) if wants_emap and model is not None else None
        spec = spec if spec is not None else guess_spec(self.path, emap, self.signature.input_size)
        embedding: IdentityInput = spec.embedding or ("emap" if emap is not None else "normalised")
        if embedding == "emap" and emap is None:
            raise ModelIntegrityError(
                f"{spec.name} takes an emap latent but the file stores no (512, 512) emap matrix as its last "
                "initializer",
                where=str(self.path),
                fix="use the original file (onnx optimisers drop the unused emap), or one that embeds it",
            )
        size = self.signature.input_size or spec.input_size
        if size is None:
            raise BadInputError(
                f"the crop size of {spec.name} is neither fixed in the file nor given in its registry entry",
                where=str(self.path),
                fix="add input_size to the registry entry",
            )
        if spec.input_size is not None and self.signature.input_size not in (None, spec.input_size):
            logger.warning(
                "%s: the file takes %s px crops, its registry entry says %s px; using the file's",
                spec.name,
                self.signature.input_size,
                spec.input_size,
            )
        self.spec = replace(spec, embedding=embedding, input_size=size)
        self.emap: Tensor | None = torch.from_numpy(emap) if emap is not None and embedding == "emap" else None
        self.name = spec.name
        self.input_size = int(size)
        self.template: TemplateName = spec.template
        self.embedding_model = spec.embedding_model
        self.id_dim = self.signature.identity_dim if self.emap is None else int(self.emap.shape[0])
        self.device = torch_device_of(self.session)
        self.max_batch = max(1, int(max_batch))
        self.dtype = torch.float16 if self.signature.image_type is np.float16 else torch.float32
        logger.info(
            "ONNX swapper %s: %d px, %s range, %s, identity %s, %s batch, %s inputs",
            self.name,
            self.input_size,
            self.spec.value_range,
            self.spec.colour_order,
            embedding,
            "fixed" if self.signature.fixed_batch else "dynamic",
            np.dtype(self.signature.image_type).name,
        )

    def __repr__(self) -> str:
        return f"OnnxSwapper({self.name!r}, {self.path.name}, {self.session.get_providers()[0]})"

    def identity_inputs(self, source: Tensor, target: Tensor, strength: Tensor) -> Tensor:
        """``(B, D)`` identity inputs: ``normalize(lerp(target, source, w))``, through emap when the model takes one."""
        mixed = torch.lerp(target.float(), source[:, 0].float(), strength[:, :1].float())
        identity = F.normalize(mixed, dim=-1)
        if self.emap is not None:
            identity = identity @ self.emap.to(identity.device)
            if self.spec.latent_renormalize:
                identity = F.normalize(identity, dim=-1)
        return identity

    def swap(self, crops: Tensor, source: Tensor, target: Tensor, strength: Tensor) -> SwapOutput:
        inputs = check_swap_inputs(self, crops, source, target, strength)
        identity = self.identity_inputs(inputs.source, inputs.target, inputs.strength).cpu().numpy()
        images = inputs.crops.detach().float()
        if self.spec.value_range == "minus_one_one":
            images = images * 2 - 1
        if self.spec.colour_order == "bgr":
            images = images.flip(1)
        image_array = images.cpu().numpy().astype(self.signature.image_type)
        identity_array = identity.astype(self.signature.identity_type)
        step = 1 if self.signature.fixed_batch else self.max_batch
        rgb_parts, mask_parts = [], []
        names = [self.signature.image_output] + ([self.signature.mask_output] if self.signature.mask_output else [])
        for start in range(0, len(image_array), step):
            feeds = {
                self.signature.image_input: image_array[start : start + step],
                self.signature.identity_input: identity_array[start : start + step],
            }
            with onnxruntime_errors(f"the swapper {self.name}", str(self.path)):
                results = self.session.run(names, feeds)
            rgb_parts.append(np.asarray(results[0], dtype=np.float32))
            if len(results) > 1:
                mask_parts.append(np.asarray(results[1], dtype=np.float32))
        out = torch.from_numpy(np.concatenate(rgb_parts))
        if self.spec.colour_order == "bgr":
            out = out.flip(1)
        if self.spec.value_range == "minus_one_one":
            out = (out + 1) / 2
        device = inputs.crops.device
        mask = torch.from_numpy(np.concatenate(mask_parts)).clamp(0, 1).to(device) if mask_parts else None
        return SwapOutput(images=out.clamp(0, 1).to(device), mask=mask)
