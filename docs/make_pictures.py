"""Render the README's pictures of the pipeline stages from real photos.

    python docs/make_pictures.py --faces ../shared/faces --yunet ../shared/models/face_detection_yunet.onnx

The pictures show what FaceMagic's stages do on real photos with the real YuNet detector:
detection and landmarks, alignment, the face mask, colour matching and paste-back. The
"paste-back" panel puts the *aligned source crop itself* where the generator's output
would go, so it shows the blending stage only, not an identity swap by a trained network
(no swapper weights can be downloaded where these pictures are made).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from facemagic_core.align import align_faces, invert_affine, transform_points
from facemagic_core.analysis import FaceAnalyzer, select_faces
from facemagic_core.blend import create_face_mask, match_colour, paste_back
from facemagic_core.images import load_image, save_image, tensor_to_bgr_uint8

CROP = 256  # display size of the crops


def draw_detections(image: torch.Tensor, analyzer: FaceAnalyzer) -> torch.Tensor:
    """Boxes and the five landmarks of every face found in ``image`` (1, 3, H, W)."""
    canvas = tensor_to_bgr_uint8(image[0]).copy()
    thickness = max(2, image.shape[-1] // 400)
    for face in analyzer.detect_faces(image)[0]:
        x1, y1, x2, y2 = (int(v) for v in np.rint(face.bbox))
        cv2.rectangle(canvas, (x1, y1), (x2, y2), (80, 220, 80), thickness)
        for x, y in face.landmarks_5:
            cv2.circle(canvas, (int(np.rint(x)), int(np.rint(y))), thickness + 2, (60, 60, 255), -1)
    return torch.from_numpy(canvas[:, :, ::-1].copy()).permute(2, 0, 1).float().div(255).unsqueeze(0)


def fit_height(image: torch.Tensor, height: int) -> torch.Tensor:
    width = round(image.shape[-1] * height / image.shape[-2])
    return F.interpolate(image, size=(height, width), mode="bilinear", antialias=True, align_corners=False)


def stages(source: torch.Tensor, target: torch.Tensor, analyzer: FaceAnalyzer) -> torch.Tensor:
    """target with detections | aligned target | aligned source | mask | colour-matched | pasted back."""
    source_face = select_faces(analyzer.detect_faces(source)[0], order="largest", index=0)[0]
    target_face = select_faces(analyzer.detect_faces(target)[0], order="largest", index=0)[0]
    source_crop, _ = align_faces(source, [source_face], CROP)
    target_crop, matrix = align_faces(target, [target_face], CROP)
    mask = create_face_mask("ellipse", CROP, 1, erosion=0.12, feather=0.12)
    matched = match_colour(source_crop, target_crop, mask, method="lab")
    pasted, _ = paste_back(target, matched, mask, matrix, torch.tensor([0]))
    # Zoom the result on the face so the seam is visible.
    corners = torch.tensor([[[0.0, 0.0], [CROP - 1.0, CROP - 1.0]]])
    (x0, y0), (x1, y1) = transform_points(corners, invert_affine(matrix))[0].tolist()
    pad = 0.25 * (x1 - x0)
    left, top = max(int(x0 - pad), 0), max(int(y0 - pad), 0)
    right, bottom = min(int(x1 + pad), target.shape[-1]), min(int(y1 + pad), target.shape[-2])
    zoom = pasted[:, :, top:bottom, left:right]
    panels = [
        fit_height(draw_detections(target, analyzer), CROP),
        target_crop,
        source_crop,
        mask.expand(1, 3, CROP, CROP),
        matched,
        fit_height(zoom, CROP),
    ]
    gap = torch.ones(1, 3, CROP, 8)
    row = [gap]
    for panel in panels:
        row += [panel.clamp(0, 1), gap]
    return torch.cat(row, dim=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=Path, default=Path("../shared/faces"))
    parser.add_argument("--yunet", type=Path, default=Path("../shared/models/face_detection_yunet.onnx"))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args()
    analyzer = FaceAnalyzer(backend="yunet", detector=args.yunet)
    pairs = [("anni.jpg", "portrait_1.png"), ("chenglong.jpg", "iron_man.jpg")]
    rows = [stages(load_image(args.faces / s), load_image(args.faces / t), analyzer) for s, t in pairs]
    width = max(row.shape[-1] for row in rows)
    rows = [F.pad(row, (0, width - row.shape[-1], 0, 8), value=1.0) for row in rows]
    save_image(torch.cat(rows, dim=2)[0], args.out / "stages.jpg")

    import insightface  # t1.jpg ships with insightface

    group = load_image(Path(insightface.__file__).parent / "data" / "images" / "t1.jpg")
    save_image(fit_height(draw_detections(group, analyzer), 360)[0], args.out / "detections.jpg")
    print("wrote", args.out / "stages.jpg", args.out / "detections.jpg")


if __name__ == "__main__":
    main()
