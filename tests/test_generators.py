"""Native generators: exact neutrality of the style delta, per-block mixing, files, ONNX export, precision, runner."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from facemagic_core.errors import (
    BadInputError,
    FaceMagicError,
    IncompatibleIdentityError,
    ModelIntegrityError,
    ModelNotFoundError,
)
from facemagic_core.generators import (
    FaceMagicGenerator,
    GeneratorConfig,
    InswapperGenerator,
    StyleMixBlock,
    SwapGenerator,
    SwapModel,
    TorchSwapper,
    split_woven,
    swap_woven,
    weave_woven,
)
from facemagic_core.generators.network import CONFIG_NAME, WEIGHTS_NAME

TINY = {"image_size": 32, "channels": 8, "max_channels": 16, "style_hidden": 16, "num_downsamples": 2}
FACEMAGIC_CONFIGS = {
    "full": GeneratorConfig(**TINY, blocks_per_scale=(2, 1, 1)),
    "plain": GeneratorConfig(
        **{**TINY, "style_hidden": 0},
        blocks_per_scale=(1, 2),
        refine=False,
        skips=False,
        id_concat=False,
        mask_head=False,
    ),
    "fine_only": GeneratorConfig(
        **{**TINY, "num_downsamples": 1}, blocks_per_scale=(0, 3), value_range="zero_one", mask_head=False
    ),
}
INSWAPPER_TINY = GeneratorConfig.inswapper_layout(channels=4, image_size=32, num_blocks=3)
#: The configs the package ships (configs/*.json) and the default one, at their real widths and block layouts; only
#: the crop is shrunk to 32 px (the blocks' neutrality does not depend on it, and 256 px costs ~3 s a forward on a CPU).
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
SHIPPED_CONFIGS = {
    "default": dataclasses.replace(GeneratorConfig(), image_size=32),
    **{
        f"configs/{path.name}": dataclasses.replace(
            GeneratorConfig.from_dict(json.loads(path.read_text())["generator"]), image_size=32
        )
        for path in sorted(CONFIG_DIR.glob("*.json"))
    },
}
NEUTRALITY_CONFIGS = {**FACEMAGIC_CONFIGS, **SHIPPED_CONFIGS}


def unit(*shape: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def build(cfg: GeneratorConfig, seed: int = 0) -> SwapGenerator:
    torch.manual_seed(seed)
    module = SwapGenerator.from_config(cfg).eval()
    with torch.no_grad():  # make every style map matter (default init gives small but non-zero styles)
        for block in module.blocks:
            for parameter in block.parameters():
                parameter.mul_(3.0)
        if isinstance(module, InswapperGenerator):
            module.emap.copy_(torch.randn(cfg.id_dim, cfg.id_dim) / cfg.id_dim**0.5)
    return module


def inputs(cfg: GeneratorConfig, batch: int = 2, seed: int = 1) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, 3, cfg.image_size, cfg.image_size, generator=generator)
    if cfg.value_range == "minus_one_one":
        image = image * 2 - 1
    source = unit(batch, cfg.num_blocks, cfg.id_dim, seed=seed + 1)
    target = unit(batch, cfg.id_dim, seed=seed + 2)
    strength = torch.rand(batch, cfg.num_blocks, generator=generator) * 0.5 + 0.5
    return image, source, target, strength


def record_blocks(module: SwapGenerator) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], list[object]]:
    """Forward hooks on every injection block: [(input feature map, output feature map)] in call order."""
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    handles = [
        block.register_forward_hook(lambda _m, args, out: seen.append((args[0].detach(), out.detach())))
        for block in module.blocks
    ]
    return seen, handles


# ---------------------------------------------------------------------------------------------
# Config


def test_config_round_trips_through_json_and_rejects_bad_values() -> None:
    cfg = FACEMAGIC_CONFIGS["full"]
    assert GeneratorConfig.from_json(cfg.to_json()) == cfg
    assert cfg.num_blocks == 4 and cfg.block_scales() == [0, 0, 1, 2]
    assert json.loads(cfg.to_json())["blocks_per_scale"] == [2, 1, 1]
    with pytest.raises(BadInputError, match="blocks_per_scale has 4 scales"):
        GeneratorConfig(**TINY, blocks_per_scale=(1, 1, 1, 1))
    with pytest.raises(BadInputError, match="unknown generator arch"):
        GeneratorConfig(arch="stylegan")  # type: ignore[arg-type]
    with pytest.raises(BadInputError, match="unknown generator config keys"):
        GeneratorConfig.from_dict({"arch": "facemagic", "colour": "red"})
    with pytest.raises(BadInputError, match="inswapper layout"):
        GeneratorConfig(arch="inswapper", blocks_per_scale=(2, 2))


def test_real_inswapper_layout_has_138_3_million_parameters_without_allocating() -> None:
    module = SwapGenerator.from_config(GeneratorConfig.inswapper_layout(), device="meta")
    assert isinstance(module, InswapperGenerator)
    assert module.stem.weight.is_meta
    count = module.num_parameters()
    assert abs(count - 138.3e6) / 138.3e6 < 0.005, count
    assert count == 138_292_739  # encoder 6.21 M + 6 blocks x 20.98 M + decoder 6.21 M
    assert tuple(module.emap.shape) == (512, 512)
    assert {name for name, _ in module.named_children()} >= {"stem", "conv1", "down1", "down2", "blocks", "to_rgb"}


# ---------------------------------------------------------------------------------------------
# The style delta: exact neutrality, per-block mixing


def test_every_shipped_config_is_a_facemagic_network() -> None:
    assert len(SHIPPED_CONFIGS) >= 3  # the default and at least configs/base_256.json and configs/tiny.json
    assert all(cfg.arch == "facemagic" for cfg in SHIPPED_CONFIGS.values())


@pytest.mark.parametrize("name", sorted(NEUTRALITY_CONFIGS))
def test_each_style_mix_block_is_exactly_the_identity_for_a_neutral_delta(name: str) -> None:
    cfg = NEUTRALITY_CONFIGS[name]
    module = build(cfg)
    image, source, target, strength = inputs(cfg)
    seen, handles = record_blocks(module)
    with torch.no_grad():
        module(image, target.unsqueeze(1).expand_as(source).clone(), target, strength)  # G_src == G_tgt
        same = list(seen)
        seen.clear()
        module(image, source, target, torch.zeros_like(strength))  # w == 0
        zero = list(seen)
        seen.clear()
        module(image, source, target, strength)  # a real delta
        mixed = list(seen)
    for handle in handles:
        handle.remove()
    assert len(same) == len(zero) == len(mixed) == cfg.num_blocks
    for block_in, block_out in same + zero:
        assert_close(block_out, block_in, rtol=0, atol=0)  # bit-exact, not just close
    for block_in, block_out in mixed:
        assert (block_out - block_in).abs().max() > 1e-3


@pytest.mark.parametrize("name", sorted(NEUTRALITY_CONFIGS))
def test_neutral_delta_gives_the_same_result_for_any_source(name: str) -> None:
    cfg = NEUTRALITY_CONFIGS[name]
    module = build(cfg)
    image, source, target, strength = inputs(cfg)
    with torch.no_grad():
        rgb_zero, mask_zero = module(image, source, target, torch.zeros_like(strength))
        rgb_same, mask_same = module(image, target.unsqueeze(1).expand_as(source), target, strength)
        rgb_swap, _ = module(image, source, target, strength)
    assert_close(rgb_zero, rgb_same, rtol=0, atol=0)
    assert rgb_zero.shape == (2, 3, cfg.image_size, cfg.image_size)
    assert float(rgb_zero.min()) >= 0 and float(rgb_zero.max()) <= 1
    assert (rgb_swap - rgb_zero).abs().max() > 1e-4
    if cfg.mask_head:
        assert mask_zero is not None and mask_same is not None and mask_zero.shape == (2, 1, 32, 32)
    else:
        assert mask_zero is None


@pytest.mark.parametrize("name", ["plain", "full"])
def test_style_mix_block_applies_the_design_formula(name: str) -> None:
    """``h' = exp(log_sigma_diff) * (h - mu(h)) + mu(h) + mu_diff``, plus the refinement of h' - h with cfg.refine."""
    cfg = FACEMAGIC_CONFIGS[name]
    block = StyleMixBlock(8, cfg).eval()
    h = torch.randn(2, 8, 5, 5)
    source, target = unit(2, 512, seed=3), unit(2, 512, seed=4)
    strength = torch.tensor([0.3, 1.0])
    with torch.no_grad():
        out = block(h, source, target, strength)
        mu_s, log_s = block.style(source).chunk(2, dim=1)
        mu_t, log_t = block.style(target).chunk(2, dim=1)
    mu_diff = (strength[:, None] * (mu_s - mu_t))[:, :, None, None]
    log_sigma_diff = (strength[:, None] * (log_s - log_t))[:, :, None, None]
    mean = h.mean(dim=(2, 3), keepdim=True)
    expected = torch.exp(log_sigma_diff) * (h - mean) + mean + mu_diff
    if cfg.refine:
        assert block.refine1 is not None and block.refine2 is not None
        with torch.no_grad():
            expected = expected + block.refine2(F.leaky_relu(block.refine1(expected - h), cfg.negative_slope))
    assert (expected - h).abs().max() > 1e-2  # a real style change
    assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_changing_only_the_fine_blocks_leaves_the_coarse_blocks_untouched() -> None:
    cfg = FACEMAGIC_CONFIGS["full"]  # blocks 0, 1 at the bottleneck; 2 and 3 at finer scales
    module = build(cfg)
    image, source, target, strength = inputs(cfg)
    fine = source.clone()
    fine[:, 2:] = unit(2, 2, 512, seed=9)
    seen, handles = record_blocks(module)
    with torch.no_grad():
        rgb_a, _ = module(image, source, target, strength)
        first = list(seen)
        seen.clear()
        rgb_b, _ = module(image, fine, target, strength)
        second = list(seen)
    for handle in handles:
        handle.remove()
    for k in (0, 1):
        assert_close(second[k][1], first[k][1], rtol=0, atol=0)
    for k in (2, 3):
        assert (second[k][1] - first[k][1]).abs().max() > 1e-3
    assert (rgb_b - rgb_a).abs().max() > 1e-4


def test_inswapper_blocks_before_a_changed_identity_are_untouched() -> None:
    module = build(INSWAPPER_TINY)  # three blocks, all at the bottleneck
    image, source, target, strength = inputs(INSWAPPER_TINY)
    last = source.clone()
    last[:, 2] = unit(2, 512, seed=12)
    seen, handles = record_blocks(module)
    with torch.no_grad():
        module(image, source, target, strength)
        first = list(seen)
        seen.clear()
        module(image, last, target, strength)
    for handle in handles:
        handle.remove()
    for k in (0, 1):
        assert_close(seen[k][1], first[k][1], rtol=0, atol=0)
    assert (seen[2][1] - first[2][1]).abs().max() > 1e-3


def test_inswapper_strength_zero_feeds_the_targets_own_identity_per_block() -> None:
    module = build(INSWAPPER_TINY)
    image, source, target, strength = inputs(INSWAPPER_TINY)
    with torch.no_grad():
        zero, mask = module(image, source, target, torch.zeros_like(strength))
        own, _ = module(image, target.unsqueeze(1).expand_as(source), target, torch.ones_like(strength))
        latents = module.compute_latents(source, target, strength)
        # block 0 alone takes another identity: only the latent of block 0 changes
        other = source.clone()
        other[:, 0] = unit(2, 512, seed=11)
        changed = module.compute_latents(other, target, strength)
    assert mask is None
    assert_close(zero, own, rtol=1e-6, atol=1e-6)
    mixed = F.normalize(torch.lerp(target[:, None], source, strength[..., None]), dim=-1)
    assert_close(latents, F.normalize(mixed @ module.emap, dim=-1))
    assert (changed[:, 0] - latents[:, 0]).abs().max() > 1e-3
    assert_close(changed[:, 1:], latents[:, 1:], rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# Files and ONNX export


@pytest.mark.parametrize("cfg", [FACEMAGIC_CONFIGS["full"], INSWAPPER_TINY], ids=["facemagic", "inswapper"])
def test_save_pretrained_and_from_pretrained_round_trip(cfg: GeneratorConfig, tmp_path: Path) -> None:
    module = build(cfg, seed=5)
    folder = module.save_pretrained(tmp_path / "model")
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]  # no partial files left
    loaded = SwapGenerator.from_pretrained(folder)
    assert type(loaded) is type(module) and loaded.cfg == cfg
    for name, tensor in module.state_dict().items():
        assert_close(loaded.state_dict()[name], tensor, rtol=0, atol=0)
    args = inputs(cfg)
    with torch.no_grad():
        assert_close(loaded(*args)[0], module(*args)[0], rtol=0, atol=0)
    with pytest.raises(BadInputError, match="holds a"):
        (InswapperGenerator if cfg.arch == "facemagic" else FaceMagicGenerator).from_pretrained(folder)


def test_from_pretrained_downloads_config_and_weights_from_a_hub_repo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tests/hub_server.py's fake Hub (the real huggingface_hub client, no network)."""
    from hub_server import FakeHub
    from huggingface_hub import constants

    module = build(FACEMAGIC_CONFIGS["plain"], seed=6)
    repo = module.save_pretrained(tmp_path / "repo")
    with FakeHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            server.add_file("someone/tiny-facemagic", name, (repo / name).read_bytes(), lfs=name == WEIGHTS_NAME)
        server.add_file("someone/tiny-facemagic", "README.md", b"not downloaded", lfs=False)
        server.add_file("someone/not-native", "model.onnx", b"onnx")
        loaded = SwapGenerator.from_pretrained("someone/tiny-facemagic", local_dir=tmp_path / "local")
        assert server.count(path_contains="README") == 0
        with pytest.raises(ModelNotFoundError, match="not a native FaceMagic generator") as error:
            SwapGenerator.from_pretrained("someone/not-native", local_dir=tmp_path / "other")
        assert error.value.fix
    assert sorted(p.name for p in (tmp_path / "local").iterdir() if not p.name.startswith(".")) == [
        CONFIG_NAME,
        WEIGHTS_NAME,
    ]
    args = inputs(module.cfg)
    with torch.no_grad():
        assert_close(loaded(*args)[0], module(*args)[0], rtol=0, atol=0)
    with pytest.raises(ModelNotFoundError, match="not a Hub repository id"):
        SwapGenerator.from_pretrained(tmp_path / "no" / "such" / "folder")


