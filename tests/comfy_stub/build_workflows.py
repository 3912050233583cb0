"""Write the example workflows in workflows/ from the node schemas (run after changing a node's inputs).

    cd tests && python -m comfy_stub.build_workflows

The files are ComfyUI UI-format workflows; widget values follow each node's definition, so a
schema change is picked up by running this again. Thumbnails (``<name>.jpg``, what ComfyUI's
template browser shows) are screenshots of the canvas, made separately.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .harness import REPO, installed_pack, node_classes
from .workflow_tools import CORE_NODES, WorkflowBuilder, object_info_from_schema

WORKFLOWS_DIR = REPO / "workflows"
#: Input files the workflows name (put your own pictures under these names, or pick others in the nodes).
SOURCE_PHOTO = "facemagic_source.png"
TARGET_PHOTO = "facemagic_target.png"
TARGET_VIDEO = "facemagic_target.mp4"
GENERATOR = "inswapper_128"
COLUMN = 400


def _loaders(build: WorkflowBuilder, x: float = 0, y: float = 0) -> tuple[int, int]:
    analyzer = build.node("FaceMagicAnalyzerLoader", (x, y), size=(340, 150))
    generator = build.node("FaceMagicGeneratorLoader", (x, y + 190), widgets={"model": GENERATOR}, size=(340, 110))
    return analyzer, generator


def _source_identity(
    build: WorkflowBuilder, analyzer: int, *, with_target: bool = True, photo_y: float = 340, extract_y: float = 0
) -> tuple[int, int, int | None]:
    """The source photo (and, with ``with_target``, the target photo below it) and the Extract Identity node that
    reads the source: ``(source, extract, target)``."""
    source = build.node(
        "LoadImage", (0, photo_y), widgets={"image": SOURCE_PHOTO}, size=(340, 320), title="Source photo (the person)"
    )
    target = None
    if with_target:
        target = build.node(
            "LoadImage",
            (0, 700),
            widgets={"image": TARGET_PHOTO},
            size=(340, 320),
            title="Target photo (gets the face)",
        )
    extract = build.node("FaceMagicExtractIdentity", (COLUMN, extract_y), size=(340, 130))
    build.link(analyzer, "analyzer", extract, "analyzer")
    build.link(source, "IMAGE", extract, "images")
    return source, extract, target


def _feed_swap(
    build: WorkflowBuilder, swap: int, images: tuple[int, str], identity: tuple[int, str], generator: int, analyzer: int
) -> None:
    """Links a swap node's images, identity, generator and analyzer inputs."""
    build.link(images[0], images[1], swap, "images")
    build.link(identity[0], identity[1], swap, "identity")
    build.link(generator, "generator", swap, "generator")
    build.link(analyzer, "analyzer", swap, "analyzer")


def single_photo_swap(build: WorkflowBuilder) -> None:
    analyzer, generator = _loaders(build)
    source, extract, target = _source_identity(build, analyzer)
    assert target is not None
    chosen = build.node("PreviewImage", (2 * COLUMN, 0), size=(260, 280), title="Chosen source face")
    build.link(extract, "chosen faces", chosen, "images")
    swap = build.node("FaceMagicSwap", (COLUMN, 340), size=(340, 330))
    _feed_swap(build, swap, (target, "IMAGE"), (extract, "identity"), generator, analyzer)
    crops = build.node("PreviewImage", (COLUMN, 720), size=(260, 280), title="Swapped face")
    build.link(swap, "swapped crops", crops, "images")
    blend = build.node("FaceMagicBlend", (2 * COLUMN, 340), size=(320, 250))
    build.link(swap, "swap", blend, "swap")
    save = build.node(
        "SaveImage", (3 * COLUMN - 60, 340), widgets={"filename_prefix": "facemagic/swap"}, size=(400, 440)
    )
    build.link(blend, "images", save, "images")
    similarity = build.node("FaceMagicFaceSimilarity", (3 * COLUMN - 60, 0), size=(400, 250))
    build.link(analyzer, "analyzer", similarity, "analyzer")
    build.link(blend, "images", similarity, "images")
    build.link(extract, "identity", similarity, "identity")
    # The quality report (muted: unmute both nodes to judge the swap; the judge downloads dlib's recogniser).
    judge = build.node(
        "FaceMagicAnalyzerLoader", (4 * COLUMN - 40, 640), widgets={"model": "yunet_dlib"}, size=(360, 150),
        title="Judge (another recogniser)", mode=2,
    )  # fmt: skip
    quality = build.node(
        "FaceMagicSwapQuality", (4 * COLUMN - 40, 0), size=(360, 250), title="Swap quality report", mode=2
    )
    build.link(judge, "analyzer", quality, "analyzer")
    build.link(source, "IMAGE", quality, "source")
    build.link(target, "IMAGE", quality, "target")
    build.link(blend, "images", quality, "result")
    plot = build.node("PreviewImage", (4 * COLUMN - 40, 290), size=(360, 300), title="Quality plot", mode=2)
    build.link(quality, "plot", plot, "images")
    build.note(
        "Put a photo of the person into the source Load Image node and the picture to change into the target one. "
        f"The first run downloads the models into models/facemagic ({GENERATOR} and the buffalo_l analyzer). "
        "Face Similarity shows how much the result looks like the source person.",
        (2 * COLUMN, 620),
        size=(300, 170),
    )


