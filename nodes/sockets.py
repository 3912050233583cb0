"""FaceMagic's socket types, defined once.

What travels through each socket:

- ``FACEMAGIC_ANALYZER``: a :class:`facemagic_core.analysis.FaceAnalyzer` (detector, landmarks, recogniser).
- ``FACEMAGIC_GENERATOR``: a :class:`nodes.memory.GeneratorHandle` (the swap model and, for torch
  models, the ComfyUI ``ModelPatcher`` that manages its weights).
- ``FACEMAGIC_IDENTITY``: a :class:`facemagic_core.types.Identity` (per-block embeddings + provenance).
- ``FACEMAGIC_SWAP``: the swap pipeline's result for a batch (swapped crops, crop transforms and the
  per-face data the pose check and the blend need), from :mod:`facemagic_core.pipeline`.
- ``FACEMAGIC_RESTORER``: a :class:`facemagic_core.restore.FaceRestorer` (GFPGAN, CodeFormer, GPEN, RestoreFormer++).
- ``FACEMAGIC_MASK_MODEL``: a :class:`facemagic_core.masks.FaceOccluder` (XSeg) or
  :class:`facemagic_core.masks.FaceParser` (BiSeNet).
"""

from __future__ import annotations

from ._comfy import io

ANALYZER_TYPE = "FACEMAGIC_ANALYZER"
GENERATOR_TYPE = "FACEMAGIC_GENERATOR"
IDENTITY_TYPE = "FACEMAGIC_IDENTITY"
SWAP_TYPE = "FACEMAGIC_SWAP"
RESTORER_TYPE = "FACEMAGIC_RESTORER"
MASK_MODEL_TYPE = "FACEMAGIC_MASK_MODEL"

Analyzer = io.Custom(ANALYZER_TYPE)
Generator = io.Custom(GENERATOR_TYPE)
IdentitySocket = io.Custom(IDENTITY_TYPE)
Swap = io.Custom(SWAP_TYPE)
Restorer = io.Custom(RESTORER_TYPE)
MaskModel = io.Custom(MASK_MODEL_TYPE)

#: Every socket type this pack defines, for tests and documentation.
SOCKET_TYPES = (ANALYZER_TYPE, GENERATOR_TYPE, IDENTITY_TYPE, SWAP_TYPE, RESTORER_TYPE, MASK_MODEL_TYPE)
