"""Inputs a newcomer or a hostile user gives ``facemagic swap`` and the pipeline: each must end in a clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import tiny_facemagic_config, write_arcface

from facemagic_core.analysis import FaceAnalyzer
from facemagic_core.cli import main
from facemagic_core.errors import BadInputError, NoFaceError
from facemagic_core.generators import SwapGenerator, TorchSwapper
from facemagic_core.identity import load_identity, save_identity
from facemagic_core.images import load_alpha, load_image, save_image
from facemagic_core.pipeline import SwapOptions, swap_faces
from facemagic_core.types import Identity

CPU = ["CPUExecutionProvider"]
#: Options that never reach a model (every case below is refused before anything is loaded), with the model folder.
OFFLINE = ["--detector", "yunet", "--device", "cpu", "--generator", "nothing", "--models"]


@pytest.fixture(scope="module")
def analyzer(yunet_path: Path, tmp_path_factory: pytest.TempPathFactory) -> FaceAnalyzer:
    recognizer = write_arcface(tmp_path_factory.mktemp("arcface") / "w600k_r50.onnx")
    return FaceAnalyzer(backend="yunet", detector=yunet_path, recognizer=recognizer, providers=CPU)


@pytest.fixture(scope="module")
def generator() -> TorchSwapper:
    torch.manual_seed(0)
    config = tiny_facemagic_config()
    return TorchSwapper(SwapGenerator.from_config(config).eval(), name="tiny", device="cpu")


def identity() -> Identity:
    vector = np.random.default_rng(0).standard_normal(512).astype(np.float32)
    return Identity(vector, embedding_model="arcface_w600k_r50")


def test_a_face_index_past_the_faces_found_says_how_many_faces_there_are(
    t1_path: Path, analyzer: FaceAnalyzer, generator: TorchSwapper
) -> None:
    image = load_image(t1_path)
    with pytest.raises(NoFaceError) as caught:
        swap_faces(image, identity(), analyzer, generator, SwapOptions(face_index=7))
    message = str(caught.value)
    assert "face index 7" in message and "only 6 face(s)" in message, message
    assert "from 0 to 5" in message and "'largest' order" in message, message
    with pytest.raises(NoFaceError, match=r"face index 7, 8 was asked for, but only 6"):
        swap_faces(image, identity(), analyzer, generator, SwapOptions(face_index=(7, 8)))


def test_a_face_index_given_twice_is_refused() -> None:
    with pytest.raises(BadInputError, match="more than once"):
        SwapOptions(face_index=(1, 1))
    with pytest.raises(BadInputError, match="more than once"):
        SwapOptions(face_index=[0, 2, 0])
    assert SwapOptions(face_index=(2, 0)).face_index == (2, 0)


def test_a_folder_as_target_is_named_a_folder(
    faces_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = str(faces_dir / "anni.jpg")
    code = main(
        [
            "swap",
            "--source",
            source,
            "--target",
            str(faces_dir),
            "-o",
            str(tmp_path / "o.png"),
            *OFFLINE,
            str(tmp_path / "models"),
        ]
    )
    error = capsys.readouterr().err
    assert code == 1 and "is a folder" in error and "does not exist" not in error, error


def test_the_output_may_not_replace_the_target_or_a_source(
    faces_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes((faces_dir / "iron_man.jpg").read_bytes())
    source = tmp_path / "me.png"
    source.write_bytes((faces_dir / "portrait_1.png").read_bytes())
    before = photo.read_bytes(), source.read_bytes()
    for output in (photo, tmp_path / "." / "photo.jpg", source):
        code = main(
            [
                "swap",
                "--source",
                str(source),
                "--target",
                str(photo),
                "-o",
                str(output),
                *OFFLINE,
                str(tmp_path / "models"),
            ]
        )
        error = capsys.readouterr().err
        assert code == 1 and "would replace an input file" in error, error
        assert "_swapped" in error, error
    assert (photo.read_bytes(), source.read_bytes()) == before


def test_a_photo_given_as_identity_or_an_identity_given_as_source_names_the_right_option(
    faces_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = str(faces_dir / "anni.jpg")
    output = str(tmp_path / "o.png")
    assert main(["swap", "--identity", photo, "--target", photo, "-o", output, *OFFLINE, str(tmp_path / "models")]) == 1
    error = capsys.readouterr().err
    assert "--identity takes identity files" in error and "--source anni.jpg" in error, error
    me = tmp_path / "me.safetensors"
    me.write_bytes(b"not used")
    assert main(["swap", "--source", str(me), "--target", photo, "-o", output, *OFFLINE, str(tmp_path / "models")]) == 1
    error = capsys.readouterr().err
    assert "this is an identity file" in error and "--identity me.safetensors" in error, error


@pytest.mark.parametrize(
    ("image", "name", "message"),
    [
        (torch.rand(64, 64, 3), "hwc.png", r"shape \(3, H, W\)"),  # channels last: OpenCV's assertion leaked out
        (torch.rand(4, 64, 64), "rgba.png", r"got \(4, 64, 64\)"),  # was written as a 4-channel PNG, channels mixed up
        (torch.rand(1, 1, 3, 64, 64), "five.png", r"got \(1, 1, 3, 64, 64\)"),  # was a RuntimeError from permute
        (torch.full((3, 64, 64), float("nan")), "nan.png", "NaN"),  # was written as a black picture
        (torch.full((3, 64, 64), 200.0), "bytes.png", "0..255"),  # was written as a white picture
        ((torch.rand(3, 64, 64) * 255).to(torch.uint8), "uint8.png", "float pixels"),  # was written wrapped around
        (np.zeros((3, 64, 64), np.float32), "array.png", "torch tensor"),  # was an AttributeError
        (torch.rand(3, 64, 64), "picture.txt", "suffix .txt"),  # OpenCV's error text leaked out
    ],
)
def test_save_image_refuses_what_it_cannot_write_faithfully(
    image: object, name: str, message: str, tmp_path: Path
) -> None:
    with pytest.raises(BadInputError, match=message):
        save_image(image, tmp_path / name)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_save_image_still_writes_an_rgb_picture_exactly(tmp_path: Path) -> None:
    image = torch.rand(1, 3, 40, 48)
    save_image(image, tmp_path / "ok.png")
    assert torch.equal(load_image(tmp_path / "ok.png"), (image * 255 + 0.5).floor().clamp(0, 255) / 255)


def test_identity_files_refuse_a_bare_array_and_a_folder(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="writes an Identity, got ndarray"):
        save_identity(np.ones(512, np.float32), tmp_path / "me.safetensors")  # type: ignore[arg-type]
    assert not (tmp_path / "me.safetensors").exists()
    folder = tmp_path / "people.safetensors"
    folder.mkdir()
    with pytest.raises(BadInputError, match="got a folder"):
        load_identity(folder)


def test_load_alpha_reads_the_transparency_of_rgba_and_palette_pictures_only(tmp_path: Path) -> None:
    rgba = np.zeros((40, 50, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[:, :10, 3] = 0
    rgba[:, 10:20, 3] = 128
    Image.fromarray(rgba).save(tmp_path / "cut.png")
    alpha = load_alpha(tmp_path / "cut.png")
    assert alpha is not None and alpha.shape == (1, 1, 40, 50)
    assert float(alpha[..., :10].max()) == 0.0 and float(alpha[..., 15].mean()) == pytest.approx(128 / 255)
    assert float(alpha[..., 20:].min()) == 1.0
    Image.fromarray(rgba[..., :3]).save(tmp_path / "opaque.png")
    Image.fromarray(np.full((40, 50, 4), 255, np.uint8)).save(tmp_path / "full.png")
    palette = Image.new("P", (50, 40), 1)
    palette.paste(0, (0, 0, 10, 40))
    palette.save(tmp_path / "palette.png", transparency=0)
    assert load_alpha(tmp_path / "opaque.png") is None and load_alpha(tmp_path / "full.png") is None
    from_palette = load_alpha(tmp_path / "palette.png")
    assert from_palette is not None and float(from_palette[..., :10].max()) == 0.0
    assert float(from_palette[..., 10:].min()) == 1.0


def test_save_image_writes_an_alpha_channel_into_png_and_drops_it_from_jpeg(tmp_path: Path) -> None:
    image = torch.rand(1, 3, 40, 50)
    alpha = torch.ones(1, 1, 40, 50)
    alpha[..., :10] = 0.0
    save_image(image, tmp_path / "cut.png", alpha=alpha)
    written = np.array(Image.open(tmp_path / "cut.png"))
    assert written.shape == (40, 50, 4) and written[:, :10, 3].max() == 0 and written[:, 10:, 3].min() == 255
    assert torch.equal(load_image(tmp_path / "cut.png"), (image * 255 + 0.5).floor() / 255)
    save_image(image, tmp_path / "cut.jpg", alpha=alpha)
    assert Image.open(tmp_path / "cut.jpg").mode == "RGB"
    with pytest.raises(BadInputError, match="alpha channel must have"):
        save_image(image, tmp_path / "bad.png", alpha=torch.ones(1, 1, 4, 4))


@pytest.fixture(scope="module")
def cli_models(yunet_path: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Options for an offline ``facemagic swap``: YuNet, a tiny ArcFace and a tiny native generator on the CPU."""
    folder = tmp_path_factory.mktemp("cli_models")
    torch.manual_seed(0)
    config = tiny_facemagic_config()
    SwapGenerator.from_config(config).save_pretrained(folder / "tiny")
    recognizer = write_arcface(folder / "w600k_r50.onnx")
    models = ["--detector", "yunet", "--detector-model", str(yunet_path), "--recognizer", str(recognizer)]
    return [*models, "--models", str(folder), "--device", "cpu", "--generator", str(folder / "tiny")]


