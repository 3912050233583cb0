"""Reading a prepared cache and drawing training pairs from it, reproducibly.

- :class:`FaceCache` reads the shards written by :mod:`.prepare` lazily (safetensors slices,
  memory-mapped), so a cache larger than memory trains as well as a tiny one.
- :class:`PairSampler` decides every batch: the targets in a shuffled order per epoch, the
  same-image rows (source = target: the Style Mix Blocks are exactly neutral there and the
  generator learns reconstruction), the swap rows' sources (another person where person ids
  are known), and the mixed rows (a coarse identity and a fine identity, split at a random
  block). Its state (random generator, epoch order, position) is part of the training state,
  so a resumed run draws the very batches an uninterrupted run would have drawn.
- :func:`load_batch` turns those indices into tensors on the training device.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import BadInputError, ModelIntegrityError
from .prepare import read_manifest

logger = logging.getLogger(__name__)


class FaceCache:
    """The faces of a prepared cache folder, addressed by a global row index ``0 .. len - 1``."""

    def __init__(self, cache_dir: str | Path) -> None:
        folder = Path(cache_dir)
        manifest = read_manifest(folder)
        if manifest is None:
            raise BadInputError(
                "the folder is not a prepared training cache (no manifest.json)",
                where=str(folder),
                fix="run 'facemagic prepare PHOTOS -o CACHE' first and give that CACHE folder",
            )
        if not manifest["shards"]:
            raise BadInputError(
                "the training cache holds no faces",
                where=str(folder),
                fix="check the photos (see 'unreadable' and the no_face entries in manifest.json)",
            )
        self.folder = folder
        self.manifest = manifest
        self.image_size = int(manifest["image_size"])
        self.template = str(manifest["template"])
        self.embedding_model = str(manifest["embedding_model"])
        self.persons: list[str] = list(manifest["persons"])
        self._paths = [folder / shard["file"] for shard in manifest["shards"]]
        counts = torch.tensor([int(shard["faces"]) for shard in manifest["shards"]], dtype=torch.int64)
        self._starts = torch.cumsum(counts, 0) - counts
        self._handles: dict[int, Any] = {}
        self.person_ids = torch.cat([self._read(shard, "person_ids") for shard in range(len(self._paths))])
        if self.person_ids.numel() != int(manifest["num_faces"]):
            raise ModelIntegrityError(
                "the shards hold another number of faces than the manifest says",
                where=str(folder),
                fix="delete the cache folder and prepare it again",
            )

    def __len__(self) -> int:
        return int(self.person_ids.numel())

    def _handle(self, shard: int) -> Any:
        from safetensors import SafetensorError, safe_open

        if shard not in self._handles:
            try:
                self._handles[shard] = safe_open(str(self._paths[shard]), framework="pt", device="cpu")
            except (SafetensorError, OSError) as error:
                raise ModelIntegrityError(
                    f"a cache shard cannot be read ({error})",
                    where=str(self._paths[shard]),
                    fix="delete the cache folder and prepare it again",
                ) from error
        return self._handles[shard]

    def _read(self, shard: int, name: str) -> Tensor:
        tensor: Tensor = self._handle(shard).get_tensor(name)
        return tensor

    def read_rows(self, name: str, rows: Tensor) -> Tensor:
        """``name`` ("crops", "embeddings", "landmarks_5", "person_ids") of the global ``rows``, in order."""
        flat = rows.reshape(-1).to(torch.int64).cpu()
        if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= len(self)):
            raise BadInputError(f"row index outside the cache of {len(self)} faces", where=str(self.folder))
        shards = torch.searchsorted(self._starts, flat, right=True) - 1
        parts = []
        for shard, row in zip(shards.tolist(), (flat - self._starts[shards]).tolist(), strict=True):
            parts.append(self._handle(shard).get_slice(name)[row : row + 1])
        return torch.cat(parts).reshape(*rows.shape, *parts[0].shape[1:])


@dataclass(frozen=True)
class PairIndices:
    """Which faces make one batch (all ``(B,)`` int64 except ``split``)."""

    target: Tensor  # target face rows
    source: Tensor  # source of the coarse blocks (all blocks when split == num_blocks)
    second_source: Tensor  # source of the blocks from ``split`` on (== source when unmixed)
    split: Tensor  # (B,) number of leading (coarse) blocks that take ``source``
    same: Tensor  # (B,) bool: source is the target itself


class PairSampler:
    """Draws :class:`PairIndices` reproducibly (see the module docstring)."""

    def __init__(
        self,
        person_ids: Tensor,
        *,
        batch_size: int,
        same_image_fraction: float,
        mix_fraction: float,
        num_blocks: int,
        seed: int,
    ) -> None:
        self.person_ids = person_ids.to(torch.int64).cpu()
        self.size = int(self.person_ids.numel())
        if self.size < 1:
            raise BadInputError("cannot draw training pairs from an empty cache")
        self.batch_size = int(batch_size)
        self.same_rows = round(self.batch_size * same_image_fraction) if self.size > 1 else self.batch_size
        if same_image_fraction > 0 and self.same_rows == 0:
            self.same_rows = 1
        swap_rows = self.batch_size - self.same_rows
        self.mixed_rows = round(swap_rows * mix_fraction) if num_blocks > 1 else 0
        self.num_blocks = int(num_blocks)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.epoch = 0
        self.position = 0
        self.order = torch.randperm(self.size, generator=self.generator)

    def _targets(self) -> Tensor:
        taken: list[Tensor] = []
        needed = self.batch_size
        while needed:
            if self.position >= self.size:
                self.epoch += 1
                self.position = 0
                self.order = torch.randperm(self.size, generator=self.generator)
            chunk = self.order[self.position : self.position + needed]
            taken.append(chunk)
            self.position += int(chunk.numel())
            needed -= int(chunk.numel())
        return torch.cat(taken)

    def _other_faces(self, target: Tensor) -> Tensor:
        """A random face per row that is not the row's target and, where both are labelled, another person."""
        choice = torch.randint(0, self.size, target.shape, generator=self.generator)
        for _ in range(8):
            same_person = (self.person_ids[choice] == self.person_ids[target]) & (self.person_ids[target] >= 0)
            clash = (choice == target) | same_person
            if not bool(clash.any()):
                break
            choice = torch.where(clash, torch.randint(0, self.size, target.shape, generator=self.generator), choice)
        return choice

    def next_batch(self) -> PairIndices:
        target = self._targets()
        same = torch.zeros(self.batch_size, dtype=torch.bool)
        same[: self.same_rows] = True
        source = torch.where(same, target, self._other_faces(target))
        second = source.clone()
        split = torch.full((self.batch_size,), self.num_blocks, dtype=torch.int64)
        if self.mixed_rows:
            rows = slice(self.same_rows, self.same_rows + self.mixed_rows)
            second[rows] = self._other_faces(target[rows])
            split[rows] = torch.randint(1, self.num_blocks, (self.mixed_rows,), generator=self.generator)
        return PairIndices(target=target, source=source, second_source=second, split=split, same=same)

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.get_state(),
            "epoch": self.epoch,
            "position": self.position,
            "order": self.order.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        order = state["order"]
        if int(order.numel()) != self.size:
            raise BadInputError(
                f"the training state was made on a cache of {int(order.numel())} faces, this cache has {self.size}",
                where="training state",
                fix="resume with the same --data folder, or start a new run",
            )
        self.generator.set_state(state["generator"])
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self.order = order.clone()


