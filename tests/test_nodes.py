"""FaceMagic's ComfyUI nodes without ComfyUI: schemas, the model folder, progress, conversions, and
every node's ``execute`` on small inputs with tiny models, through the stand-in in tests/comfy_stub.
"""

from __future__ import annotations

import inspect
import os
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from comfy_stub.harness import REPO
from comfy_stub.samples import comfy_image, random_identity

from facemagic_core.analysis import FaceAnalyzer
from facemagic_core.errors import BadInputError, CancelledError, IncompatibleIdentityError, NoFaceError
from facemagic_core.identity import cosine_similarity, load_identity
from facemagic_core.types import Identity

#: Fixtures (models_dir, pack, nodes, analyzer, generator, person_a/b, identity_a/b) for the stand-in.
pytest_plugins = ["comfy_stub.fixtures"]

#: Every node the pack must register (the swap nodes join once facemagic_core.pipeline exists).
CORE_NODE_IDS = {
    "FaceMagicSwap",
    "FaceMagicPoseCheck",
    "FaceMagicBlend",
    "FaceMagicSwapFaces",
    "FaceMagicAnalyzerLoader",
    "FaceMagicGeneratorLoader",
    "FaceMagicExtractIdentity",
    "FaceMagicMixIdentities",
    "FaceMagicCoarseFineMix",
    "FaceMagicSaveIdentity",
    "FaceMagicLoadIdentity",
    "FaceMagicFaceSimilarity",
    "FaceMagicSwapSeveralPeople",
    "FaceMagicSwapQuality",
    "FaceMagicRestorerLoader",
    "FaceMagicMaskModelLoader",
    "FaceMagicRestoreFaces",
    "FaceMagicFaceMask",
}


# ---------------------------------------------------------------------------------------------------------------------
# Schemas


def test_the_pack_registers_every_node_once(nodes: dict[str, Any], pack: ModuleType) -> None:
    assert set(nodes) >= CORE_NODE_IDS
    expected_failures = set() if (REPO / "nodes" / "swap_nodes.py").exists() else {"swap_nodes"}
    assert set(pack.IMPORT_FAILURES) == expected_failures


def test_every_schema_is_complete(nodes: dict[str, Any]) -> None:
    display_names = set()
    for node_id, cls in nodes.items():
        schema = cls.GET_SCHEMA()  # validates unique ids, also between inputs and outputs (ComfyUI 0.3.6x rule)
        assert node_id.startswith("FaceMagic")
        assert schema.category == "FaceMagic"
        assert schema.display_name and schema.display_name.startswith("FaceMagic ")
        assert schema.description and len(schema.description) > 40, node_id
        display_names.add(schema.display_name)
        for item in [*schema.inputs, *schema.outputs]:
            assert item.tooltip and len(item.tooltip) > 10, f"{node_id}.{item.id} has no tooltip"
        for output in schema.outputs:
            assert output.display_name, f"{node_id} output {output.id} has no display name"
        if ".hidden" in inspect.getsource(cls):  # ComfyUI fills only the hidden inputs a schema declares
            assert schema.hidden, f"{node_id} reads hidden inputs its schema does not ask for"
    assert len(display_names) == len(nodes)


def test_execute_parameters_match_the_declared_inputs(nodes: dict[str, Any]) -> None:
    for node_id, cls in nodes.items():
        schema = cls.GET_SCHEMA()
        parameters = inspect.signature(cls.execute).parameters
        assert set(parameters) == {item.id for item in schema.inputs}, node_id
        for item in schema.inputs:
            has_default = parameters[item.id].default is not inspect.Parameter.empty
            assert has_default == item.optional, f"{node_id}.{item.id}: optional inputs, and only they, default"
            if item.optional:
                assert parameters[item.id].default is None


