"""Render the README's pictures of the finishing stages from real photos.

    python docs/make_finish_pictures.py --faces ../shared/faces --models ../shared/models

- ``docs/finish_masks.jpg``: the landmark-area masks (keep the mouth, only the eyes, only the
  lower face) on real photos, from YuNet's five points and face-api's 68 points, drawn over
  the aligned target crop (red: the target stays, clear: the swap may show).
- ``docs/crop_round_trip.jpg``: a photo, its FFHQ-aligned 512 px crop (what Swap's crops
  output and the restorers see), the crop edited by "another node" (rings drawn around the
  template's eye and mouth points, then upscaled to 1024 px), and the photo after Blend
  mapped the edited crop back: the rings land on the eyes and mouth.

The crops are the target faces themselves (no swap model weights can be downloaded where
these pictures are made), so they show the geometry and the masks, not a face swap. The
occlusion (XSeg) and region (BiSeNet) masks need their real weights and are not drawn.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from facemagic_core.align import face_template
from facemagic_core.analysis import FaceAnalyzer
from facemagic_core.generators.base import SwapOutput
from facemagic_core.images import load_image, tensor_to_bgr_uint8
from facemagic_core.landmarks68 import Landmarker68
from facemagic_core.masks import FaceMaskSpec, create_finish_masks
from facemagic_core.pipeline import (
    SwapBatch,
    align_target_faces,
    blend_swap,
    crop_thumbnails,
    crops_from_image,
    realign_swap,
)
from facemagic_core.types import Face

PHOTOS = ("portrait_1.png", "anni.jpg", "zhoujielun.jpg")
PANEL = 256


def label(picture: np.ndarray, text: str) -> np.ndarray:
    out = picture.copy()
    cv2.rectangle(out, (0, 0), (out.shape[1], 24), (0, 0, 0), -1)
    cv2.putText(out, text, (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def batch_for(image: torch.Tensor, face: Face, size: int = 256) -> SwapBatch:
    generator = SimpleNamespace(device=torch.device("cpu"), input_size=size, template="arcface")
    return align_target_faces(image, [[face]], generator)  # type: ignore[arg-type]


def overlay(crop: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """The crop with the target-stays part (mask 0) tinted red."""
    bgr = tensor_to_bgr_uint8(crop).astype(np.float32)
    kept = (1.0 - mask[0].numpy())[:, :, None]
    red = np.array([40, 40, 230], dtype=np.float32)
    mixed = bgr * (1 - 0.6 * kept) + red * 0.6 * kept
    return cv2.resize(np.clip(mixed, 0, 255).astype(np.uint8), (PANEL, PANEL), interpolation=cv2.INTER_AREA)


def mask_panels(faces_dir: Path, analyzer: FaceAnalyzer, landmarker: Landmarker68) -> np.ndarray:
    rows = []
    for name in PHOTOS:
        image = load_image(faces_dir / name)
        found = max(analyzer.detect_faces(image)[0], key=lambda one: one.size)
        dense = landmarker.locate(image, [found])[0].numpy().astype(np.float32)
        face = Face(bbox=found.bbox, score=found.score, landmarks_5=found.landmarks_5, landmarks=dense)
        batch = batch_for(image, face)
        five = batch_for(image, Face(bbox=found.bbox, score=found.score, landmarks_5=found.landmarks_5))
        crop = batch.crops[0]
        panels = [label(cv2.resize(tensor_to_bgr_uint8(crop), (PANEL, PANEL)), f"{name}: aligned target")]
        for title, spec, which in (
            ("keep mouth (68 points)", FaceMaskSpec(keep=("mouth",)), batch),
            ("keep mouth (5 points)", FaceMaskSpec(keep=("mouth",)), five),
            ("only eyes (68 points)", FaceMaskSpec(areas=("eyes",)), batch),
            ("only lower face (68 points)", FaceMaskSpec(areas=("lower_face",)), batch),
        ):
            mask = create_finish_masks(image, which, spec)
            assert mask is not None
            panels.append(label(overlay(crop, mask[0]), title))
        rows.append(np.concatenate(panels, axis=1))
    return np.concatenate(rows, axis=0)


def round_trip(faces_dir: Path, analyzer: FaceAnalyzer) -> np.ndarray:
    image = load_image(faces_dir / PHOTOS[0])
    face = max(analyzer.detect_faces(image)[0], key=lambda one: one.size)
    batch = batch_for(image, face, size=128)
    out = realign_swap(image, batch, SwapOutput(batch.crops, None), template="ffhq", size=512)
    edited = tensor_to_bgr_uint8(out.images[0]).copy()
    template = face_template("ffhq", 512)
    for x, y in (*template[:2], (template[3] + template[4]) / 2):
        cv2.circle(edited, (round(float(x)), round(float(y))), 30, (0, 255, 255), 4, cv2.LINE_AA)
    edited_tensor = torch.from_numpy(edited[:, :, ::-1].copy()).permute(2, 0, 1).float().div(255)[None]
    upscaled = F.interpolate(edited_tensor, size=(1024, 1024), mode="bicubic", align_corners=False).clamp(0, 1)
    finished = crops_from_image(upscaled, out.matrices, 512, template="ffhq", thumbnails=crop_thumbnails(out.images))
    result, _ = blend_swap(
        image, batch, SwapOutput(batch.crops, None), mask="box", erosion=0.0, feather=0.05, finished=finished
    )
    height = 384

    def fit(picture: np.ndarray) -> np.ndarray:
        return cv2.resize(
            picture, (round(picture.shape[1] * height / picture.shape[0]), height), interpolation=cv2.INTER_AREA
        )

    panels = [
        label(fit(tensor_to_bgr_uint8(image[0])), "target photo"),
        label(fit(tensor_to_bgr_uint8(out.images[0])), "FFHQ crop, 512 px (crops output)"),
        label(fit(edited), "edited by another node, sent at 1024 px"),
        label(fit(tensor_to_bgr_uint8(result[0])), "after Blend: back on the face"),
    ]
    return np.concatenate(panels, axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=Path, required=True)
    parser.add_argument("--models", type=Path, required=True, help="folder with face_detection_yunet.onnx and faceapi/")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    analyzer = FaceAnalyzer(backend="yunet", detector=args.models / "face_detection_yunet.onnx")
    landmarker = Landmarker68.from_file(args.models / "faceapi")
    for name, picture in (
        ("finish_masks.jpg", mask_panels(args.faces, analyzer, landmarker)),
        ("crop_round_trip.jpg", round_trip(args.faces, analyzer)),
    ):
        path = args.out / name
        cv2.imwrite(str(path), picture, [cv2.IMWRITE_JPEG_QUALITY, 88])
        print(f"wrote {path} ({picture.shape[1]}x{picture.shape[0]})")


if __name__ == "__main__":
    main()
