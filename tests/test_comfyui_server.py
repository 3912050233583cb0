"""FaceMagic inside a real ComfyUI server, on the CPU, with tiny models.

Runs when ``COMFYUI_PATH`` points to a ComfyUI checkout (skipped with the reason otherwise)::

    COMFYUI_PATH=/path/to/ComfyUI \\
    COMFYUI_PYTHON=/path/to/python-with-comfyui-requirements \\   # default: this Python
    COMFYUI_PYTHONPATH=/path/to/extra/modules \\                  # optional, e.g. a torchvision stand-in
    COMFYUI_FRONTEND_ROOT=/path/to/frontend/static \\           # optional: another frontend (--front-end-root)
    python -m pytest tests/test_comfyui_server.py

The canvas tests also drive the frontend ComfyUI serves in headless Chromium through
``tests/js/canvas_check.mjs``; they need ``node``, a Chromium (``CHROMIUM``, default ``chromium``
on the path) and the npm package ``playwright-core`` (``PLAYWRIGHT_CORE``: its folder; default: the
global one, ``npm install -g playwright-core``), and are skipped with the reason otherwise.

The server starts with ``--cpu --base-directory <tmp>``: the pack is linked into
``<tmp>/custom_nodes``, test pictures and a short video go into ``<tmp>/input``. The tiny
models (a tiny buffalo_l pack and a tiny inswapper-layout ``inswapper_128.onnx``) go into
``<tmp>/shared/facemagic``, a folder given to ComfyUI through an ``extra_model_paths.yaml``
(``--extra-model-paths-config``), the way people share model folders. Downloads are switched
off (``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from comfy_stub import build_workflows
from comfy_stub.harness import REPO
from comfy_stub.samples import TINY_GENERATOR, random_identity, write_tiny_models
from comfy_stub.workflow_tools import CORE_NODES, FRONTEND_ONLY_NODES, load_workflow, ui_to_api, widget_layout
from tiny_models import bright_cell_image

from facemagic_core.identity import save_identity

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
pytestmark = pytest.mark.skipif(
    not COMFYUI_PATH, reason="COMFYUI_PATH is not set: these tests need a ComfyUI checkout to start a server"
)
START_TIMEOUT = 240.0
RUN_TIMEOUT = 300.0
PACK_FOLDER = "ComfyUI-FaceMagic"


@dataclass
class Server:
    url: str
    base: Path
    log: Path
    process: subprocess.Popen[bytes]

    def get(self, route: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{route}", timeout=60) as response:
            return json.loads(response.read())

    def post(self, route: str, payload: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            f"{self.url}{route}", data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:  # validation errors come back as 400 with a JSON body
            return {"http_error": error.code, **json.loads(error.read() or b"{}")}

    def run(self, prompt: dict[str, Any], timeout: float = RUN_TIMEOUT) -> dict[str, Any]:
        """Queue ``prompt`` and wait for its history entry."""
        queued = self.post("/prompt", {"prompt": prompt, "client_id": "facemagic-tests"})
        assert "prompt_id" in queued, f"the server refused the prompt: {json.dumps(queued)[:2000]}"
        prompt_id = queued["prompt_id"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                entry: dict[str, Any] = history[prompt_id]
                if entry["status"].get("status_str") in ("success", "error"):
                    return entry
            time.sleep(0.5)
        raise AssertionError(f"prompt {prompt_id} did not finish in {timeout} s; log: {self.log}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _write_inputs(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pictures = {
        build_workflows.SOURCE_PHOTO: [(5, 5, 255)],
        build_workflows.TARGET_PHOTO: [(4, 5, 235)],
        "facemagic_person_a.png": [(5, 4, 250)],
        "facemagic_person_b.png": [(6, 5, 225)],
        "facemagic_photo_1.png": [(5, 5, 255)],
        "facemagic_photo_2.png": [(5, 6, 245)],
        "facemagic_photo_3.png": [(4, 4, 240)],
        "facemagic_noface.png": [],
    }
    for name, cells in pictures.items():
        cv2.imwrite(str(folder / name), cv2.cvtColor(bright_cell_image(cells, 320), cv2.COLOR_RGB2BGR))
    writer = cv2.VideoWriter(str(folder / build_workflows.TARGET_VIDEO), cv2.VideoWriter_fourcc(*"mp4v"), 8, (320, 320))
    for frame in range(10):
        picture = bright_cell_image([(4 + frame % 3, 5, 240)] if frame != 6 else [], 320)  # frame 7 has no face
        writer.write(cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    writer.release()


def _write_models(facemagic: Path) -> None:
    from facemagic_core.generators import GeneratorConfig, InswapperGenerator, export_inswapper_onnx

    write_tiny_models(facemagic)
    torch.manual_seed(1)
    tiny_inswapper = InswapperGenerator(GeneratorConfig.inswapper_layout(channels=4, image_size=128))
    export_inswapper_onnx(tiny_inswapper, facemagic / "inswapper_128.onnx")
    assert TINY_GENERATOR.num_blocks == 6


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    assert COMFYUI_PATH is not None
    comfy = Path(COMFYUI_PATH)
    if not (comfy / "main.py").is_file():
        pytest.skip(f"COMFYUI_PATH={comfy} has no main.py")
    base = tmp_path_factory.mktemp("comfy_base")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / PACK_FOLDER).symlink_to(REPO, target_is_directory=True)
    shared = base / "shared"
    _write_models(shared / "facemagic")
    _write_inputs(base / "input")
    config = base / "extra_model_paths.yaml"
    config.write_text(f"facemagic_tests:\n    base_path: {shared}\n    facemagic: facemagic\n", encoding="utf-8")
    port = _free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    extra = os.environ.get("COMFYUI_PYTHONPATH")
    if extra:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [extra, env.get("PYTHONPATH")]))
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    log = base / "server.log"
    command = [
        python,
        "main.py",
        "--cpu",
        "--listen",
        "127.0.0.1",
        "--port",
        str(port),
        "--base-directory",
        str(base),
        "--extra-model-paths-config",
        str(config),
    ]
    if os.environ.get("COMFYUI_FRONTEND_ROOT"):
        command += ["--front-end-root", os.environ["COMFYUI_FRONTEND_ROOT"]]
    with open(log, "wb") as stream:
        process = subprocess.Popen(command, cwd=comfy, env=env, stdout=stream, stderr=subprocess.STDOUT)
    running = Server(url=f"http://127.0.0.1:{port}", base=base, log=log, process=process)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"ComfyUI exited with {process.returncode}:\n{running.log_text()[-4000:]}")
            try:
                running.get("/system_stats")
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    pytest.fail(f"ComfyUI did not start in {START_TIMEOUT} s:\n{running.log_text()[-4000:]}")
                time.sleep(1.0)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def object_info(server: Server) -> dict[str, Any]:
    info: dict[str, Any] = server.get("/object_info")
    return info


@pytest.fixture(scope="module")
def stub_info() -> dict[str, dict[str, Any]]:
    return build_workflows.pack_object_info()


def test_the_pack_loads_without_import_failures(server: Server, object_info: dict[str, Any]) -> None:
    log = server.log_text()
    assert "could not be loaded" not in log, log[-4000:]
    failed = [line for line in log.splitlines() if "IMPORT FAILED" in line and PACK_FOLDER in line]
    assert failed == []
    version = server.get("/system_stats")["system"].get("comfyui_version")
    print(f"ComfyUI {version}")


def test_object_info_lists_every_node_as_the_schemas_define_it(
    object_info: dict[str, Any], stub_info: dict[str, dict[str, Any]]
) -> None:
    ours = {name: info for name, info in stub_info.items() if name.startswith("FaceMagic")}
    in_examples = {
        node["type"] for path in (REPO / "workflows").glob("*.json") for node in load_workflow(path)["nodes"]
    }
    assert {name for name in in_examples if name.startswith("FaceMagic")} <= set(ours)  # every node, none failed
    assert set(ours) <= set(object_info)
    for name, info in ours.items():
        real = object_info[name]
        assert real["category"] == "FaceMagic" and real["display_name"] == info["display_name"]
        assert real["output"] == info["output"] and real["output_name"] == info["output_name"]
        for category in ("required", "optional"):
            assert real["input_order"].get(category, []) == info["input_order"][category], f"{name} {category}"
            for input_name, entry in info["input"][category].items():
                assert real["input"][category][input_name][0] == entry[0], f"{name}.{input_name}"
                assert real["input"][category][input_name][1].get("tooltip"), f"{name}.{input_name} has no tooltip"
        assert all(real["output_tooltips"]), f"{name} has an output without a tooltip"


def test_the_recorded_core_nodes_match_the_server(object_info: dict[str, Any]) -> None:
    for name, recorded in CORE_NODES.items():
        assert name in object_info, f"core node {name} is not on this ComfyUI"
        real = object_info[name]
        assert real["output"] == recorded["output"] and real["output_name"] == recorded["output_name"], name
        assert widget_layout(real) == widget_layout(recorded), name
        for category in ("required", "optional"):
            for input_name, entry in recorded["input"][category].items():
                kind = real["input"][category][input_name][0]
                assert (isinstance(kind, list) and entry[0] == "LIST") or kind == entry[0], f"{name}.{input_name}"


def _check_outputs(server: Server, entry: dict[str, Any]) -> list[Path]:
    files = []
    for output in entry["outputs"].values():
        for kind in ("images", "videos", "gifs"):
            for item in output.get(kind, []):
                if item.get("type") == "output":
                    path = server.base / "output" / item.get("subfolder", "") / item["filename"]
                    assert path.is_file() and path.stat().st_size > 0, path
                    files.append(path)
    return files


def _error_text(entry: dict[str, Any]) -> str:
    return json.dumps(entry["status"].get("messages", []))


@pytest.mark.parametrize("name", sorted(build_workflows.WORKFLOWS))
def test_example_workflow_runs_to_completion(server: Server, object_info: dict[str, Any], name: str) -> None:
    workflow = load_workflow(REPO / "workflows" / f"{name}.json")
    entry = server.run(ui_to_api(workflow, object_info))
    assert entry["status"]["status_str"] == "success", _error_text(entry)
    files = _check_outputs(server, entry)
    if name == "facemagic_save_and_reuse_identity":
        saved = server.base / "shared" / "facemagic" / "identities" / "my_person.safetensors"
        assert saved.is_file()  # in the folder extra_model_paths.yaml gave, the first of the facemagic folders
        assert files == []  # the reuse half is muted on the first run
        every = [node["id"] for node in workflow["nodes"] if node["type"] not in FRONTEND_ONLY_NODES]
        second = server.run(ui_to_api(workflow, object_info, unmute=every))
        assert second["status"]["status_str"] == "success", _error_text(second)
        files = _check_outputs(server, second)
    assert files, f"{name} wrote no output file"
    if name == "facemagic_video_pose_check":
        pose = next(output for output in entry["outputs"].values() if "facemagic_pose" in output)
        report = pose["text"][0]
        assert report.splitlines()[-1].endswith("faces passed")
        assert pose["facemagic_pose"][0]["faces"] == 9  # ten frames, one without a face
        assert any(path.suffix == ".mp4" for path in files)


def test_a_missing_face_is_reported_by_name(server: Server, object_info: dict[str, Any]) -> None:
    workflow = load_workflow(REPO / "workflows" / "facemagic_single_photo_swap.json")
    for node in workflow["nodes"]:
        if node["type"] == "LoadImage" and node.get("title", "").startswith("Source"):
            node["widgets_values"][0] = "facemagic_noface.png"
    entry = server.run(ui_to_api(workflow, object_info))
    assert entry["status"]["status_str"] == "error"
    text = _error_text(entry)
    assert "NoFaceError" in text and "no face was found" in text and "image 1 of 1" in text


def test_a_missing_model_says_where_to_put_it(server: Server, object_info: dict[str, Any]) -> None:
    workflow = load_workflow(REPO / "workflows" / "facemagic_single_photo_swap.json")
    for node in workflow["nodes"]:
        if node["type"] == "FaceMagicGeneratorLoader":
            node["widgets_values"][0] = "hyperswap_1a_256"  # not in the folder, and downloads are off
    entry = server.run(ui_to_api(workflow, object_info))
    assert entry["status"]["status_str"] == "error"
    text = _error_text(entry)
    assert "ModelNotFoundError" in text and "hyperswap_1a_256" in text and "facemagic" in text


def test_cancel_stops_a_long_swap(server: Server, object_info: dict[str, Any]) -> None:
    workflow = load_workflow(REPO / "workflows" / "facemagic_single_photo_swap.json")
    prompt = ui_to_api(workflow, object_info)
    repeat = {"class_type": "RepeatImageBatch", "inputs": {"image": None, "amount": 400}}
    swap_id = next(key for key, node in prompt.items() if node["class_type"] == "FaceMagicSwap")
    repeat["inputs"]["image"] = prompt[swap_id]["inputs"]["images"]
    prompt["9001"] = repeat
    prompt[swap_id]["inputs"]["images"] = ["9001", 0]
    queued = server.post("/prompt", {"prompt": prompt, "client_id": "facemagic-tests"})
    prompt_id = queued["prompt_id"]
    deadline = time.monotonic() + 120
    while "FaceMagic swap" not in server.log_text() and time.monotonic() < deadline:
        progress = server.get("/queue")
        if progress["queue_running"]:
            time.sleep(1.0)
            break
        time.sleep(0.2)
    time.sleep(2.0)  # inside the swap's chunks by now
    started = time.monotonic()
    server.post("/interrupt", {})
    while time.monotonic() < started + 60:
        history = server.get(f"/history/{prompt_id}")
        if prompt_id in history:
            break
        time.sleep(0.2)
    stopped_after = time.monotonic() - started
    entry = server.get(f"/history/{prompt_id}")[prompt_id]
    messages = [message[0] for message in entry["status"]["messages"]]
    assert "execution_interrupted" in messages, messages
    assert stopped_after < 30, f"the swap took {stopped_after:.1f} s to stop"


def test_images_keep_their_batch_and_size(server: Server, object_info: dict[str, Any]) -> None:
    """A grey (one-channel) PNG target goes through: converted to RGB at the node boundary."""
    grey = (bright_cell_image([(4, 5, 235)], 320)[:, :, 0]).astype(np.uint8)
    cv2.imwrite(str(server.base / "input" / "facemagic_grey.png"), grey)
    workflow = load_workflow(REPO / "workflows" / "facemagic_single_photo_swap.json")
    for node in workflow["nodes"]:
        if node["type"] == "LoadImage" and node.get("title", "").startswith("Target"):
            node["widgets_values"][0] = "facemagic_grey.png"
    entry = server.run(ui_to_api(workflow, object_info))
    assert entry["status"]["status_str"] == "success", _error_text(entry)
    [saved] = [path for path in _check_outputs(server, entry) if "swap" in path.name]
    picture = cv2.imread(str(saved))
    assert picture.shape == (320, 320, 3)


def test_an_identity_file_changed_on_disk_is_read_again(server: Server) -> None:
    """Load Identity reads a file: when the file changes (saved again, copied over), the cached output is not used."""
    analyzer = {
        "class_type": "FaceMagicAnalyzerLoader",
        "inputs": {"model": "buffalo_l", "device": "auto", "det_size": 320, "det_threshold": 0.5},
    }
    save = {
        "1": analyzer,
        "2": {"class_type": "LoadImage", "inputs": {"image": "facemagic_person_a.png"}},
        "3": {
            "class_type": "FaceMagicExtractIdentity",
            "inputs": {"analyzer": ["1", 0], "images": ["2", 0], "face_order": "largest", "face_index": 0},
        },
        "4": {
            "class_type": "FaceMagicSaveIdentity",
            "inputs": {"identity": ["3", 0], "name": "changed", "overwrite": True},
        },
    }
    measure = {
        "1": analyzer,
        "2": save["2"],
        "5": {"class_type": "FaceMagicLoadIdentity", "inputs": {"name": "changed"}},
        "6": {
            "class_type": "FaceMagicFaceSimilarity",
            "inputs": {
                "analyzer": ["1", 0],
                "images": ["2", 0],
                "identity": ["5", 0],
                "face_order": "most_similar",
                "face_index": 0,
            },
        },
    }
    assert server.run(save)["status"]["status_str"] == "success"
    first = server.run(measure)
    assert first["outputs"]["6"]["facemagic_similarity"][0] == pytest.approx(1.0, abs=1e-4), _error_text(first)
    path = server.base / "shared" / "facemagic" / "identities" / "changed.safetensors"
    save_identity(random_identity(9), path)  # e.g. saved again with the command line
    second = server.run(measure)
    assert second["status"]["status_str"] == "success", _error_text(second)
    assert abs(second["outputs"]["6"]["facemagic_similarity"][0]) < 0.5  # another person now


def test_a_generator_replaced_on_disk_is_loaded_again(server: Server) -> None:
    """The loaders fingerprint their model files: a generator retrained into its folder is not served from the cache."""
    from facemagic_core.generators import FaceMagicGenerator

    prompt = {
        "1": {
            "class_type": "FaceMagicAnalyzerLoader",
            "inputs": {"model": "buffalo_l", "device": "auto", "det_size": 320, "det_threshold": 0.5},
        },
        "2": {"class_type": "LoadImage", "inputs": {"image": "facemagic_person_a.png"}},
        "3": {
            "class_type": "FaceMagicExtractIdentity",
            "inputs": {"analyzer": ["1", 0], "images": ["2", 0], "face_order": "largest", "face_index": 0},
        },
        "4": {
            "class_type": "FaceMagicGeneratorLoader",
            "inputs": {"model": "tiny_native", "device": "auto", "dtype": "auto"},
        },
        "5": {
            "class_type": "FaceMagicSwap",
            "inputs": {
                "images": ["2", 0],
                "identity": ["3", 0],
                "generator": ["4", 0],
                "analyzer": ["1", 0],
                "strength": 1.0,
                "face_order": "largest",
                "face_index": 0,
                "weave": 1,
                "smoothing": 0.0,
                "no_face": "error",
            },
        },
        "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 1], "filename_prefix": "facemagic_retrained"}},
    }

    def crops() -> np.ndarray:
        entry = server.run(prompt)
        assert entry["status"]["status_str"] == "success", _error_text(entry)
        [item] = entry["outputs"]["6"]["images"]
        picture = cv2.imread(str(server.base / "output" / item.get("subfolder", "") / item["filename"]))
        assert picture is not None and picture.shape == (64, 64, 3)  # the tiny generator's crops
        return np.asarray(picture)

    folder = server.base / "shared" / "facemagic" / "tiny_native"
    saved = {path: path.read_bytes() for path in folder.iterdir() if path.is_file()}
    first = crops()
    try:
        torch.manual_seed(123)
        FaceMagicGenerator(TINY_GENERATOR).save_pretrained(folder)  # retrained into the same folder
        assert not np.array_equal(crops(), first)
    finally:
        for path, content in saved.items():  # as the other tests expect it
            path.write_bytes(content)
    np.testing.assert_array_equal(crops(), first)


# ---------------------------------------------------------------------------------------------------------------------
# The canvas: the frontend ComfyUI serves, in headless Chromium

CANVAS_WORKFLOW = "facemagic_single_photo_swap"
PACK_SCRIPTS = f"/extensions/{PACK_FOLDER}/"


def _save_identity_prompt(name: str) -> dict[str, Any]:
    return {
        "1": {
            "class_type": "FaceMagicAnalyzerLoader",
            "inputs": {"model": "buffalo_l", "device": "auto", "det_size": 320, "det_threshold": 0.5},
        },
        "2": {"class_type": "LoadImage", "inputs": {"image": "facemagic_person_b.png"}},
        "3": {
            "class_type": "FaceMagicExtractIdentity",
            "inputs": {"analyzer": ["1", 0], "images": ["2", 0], "face_order": "largest", "face_index": 0},
        },
        "4": {"class_type": "FaceMagicSaveIdentity", "inputs": {"identity": ["3", 0], "name": name, "overwrite": True}},
    }


def _browser_tools() -> tuple[str, str, str]:
    """node, Chromium and playwright-core, or a skip saying which is missing."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the canvas check runs in node with playwright-core")
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no Chromium (set CHROMIUM or install it, e.g. apt-get install chromium)")
    playwright = os.environ.get("PLAYWRIGHT_CORE")
    if playwright is None:
        npm = shutil.which("npm")
        root = subprocess.run([npm, "root", "-g"], capture_output=True, text=True).stdout.strip() if npm else ""
        playwright = str(Path(root) / "playwright-core") if root else ""
    if not (Path(playwright) / "package.json").is_file():
        pytest.skip("playwright-core not found (set PLAYWRIGHT_CORE to its folder or npm install -g playwright-core)")
    return node, chromium, playwright


