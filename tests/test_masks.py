"""Occlusion (XSeg), region (BiSeNet) and landmark-area masks: signatures, minimum rule, and real photos."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import SHARED
from finish_models import write_bisenet, write_restorer, write_xseg
from test_finish_crops import HEIGHT, WIDTH, face_landmarks, make_batch

from facemagic_core import hub
from facemagic_core.align import transform_points, warp_affine
from facemagic_core.blend import create_face_mask, paste_back
from facemagic_core.errors import BadInputError
from facemagic_core.generators.base import SwapOutput
from facemagic_core.masks import (
    OCCLUDER_NAMES,
    PARSER_NAMES,
    FaceMaskSpec,
    FaceOccluder,
    FaceParser,
    create_finish_masks,
    crop_masks_to_frames,
    load_mask_model,
)
from facemagic_core.pipeline import SwapBatch, align_target_faces, blend_swap
from facemagic_core.types import Face

FACEAPI = SHARED / "models" / "faceapi"
PHOTOS = ("anni.jpg", "arnold.jpg", "portrait_1.png", "zhoujielun.jpg")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[FaceOccluder, FaceParser]:
    folder = tmp_path_factory.mktemp("mask_models")
    return FaceOccluder(write_xseg(folder / "xseg_1.onnx")), FaceParser(write_bisenet(folder / "bisenet.onnx"))


def painted_frames() -> torch.Tensor:
    """Red ("skin") frames with a green bar ("nose" to the parser, "in front of the face" to XSeg) and a blue patch."""
    frames = torch.zeros((1, 3, HEIGHT, WIDTH))
    frames[:, 0] = 1.0
    frames[:, :, 80:170, 134:158] = torch.tensor([0.0, 1.0, 0.0]).reshape(1, 3, 1, 1)
    frames[:, :, 150:175, 100:125] = torch.tensor([0.0, 0.0, 1.0]).reshape(1, 3, 1, 1)
    return frames


def in_crop(plane: torch.Tensor, batch: SwapBatch) -> torch.Tensor:
    """A frame-space (H, W) indicator seen in each face's crop."""
    return warp_affine(
        plane[None, None].float(), batch.matrices, (batch.crop_size,) * 2, image_index=batch.image_index * 0
    )


def test_registry_and_spec_parsing() -> None:
    for name in OCCLUDER_NAMES:
        spec = hub.get_model_spec(name)
        assert spec.kind == "occluder" and spec.filename == f"{name}.onnx" and spec.input_size == 256
        assert spec.repo_id == ("facefusion/models-3.2.0" if name == "xseg_3" else "facefusion/models-3.1.0")
        assert "GPL-3.0" in spec.licence
    assert hub.get_model_spec("bisenet_resnet_18").repo_id == "facefusion/models-3.1.0"
    assert hub.get_model_spec("bisenet_resnet_34").repo_id == "facefusion/models-3.0.0"
    assert all(hub.get_model_spec(name).licence.startswith("MIT") for name in PARSER_NAMES)
    spec = FaceMaskSpec.parse("occlusion,region:skin+nose", keep_mouth=True)
    assert spec == FaceMaskSpec(occlusion=True, regions=("skin", "nose"), keep=("mouth",))
    assert FaceMaskSpec.parse("region").regions[:2] == ("skin", "brows") and FaceMaskSpec.parse("").is_empty
    assert FaceMaskSpec.parse("lower_face,keep:eyes+mouth").areas == ("lower_face",)
    with pytest.raises(BadInputError, match="unknown mask 'occlusions'"):
        FaceMaskSpec.parse("occlusions")
    with pytest.raises(BadInputError, match="unknown region 'beard'"):
        FaceMaskSpec.parse("region:skin+beard")