def test_custom_sockets_are_the_four_facemagic_types(nodes: dict[str, Any], pack: ModuleType) -> None:
    sockets = pack.nodes.sockets
    assert sockets.SOCKET_TYPES[:4] == (
        "FACEMAGIC_ANALYZER",
        "FACEMAGIC_GENERATOR",
        "FACEMAGIC_IDENTITY",
        "FACEMAGIC_SWAP",
    )
    assert sockets.SOCKET_TYPES[4:] == ("FACEMAGIC_RESTORER", "FACEMAGIC_MASK_MODEL")
    used = set()
    for cls in nodes.values():
        schema = cls.GET_SCHEMA()
        used |= {str(item.io_type) for item in [*schema.inputs, *schema.outputs]}
    core = {"IMAGE", "MASK", "STRING", "FLOAT", "INT", "BOOLEAN", "COMBO"}
    assert used - core <= set(sockets.SOCKET_TYPES)
    # defined once: io.Custom only in sockets.py
    for path in (REPO / "nodes").glob("*.py"):
        if path.name != "sockets.py":
            assert "io.Custom(" not in path.read_text(), path.name


def test_comfyui_is_imported_in_one_module_only() -> None:
    pattern = re.compile(r"^\s*(import|from)\s+(comfy|comfy_api|folder_paths|server|nodes)\b", re.MULTILINE)
    offenders = [
        path.name
        for path in (REPO / "nodes").glob("*.py")
        if path.name != "_comfy.py" and pattern.search(path.read_text())
    ]
    assert offenders == []
    assert pattern.search((REPO / "nodes" / "_comfy.py").read_text())


