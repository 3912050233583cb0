"""The training loop: generator + discriminator + frozen teachers, with exact resume.

A run folder holds::

    train_config.json       # the TrainConfig of the run
    losses.csv              # one row every log_every steps (means over those steps)
    samples/step_0001000.png  # source | target | result rows, made with the EMA generator
    checkpoint/config.json, checkpoint/model.safetensors   # the EMA generator (load_generator, from_pretrained)
    training_state.pt       # everything a resume needs (written atomically, read with weights_only=True)

The training state holds the raw generator, its EMA copy, the discriminator, both AdamW
optimisers and gradient scalers, the step, the data order (:class:`.data.PairSampler`) and
the random states of python, numpy and torch, so ``N`` steps, a stop and a resume give
exactly the weights of ``N`` uninterrupted steps (same device, same thread count).

Started by torchrun, the loop runs in every process with DistributedDataParallel (see
:mod:`.distributed`): each process trains on its share of a global batch of ``batch_size x
world_size`` faces, and process 0 alone writes the run folder.

One step (B faces; "same" rows have source == target, the others are swaps):

1. generator forward with the per-block source identities (strength 1 everywhere);
2. reconstruction (L1 + 1 - SSIM) on the same rows; identity on all rows (per block);
   relative identity and landmark on the swap rows; mask BCE; in distillation mode the
   teacher's output supervises the swap rows (see :mod:`.distill`);
3. from ``adversarial_start`` on: a discriminator step (hinge), then the generator's hinge and
   feature-matching terms against the updated discriminator;
4. backward (scaled under fp16), gradient clipping, AdamW, EMA update.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import logging
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import BadInputError, CancelledError, ModelIntegrityError
from ..files import atomic_path, atomic_write_bytes
from ..generators.base import SwapModel, to_model_range
from ..generators.network import SwapGenerator
from ..images import save_image
from ..runtime import resolve_device
from ..types import ProgressCallback
from . import losses
from .config import TrainConfig
from .data import FaceCache, PairIndices, PairSampler, TrainingBatch, load_batch
from .discriminator import MultiScaleDiscriminator, logits_of
from .distill import DistillTeacher
from .distributed import DistributedContext, all_true, barrier, device_for, mean_over_processes, shard_pairs
from .interrupt import DeferredInterrupt
from .teachers import IdentityTeacher, LandmarkTeacherLike

logger = logging.getLogger(__name__)

CONFIG_FILE = "train_config.json"
LOSSES_FILE = "losses.csv"
STATE_FILE = "training_state.pt"
CHECKPOINT_DIR = "checkpoint"
SAMPLES_DIR = "samples"
STATE_VERSION = 1

#: Loss terms, in the column order of losses.csv.
LOSS_TERMS = (
    "reconstruction",
    "structural",
    "identity",
    "relative_identity",
    "landmark",
    "adversarial",
    "feature_matching",
    "mask",
    "distill_l1",
    "distill_structural",
)
CSV_COLUMNS = ("step", "seconds_per_step", "generator_loss", *LOSS_TERMS, "discriminator_loss", "grad_norm")
#: Config fields a resumed run may change (they do not change what is computed).
RESUMABLE_CHANGES = frozenset({"steps", "log_every", "sample_every", "checkpoint_every", "num_samples"})


@dataclass(frozen=True)
class TrainSummary:
    """What a :meth:`Trainer.train` call did."""

    first_step: int  # step count when the call started
    last_step: int  # step count when it returned
    seconds_per_step: float  # mean wall time of its steps
    first_losses: dict[str, float] = field(default_factory=dict)  # losses of its first step
    last_losses: dict[str, float] = field(default_factory=dict)  # losses of its last step
    checkpoint: Path | None = None


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None: fp32): auto is bf16 on GPUs that support it, fp16 on other GPUs, fp32 on CPU."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


def _rng_state() -> dict[str, Any]:
    name, keys, position, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    saved = state["numpy"]
    np.random.set_state(
        (saved["name"], saved["keys"].numpy().astype(np.uint32), saved["position"], saved["has_gauss"], saved["cached"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    """Trains a native FaceMagic generator on a prepared cache (see the module docstring).

    ``recognizer`` and ``landmarks`` are the frozen teachers of the identity and landmark
    losses (needed when those weights are non-zero, outside distillation); ``distill_from`` is
    a teacher swapper, which switches on distillation mode. ``resume=True`` continues the run
    saved in ``run_dir``. ``distributed`` is this process's place in a multi-process run whose
    process group is up (:func:`.distributed.init_process_group`); ``batch_size`` is then per process.
    """

    def __init__(
        self,
        config: TrainConfig,
        cache: FaceCache,
        run_dir: str | Path,
        *,
        recognizer: IdentityTeacher | None = None,
        landmarks: LandmarkTeacherLike | None = None,
        distill_from: SwapModel | None = None,
        device: str | torch.device | None = "auto",
        resume: bool = False,
        distributed: DistributedContext | None = None,
    ) -> None:
        self.config = config
        self.cache = cache
        self.run_dir = Path(run_dir)
        self.distributed = distributed or DistributedContext()
        self.device = device_for(self.distributed, resolve_device(device))
        self.autocast_dtype = resolve_precision(config.precision, self.device)
        generator_cfg = config.generator
        self._check_cache(cache, config)
        self.distilling = distill_from is not None
        weights = config.losses
        self.identity_terms = not self.distilling or config.distill.keep_identity_losses
        if self.identity_terms and (weights.identity > 0 or weights.relative_identity > 0) and recognizer is None:
            raise BadInputError(
                "the identity losses need the recogniser teacher",
                where="training",
                fix="pass a recogniser (config 'recognizer_model') or set losses.identity and relative_identity to 0",
            )
        if self.identity_terms and weights.landmark > 0 and landmarks is None:
            raise BadInputError(
                "the landmark loss needs a landmark teacher",
                where="training",
                fix="pass a landmark model (config 'landmark_model') or set losses.landmark to 0",
            )
        self.recognizer = recognizer.to(self.device) if recognizer is not None else None
        self.landmarks = landmarks.to(self.device) if landmarks is not None else None
        self.distill_teacher = (
            DistillTeacher(
                distill_from,
                student_size=generator_cfg.image_size,
                student_template=generator_cfg.template,
                weave=config.distill.weave,
            )
            if distill_from is not None
            else None
        )

        torch.manual_seed(config.seed)
        self.generator: SwapGenerator = SwapGenerator.from_config(generator_cfg, device=self.device)
        if generator_cfg.arch != "facemagic":
            raise BadInputError(
                f"training builds native FaceMagic generators, the config asks for arch={generator_cfg.arch!r}",
                where="training config",
                fix="set generator.arch to 'facemagic'",
            )
        self.generator.train()
        self.ema: SwapGenerator = copy.deepcopy(self.generator).eval().requires_grad_(False)
        self.use_discriminator = self.identity_terms and config.uses_discriminator
        self.discriminator = (
            MultiScaleDiscriminator(config.discriminator, generator_cfg.image_size, device=self.device)
            if self.use_discriminator
            else None
        )
        adamw: dict[str, Any] = {"betas": config.betas, "weight_decay": config.weight_decay}
        self.generator_optimizer = torch.optim.AdamW(self.generator.parameters(), lr=config.learning_rate, **adamw)
        self.discriminator_optimizer = (
            torch.optim.AdamW(self.discriminator.parameters(), lr=config.discriminator_learning_rate, **adamw)
            if self.discriminator is not None
            else None
        )
        scale = self.autocast_dtype == torch.float16
        self.generator_scaler = torch.amp.GradScaler(self.device.type, enabled=scale)
        self.discriminator_scaler = torch.amp.GradScaler(self.device.type, enabled=scale)
        self._wrap_for_processes()
        self.sampler = PairSampler(  # the global batch: every process draws it, each trains on its share
            cache.person_ids,
            batch_size=config.batch_size * self.distributed.world_size,
            same_image_fraction=config.same_image_fraction,
            mix_fraction=0.0 if self.distilling else config.mix_fraction,
            num_blocks=generator_cfg.num_blocks,
            seed=config.seed,
        )
        self.mask_reference = self._mask_reference()
        self.step = 0
        if self.distributed.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        barrier(self.distributed)
        if resume:
            self._load_state()
        else:
            if (self.run_dir / STATE_FILE).exists():
                raise BadInputError(
                    "the run folder already holds a training run",
                    where=str(self.run_dir),
                    fix="continue it with --resume, or give another output folder",
                )
            barrier(self.distributed)  # every process has looked before process 0 writes
            if self.distributed.is_main:
                atomic_write_bytes(self.run_dir / CONFIG_FILE, config.to_json().encode("utf-8"))
                self._reset_csv()
        logger.info(
            "training a %.2f M parameter generator on %d faces (%s, %s)%s",
            self.generator.num_parameters() / 1e6,
            len(cache),
            self.device,
            self.autocast_dtype or "fp32",
            f", distilling from {distill_from.name}" if distill_from is not None else "",
        )

    def _wrap_for_processes(self) -> None:
        """DDP wrappers of the trained networks (the networks themselves when alone): they average the gradients."""
        self.generator_step: nn.Module = self.generator
        self.discriminator_step: nn.Module | None = self.discriminator
        if not self.distributed.active:
            return
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        self.generator_step = DistributedDataParallel(self.generator, device_ids=ids)
        if self.discriminator is not None:
            self.discriminator_step = DistributedDataParallel(self.discriminator, device_ids=ids)

    # -- checks and fixed tensors ----------------------------------------------------------------

    @staticmethod
    def _check_cache(cache: FaceCache, config: TrainConfig) -> None:
        generator = config.generator
        if cache.image_size != generator.image_size or cache.template != generator.template:
            raise BadInputError(
                f"the cache holds {cache.image_size} px {cache.template} crops but the generator takes "
                f"{generator.image_size} px {generator.template} crops",
                where=str(cache.folder),
                fix="prepare the photos again with 'facemagic prepare --config CONFIG' (same size and template)",
            )
        if cache.embedding_model != generator.embedding_model:
            raise BadInputError(
                f"the cache's embeddings come from {cache.embedding_model}, the generator expects "
                f"{generator.embedding_model}",
                where=str(cache.folder),
                fix="prepare the cache with the recogniser the generator config names",
            )

    def _mask_reference(self) -> Tensor:
        from ..blend import create_face_mask

        size = self.config.generator.image_size
        return create_face_mask("ellipse", size, 1, erosion=0.0, device=self.device)

    @contextlib.contextmanager
    def _autocast(self) -> Iterator[None]:
        if self.autocast_dtype is None:
            yield
        else:
            with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                yield

    # -- one step --------------------------------------------------------------------------------

    def _weights(self) -> dict[str, float]:
        w, d = self.config.losses, self.config.distill
        return {
            "reconstruction": w.reconstruction,
            "structural": w.structural,
            "identity": w.identity if self.identity_terms else 0.0,
            "relative_identity": w.relative_identity if self.identity_terms else 0.0,
            "landmark": w.landmark if self.identity_terms else 0.0,
            "adversarial": w.adversarial if self.use_discriminator else 0.0,
            "feature_matching": w.feature_matching if self.use_discriminator else 0.0,
            "mask": w.mask,
            "distill_l1": d.teacher_l1 if self.distilling else 0.0,
            "distill_structural": d.teacher_structural if self.distilling else 0.0,
        }

    def next_batch(self) -> TrainingBatch:
        """This process's share of the next batch of the run (advances the data order)."""
        pairs: PairIndices = shard_pairs(self.sampler.next_batch(), self.distributed)
        return load_batch(self.cache, pairs, num_blocks=self.config.generator.num_blocks, device=self.device)

    def forward_generator(self, generator: nn.Module, batch: TrainingBatch) -> tuple[Tensor, Tensor | None]:
        """The generator's ``(rgb, mask)`` for a batch, strength 1 on every block."""
        cfg = self.config.generator
        strength = torch.ones(batch.target_images.shape[0], cfg.num_blocks, device=self.device)
        image = to_model_range(batch.target_images, cfg.value_range)
        with self._autocast():
            rgb, mask = generator(image, batch.source_identity, batch.target_identity, strength)
        return rgb.float(), (mask.float() if mask is not None else None)

    def compute_losses(self, batch: TrainingBatch, rgb: Tensor, mask: Tensor | None) -> dict[str, Tensor]:
        """The generator's loss terms with a non-zero weight (adversarial terms are added by the step)."""
        weights = self._weights()
        target = batch.target_images
        same, swap = batch.same, ~batch.same
        template = self.config.generator.template
        terms: dict[str, Tensor] = {}
        if weights["reconstruction"]:
            terms["reconstruction"] = losses.l1_loss(rgb, target, same)
        if weights["structural"]:
            terms["structural"] = losses.structural_loss(rgb, target, same)
        if (weights["identity"] or weights["relative_identity"]) and self.recognizer is not None:
            with self._autocast():
                result_identity = self.recognizer.embed_crops(rgb, template=template)
            if weights["identity"]:
                terms["identity"] = losses.identity_loss(result_identity, batch.source_identity)
            if weights["relative_identity"]:
                terms["relative_identity"] = losses.relative_identity_loss(
                    result_identity,
                    batch.source_identity,
                    batch.target_identity,
                    swap,
                    mode=self.config.relative_identity_mode,
                )
        if weights["landmark"] and self.landmarks is not None and bool(swap.any()):
            with self._autocast():
                result_points = self.landmarks.locate_crops(rgb[swap], template=template)
                with torch.no_grad():
                    target_points = self.landmarks.locate_crops(target[swap], template=template)
            terms["landmark"] = losses.landmark_loss(result_points, target_points)
        if weights["mask"] and mask is not None:
            terms["mask"] = losses.mask_loss(mask, self.mask_reference)
        if self.distill_teacher is not None and bool(swap.any()):
            taught = self.distill_teacher.targets(
                target[swap], batch.source_identity[swap][:, 0], batch.target_identity[swap]
            )
            if weights["distill_l1"]:
                terms["distill_l1"] = losses.l1_loss(rgb[swap], taught)
            if weights["distill_structural"]:
                terms["distill_structural"] = losses.structural_loss(rgb[swap], taught)
        return terms

    def _discriminator_step(self, real: Tensor, fake: Tensor) -> float:
        assert self.discriminator is not None and self.discriminator_optimizer is not None
        assert self.discriminator_step is not None
        self.discriminator_optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            real_logits = logits_of(self.discriminator_step(real))
            fake_logits = logits_of(self.discriminator_step(fake.detach()))
        loss = losses.discriminator_hinge_loss(real_logits, fake_logits)
        self.discriminator_scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
        self.discriminator_scaler.unscale_(self.discriminator_optimizer)
        if self.config.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.discriminator.parameters(), self.config.grad_clip)
        self.discriminator_scaler.step(self.discriminator_optimizer)
        self.discriminator_scaler.update()
        return float(loss.detach())

    def train_step(self) -> dict[str, float]:
        """One optimiser step of the generator (and the discriminator); returns the loss values."""
        batch = self.next_batch()
        self.generator.train()
        rgb, mask = self.forward_generator(self.generator_step, batch)
        terms = self.compute_losses(batch, rgb, mask)
        weights = self._weights()
        record: dict[str, float] = {}
        if self.discriminator is not None and self.step >= self.config.adversarial_start:
            record["discriminator_loss"] = self._discriminator_step(batch.target_images, rgb)
            self.discriminator.requires_grad_(False)
            with self._autocast():
                fake = self.discriminator(rgb)
            if weights["adversarial"]:
                terms["adversarial"] = losses.generator_hinge_loss(logits_of(fake))
            if weights["feature_matching"]:
                with torch.no_grad(), self._autocast():
                    real = self.discriminator(batch.target_images)
                terms["feature_matching"] = losses.feature_matching_loss(fake, real)
            self.discriminator.requires_grad_(True)
        total = sum((weights[name] * value for name, value in terms.items()), rgb.new_zeros(()))
        if not all_true(bool(torch.isfinite(total)), self.distributed, self.device):  # all processes stop
            raise ModelIntegrityError(
                f"the training loss is not finite at step {self.step + 1} "
                f"({', '.join(f'{name} {float(value):.4g}' for name, value in terms.items())})",
                where=str(self.run_dir),
                fix="lower the learning rate or use precision bf16/fp32; resume from the last checkpoint",
            )
        self.generator_optimizer.zero_grad(set_to_none=True)
        self.generator_scaler.scale(total).backward()  # type: ignore[no-untyped-call]
        self.generator_scaler.unscale_(self.generator_optimizer)
        clip = self.config.grad_clip if self.config.grad_clip > 0 else math.inf
        grad_norm: Tensor = nn.utils.clip_grad_norm_(self.generator.parameters(), clip)
        self.generator_scaler.step(self.generator_optimizer)
        self.generator_scaler.update()
        self.step += 1
        self._update_ema()
        record.update({name: float(value.detach()) for name, value in terms.items()})
        record["generator_loss"] = float(total.detach())
        record["grad_norm"] = float(grad_norm)
        return mean_over_processes(record, CSV_COLUMNS[2:], self.distributed, self.device)

    def _update_ema(self) -> None:
        decay = min(self.config.ema_decay, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            for average, current in zip(self.ema.parameters(), self.generator.parameters(), strict=True):
                average.lerp_(current, 1.0 - decay)
            for average_buffer, current_buffer in zip(self.ema.buffers(), self.generator.buffers(), strict=True):
                average_buffer.copy_(current_buffer)

    # -- the loop --------------------------------------------------------------------------------

    def train(self, until_step: int | None = None, *, progress: ProgressCallback | None = None) -> TrainSummary:
        """Train until ``until_step`` (default: the config's ``steps``); saves a checkpoint at the end.

        On Ctrl-C (or a ``CancelledError`` from ``progress``) the running step is completed, the
        checkpoint and training state are saved, and the interrupt goes on: resuming from that
        state gives exactly the weights of an uninterrupted run.
        """
        stop = min(self.config.steps, until_step) if until_step is not None else self.config.steps
        first_step = self.step
        first: dict[str, float] = {}
        last: dict[str, float] = {}
        pending: list[dict[str, float]] = []
        started = time.perf_counter()
        request = DeferredInterrupt("this step")
        mid_step = False
        try:
            with request.held():
                while self.step < stop:
                    tick = time.perf_counter()
                    mid_step = True
                    last = self.train_step()
                    mid_step = False
                    last["seconds_per_step"] = time.perf_counter() - tick
                    first = first or dict(last)
                    pending.append(last)
                    if self.step % self.config.log_every == 0 or self.step == stop or request.requested:
                        self._log(pending)
                        pending = []
                    if request.requested:
                        raise KeyboardInterrupt
                    if self.step % self.config.sample_every == 0 and self.distributed.is_main:
                        self.save_samples()
                    if self.step % self.config.checkpoint_every == 0 and self.step < stop:
                        self.save_checkpoint()
                    if progress is not None:
                        progress(self.step, stop)
        except (KeyboardInterrupt, CancelledError):
            if mid_step:  # a second Ctrl-C: the step is half done, the last saved state stays as it is
                logger.warning("stopped in the middle of step %d: the training state was not saved", self.step + 1)
                raise
            logger.warning("stopped at step %d: saving the checkpoint and training state", self.step)
            if pending:
                self._log(pending)
            self.save_checkpoint()
            raise
        if self.step > first_step and self.step % self.config.sample_every != 0 and self.distributed.is_main:
            self.save_samples()
        checkpoint = self.save_checkpoint()
        steps = self.step - first_step
        return TrainSummary(
            first_step=first_step,
            last_step=self.step,
            seconds_per_step=(time.perf_counter() - started) / steps if steps else 0.0,
            first_losses=first,
            last_losses=last,
            checkpoint=checkpoint,
        )

    # -- outputs ---------------------------------------------------------------------------------

    def _reset_csv(self) -> None:
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerow(CSV_COLUMNS)
        atomic_write_bytes(self.run_dir / LOSSES_FILE, text.getvalue().encode("utf-8"))

    def _log(self, records: list[dict[str, float]]) -> None:
        if not self.distributed.is_main:
            return
        means: dict[str, float] = {}
        for column in CSV_COLUMNS[1:]:
            values = [record[column] for record in records if column in record]
            if values:
                means[column] = sum(values) / len(values)
        row = [str(self.step)] + [f"{means[column]:.6g}" if column in means else "" for column in CSV_COLUMNS[1:]]
        with open(self.run_dir / LOSSES_FILE, "a", encoding="utf-8", newline="") as stream:
            csv.writer(stream, lineterminator="\n").writerow(row)
        logger.info(
            "step %d: loss %.4f (%s)",
            self.step,
            means.get("generator_loss", float("nan")),
            ", ".join(f"{name} {means[name]:.4f}" for name in LOSS_TERMS if name in means),
        )

    def sample_pairs(self) -> PairIndices:
        """The fixed pairs of the sample grids: spread-out targets, each with the next one as source."""
        count = min(self.config.num_samples, len(self.cache))
        targets = torch.linspace(0, len(self.cache) - 1, count).round().long()
        sources = torch.roll(targets, 1) if count > 1 else targets
        blocks = self.config.generator.num_blocks
        return PairIndices(
            target=targets,
            source=sources,
            second_source=sources,
            split=torch.full((count,), blocks, dtype=torch.int64),
            same=sources == targets,
        )

    def save_samples(self) -> Path:
        """Save ``samples/step_NNNNNNN.png``: one row per pair, source | target | result (EMA generator)."""
        batch = load_batch(
            self.cache, self.sample_pairs(), num_blocks=self.config.generator.num_blocks, device=self.device,
            source_images=True,
        )  # fmt: skip
        with torch.no_grad():
            result, _ = self.forward_generator(self.ema, batch)
        rows = torch.cat([batch.source_images, batch.target_images, result.clamp(0, 1)], dim=3)  # (n, 3, S, 3S)
        grid = torch.cat(list(rows), dim=1)  # (3, n * S, 3S)
        path = self.run_dir / SAMPLES_DIR / f"step_{self.step:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(grid.cpu(), path)
        return path

    def save_checkpoint(self) -> Path:
        """Write the EMA generator (checkpoint/) and the training state, each atomically (process 0 only)."""
        folder = self.run_dir / CHECKPOINT_DIR
        if self.distributed.is_main:
            self._write_checkpoint()
        barrier(self.distributed)  # the files are there when any process returns
        return folder

    def _write_checkpoint(self) -> None:
        folder = self.ema.save_pretrained(self.run_dir / CHECKPOINT_DIR)
        state: dict[str, Any] = {
            "format_version": STATE_VERSION,
            "step": self.step,
            "world_size": self.distributed.world_size,
            "config": self.config.to_dict(),
            "num_faces": len(self.cache),
            "distilling": self.distilling,
            "generator": self.generator.state_dict(),
            "ema": self.ema.state_dict(),
            "generator_optimizer": self.generator_optimizer.state_dict(),
            "generator_scaler": self.generator_scaler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": _rng_state(),
        }
        if self.discriminator is not None and self.discriminator_optimizer is not None:
            state["discriminator"] = self.discriminator.state_dict()
            state["discriminator_optimizer"] = self.discriminator_optimizer.state_dict()
            state["discriminator_scaler"] = self.discriminator_scaler.state_dict()
        with atomic_path(self.run_dir / STATE_FILE) as temporary:
            torch.save(state, temporary)
        logger.info("saved the checkpoint of step %d to %s", self.step, folder)

    def _load_state(self) -> None:
        path = self.run_dir / STATE_FILE
        if not path.is_file():
            raise BadInputError(
                "there is no training state to resume from",
                where=str(self.run_dir),
                fix="start the run without --resume (or give the folder of an earlier run)",
            )
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
        except (RuntimeError, OSError, EOFError, ValueError) as error:
            raise ModelIntegrityError(
                f"the training state cannot be read ({error})",
                where=str(path),
                fix="the file is damaged; start a new run (checkpoint/ still holds the last EMA weights)",
            ) from error
        if state.get("format_version") != STATE_VERSION:
            raise ModelIntegrityError("the training state has an unknown layout", where=str(path))
        saved = dict(state["config"])
        current = self.config.to_dict()
        changed = sorted(key for key in set(saved) | set(current) if saved.get(key) != current.get(key))
        forbidden = [key for key in changed if key not in RESUMABLE_CHANGES]
        if forbidden:
            raise BadInputError(
                f"the config differs from the one the run was started with in {forbidden}",
                where=str(path),
                fix=f"resume with {self.run_dir / CONFIG_FILE}; only {', '.join(sorted(RESUMABLE_CHANGES))} may change",
            )
        if int(state["num_faces"]) != len(self.cache):
            raise BadInputError(
                f"the run was trained on a cache of {state['num_faces']} faces, this one has {len(self.cache)}",
                where=str(self.cache.folder),
                fix="resume with the same --data folder",
            )
        saved_world = int(state.get("world_size", 1))
        if saved_world != self.distributed.world_size:
            raise BadInputError(
                f"the run was trained by {saved_world} process(es), this resume has {self.distributed.world_size} "
                "(each process trains on batch_size faces, so the batches would change)",
                where=str(path),
                fix=f"resume with torchrun --nproc-per-node {saved_world}"
                if saved_world > 1
                else "resume without torchrun",
            )
        if bool(state.get("distilling", False)) != self.distilling:
            started = "with --distill-from" if state.get("distilling") else "without --distill-from"
            raise BadInputError(
                f"the run was started {started}",
                where=str(path),
                fix="resume it the way it was started (the same --distill-from, or none)",
            )
        self.generator.load_state_dict(state["generator"])
        self.ema.load_state_dict(state["ema"])
        self.generator_optimizer.load_state_dict(state["generator_optimizer"])
        self.generator_scaler.load_state_dict(state["generator_scaler"])
        if self.discriminator is not None and self.discriminator_optimizer is not None:
            if "discriminator" not in state:
                raise BadInputError(
                    "the run was saved without a discriminator", where=str(path), fix="resume with its own config"
                )
            self.discriminator.load_state_dict(state["discriminator"])
            self.discriminator_optimizer.load_state_dict(state["discriminator_optimizer"])
            self.discriminator_scaler.load_state_dict(state["discriminator_scaler"])
        self.sampler.load_state_dict(state["sampler"])
        _set_rng_state(state["rng"])
        self.step = int(state["step"])
        barrier(self.distributed)  # every process has read the state before process 0 rewrites files
        if not self.distributed.is_main:
            return
        if changed:
            atomic_write_bytes(self.run_dir / CONFIG_FILE, self.config.to_json().encode("utf-8"))
        self._truncate_csv()
        logger.info("resumed %s at step %d", self.run_dir, self.step)

    def _truncate_csv(self) -> None:
        """Drop losses.csv rows logged after the saved step (they will be logged again)."""
        path = self.run_dir / LOSSES_FILE
        if not path.is_file():
            self._reset_csv()
            return
        rows = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
        kept = [rows[0]] + [row for row in rows[1:] if row and int(row[0]) <= self.step]
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows(kept)
        atomic_write_bytes(path, text.getvalue().encode("utf-8"))


def read_losses(run_dir: str | Path) -> list[dict[str, float]]:
    """The rows of a run's losses.csv as dicts (empty cells left out)."""
    path = Path(run_dir) / LOSSES_FILE
    with open(path, encoding="utf-8", newline="") as stream:
        return [
            {key: float(value) for key, value in row.items() if value not in ("", None)}
            for row in csv.DictReader(stream)
        ]
