"""What every native swap generator shares: the forward signature, loading, saving and ONNX export.

Tensor layout of :meth:`SwapGenerator.forward` (B faces, K = ``cfg.num_blocks`` blocks, D = ``cfg.id_dim``):

- ``image``: ``(B, 3, S, S)`` aligned target crops, RGB, in the network's range (``cfg.value_range``);
- ``source``: ``(B, K, D)`` L2-normalised identity given to each block (row k feeds block k);
- ``target``: ``(B, D)`` L2-normalised identity of the target face itself;
- ``strength``: ``(B, K)`` per-block strength in [0, 1] (0 keeps the target's own identity);
- returns ``(rgb, mask)``: ``(B, 3, S, S)`` in [0, 1] and ``(B, 1, S, S)`` in [0, 1] or ``None``.

A native model folder (or Hub repository) holds ``config.json`` (:class:`GeneratorConfig`) and
``model.safetensors`` (the state dict, keys = submodule names).
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import BadInputError, FaceMagicError, ModelIntegrityError, ModelNotFoundError
from ..files import atomic_path, atomic_write_bytes, load_json_bounded
from .config import Arch, GeneratorConfig

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .facemagic import FaceMagicGenerator
    from .inswapper import InswapperGenerator

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
#: What a Hub repository of a native model must hold (and all that is downloaded from it).
PRETRAINED_FILES = (CONFIG_NAME, WEIGHTS_NAME)
#: ``owner/name`` as the Hugging Face Hub spells repository ids.
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")

ONNX_INPUT_NAMES = ("target_image", "source", "target", "strength")


def effective_identity(source: Tensor, target: Tensor, strength: Tensor) -> Tensor:
    """Per block, ``normalize(lerp(target, source_k, strength_k))``: ``(B, K, D)``.

    Strength 0 gives the target's own identity, 1 the source's; in between the mix that
    facefusion's swap strength makes (a blend of the two unit vectors, re-normalised).
    """
    mixed = torch.lerp(target.unsqueeze(1).expand_as(source), source, strength.unsqueeze(-1).to(source.dtype))
    return F.normalize(mixed, dim=-1)


def is_repo_id(text: str) -> bool:
    """True when ``text`` is spelled like a Hub repository id (``owner/name``)."""
    return bool(_REPO_ID.match(text))


class SwapGenerator(nn.Module):
    """Base class of the native generators (:class:`FaceMagicGenerator`, :class:`InswapperGenerator`)."""

    arch: ClassVar[Arch]
    cfg: GeneratorConfig

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        if cfg.arch != self.arch:
            raise BadInputError(
                f"{type(self).__name__} builds arch={self.arch!r}, the config has {cfg.arch!r}",
                where="generator config",
                fix="build the module with SwapGenerator.from_config (or GeneratorConfig.inswapper_layout)",
            )
        self.cfg = cfg

    def extra_repr(self) -> str:
        values: dict[str, Any] = self.cfg.to_dict()
        values.pop("format_version")
        return ", ".join(f"{key}={value}" for key, value in values.items())

    def forward(  # pragma: no cover - every subclass overrides it
        self, image: Tensor, source: Tensor, target: Tensor, strength: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    # -- parameters ------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def num_parameters(self) -> int:
        """Number of learned parameters (buffers such as ``emap`` are not counted)."""
        return sum(parameter.numel() for parameter in self.parameters())

    # -- loading and saving ----------------------------------------------------------------------

    @classmethod
    def from_config(
        cls, cfg: GeneratorConfig, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> SwapGenerator:
        """A freshly initialised generator of ``cfg.arch`` (the right subclass)."""
        return generator_class(cfg.arch)(cfg, device=device, dtype=dtype)

    @classmethod
    def from_pretrained(
        cls,
        source: str | os.PathLike[str],
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        revision: str | None = None,
        local_dir: str | os.PathLike[str] | None = None,
    ) -> SwapGenerator:
        """Load a native generator from a folder, or from a Hugging Face Hub repository id.

        Only ``config.json`` and ``model.safetensors`` are downloaded from the Hub (into
        ``local_dir`` when given, else the Hub cache). Called on a subclass, the config's arch
        must match it.
        """
        folder = Path(source)
        if not folder.is_dir():
            text = os.fspath(source)
            if not is_repo_id(text):
                raise ModelNotFoundError(
                    "no native generator folder at this path, and it is not a Hub repository id (owner/name)",
                    where=text,
                    fix=f"give a folder holding {CONFIG_NAME} and {WEIGHTS_NAME}, or a Hub repository id",
                )
            folder = download_pretrained(text, revision=revision, local_dir=local_dir)
        cfg = read_config(folder / CONFIG_NAME)
        if cls is not SwapGenerator and getattr(cls, "arch", cfg.arch) != cfg.arch:
            raise BadInputError(
                f"{folder} holds a {cfg.arch!r} generator, not a {cls.arch!r} one",
                where=str(folder / CONFIG_NAME),
                fix=f"load it with SwapGenerator.from_pretrained or {generator_class(cfg.arch).__name__}",
            )
        state = read_state_dict(folder / WEIGHTS_NAME)
        module = generator_class(cfg.arch)(cfg, device="meta")
        load_state(module, state, where=str(folder / WEIGHTS_NAME))
        module = module.to(device=device, dtype=dtype) if device is not None or dtype is not None else module
        logger.info(
            "loaded %s generator from %s (%s, %s, %.1f M parameters)",
            cfg.arch,
            folder,
            module.device,
            module.dtype,
            module.num_parameters() / 1e6,
        )
        return module.eval()

    def save_pretrained(self, folder: str | os.PathLike[str]) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``folder``, each atomically."""
        from safetensors.torch import save_file

        target = Path(folder)
        target.mkdir(parents=True, exist_ok=True)
        state = {name: tensor.detach().to("cpu").contiguous() for name, tensor in self.state_dict().items()}
        with atomic_path(target / WEIGHTS_NAME) as temporary:
            save_file(state, str(temporary), metadata={"format": "pt", "arch": self.cfg.arch})
        atomic_write_bytes(target / CONFIG_NAME, self.cfg.to_json().encode("utf-8"))
        return target

    # -- ONNX ------------------------------------------------------------------------------------

    def example_inputs(self, batch: int = 1, *, seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Random inputs of the right shapes, dtype and device (for export and checks)."""
        generator = torch.Generator().manual_seed(seed)
        cfg, size, blocks = self.cfg, self.cfg.image_size, self.cfg.num_blocks
        image = torch.rand(batch, 3, size, size, generator=generator)
        if cfg.value_range == "minus_one_one":
            image = image * 2 - 1
        source = F.normalize(torch.randn(batch, blocks, cfg.id_dim, generator=generator), dim=-1)
        target = F.normalize(torch.randn(batch, cfg.id_dim, generator=generator), dim=-1)
        strength = torch.rand(batch, blocks, generator=generator)
        return tuple(x.to(device=self.device, dtype=self.dtype) for x in (image, source, target, strength))  # type: ignore[return-value]

    def export_onnx(self, path: str | os.PathLike[str], *, opset: int = 17, dynamic_batch: bool = True) -> Path:
        """Export the native signature (inputs ``target_image, source, target, strength``) to ONNX.

        Outputs ``image`` (and ``mask`` when the config has a mask head). The batch axis is
        dynamic unless ``dynamic_batch=False``. The file is written atomically.
        """
        wrapper = _ExportWrapper(self).eval()
        outputs = ["image", "mask"] if self.cfg.mask_head and self.cfg.arch == "facemagic" else ["image"]
        axes = {name: {0: "batch"} for name in (*ONNX_INPUT_NAMES, *outputs)} if dynamic_batch else None
        return export_module_onnx(
            wrapper, self.example_inputs(2 if dynamic_batch else 1), path, ONNX_INPUT_NAMES, outputs, axes, opset
        )


class _ExportWrapper(nn.Module):
    """Drops the ``None`` mask so that the export sees tensors only."""

    def __init__(self, generator: SwapGenerator) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, image: Tensor, source: Tensor, target: Tensor, strength: Tensor) -> tuple[Tensor, ...]:
        rgb, mask = self.generator(image, source, target, strength)
        return (rgb,) if mask is None else (rgb, mask)


def export_module_onnx(
    module: nn.Module,
    inputs: tuple[Tensor, ...],
    path: str | os.PathLike[str],
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: dict[str, dict[int, str]] | None,
    opset: int,
) -> Path:
    """torch.onnx.export (the TorchScript exporter: fast, plain Conv/Gemm nodes) into ``path`` atomically."""
    target = Path(path)
    with atomic_path(target) as temporary, torch.no_grad(), warnings.catch_warnings():
        # the TorchScript exporter is deprecated in favour of dynamo, which is 10x slower to export and
        # emits extra constants; its deprecation, tracer and constant-folding warnings are not actionable
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            inputs,
            str(temporary),
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes=dynamic_axes,  # type: ignore[arg-type]
            opset_version=opset,
            dynamo=False,
        )
    return target


# ---------------------------------------------------------------------------------------------
# Files


def generator_class(arch: Arch) -> type[FaceMagicGenerator] | type[InswapperGenerator]:
    """The module class that builds ``arch``."""
    from .facemagic import FaceMagicGenerator
    from .inswapper import InswapperGenerator

    return FaceMagicGenerator if arch == "facemagic" else InswapperGenerator


def download_pretrained(
    repo_id: str, *, revision: str | None = None, local_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Download ``config.json`` and ``model.safetensors`` (nothing else) of a native generator from the Hub.

    Files go to ``local_dir`` when given, else to the Hub cache; the Hub address is
    ``HF_ENDPOINT`` as read now (see ``facemagic_core.hub.hub_endpoint``).
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    from ..hub import hub_endpoint

    endpoint = hub_endpoint()
    paths: list[Path] = []
    for name in PRETRAINED_FILES:
        try:
            downloaded = hf_hub_download(
                repo_id,
                name,
                revision=revision,
                local_dir=Path(local_dir) if local_dir is not None else None,
                endpoint=endpoint,
            )
        except EntryNotFoundError as error:
            raise ModelNotFoundError(
                f"the repository {repo_id!r} has no {name}: it is not a native FaceMagic generator",
                where=f"{endpoint}/{repo_id}",
                fix="use a repository made with save_pretrained, or a registry name / .onnx file",
            ) from error
        except Exception as error:  # huggingface_hub raises many unrelated types (HTTP, offline, not found)
            raise ModelNotFoundError(
                f"the generator repository {repo_id!r} could not be downloaded ({type(error).__name__}: {error})",
                where=f"{endpoint}/{repo_id}",
                fix=(
                    "check the repository id and your connection; offline, download it elsewhere and give the "
                    f"folder holding {CONFIG_NAME} and {WEIGHTS_NAME}"
                ),
            ) from error
        paths.append(Path(downloaded))
    return paths[0].parent


def read_config(path: Path) -> GeneratorConfig:
    """Read ``config.json``; a missing, unreadable or invalid file raises a FaceMagicError naming it."""
    if not path.is_file():
        raise ModelNotFoundError(
            f"{CONFIG_NAME} is missing", where=str(path.parent), fix="save the generator with save_pretrained"
        )
    try:
        values = load_json_bounded(path.read_bytes(), where=str(path))
        if not isinstance(values, dict):
            raise ValueError("not a JSON object")
        return GeneratorConfig.from_dict(values)
    except (ValueError, UnicodeDecodeError, FaceMagicError) as error:
        raise ModelIntegrityError(
            f"the generator config cannot be read ({error})",
            where=str(path),
            fix="restore the file from the model's source (save_pretrained writes it)",
        ) from error


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """Read ``model.safetensors`` on the CPU; a truncated or corrupt file raises ModelIntegrityError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise ModelNotFoundError(
            f"{WEIGHTS_NAME} is missing", where=str(path.parent), fix="save the generator with save_pretrained"
        )
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise ModelIntegrityError(
            f"the generator weights are truncated or corrupt ({error})",
            where=str(path),
            fix="delete the file and download or save it again",
        ) from error


def load_state(module: nn.Module, state: dict[str, Tensor], *, where: str) -> None:
    """Load ``state`` into ``module`` (built on the meta device), checking names and shapes."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        f"{name}: file {tuple(state[name].shape)} != model {tuple(expected[name].shape)}"
        for name in set(expected) & set(state)
        if tuple(state[name].shape) != tuple(expected[name].shape)
    )
    if missing or unexpected or wrong:
        details = "; ".join(
            part
            for part in (
                f"missing {missing[:5]}" if missing else "",
                f"unexpected {unexpected[:5]}" if unexpected else "",
                f"wrong shapes {wrong[:5]}" if wrong else "",
            )
            if part
        )
        raise ModelIntegrityError(
            f"the weights do not fit the generator config ({details})",
            where=where,
            fix="config.json and model.safetensors must come from the same save_pretrained call",
        )
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ModelIntegrityError(
                f"the weights hold NaN or infinite values (tensor {name})",
                where=where,
                fix="the file is damaged, or was saved from a training run that diverged: use an earlier checkpoint",
            )
    dtype = next(iter(expected.values())).dtype
    module.load_state_dict({name: tensor.to(dtype) for name, tensor in state.items()}, strict=True, assign=True)