def test_a_broken_node_module_leaves_the_others_loaded(pack: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    package = pack.nodes
    monkeypatch.setattr(package, "NODE_MODULES", ("loader_nodes", "no_such_module", "identity_nodes"))
    classes = package.load_node_classes()
    assert {cls.GET_SCHEMA().node_id for cls in classes} >= {"FaceMagicAnalyzerLoader", "FaceMagicSaveIdentity"}
    assert list(package.IMPORT_FAILURES) == ["no_such_module"]
    assert "ModuleNotFoundError" in package.IMPORT_FAILURES["no_such_module"]


def test_the_frontend_extension_agrees_with_the_nodes(nodes: dict[str, Any], pack: ModuleType) -> None:
    """js/facemagic_logic.js repeats a few facts of the Python side; they must not drift apart."""
    from facemagic_core.cli import similarity

    script = (REPO / "js" / "facemagic_logic.js").read_text()
    constants = dict(re.findall(r"^export const (\w+) = ([^;]+);", script, flags=re.MULTILINE))
    mix_inputs = [item.id for item in nodes["FaceMagicMixIdentities"].GET_SCHEMA().inputs]
    prefix, count = constants["IDENTITY_PREFIX"].strip('"'), int(constants["MAX_IDENTITIES"])
    assert [name for name in mix_inputs if name.startswith(prefix)] == [f"{prefix}{n}" for n in range(1, count + 1)]
    assert constants["IDENTITY_TYPE"].strip('"') == pack.nodes.sockets.IDENTITY_TYPE
    assert float(constants["SAME_PERSON"]) == similarity.SAME_PERSON_THRESHOLD
    assert float(constants["DIFFERENT_PEOPLE"]) == similarity.DIFFERENT_PEOPLE_THRESHOLD
    shown = set(re.findall(r'"(FaceMagic\w+)"', constants["RESULT_NODES"]))
    with_results = {
        node_id for node_id, cls in nodes.items() if "text_ui(" in inspect.getsource(cls.execute)
    }  # the nodes whose results the extension shows on the canvas
    assert shown == with_results


def test_a_node_whose_schema_fails_leaves_the_others_loaded(pack: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """ComfyUI builds every schema in one loop and drops the whole pack when one raises; the pack checks first."""
    blend = pack.nodes.swap_nodes.FaceMagicBlend

    def broken(cls: type) -> Any:
        raise AttributeError("module 'facemagic_core.blend' has no attribute 'MASK_KINDS'")

    monkeypatch.setattr(blend, "define_schema", classmethod(broken))
    ids = {cls.GET_SCHEMA().node_id for cls in pack.nodes.load_node_classes()}
    assert "FaceMagicBlend" not in ids and {"FaceMagicSwap", "FaceMagicSwapFaces", "FaceMagicAnalyzerLoader"} <= ids
    assert list(pack.nodes.IMPORT_FAILURES) == ["swap_nodes.FaceMagicBlend"]
    assert "MASK_KINDS" in pack.nodes.IMPORT_FAILURES["swap_nodes.FaceMagicBlend"]
    monkeypatch.undo()
    assert len(pack.nodes.load_node_classes()) == len(CORE_NODE_IDS) and not pack.nodes.IMPORT_FAILURES


# ---------------------------------------------------------------------------------------------------------------------
# Model folder


def test_model_folder_is_registered_and_extra_paths_come_first(pack: ModuleType, models_dir: Path) -> None:
    import folder_paths

    folder = pack.nodes.model_folder
    paths, extensions = folder_paths.folder_names_and_paths["facemagic"]
    assert paths == [str(models_dir / "facemagic")]
    assert {".onnx", ".safetensors", ".json"} <= set(extensions)
    saved = folder_paths.folder_names_and_paths.pop("facemagic")
    try:  # as if extra_model_paths.yaml had a facemagic entry (ComfyUI reads it before custom nodes load)
        folder_paths.add_model_folder_path("facemagic", "/data/shared/facemagic")
        dirs = folder.register_model_folder()
        assert dirs == [Path("/data/shared/facemagic"), models_dir / "facemagic"]
        assert folder.register_model_folder() == dirs  # idempotent
        assert folder.download_dir() == Path("/data/shared/facemagic")
        assert folder.identities_dir() == Path("/data/shared/facemagic/identities")
    finally:
        folder_paths.folder_names_and_paths["facemagic"] = saved


@pytest.mark.parametrize(
    "name",
    ["../secret.onnx", "a/../../b.onnx", "/etc/passwd", "C:\\models\\x.onnx", "..\\x.onnx", "", "  ", "a/./../.."],
)
def test_names_outside_the_model_folder_are_refused(pack: ModuleType, name: str) -> None:
    with pytest.raises(BadInputError, match="name"):
        pack.nodes.model_folder.resolve_name(name, what="generator")


def test_names_resolve_inside_the_folder_and_links_may_not_leave_it(
    pack: ModuleType, models_dir: Path, tmp_path: Path
) -> None:
    folder = pack.nodes.model_folder
    assert folder.resolve_name("tiny_native", what="generator") == models_dir / "facemagic" / "tiny_native"
    outside = tmp_path / "outside.onnx"
    outside.write_bytes(b"x")
    link = models_dir / "facemagic" / "escape.onnx"
    link.symlink_to(outside)
    try:
        with pytest.raises(BadInputError, match="leads outside"):
            folder.resolve_name("escape.onnx", what="generator")
    finally:
        link.unlink()
    with pytest.raises(Exception, match="was not found") as missing:
        folder.resolve_name("nothing_here.onnx", what="generator")
    assert "models/facemagic" in str(missing.value) or "facemagic" in str(missing.value)


def test_generator_choices_list_registry_names_then_local_models(pack: ModuleType, models_dir: Path) -> None:
    folder = pack.nodes.model_folder
    facemagic = models_dir / "facemagic"
    (facemagic / "mine").mkdir()
    (facemagic / "mine" / "other.onnx").write_bytes(b"onnx")
    (facemagic / "inswapper_128.onnx").write_bytes(b"registry file")
    (facemagic / "identities").mkdir(exist_ok=True)
    (facemagic / "identities" / "x.onnx").write_bytes(b"not a generator")
    try:
        choices = folder.generator_choices()
        assert choices[: len(folder.swapper_names())] == folder.swapper_names()
        assert "inswapper_128" in choices and "hyperswap_1a_256" in choices
        local = choices[len(folder.swapper_names()) :]
        assert local == ["mine/other.onnx", "tiny_native"]  # no pack files, no registry file, no identities
    finally:
        (facemagic / "mine" / "other.onnx").unlink()
        (facemagic / "mine").rmdir()
        (facemagic / "inswapper_128.onnx").unlink()
        (facemagic / "identities" / "x.onnx").unlink()


# ---------------------------------------------------------------------------------------------------------------------
# Conversions, progress, cancellation


def test_image_and_mask_conversion_round_trips(pack: ModuleType) -> None:
    tensors = pack.nodes.tensors
    image = torch.rand(2, 40, 50, 3)
    core = tensors.images_to_core(image)
    assert core.shape == (2, 3, 40, 50) and core.dtype == torch.float32
    torch.testing.assert_close(core[1, 2], image[1, :, :, 2])
    assert torch.equal(tensors.images_to_comfy(core), image)
    rgba = torch.rand(1, 40, 50, 4)
    assert torch.equal(tensors.images_to_core(rgba), tensors.images_to_core(rgba[..., :3]))
    grey = torch.rand(1, 40, 50, 1)
    assert torch.equal(tensors.images_to_core(grey)[0, 0], tensors.images_to_core(grey)[0, 2])
    assert tensors.images_to_core(image[0]).shape == (1, 3, 40, 50)  # [H, W, C] without batch
    mask = torch.rand(3, 40, 50)
    assert tensors.masks_to_core(mask).shape == (3, 1, 40, 50)
    assert torch.equal(tensors.masks_to_comfy(tensors.masks_to_core(mask)), mask)
    with pytest.raises(BadInputError, match="channels"):
        tensors.images_to_core(torch.rand(1, 40, 50, 5))
    with pytest.raises(BadInputError, match="empty"):
        tensors.images_to_core(torch.rand(0, 40, 50, 3))


def test_progress_drives_the_bar_and_cancel_stops(pack: ModuleType) -> None:
    import comfy.model_management as model_management
    import comfy.utils

    progress_module = pack.nodes.progress
    comfy.utils.PROGRESS_UPDATES.clear()
    progress = progress_module.comfy_progress(node_id="7", what="test")
    progress(1, 4)
    progress(4, 4)
    assert comfy.utils.PROGRESS_UPDATES == [("7", 1, 4), ("7", 4, 4)]
    model_management.interrupt_current_processing(True)
    with pytest.raises(CancelledError, match="cancelled"):
        progress(2, 4)
    assert not model_management.processing_interrupted()  # the request is consumed once
    with pytest.raises(model_management.InterruptProcessingException), progress_module.comfy_errors():
        raise CancelledError("the run was cancelled")
    with pytest.raises(NoFaceError), progress_module.comfy_errors():  # other errors pass unchanged
        raise NoFaceError("no face")


# ---------------------------------------------------------------------------------------------------------------------
# Loaders


def test_analyzer_loader_uses_the_pack_in_the_model_folder(analyzer: FaceAnalyzer, models_dir: Path) -> None:
    assert isinstance(analyzer, FaceAnalyzer)
    assert analyzer.backend == "insightface" and analyzer.det_size == 320
    assert analyzer.embedding_model == "arcface_w600k_r50"
    assert (models_dir / "facemagic" / "facemagic-lock.json").is_file()  # files were verified and recorded


def test_analyzer_loader_reports_a_missing_model_offline(
    nodes: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(Exception, match=r"yunet|face_detection_yunet") as error:
        nodes["FaceMagicAnalyzerLoader"].run(model="yunet", device="cpu", det_size=320, det_threshold=0.5)
    assert "facemagic" in str(error.value)  # says which folder to put the file in


def test_generator_loader_hands_native_models_to_model_management(nodes: dict[str, Any]) -> None:
    import comfy.model_management as model_management

    handle = nodes["FaceMagicGeneratorLoader"].run(model="tiny_native", device="cpu", dtype="fp32")[0]
    assert handle.name == "tiny_native" and handle.managed
    assert handle.model.num_blocks == 6 and handle.model.device == torch.device("cpu")
    assert handle.patcher.model.generator is handle.model.module  # ComfyUI may set attributes on the container
    model_management.LOADED.clear()
    model_management.FULL_LOADS.clear()
    assert handle.ready() is handle.model
    assert [[handle.patcher]] == model_management.LOADED
    assert model_management.FULL_LOADS == [True]  # plain torch layers: never a partial (lowvram) load


def test_generator_loader_refuses_names_outside_the_folder(nodes: dict[str, Any]) -> None:
    with pytest.raises(BadInputError, match="outside"):
        nodes["FaceMagicGeneratorLoader"].run(model="../../tiny_native", device="cpu", dtype="fp32")


# ---------------------------------------------------------------------------------------------------------------------
# Identities


def test_extract_identity_gives_the_identity_and_the_chosen_face(
    nodes: dict[str, Any], analyzer: FaceAnalyzer, person_a: torch.Tensor, identity_a: Identity
) -> None:
    identity, preview = (
        nodes["FaceMagicExtractIdentity"]
        .run(analyzer=analyzer, images=person_a.repeat(2, 1, 1, 1), face_order="largest", face_index=0)
        .args
    )
    assert identity.num_blocks == 1 and identity.embedding_model == "arcface_w600k_r50"
    assert identity.sources == ("image 1", "image 2")
    assert cosine_similarity(identity, identity_a) == pytest.approx(1.0, abs=1e-5)  # two copies: the same person
    assert preview.shape == (2, 256, 256, 3) and preview.dtype == torch.float32
    assert float(preview.min()) == 0.0 and float(preview.max()) == pytest.approx(1.0, abs=1e-3)
    assert 0.02 < float(preview.mean()) < 0.2  # the white square ("face") fills part of the crop


def test_extract_identity_names_the_picture_without_a_face(
    nodes: dict[str, Any], analyzer: FaceAnalyzer, person_a: torch.Tensor
) -> None:
    images = torch.cat([person_a, comfy_image([])])
    with pytest.raises(NoFaceError, match="image 2 of 2"):
        nodes["FaceMagicExtractIdentity"].run(analyzer=analyzer, images=images, face_order="largest", face_index=0)
    with pytest.raises(NoFaceError, match="face index 1"):
        nodes["FaceMagicExtractIdentity"].run(analyzer=analyzer, images=person_a, face_order="largest", face_index=1)


def test_mix_identities_methods(nodes: dict[str, Any]) -> None:
    mix = nodes["FaceMagicMixIdentities"]
    a, b, c = random_identity(1), random_identity(2), random_identity(3)
    same = mix.run(identity_1=a, identity_2=a, method="mean", weights="", block_weights="")[0]
    np.testing.assert_allclose(same.embeddings, a.embeddings, atol=1e-6)
    mean = mix.run(identity_1=a, identity_3=b, identity_8=c, method="mean", weights="", block_weights="")[0]
    expected = (a.embeddings + b.embeddings + c.embeddings) / 3
    np.testing.assert_allclose(mean.embeddings, expected / np.linalg.norm(expected), atol=1e-5)
    weighted = mix.run(identity_1=a, identity_2=b, method="weighted", weights="3, 1", block_weights="")[0]
    assert weighted.weights == pytest.approx((0.75, 0.25))
    only_first = mix.run(identity_1=a, identity_2=b, method="slerp", weights="1 0", block_weights="")[0]
    np.testing.assert_allclose(only_first.embeddings, a.embeddings, atol=1e-6)
    per_block = mix.run(
        identity_1=a, identity_2=b, method="per_block", weights="", block_weights="1, 0\n1, 0\n0, 1\n0, 1"
    )[0]
    assert per_block.num_blocks == 4
    np.testing.assert_allclose(per_block.embeddings[0], a.embeddings[0], atol=1e-6)
    np.testing.assert_allclose(per_block.embeddings[3], b.embeddings[0], atol=1e-6)


def test_mix_identities_explains_bad_weights(nodes: dict[str, Any]) -> None:
    mix = nodes["FaceMagicMixIdentities"]
    a, b = random_identity(1), random_identity(2)
    with pytest.raises(BadInputError, match="cannot read the weights"):
        mix.run(identity_1=a, identity_2=b, method="weighted", weights="1, x", block_weights="")
    with pytest.raises(BadInputError, match="line 2 of the block weights has 1 numbers for 2"):
        mix.run(identity_1=a, identity_2=b, method="per_block", weights="", block_weights="1, 0\n1")
    with pytest.raises(BadInputError, match="block weights"):
        mix.run(identity_1=a, identity_2=b, method="per_block", weights="", block_weights="")
    with pytest.raises(IncompatibleIdentityError):
        mix.run(identity_1=a, identity_2=random_identity(4, model="other"), method="mean", weights="", block_weights="")


def test_coarse_fine_mix_takes_the_block_count_from_the_generator(nodes: dict[str, Any]) -> None:
    coarse, fine = random_identity(5), random_identity(6)
    handle = nodes["FaceMagicGeneratorLoader"].run(model="tiny_native", device="cpu", dtype="fp32")[0]
    mixed = nodes["FaceMagicCoarseFineMix"].run(
        coarse=coarse, fine=fine, coarse_blocks=2, num_blocks=99, generator=handle
    )[0]
    assert mixed.num_blocks == 6 and mixed.mode == "coarse_fine"
    np.testing.assert_allclose(mixed.embeddings[:2], np.repeat(coarse.embeddings, 2, axis=0), atol=1e-6)
    np.testing.assert_allclose(mixed.embeddings[2:], np.repeat(fine.embeddings, 4, axis=0), atol=1e-6)
    four = nodes["FaceMagicCoarseFineMix"].run(coarse=coarse, fine=fine, coarse_blocks=1, num_blocks=4)[0]
    assert four.num_blocks == 4
    with pytest.raises(BadInputError, match="generator has 6 blocks"):
        nodes["FaceMagicCoarseFineMix"].run(coarse=coarse, fine=fine, coarse_blocks=7, num_blocks=6, generator=handle)


def test_save_and_load_identity_round_trip(nodes: dict[str, Any], pack: ModuleType, models_dir: Path) -> None:
    identity = random_identity(7, rows=2)
    output = nodes["FaceMagicSaveIdentity"].run(identity=identity, name="people/anna", overwrite=True)
    assert output[0] is identity
    path = models_dir / "facemagic" / "identities" / "people" / "anna.safetensors"
    assert path.is_file() and "saved" in output.ui["text"][0]
    np.testing.assert_array_equal(load_identity(path).embeddings, identity.embeddings)
    assert "people/anna" in pack.nodes.model_folder.list_identities()
    load = nodes["FaceMagicLoadIdentity"]
    assert "people/anna" in load.GET_SCHEMA().inputs[0].options  # the dropdown lists saved identities
    assert load.validate_inputs(name="people/anna") is True
    loaded = load.run(name="people/anna")[0]
    np.testing.assert_array_equal(loaded.embeddings, identity.embeddings)
    with pytest.raises(BadInputError, match="already exists"):
        nodes["FaceMagicSaveIdentity"].run(identity=identity, name="people/anna", overwrite=False)
    assert "was not found" in load.validate_inputs(name="nobody")
    assert "outside" in load.validate_inputs(name="../../secret")
    with pytest.raises(BadInputError, match="outside"):
        nodes["FaceMagicSaveIdentity"].run(identity=identity, name="../escape", overwrite=True)


def test_save_identity_refuses_a_folder_link_leading_outside(
    nodes: dict[str, Any], models_dir: Path, tmp_path: Path
) -> None:
    link = models_dir / "facemagic" / "identities" / "linked"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(tmp_path, target_is_directory=True)
    try:
        with pytest.raises(BadInputError, match="leads outside"):
            nodes["FaceMagicSaveIdentity"].run(identity=random_identity(1), name="linked/anna", overwrite=True)
        assert list(tmp_path.iterdir()) == []  # nothing was written outside the model folder
    finally:
        link.unlink()


def test_load_identity_fingerprint_follows_the_file(nodes: dict[str, Any], models_dir: Path) -> None:
    """ComfyUI re-runs a node whose fingerprint changed: a file saved again must not come from its cache."""
    load, save = nodes["FaceMagicLoadIdentity"], nodes["FaceMagicSaveIdentity"]
    save.run(identity=random_identity(1), name="twice", overwrite=True)
    first = load.fingerprint_inputs(name="twice")
    assert load.fingerprint_inputs(name="twice") == first
    save.run(identity=random_identity(2), name="twice", overwrite=True)
    assert load.fingerprint_inputs(name="twice") != first
    assert "not found" in load.fingerprint_inputs(name="nobody")


def test_face_similarity_reads_out_per_image(
    nodes: dict[str, Any],
    analyzer: FaceAnalyzer,
    person_a: torch.Tensor,
    person_b: torch.Tensor,
    identity_a: Identity,
    identity_b: Identity,
) -> None:
    import comfy.utils

    node = nodes["FaceMagicFaceSimilarity"]
    images = torch.cat([person_a, person_b, comfy_image([])])
    comfy.utils.PROGRESS_UPDATES.clear()
    output = node.run(analyzer=analyzer, images=images, identity=identity_a, face_order="most_similar", face_index=0)
    assert [update[1:] for update in comfy.utils.PROGRESS_UPDATES] == [(3, 3)]
    similarity, report = output.args
    expected_b = float(cosine_similarity(identity_b, identity_a))
    assert similarity == pytest.approx((1.0 + expected_b) / 2, abs=1e-4)
    lines = report.splitlines()
    assert lines[0].startswith("mean similarity") and "2 of 3" in lines[0]
    assert lines[1].startswith("image 1: 1.000") and lines[3] == "image 3: no face"
    assert output.ui["facemagic_similarity"] == [similarity] and output.ui["text"] == [report]
    with pytest.raises(IncompatibleIdentityError, match="recogniser"):
        node.run(
            analyzer=analyzer,
            images=person_a,
            identity=random_identity(1, model="other"),
            face_order="largest",
            face_index=0,
        )


def test_generator_loader_downloads_into_the_model_folder_with_progress(
    nodes: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import comfy.model_management as model_management
    import comfy.utils
    import folder_paths
    from hub_server import FakeHub, point_hub_client_at

    from facemagic_core.generators import GeneratorConfig, InswapperGenerator, export_inswapper_onnx

    torch.manual_seed(2)
    onnx_file = export_inswapper_onnx(
        InswapperGenerator(GeneratorConfig.inswapper_layout(channels=4, image_size=128)), tmp_path / "served.onnx"
    )
    fresh = tmp_path / "facemagic"
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "facemagic", ([str(fresh)], {".onnx", ".json"}))
    with FakeHub() as hub:
        point_hub_client_at(hub.endpoint, monkeypatch)
        hub.add_file("facefusion/models-3.0.0", "inswapper_128.onnx", onnx_file.read_bytes())
        model_management.interrupt_current_processing(True)  # Cancel pressed: the download stops, leaves no file
        with pytest.raises(model_management.InterruptProcessingException):
            nodes["FaceMagicGeneratorLoader"].run(model="inswapper_128", device="cpu", dtype="fp32")
        assert not (fresh / "inswapper_128.onnx").exists()
        comfy.utils.PROGRESS_UPDATES.clear()
        handle = nodes["FaceMagicGeneratorLoader"].run(model="inswapper_128", device="cpu", dtype="fp32")[0]
    assert (fresh / "inswapper_128.onnx").read_bytes() == onnx_file.read_bytes()
    assert handle.model.num_blocks == 6 and handle.managed  # converted to the native module, under ModelPatcher
    size = onnx_file.stat().st_size
    assert comfy.utils.PROGRESS_UPDATES and comfy.utils.PROGRESS_UPDATES[-1][1:] == (size, size)


def test_save_identity_explains_a_name_the_file_system_refuses(nodes: dict[str, Any], models_dir: Path) -> None:
    """A 300-letter name reached ComfyUI as a bare OSError traceback ('File name too long')."""
    with pytest.raises(BadInputError, match="cannot save the identity") as error:
        nodes["FaceMagicSaveIdentity"].run(identity=random_identity(1), name="a" * 300, overwrite=True)
    assert error.value.fix and "shorter" in error.value.fix


@pytest.mark.parametrize("name", ["new\nline", "tab\there", "bell\x07"])
def test_names_with_control_characters_are_refused(nodes: dict[str, Any], pack: ModuleType, name: str) -> None:
    """A name typed with a newline (pasted text) made a file whose name has a line break in it."""
    with pytest.raises(BadInputError, match="control character"):
        nodes["FaceMagicSaveIdentity"].run(identity=random_identity(1), name=name, overwrite=True)
    assert "control character" in nodes["FaceMagicLoadIdentity"].validate_inputs(name=name)


def test_name_errors_read_as_english(pack: ModuleType) -> None:
    with pytest.raises(BadInputError) as error:
        pack.nodes.model_folder.check_relative_name("../x", what="identity")
    assert "an identity" in str(error.value) and "a identity" not in str(error.value)


def test_load_identity_validation_explains_a_name_too_long(nodes: dict[str, Any]) -> None:
    """An API prompt with a 300-letter name made validate_inputs raise OSError instead of returning a message."""
    message = nodes["FaceMagicLoadIdentity"].validate_inputs(name="a" * 300)
    assert isinstance(message, str) and "cannot be looked up" in message


def test_loader_fingerprints_follow_the_model_files(nodes: dict[str, Any], models_dir: Path) -> None:
    """A generator retrained into the same folder (or a model file replaced) must not come from ComfyUI's cache."""
    loader = nodes["FaceMagicGeneratorLoader"]
    weights = models_dir / "facemagic" / "tiny_native" / "model.safetensors"
    first = loader.fingerprint_inputs(model="tiny_native", device="cpu", dtype="fp32")
    assert loader.fingerprint_inputs(model="tiny_native", device="cpu", dtype="fp32") == first
    original = weights.read_bytes()
    try:
        weights.write_bytes(original + b" ")  # another file of another size
        assert loader.fingerprint_inputs(model="tiny_native", device="cpu", dtype="fp32") != first
    finally:
        weights.write_bytes(original)
    missing = loader.fingerprint_inputs(model="hyperswap_1a_256", device="cpu", dtype="fp32")
    assert "missing" in missing  # the loader downloads it, or says where to put it
    analyzer = nodes["FaceMagicAnalyzerLoader"]
    settings = {"model": "buffalo_l", "device": "cpu", "det_size": 320, "det_threshold": 0.5}
    pack = analyzer.fingerprint_inputs(**settings)
    detector = models_dir / "facemagic" / "buffalo_l" / "det_10g.onnx"
    stat = detector.stat()
    os.utime(detector, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert analyzer.fingerprint_inputs(**settings) != pack


def test_mix_identities_names_a_wrong_number_of_weights(nodes: dict[str, Any]) -> None:
    """'0' for two identities came back from core as 'got shape (1,)' without a fix."""
    mix = nodes["FaceMagicMixIdentities"]
    a, b = random_identity(1), random_identity(2)
    for method in ("weighted", "slerp"):
        with pytest.raises(BadInputError, match="1 weight for 2 connected identities") as error:
            mix.run(identity_1=a, identity_2=b, method=method, weights="0", block_weights="")
        assert error.value.fix and "2 numbers" in error.value.fix


def test_face_similarity_says_when_the_face_index_is_beyond_the_faces_found(
    nodes: dict[str, Any], analyzer: FaceAnalyzer, person_a: torch.Tensor, identity_a: Identity
) -> None:
    """face index 5 in a picture with one face read 'no face 5' / 'no face found in any image'."""
    output = nodes["FaceMagicFaceSimilarity"].run(
        analyzer=analyzer, images=person_a, identity=identity_a, face_order="largest", face_index=5
    )
    similarity, report = output.args
    assert similarity == 0.0
    assert report.splitlines() == ["no face measured in any image", "image 1: no face with index 5 (1 face found)"]


def test_face_similarity_without_a_face_sends_no_number_to_the_canvas(
    nodes: dict[str, Any], analyzer: FaceAnalyzer, identity_a: Identity
) -> None:
    """With no face measured, the canvas got similarity [0] and read 'likely different people'."""
    output = nodes["FaceMagicFaceSimilarity"].run(
        analyzer=analyzer, images=comfy_image([]), identity=identity_a, face_order="most_similar", face_index=0
    )
    similarity, report = output.args
    assert similarity == 0.0  # the FLOAT output still carries a number (documented: 0 when no face)
    assert output.ui == {"text": [report], "facemagic_similarity": []}
    assert report.splitlines() == ["no face measured in any image", "image 1: no face"]
