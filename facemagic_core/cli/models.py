"""``facemagic models``: list, download and verify the model files, and check the onnxruntime install."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import FaceMagicError
from . import add_model_options


def _models_dir(args: argparse.Namespace) -> Path:
    from ..hub import check_model_dir

    return check_model_dir(args.models)


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Rows in columns padded to their widest cell (the last column is not padded)."""
    widths = [max(len(str(row[index])) for row in (header, *rows)) for index in range(len(header))]
    lines = []
    for row in (header, *rows):
        cells = [str(cell).ljust(width) for cell, width in zip(row[:-1], widths[:-1], strict=True)]
        lines.append("  ".join([*cells, str(row[-1])]).rstrip())
    return "\n".join(lines)


def markdown_models_table() -> str:
    """The registry as the rows of the README's models table (the README embeds this text verbatim)."""
    from ..hub import MODELS

    lines = []
    for spec in MODELS.values():
        repo_page = f"https://huggingface.co/{'datasets/' if spec.repo_type == 'dataset' else ''}{spec.repo_id}"
        file = f"`{spec.filename}`" if spec.filename else "the files at the repository root"
        local = f"`{spec.local_path}{'/' if spec.is_pack else ''}`"
        unconfirmed = "" if spec.source_confirmed else " (source unconfirmed)"
        source = f"{file} ([{spec.repo_id}]({repo_page})){unconfirmed}"
        lines.append(f"| {spec.name} | {spec.kind} | {source} | {local} | {spec.licence} |")
    return "\n".join(lines)


def run_list(args: argparse.Namespace) -> int:
    from ..hub import MODELS, model_status

    if args.markdown:
        print(markdown_models_table())
        return 0
    model_dir = _models_dir(args)
    rows = []
    for spec in MODELS.values():
        source = f"{'datasets/' if spec.repo_type == 'dataset' else ''}{spec.repo_id}/{spec.filename}".rstrip("/")
        local = spec.local_path + ("/" if spec.is_pack else "")
        rows.append([spec.name, spec.kind, source, local, model_status(spec, model_dir), spec.licence])
    print(f"model folder: {model_dir}")
    print(format_table(["NAME", "KIND", "HUB FILE", "LOCAL PATH", "STATUS", "LICENCE"], rows))
    print(
        "\nLicences are those of the weights as stated upstream; check them before any commercial use. "
        "Download with 'facemagic models download NAME'."
    )
    return 0


def run_download(args: argparse.Namespace) -> int:
    from ..hub import MODELS, ensure_model, get_model_spec, recorded_hashes

    model_dir = _models_dir(args)
    names = list(MODELS) if "all" in args.names else list(dict.fromkeys(args.names))
    specs = [get_model_spec(name) for name in names]  # unknown names fail before anything is downloaded
    failed = 0
    for spec in specs:
        try:
            path = ensure_model(spec, model_dir, verify="full" if args.verify else "fast")
        except FaceMagicError as error:
            print(f"{spec.name}: error: {error}", file=sys.stderr)
            failed += 1
            continue
        print(f"{spec.name}: {path}")
        for file, digest in recorded_hashes(spec, model_dir).items():
            print(f"  sha256 {digest}  {file.relative_to(path) if spec.is_pack else file.name}")
        if spec.licence:
            print(f"  licence: {spec.licence}")
    return 1 if failed else 0


def run_verify(args: argparse.Namespace) -> int:
    from ..hub import MODELS, get_model_spec, is_model_present, verify_model

    model_dir = _models_dir(args)
    specs = [get_model_spec(name) for name in args.names] if args.names else list(MODELS.values())
    checked = failed = 0
    for spec in specs:
        if not is_model_present(spec, model_dir):
            if args.names:
                print(f"{spec.name}: missing from {model_dir}", file=sys.stderr)
                failed += 1
            continue
        checked += 1
        try:
            verify_model(spec, model_dir, verify="full")
        except FaceMagicError as error:
            print(f"{spec.name}: FAILED: {error}", file=sys.stderr)
            failed += 1
        else:
            print(f"{spec.name}: ok")
    if not checked and not failed:
        print(f"no models in {model_dir}")
    return 1 if failed else 0