def several_photos_mixed(build: WorkflowBuilder) -> None:
    analyzer, generator = _loaders(build)
    mix = build.node("FaceMagicMixIdentities", (2 * COLUMN, 200), widgets={"method": "mean"}, size=(340, 260))
    for number in range(3):
        photo = build.node(
            "LoadImage",
            (0, 340 + number * 300),
            widgets={"image": f"facemagic_photo_{number + 1}.png"},
            size=(340, 270),
            title=f"Photo {number + 1} of the person",
        )
        extract = build.node("FaceMagicExtractIdentity", (COLUMN, 340 + number * 300), size=(340, 130))
        build.link(analyzer, "analyzer", extract, "analyzer")
        build.link(photo, "IMAGE", extract, "images")
        build.link(extract, "identity", mix, f"identity_{number + 1}")
    build.keep_inputs(mix, 4)  # three connected and the next empty one, as the frontend extension shows them
    target = build.node(
        "LoadImage", (2 * COLUMN, 520), widgets={"image": TARGET_PHOTO}, size=(340, 320), title="Target photo"
    )
    swap = build.node("FaceMagicSwapFaces", (3 * COLUMN, 0), size=(340, 560))
    _feed_swap(build, swap, (target, "IMAGE"), (mix, "identity"), generator, analyzer)
    save = build.node("SaveImage", (4 * COLUMN, 0), widgets={"filename_prefix": "facemagic/mixed"}, size=(400, 440))
    build.link(swap, "images", save, "images")
    build.note(
        "Several photos of one person give a steadier identity than one. Mix Identities averages them (mean); "
        "weighted takes weights such as '2, 1, 1', median ignores one odd photo. A new identity input appears "
        "on the mix node when the last one is connected.",
        (2 * COLUMN, 880),
        size=(340, 150),
    )


def coarse_fine_mix(build: WorkflowBuilder) -> None:
    analyzer, generator = _loaders(build)
    people = []
    for number, (name, title) in enumerate(
        (("facemagic_person_a.png", "Person A: face shape"), ("facemagic_person_b.png", "Person B: details"))
    ):
        photo = build.node("LoadImage", (0, 340 + number * 330), widgets={"image": name}, size=(340, 300), title=title)
        extract = build.node("FaceMagicExtractIdentity", (COLUMN, 340 + number * 330), size=(340, 130))
        build.link(analyzer, "analyzer", extract, "analyzer")
        build.link(photo, "IMAGE", extract, "images")
        people.append(extract)
    mix = build.node("FaceMagicCoarseFineMix", (COLUMN, 0), widgets={"coarse_blocks": 3}, size=(340, 170))
    build.link(people[0], "identity", mix, "coarse")
    build.link(people[1], "identity", mix, "fine")
    build.link(generator, "generator", mix, "generator")
    target = build.node(
        "LoadImage", (2 * COLUMN, 420), widgets={"image": TARGET_PHOTO}, size=(340, 320), title="Target photo"
    )
    swap = build.node("FaceMagicSwap", (2 * COLUMN, 0), size=(340, 330))
    _feed_swap(build, swap, (target, "IMAGE"), (mix, "identity"), generator, analyzer)
    blend = build.node("FaceMagicBlend", (3 * COLUMN, 0), widgets={"colour": "lab"}, size=(320, 250))
    build.link(swap, "swap", blend, "swap")
    save = build.node(
        "SaveImage", (4 * COLUMN - 60, 0), widgets={"filename_prefix": "facemagic/coarse_fine"}, size=(400, 440)
    )
    build.link(blend, "images", save, "images")
    build.note(
        "The generator injects the identity at several blocks, coarse first. Coarse/Fine Mix gives the coarse blocks "
        "(face shape, proportions) person A and the fine blocks (skin, eyes, details) person B. "
        "It needs a generator that runs as a native torch module (inswapper_128 does, after conversion).",
        (3 * COLUMN, 300),
        size=(340, 170),
    )


