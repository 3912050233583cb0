"""Video I/O: sound copied through, animated WebP/APNG, truncated files, streaming memory, SIGTERM mid-write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image
from test_cli_swap import base_args as base_args  # the fixtures
from test_cli_swap import models as models
from test_video import BrightenSwapper, gradient_frames, leftovers
from test_video import analyzer as analyzer

from facemagic_core import video
from facemagic_core.analysis import FaceAnalyzer
from facemagic_core.errors import BadInputError
from facemagic_core.pipeline import SwapOptions, swap_video
from facemagic_core.types import Identity

REPO = Path(__file__).resolve().parents[1]


def write_tone(path: Path, seconds: float, rate: int = 44100) -> Path:
    """An audio-only file: an AAC sine tone of ``seconds``."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate)
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * rate)) / rate)).astype(np.float32)
        for start in range(0, tone.size, 1024):
            frame = av.AudioFrame.from_ndarray(tone[None, start : start + 1024], format="flt", layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def audio_seconds(path: Path) -> float:
    """Where the last sound packet of ``path`` ends, in seconds (0 without sound)."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return 0.0
        stream = container.streams.audio[0]
        ends = [float((p.pts + p.duration) * p.time_base) for p in container.demux(stream) if p.pts is not None]
    return max(ends, default=0.0)


def audio_payloads(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(container.streams.audio[0]) if p.size]


def test_sound_is_copied_and_trimmed_to_the_frames(tmp_path: Path) -> None:
    tone = write_tone(tmp_path / "tone.m4a", 3.0)
    clip = tmp_path / "clip.mp4"
    assert video.write_video(clip, gradient_frames(30), fps=10, audio_from=tone) == 30  # 3 s of pictures
    info = video.read_video_info(clip)
    assert info.has_audio and info.frame_count == 30
    assert audio_seconds(clip) == pytest.approx(3.0, abs=0.05)
    assert audio_payloads(clip) == audio_payloads(tone)[: len(audio_payloads(clip))]  # copied, not re-encoded

    short = tmp_path / "short.mkv"
    video.write_video(short, gradient_frames(12), fps=10, audio_from=clip)  # 1.2 s of the 3 s
    assert audio_seconds(short) == pytest.approx(1.2, abs=0.05)
    gif = tmp_path / "clip.gif"
    video.write_video(gif, gradient_frames(3), fps=10, audio_from=clip)  # a GIF has no sound: ignored
    assert video.read_video_info(gif).frame_count == 3


def test_swap_video_keeps_the_sound(clip_path: Path, analyzer: FaceAnalyzer, tmp_path: Path) -> None:
    frames = video.read_frames(clip_path, max_frames=12)
    fps = video.read_video_info(clip_path).fps
    target = tmp_path / "target.mp4"
    video.write_video(target, frames, fps=fps, audio_from=write_tone(tmp_path / "tone.m4a", 2.0))
    identity = Identity(np.ones(512, np.float32), embedding_model="arcface_w600k_r50")
    options = SwapOptions(chunk_size=4, no_face="pass")
    summary = swap_video(target, tmp_path / "out.mp4", identity, analyzer, BrightenSwapper(), options, max_frames=9)
    assert summary.audio and summary.frames == 9
    assert audio_seconds(tmp_path / "out.mp4") == pytest.approx(9 / fps, abs=0.05)
    silent = swap_video(target, tmp_path / "silent.mp4", identity, analyzer, BrightenSwapper(), options, audio=False)
    assert not silent.audio and not video.read_video_info(tmp_path / "silent.mp4").has_audio


@pytest.mark.parametrize("suffix", [".webp", ".apng", ".png"])
def test_animated_webp_and_apng_are_read_and_written_as_animations(tmp_path: Path, suffix: str) -> None:
    frames = gradient_frames(7)
    path = tmp_path / f"anim{suffix}"
    written = path if suffix != ".png" else path.with_suffix(".apng")  # an APNG named .png is read as one too
    assert video.write_video(written, iter([frames[:3], frames[3:]]), fps=8) == 7
    written.rename(path)
    assert video.is_video_path(path) and video.is_animation(path)
    info = video.read_video_info(path)
    assert (info.kind, info.frame_count, info.width, info.height) == ("animation", 7, 61, 45)
    assert info.fps == pytest.approx(8, rel=0.05)
    back = video.read_frames(path)
    assert back.shape == (7, 3, 45, 61)
    assert float((back - frames).abs().mean()) < (0.02 if suffix == ".webp" else 0.003)
    with Image.open(path) as picture:
        assert picture.info.get("loop") == 0  # loops forever, as GIFs do
    still = tmp_path / f"still{suffix if suffix != '.apng' else '.png'}"
    Image.new("RGB", (20, 20), "red").save(still)
    assert not video.is_animation(still) and not video.is_video_path(still)


def test_an_animated_webp_is_swapped_frame_by_frame(clip_path: Path, analyzer: FaceAnalyzer, tmp_path: Path) -> None:
    target = tmp_path / "target.webp"
    video.write_video(target, video.read_frames(clip_path, max_frames=6), fps=10)
    identity = Identity(np.ones(512, np.float32), embedding_model="arcface_w600k_r50")
    output = tmp_path / "out.webp"
    summary = swap_video(target, output, identity, analyzer, BrightenSwapper(), SwapOptions(no_face="pass"))
    assert summary.frames == 6 and video.read_video_info(output).frame_count == 6  # an animation, not a still
    assert float((video.read_frames(output) - video.read_frames(target)).mean()) > 0.005


def truncate(path: Path, fraction: float) -> Path:
    data = path.read_bytes()
    cut = path.with_name(f"cut_{path.name}")
    cut.write_bytes(data[: int(len(data) * fraction)])
    return cut


def test_a_truncated_gif_is_reported_with_its_frame(clip_path: Path) -> None:
    cut = truncate(clip_path, 0.6)
    with pytest.raises(BadInputError, match=r"ends inside frame 49 \(index 48\)") as error:
        for _ in video.iter_frames(cut, 8):
            pass
    assert str(cut) in str(error.value) and "--max-frames 48" in str(error.value.fix)
    assert video.read_frames(cut, max_frames=48).shape[0] == 48  # the frames before it are fine


def test_a_truncated_mp4_is_reported_with_its_frame(tmp_path: Path) -> None:
    whole = tmp_path / "whole.mp4"
    video.write_video(whole, torch.rand(40, 3, 64, 80), fps=10)  # noise: every frame takes room
    with pytest.raises(BadInputError, match=r"ends inside frame \d+ of 40") as error:
        video.read_frames(truncate(whole, 0.5))
    frame = int(str(error.value).split("ends inside frame ")[1].split(" ")[0])
    assert 5 < frame < 35


MEMORY_SCRIPT = """
import resource, sys, torch
from facemagic_core.video import write_video
count, path = int(sys.argv[1]), sys.argv[2]
base = torch.linspace(0, 1, 480)[None, None, :].expand(3, 360, 480)
def chunks():
    for start in range(0, count, 10):
        yield torch.stack([(base + 0.003 * (start + n)) % 1.0 for n in range(10)])
next(iter([write_video(path, chunks(), fps=25)]))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_kib(frames: int, path: Path) -> int:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(frames), str(path)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_writing_streams_memory_flat_in_frame_count(tmp_path: Path, suffix: str) -> None:
    short, long = peak_kib(50, tmp_path / f"a{suffix}"), peak_kib(200, tmp_path / f"b{suffix}")
    # 150 more 480x360 frames kept as palette pictures (what Pillow's save_all does) would be ~26 MB more.
    assert long - short < 12_000, (short, long)
    assert video.read_video_info(tmp_path / f"b{suffix}").frame_count == 200


SIGTERM_SCRIPT = """
import sys, time, torch
from facemagic_core.video import write_video
def chunks():
    for _ in range(1000):
        yield torch.rand(2, 3, 32, 48)
        print("writing", flush=True)
        time.sleep(0.05)
try:
    write_video(sys.argv[1], chunks(), fps=10)
except KeyboardInterrupt:
    sys.exit(130)
"""


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_sigterm_while_writing_leaves_no_partial_file(tmp_path: Path, suffix: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    output = tmp_path / f"out{suffix}"
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SIGTERM_SCRIPT), str(output)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "writing"
    assert any(name.endswith(f".partial{suffix}") for name in leftovers(tmp_path))  # the write is under way
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 130, process.stderr.read() if process.stderr else ""
    assert leftovers(tmp_path) == []


def test_frame_rate_fractions_are_kept() -> None:
    assert video._fraction(30000 / 1001) == Fraction(30000, 1001)
    assert video._fraction(100 / 9) == Fraction(100, 9)


def test_the_sound_survives_the_cli(
    clip_path: Path, models: dict[str, Path], base_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from facemagic_core.cli import main
    from facemagic_core.identity import save_identity

    fps = video.read_video_info(clip_path).fps
    target = tmp_path / "target.mp4"
    video.write_video(
        target, video.read_frames(clip_path, max_frames=8), fps, audio_from=write_tone(tmp_path / "t.m4a", 2)
    )
    identity = tmp_path / "person.safetensors"
    save_identity(Identity(np.random.default_rng(3).normal(size=512), embedding_model="arcface_w600k_r50"), identity)
    arguments = ["swap", "--identity", str(identity), "--target", str(target), "--generator", str(models["onnx"])]
    assert main([*arguments, "-o", str(tmp_path / "out.mp4"), "--max-frames", "6", *base_args]) == 0
    assert "sound was copied" in capsys.readouterr().out
    info = video.read_video_info(tmp_path / "out.mp4")
    assert info.has_audio and info.frame_count == 6 and (info.width, info.height) == (260, 229)
    assert audio_seconds(tmp_path / "out.mp4") == pytest.approx(6 / fps, abs=0.05)
    assert main([*arguments, "-o", str(tmp_path / "mute.mp4"), "--no-audio", *base_args]) == 0
    assert not video.read_video_info(tmp_path / "mute.mp4").has_audio
    assert main([*arguments, "-o", str(tmp_path / "out.gif"), "--max-frames", "2", *base_args]) == 0
    assert "cannot hold sound" in capsys.readouterr().out
