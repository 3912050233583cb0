"""Small inputs for the node tests: tiny models in a model folder, pictures with "faces", identities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from finish_models import write_bisenet, write_restorer, write_xseg
from tiny_models import bright_cell_image, write_pack

from facemagic_core.generators import FaceMagicGenerator, GeneratorConfig
from facemagic_core.hub import MODELS
from facemagic_core.types import Identity

#: The tiny native generator written into every test model folder: 64 px crops, 6 injection blocks.
TINY_GENERATOR = GeneratorConfig(
    image_size=64, channels=4, max_channels=16, num_downsamples=2, blocks_per_scale=(2, 2, 2), style_hidden=8
)


def write_tiny_models(facemagic: Path) -> None:
    """In a ``facemagic`` folder: a tiny buffalo_l pack, the tiny native generator ``tiny_native``, and tiny
    finishing models under their registry paths (codeformer and gfpgan_1.4 at 64 px, xseg_1, bisenet_resnet_34)."""
    write_pack(facemagic / "buffalo_l")
    torch.manual_seed(0)
    FaceMagicGenerator(TINY_GENERATOR).save_pretrained(facemagic / "tiny_native")
    write_restorer(facemagic / MODELS["codeformer"].local_path, size=64, fidelity=True)
    write_restorer(facemagic / MODELS["gfpgan_1.4"].local_path, size=64, batch="N")
    write_xseg(facemagic / MODELS["xseg_1"].local_path)
    write_bisenet(facemagic / MODELS["bisenet_resnet_34"].local_path)


def comfy_image(cells: list[tuple[int, int, int]], size: int = 320) -> torch.Tensor:
    """A ComfyUI IMAGE [1, H, W, 3] with bright squares the tiny detector reads as faces."""
    return torch.from_numpy(bright_cell_image(cells, size)).float().div(255).unsqueeze(0)


def random_identity(seed: int, rows: int = 1, model: str = "arcface_w600k_r50") -> Identity:
    rng = np.random.default_rng(seed)
    return Identity(embeddings=rng.normal(size=(rows, 512)).astype(np.float32), embedding_model=model)
