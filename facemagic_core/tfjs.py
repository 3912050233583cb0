"""Reading TensorFlow.js weight files (a JSON manifest and binary shards) without TensorFlow.

A tfjs model folder holds ``<name>-weights_manifest.json`` and one or more shard files. The
manifest is a JSON list of groups; each group lists its shard files (``paths``) and its
weights in order (``name``, ``shape``, ``dtype`` and, for quantised weights,
``quantization``: ``dtype`` uint8/uint16 or float16, ``scale`` and ``min``). The shards of a
group, concatenated, hold the weights one after the other in manifest order, each in its
stored dtype, little-endian: ``shape`` product times 1 byte (uint8), 2 (uint16 or float16)
or 4 (float32, int32). A uint8/uint16 value ``q`` stands for ``q * scale + min``.

:func:`read_tfjs_weights` returns every weight as a float32 numpy array in the manifest's
TensorFlow layout (convolution filters are ``(kh, kw, in, out)``, depthwise filters
``(kh, kw, in, multiplier)``, dense weights ``(in, out)``); the model modules transpose them.
Every size is checked: a truncated or padded shard, a missing file, NaN values or a
manifest that is not what it says raise :class:`~facemagic_core.errors.ModelIntegrityError`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelIntegrityError, ModelNotFoundError

#: Bytes per stored value, by the dtype names tfjs writes.
_STORED_BYTES = {"float32": 4, "int32": 4, "uint8": 1, "uint16": 2, "float16": 2}
#: A manifest larger than this is not a weights manifest (the face-api ones are about 20 kB).
MAX_MANIFEST_BYTES = 16 << 20

MANIFEST_SUFFIX = "-weights_manifest.json"


def _broken(what: str, where: Path, fix: str = "download the model files again") -> ModelIntegrityError:
    return ModelIntegrityError(what, where=str(where), fix=fix)


def read_manifest(manifest: Path) -> list[dict[str, Any]]:
    """The groups of a tfjs weights manifest, checked for the keys this reader needs."""
    path = Path(manifest)
    if not path.is_file():
        raise ModelNotFoundError(
            "the tfjs weights manifest does not exist",
            where=str(path),
            fix="give the folder holding <model>-weights_manifest.json and its .bin shard",
        )
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise _broken("the file is too large to be a tfjs weights manifest", path)
    try:
        groups = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _broken(f"the tfjs weights manifest is not valid JSON ({error})", path) from error
    if not isinstance(groups, list) or not groups:
        raise _broken("the tfjs weights manifest must be a non-empty JSON list of weight groups", path)
    for group in groups:
        if not isinstance(group, dict) or not isinstance(group.get("paths"), list) or not group["paths"]:
            raise _broken("a group of the tfjs weights manifest has no 'paths'", path)
        if not isinstance(group.get("weights"), list):
            raise _broken("a group of the tfjs weights manifest has no 'weights' list", path)
        for name in group["paths"]:
            if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
                raise _broken(f"the shard name {name!r} is not a plain file name in the model folder", path)
    return groups


def _decode(entry: Mapping[str, Any], raw: bytes, path: Path) -> np.ndarray:
    shape = tuple(int(n) for n in entry["shape"])
    quantization = entry.get("quantization")
    if quantization:
        stored = str(quantization.get("dtype"))
        if stored == "uint8":
            values = np.frombuffer(raw, dtype="<u1").astype(np.float32)
        elif stored == "uint16":
            values = np.frombuffer(raw, dtype="<u2").astype(np.float32)
        elif stored == "float16":
            return np.frombuffer(raw, dtype="<f2").astype(np.float32).reshape(shape)
        else:
            raise _broken(f"weight {entry['name']!r} uses an unknown quantisation dtype {stored!r}", path)
        scale, low = float(quantization["scale"]), float(quantization["min"])
        return (values * np.float32(scale) + np.float32(low)).astype(np.float32).reshape(shape)
    if entry["dtype"] == "int32":
        return np.frombuffer(raw, dtype="<i4").astype(np.float32).reshape(shape)
    return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)


def read_tfjs_weights(manifest: str | Path) -> dict[str, np.ndarray]:
    """Every weight of the manifest's groups as ``{name: float32 array}`` (TensorFlow layout).

    The shards are read from the manifest's folder; their total size must be exactly what
    the manifest describes.
    """
    path = Path(manifest)
    groups = read_manifest(path)
    weights: dict[str, np.ndarray] = {}
    for group in groups:
        shards = [path.parent / name for name in group["paths"]]
        for shard in shards:
            if not shard.is_file():
                raise ModelNotFoundError(
                    "a weight shard named by the tfjs manifest is missing",
                    where=str(shard),
                    fix=f"put {shard.name} beside {path.name}",
                )
        data = b"".join(shard.read_bytes() for shard in shards)
        offset = 0
        for entry in group["weights"]:
            try:
                name = str(entry["name"])
                count = math.prod(int(n) for n in entry["shape"])
                stored = entry.get("quantization", {}).get("dtype") if entry.get("quantization") else entry["dtype"]
                size = count * _STORED_BYTES[str(stored)]
            except (KeyError, TypeError, ValueError) as error:
                raise _broken(f"a weight entry of the tfjs manifest cannot be read ({error!r})", path) from error
            if offset + size > len(data):
                raise _broken(
                    f"the weight shards end inside weight {name!r} ({len(data)} bytes, {offset + size} needed)",
                    shards[0],
                    "the .bin file is truncated: download it again",
                )
            array = _decode(entry, data[offset : offset + size], path)
            if not np.all(np.isfinite(array)):
                raise _broken(f"weight {name!r} holds NaN or infinite values", shards[0])
            weights[name] = array
            offset += size
        if offset != len(data):
            raise _broken(
                f"the weight shards hold {len(data) - offset} bytes more than the manifest describes",
                shards[0],
                "the .bin file does not belong to this manifest: download both again",
            )
    return weights


def find_manifest(folder_or_file: str | Path, model_name: str) -> Path:
    """``folder/<model_name>-weights_manifest.json``, or the path itself when it is a manifest file."""
    path = Path(folder_or_file)
    if path.is_file():
        return path
    return path / f"{model_name}{MANIFEST_SUFFIX}"
