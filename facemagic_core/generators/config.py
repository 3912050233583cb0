"""The one configuration family of FaceMagic's native swap generators.

A :class:`GeneratorConfig` describes either

- ``arch="facemagic"``: our style-delta injection network (ResBlock encoder, Style Mix
  Blocks at several spatial scales, decoder with skip connections, optional soft mask), or
- ``arch="inswapper"``: the layout of the public inswapper-style generator (encoder, six
  AdaIN-style blocks at the bottleneck, decoder, no skips), so that public weights of that
  layout convert into a native module (see :mod:`.convert`).

The config is what ``config.json`` of a native model folder holds, beside ``model.safetensors``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from ..align import TemplateName
from ..errors import BadInputError
from ..files import load_json_bounded
from ..types import EMBEDDING_DIM

#: Which network a config builds.
Arch = Literal["facemagic", "inswapper"]
ARCHES: tuple[str, ...] = get_args(Arch)

#: Alignment templates a generator's crops may use (``facemagic_core.align.TemplateName``).
TEMPLATES: tuple[str, ...] = get_args(TemplateName)

#: Value range of the images a network takes: ``"zero_one"`` is [0, 1], ``"minus_one_one"`` is [-1, 1].
ValueRange = Literal["zero_one", "minus_one_one"]
VALUE_RANGES: tuple[str, ...] = get_args(ValueRange)

#: How a Style Mix Block injects the identity: ``"increment"`` adds the style *delta* from the target's own
#: identity to the source's (DESIGN.md; neutral for the same person), ``"replace"`` is plain AdaIN, which
#: normalises the features and imposes the source's style outright (the ablation baseline).
Injection = Literal["increment", "replace"]
INJECTIONS: tuple[str, ...] = get_args(Injection)

#: Version of the config.json layout written by :meth:`GeneratorConfig.to_dict`.
CONFIG_FORMAT_VERSION = 1


def _invalid(what: str, fix: str) -> BadInputError:
    return BadInputError(what, where="generator config", fix=fix)


@dataclass(frozen=True)
class GeneratorConfig:
    """Hyper-parameters of a native swap generator (immutable; saved as config.json)."""

    arch: Arch = "facemagic"  # which network: our style-delta generator or the public inswapper layout
    image_size: int = 256  # side S of the square aligned crops the network takes and returns
    channels: int = 64  # base width C: level i has min(C * 2**i, max_channels) channels (inswapper: C, 2C, 4C, 8C)
    max_channels: int = 512  # cap on the width of the deepest facemagic levels (unused by inswapper)
    num_downsamples: int = 3  # stride-2 steps from S to the bottleneck S / 2**n (inswapper: always 2)
    blocks_per_scale: tuple[int, ...] = (2, 2, 2)  # Style Mix Blocks per scale, coarsest (bottleneck) scale first
    id_dim: int = EMBEDDING_DIM  # size of an identity embedding (ArcFace: 512)
    style_hidden: int = 256  # hidden width of each facemagic block's style MLP G -> (mu, log sigma)
    refine: bool = True  # facemagic blocks add a bias-free conv refinement of their style increment
    skips: bool = True  # facemagic decoder takes the encoder features of the same resolution (U-Net skips)
    id_concat: bool = True  # concatenate the effective identity (broadcast over space) before the decoder
    mask_head: bool = True  # facemagic also predicts a soft face mask (sigmoid) beside the RGB image
    template: TemplateName = "arcface"  # alignment template of the crops (see facemagic_core.align)
    value_range: ValueRange = "minus_one_one"  # range of the input image inside the network; output is always [0, 1]
    embedding_model: str = "arcface_w600k_r50"  # registry name of the recogniser whose embeddings are the identities
    norm_eps: float = 1e-5  # epsilon of the feature statistics (inswapper: 1e-8 inside the square root of the RMS)
    negative_slope: float = 0.2  # slope of the LeakyReLU activations
    latent_renormalize: bool = True  # inswapper: re-normalise normalize(e) @ emap (insightface does, facefusion not)
    injection: Injection = "increment"  # facemagic: style increment (default) or plain AdaIN replacement (ablation)

    def __post_init__(self) -> None:
        if self.arch not in ARCHES:
            raise _invalid(f"unknown generator arch {self.arch!r}", f"use one of {', '.join(ARCHES)}")
        if self.template not in TEMPLATES:
            raise _invalid(f"unknown alignment template {self.template!r}", f"use one of {', '.join(TEMPLATES)}")
        if self.injection not in INJECTIONS:
            raise _invalid(f"unknown injection {self.injection!r}", f"use one of {', '.join(INJECTIONS)}")
        if self.value_range not in VALUE_RANGES:
            raise _invalid(f"unknown value range {self.value_range!r}", f"use one of {', '.join(VALUE_RANGES)}")
        object.__setattr__(self, "blocks_per_scale", tuple(int(n) for n in self.blocks_per_scale))
        for name in ("image_size", "channels", "max_channels", "id_dim"):
            if int(getattr(self, name)) < 1:
                raise _invalid(f"{name} must be positive, got {getattr(self, name)}", f"set {name} to a positive int")
        if self.num_downsamples < 0:
            raise _invalid(f"num_downsamples must be >= 0, got {self.num_downsamples}", "use 0 or more")
        if self.image_size % (2**self.num_downsamples) != 0:
            raise _invalid(
                f"image_size {self.image_size} is not divisible by 2**num_downsamples = {2**self.num_downsamples}",
                "choose an image size that is a multiple of 2**num_downsamples",
            )
        if not self.blocks_per_scale or any(n < 0 for n in self.blocks_per_scale) or self.num_blocks < 1:
            raise _invalid(
                f"blocks_per_scale must give at least one block, got {self.blocks_per_scale}",
                "give a tuple such as (2, 2, 2), coarsest scale first",
            )
        if len(self.blocks_per_scale) > self.num_downsamples + 1:
            raise _invalid(
                f"blocks_per_scale has {len(self.blocks_per_scale)} scales but the network has only "
                f"{self.num_downsamples + 1} (num_downsamples + 1)",
                "give at most num_downsamples + 1 entries",
            )
        if self.arch == "inswapper" and (self.num_downsamples != 2 or len(self.blocks_per_scale) != 1):
            raise _invalid(
                "the inswapper layout has two downsamplings and all its blocks at the bottleneck",
                "build it with GeneratorConfig.inswapper_layout(...)",
            )
        if self.style_hidden < 0:
            raise _invalid(f"style_hidden must be >= 0, got {self.style_hidden}", "use 0 for a single linear map")
        if not self.norm_eps > 0:
            raise _invalid(f"norm_eps must be positive, got {self.norm_eps}", "use e.g. 1e-5")

    # -- derived sizes -------------------------------------------------------------------------

    @property
    def num_blocks(self) -> int:
        """Number of identity injection points (Style Mix Blocks); the ``num_blocks`` of a SwapModel."""
        return sum(self.blocks_per_scale)

    @property
    def bottleneck_size(self) -> int:
        """Side of the coarsest feature map."""
        return self.image_size >> self.num_downsamples

    def level_channels(self, level: int) -> int:
        """Channels of facemagic encoder level ``level`` (0 = full resolution, S / 2**level)."""
        return min(self.channels << level, self.max_channels)

    def block_scales(self) -> list[int]:
        """For each block in order, its scale index (0 = bottleneck, coarsest)."""
        return [scale for scale, count in enumerate(self.blocks_per_scale) for _ in range(count)]

    # -- presets ---------------------------------------------------------------------------------

    @classmethod
    def inswapper_layout(
        cls, *, channels: int = 128, image_size: int = 128, num_blocks: int = 6, **overrides: Any
    ) -> GeneratorConfig:
        """The public inswapper-style layout; ``channels=128, image_size=128`` is inswapper_128."""
        values: dict[str, Any] = {
            "arch": "inswapper",
            "image_size": image_size,
            "channels": channels,
            "max_channels": 8 * channels,
            "num_downsamples": 2,
            "blocks_per_scale": (num_blocks,),
            "style_hidden": 0,
            "refine": False,
            "skips": False,
            "id_concat": False,
            "mask_head": False,
            "value_range": "zero_one",
            "norm_eps": 1e-8,
        }
        values.update(overrides)
        return cls(**values)

    # -- config.json -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (with ``format_version``)."""
        values = dataclasses.asdict(self)
        values["blocks_per_scale"] = list(self.blocks_per_scale)
        return {"format_version": CONFIG_FORMAT_VERSION, **values}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> GeneratorConfig:
        """Read a config written by :meth:`to_dict`; unknown keys are rejected with the list of known ones."""
        data = dict(values)
        version = data.pop("format_version", CONFIG_FORMAT_VERSION)
        if not isinstance(version, int) or version > CONFIG_FORMAT_VERSION:
            raise _invalid(
                f"config format version {version!r} is newer than this FaceMagic understands ({CONFIG_FORMAT_VERSION})",
                "update FaceMagic",
            )
        known = {item.name for item in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise _invalid(
                f"unknown generator config keys {unknown}", f"remove them; known keys are {', '.join(sorted(known))}"
            )
        if "blocks_per_scale" in data:
            data["blocks_per_scale"] = tuple(data["blocks_per_scale"])
        try:
            return cls(**data)
        except TypeError as error:
            raise _invalid(f"the generator config cannot be read ({error})", "check the config.json values") from error

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> GeneratorConfig:
        try:
            values = load_json_bounded(text, where="config.json")
        except BadInputError as error:
            raise _invalid(f"config.json is unusable ({error.what})", "restore the file") from error
        if not isinstance(values, dict):
            raise _invalid("config.json does not hold a JSON object", "restore the file")
        return cls.from_dict(values)
