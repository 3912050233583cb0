"""``facemagic train``: train (or distill) a native FaceMagic generator on a prepared cache."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BadInputError
from ..files import check_outputs_not_inputs
from . import add_model_options, progress_printer
from . import identity as identity_command

if TYPE_CHECKING:
    from ..training.config import TrainConfig
    from ..training.data import FaceCache
    from ..training.distributed import DistributedContext
    from ..training.teachers import IdentityTeacher, LandmarkTeacherLike


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a native FaceMagic generator on a cache made by 'facemagic prepare'",
        description=identity_command.wrap_description(
            "Train the FaceMagic style-delta generator: reconstruction on same-image pairs, identity, relative "
            "identity, landmark and adversarial losses, per-block identity mixing; or distil a swapper you have "
            "(--distill-from) into a native generator. RUN_DIR receives checkpoint/ (config.json + "
            "model.safetensors, the EMA weights: give it to 'facemagic swap --generator'), losses.csv, sample grids "
            "and the training state for --resume. Started by torchrun, it trains on all its processes with "
            "DistributedDataParallel (one GPU each; gloo on CPUs): the config's batch_size is then per process, and "
            "process 0 writes RUN_DIR."
        ),
        epilog=(
            "examples:\n"
            "  facemagic train --data cache/ --config configs/base_256.json -o runs/base256\n"
            "  facemagic train --data cache/ -o runs/base256 --resume\n"
            "  facemagic train --data cache/ --config configs/base_256.json -o runs/distil "
            "--distill-from inswapper_128\n"
            "  facemagic train --data cache/ -o runs/base256 --resume --push-to-hub me/facemagic-256\n"
            "  torchrun --nproc-per-node 4 -m facemagic_core train --data cache/ --config configs/base_256.json "
            "-o runs/base256"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", type=Path, required=True, metavar="CACHE_DIR", help="cache made by facemagic prepare")
    parser.add_argument(
        "--config", type=Path, metavar="CONFIG", help="training config JSON (with --resume: default RUN_DIR's own)"
    )
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="RUN_DIR", help="run folder")
    parser.add_argument("--resume", action="store_true", help="continue the run saved in RUN_DIR exactly")
    parser.add_argument("--steps", type=int, metavar="N", help="train until this step (overrides the config)")
    parser.add_argument(
        "--distill-from",
        metavar="GENERATOR",
        help="a swapper to distil (registry name, .onnx file or native folder): its swaps supervise the student",
    )
    parser.add_argument("--push-to-hub", metavar="REPO", help="upload the final checkpoint to this Hub repository")
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: create the repository private")
    parser.add_argument(
        "--recognizer",
        metavar="MODEL",
        help="identity teacher: registry name (arcface_w600k_r50, dlib_resnet_v1) or .onnx (default: the config's)",
    )
    parser.add_argument(
        "--landmarks",
        metavar="MODEL",
        help="landmark teacher: faceapi_landmark68, pack/file or .onnx (default: the config's)",
    )
    add_model_options(parser)
    parser.set_defaults(handler=run_train)


def _load_config(args: argparse.Namespace) -> TrainConfig:
    from ..training.config import TrainConfig
    from ..training.trainer import CONFIG_FILE

    path = args.config
    if path is None:
        if not args.resume:
            raise BadInputError(
                "a new run needs --config", where="facemagic train", fix="give --config configs/base_256.json"
            )
        path = Path(args.output) / CONFIG_FILE
    config = TrainConfig.from_file(path)
    if args.steps is not None:
        if args.steps < 1:
            raise BadInputError(f"--steps must be at least 1, got {args.steps}", where="facemagic train")
        config = dataclasses.replace(config, steps=int(args.steps))
    return config


def _teachers(
    config: TrainConfig, args: argparse.Namespace, device: Any
) -> tuple[IdentityTeacher | None, LandmarkTeacherLike | None]:
    from ..training.teachers import load_identity_teacher, load_landmark_teacher

    if args.distill_from and not config.distill.keep_identity_losses:
        return None, None
    recognizer: IdentityTeacher | None = None
    landmarks: LandmarkTeacherLike | None = None
    weights = config.losses
    recognizer_name = args.recognizer or config.recognizer_model
    if (weights.identity > 0 or weights.relative_identity > 0) and recognizer_name:
        recognizer = load_identity_teacher(recognizer_name, Path(args.models), device=device)
    landmark_name = args.landmarks or config.landmark_model
    if weights.landmark > 0 and landmark_name:
        landmarks = load_landmark_teacher(landmark_name, Path(args.models), device=device)
    return recognizer, landmarks


def run_train(args: argparse.Namespace) -> int:
    from ..runtime import resolve_device
    from ..training.data import FaceCache
    from ..training.distributed import (
        context_from_environment,
        destroy_process_group,
        device_for,
        init_process_group,
    )

    config = _load_config(args)
    check_outputs_not_inputs([("-o", Path(args.output) / "*")], [Path(args.data) / "manifest.json"], where="train")
    context = context_from_environment()
    device = device_for(context, resolve_device(args.device))
    context = init_process_group(context, device)
    try:
        return _train(args, config, device, context, FaceCache(args.data))
    finally:
        destroy_process_group(context)


def _train(
    args: argparse.Namespace, config: TrainConfig, device: Any, context: DistributedContext, cache: FaceCache
) -> int:
    from ..generators import load_generator
    from ..training.publish import push_to_hub, write_model_card
    from ..training.trainer import Trainer

    teacher = None
    if args.distill_from:
        teacher = load_generator(args.distill_from, model_dir=args.models, device=device, dtype="fp32")
    recognizer, landmarks = _teachers(config, args, device)
    trainer = Trainer(
        config,
        cache,
        args.output,
        recognizer=recognizer,
        landmarks=landmarks,
        distill_from=teacher,
        device=device,
        resume=args.resume,
        distributed=context,
    )
    summary = trainer.train(progress=progress_printer("train: step") if context.is_main else None)
    if not context.is_main:
        return 0
    if context.active:
        print(f"trained on {context.world_size} processes ({context.backend}), {config.batch_size} faces each per step")
    shown = ("generator_loss", "reconstruction", "identity", "distill_l1")
    for label, losses in (("first", summary.first_losses), ("last", summary.last_losses)):
        if losses:
            values = ", ".join(f"{name} {losses[name]:.4f}" for name in shown if name in losses)
            print(f"{label} step: {values}")
    print(
        f"trained steps {summary.first_step} -> {summary.last_step} ({summary.seconds_per_step:.3f} s/step on "
        f"{device}); checkpoint: {summary.checkpoint}"
    )
    if args.push_to_hub and summary.checkpoint is not None:
        write_model_card(
            summary.checkpoint, step=summary.last_step, num_faces=len(cache), distilled_from=args.distill_from
        )
        url = push_to_hub(summary.checkpoint, args.push_to_hub, private=args.private)
        print(f"uploaded to {url}")
    return 0
