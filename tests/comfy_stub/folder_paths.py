"""Test stand-in for ComfyUI's ``folder_paths`` (model folders only).

``models_dir`` comes from ``FACEMAGIC_TEST_MODELS_DIR`` when set (tests point it at a temporary folder).
"""

from __future__ import annotations

import os
import tempfile

base_path = os.environ.get("FACEMAGIC_TEST_COMFY_BASE", tempfile.gettempdir())
models_dir = os.environ.get("FACEMAGIC_TEST_MODELS_DIR", os.path.join(base_path, "models"))
supported_pt_extensions = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
folder_names_and_paths: dict[str, tuple[list[str], set[str]]] = {}


def add_model_folder_path(folder_name: str, full_folder_path: str, is_default: bool = False) -> None:
    if folder_name in folder_names_and_paths:
        paths = folder_names_and_paths[folder_name][0]
        if full_folder_path in paths:
            if is_default:
                paths.remove(full_folder_path)
                paths.insert(0, full_folder_path)
        elif is_default:
            paths.insert(0, full_folder_path)
        else:
            paths.append(full_folder_path)
    else:
        folder_names_and_paths[folder_name] = ([full_folder_path], set())


def get_folder_paths(folder_name: str) -> list[str]:
    return folder_names_and_paths[folder_name][0][:]


def get_filename_list(folder_name: str) -> list[str]:
    paths, extensions = folder_names_and_paths[folder_name]
    found: set[str] = set()
    for folder in paths:
        for directory, subdirs, files in os.walk(folder, followlinks=True):
            subdirs[:] = [name for name in subdirs if name != ".git"]
            for name in files:
                if not extensions or os.path.splitext(name)[1].lower() in extensions:
                    found.add(os.path.relpath(os.path.join(directory, name), folder))
    return sorted(found)


def get_full_path(folder_name: str, filename: str) -> str | None:
    filename = os.path.relpath(os.path.join("/", filename), "/")
    for folder in folder_names_and_paths.get(folder_name, ([], set()))[0]:
        path = os.path.join(folder, filename)
        if os.path.isfile(path):
            return path
    return None


def get_full_path_or_raise(folder_name: str, filename: str) -> str:
    path = get_full_path(folder_name, filename)
    if path is None:
        raise FileNotFoundError(f"Model in folder '{folder_name}' with filename '{filename}' not found.")
    return path