@pytest.fixture(scope="module")
def canvas(server: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What tests/js/canvas_check.mjs saw: the shipped workflow loaded, queued twice from the canvas."""
    node, chromium, playwright = _browser_tools()
    out = Path(os.environ.get("FACEMAGIC_CANVAS_OUT") or tmp_path_factory.mktemp("canvas"))
    out.mkdir(parents=True, exist_ok=True)
    save_prompt = out / "save_prompt.json"  # saves an identity while the page is open, for the refresh button
    save_prompt.write_text(json.dumps(_save_identity_prompt("canvas_refreshed")), encoding="utf-8")
    command = [
        node,
        str(REPO / "tests" / "js" / "canvas_check.mjs"),
        *("--url", server.url, "--chromium", chromium, "--playwright", playwright, "--out", str(out)),
        *("--workflow", str(REPO / "workflows" / f"{CANVAS_WORKFLOW}.json")),
        *("--mix", str(REPO / "workflows" / "facemagic_mix_several_photos.json")),
        *("--save-prompt", str(save_prompt)),
        *(
            ("--settings", os.environ["FACEMAGIC_CANVAS_SETTINGS"])
            if os.environ.get("FACEMAGIC_CANVAS_SETTINGS")
            else ()
        ),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"the canvas check failed:\n{done.stderr[-4000:]}\nserver log: {server.log}"
    report: dict[str, Any] = json.loads(done.stdout)
    (out / "report.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    report["out"] = out
    return report


def test_an_unchanged_workflow_queued_again_from_the_canvas_executes_nothing(canvas: dict[str, Any]) -> None:
    """The result box was sent with the prompt (the frontend reads widget.options.serialize): its new text
    made the second run execute Face Similarity again, and everything after it."""
    first, second = canvas["runs"]
    assert first["status"] == "success", first["errors"]
    assert second["status"] == "success", second["errors"]
    for prompt in (first["prompt"], second["prompt"]):
        sent = {name for node in prompt.values() for name in node["inputs"]}
        assert "facemagic_result" not in sent
    assert first["prompt"] == second["prompt"]
    assert "FaceMagicFaceSimilarity" in {node["class_type"] for node in second["prompt"].values()}
    executed = set(second["prompt"]) - set(second["cached"])
    assert executed == set(), f"the second run executed {sorted(executed)}"


def test_results_show_on_the_canvas_and_stay_out_of_the_workflow(canvas: dict[str, Any]) -> None:
    [similarity] = [node for node in canvas["results"] if node["type"] == "FaceMagicFaceSimilarity"]
    assert similarity["result"].startswith("similarity ")  # "similarity 0.873: likely the same person"
    assert "mean similarity" in similarity["result"]
    assert similarity["resultOptionsSerialize"] is False
    assert similarity["saved"] == ["most_similar", 0]  # face order, face index: no result text
    labels = {widget["name"]: widget["label"] for widget in similarity["widgets"]}
    assert labels["face_index"] == "face index" and labels["face_order"] == "face order"
    [blend] = [node for node in canvas["results"] if node["type"] == "FaceMagicBlend"]
    sockets = {item["name"]: item["label"] for item in blend["inputs"]}
    assert sockets["mask_input"] == "limit mask"  # frontend 1.27 showed the id on sockets too


def test_the_mix_node_grows_its_identity_inputs_on_the_canvas(canvas: dict[str, Any]) -> None:
    assert canvas["mix"] == {
        "created": ["identity_1"],
        "afterFirst": ["identity_1", "identity_2"],
        "afterSecond": ["identity_1", "identity_2", "identity_3"],
        "afterDisconnect": ["identity_1", "identity_2"],
    }
    assert canvas["mixLoaded"] == [["identity_1", "identity_2", "identity_3", "identity_4"]]


def test_the_refresh_button_lists_an_identity_saved_meanwhile(canvas: dict[str, Any]) -> None:
    refresh = canvas["refresh"]
    assert refresh["status"] == "success"
    assert "canvas_refreshed" not in refresh["before"] and "canvas_refreshed" in refresh["after"]
    assert refresh["label"] == "refresh list"
    assert refresh["sent"] == ["name"]  # the button is neither sent with the prompt
    assert len(refresh["saved"]) == 1  # nor saved in the workflow


def test_the_running_comfyui_gets_the_v3_extras_it_has(object_info: dict[str, Any]) -> None:
    """search_aliases and advanced inputs where this ComfyUI's io has them (0.3.64: neither); the slider everywhere."""
    assert COMFYUI_PATH is not None
    probe = (
        "import dataclasses, inspect; from comfy_api.latest import io; "
        "print(any(f.name == 'search_aliases' for f in dataclasses.fields(io.Schema)), "
        "'advanced' in inspect.signature(io.Int.Input.__init__).parameters)"
    )
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    answer = subprocess.run([python, "-c", probe], cwd=COMFYUI_PATH, capture_output=True, text=True, timeout=120)
    has_aliases, has_advanced = (word == "True" for word in answer.stdout.split())
    swap = object_info["FaceMagicSwapFaces"]
    assert ("reactor" in swap.get("search_aliases", [])) == has_aliases
    det_size = object_info["FaceMagicAnalyzerLoader"]["input"]["required"]["det_size"][1]
    assert bool(det_size.get("advanced")) == has_advanced
    assert swap["input"]["required"]["strength"][1]["display"] == "slider"
    print(f"search_aliases: {has_aliases}, advanced: {has_advanced}")


def test_the_pack_javascript_logs_no_warning_in_the_browser(canvas: dict[str, Any]) -> None:
    """No deprecation notice from the pack's JS (widget.inputEl, scripts/widgets.js, input.link) on frontend 1.58."""
    assert canvas["extensions"] == ["FaceMagic.Nodes"]
    assert [error for error in canvas["pageErrors"] if PACK_SCRIPTS in error] == []  # uncaught, from the pack
    ours = [
        record["text"]
        for record in canvas["consoleRecords"]
        if PACK_SCRIPTS in record["stack"] or PACK_SCRIPTS in record["text"] or "scripts/widgets.js" in record["text"]
    ]
    ours += [
        message["text"]
        for message in canvas["console"]
        if PACK_SCRIPTS in message["url"] or "scripts/widgets.js" in message["text"]
    ]
    assert ours == [], "\n".join(ours)
