"""The increment-vs-replacement switch of the generator, and the torch teachers of training by name."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from conftest import SHARED
from tiny_models import tiny_facemagic_config

from facemagic_core.errors import BadInputError
from facemagic_core.generators.config import GeneratorConfig
from facemagic_core.generators.network import SwapGenerator

FACEAPI = SHARED / "models" / "faceapi"


def _inputs(cfg: GeneratorConfig, same: bool) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(1)
    image = torch.rand(2, 3, cfg.image_size, cfg.image_size, generator=generator) * 2 - 1
    target = torch.nn.functional.normalize(torch.randn(2, cfg.id_dim, generator=generator), dim=-1)
    source = (
        target[:, None].expand(2, cfg.num_blocks, cfg.id_dim).clone()
        if same
        else torch.nn.functional.normalize(torch.randn(2, cfg.num_blocks, cfg.id_dim, generator=generator), dim=-1)
    )
    return image, source, target, torch.ones(2, cfg.num_blocks)


def _block_inputs(model: SwapGenerator) -> list[torch.Tensor]:
    """What every Style Mix Block receives and returns for one forward pass."""
    seen: list[torch.Tensor] = []
    for block in model.blocks:  # type: ignore[attr-defined]
        block.register_forward_hook(lambda _m, args, out: seen.extend([args[0], out]))
    return seen


def test_increment_is_neutral_for_the_same_person_and_replacement_is_not() -> None:
    base = dataclasses.replace(tiny_facemagic_config(), id_dim=128)
    assert base.injection == "increment"
    for injection, neutral in (("increment", True), ("replace", False)):
        cfg = dataclasses.replace(base, injection=injection)
        torch.manual_seed(0)
        model = SwapGenerator.from_config(cfg).eval()
        seen = _block_inputs(model)
        with torch.no_grad():
            model(*_inputs(cfg, same=True))
        pairs = list(zip(seen[::2], seen[1::2], strict=True))
        assert len(pairs) == cfg.num_blocks
        assert all(torch.equal(before, after) for before, after in pairs) is neutral


def test_replacement_normalises_the_features_and_the_increment_does_not() -> None:
    """Plain AdaIN imposes the style's statistics whatever the features had (scale-invariant in h)."""
    for injection, invariant in (("replace", True), ("increment", False)):
        cfg = dataclasses.replace(tiny_facemagic_config(), injection=injection, refine=False)
        torch.manual_seed(0)
        block = SwapGenerator.from_config(cfg).blocks[0]  # type: ignore[index]
        h = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(2)) + 0.5
        _, source, target, strength = _inputs(cfg, same=False)
        with torch.no_grad():
            once = block(h, source[:, 0], target, strength[:, 0])
            thrice = block(3 * h, source[:, 0], target, strength[:, 0])
        assert torch.allclose(once, thrice, atol=1e-4) is invariant


def test_replacement_ignores_the_target_identity_at_full_strength() -> None:
    cfg = dataclasses.replace(tiny_facemagic_config(), injection="replace", id_concat=False)
    torch.manual_seed(0)
    model = SwapGenerator.from_config(cfg).eval()
    image, source, target, strength = _inputs(cfg, same=False)
    other_target = torch.nn.functional.normalize(torch.randn_like(target), dim=-1)
    with torch.no_grad():
        first, _ = model(image, source, target, strength)
        second, _ = model(image, source, other_target, strength)
    torch.testing.assert_close(first, second)


def test_injection_is_saved_with_the_config_and_checked(tmp_path: Path) -> None:
    cfg = dataclasses.replace(tiny_facemagic_config(), injection="replace")
    assert GeneratorConfig.from_json(cfg.to_json()).injection == "replace"
    model = SwapGenerator.from_config(cfg)
    loaded = SwapGenerator.from_pretrained(model.save_pretrained(tmp_path / "g"))
    assert loaded.cfg.injection == "replace"
    with pytest.raises(BadInputError, match="unknown injection"):
        dataclasses.replace(cfg, injection="swap")


def test_torch_teachers_by_name(tmp_path: Path) -> None:
    if not (FACEAPI / "face_landmark_68_model-weights_manifest.json").is_file():
        pytest.skip(f"{FACEAPI} is absent")
    from facemagic_core.dlib_resnet import DlibRecognizer
    from facemagic_core.landmarks68 import Landmarker68
    from facemagic_core.training.teachers import load_identity_teacher, load_landmark_teacher

    recognizer = load_identity_teacher(str(FACEAPI / "face_recognition_model-weights_manifest.json"), tmp_path)
    landmarks = load_landmark_teacher(str(FACEAPI / "face_landmark_68_model-weights_manifest.json"), tmp_path)
    assert isinstance(recognizer, DlibRecognizer) and isinstance(landmarks, Landmarker68)
    crops = torch.rand(2, 3, 64, 64, requires_grad=True)
    embedding = recognizer.embed_crops(crops, template="arcface")
    points = landmarks.locate_crops(crops, template="arcface")
    assert embedding.shape == (2, 128) and points.shape == (2, 68, 2)
    (embedding.sum() + points.sum()).backward()
    assert crops.grad is not None and float(crops.grad.abs().sum()) > 0