def runtime_plan(spec: Any, device: Any) -> tuple[str, str]:
    """Where the registry model ``spec`` runs when loaded for the torch ``device``: (runtime, device words).

    The rules the loaders apply: dlib's and face-api's networks are torch modules; YuNet runs in
    OpenCV on the CPU; inswapper-layout swappers follow :func:`..generators.choice.choose_swapper_runtime`;
    insightface's packs and ArcFace follow :func:`..torch_models.choose_runtime` (torch off the CPU); other ONNX
    models run in onnxruntime on the provider the device asks for, or the CPU.
    """
    from ..generators.choice import choose_swapper_runtime
    from ..runtime import CPU_PROVIDER, onnx_providers, usable_providers

    where = str(device)
    if spec.name in ("dlib_resnet_v1", "faceapi_landmark68"):
        return "torch", where
    if spec.name == "yunet":
        return "opencv", "cpu"
    if spec.kind == "swapper" and spec.embedding is not None and "emap" in spec.embedding:
        chosen = choose_swapper_runtime(device)
        if chosen == "both":
            return "onnxruntime (uniform swaps) + torch (per-block mixing)", "cpu"
        return f"torch (converted, checked against onnxruntime at load; {chosen})", where
    from ..torch_models import choose_runtime

    if spec.kind in ("pack", "recognizer") and choose_runtime("auto", device) == "torch":
        return "torch (converted, checked against onnxruntime at load)", where
    usable = usable_providers(onnx_providers("cpu" if device.type == "cpu" else str(device)))
    names = [name if isinstance(name, str) else name[0] for name in usable]
    gpu = [name for name in names if name != CPU_PROVIDER]
    return "onnxruntime", f"{gpu[0]}" if gpu else "cpu (CPUExecutionProvider)"


def run_doctor(args: argparse.Namespace) -> int:
    import torch

    from ..hub import MODELS, model_status
    from ..runtime import (
        available_providers,
        check_onnxruntime_install,
        cuda_unavailable_reason,
        installed_onnxruntime_distributions,
        onnx_providers,
        resolve_device,
    )

    installed = [f"{name} {version}" for name, version in installed_onnxruntime_distributions().items()]
    print(f"python: {sys.executable} ({sys.version.split()[0]})")
    print(f"onnxruntime distributions: {', '.join(installed) or 'none installed'}")
    print(f"onnxruntime providers available: {', '.join(available_providers()) or 'none (cannot import onnxruntime)'}")
    chosen = [spec if isinstance(spec, str) else f"{spec[0]} {spec[1]}" for spec in onnx_providers(args.device)]
    print(f"providers for --device {args.device}: {', '.join(chosen)}")
    cuda = f"CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s)" if torch.cuda.is_available() else "no CUDA"
    print(f"torch: {torch.__version__} ({cuda}, {torch.get_num_threads()} CPU threads)")
    if not torch.cuda.is_available():
        print(f"GPU: not used: {cuda_unavailable_reason()}")
    model_dir = _models_dir(args)
    print(f"model folder: {model_dir}")
    problems = 0
    try:
        device = resolve_device(args.device)
    except FaceMagicError as error:
        print(f"device {args.device}: PROBLEM: {error}")
        device, problems = torch.device("cpu"), problems + 1
    rows = []
    for spec in MODELS.values():
        runtime, where = runtime_plan(spec, device)
        rows.append((spec.name, spec.kind, model_status(spec, model_dir), runtime, where))
    print(f"where each model runs on {device}:")
    print(format_table(("model", "kind", "file", "runtime", "device"), rows))
    fix = check_onnxruntime_install()
    if fix is None:
        print("onnxruntime install: ok")
    else:
        print(f"onnxruntime install: PROBLEM: {fix}")
        problems += 1
    return 1 if problems else 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list, download and verify model files; check the onnxruntime install",
        description=(
            "Manage the model files FaceMagic uses. Files come from the Hugging Face Hub and are checked against "
            "the sha256 recorded in facemagic-lock.json in the model folder at their first download."
        ),
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")

    listing = actions.add_parser("list", help="the models FaceMagic knows, where they go, and which are present")
    add_model_options(listing, device=False)
    listing.add_argument("--markdown", action="store_true", help="print the registry as Markdown table rows")
    listing.set_defaults(handler=run_list)

    download = actions.add_parser(
        "download",
        help="download models (with progress) and print their paths and sha256",
        epilog="examples:\n  facemagic models download buffalo_l inswapper_128\n  facemagic models download all",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    download.add_argument(
        "names", nargs="+", metavar="NAME", help="registry names (see 'facemagic models list'), or all"
    )
    download.add_argument("--verify", action="store_true", help="hash present files again even if they look unchanged")
    add_model_options(download, device=False)
    download.set_defaults(handler=run_download)

    verify = actions.add_parser("verify", help="hash the model files present and compare with the lock file")
    verify.add_argument("names", nargs="*", metavar="NAME", help="models to check (default: every model present)")
    add_model_options(verify, device=False)
    verify.set_defaults(handler=run_verify)

    doctor = actions.add_parser(
        "doctor",
        help=(
            "show where each model runs (runtime, device), the onnxruntime providers and torch devices, and how "
            "to repair a broken install"
        ),
    )
    add_model_options(doctor)
    doctor.set_defaults(handler=run_doctor)

    def show_help(_args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(handler=show_help)
