"""facemagic train on several processes (torch.distributed, DDP, gloo on the CPU): 2 processes with batch B
follow the loss trajectory of 1 process with batch 2B, through a stop and an exact resume; process 0 writes."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from tiny_models import write_arcface, write_landmarks_106

from facemagic_core.align import face_template
from facemagic_core.errors import BadInputError
from facemagic_core.generators import SwapGenerator
from facemagic_core.training import distributed
from facemagic_core.training.config import TrainConfig
from facemagic_core.training.data import FaceCache, PairSampler
from facemagic_core.training.distributed import DistributedContext, context_from_environment, shard_pairs
from facemagic_core.training.prepare import MANIFEST_VERSION, write_manifest
from facemagic_core.training.teachers import load_landmark_model, load_recognizer
from facemagic_core.training.trainer import STATE_FILE, Trainer, read_losses

REPO = Path(__file__).resolve().parents[1]
#: Faces of the synthetic cache (two shards), steps before the stop, steps in all, faces per process.
FACES, SHARD, STOP, STEPS, BATCH = 16, 8, 2, 4, 4


def write_cache(folder: Path, *, size: int = 64, dim: int = 512) -> Path:
    """A prepared cache of smooth random faces in two shards (what 'facemagic prepare' writes, without photos)."""
    folder.mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    shards = []
    for number, first in enumerate(range(0, FACES, SHARD)):
        coarse = torch.rand((SHARD, 3, 8, 8), generator=generator)
        crops = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
        tensors = {
            "crops": (crops * 255).round().to(torch.uint8),
            "embeddings": torch.randn((SHARD, dim), generator=generator),
            "landmarks_5": torch.from_numpy(np.repeat(face_template("arcface", size)[None], SHARD, 0)).float(),
            "person_ids": torch.arange(first, first + SHARD, dtype=torch.int64) // 2,  # two faces per person
        }
        name = f"shard_{number:05d}.safetensors"
        save_file(tensors, str(folder / name), metadata={"format": "facemagic-faces", "version": "1"})
        shards.append({"file": name, "faces": SHARD, "first": first, "bytes": (folder / name).stat().st_size})
    manifest = {
        "format_version": MANIFEST_VERSION,
        "image_size": size,
        "template": "arcface",
        "embedding_model": "arcface_w600k_r50",
        "detector": "yunet",
        "data_dir": str(folder),
        "layout": "per_person",
        "persons": [f"person_{n}" for n in range(FACES // 2)],
        "shards": shards,
        "records": [],
        "unreadable": [],
        "num_faces": FACES,
    }
    write_manifest(folder, manifest)
    return folder


def tiny_config(**changes: Any) -> TrainConfig:
    config = TrainConfig.from_file(REPO / "configs" / "tiny.json")
    fixed = {"log_every": 1, "sample_every": 100, "checkpoint_every": 100, "num_samples": 2}
    return dataclasses.replace(config, **{**fixed, **changes})


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ddp")
    teachers = folder / "teachers"
    teachers.mkdir()
    return {
        "folder": folder,
        "cache": write_cache(folder / "cache"),
        "recognizer": write_arcface(teachers / "arcface.onnx"),
        "landmarks": write_landmarks_106(teachers / "landmarks.onnx"),
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def torchrun_train(setup: dict[str, Path], run: Path, config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """``torchrun --nproc-per-node 2 -m facemagic_core train ...`` on the CPU (gloo), as a user starts it."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env["OMP_NUM_THREADS"] = "1"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
        "--master-port", str(_free_port()), "-m", "facemagic_core", "train", "--data", str(setup["cache"]),
        "--config", str(config), "-o", str(run), "--device", "cpu", "--recognizer", str(setup["recognizer"]),
        "--landmarks", str(setup["landmarks"]), "--models", str(setup["folder"] / "models"), *extra,
    ]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, check=False)