def test_occlusion_and_regions_follow_the_target_and_combine_by_minimum(
    models: tuple[FaceOccluder, FaceParser],
) -> None:
    occluder, parser = models
    frames = painted_frames()
    batch = make_batch(frames, [(0, face_landmarks((146, 125), 55, 15))])
    green = in_crop((frames[0, 1] > 0.5) & (frames[0, 0] < 0.5), batch)
    blue = in_crop(frames[0, 2] > 0.5, batch)
    framed = -F.max_pool2d(-in_crop(torch.ones((HEIGHT, WIDTH)), batch), 15, 1, 7) > 0.999  # well inside the frame
    solid = lambda m: -F.max_pool2d(-m, 5, 1, 2) > 0.99  # noqa: E731  well inside a painted area
    clear = lambda m: (F.max_pool2d(m, 7, 1, 3) < 0.01) & framed  # noqa: E731  well away from it

    occlusion = create_finish_masks(frames, batch, FaceMaskSpec(occlusion=True), occluder=occluder)
    assert occlusion is not None and occlusion.shape == (1, 1, 128, 128)
    assert float(occlusion[solid(green)].max()) < 0.05  # what covers the face keeps the target
    assert float(occlusion[clear(green)].min()) > 0.95

    skin = create_finish_masks(frames, batch, FaceMaskSpec(regions=("skin",)), parser=parser)
    assert skin is not None
    assert float(skin[solid(green)].max()) < 0.05 and float(skin[solid(blue)].max()) < 0.05
    assert float(skin[clear(green) & clear(blue)].min()) > 0.95
    skin_nose = create_finish_masks(frames, batch, FaceMaskSpec(regions=("skin", "nose")), parser=parser)
    assert skin_nose is not None and float(skin_nose[solid(green)].min()) > 0.95  # the nose region joins in
    assert float(skin_nose[solid(blue)].max()) < 0.05

    both = create_finish_masks(
        frames, batch, FaceMaskSpec(occlusion=True, regions=("skin", "nose")), occluder=occluder, parser=parser
    )
    assert both is not None and torch.equal(both, torch.minimum(occlusion, skin_nose))  # minimum, exactly

    # In the blend: the final mask is the minimum of the shape mask and these, and nothing else changes.
    swapped = SwapOutput(torch.rand_like(batch.crops), None)
    images, masks = blend_swap(frames, batch, swapped, crop_mask=both)
    shape = create_face_mask("ellipse", 128, 1)
    _, expected = paste_back(frames, swapped.images, torch.minimum(shape, both), batch.matrices, batch.image_index)
    assert torch.equal(masks, expected)
    outside = (masks == 0).unsqueeze(1).expand_as(frames)
    assert torch.equal(images[outside], frames[outside])
    bar = (frames[0, 1] > 0.5)[None, None].expand_as(frames)
    inner = F.max_pool2d((~bar[:, :1]).float(), 9, 1, 4) == 0  # the bar minus a 4 px rim
    assert torch.equal(images[inner.expand_as(frames)], frames[inner.expand_as(frames)])  # the hand stays in front

    frame_mask = crop_masks_to_frames(both, batch)
    assert frame_mask.shape == (1, HEIGHT, WIDTH) and float(frame_mask[0, :10, :10].min()) == 1.0
    assert float(frame_mask[0, 100:150, 143:149].max()) < 0.05
    with pytest.raises(BadInputError, match="needs an occluder"):
        create_finish_masks(frames, batch, FaceMaskSpec(occlusion=True))
    with pytest.raises(BadInputError, match="crop mask must be"):
        blend_swap(frames, batch, swapped, crop_mask=both[:, :, :64])


def test_mask_models_refuse_other_files(tmp_path: Path) -> None:
    restorer = write_restorer(tmp_path / "restorer.onnx", size=64)
    with pytest.raises(BadInputError, match="not a face occluder"):
        FaceOccluder(restorer)
    parser = FaceParser(write_bisenet(tmp_path / "b.onnx", size=64))
    with pytest.raises(BadInputError, match="takes 64 px crops"):
        parser.masks(torch.rand(1, 3, 32, 32))
    assert isinstance(load_mask_model(tmp_path / "b.onnx"), FaceParser)
    assert isinstance(load_mask_model(write_xseg(tmp_path / "x.onnx", size=32)), FaceOccluder)
    with pytest.raises(BadInputError, match="inswapper_128 is a swapper, not a mask model"):
        load_mask_model("inswapper_128", model_dir=tmp_path)