def test_corrupt_or_mismatched_weights_raise_model_integrity_error(tmp_path: Path) -> None:
    module = build(FACEMAGIC_CONFIGS["plain"])
    folder = module.save_pretrained(tmp_path / "model")
    weights = folder / WEIGHTS_NAME
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])  # truncated download
    with pytest.raises(ModelIntegrityError, match="truncated or corrupt") as error:
        SwapGenerator.from_pretrained(folder)
    assert str(weights) in str(error.value)
    weights.write_bytes(data)
    (folder / CONFIG_NAME).write_text("{not json")
    with pytest.raises(ModelIntegrityError, match="config"):
        SwapGenerator.from_pretrained(folder)
    other = GeneratorConfig(**{**TINY, "channels": 4}, blocks_per_scale=(1, 2), refine=False, skips=False)
    (folder / CONFIG_NAME).write_text(other.to_json())
    with pytest.raises(ModelIntegrityError, match="do not fit"):
        SwapGenerator.from_pretrained(folder)


@pytest.mark.parametrize("cfg", [FACEMAGIC_CONFIGS["full"], INSWAPPER_TINY], ids=["facemagic", "inswapper"])
def test_onnx_export_matches_torch_with_a_dynamic_batch(cfg: GeneratorConfig, tmp_path: Path) -> None:
    import onnxruntime

    module = build(cfg, seed=7)
    path = module.export_onnx(tmp_path / "model.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [item.name for item in session.get_inputs()] == ["target_image", "source", "target", "strength"]
    args = inputs(cfg, batch=3, seed=8)
    outputs = session.run(None, {item.name: a.numpy() for item, a in zip(session.get_inputs(), args, strict=True)})
    with torch.no_grad():
        rgb, mask = module(*args)
    assert outputs[0].shape == (3, 3, 32, 32)
    assert_close(torch.from_numpy(outputs[0]), rgb, rtol=1e-4, atol=1e-4)
    if mask is not None:
        assert_close(torch.from_numpy(outputs[1]), mask, rtol=1e-4, atol=1e-4)
    else:
        assert len(outputs) == 1


# ---------------------------------------------------------------------------------------------
# Precision


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_precision_runs_and_keeps_exact_neutrality(dtype: torch.dtype) -> None:
    cfg = FACEMAGIC_CONFIGS["full"]
    reference = build(cfg)
    module = build(cfg).to(dtype)
    image, source, target, strength = inputs(cfg)
    seen, handles = record_blocks(module)
    try:
        with torch.no_grad():
            half = module(image.to(dtype), source.to(dtype), target.to(dtype), strength.to(dtype))[0]
            seen.clear()
            module(image.to(dtype), target.to(dtype)[:, None].expand_as(source), target.to(dtype), strength.to(dtype))
    except RuntimeError as error:
        if "not implemented" in str(error).lower():
            pytest.skip(f"{dtype} convolutions are not implemented on this CPU build: {error}")
        raise
    finally:
        for handle in handles:
            handle.remove()
    with torch.no_grad():
        full = reference(image, source, target, strength)[0]
    assert half.dtype == dtype
    assert_close(half.float(), full, rtol=0, atol=0.1)
    assert float((half.float() - full).abs().mean()) < 0.02
    for block_in, block_out in seen:
        assert_close(block_out, block_in, rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
@pytest.mark.parametrize("cfg", [FACEMAGIC_CONFIGS["full"], INSWAPPER_TINY], ids=["facemagic", "inswapper"])
def test_auto_dtype_on_cuda_is_half_precision_and_matches_fp32(cfg: GeneratorConfig) -> None:
    half = TorchSwapper(build(cfg), device="cuda", dtype="auto")
    full = TorchSwapper(build(cfg), device="cpu", dtype="fp32")
    assert half.dtype in (torch.float16, torch.bfloat16) and half.device.type == "cuda"
    image, source, target, strength = inputs(cfg)
    crops = (image + 1) / 2 if cfg.value_range == "minus_one_one" else image
    out = half.swap(crops.cuda(), source.cuda(), target.cuda(), strength.cuda())
    assert out.images.device.type == "cuda" and out.images.dtype == torch.float32
    reference = full.swap(crops, source, target, strength).images
    assert float((out.images.cpu() - reference).abs().mean()) < 0.02
    neutral = half.swap(crops.cuda(), source.cuda(), target.cuda(), torch.zeros_like(strength).cuda()).images
    own = half.swap(crops.cuda(), target[:, None].expand_as(source).cuda(), target.cuda(), strength.cuda()).images
    assert_close(neutral, own, rtol=0, atol=0 if cfg.arch == "facemagic" else 2e-3)


def test_torch_swapper_with_explicit_bf16_on_cpu() -> None:
    cfg = INSWAPPER_TINY
    swapper = TorchSwapper(build(cfg), device="cpu", dtype=torch.bfloat16)
    full = TorchSwapper(build(cfg), device="cpu", dtype=torch.float32)
    image, source, target, strength = inputs(cfg)
    half = swapper.swap(image, source, target, strength)
    assert half.images.dtype == torch.float32 and swapper.dtype == torch.bfloat16
    assert float((half.images - full.swap(image, source, target, strength).images).abs().mean()) < 0.02


# ---------------------------------------------------------------------------------------------
# The runner: value range, checks, out-of-memory halving


def test_torch_swapper_converts_the_value_range_and_follows_the_protocol() -> None:
    cfg = FACEMAGIC_CONFIGS["full"]  # takes [-1, 1]
    module = build(cfg)
    swapper = TorchSwapper(module, name="tiny")
    assert isinstance(swapper, SwapModel)
    assert (swapper.input_size, swapper.num_blocks, swapper.template) == (32, 4, "arcface")
    crops = torch.rand(3, 3, 32, 32)
    before = crops.clone()
    _, source, target, strength = inputs(cfg, batch=3)
    seen: list[torch.Tensor] = []
    handle = module.stem.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
    out = swapper.swap(crops, source, target, strength)
    handle.remove()
    assert_close(seen[0], crops * 2 - 1)
    assert_close(crops, before, rtol=0, atol=0)  # inputs never modified
    with torch.no_grad():
        expected = module(crops * 2 - 1, source, target, strength)
    assert_close(out.images, expected[0])
    assert out.mask is not None and out.mask.shape == (3, 1, 32, 32)
    # one identity row and one strength per face broadcast to every block
    single = swapper.swap(crops, source[:, :1], target, strength[:, 0])
    with torch.no_grad():
        broadcast = module(crops * 2 - 1, source[:, :1].expand_as(source), target, strength[:, :1].expand_as(strength))
    assert_close(single.images, broadcast[0])


def test_wrong_identities_and_crops_raise_clear_errors() -> None:
    cfg = FACEMAGIC_CONFIGS["full"]
    swapper = TorchSwapper(build(cfg), name="tiny")
    crops, source, target, strength = inputs(cfg)
    crops = (crops + 1) / 2
    with pytest.raises(IncompatibleIdentityError, match="256 numbers per embedding but tiny takes 512") as error:
        swapper.swap(crops, torch.randn(2, 4, 256), target, strength)
    assert error.value.fix and "recogniser" in error.value.fix
    with pytest.raises(IncompatibleIdentityError, match="3 block rows but tiny has 4"):
        swapper.swap(crops, source[:, :3], target, strength)
    with pytest.raises(BadInputError, match="takes 32x32 crops, got 64x64"):
        swapper.swap(torch.rand(2, 3, 64, 64), source, target, strength)
    with pytest.raises(BadInputError, match=r"strength must lie in \[0, 1\]"):
        swapper.swap(crops, source, target, strength + 1)
    with pytest.raises(BadInputError, match="NaN"):
        swapper.swap(crops, source * float("nan"), target, strength)
    with pytest.raises(FaceMagicError, match="target identity must be"):
        swapper.swap(crops, source, target[:1], strength)


class _OutOfMemoryAbove(FaceMagicGenerator):
    """Raises CUDA's out-of-memory error for batches larger than ``limit``."""

    limit = 2
    calls: list[int]

    def forward(self, image, source, target, strength):  # type: ignore[no-untyped-def]
        self.calls.append(image.shape[0])
        if image.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().forward(image, source, target, strength)


def test_out_of_memory_halves_the_chunk_and_keeps_the_result(caplog: pytest.LogCaptureFixture) -> None:
    cfg = FACEMAGIC_CONFIGS["plain"]
    module = _OutOfMemoryAbove(cfg).eval()
    module.load_state_dict(build(cfg).state_dict())
    module.calls = []
    crops, source, target, strength = inputs(cfg, batch=5)
    crops = (crops + 1) / 2
    swapper = TorchSwapper(module, chunk_size=8)
    with caplog.at_level("WARNING"):
        out = swapper.swap(crops, source, target, strength)
    assert module.calls == [5, 4, 2, 2, 1]
    assert "out of memory" in caplog.text and "2 faces a call" in caplog.text
    with torch.no_grad():
        expected = FaceMagicGenerator.forward(module, crops * 2 - 1, source, target, strength)[0]
    assert_close(out.images, expected, rtol=1e-5, atol=1e-5)
    module.limit = 0
    with pytest.raises(BadInputError, match="out of memory"):
        swapper.swap(crops, source, target, strength)


# ---------------------------------------------------------------------------------------------
# Woven swapping


@pytest.mark.parametrize("factor", [1, 2, 3])
def test_weaving_is_the_exact_inverse_of_splitting(factor: int) -> None:
    images = torch.rand(2, 3, 32 * factor, 32 * factor)
    parts = split_woven(images, factor)
    assert parts.shape == (factor * factor * 2, 3, 32, 32)
    for i in range(factor):
        for j in range(factor):
            for b in range(2):
                assert torch.equal(parts[(i * factor + j) * 2 + b], images[b, :, i::factor, j::factor])
    assert torch.equal(weave_woven(parts, factor), images)


def test_swap_woven_swaps_every_interleaved_sub_image() -> None:
    cfg = INSWAPPER_TINY
    swapper = TorchSwapper(build(cfg), name="tiny inswapper")
    image, source, target, strength = inputs(cfg)
    assert_close(
        swap_woven(swapper, image, source, target, strength, factor=1).images,
        swapper.swap(image, source, target, strength).images,
        rtol=0,
        atol=0,
    )
    large = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    woven = swap_woven(swapper, large, source, target, strength, factor=2)
    assert woven.images.shape == (2, 3, 64, 64) and woven.mask is None
    for i in range(2):
        for j in range(2):
            single = swapper.swap(large[:, :, i::2, j::2].contiguous(), source, target, strength).images
            assert_close(woven.images[:, :, i::2, j::2], single, rtol=1e-5, atol=1e-5)
    with pytest.raises(BadInputError, match="takes 64x64 crops"):
        swap_woven(swapper, image, source, target, strength, factor=2)
    masked = TorchSwapper(build(FACEMAGIC_CONFIGS["full"]))
    _, source, target, strength = inputs(FACEMAGIC_CONFIGS["full"])
    woven = swap_woven(masked, large, source, target, strength, factor=2)
    assert woven.mask is not None and woven.mask.shape == (2, 1, 64, 64)
    single_mask = masked.swap(large[:, :, 1::2, 0::2].contiguous(), source, target, strength).mask
    assert single_mask is not None
    assert_close(woven.mask[:, :, 1::2, 0::2], single_mask, rtol=1e-5, atol=1e-5)


def test_swap_woven_takes_the_generators_own_identity_size() -> None:
    cfg = GeneratorConfig(**TINY, blocks_per_scale=(1, 1), id_dim=64, mask_head=False)
    swapper = TorchSwapper(build(cfg), name="64-d")
    assert swapper.id_dim == 64
    _, source, target, strength = inputs(cfg)
    woven = swap_woven(swapper, torch.rand(2, 3, 64, 64), source, target, strength, factor=2)
    assert woven.images.shape == (2, 3, 64, 64)
    with pytest.raises(IncompatibleIdentityError, match="512 numbers per embedding but 64-d takes 64"):
        swap_woven(swapper, torch.rand(2, 3, 64, 64), unit(2, 2, 512, seed=1), unit(2, 512, seed=2), 1.0, factor=2)


def test_identity_dtype_is_float32_numpy_compatible() -> None:
    """Identities may come as numpy arrays (Identity.for_blocks) and are accepted as such."""
    cfg = INSWAPPER_TINY
    swapper = TorchSwapper(build(cfg))
    image, source, target, strength = inputs(cfg)
    from_numpy = swapper.swap(image, source.numpy().astype(np.float32), target.numpy(), strength.numpy())  # type: ignore[arg-type]
    assert_close(from_numpy.images, swapper.swap(image, source, target, strength).images, rtol=0, atol=0)
