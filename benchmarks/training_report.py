"""The report of a real training run: held-out identity gain and pose kept, curves, and the injection ablation.

For the held-out people of a prepared cache (``facemagic prepare`` on photos of people the run never
saw), each target face is swapped to the identity of another held-out person with the run's EMA
checkpoint. Measured, with the recogniser and landmark net given (the run's own teachers unless
others are given; say which in any report):

- identity: cosine similarity to the source's embedding of the target before the swap and of the
  result after it; the gain is the difference; retrieval top-1: how often the result is closer to its
  own source than to every other source of the evaluation;
- pose kept: mean distance of the 68 landmarks of the result to those of the target, over the
  inter-ocular distance, next to the same figure for the source face (what a result that copied the
  source would score);
- curves: the losses of one or two runs (``losses.csv``), smoothed, and the sample grid of swaps.

    python benchmarks/training_report.py --run RUN --ablation RUN2 --heldout CACHE \\
        --recognizer REC --landmarks LMK -o report/

Needs matplotlib for the curves (``pip install matplotlib``).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from facemagic_core.generators import load_generator
from facemagic_core.training.data import FaceCache
from facemagic_core.training.teachers import load_identity_teacher, load_landmark_teacher

CURVES = ("reconstruction", "identity", "relative_identity", "landmark")
#: 68-point indices of the eye corners (outer), for the inter-ocular distance.
LEFT_EYE, RIGHT_EYE = 36, 45


def held_out_pairs(cache: FaceCache, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` (target, source) rows of different people, drawn reproducibly."""
    generator = torch.Generator().manual_seed(seed)
    persons = cache.person_ids
    targets, sources = [], []
    while len(targets) < count:
        target, source = torch.randint(len(cache), (2,), generator=generator).tolist()
        if persons[target] != persons[source]:
            targets.append(target)
            sources.append(source)
    return torch.tensor(targets), torch.tensor(sources)


def evaluate(run: Path, cache: FaceCache, recognizer: str, landmarks: str, pairs: int, seed: int) -> dict[str, float]:
    device = torch.device("cpu")
    generator = load_generator(run / "checkpoint", model_dir=run, device=device, dtype="fp32")
    teacher = load_identity_teacher(recognizer, run, device=device)
    locator = load_landmark_teacher(landmarks, run, device=device)
    target_rows, source_rows = held_out_pairs(cache, pairs, seed)
    template = cache.template
    results, gains = [], {}
    with torch.no_grad():
        targets = cache.read_rows("crops", target_rows).float() / 255
        sources = cache.read_rows("crops", source_rows).float() / 255
        target_id = F.normalize(cache.read_rows("embeddings", target_rows).float(), dim=-1)
        source_id = F.normalize(cache.read_rows("embeddings", source_rows).float(), dim=-1)
        for start in range(0, pairs, 16):
            part = slice(start, start + 16)
            out = generator.swap(
                targets[part], source_id[part, None], target_id[part], torch.ones(targets[part].shape[0])
            )
            results.append(out.images)
        swapped = torch.cat(results)
        measured = {name: teacher.embed_crops(x, template=template) for name, x in
                    (("target", targets), ("source", sources), ("result", swapped))}  # fmt: skip
        before = (measured["target"] * measured["source"]).sum(-1)
        after = (measured["result"] * measured["source"]).sum(-1)
        to_target = (measured["result"] * measured["target"]).sum(-1)
        distinct = measured["source"]
        retrieval = (measured["result"] @ distinct.T).argmax(-1) == torch.arange(pairs)
        points = {name: locator.locate_crops(x, template=template) for name, x in
                  (("target", targets), ("source", sources), ("result", swapped))}  # fmt: skip
        ocular = (points["target"][:, LEFT_EYE] - points["target"][:, RIGHT_EYE]).norm(dim=-1)

        def landmark_error(name: str) -> float:
            return float(((points[name] - points["target"]).norm(dim=-1).mean(-1) / ocular).mean())

        gains = {
            "pairs": float(pairs),
            "similarity_to_source_before": float(before.mean()),
            "similarity_to_source_after": float(after.mean()),
            "identity_gain": float((after - before).mean()),
            "share_closer_to_source": float((after > before).float().mean()),
            "similarity_result_to_target": float(to_target.mean()),
            "retrieval_top1": float(retrieval.float().mean()),
            "landmark_error_result": landmark_error("result"),
            "landmark_error_source": landmark_error("source"),
        }
    grid = torch.cat([torch.cat([targets[i], sources[i], swapped[i]], dim=2) for i in range(min(8, pairs))], dim=1)
    picture = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(picture).save(run / "heldout_grid.png")
    return gains


def read_losses(run: Path) -> dict[str, np.ndarray]:
    with (run / "losses.csv").open() as file:
        rows = list(csv.DictReader(file))
    columns = {"step": np.array([float(row["step"]) for row in rows])}
    for name in (*CURVES, "seconds_per_step"):
        columns[name] = np.array([float(row[name]) if row[name] else np.nan for row in rows])
    return columns


def smooth(values: np.ndarray, width: int = 8) -> np.ndarray:
    kernel = np.ones(width) / width
    padded = np.concatenate([np.full(width - 1, values[0]), values])
    return np.convolve(padded, kernel, mode="valid")


def plot(runs: dict[str, Path], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(CURVES), figsize=(4 * len(CURVES), 3.2))
    for label, run in runs.items():
        losses = read_losses(run)
        for axis, name in zip(axes, CURVES, strict=True):
            axis.plot(losses["step"], smooth(losses[name]), label=label)
            axis.set_title(name.replace("_", " "))
            axis.set_xlabel("step")
            axis.grid(alpha=0.3)
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(out, dpi=110)


def compare_at_equal_steps(runs: dict[str, Path]) -> dict[str, dict[str, float]]:
    """Each run's smoothed losses at the last step both runs reached (the ablation's same budget)."""
    losses = {label: read_losses(run) for label, run in runs.items()}
    last = min(float(columns["step"].max()) for columns in losses.values())
    table = {}
    for label, columns in losses.items():
        index = int(np.searchsorted(columns["step"], last))
        window = slice(max(0, index - 7), index + 1)  # the last 8 logged points up to that step
        table[label] = {"step": last, **{name: float(np.nanmean(columns[name][window])) for name in CURVES}}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--ablation", type=Path, help="a second run with the same budget (plain AdaIN replacement)")
    parser.add_argument("--heldout", type=Path, required=True, help="facemagic prepare cache of held-out people")
    parser.add_argument("--recognizer", required=True)
    parser.add_argument("--landmarks", required=True)
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    cache = FaceCache(args.heldout)
    runs = {"increment": args.run}
    if args.ablation is not None:
        runs["replacement"] = args.ablation
    report: dict[str, object] = {
        label: evaluate(run, cache, args.recognizer, args.landmarks, args.pairs, args.seed)
        for label, run in runs.items()
    }
    report["equal_budget"] = compare_at_equal_steps(runs)
    plot(runs, args.output / "curves.png")
    (args.output / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
