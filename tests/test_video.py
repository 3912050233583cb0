"""Video and GIF reading in chunks, atomic writing, and swapping a video without leaving half a file behind."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import write_arcface

from facemagic_core import video
from facemagic_core.analysis import FaceAnalyzer
from facemagic_core.errors import BadInputError, CancelledError
from facemagic_core.generators import SwapOutput
from facemagic_core.pipeline import SwapOptions, swap_video
from facemagic_core.types import Identity


def gradient_frames(count: int, height: int = 45, width: int = 61) -> torch.Tensor:
    """Smooth, distinct frames (video codecs keep smooth pictures nearly exactly)."""
    ys, xs = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    frames = [torch.stack([xs, ys, torch.full_like(xs, (n + 1) / (count + 1))]) for n in range(count)]
    return torch.stack(frames) * 0.8 + 0.1


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_clip_info_and_chunks(clip_path: Path) -> None:
    info = video.read_video_info(clip_path)
    assert (info.kind, info.frame_count, info.width, info.height) == ("gif", 80, 260, 229)
    assert info.fps == pytest.approx(100 / 9, rel=1e-3)  # the GIF's delays are 0: OpenCV's 90 ms reading
    chunks = list(video.iter_frames(clip_path, 4, max_frames=10))
    assert [chunk.shape[0] for chunk in chunks] == [4, 4, 2]
    assert all(chunk.shape[1:] == (3, 229, 260) and chunk.dtype == torch.float32 for chunk in chunks)
    with Image.open(clip_path) as picture:
        picture.seek(5)
        expected = torch.from_numpy(np.array(picture.convert("RGB"))).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(chunks[1][1], expected, rtol=0, atol=0)
    assert video.read_frames(clip_path).shape[0] == 80


def test_gif_falls_back_to_pillow_when_opencv_cannot_open_it(clip_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with_opencv = video.read_frames(clip_path, max_frames=3)
    monkeypatch.setattr(video, "_open_capture", lambda file: None)
    assert torch.equal(video.read_frames(clip_path, max_frames=3), with_opencv)
    assert video.read_video_info(clip_path).fps == video.DEFAULT_GIF_FPS


def test_missing_or_unreadable_video_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "holiday.mp4"
    for call in (video.read_video_info, video.read_frames, lambda path: video.iter_frames(path, 4)):
        with pytest.raises(BadInputError, match="does not exist") as caught:
            call(missing)
        assert str(missing) in str(caught.value) and caught.value.fix
    garbage = tmp_path / "broken.mp4"
    garbage.write_bytes(b"not a video at all" * 50)
    with pytest.raises(BadInputError, match="cannot read the video") as caught:
        video.read_frames(garbage)
    assert str(garbage) in str(caught.value)


def test_mp4_round_trip_is_h264_and_keeps_frames_fps_and_odd_sizes(tmp_path: Path) -> None:
    frames = gradient_frames(6)
    path = tmp_path / "out.mp4"
    assert video.write_video(path, iter([frames[:4], frames[4:]]), fps=12.5) == 6
    info = video.read_video_info(path)
    assert (info.frame_count, info.width, info.height, info.has_audio) == (6, 61, 45, False)
    assert info.fps == pytest.approx(12.5)
    with av.open(str(path)) as container:  # stored as H.264 4:2:0 at even sizes, the true size in the comment
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")
        assert (stream.codec_context.width, stream.codec_context.height) == (62, 46)
    capture = cv2.VideoCapture(str(path))  # other players see the padded frames
    ok, first = capture.read()
    capture.release()
    assert ok and first.shape == (46, 62, 3)
    back = video.read_frames(path)
    assert back.shape == (6, 3, 45, 61)
    error = (back - frames).abs().mean(dim=(1, 2, 3))
    assert float(error.max()) < 0.01  # CRF 18: close to the pictures given (mp4v was ~0.03)
    assert leftovers(tmp_path) == ["out.mp4"]


def test_gif_round_trip(tmp_path: Path) -> None:
    frames = gradient_frames(5)
    path = tmp_path / "out.gif"
    video.write_video(path, frames, fps=10)
    info = video.read_video_info(path)
    assert (info.kind, info.frame_count, info.width, info.height) == ("gif", 5, 61, 45)
    assert info.fps == pytest.approx(10.0)
    back = video.read_frames(path)
    assert float((back - frames).abs().mean()) < 0.03  # 256-colour palette


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_a_failing_producer_leaves_nothing_behind(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"out{suffix}"

    def chunks() -> Iterator[torch.Tensor]:
        yield gradient_frames(3)
        raise CancelledError("cancelled by the user")

    with pytest.raises(CancelledError):
        video.write_video(path, chunks(), fps=10)
    assert leftovers(tmp_path) == []

    path.write_bytes(b"an older result")  # an existing file survives a failed rewrite
    with pytest.raises(CancelledError):
        video.write_video(path, chunks(), fps=10)
    assert path.read_bytes() == b"an older result" and leftovers(tmp_path) == [path.name]


def test_write_refuses_bad_names_and_empty_input(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="suffix"):
        video.write_video(tmp_path / "out.webm", gradient_frames(1), fps=10)
    with pytest.raises(BadInputError, match="frame rate"):
        video.write_video(tmp_path / "out.mp4", gradient_frames(1), fps=math.nan)
    with pytest.raises(BadInputError, match="no frames"):
        video.write_video(tmp_path / "out.mp4", iter([]), fps=10)
    assert leftovers(tmp_path) == []


def test_an_unwritable_output_is_refused_before_any_frame_is_made(tmp_path: Path) -> None:
    asked: list[int] = []

    def chunks() -> Iterator[torch.Tensor]:
        asked.append(1)  # a swap producing the frames would start here
        yield gradient_frames(2)

    blocker = tmp_path / "result.png"
    blocker.write_bytes(b"a picture")
    folder = tmp_path / "clip.mp4"
    folder.mkdir()
    with pytest.raises(BadInputError, match="is a file, so the output folder cannot be made there") as error:
        video.write_video(blocker / "sub" / "out.mp4", chunks(), fps=10)
    assert str(blocker / "sub" / "out.mp4") in str(error.value) and error.value.fix
    with pytest.raises(BadInputError, match="is a folder"):
        video.write_video(folder, chunks(), fps=10)
    assert asked == [] and sorted(leftovers(tmp_path)) == ["clip.mp4", "result.png"]
    assert video.check_output_path(tmp_path / "new" / "deeper" / "out.gif") == tmp_path / "new" / "deeper" / "out.gif"
    assert not (tmp_path / "new").exists()  # the check writes nothing that stays


# ---------------------------------------------------------------------------------------------------------------------
# Swapping a video


class BrightenSwapper:
    """A SwapModel stand-in that brightens the crop (enough to see that frames were swapped)."""

    name = "brighten"
    input_size = 64
    template = "arcface"
    embedding_model = "arcface_w600k_r50"
    num_blocks = 1
    device = torch.device("cpu")
    dtype = torch.float32

    def swap(
        self, crops: torch.Tensor, source: torch.Tensor, target: torch.Tensor, strength: torch.Tensor
    ) -> SwapOutput:
        return SwapOutput((crops + 0.3).clamp(0, 1))


@pytest.fixture(scope="module")
def analyzer(yunet_path: Path, tmp_path_factory: pytest.TempPathFactory) -> FaceAnalyzer:
    recognizer = write_arcface(tmp_path_factory.mktemp("arcface") / "w600k_r50.onnx")
    return FaceAnalyzer(backend="yunet", detector=yunet_path, recognizer=recognizer, providers=["CPUExecutionProvider"])


def test_swap_video_streams_chunks_and_keeps_the_frame_rate(
    clip_path: Path, analyzer: FaceAnalyzer, tmp_path: Path
) -> None:
    identity = Identity(np.ones(512, np.float32), embedding_model="arcface_w600k_r50")
    seen: list[tuple[int, int]] = []
    output = tmp_path / "swapped.gif"
    summary = swap_video(
        clip_path,
        output,
        identity,
        analyzer,
        BrightenSwapper(),
        SwapOptions(chunk_size=3, no_face="pass"),
        lambda done, total: seen.append((done, total)),
        max_frames=7,
    )
    assert seen == [(3, 7), (6, 7), (7, 7)]
    assert summary.frames == 7 and summary.face_counts == (1,) * 7 and summary.frames_without_face == ()
    info = video.read_video_info(output)
    assert info.frame_count == 7 and info.fps == pytest.approx(100 / 9, rel=0.1)  # GIF delays are whole 1/100 s
    before = video.read_frames(clip_path, max_frames=7)
    after = video.read_frames(output)
    assert float((after - before).mean()) > 0.005  # the faces were brightened


def test_cancelling_a_video_swap_writes_nothing(clip_path: Path, analyzer: FaceAnalyzer, tmp_path: Path) -> None:
    identity = Identity(np.ones(512, np.float32), embedding_model="arcface_w600k_r50")

    def cancel_after_first_chunk(done: int, total: int) -> None:
        if done >= 2:
            raise CancelledError("cancelled by the user", where=f"frame {done} of {total}")

    for name in ("swapped.mp4", "swapped.gif"):
        with pytest.raises(CancelledError):
            swap_video(
                clip_path,
                tmp_path / name,
                identity,
                analyzer,
                BrightenSwapper(),
                SwapOptions(chunk_size=2, no_face="pass"),
                cancel_after_first_chunk,
                max_frames=6,
            )
    assert leftovers(tmp_path) == []  # neither the output nor a temporary file
