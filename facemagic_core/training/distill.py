"""Distillation: a teacher swapper supervises a native FaceMagic student on unlabelled faces.

Any :class:`~facemagic_core.generators.SwapModel` can teach (an inswapper-layout ONNX file, a
hyperswap model, another native generator). The student is trained on the crops of a
prepared cache, which need no identity labels: for random source/target pairs the teacher's
swap of the target crop is the student's target image.

The teacher usually works at another size and maybe another template than the student;
:class:`DistillTeacher` bridges that for a batch of student crops ``(B, 3, S, S)``:

- ``"direct"``: same size and template, the teacher swaps the crops as they are;
- ``"woven"``: the student's crops are N times the teacher's size with the same template
  (e.g. 256 vs 128): the teacher runs through :func:`~facemagic_core.generators.swap_woven`
  on the N*N interleaved sub-images, which gives 256 px detail of the teacher's own making;
- ``"warped"``: otherwise the student crop is warped to the teacher's framing, swapped, and
  the result warped back (upsampled when the student is larger); where the teacher's crop does
  not reach, the student's target is the original target crop.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ..align import estimate_similarity, face_template, invert_affine, warp_affine
from ..generators.base import SwapModel, swap_woven

logger = logging.getLogger(__name__)

DistillMode = Literal["direct", "woven", "warped"]
#: Largest template mismatch (pixels of the student crop) still run woven.
WOVEN_TOLERANCE = 1.0


def choose_mode(
    teacher: SwapModel, student_size: int, student_template: str, *, weave: bool
) -> tuple[DistillMode, int]:
    """How the teacher sees the student's crops, and the weave factor (1 unless woven)."""
    teacher_size = int(teacher.input_size)
    if student_size == teacher_size and teacher.template == student_template:
        return "direct", 1
    if weave and teacher.template == student_template and student_size % teacher_size == 0:
        factor = student_size // teacher_size
        big = face_template(student_template, student_size)  # type: ignore[arg-type]
        small = face_template(teacher.template, teacher_size) * factor
        if float(np.abs(big - small).max()) <= WOVEN_TOLERANCE * factor:
            return "woven", factor
    return "warped", 1


class DistillTeacher:
    """Computes the teacher's swap of student crops (see the module docstring)."""

    def __init__(self, teacher: SwapModel, *, student_size: int, student_template: str, weave: bool = True) -> None:
        self.teacher = teacher
        self.student_size = int(student_size)
        self.student_template = student_template
        self.mode, self.factor = choose_mode(teacher, self.student_size, student_template, weave=weave)
        student_points = torch.from_numpy(face_template(student_template, self.student_size).astype(np.float64))  # type: ignore[arg-type]
        teacher_points = face_template(teacher.template, int(teacher.input_size))
        self.matrix = estimate_similarity(student_points[None], teacher_points).to(torch.float32)  # student -> teacher
        logger.info(
            "distilling from %s (%d px, %s) into a %d px %s student: %s%s",
            teacher.name,
            teacher.input_size,
            teacher.template,
            self.student_size,
            student_template,
            self.mode,
            f" x{self.factor}" if self.mode == "woven" else "",
        )

    def targets(self, crops: Tensor, source: Tensor, target: Tensor) -> Tensor:
        """The teacher's swap of ``crops`` ``(B, 3, S, S)`` with ``source`` ``(B, D)`` into ``target`` ``(B, D)``.

        Returns ``(B, 3, S, S)`` float32 in [0, 1] on the crops' device, without gradient.
        """
        batch = crops.shape[0]
        blocks = int(self.teacher.num_blocks)
        teacher_source = source[:, None, :].expand(batch, blocks, source.shape[-1])
        strength = torch.ones(batch, blocks, device=crops.device)
        with torch.no_grad():
            if self.mode == "direct":
                return self.teacher.swap(crops, teacher_source, target, strength).images.to(crops.device)
            if self.mode == "woven":
                output = swap_woven(self.teacher, crops, teacher_source, target, strength, factor=self.factor)
                return output.images.to(crops.device)
            size = int(self.teacher.input_size)
            matrices = self.matrix.to(crops.device).expand(batch, 2, 3)
            teacher_crops = warp_affine(crops, matrices, (size, size)).clamp(0, 1)
            swapped = self.teacher.swap(teacher_crops, teacher_source, target, strength).images.to(crops.device)
            back = invert_affine(matrices)
            frame = (self.student_size, self.student_size)
            pasted = warp_affine(swapped, back, frame)
            coverage = warp_affine(torch.ones_like(swapped[:, :1]), back, frame).clamp(0, 1)
            return (pasted + (1 - coverage) * crops).clamp(0, 1)