def save_and_reuse_identity(build: WorkflowBuilder) -> None:
    analyzer = build.node("FaceMagicAnalyzerLoader", (0, 40), size=(340, 150))
    _, extract, _ = _source_identity(build, analyzer, with_target=False, photo_y=230, extract_y=40)
    save_identity = build.node("FaceMagicSaveIdentity", (COLUMN, 220), widgets={"name": "my_person"}, size=(340, 130))
    build.link(extract, "identity", save_identity, "identity")
    build.group("1. Extract and save the identity (run once)", (-20, -30, 2 * COLUMN, 620))
    muted = 2  # "never": left out of the run until unmuted (Ctrl+M)
    x0 = 2 * COLUMN + 40
    load = build.node("FaceMagicLoadIdentity", (x0, 40), widgets={"name": "my_person"}, size=(340, 80), mode=muted)
    generator = build.node(
        "FaceMagicGeneratorLoader", (x0, 160), widgets={"model": GENERATOR}, size=(340, 110), mode=muted
    )
    reuse_analyzer = build.node("FaceMagicAnalyzerLoader", (x0, 300), size=(340, 150), mode=muted)
    target = build.node(
        "LoadImage", (x0, 490), widgets={"image": TARGET_PHOTO}, size=(340, 320), title="Target photo", mode=muted
    )
    swap = build.node("FaceMagicSwapFaces", (x0 + COLUMN, 40), size=(340, 560), mode=muted)
    build.link(target, "IMAGE", swap, "images")
    build.link(load, "identity", swap, "identity")
    build.link(generator, "generator", swap, "generator")
    build.link(reuse_analyzer, "analyzer", swap, "analyzer")
    save = build.node(
        "SaveImage",
        (x0 + 2 * COLUMN, 40),
        widgets={"filename_prefix": "facemagic/reused"},
        size=(400, 440),
        mode=muted,
    )
    build.link(swap, "images", save, "images")
    build.group("2. Reuse it later: select this group and press Ctrl+M to unmute", (x0 - 20, -30, 3 * COLUMN + 80, 860))
    build.note(
        "Step 1 saves models/facemagic/identities/my_person.safetensors. Step 2 loads it, with no source photos, "
        "and swaps it in; it can live in any other workflow. Refresh the page to see new identities in the list.",
        (0, 600),
        size=(2 * COLUMN - 60, 110),
    )


def video_with_pose_check(build: WorkflowBuilder) -> None:
    analyzer, generator = _loaders(build)
    _, extract, _ = _source_identity(build, analyzer, with_target=False, photo_y=340, extract_y=0)
    video = build.node("LoadVideo", (0, 700), widgets={"file": TARGET_VIDEO}, size=(340, 320), title="Target video")
    parts = build.node("GetVideoComponents", (COLUMN, 700), size=(300, 100))
    build.link(video, "VIDEO", parts, "video")
    swap = build.node("FaceMagicSwap", (COLUMN, 200), widgets={"smoothing": 1.0, "no_face": "pass"}, size=(340, 330))
    _feed_swap(build, swap, (parts, "images"), (extract, "identity"), generator, analyzer)
    pose = build.node("FaceMagicPoseCheck", (2 * COLUMN, 0), widgets={"policy": "original"}, size=(340, 230))
    build.link(swap, "swap", pose, "swap")
    report = build.node("PreviewAny", (3 * COLUMN, 0), size=(460, 220), title="Pose report")
    build.link(pose, "report", report, "source")
    debug = build.node("PreviewImage", (3 * COLUMN, 260), size=(460, 360), title="Pose check: target green, result red")
    build.link(pose, "debug image", debug, "images")
    blend = build.node("FaceMagicBlend", (2 * COLUMN, 300), size=(320, 250))
    build.link(pose, "swap", blend, "swap")
    create = build.node("CreateVideo", (2 * COLUMN, 600), size=(300, 100))
    build.link(blend, "images", create, "images")
    build.link(parts, "fps", create, "fps")
    build.link(parts, "audio", create, "audio")
    save = build.node("SaveVideo", (3 * COLUMN, 660), widgets={"filename_prefix": "facemagic/video"}, size=(460, 400))
    build.link(create, "VIDEO", save, "video")
    build.note(
        "Every frame is swapped in chunks; smoothing steadies the face over time. The pose check compares head "
        "pose and landmarks of each swapped face with the original; with policy 'original' a face that fails keeps "
        "the original face in that frame. Frames without a face pass unchanged.",
        (COLUMN, 850),
        size=(340, 170),
    )


