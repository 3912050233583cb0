"""``facemagic bench`` on a few small frames: the table's structure and that both paths made the same pictures."""

from __future__ import annotations

from pathlib import Path

import pytest

from facemagic_core.cli import main
from facemagic_core.cli.bench import BenchConfig, compare_outputs, format_table, inswapper_gflop, run_benchmark


def test_inswapper_flop_count_matches_the_public_model() -> None:
    assert inswapper_gflop(128) == pytest.approx(349.0, abs=1.0)  # MODELS.md: 349 GFLOP per face
    assert inswapper_gflop(32) == pytest.approx(inswapper_gflop(128) / 16, rel=0.02)  # ~quadratic in the width


def test_benchmark_table_and_comparable_outputs(clip_path: Path, yunet_path: Path) -> None:
    config = BenchConfig(
        clip=clip_path, frames=2, height=240, width=4, device="cpu", chunk=2, detector=yunet_path, repeats=2
    )
    result = run_benchmark(config)
    assert result.frames == 2 and result.faces == 2 and result.frame_size == (240, 272)
    assert result.pipeline_images.shape == (2, 3, 240, 272) and result.baseline_images.shape == (2, 240, 272, 3)
    for times in (result.pipeline, result.baseline):
        assert times.align > 0 and times.generator > 0 and times.paste > 0

    table = format_table(result)
    lines = table.splitlines()
    assert lines[0] == "FaceMagic swap benchmark"
    for label in ("device", "versions", "clip", "generator", "pipeline", "baseline", "detector", "timing"):
        assert any(line.strip().startswith(label) for line in lines), label
    assert "CPU" in table and "torch" in table and "onnxruntime" in table
    assert "width C=4" in table and "REDUCED" in table and "349 GFLOP" in table
    rows = {line[:26].strip(): line[26:].split() for line in lines if line.startswith("  ") and line[26:].strip()}
    for stage in ("detect (shared)", "align", "generator", "paste-back", "total"):
        pipeline_ms, baseline_ms = (float(value) for value in rows[stage])
        assert pipeline_ms > 0 and baseline_ms > 0
    assert rows["detect (shared)"][0] == rows["detect (shared)"][1]  # one detection, shared
    fps_pipeline, fps_baseline = (float(value) for value in rows["fps, end to end"])
    ratio_line = next(line for line in lines if "speed-up" in line)
    assert f"{fps_pipeline / fps_baseline:.2f}x end to end" in ratio_line

    markdown = format_table(result, markdown=True)
    assert "| ms per frame | FaceMagic pipeline | baseline (insightface-style) |" in markdown
    assert "**speed-up (pipeline / baseline)" in markdown

    # Same network, same weights, same faces: the swapped faces agree to rounding, the rest is untouched by both.
    similarity = compare_outputs(result)
    assert similarity["core_pixels"] > 1000
    assert similarity["core_mean"] < 1.5 and similarity["core_p99"] < 6.0  # of 255
    assert similarity["outside_max"] <= 0.5  # both keep the frame outside their masks (uint8 rounding only)


def test_bench_command_prints_the_table(clip_path: Path, yunet_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["bench", "--clip", str(clip_path), "--frames", "1", "--height", "120", "--width", "2", "--repeats", "1"]
    assert main([*args, "--device", "cpu", "--yunet", str(yunet_path), "--markdown"]) == 0
    printed = capsys.readouterr().out
    assert "| paste-back |" in printed and "speed-up" in printed and "outputs: the two paths differ by" in printed
