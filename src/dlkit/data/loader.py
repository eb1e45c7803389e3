"""In-memory batching: the fast path for small data sets (no worker processes, no per-sample Python).

`TensorLoader` holds whole data sets as tensors and cuts mini-batches by indexing with one
permutation per epoch (Notes: 000 §2.1, mini-batch gradient descent). The permutation depends
only on (seed, epoch), so a run resumed mid-epoch sees exactly the batches it would have seen.
Under DDP every global batch is split into contiguous per-rank slices, so the union of the
ranks' batches equals the single-process batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from ..errors import ConfigError


def to_device(batch: Any, device: torch.device | str, non_blocking: bool = True) -> Any:
    """Move every tensor of a nested batch (tuple, list, dict) to `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, dict):
        return {k: to_device(v, device, non_blocking) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(v, device, non_blocking) for v in batch)
    return batch


def _take(field: torch.Tensor | Sequence, idx: torch.Tensor):
    if isinstance(field, torch.Tensor):
        return field[idx]
    return [field[i] for i in idx.tolist()]  # variable-size items, e.g. boxes per image


class TensorLoader:
    """Mini-batches of in-memory tensors (or lists of variable-size items, e.g. boxes per image).

    `batch_size` is the global batch: with `world_size` ranks each rank gets `batch_size // world_size`
    rows. `transform(x, generator)` is applied to the first field of each batch with a generator seeded
    from (seed, epoch, batch index), so augmentation is reproducible and resumable. `joint_transform(x, y,
    generator)` transforms the first two fields together instead (an image and its label map: JointTransform).
    """

    def __init__(self, *fields: torch.Tensor | Sequence, batch_size: int, shuffle: bool = True,
                 drop_last: bool = False, seed: int = 0, transform: Callable | None = None,
                 rank: int = 0, world_size: int = 1, joint_transform: Callable | None = None):
        if not fields:
            raise ConfigError("TensorLoader needs at least one field (e.g. images and labels)")
        sizes = {len(f) for f in fields}
        if len(sizes) != 1:
            raise ConfigError(f"TensorLoader fields must have the same length; got lengths "
                              f"{[len(f) for f in fields]}")
        if batch_size < 1 or batch_size % world_size:
            raise ConfigError(f"batch_size must be a positive multiple of the number of processes "
                              f"({world_size}); got {batch_size}")
        self.fields = fields
        self.n = sizes.pop()
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        if transform is not None and joint_transform is not None:
            raise ConfigError("pass transform (the first field alone) or joint_transform (the first two "
                              "together), not both; compose them into one")
        if joint_transform is not None and len(fields) < 2:
            raise ConfigError(f"joint_transform needs two fields (images and label maps); got {len(fields)}")
        self.seed, self.transform, self.joint_transform = seed, transform, joint_transform
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose permutation the next iteration uses."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else math.ceil(self.n / self.batch_size)

    def _order(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n)
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) % 2**64)
        return torch.randperm(self.n, generator=g)

    def iter_from(self, start: int = 0) -> Iterator[tuple]:
        """Iterate over the epoch's batches from batch index `start` (for resuming mid-epoch)."""
        order = self._order()
        per_rank = self.batch_size // self.world_size
        for b in range(start, len(self)):
            glob = order[b * self.batch_size:(b + 1) * self.batch_size]
            if self.world_size > 1:  # contiguous split; a short last batch is split as evenly as possible
                step = per_rank if len(glob) == self.batch_size else math.ceil(len(glob) / self.world_size)
                glob = glob[self.rank * step:(self.rank + 1) * step]
            batch = [_take(f, glob) for f in self.fields]
            if self.transform is not None or self.joint_transform is not None:
                g = torch.Generator().manual_seed(((self.seed * 1_000_003 + self.epoch) * 100_003 + b) % 2**64)
                if self.joint_transform is not None:
                    batch[0], batch[1] = self.joint_transform(batch[0], batch[1], generator=g)
                else:
                    batch[0] = self.transform(batch[0], generator=g)
            yield tuple(batch)

    def __iter__(self) -> Iterator[tuple]:
        return self.iter_from(0)


def collate_detection(samples: Sequence[tuple]) -> tuple[torch.Tensor, list]:
    """Collate (image, target) pairs whose targets vary in size: stack images, keep targets as a list."""
    images, targets = zip(*samples)
    shapes = {tuple(im.shape) for im in images}
    if len(shapes) != 1:
        raise ConfigError(f"images in a detection batch must share one shape to be stacked; got {sorted(shapes)}."
                          " Resize them first (dlkit.data.transforms.Resize).")
    return torch.stack(images), list(targets)


def detection_loaders(parts: Mapping[str, Dataset], batch_size: int, rank: int = 0, world_size: int = 1,
                      seed: int = 0, num_workers: int = 0) -> dict[str, DataLoader]:
    """DataLoaders of (image, target) sets for the detection task: `collate_detection` batches; the "train" set
    shuffled by a DistributedSampler (seeded, re-shuffled by the Trainer's `set_epoch`), each of the world's
    processes taking `batch_size / world_size` images; the evaluation sets in order, process r taking images r,
    r + world_size, ... (metrics sum or gather their records over the processes, so each image counts once)."""
    if batch_size < 1 or batch_size % world_size:
        raise ConfigError(f"batch_size must be a positive multiple of the number of processes ({world_size}); got "
                          f"{batch_size}")
    per_rank = batch_size // world_size
    workers = dict(num_workers=num_workers, persistent_workers=num_workers > 0, collate_fn=collate_detection)
    loaders = {}
    for name, ds in parts.items():
        if name == "train":
            sampler = DistributedSampler(ds, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
            loaders[name] = DataLoader(ds, batch_size=per_rank, sampler=sampler, drop_last=len(ds) >= batch_size,
                                       **workers)
        else:
            shard = ds if world_size == 1 else Subset(ds, range(rank, len(ds), world_size))
            loaders[name] = DataLoader(shard, batch_size=per_rank, shuffle=False, **workers)
    return loaders
