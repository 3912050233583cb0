"""``facemagic bench`` on a few small frames: the table, the pairing, the ratio from the runs, and the outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facemagic_core.cli import main
from facemagic_core.cli.bench import (
    BenchConfig,
    BenchResult,
    FrameSource,
    SideTimes,
    compare_outputs,
    format_table,
    inswapper_gflop,
    run_benchmark,
    sample_photo,
)


def test_inswapper_flop_count_matches_the_public_model() -> None:
    assert inswapper_gflop(128) == pytest.approx(349.0, abs=1.0)  # MODELS.md: 349 GFLOP per face
    assert inswapper_gflop(32) == pytest.approx(inswapper_gflop(128) / 16, rel=0.02)  # ~quadratic in the width


def test_the_ratio_is_the_median_of_the_pairs_not_a_ratio_of_rounded_figures() -> None:
    result = BenchResult(
        config=BenchConfig(repeats=3), device_name="CPU x", versions={}, generator_runtime="g", baseline_kind="b",
        width=128, gflop_per_face=349, frame_size=(8, 8), frames=2, faces=2, threads=1, dtype="float32",
        decode=1.0, detect=1.0,
    )  # fmt: skip
    # Pair 2 ran while the machine was busy: both sides slower, its ratio still 2.0.
    result.pipeline_runs = [SideTimes(generator=2.0), SideTimes(generator=8.0), SideTimes(generator=1.0)]
    result.baseline_runs = [SideTimes(generator=6.0), SideTimes(generator=18.0), SideTimes(generator=10.0)]
    assert result.ratio == pytest.approx(2.0)  # pairs: 8/4, 20/10, 12/3 -> median 2
    assert result.ratio_swap == pytest.approx(3.0)  # 6/2, 18/8 = 2.25, 10/1 -> median 3
    assert result.median(result.pipeline_runs).generator == 2.0


def test_generated_frames_pan_and_are_made_chunk_by_chunk() -> None:
    source = FrameSource(None, 240)
    assert sample_photo().name == "t1.jpg"
    assert source.shape[0] == 240
    chunks = list(source.chunks(0, 5, 2))
    assert [len(chunk) for chunk in chunks] == [2, 2, 1]
    first, second = chunks[0]
    assert first.dtype == np.uint8 and first.shape == source.shape
    assert np.abs(first.astype(int) - second.astype(int)).mean() > 1  # the camera moves
    assert np.array_equal(source.frame(3), chunks[1][1])  # the same frame every time it is asked for


def test_benchmark_pairs_both_sides_on_the_same_faces(yunet_path: Path) -> None:
    config = BenchConfig(frames=2, height=360, faces=6, width=4, device="cpu", chunk=2, detector=yunet_path, repeats=2)
    result = run_benchmark(config)
    assert len(result.pipeline_runs) == len(result.baseline_runs) == 2
    assert result.frames == 2 and result.faces == 12  # t1.jpg: six faces, all found at 360 px
    for times in (*result.pipeline_runs, *result.baseline_runs):
        assert times.generator > 0 and times.paste > 0
    for times in result.pipeline_runs:
        assert times.convert > 0 and times.align > 0
    assert "onnxruntime" in result.generator_runtime  # on the CPU uniform swaps run in onnxruntime
    ratios = [
        result.total(theirs) / result.total(ours)
        for ours, theirs in zip(result.pipeline_runs, result.baseline_runs, strict=True)
    ]
    assert result.ratio == pytest.approx(float(np.median(ratios)))

    table = format_table(result)
    lines = table.splitlines()
    assert lines[0] == "FaceMagic swap benchmark"
    for label in ("device", "versions", "frames", "network", "FaceMagic", "baseline", "shared", "timing"):
        assert any(line.strip().startswith(label) for line in lines), label
    assert "NARROWED" in table and "insightface INSwapper.get(paste_back=True)" in table
    assert "on onnxruntime's CPUExecutionProvider" in table  # where the baseline really ran
    assert "6.0 faces swapped per frame" in table
    rows = {line[:26].strip(): line[26:].split() for line in lines if line.startswith("  ") and line[26:].strip()}
    for stage in ("decode (shared)", "detect (shared)", "generator", "total", "faces per second", "peak memory, MB"):
        assert len(rows[stage]) == 2, stage
    assert rows["detect (shared)"][0] == rows["detect (shared)"][1]
    assert f"{result.ratio:.2f}x end to end" in table
    markdown = format_table(result, markdown=True)
    assert "| ms per frame | FaceMagic | baseline (insightface INSwapper) |" in markdown

    # Same network and weights, same faces: both changed the faces, and agree closely where they did.
    similarity = compare_outputs(result)
    assert similarity["changed_ours"] > 0.01 and similarity["changed_theirs"] > 0.01
    assert similarity["mean"] < 10


def test_bench_help_names_no_paths_of_this_checkout(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    text = capsys.readouterr().out
    assert "shared" not in text and str(Path(__file__).resolve().parents[1]) not in text
    assert "--faces" in text and "4k" in text


def test_bench_command_prints_the_table(yunet_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["bench", "--frames", "1", "--height", "240", "--width", "2", "--repeats", "1", "--chunk", "1"]
    assert main([*args, "--device", "cpu", "--yunet", str(yunet_path), "--markdown"]) == 0
    printed = capsys.readouterr().out
    assert "| generator |" in printed and "speed-up" in printed and "outputs (first frame)" in printed
    assert main(["bench", "--height", "huge", "--device", "cpu", "--yunet", str(yunet_path)]) == 1
    assert "cannot read the height 'huge'" in capsys.readouterr().err