def test_swapping_a_transparent_cut_out_keeps_its_transparency(
    faces_dir: Path, cli_models: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    portrait = np.array(Image.open(faces_dir / "anni.jpg").convert("RGBA"))
    portrait[:, : portrait.shape[1] // 4, 3] = 0  # a cut-out: the left quarter is transparent
    Image.fromarray(portrait).save(tmp_path / "cut.png")
    for name in ("out.png", "out.jpg"):
        files = ["--source", str(faces_dir / "arnold.jpg"), "--target", str(tmp_path / "cut.png")]
        assert main(["swap", *files, "-o", str(tmp_path / name), *cli_models]) == 0
    printed = capsys.readouterr().out
    written = np.array(Image.open(tmp_path / "out.png"))
    assert written.shape[2] == 4 and np.array_equal(written[..., 3], portrait[..., 3])
    changed = np.abs(written[..., :3].astype(int) - portrait[..., :3].astype(int)).max(axis=2) > 2
    assert changed.any() and not changed[:, : portrait.shape[1] // 4].any()  # the face changed, the cut-out not
    assert "which .jpg cannot hold; use .png" in printed


def test_identity_checks_its_output_and_preview_names_before_any_work(
    faces_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The identity file used to be written first and a bad --preview name refused after it (exit 1, half done)."""
    photo = str(faces_dir / "anni.jpg")
    output = tmp_path / "me.safetensors"
    offline = ["--detector", "yunet", "--models", str(tmp_path / "models"), "--device", "cpu"]
    assert main(["identity", photo, "-o", str(output), "--preview", str(tmp_path / "faces.txt"), *offline]) == 1
    error = capsys.readouterr().err
    assert "the preview is a picture" in error and "faces.png" in error, error
    (tmp_path / "taken").write_text("a file")
    assert main(["identity", photo, "-o", str(output), "--preview", str(tmp_path / "taken" / "p.png"), *offline]) == 1
    assert "is a file, so the output folder cannot be made" in capsys.readouterr().err
    assert not output.exists() and not (tmp_path / "models").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"width": 0}, "--width must be at least 1, got 0"),  # 0 silently meant the default width
        ({"width": -3}, "--width must be at least 1, got -3"),  # failed after reading and detecting every frame
        ({"height": 20000}, "--height must be from 64 to 4320"),  # scaled every frame to 22k x 20k pixels
        ({"repeats": 0}, "--repeats must be at least 1"),
    ],
)
def test_bench_names_the_option_out_of_range_before_reading_the_clip(
    options: dict[str, int], message: str, tmp_path: Path
) -> None:
    from facemagic_core.cli.bench import BenchConfig, run_benchmark

    with pytest.raises(BadInputError, match=message):
        run_benchmark(BenchConfig(clip=tmp_path / "never_read.gif", **options))  # type: ignore[arg-type]


def test_swap_faces_names_wrong_arguments_instead_of_failing_inside(
    t1_path: Path, analyzer: FaceAnalyzer, generator: TorchSwapper
) -> None:
    image = load_image(t1_path)[:, :, :300, :400]
    embedding = identity().embeddings[0]
    cases: list[tuple[tuple[object, ...], str]] = [
        ((image, embedding, analyzer, generator), "an Identity or a list of them, got ndarray"),  # iterated the array
        ((image, None, analyzer, generator), "got NoneType"),  # TypeError: not iterable
        ((image, iter([identity()]), analyzer, generator), "got list_iterator"),  # was consumed by the first check
        ((image, identity(), None, generator), "expected a face analyzer"),  # AttributeError
        ((image, identity(), analyzer, None), "expected a generator"),  # AttributeError
        ((image, identity(), analyzer, generator, {"weave": 2}), "expected SwapOptions, got dict"),  # AttributeError
    ]
    for arguments, message in cases:
        with pytest.raises(BadInputError, match=message):
            swap_faces(*arguments)  # type: ignore[arg-type]


def test_channels_last_images_are_recognised_as_such(analyzer: FaceAnalyzer) -> None:
    """ComfyUI's (B, H, W, C) layout was reported as '480-channel images'."""
    with pytest.raises(BadInputError, match=r"channels-last.*permute\(0, 3, 1, 2\)"):
        analyzer.analyze(torch.rand(1, 480, 640, 3))
    with pytest.raises(BadInputError, match="RGBA images are not supported"):
        analyzer.analyze(torch.rand(1, 4, 64, 64))


def test_checking_an_image_that_requires_grad_gives_no_warning() -> None:
    import warnings

    from facemagic_core.images import check_images

    image = torch.rand(1, 3, 64, 64, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_images(image) is image


def test_the_command_line_tells_its_version(capsys: pytest.CaptureFixture[str]) -> None:
    from facemagic_core import __version__

    with pytest.raises(SystemExit) as leaving:
        main(["--version"])
    assert leaving.value.code == 0 and capsys.readouterr().out.strip() == f"facemagic {__version__}"


def test_prepare_checks_its_folders_before_asking_for_models(
    faces_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """All three used to stop on the missing detector pack (offline) before the folder mistake was seen."""
    offline = ["--models", str(tmp_path / "models"), "--device", "cpu"]
    cases = [
        ([str(tmp_path / "none"), "-o", str(tmp_path / "cache")], "the data folder does not exist"),
        ([str(faces_dir / "anni.jpg"), "-o", str(tmp_path / "cache")], "prepare takes a folder of photos"),
        ([str(faces_dir), "-o", str(faces_dir / "anni.jpg")], "is a file, so the output folder cannot be made"),
    ]
    for arguments, message in cases:
        assert main(["prepare", *arguments, *offline]) == 1
        error = capsys.readouterr().err
        assert message in error and "not in the model folder" not in error, error
    assert not (tmp_path / "models").exists()


def test_a_gif_of_one_frame_may_be_saved_as_a_picture(
    faces_dir: Path, cli_models: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A still GIF was a 'video' whose output had to be .mp4 or .gif."""
    still = Image.open(faces_dir / "anni.jpg").convert("P")
    still.save(tmp_path / "still.gif")
    files = ["--source", str(faces_dir / "arnold.jpg"), "--target", str(tmp_path / "still.gif")]
    assert main(["swap", *files, "-o", str(tmp_path / "out.png"), *cli_models]) == 0
    assert "Swapped 1 face(s)" in capsys.readouterr().out
    written = load_image(tmp_path / "out.png")
    original = load_image(tmp_path / "still.gif")
    assert written.shape == original.shape and 0 < float((written - original).abs().amax()) < 1.0
    frames = [still, still.rotate(5)]
    frames[0].save(tmp_path / "moving.gif", save_all=True, append_images=frames[1:], duration=100)
    moving = ["--source", str(faces_dir / "arnold.jpg"), "--target", str(tmp_path / "moving.gif")]
    assert main(["swap", *moving, "-o", str(tmp_path / "moving.png"), *cli_models]) == 1
    assert "the output must be a video too" in capsys.readouterr().err
