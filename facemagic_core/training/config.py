"""The training configuration: one JSON file holds the generator, the loss weights and the schedule.

Layout of a config file (every key optional except ``generator``; unknown keys are errors)::

    {
      "format_version": 1,
      "generator": { ...GeneratorConfig... },
      "losses": {"reconstruction": 10, "structural": 2, "identity": 5, ...},
      "discriminator": {"scales": 3, "channels": 64, "layers": 3},
      "distill": {"teacher_weight": 1, ...},
      "batch_size": 16, "steps": 200000, ...
    }

See ``configs/tiny.json`` (CPU tests) and ``configs/base_256.json`` (a real GPU run).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from ..errors import BadInputError
from ..generators.config import GeneratorConfig

#: Compute precision of the forward passes: auto = bf16 on GPUs that have it, else fp16 on GPU, fp32 on CPU.
Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)

#: How the relative identity loss compares similarities (see :func:`.losses.relative_identity_loss`).
RelativeMode = Literal["absolute", "hinge"]
RELATIVE_MODES: tuple[str, ...] = get_args(RelativeMode)

#: Version of the layout written by :meth:`TrainConfig.to_dict`.
TRAIN_CONFIG_VERSION = 1


def _invalid(what: str, fix: str, where: str = "training config") -> BadInputError:
    return BadInputError(what, where=where, fix=fix)


@dataclass(frozen=True)
class LossWeights:
    """Weight of every loss term of the generator (0 switches a term off)."""

    reconstruction: float = 10.0  # L1 between result and target on the same-image rows
    structural: float = 2.0  # 1 - SSIM between result and target on the same-image rows
    identity: float = 5.0  # 1 - cos(ArcFace(result), source identity), per block for mixed rows
    relative_identity: float = 2.0  # |cos(src, tgt) - cos(result, tgt)| on the swap rows (or its hinge)
    landmark: float = 50.0  # L1 between the landmarks of result and target, in units of the crop side
    adversarial: float = 1.0  # hinge generator loss of the multi-scale discriminator
    feature_matching: float = 10.0  # L1 between discriminator features of result and target
    mask: float = 0.5  # binary cross-entropy of the generator's mask against a soft face ellipse


@dataclass(frozen=True)
class DiscriminatorConfig:
    """The multi-scale PatchGAN (see :mod:`.discriminator`)."""

    scales: int = 3  # image scales (each half the previous one)
    channels: int = 64  # width of the first layer, doubled per layer up to max_channels
    layers: int = 3  # stride-2 layers per scale
    max_channels: int = 512


@dataclass(frozen=True)
class DistillConfig:
    """Weights of distillation from a teacher swapper (``facemagic train --distill-from``)."""

    teacher_l1: float = 10.0  # L1 between the student's and the teacher's output on the swap rows
    teacher_structural: float = 2.0  # 1 - SSIM between the two
    weave: bool = True  # student crops N times the teacher's size: run the teacher woven (swap_woven), not upscaled
    keep_identity_losses: bool = False  # also apply the identity/landmark/adversarial losses to the student


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run (saved into the run folder as train_config.json)."""

    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    losses: LossWeights = field(default_factory=LossWeights)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    batch_size: int = 16  # faces per step
    steps: int = 200_000  # total optimiser steps of the run
    learning_rate: float = 1e-4  # AdamW, generator
    discriminator_learning_rate: float = 1e-4  # AdamW, discriminator
    betas: tuple[float, float] = (0.0, 0.99)  # AdamW betas of both optimisers
    weight_decay: float = 1e-4  # AdamW decoupled weight decay
    grad_clip: float = 1.0  # clip the global gradient norm of each model to this (0: off)
    ema_decay: float = 0.999  # EMA of the generator; warmed up as min(decay, (1 + t) / (10 + t))
    precision: Precision = "auto"  # autocast dtype: auto = bf16 (else fp16 + GradScaler) on GPU, fp32 on CPU
    same_image_fraction: float = 0.25  # rows per batch whose source is the target itself (reconstruction)
    mix_fraction: float = 0.25  # swap rows that get two identities, split across coarse and fine blocks
    relative_identity_mode: RelativeMode = "absolute"
    adversarial_start: int = 0  # step from which the discriminator trains and its losses count
    recognizer_model: str = "arcface_w600k_r50"  # teacher: registry name, pack/file, or .onnx path
    landmark_model: str = "buffalo_l/2d106det.onnx"  # teacher for the landmark loss; "" switches it off
    log_every: int = 10  # write a row of losses.csv every N steps
    sample_every: int = 1000  # save a sample grid (source | target | result) every N steps
    checkpoint_every: int = 5000  # save the EMA generator and the training state every N steps
    num_samples: int = 4  # rows of the sample grid
    seed: int = 0  # seeds the model initialisation, the data order and every random choice

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        for name in ("batch_size", "steps", "log_every", "sample_every", "checkpoint_every", "num_samples"):
            if int(getattr(self, name)) < 1:
                raise _invalid(f"{name} must be at least 1, got {getattr(self, name)}", f"set {name} to 1 or more")
        for name in ("same_image_fraction", "mix_fraction"):
            value = float(getattr(self, name))
            if not 0.0 <= value <= 1.0:
                raise _invalid(f"{name} must lie in [0, 1], got {value}", f"set {name} between 0 and 1")
        if not 0.0 <= self.ema_decay < 1.0:
            raise _invalid(f"ema_decay must lie in [0, 1), got {self.ema_decay}", "use e.g. 0.999")
        if self.learning_rate <= 0 or self.discriminator_learning_rate <= 0:
            raise _invalid("learning rates must be positive", "use e.g. 1e-4")
        if not (self.grad_clip >= 0 and self.weight_decay >= 0):
            raise _invalid(
                f"grad_clip and weight_decay must be >= 0, got {self.grad_clip} and {self.weight_decay}",
                "use 0 to switch them off",
            )
        if len(self.betas) != 2 or not all(0.0 <= beta < 1.0 for beta in self.betas):
            raise _invalid(f"betas must be two numbers in [0, 1), got {list(self.betas)}", "use e.g. [0.0, 0.99]")
        if self.precision not in PRECISIONS:
            raise _invalid(f"unknown precision {self.precision!r}", f"use one of {', '.join(PRECISIONS)}")
        if self.relative_identity_mode not in RELATIVE_MODES:
            raise _invalid(
                f"unknown relative_identity_mode {self.relative_identity_mode!r}",
                f"use one of {', '.join(RELATIVE_MODES)}",
            )
        for weights in (self.losses, self.distill):
            for item in dataclasses.fields(weights):
                value = getattr(weights, item.name)
                if isinstance(value, bool):
                    continue
                if not float(value) >= 0.0:
                    raise _invalid(f"loss weight {item.name} must be >= 0, got {value}", "use 0 to switch it off")
        if self.discriminator.scales < 1 or self.discriminator.layers < 1 or self.discriminator.channels < 1:
            raise _invalid("the discriminator needs at least one scale, layer and channel", "check 'discriminator'")

    @property
    def uses_discriminator(self) -> bool:
        return self.losses.adversarial > 0 or self.losses.feature_matching > 0

    # -- JSON ------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        values: dict[str, Any] = {"format_version": TRAIN_CONFIG_VERSION}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if isinstance(value, GeneratorConfig):
                generator = value.to_dict()
                generator.pop("format_version")
                values[item.name] = generator
            elif dataclasses.is_dataclass(value):
                values[item.name] = dataclasses.asdict(value)  # type: ignore[arg-type]
            elif isinstance(value, tuple):
                values[item.name] = list(value)
            else:
                values[item.name] = value
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, where: str = "training config") -> TrainConfig:
        data = dict(values)
        version = data.pop("format_version", TRAIN_CONFIG_VERSION)
        if not isinstance(version, int) or version > TRAIN_CONFIG_VERSION:
            raise _invalid(f"training config version {version!r} is newer than this FaceMagic", "update", where)
        known = {item.name: item for item in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise _invalid(f"unknown training config keys {unknown}", f"known keys: {', '.join(sorted(known))}", where)
        nested: dict[str, type[Any]] = {
            "losses": LossWeights,
            "discriminator": DiscriminatorConfig,
            "distill": DistillConfig,
        }
        try:
            if "generator" in data:
                data["generator"] = GeneratorConfig.from_dict(data["generator"])
            for key, kind in nested.items():
                if key in data:
                    section = dict(data[key])
                    fields = {item.name for item in dataclasses.fields(kind)}
                    extra = sorted(set(section) - fields)
                    if extra:
                        raise _invalid(f"unknown keys {extra} in '{key}'", f"known: {', '.join(sorted(fields))}", where)
                    data[key] = kind(**section)
            if "betas" in data:
                data["betas"] = tuple(data["betas"])
            return cls(**data)
        except (TypeError, ValueError) as error:
            raise _invalid(f"the training config cannot be read ({error})", "check the values", where) from error

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        file = Path(path)
        if not file.is_file():
            raise _invalid("the training config file does not exist", "give a JSON file (see configs/)", str(file))
        try:
            values = json.loads(file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise _invalid(f"the training config is not valid JSON ({error})", "fix the file", str(file)) from error
        if not isinstance(values, dict):
            raise _invalid("the training config must be a JSON object", "see configs/tiny.json", str(file))
        return cls.from_dict(values, where=str(file))