@pytest.fixture(scope="module")
def runs(setup: dict[str, Path]) -> dict[str, Path]:
    """One process with batch 2B for STEPS steps; two processes with batch B, stopped at STOP and resumed."""
    single = setup["folder"] / "single"
    recognizer, landmarks = load_recognizer(setup["recognizer"]), load_landmark_model(setup["landmarks"])
    cache = FaceCache(setup["cache"])
    Trainer(
        tiny_config(batch_size=2 * BATCH, steps=STEPS), cache, single, recognizer=recognizer, landmarks=landmarks,
        device="cpu",
    ).train()  # fmt: skip
    config = setup["folder"] / "ddp_config.json"
    config.write_text(tiny_config(batch_size=BATCH, steps=STEPS).to_json(), encoding="utf-8")
    ddp = setup["folder"] / "ddp"
    first = torchrun_train(setup, ddp, config, "--steps", str(STOP))
    assert first.returncode == 0, first.stderr[-3000:]
    assert f"trained on 2 processes (gloo), {BATCH} faces each per step" in first.stdout
    assert first.stdout.count("trained steps 0 -> 2") == 1  # process 0 alone reports (and writes)
    second = torchrun_train(setup, ddp, config, "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "trained steps 2 -> 4" in second.stdout
    return {"single": single, "ddp": ddp}


def test_two_processes_follow_one_process_with_the_doubled_batch(runs: dict[str, Path], setup: dict[str, Path]) -> None:
    single, ddp = read_losses(runs["single"]), read_losses(runs["ddp"])
    assert [int(row["step"]) for row in ddp] == list(range(1, STEPS + 1))  # one row per step, none twice
    for one, two in zip(single, ddp, strict=True):
        assert set(one) == set(two)
        for name in ("generator_loss", "reconstruction", "identity", "landmark", "adversarial", "grad_norm"):
            assert two[name] == pytest.approx(one[name], rel=1e-3, abs=1e-5), (int(one["step"]), name)
        assert two["discriminator_loss"] == pytest.approx(one["discriminator_loss"], rel=1e-3, abs=1e-5)
    # the losses moved: the comparison is of a real trajectory, not of four equal numbers
    assert abs(ddp[-1]["generator_loss"] - ddp[0]["generator_loss"]) > 1e-3
    # The two generators swap alike. (Their weights are compared through what they compute: a bias in front
    # of a normalisation gets a gradient of rounding noise only, which Adam turns into steps of lr either way.)
    one, two = (SwapGenerator.from_pretrained(runs[name] / "checkpoint").eval() for name in ("single", "ddp"))
    cache = FaceCache(setup["cache"])
    rows = torch.arange(FACES)
    crops = cache.read_rows("crops", rows).float() / 255 * 2 - 1
    identity = torch.nn.functional.normalize(cache.read_rows("embeddings", rows), dim=-1)
    source = identity.roll(1, 0)[:, None].expand(-1, one.cfg.num_blocks, -1)
    strength = torch.ones(FACES, one.cfg.num_blocks)
    with torch.no_grad():
        expected, _ = one(crops, source, identity, strength)
        trained, _ = two(crops, source, identity, strength)
        untrained, _ = SwapGenerator.from_config(one.cfg).eval()(crops, source, identity, strength)
    torch.testing.assert_close(trained, expected, rtol=1e-3, atol=2e-3)
    assert float((expected - untrained).abs().mean()) > 50 * float((expected - trained).abs().mean())


def test_a_distributed_run_resumes_only_with_as_many_processes(runs: dict[str, Path], setup: dict[str, Path]) -> None:
    state = torch.load(runs["ddp"] / STATE_FILE, weights_only=True)
    assert state["world_size"] == 2 and state["step"] == STEPS
    with pytest.raises(BadInputError, match=r"trained by 2 process\(es\), this resume has 1.*nproc-per-node 2"):
        Trainer(
            tiny_config(batch_size=BATCH, steps=STEPS + 1), FaceCache(setup["cache"]), runs["ddp"],
            recognizer=load_recognizer(setup["recognizer"]), landmarks=load_landmark_model(setup["landmarks"]),
            device="cpu", resume=True,
        )  # fmt: skip
    assert not list(runs["ddp"].glob("*.tmp*"))  # process 0 wrote atomically, the others wrote nothing


def test_each_process_takes_an_even_share_of_the_global_batch() -> None:
    sampler = PairSampler(
        torch.arange(FACES) // 2, batch_size=8, same_image_fraction=0.5, mix_fraction=0.5, num_blocks=3, seed=0
    )
    pairs = sampler.next_batch()
    shares = [shard_pairs(pairs, DistributedContext(rank=r, world_size=2)) for r in range(2)]
    assert [int(share.same.sum()) for share in shares] == [2, 2]  # same-image rows spread evenly
    together = torch.stack([share.target for share in shares], dim=1).reshape(-1)
    assert torch.equal(together, pairs.target)  # the shares are the global batch, no row twice, none left out
    assert shard_pairs(pairs, DistributedContext()) is pairs


def test_the_context_comes_from_torchruns_variables() -> None:
    assert context_from_environment({}) == DistributedContext()
    assert context_from_environment({"WORLD_SIZE": "1", "RANK": "0"}) == DistributedContext()
    env = {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}
    context = context_from_environment(env)
    assert (context.rank, context.world_size, context.local_rank, context.is_main) == (3, 4, 1, False)
    assert distributed.device_for(context, torch.device("cuda")) == torch.device("cuda", 1)
    assert distributed.device_for(context, torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(BadInputError, match=r"RANK='4' does not lie in 0 \.\. WORLD_SIZE - 1 = 3"):
        context_from_environment({**env, "RANK": "4"})
    with pytest.raises(BadInputError, match="MASTER_PORT is not set"):
        context_from_environment({k: v for k, v in env.items() if k != "MASTER_PORT"})
    with pytest.raises(BadInputError, match="WORLD_SIZE='two'"):
        context_from_environment({**env, "WORLD_SIZE": "two"})
    values = {"generator_loss": 1.5}
    assert distributed.mean_over_processes(values, ["generator_loss"], DistributedContext(), torch.device("cpu")) == {
        "generator_loss": 1.5
    }
    assert json.loads(json.dumps(dataclasses.asdict(context)))["backend"] == ""
