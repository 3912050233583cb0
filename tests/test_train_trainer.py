"""The training loop on the shared faces: loss goes down, neutrality holds, exact resume, loadable checkpoints."""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from comfy_stub.harness import installed_pack, node_classes
from PIL import Image
from tiny_models import write_arcface, write_landmarks_106

from facemagic_core.analysis import FaceAnalyzer
from facemagic_core.errors import BadInputError
from facemagic_core.generators import SwapGenerator, TorchSwapper, load_generator
from facemagic_core.training import publish
from facemagic_core.training.config import DiscriminatorConfig, TrainConfig
from facemagic_core.training.data import FaceCache, PairSampler, load_batch
from facemagic_core.training.prepare import prepare_dataset
from facemagic_core.training.teachers import LandmarkTeacher, RecognizerTeacher, load_landmark_model, load_recognizer
from facemagic_core.training.trainer import Trainer, read_losses

REPO = Path(__file__).resolve().parents[1]
#: Steps of the loss test, and how far the reconstruction loss must fall (mean of the last 5 vs the first 5).
LOSS_STEPS = 30
LOSS_RATIO = 0.6


@pytest.fixture(scope="module")
def teachers(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("teachers")
    return write_arcface(folder / "arcface.onnx"), write_landmarks_106(folder / "landmarks.onnx")


@pytest.fixture(scope="module")
def cache(
    loose_faces_dir: Path, yunet_path: Path, teachers: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> FaceCache:
    analyzer = FaceAnalyzer(backend="yunet", detector=yunet_path, recognizer=teachers[0], providers=["cpu"])
    folder = tmp_path_factory.mktemp("cache")
    prepare_dataset(loose_faces_dir, folder, analyzer, image_size=64, layout="flat")
    return FaceCache(folder)


@pytest.fixture(scope="module")
def models(teachers: tuple[Path, Path]) -> tuple[RecognizerTeacher, LandmarkTeacher]:
    return load_recognizer(teachers[0]), load_landmark_model(teachers[1])


def tiny_config(**changes: Any) -> TrainConfig:
    return dataclasses.replace(TrainConfig.from_file(REPO / "configs" / "tiny.json"), **changes)


@pytest.fixture(scope="module")
def trained_run(
    cache: FaceCache, models: tuple[RecognizerTeacher, LandmarkTeacher], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    run = tmp_path_factory.mktemp("run")
    config = tiny_config(steps=LOSS_STEPS, sample_every=LOSS_STEPS // 2)
    Trainer(config, cache, run, recognizer=models[0], landmarks=models[1], device="cpu").train()
    return run


def test_reconstruction_loss_falls_within_a_few_dozen_steps(trained_run: Path) -> None:
    rows = read_losses(trained_run)
    assert [int(row["step"]) for row in rows] == list(range(1, LOSS_STEPS + 1))
    first = sum(row["reconstruction"] for row in rows[:5]) / 5
    last = sum(row["reconstruction"] for row in rows[-5:]) / 5
    assert last < LOSS_RATIO * first, (first, last)
    for term in ("identity", "relative_identity", "landmark", "adversarial", "feature_matching", "mask"):
        assert term in rows[-1], f"{term} was not logged"
    assert "discriminator_loss" in rows[-1] and rows[-1]["grad_norm"] > 0


def test_samples_and_checkpoint_files(trained_run: Path) -> None:
    samples = sorted((trained_run / "samples").glob("*.png"))
    assert [path.name for path in samples] == [f"step_{LOSS_STEPS // 2:07d}.png", f"step_{LOSS_STEPS:07d}.png"]
    with Image.open(samples[-1]) as picture:
        assert picture.size == (3 * 64, 4 * 64)  # source | target | result, four rows
    assert TrainConfig.from_file(trained_run / "train_config.json").steps == LOSS_STEPS
    assert {path.name for path in (trained_run / "checkpoint").iterdir()} == {"config.json", "model.safetensors"}


def test_checkpoint_loads_with_load_generator_and_swaps(trained_run: Path, cache: FaceCache, tmp_path: Path) -> None:
    model = load_generator(trained_run / "checkpoint", model_dir=tmp_path, device="cpu", dtype="fp32")
    assert isinstance(model, TorchSwapper) and (model.input_size, model.num_blocks) == (64, 3)
    crops = cache.read_rows("crops", torch.tensor([0, 1])).float() / 255
    identities = torch.nn.functional.normalize(cache.read_rows("embeddings", torch.tensor([0, 1])), dim=-1)
    swapped = model.swap(crops, identities.flip(0), identities, torch.ones(2))
    kept = model.swap(crops, identities, identities, torch.ones(2))
    assert swapped.images.shape == (2, 3, 64, 64) and swapped.mask is not None
    assert float((swapped.images - kept.images).abs().mean()) > 1e-4  # another identity changes the face
    # the trained generator is still exactly neutral: source == target is strength 0, bit for bit
    assert torch.equal(kept.images, model.swap(crops, identities, identities, torch.zeros(2)).images)
    # ... and it learnt to reconstruct: closer to the target than an untrained generator of the same config
    fresh = TorchSwapper(SwapGenerator.from_config(model.cfg), device="cpu")
    assert float((kept.images - crops).abs().mean()) < 0.7 * float(
        (fresh.swap(crops, identities, identities, torch.ones(2)).images - crops).abs().mean()
    )
    loaded = SwapGenerator.from_pretrained(trained_run / "checkpoint")
    assert loaded.cfg == model.cfg


def test_the_comfyui_generator_loader_takes_the_checkpoint_folder(trained_run: Path, tmp_path: Path) -> None:
    """A run's checkpoint/ (with its model card) copied into models/facemagic is offered and loaded by the node."""
    folder = tmp_path / "models" / "facemagic" / "my_run"
    shutil.copytree(trained_run / "checkpoint", folder)
    publish.write_model_card(folder, step=LOSS_STEPS, num_faces=36, distilled_from=None)
    with installed_pack(tmp_path / "models") as pack:
        loader = node_classes(pack)["FaceMagicGeneratorLoader"]
        assert "my_run" in loader.GET_SCHEMA().inputs[0].options
        handle = loader.run(model="my_run", device="cpu", dtype="fp32")[0]
    assert handle.managed and (handle.model.input_size, handle.model.num_blocks) == (64, 3)
    expected = SwapGenerator.from_pretrained(trained_run / "checkpoint").state_dict()
    for key, value in handle.model.module.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_same_image_rows_are_exactly_neutral_in_training_batches(cache: FaceCache) -> None:
    config = tiny_config()
    sampler = PairSampler(
        cache.person_ids, batch_size=8, same_image_fraction=0.5, mix_fraction=0.5, num_blocks=3, seed=1
    )
    pairs = sampler.next_batch()
    batch = load_batch(cache, pairs, num_blocks=3, device=torch.device("cpu"))
    same = batch.same
    assert int(same.sum()) == 4
    assert torch.equal(batch.source_identity[same], batch.target_identity[same][:, None].expand(-1, 3, -1))
    generator = SwapGenerator.from_config(config.generator).eval()
    image = batch.target_images * 2 - 1
    with torch.no_grad():
        on, _ = generator(image, batch.source_identity, batch.target_identity, torch.ones(8, 3))
        off, _ = generator(image, batch.source_identity, batch.target_identity, torch.zeros(8, 3))
    assert torch.equal(on[same], off[same])
    assert float((on[~same] - off[~same]).abs().max()) > 0  # swap rows do get a style delta
    # mixed rows: two identities, coarse blocks from one, fine blocks from the other
    # (a mixed row whose two draws are the same face carries one identity: which rows mix depends on the photos)
    mixed = (~same) & (batch.source_identity[:, 0] != batch.source_identity[:, -1]).any(-1)
    planned = (~pairs.same) & (pairs.split < 3) & (pairs.source != pairs.second_source)
    assert bool(planned.any()) and torch.equal(mixed, planned)


def _run_trainer(cache: FaceCache, models: Any, folder: Path, *, resume: bool = False) -> Trainer:
    config = tiny_config(
        steps=6, batch_size=4, sample_every=100, checkpoint_every=100, discriminator=DiscriminatorConfig(2, 4, 2, 8)
    )
    return Trainer(config, cache, folder, recognizer=models[0], landmarks=models[1], device="cpu", resume=resume)


def _run(cache: FaceCache, models: Any, folder: Path, until: int, *, resume: bool = False) -> Trainer:
    trainer = _run_trainer(cache, models, folder, resume=resume)
    trainer.train(until_step=until)
    return trainer


def _interrupt_during_step(trainer: Trainer, step: int) -> None:
    """Press Ctrl-C (SIGINT) in the middle of step ``step``: after its batch is drawn, before any update."""
    draw = trainer.next_batch

    def drawn_then_interrupted() -> Any:
        batch = draw()
        if trainer.step + 1 == step:
            os.kill(os.getpid(), signal.SIGINT)
        return batch

    trainer.next_batch = drawn_then_interrupted  # type: ignore[method-assign]


def test_resume_gives_the_weights_of_an_uninterrupted_run(
    cache: FaceCache, models: tuple[RecognizerTeacher, LandmarkTeacher], tmp_path: Path
) -> None:
    straight = _run(cache, models, tmp_path / "straight", 6)
    stopped = _run_trainer(cache, models, tmp_path / "stopped")
    _interrupt_during_step(stopped, 3)
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C: step 3 completes, its state is saved, then the stop
        stopped.train()
    assert stopped.step == 3
    torch.manual_seed(1234)  # disturb the global random state: the resume must restore it
    resumed = _run(cache, models, tmp_path / "stopped", 6, resume=True)
    assert resumed.step == straight.step == 6
    for name in ("generator", "ema", "discriminator"):
        expected, actual = getattr(straight, name).state_dict(), getattr(resumed, name).state_dict()
        assert expected.keys() == actual.keys()
        for key in expected:
            assert torch.equal(expected[key], actual[key]), f"{name}.{key} differs after resume"

    def without_timing(rows: list[dict[str, float]]) -> list[dict[str, float]]:  # wall time depends on the machine
        return [{key: value for key, value in row.items() if key != "seconds_per_step"} for row in rows]

    assert without_timing(read_losses(tmp_path / "straight")) == without_timing(read_losses(tmp_path / "stopped"))


def test_resume_refuses_a_changed_config_and_new_runs_refuse_old_folders(
    cache: FaceCache, models: tuple[RecognizerTeacher, LandmarkTeacher], tmp_path: Path
) -> None:
    _run(cache, models, tmp_path / "run", 1)
    with pytest.raises(BadInputError, match="already holds a training run"):
        _run(cache, models, tmp_path / "run", 2)
    changed = tiny_config(steps=6, batch_size=4, learning_rate=0.1, discriminator=DiscriminatorConfig(2, 4, 2, 8))
    with pytest.raises(BadInputError, match="learning_rate"):
        Trainer(changed, cache, tmp_path / "run", recognizer=models[0], landmarks=models[1], device="cpu", resume=True)
    with pytest.raises(BadInputError, match="recogniser teacher"):
        Trainer(tiny_config(), cache, tmp_path / "other", device="cpu")


def test_push_to_hub_uploads_the_checkpoint(trained_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    class RecordingApi:
        def __init__(self, **kwargs: Any) -> None:
            calls.append(("init", kwargs))

        def create_repo(self, repo_id: str, **kwargs: Any) -> None:
            calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

        def upload_folder(self, **kwargs: Any) -> Any:
            calls.append(("upload_folder", kwargs))
            return type("Commit", (), {"commit_url": "http://hub.test/me/run/commit/1"})()

    monkeypatch.setattr("huggingface_hub.HfApi", RecordingApi)
    monkeypatch.setenv("HF_ENDPOINT", "http://hub.test")
    folder = trained_run / "checkpoint"
    card = publish.write_model_card(folder, step=LOSS_STEPS, num_faces=36, distilled_from=None)
    try:
        assert publish.push_to_hub(folder, "me/run") == "http://hub.test/me/run/commit/1"
    finally:
        card.unlink()
    assert calls[0] == ("init", {"endpoint": "http://hub.test", "token": None})
    assert calls[1] == ("create_repo", {"repo_id": "me/run", "private": False, "repo_type": "model", "exist_ok": True})
    upload = calls[2][1]
    assert upload["repo_id"] == "me/run" and Path(upload["folder_path"]) == folder
    assert set(upload["allow_patterns"]) == {"config.json", "model.safetensors", "README.md"}
    with pytest.raises(BadInputError, match="not a Hub repository id"):
        publish.push_to_hub(folder, "no-owner")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_steps_and_their_scaler_state(
    precision: str, cache: FaceCache, models: tuple[RecognizerTeacher, LandmarkTeacher], tmp_path: Path
) -> None:
    """The autocast paths (bf16; fp16 with a GradScaler) on the CPU, where torch supports both."""
    config = tiny_config(steps=2, batch_size=4, precision=precision, sample_every=100, checkpoint_every=100)
    trainer = Trainer(config, cache, tmp_path / "run", recognizer=models[0], landmarks=models[1], device="cpu")
    summary = trainer.train()
    losses = dict(summary.last_losses)
    grad_norm = losses.pop("grad_norm")
    assert summary.last_step == 2 and all(math.isfinite(value) for value in losses.values()), losses
    assert trainer.generator_scaler.is_enabled() == (precision == "fp16")
    if not math.isfinite(grad_norm):  # fp16 gradients overflowed: the scaler skipped the step and lowered its scale
        assert precision == "fp16" and trainer.generator_scaler.get_scale() < 2.0**16
    assert next(trainer.generator.parameters()).dtype == torch.float32  # master weights stay fp32
    resumed = Trainer(
        dataclasses.replace(config, steps=3), cache, tmp_path / "run", recognizer=models[0], landmarks=models[1],
        device="cpu", resume=True,
    )  # fmt: skip
    if precision == "fp16":
        assert resumed.generator_scaler.get_scale() == trainer.generator_scaler.get_scale()
    assert resumed.train().last_step == 3
