"""``facemagic swap`` with --map, --reference, --gender/--age and --track-gap."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_cli_swap import base_args as base_args  # the fixtures
from test_cli_swap import models as models

from facemagic_core.cli import main
from facemagic_core.cli.mapping_options import parse_map_item
from facemagic_core.identity import save_identity
from facemagic_core.pipeline import SwapResult
from facemagic_core.types import Identity


def person(tmp_path: Path, seed: int) -> Path:
    path = tmp_path / f"person{seed}.safetensors"
    save_identity(Identity(np.random.default_rng(seed).normal(size=512), "arcface_w600k_r50"), path)
    return path


def recorded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, Any, SwapResult]]:
    import facemagic_core.cli.swap as swap_command

    seen: list[tuple[Any, Any, SwapResult]] = []
    real = swap_command.swap_faces

    def recording(images, identities, analyzer, generator, options, *args, **kwargs):  # type: ignore[no-untyped-def]
        result = real(images, identities, analyzer, generator, options, *args, **kwargs)
        seen.append((identities, options, result))
        return result

    monkeypatch.setattr(swap_command, "swap_faces", recording)
    return seen


def test_two_people_in_one_photo_get_two_identities(
    t1_path: Path,
    models: dict[str, Path],
    base_args: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen = recorded(monkeypatch)
    first, second = person(tmp_path, 1), person(tmp_path, 2)
    output = tmp_path / "group.png"
    arguments = ["swap", "--map", f"{first}=0", "--map", f"{second}=1", "--order", "left_to_right"]
    arguments += ["--target", str(t1_path), "-o", str(output), "--generator", str(models["native"]), *base_args]
    assert main(arguments) == 0
    out = capsys.readouterr().out
    assert "Swapped 2 face(s)" in out and "identity 0 -> face 0 counted in order; identity 1 -> face 1" in out
    ((identities, options, result),) = seen
    assert len(identities) == 2 and options.mapping is not None
    assert result.identity_index == (0, 1)
    left, right = result.faces
    assert left.center[0] < right.center[0]  # identity 0 went to the leftmost face, identity 1 to the next
    assert output.is_file()


def test_reference_with_a_threshold_swaps_nobody_else(
    faces_dir: Path,
    models: dict[str, Path],
    base_args: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen = recorded(monkeypatch)
    target = faces_dir / "iron_man.jpg"
    arguments = ["swap", "--identity", str(person(tmp_path, 1)), "--target", str(target), "--no-face", "pass"]
    arguments += ["--generator", str(models["native"]), *base_args]
    # The target itself as the reference: its face is found (similarity 1) ...
    assert main([*arguments, "-o", str(tmp_path / "a.png"), "--reference", str(target)]) == 0
    assert seen[-1][2].face_counts == (1,)
    # ... another person's photo with a strict threshold leaves the picture alone.
    other = ["--reference", str(faces_dir / "anni.jpg"), "--reference-threshold", "0.999"]
    assert main([*arguments, "-o", str(tmp_path / "b.png"), *other]) == 0
    assert seen[-1][2].face_counts == (0,) and "saved unchanged" in capsys.readouterr().out


def test_gender_filter_needs_a_genderage_model(
    faces_dir: Path, models: dict[str, Path], base_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arguments = ["swap", "--identity", str(person(tmp_path, 1)), "--target", str(faces_dir / "iron_man.jpg")]
    arguments += ["-o", str(tmp_path / "out.png"), "--gender", "male", "--generator", str(models["native"]), *base_args]
    assert main(arguments) == 1
    err = capsys.readouterr().err
    assert "filters by gender or age, but the faces have none" in err and "buffalo_l" in err
    assert not (tmp_path / "out.png").exists()


def test_map_items_are_parsed() -> None:
    item = parse_map_item("me.jpg=ref:bob.jpg")
    assert (item.source, item.choice.face_index, item.reference) == (Path("me.jpg"), 0, Path("bob.jpg"))
    choice = parse_map_item("her.safetensors=female,age:18-60").choice
    assert (choice.face_index, choice.gender, choice.min_age, choice.max_age) == (None, "female", 18, 60)
    assert parse_map_item("a.jpg=all").choice.face_index is None and parse_map_item("a.jpg=2").choice.face_index == 2
    for bad in ("a.jpg", "a.jpg=left", "a.jpg=age:40-20", "a.jpg=1,all", "a.jpg=ref"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_map_item(bad)
