"""Face restoration (GFPGAN, CodeFormer, GPEN-BFR, RestoreFormer++ signatures) on tiny ONNX models, in crop space."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from finish_models import write_restorer, write_xseg
from test_finish_crops import face_landmarks, make_batch, textured_frames

from facemagic_core import hub
from facemagic_core.errors import BadInputError, ModelIntegrityError
from facemagic_core.generators.base import SwapOutput
from facemagic_core.pipeline import blend_swap, realign_swap
from facemagic_core.restore import RESTORER_NAMES, FaceRestorer, load_restorer, restore_swap


def expected(crops: torch.Tensor, fidelity: float | None) -> torch.Tensor:
    """What the tiny restorer computes: 0.5 * x + 0.3 * w in [-1, 1] units."""
    out = 0.5 * (crops * 2 - 1) + (0.3 * fidelity if fidelity is not None else 0.0)
    return (out.clamp(-1, 1) + 1) / 2


def test_registry_has_every_restorer_from_facefusions_repository() -> None:
    files = {name: hub.get_model_spec(name) for name in RESTORER_NAMES}
    assert {spec.filename for spec in files.values()} == {
        "gfpgan_1.4.onnx",
        "codeformer.onnx",
        "gpen_bfr_256.onnx",
        "gpen_bfr_512.onnx",
        "gpen_bfr_1024.onnx",
        "gpen_bfr_2048.onnx",
        "restoreformer_plus_plus.onnx",
    }
    for name, spec in files.items():
        assert spec.kind == "restorer" and spec.repo_id == "facefusion/models-3.0.0" and spec.template == "ffhq"
        assert spec.value_range == (-1.0, 1.0) and spec.colour_order == "RGB"
        size = int(name.rsplit("_", 1)[1]) if name.startswith("gpen") else 512
        assert spec.input_size == size
    assert "non-commercial" in files["codeformer"].licence and "Apache-2.0" in files["gfpgan_1.4"].licence
    assert "non-commercial" in files["gpen_bfr_512"].licence


@pytest.mark.parametrize("batch", [1, "N"])
def test_codeformer_signature_takes_the_fidelity_and_batches(tmp_path: Path, batch: int | str) -> None:
    path = write_restorer(tmp_path / "codeformer.onnx", size=64, fidelity=True, batch=batch)
    restorer = FaceRestorer(path, name="codeformer", runtime="onnxruntime", max_batch=2)
    assert restorer.input_size == 64 and restorer.has_fidelity and restorer.signature.fixed_batch == (batch == 1)
    calls: list[int] = []
    run = restorer.session.run

    def counting(names, feeds):  # type: ignore[no-untyped-def]
        calls.append(len(feeds["input"]))
        assert feeds["weight"].dtype == np.float64 and feeds["weight"].shape == (1,)
        return run(names, feeds)

    restorer.session.run = counting  # type: ignore[method-assign]
    crops = torch.rand((5, 3, 64, 64), generator=torch.Generator().manual_seed(1))
    for fidelity in (0.0, 0.7):
        out = restorer.restore(crops, fidelity=fidelity)
        torch.testing.assert_close(out, expected(crops, fidelity), atol=1e-6, rtol=0)
    assert calls == ([1] * 5 if batch == 1 else [2, 2, 1]) * 2  # one face per call, or chunks of max_batch
    assert torch.equal(crops, crops.clone())  # input untouched


def test_a_restorer_without_fidelity_and_the_torch_runtime_agree(tmp_path: Path) -> None:
    path = write_restorer(tmp_path / "gfpgan_1.4.onnx", size=64, batch="N")
    reference = FaceRestorer(path, runtime="onnxruntime")
    converted = FaceRestorer(path, runtime="torch")
    assert not reference.has_fidelity and reference.graph is None and converted.graph is not None
    crops = torch.rand((3, 3, 64, 64), generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(reference.restore(crops), expected(crops, None), atol=1e-6, rtol=0)
    torch.testing.assert_close(converted.restore(crops), reference.restore(crops), atol=1e-6, rtol=0)
    fid = write_restorer(tmp_path / "codeformer.onnx", size=64, fidelity=True, batch="N")
    torch.testing.assert_close(
        FaceRestorer(fid, runtime="torch").restore(crops, fidelity=0.25), expected(crops, 0.25), atol=1e-6, rtol=0
    )


def test_restored_faces_go_back_on_their_faces_only(tmp_path: Path) -> None:
    restorer = FaceRestorer(write_restorer(tmp_path / "r.onnx", size=96, fidelity=True, batch="N"))
    frames = textured_frames(2)
    batch = make_batch(frames, [(0, face_landmarks((150, 125), 55, 20)), (1, face_landmarks((170, 110), 70, -35))])
    swapped = SwapOutput(torch.rand_like(batch.crops), None)
    plain = realign_swap(frames, batch, swapped, template="ffhq", size=96)
    half = restore_swap(frames, batch, swapped, restorer, weight=0.5, fidelity=0.5)
    torch.testing.assert_close(half.matrices, plain.matrices)
    torch.testing.assert_close(half.images, 0.5 * plain.images + 0.5 * expected(plain.images, 0.5), atol=1e-5, rtol=0)
    none = restore_swap(frames, batch, swapped, restorer, weight=0.0)
    assert torch.equal(none.images, plain.images)
    images, masks = blend_swap(frames, batch, swapped, finished=half)
    outside = (masks == 0).unsqueeze(1).expand_as(frames)
    assert bool(outside.any()) and torch.equal(images[outside], frames[outside])
    unrestored, _ = blend_swap(frames, batch, swapped, finished=none)
    inside = (masks > 0.9).unsqueeze(1).expand_as(frames)
    assert float((images - unrestored)[inside].abs().mean()) > 0.01  # the restorer did change the faces


def test_bad_restorer_input_and_files_are_named(tmp_path: Path) -> None:
    restorer = FaceRestorer(write_restorer(tmp_path / "r.onnx", size=64))
    with pytest.raises(BadInputError, match="takes 64 px crops"):
        restorer.restore(torch.rand(1, 3, 32, 32))
    with pytest.raises(BadInputError, match="fidelity must lie between 0 and 1"):
        restorer.restore(torch.rand(1, 3, 64, 64), fidelity=1.5)
    with pytest.raises(BadInputError, match="not a face restorer"):
        FaceRestorer(write_xseg(tmp_path / "xseg.onnx", size=32))
    broken = tmp_path / "broken.onnx"
    broken.write_bytes((tmp_path / "r.onnx").read_bytes()[:200])
    with pytest.raises(ModelIntegrityError, match=r"broken\.onnx"):
        FaceRestorer(broken)
    with pytest.raises(BadInputError, match="unknown face restorer 'gfpgan'"):
        load_restorer("gfpgan", model_dir=tmp_path)
    with pytest.raises(BadInputError, match="yunet is a detector, not a face restorer"):
        load_restorer("yunet", model_dir=tmp_path)


def test_a_registry_restorer_is_found_in_the_model_folder(tmp_path: Path) -> None:
    spec = hub.get_model_spec("codeformer")
    write_restorer(tmp_path / spec.local_path, size=512, fidelity=True)
    restorer = load_restorer("codeformer", model_dir=tmp_path)
    assert restorer.name == "codeformer" and restorer.input_size == 512 and restorer.has_fidelity