def video_two_people(build: WorkflowBuilder) -> None:
    analyzer, generator = _loaders(build)
    people = build.node("FaceMagicSwapSeveralPeople", (2 * COLUMN, 0), size=(360, 560))
    for number in range(2):
        photo = build.node(
            "LoadImage",
            (0, 340 + number * 300),
            widgets={"image": f"facemagic_person_{'ab'[number]}.png"},
            size=(340, 270),
            title=f"Person {number + 1} ({'left' if number == 0 else 'right'} in the video)",
        )
        extract = build.node("FaceMagicExtractIdentity", (COLUMN, 340 + number * 300), size=(340, 130))
        build.link(analyzer, "analyzer", extract, "analyzer")
        build.link(photo, "IMAGE", extract, "images")
        build.link(extract, "identity", people, f"identity_{number + 1}")
    video = build.node("LoadVideo", (0, 940), widgets={"file": TARGET_VIDEO}, size=(340, 320), title="Target video")
    parts = build.node("GetVideoComponents", (COLUMN, 940), size=(300, 100))
    build.link(video, "VIDEO", parts, "video")
    build.link(parts, "images", people, "images")
    build.link(generator, "generator", people, "generator")
    build.link(analyzer, "analyzer", people, "analyzer")
    report = build.node("PreviewAny", (3 * COLUMN, 0), size=(400, 200), title="What was swapped")
    build.link(people, "report", report, "source")
    create = build.node("CreateVideo", (3 * COLUMN, 260), size=(300, 100))
    build.link(people, "images", create, "images")
    build.link(parts, "fps", create, "fps")
    build.link(parts, "audio", create, "audio")  # the target's sound is kept
    save = build.node(
        "SaveVideo", (3 * COLUMN, 420), widgets={"filename_prefix": "facemagic/two_people"}, size=(460, 400)
    )
    build.link(create, "VIDEO", save, "video")
    build.note(
        "Two people, two identities, one node: line 1 of 'face choices' sends person 1 to face 0 counted left to "
        "right, line 2 sends person 2 to face 1. Faces are followed from frame to frame, so a face the detector "
        "misses for a few frames is still swapped and nobody changes person when they cross. Connect reference_1/2 "
        "(an identity of the person in the video) to pick faces by likeness instead. The video keeps its sound.",
        (2 * COLUMN, 620),
        size=(360, 390),
    )


def swap_edit_blend(build: WorkflowBuilder) -> None:
    analyzer, generator = _loaders(build)
    _, extract, target = _source_identity(build, analyzer)
    assert target is not None
    swap = build.node("FaceMagicSwap", (COLUMN, 200), widgets={"crop_output": "ffhq_512"}, size=(340, 360))
    _feed_swap(build, swap, (target, "IMAGE"), (extract, "identity"), generator, analyzer)
    edit = build.node(
        "ImageScaleBy",
        (2 * COLUMN, 200),
        widgets={"upscale_method": "lanczos", "scale_by": 2.0},
        size=(300, 110),
        title="Any IMAGE node (an upscale here)",
    )
    build.link(swap, "swapped crops", edit, "image")
    preview = build.node("PreviewImage", (2 * COLUMN, 360), size=(300, 320), title="Edited crops")
    build.link(edit, "IMAGE", preview, "images")
    blend = build.node("FaceMagicBlend", (3 * COLUMN, 200), size=(320, 280))
    build.link(swap, "swap", blend, "swap")
    build.link(edit, "IMAGE", blend, "crops")
    save = build.node(
        "SaveImage", (4 * COLUMN - 60, 200), widgets={"filename_prefix": "facemagic/edited"}, size=(400, 440)
    )
    build.link(blend, "images", save, "images")
    build.note(
        "Swap gives its crops out (crops output ffhq_512: 512 px faces aligned the way restorers expect). Put any "
        "IMAGE node between them and Blend's crops input: one crop per face, in the same order, square, any size. "
        "Blend maps each one back onto its face; outside the mask nothing changes.",
        (COLUMN, 620),
        size=(560, 170),
    )


