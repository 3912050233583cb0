"""Distillation: a tiny teacher swapper supervises a native FaceMagic student on unlabelled faces."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_models import write_arcface

from facemagic_core.analysis import FaceAnalyzer
from facemagic_core.generators import (
    GeneratorConfig,
    SwapGenerator,
    SwapModel,
    SwapOutput,
    load_generator,
    swap_woven,
)
from facemagic_core.training.config import TrainConfig
from facemagic_core.training.data import FaceCache, PairIndices, TrainingBatch, load_batch
from facemagic_core.training.distill import DistillTeacher, choose_mode
from facemagic_core.training.prepare import prepare_dataset
from facemagic_core.training.trainer import Trainer, read_losses

REPO = Path(__file__).resolve().parents[1]
STEPS = 25
#: The EMA student's L1 error against the teacher must fall below this fraction of the untrained student's.
ERROR_RATIO = 0.6


@pytest.fixture(scope="module")
def cache(faces_dir: Path, yunet_path: Path, tmp_path_factory: pytest.TempPathFactory) -> FaceCache:
    folder = tmp_path_factory.mktemp("distill")
    recognizer = write_arcface(folder / "arcface.onnx")
    analyzer = FaceAnalyzer(backend="yunet", detector=yunet_path, recognizer=recognizer, providers=["cpu"])
    prepare_dataset(faces_dir / "aligned", folder / "cache", analyzer, image_size=64, layout="flat")
    return FaceCache(folder / "cache")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> SwapModel:
    """A 32 px inswapper-layout generator with random weights, saved and loaded like any swapper."""
    torch.manual_seed(5)
    folder = tmp_path_factory.mktemp("teacher")
    SwapGenerator.from_config(
        GeneratorConfig.inswapper_layout(channels=8, image_size=32, num_blocks=2)
    ).save_pretrained(folder / "tiny_inswapper")
    return load_generator(folder / "tiny_inswapper", model_dir=folder, device="cpu", dtype="fp32")


class TintSwapper:
    """A teacher that recolours the face by the identity difference (neutral when source == target).

    Any SwapModel can teach; this one follows the protocol in a few lines and does what a style
    delta can learn: a per-channel gain ``1 + 0.5 * tanh(W (source - target))``.
    """

    name = "tint teacher"
    input_size = 32
    template = "arcface"
    embedding_model = "arcface_w600k_r50"
    num_blocks = 1
    device = torch.device("cpu")
    dtype = torch.float32

    def __init__(self) -> None:
        self.weights = torch.randn(512, 3, generator=torch.Generator().manual_seed(6)) * 2

    def swap(self, crops: torch.Tensor, source: torch.Tensor, target: torch.Tensor, strength: torch.Tensor) -> Any:
        delta = (source[:, 0] - target) @ self.weights * strength.reshape(-1, 1)
        gain = 1 + 0.5 * torch.tanh(delta)
        return SwapOutput(images=(crops * gain[:, :, None, None]).clamp(0, 1))


def _eval_training_batch(cache: FaceCache) -> TrainingBatch:
    """Eight swaps: every face gets the identity of the face before it."""
    rows = torch.arange(8)
    pairs = PairIndices(rows, rows.roll(1), rows.roll(1), torch.full((8,), 3), torch.zeros(8, dtype=torch.bool))
    return load_batch(cache, pairs, num_blocks=3, device=torch.device("cpu"))


def _eval_batch(cache: FaceCache) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    batch = _eval_training_batch(cache)
    return batch.target_images, batch.source_identity[:, 0], batch.target_identity


def test_distillation_lowers_the_students_error_against_the_teacher(cache: FaceCache, tmp_path: Path) -> None:
    teacher = TintSwapper()
    assert isinstance(teacher, SwapModel)
    base = TrainConfig.from_file(REPO / "configs" / "tiny.json")
    config = dataclasses.replace(base, steps=STEPS, same_image_fraction=0.25, sample_every=STEPS)
    trainer = Trainer(config, cache, tmp_path / "run", distill_from=teacher, device="cpu")
    assert trainer.distill_teacher is not None and trainer.distill_teacher.mode == "woven"
    assert trainer.recognizer is None and trainer.discriminator is None  # pure distillation needs no ArcFace
    batch = _eval_training_batch(cache)
    taught = trainer.distill_teacher.targets(batch.target_images, batch.source_identity[:, 0], batch.target_identity)

    def error(module: torch.nn.Module) -> float:
        with torch.no_grad():
            result, _ = trainer.forward_generator(module, batch)
        return float((result - taught).abs().mean())

    before = error(trainer.generator)
    trainer.train()
    after = error(trainer.ema)
    assert after < ERROR_RATIO * before, (before, after)
    rows = read_losses(tmp_path / "run")
    assert "distill_l1" in rows[0] and "identity" not in rows[0] and "adversarial" not in rows[0]
    assert sum(row["distill_l1"] for row in rows[-5:]) < ERROR_RATIO * sum(row["distill_l1"] for row in rows[:5])
    reloaded = load_generator(tmp_path / "run" / "checkpoint", model_dir=tmp_path, device="cpu", dtype="fp32")
    assert reloaded.input_size == 64 and reloaded.num_blocks == 3  # the student is a native FaceMagic generator


def test_teacher_modes_direct_woven_and_warped(cache: FaceCache, teacher: SwapModel) -> None:
    crops, source, target = _eval_batch(cache)
    assert choose_mode(teacher, 32, "arcface", weave=True) == ("direct", 1)
    assert choose_mode(teacher, 64, "arcface", weave=True) == ("woven", 2)
    assert choose_mode(teacher, 64, "arcface", weave=False) == ("warped", 1)
    assert choose_mode(teacher, 64, "ffhq", weave=True) == ("warped", 1)

    identity = source[:, None, :].expand(-1, teacher.num_blocks, -1)
    ones = torch.ones(8, teacher.num_blocks)
    woven = DistillTeacher(teacher, student_size=64, student_template="arcface", weave=True)
    expected = swap_woven(teacher, crops, identity, target, ones, factor=2).images
    torch.testing.assert_close(woven.targets(crops, source, target), expected)

    warped = DistillTeacher(teacher, student_size=64, student_template="arcface", weave=False).targets(
        crops, source, target
    )
    upscaled = torch.nn.functional.interpolate(
        teacher.swap(crops[:, :, ::2, ::2].contiguous(), identity, target, ones).images, scale_factor=2, mode="bilinear"
    )
    assert warped.shape == crops.shape
    assert float((warped - upscaled).abs().mean()) < 0.02  # the teacher's swap, upsampled to the student's size

    # an FFHQ student sees more of the head than the ArcFace teacher: outside its crop the target stays
    ffhq = DistillTeacher(teacher, student_size=64, student_template="ffhq", weave=True).targets(crops, source, target)
    torch.testing.assert_close(ffhq[:, :, :2, :], crops[:, :, :2, :])
