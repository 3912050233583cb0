"""Loss terms, the discriminator and the pair sampler, with numbers worked out by hand."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facemagic_core.errors import BadInputError
from facemagic_core.training import losses
from facemagic_core.training.config import DiscriminatorConfig, TrainConfig
from facemagic_core.training.data import PairSampler
from facemagic_core.training.discriminator import MultiScaleDiscriminator, logits_of


def _unit(*rows: list[float]) -> torch.Tensor:
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def test_ssim_is_one_for_equal_images_and_drops_with_noise() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 32, 32, generator=generator)
    torch.testing.assert_close(losses.ssim(images, images), torch.ones(2))
    noisy = (images + 0.3 * torch.randn(images.shape, generator=generator)).clamp(0, 1)
    assert float(losses.ssim(images, noisy).max()) < 0.8
    assert float(losses.structural_loss(images, images)) == pytest.approx(0.0, abs=1e-6)
    # against an independent computation: OpenCV's Gaussian blur (11 px, sigma 1.5), valid region only
    a, b = images[0].double().numpy(), noisy[0].double().numpy()

    def blur(x: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(x, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)[5:-5, 5:-5]

    maps = []
    for channel in range(3):
        x, y = a[channel], b[channel]
        mx, my = blur(x), blur(y)
        vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
        c1, c2 = losses.SSIM_C1, losses.SSIM_C2
        maps.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    assert float(losses.ssim(images, noisy)[0]) == pytest.approx(float(np.mean(maps)), abs=1e-4)


def test_reconstruction_terms_use_only_the_selected_rows() -> None:
    result = torch.zeros(3, 3, 8, 8)
    target = torch.stack([torch.zeros(3, 8, 8), torch.full((3, 8, 8), 0.5), torch.ones(3, 8, 8)])
    rows = torch.tensor([True, True, False])
    assert float(losses.l1_loss(result, target, rows)) == pytest.approx(0.25)
    assert float(losses.l1_loss(result, target, torch.zeros(3, dtype=torch.bool))) == 0.0


def test_identity_loss_weighs_blocks_by_their_count() -> None:
    person_a, person_b = _unit([1.0, 0.0, 0.0]), _unit([0.0, 1.0, 0.0])
    sources = torch.stack([person_a[0], person_b[0], person_b[0]])[None]  # 1 coarse block A, 2 fine blocks B
    assert float(losses.identity_loss(person_a, sources)) == pytest.approx(2 / 3)
    assert float(losses.identity_loss(person_b, sources)) == pytest.approx(1 / 3)
    halfway = F.normalize(person_a + 2 * person_b, dim=-1)
    assert float(losses.identity_loss(halfway, sources)) < 1 / 3


def test_relative_identity_loss_compares_similarity_before_and_after() -> None:
    target = _unit([1.0, 0.0])
    source = _unit([0.6, 0.8])[:, None, :]  # cos(source, target) = 0.6: a look-alike
    collapsed = target  # the swap did nothing: cos(result, target) = 1
    kept_distance = _unit([0.6, -0.8])  # as far from the target as the source: cos = 0.6
    pushed_away = _unit([0.0, 1.0])  # cos = 0
    assert float(losses.relative_identity_loss(collapsed, source, target)) == pytest.approx(0.4)
    assert float(losses.relative_identity_loss(kept_distance, source, target)) == pytest.approx(0.0, abs=1e-6)
    assert float(losses.relative_identity_loss(pushed_away, source, target)) == pytest.approx(0.6)
    assert float(losses.relative_identity_loss(pushed_away, source, target, mode="hinge")) == 0.0
    assert float(losses.relative_identity_loss(collapsed, source, target, mode="hinge")) == pytest.approx(0.4)


def test_hinge_losses_and_feature_matching() -> None:
    real = [torch.full((2, 1, 4, 4), 2.0)]
    fake = [torch.full((2, 1, 4, 4), -0.5)]
    # relu(1 - 2) = 0 for real, relu(1 - 0.5) = 0.5 for fake
    assert float(losses.discriminator_hinge_loss(real, fake)) == pytest.approx(0.5)
    assert float(losses.generator_hinge_loss(fake)) == pytest.approx(0.5)
    features = [[torch.ones(1, 2, 2, 2), torch.zeros(1, 1, 2, 2)]]
    moved = [[torch.full((1, 2, 2, 2), 1.5), torch.ones(1, 1, 2, 2)]]  # logits (last) are not matched
    assert float(losses.feature_matching_loss(moved, features)) == pytest.approx(0.5)
    mask = torch.full((1, 1, 4, 4), 0.5)
    assert float(losses.mask_loss(mask, torch.ones(1, 1, 4, 4))) == pytest.approx(math.log(2), rel=1e-5)


def test_multi_scale_discriminator_shapes_and_size_check() -> None:
    cfg = DiscriminatorConfig(scales=2, channels=4, layers=2, max_channels=8)
    discriminator = MultiScaleDiscriminator(cfg, 32)
    outputs = discriminator(torch.rand(3, 3, 32, 32))
    assert [tuple(logits.shape) for logits in logits_of(outputs)] == [(3, 1, 8, 8), (3, 1, 4, 4)]
    assert [tuple(feature.shape[1:2]) for feature in outputs[0]] == [(4,), (8,), (8,), (1,)]
    with pytest.raises(BadInputError, match="too small"):
        MultiScaleDiscriminator(DiscriminatorConfig(scales=3, layers=4), 32)


def test_pair_sampler_rows_and_reproducibility() -> None:
    person_ids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, -1, -1])
    kwargs = {"batch_size": 8, "same_image_fraction": 0.25, "mix_fraction": 0.5, "num_blocks": 3, "seed": 7}
    sampler = PairSampler(person_ids, **kwargs)  # type: ignore[arg-type]
    twin = PairSampler(person_ids, **kwargs)  # type: ignore[arg-type]
    seen = []
    for _ in range(5):
        pairs, again = sampler.next_batch(), twin.next_batch()
        assert all(torch.equal(a, b) for a, b in zip(vars(pairs).values(), vars(again).values(), strict=True))
        assert pairs.same.tolist() == [True] * 2 + [False] * 6
        assert torch.equal(pairs.source[:2], pairs.target[:2])
        swap = ~pairs.same
        assert bool((pairs.source[swap] != pairs.target[swap]).all())
        labelled = swap & (person_ids[pairs.target] >= 0)
        assert bool((person_ids[pairs.source[labelled]] != person_ids[pairs.target[labelled]]).all())
        # rows 2..4 are mixed (3 of the 6 swap rows): a split inside 1..K-1; the others use every block
        assert pairs.split[2:5].ge(1).all() and pairs.split[2:5].le(2).all()
        assert pairs.split[5:].eq(3).all() and pairs.split[:2].eq(3).all()
        seen.append(pairs.target)
    order = torch.cat(seen)[:10]
    assert sorted(order.tolist()) == list(range(10))  # an epoch visits every face once
    state = sampler.state_dict()
    following = sampler.next_batch()
    restored = PairSampler(person_ids, **kwargs)  # type: ignore[arg-type]
    restored.load_state_dict(state)
    assert torch.equal(restored.next_batch().source, following.source)


def test_train_config_round_trip_and_unknown_keys() -> None:
    config = TrainConfig()
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(BadInputError, match="unknown training config keys"):
        TrainConfig.from_dict({**config.to_dict(), "learning_rat": 1})
    with pytest.raises(BadInputError, match="unknown keys"):
        TrainConfig.from_dict({"losses": {"identiti": 1.0}})
    with pytest.raises(BadInputError, match="same_image_fraction"):
        TrainConfig(same_image_fraction=1.5)
    with pytest.raises(BadInputError, match="grad_clip"):
        TrainConfig(grad_clip=-1.0)  # a negative clip used to switch clipping off without a word
    with pytest.raises(BadInputError, match="betas"):
        TrainConfig.from_dict({**config.to_dict(), "betas": [0.9, 1.5]})