def restore_with_occlusion(build: WorkflowBuilder) -> None:
    analyzer, generator = _loaders(build)
    _, extract, target = _source_identity(build, analyzer)
    assert target is not None
    swap = build.node("FaceMagicSwap", (COLUMN, 200), size=(340, 360))
    _feed_swap(build, swap, (target, "IMAGE"), (extract, "identity"), generator, analyzer)
    restorer = build.node("FaceMagicRestorerLoader", (2 * COLUMN, 0), widgets={"model": "codeformer"}, size=(340, 110))
    restore = build.node("FaceMagicRestoreFaces", (2 * COLUMN, 160), widgets={"fidelity": 0.7}, size=(340, 160))
    build.link(swap, "swap", restore, "swap")
    build.link(restorer, "restorer", restore, "restorer")
    crops = build.node("PreviewImage", (2 * COLUMN, 360), size=(300, 300), title="Restored faces")
    build.link(restore, "restored crops", crops, "images")
    occluder = build.node("FaceMagicMaskModelLoader", (2 * COLUMN, 700), widgets={"model": "xseg_1"}, size=(340, 110))
    face_mask = build.node("FaceMagicFaceMask", (3 * COLUMN, 420), widgets={"keep": "mouth"}, size=(340, 200))
    build.link(restore, "swap", face_mask, "swap")
    build.link(occluder, "mask model", face_mask, "occluder")
    blend = build.node("FaceMagicBlend", (3 * COLUMN, 100), size=(320, 280))
    build.link(restore, "swap", blend, "swap")
    build.link(face_mask, "mask", blend, "mask_input")
    save = build.node(
        "SaveImage", (4 * COLUMN - 40, 100), widgets={"filename_prefix": "facemagic/restored"}, size=(400, 440)
    )
    build.link(blend, "images", save, "images")
    build.note(
        "Restore Faces sharpens the swapped faces (CodeFormer here; gfpgan_1.4 is Apache-2.0) before Blend pastes "
        "them back. Face Mask keeps what covers the target face (hands, glasses, a microphone: XSeg) and, here, the "
        "target's own mouth; Blend uses it as its limit mask. Masks combine by minimum: each one only takes away.",
        (3 * COLUMN, 660),
        size=(420, 190),
    )


WORKFLOWS: dict[str, Callable[[WorkflowBuilder], None]] = {
    "facemagic_single_photo_swap": single_photo_swap,
    "facemagic_mix_several_photos": several_photos_mixed,
    "facemagic_coarse_fine_mix": coarse_fine_mix,
    "facemagic_save_and_reuse_identity": save_and_reuse_identity,
    "facemagic_video_pose_check": video_with_pose_check,
    "facemagic_video_two_people": video_two_people,
    "facemagic_swap_edit_blend": swap_edit_blend,
    "facemagic_restore_occlusion": restore_with_occlusion,
}


def pack_object_info() -> dict[str, dict[str, Any]]:
    """/object_info-like definitions of this pack's nodes (via the ComfyUI stand-in) and the core nodes used."""
    with tempfile.TemporaryDirectory() as models, installed_pack(Path(models)) as pack:
        info = {node_id: object_info_from_schema(cls.GET_SCHEMA()) for node_id, cls in node_classes(pack).items()}
    return {**CORE_NODES, **info}


def build_all(object_info: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    workflows = {}
    for name, draw in WORKFLOWS.items():
        build = WorkflowBuilder(object_info)
        draw(build)
        workflows[name] = build.workflow()
    return workflows


def main() -> None:
    for name, workflow in build_all(pack_object_info()).items():
        path = WORKFLOWS_DIR / f"{name}.json"
        path.write_text(json.dumps(workflow, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
