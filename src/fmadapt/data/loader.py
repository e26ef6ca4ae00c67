"""Datasets and DataLoaders: decoding and preprocessing run in worker processes."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from .images import MAX_PIXELS, load_image


class InputDataset(Dataset):
    """Raw inputs (paths or texts) -> preprocessed samples, with integer targets when given."""

    def __init__(self, inputs: list[str], modality: str, preprocess: Callable[[Any], Any],
                 targets: list[int] | None = None, draft_size: int | None = None,
                 max_pixels: int = MAX_PIXELS) -> None:
        self.inputs = inputs
        self.modality = modality
        self.preprocess = preprocess
        self.targets = targets
        self.draft_size = draft_size
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, i: int) -> Any:
        raw: Any = self.inputs[i]
        if self.modality == "image":
            raw = load_image(raw, self.max_pixels, self.draft_size)
        x = self.preprocess(raw)
        return x if self.targets is None else (x, self.targets[i])


class Collate:
    """Batches samples with the backbone's collator; targets become a LongTensor."""

    def __init__(self, collator: Callable[[list[Any]], Any], with_targets: bool) -> None:
        self.collator = collator
        self.with_targets = with_targets

    def __call__(self, samples: list[Any]) -> Any:
        if not self.with_targets:
            return self.collator(samples)
        xs, ys = zip(*samples, strict=True)
        return self.collator(list(xs)), torch.tensor(ys, dtype=torch.long)


#: up to this many inputs, loaders decode in the calling process (robustness and explanations predict many
#: small batches; each worker start costs ~0.5 s)
SMALL = 32


def default_workers(modality: str) -> int:
    """Image decoding is worth worker processes; tokenizing is fast enough in the main process."""
    if modality != "image":
        return 0
    return min(2, os.cpu_count() or 1)


def make_loader(backbone: Any, inputs: list[str], modality: str, *, train: bool, batch_size: int,
                targets: list[int] | None = None, num_workers: int | None = None, seed: int = 0,
                max_pixels: int = MAX_PIXELS, shuffle: bool | None = None,
                preprocess: Callable[[Any], Any] | None = None) -> DataLoader:
    """train: training-time preprocessing (augmentation); shuffle defaults to `train`. `preprocess`
    replaces the backbone's own preprocessing (augmentation policies, text noise)."""
    shuffle = train if shuffle is None else shuffle
    cfg = backbone.cfg
    draft = int(cfg.input_size / cfg.crop_pct) if modality == "image" else None
    ds = InputDataset(inputs, modality, preprocess or backbone.preprocessor(train), targets, draft, max_pixels)
    workers = default_workers(modality) if num_workers is None else num_workers
    if num_workers is None and len(inputs) <= SMALL:
        workers = 0  # starting worker processes costs more than decoding a few images in this one
    gen = torch.Generator()
    gen.manual_seed(seed)
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle,
        # a last training batch of one breaks BatchNorm; dropping a partial batch costs < 1 batch per epoch
        drop_last=shuffle and len(inputs) > batch_size,
        num_workers=workers,
        persistent_workers=False,
        collate_fn=Collate(backbone.collator(), targets is not None),
        generator=gen,
    )
