"""Training native FaceMagic generators: data preparation, frozen teachers, losses, distillation, the loop.

Pipeline order: :func:`prepare_dataset` (photos -> cache of aligned crops, embeddings,
landmarks) -> :class:`FaceCache` + :class:`PairSampler` (reproducible batches) ->
:func:`load_recognizer` / :func:`load_landmark_model` (ONNX teachers as frozen torch modules) ->
:class:`Trainer` (losses, discriminator, EMA, checkpoints, exact resume) -> :func:`push_to_hub`.
The command line is ``facemagic prepare`` and ``facemagic train``.
"""

from __future__ import annotations

from .config import DiscriminatorConfig, DistillConfig, LossWeights, TrainConfig
from .data import FaceCache, PairIndices, PairSampler, TrainingBatch, load_batch
from .discriminator import MultiScaleDiscriminator
from .distill import DistillTeacher
from .onnx_graph import OnnxGraphModule, check_against_onnxruntime
from .prepare import PrepareSummary, collect_photos, prepare_dataset, read_manifest, read_records
from .publish import push_to_hub, write_model_card
from .teachers import LandmarkTeacher, RecognizerTeacher, load_landmark_model, load_recognizer
from .trainer import Trainer, TrainSummary, read_losses

__all__ = [
    "DiscriminatorConfig",
    "DistillConfig",
    "DistillTeacher",
    "FaceCache",
    "LandmarkTeacher",
    "LossWeights",
    "MultiScaleDiscriminator",
    "OnnxGraphModule",
    "PairIndices",
    "PairSampler",
    "PrepareSummary",
    "RecognizerTeacher",
    "TrainConfig",
    "TrainSummary",
    "Trainer",
    "TrainingBatch",
    "check_against_onnxruntime",
    "collect_photos",
    "load_batch",
    "load_landmark_model",
    "load_recognizer",
    "prepare_dataset",
    "push_to_hub",
    "read_losses",
    "read_manifest",
    "read_records",
    "write_model_card",
]