@dataclass(frozen=True)
class TrainingBatch:
    """One batch on the training device (B faces, K blocks, D embedding size, S crop side)."""

    target_images: Tensor  # (B, 3, S, S) float [0, 1]
    source_images: Tensor  # (B, 3, S, S) float [0, 1]: the coarse-block source (for sample grids)
    target_identity: Tensor  # (B, D) L2-normalised
    source_identity: Tensor  # (B, K, D) L2-normalised, row k feeds block k; == target rows where same
    target_landmarks: Tensor  # (B, 5, 2) in crop pixels
    same: Tensor  # (B,) bool


def load_batch(
    cache: FaceCache, pairs: PairIndices, *, num_blocks: int, device: torch.device, source_images: bool = False
) -> TrainingBatch:
    """Read the faces of ``pairs`` and build the per-block identities.

    Same-image rows get the *very same* normalised vector as source and target (not a
    recomputation), which is what makes the style delta exactly zero for them.
    """
    target_images = cache.read_rows("crops", pairs.target).to(device=device, dtype=torch.float32) / 255.0
    target_identity = F.normalize(cache.read_rows("embeddings", pairs.target).to(device).float(), dim=-1)
    first = F.normalize(cache.read_rows("embeddings", pairs.source).to(device).float(), dim=-1)
    second = F.normalize(cache.read_rows("embeddings", pairs.second_source).to(device).float(), dim=-1)
    same = pairs.same.to(device)
    first = torch.where(same[:, None], target_identity, first)
    second = torch.where(same[:, None], target_identity, second)
    coarse = torch.arange(num_blocks, device=device)[None, :] < pairs.split.to(device)[:, None]  # (B, K)
    source_identity = torch.where(coarse[:, :, None], first[:, None, :], second[:, None, :])
    if source_images:
        sources = cache.read_rows("crops", pairs.source).to(device=device, dtype=torch.float32) / 255.0
    else:
        sources = target_images
    landmarks = cache.read_rows("landmarks_5", pairs.target).to(device=device, dtype=torch.float32)
    return TrainingBatch(
        target_images=target_images,
        source_images=sources,
        target_identity=target_identity,
        source_identity=source_identity.contiguous(),
        target_landmarks=landmarks,
        same=same,
    )