# ---------------------------------------------------------------------------------------------------------------------
# Landmark areas on real photos


@pytest.fixture(scope="module")
def photo_faces(yunet_path: Path, faces_dir: Path) -> list[tuple[torch.Tensor, Face]]:
    from facemagic_core.analysis import FaceAnalyzer
    from facemagic_core.images import load_image
    from facemagic_core.landmarks68 import Landmarker68

    if not (FACEAPI / "face_landmark_68_model-weights_manifest.json").is_file():
        pytest.skip(f"face-api's 68-point landmark weights are not available: {FACEAPI} is absent")
    analyzer = FaceAnalyzer(backend="yunet", detector=yunet_path)
    landmarker = Landmarker68.from_file(FACEAPI)
    found = []
    for name in PHOTOS:
        image = load_image(faces_dir / name)
        face = max(analyzer.detect_faces(image)[0], key=lambda one: one.size)
        points = landmarker.locate(image, [face])[0].numpy().astype(np.float32)
        found.append((image, Face(bbox=face.bbox, score=face.score, landmarks_5=face.landmarks_5, landmarks=points)))
    return found


def aligned(image: torch.Tensor, face: Face) -> SwapBatch:
    generator = SimpleNamespace(device=torch.device("cpu"), input_size=128, template="arcface")
    return align_target_faces(image, [[face]], generator)  # type: ignore[arg-type]


def value_at(mask: torch.Tensor, point: np.ndarray) -> float:
    x, y = (round(float(v)) for v in point)
    return float(mask[0, 0, y, x])


@pytest.mark.parametrize("dense", [True, False], ids=["68 points", "5 points"])
def test_keep_mouth_and_areas_on_real_photos(photo_faces: list[tuple[torch.Tensor, Face]], dense: bool) -> None:
    for image, face in photo_faces:
        if not dense:
            face = Face(bbox=face.bbox, score=face.score, landmarks_5=face.landmarks_5)
        batch = aligned(image, face)
        five = transform_points(torch.from_numpy(face.landmarks_5[None].astype(np.float64)), batch.matrices.double())[0]
        mouth = ((five[3] + five[4]) / 2).numpy()
        eyes, nose = five[:2].numpy(), five[2].numpy()
        kept = create_finish_masks(image, batch, FaceMaskSpec(keep=("mouth",)))
        assert kept is not None
        assert value_at(kept, mouth) < 0.05, "the target's own mouth is kept"
        assert min(value_at(kept, eye) for eye in eyes) > 0.95 and value_at(kept, nose) > 0.5
        only_eyes = create_finish_masks(image, batch, FaceMaskSpec(areas=("eyes",)))
        assert only_eyes is not None
        assert min(value_at(only_eyes, eye) for eye in eyes) > 0.95 and value_at(only_eyes, mouth) < 0.05
        if dense:
            points = transform_points(
                torch.from_numpy(face.landmarks[None].astype(np.float64)), batch.matrices.double()
            )[0]
            lower = create_finish_masks(image, batch, FaceMaskSpec(areas=("lower_face",)))
            assert lower is not None
            assert value_at(lower, mouth) > 0.95 and value_at(lower, points[8].numpy() - [0, 6]) > 0.5  # chin
            assert max(value_at(lower, eye) for eye in eyes) < 0.05
            assert all(value_at(kept, p) < 0.5 for p in points[48:60].numpy())  # every outer lip point
        else:
            with pytest.raises(BadInputError, match="lower-face area needs 68- or 106-point"):
                create_finish_masks(image, batch, FaceMaskSpec(areas=("lower_face",)))
