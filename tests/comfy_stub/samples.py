"""Small inputs for the node tests: tiny models in a model folder, pictures with "faces", identities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tiny_models import bright_cell_image, write_pack

from facemagic_core.generators import FaceMagicGenerator, GeneratorConfig
from facemagic_core.types import Identity

#: The tiny native generator written into every test model folder: 64 px crops, 6 injection blocks.
TINY_GENERATOR = GeneratorConfig(
    image_size=64, channels=4, max_channels=16, num_downsamples=2, blocks_per_scale=(2, 2, 2), style_hidden=8
)


def write_tiny_models(facemagic: Path) -> None:
    """A tiny buffalo_l pack and the tiny native generator ``tiny_native`` in a ``facemagic`` folder."""
    write_pack(facemagic / "buffalo_l")
    torch.manual_seed(0)
    FaceMagicGenerator(TINY_GENERATOR).save_pretrained(facemagic / "tiny_native")


def comfy_image(cells: list[tuple[int, int, int]], size: int = 320) -> torch.Tensor:
    """A ComfyUI IMAGE [1, H, W, 3] with bright squares the tiny detector reads as faces."""
    return torch.from_numpy(bright_cell_image(cells, size)).float().div(255).unsqueeze(0)


def random_identity(seed: int, rows: int = 1, model: str = "arcface_w600k_r50") -> Identity:
    rng = np.random.default_rng(seed)
    return Identity(embeddings=rng.normal(size=(rows, 512)).astype(np.float32), embedding_model=model)
