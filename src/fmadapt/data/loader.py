"""Datasets and DataLoaders: decoding and preprocessing run in worker processes. Training loaders are
resumable: epoch e visits the same examples in the same order with the same random augmentation whether the
run was interrupted or not, with any number of workers."""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .images import MAX_PIXELS, load_image


class InputDataset(Dataset):
    """Raw inputs (paths or texts) -> preprocessed samples, with integer targets when given; with `table`
    (N, width: the encoded table columns of the same rows), each sample is (input, its table row)."""

    def __init__(self, inputs: list[str], modality: str, preprocess: Callable[[Any], Any],
                 targets: list[int] | None = None, draft_size: int | None = None,
                 max_pixels: int = MAX_PIXELS, seed: int | None = None, table: np.ndarray | None = None) -> None:
        if table is not None and len(table) != len(inputs):
            raise ValueError(f"{len(table)} table rows for {len(inputs)} inputs")
        self.inputs = inputs
        self.table = table
        self.modality = modality
        self.preprocess = preprocess
        self.targets = targets
        self.draft_size = draft_size
        self.max_pixels = max_pixels
        #: with a seed, the random augmentation of example i in epoch `epoch` depends on (seed, epoch, i)
        #: alone: not on which worker process drew it, nor on whether the run was resumed
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, i: int) -> Any:
        if self.seed is not None:
            seed_all(mix_seed(self.seed, self.epoch, i))
        raw: Any = self.inputs[i]
        if self.modality == "image":
            raw = load_image(raw, self.max_pixels, self.draft_size)
        x = self.preprocess(raw)
        if self.table is not None:
            x = (x, self.table[i])
        return x if self.targets is None else (x, self.targets[i])


class Collate:
    """Batches samples with the backbone's collator; targets become a LongTensor (class indices) or, for
    multi-label rows, a float tensor (batch, labels). `with_table`: samples carry their encoded table row, and
    inputs become model.WithTable(collated inputs, (batch, width) float tensor)."""

    def __init__(self, collator: Callable[[list[Any]], Any], with_targets: bool, with_table: bool = False) -> None:
        self.collator = collator
        self.with_targets = with_targets
        self.with_table = with_table

    def inputs(self, xs: list[Any]) -> Any:
        if not self.with_table:
            return self.collator(xs)
        from ..model import WithTable

        return WithTable(self.collator([x for x, _ in xs]),
                         torch.from_numpy(np.stack([row for _, row in xs]).astype(np.float32)))

    def __call__(self, samples: list[Any]) -> Any:
        if not self.with_targets:
            return self.inputs(samples)
        xs, ys = zip(*samples, strict=True)
        if isinstance(ys[0], np.ndarray):  # multi-label: rows of the 0/1 target matrix
            return self.inputs(list(xs)), torch.from_numpy(np.stack(ys)).float()
        return self.inputs(list(xs)), torch.tensor(ys, dtype=torch.long)


#: up to this many inputs, loaders decode in the calling process (robustness and explanations predict many
#: small batches; each worker start costs ~0.5 s)
SMALL = 32


def mix_seed(*parts: int) -> int:
    """A well-spread 63-bit seed from integers (seed, epoch, index...)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def seed_all(seed: int) -> None:
    """Seed every generator that augmentation and dropout draw from (torch, numpy, random)."""
    torch.manual_seed(seed)
    np.random.seed(seed % (1 << 32))
    random.seed(seed)


class EpochSampler(Sampler[int]):
    """The order of epoch `epoch` is a function of (seed, epoch) alone, not of a generator's running state,
    so a resumed run draws the same order. Lightning sets the epoch (`set_epoch`) before each epoch; `skip`
    drops the first indices (resuming mid-epoch), while the length stays the full one, as Lightning counts
    the batches of an epoch across a restart."""

    def __init__(self, n: int, seed: int, shuffle: bool, lengths: list[int] | None = None,
                 batch_size: int | None = None) -> None:
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.epoch = 0
        self.skip = 0
        #: texts: token counts; shuffled epochs then come as length-grouped batches (group_by_length)
        self.lengths, self.batch_size = lengths, batch_size
        if lengths is not None and len(lengths) != n:
            raise ValueError(f"{len(lengths)} lengths for {n} examples")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(mix_seed(self.seed, self.epoch))
            order = torch.randperm(self.n, generator=g).tolist()
            if self.lengths is not None and self.batch_size:
                order = grouped_by_length(order, self.lengths, self.batch_size, g)
        else:
            order = list(range(self.n))
        return iter(order[self.skip:])

    def __len__(self) -> int:
        return self.n


#: group_by_length sorts chunks of this many batches (as transformers' LengthGroupedSampler)
MEGABATCH = 50


def grouped_by_length(order: list[int], lengths: list[int], batch_size: int, g: torch.Generator) -> list[int]:
    """A shuffled order rearranged so that each batch holds texts of similar length (less padding: SST-2's
    random batches of 32 pad to 2.9x the real tokens, grouped ones to 1.05x) while staying random: the order is
    cut into chunks of MEGABATCH batches, each chunk is sorted by length and cut into batches, and the full
    batches are shuffled together (`g`); the partial batch (the order's last n % batch_size, a random draw) comes
    last, so batches stay aligned with the loader's."""
    full = len(order) - len(order) % batch_size
    batches: list[list[int]] = []
    for s in range(0, full, batch_size * MEGABATCH):
        chunk = sorted(order[s:min(full, s + batch_size * MEGABATCH)], key=lengths.__getitem__)
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    out = [i for b in torch.randperm(len(batches), generator=g).tolist() for i in batches[b]]
    return out + order[full:]


#: group_by_length="auto" groups a text run's batches only when random batches would pad to at least this many
#: times the real tokens: below it the time saved is small, and grouping costs accuracy where length tells the
#: class (THUCNews headlines: random batches pad to 1.29x; one fine-tune lost 1.55 points grouped, `benchmarks/
#: notes/group_by_length.md`), while SST-2 (2.9x), AG News (2.0x) and clothing reviews (1.7x) fine-tune 1.4-2x faster
GROUP_MIN_PADDING = 1.5


def padding_ratios(lengths: list[int], batch_size: int, seed: int = 0) -> tuple[float, float]:
    """Padded tokens over real tokens in one epoch of random batches and of length-grouped ones (the same draws
    as a training epoch), for deciding whether grouping pays."""
    g = torch.Generator()
    g.manual_seed(mix_seed(seed, 0))
    order = torch.randperm(len(lengths), generator=g).tolist()
    real = max(1, sum(lengths))

    def padded(o: list[int]) -> float:
        return sum(max(lengths[i] for i in o[s:s + batch_size]) * len(o[s:s + batch_size])
                   for s in range(0, len(o), batch_size)) / real

    return padded(order), padded(grouped_by_length(order, lengths, batch_size, g))


def length_grouping(lengths: list[int] | None, batch_size: int, seed: int, option: str,
                    one_process: bool = True) -> dict[str, Any]:
    """Whether a text run's training batches are length-grouped (the option group_by_length; "auto": when random
    batches would pad to >= GROUP_MIN_PADDING x the real tokens), with the padding each way, for the history.
    "off" (no `lengths`: nothing is counted) and several processes (DDP, where Lightning's distributed sampler
    draws the batches) never group."""
    if option == "off" or lengths is None:
        return {"grouped": False, "option": option}
    random_pad, grouped_pad = padding_ratios(lengths, batch_size, seed)
    grouped = one_process and (option == "on" or (option == "auto" and random_pad >= GROUP_MIN_PADDING))
    return {"grouped": grouped, "option": option, "padding_random": round(random_pad, 3),
            "padding_grouped": round(grouped_pad, 3)}


class ResumableLoader(DataLoader):
    """A training DataLoader whose position (epoch, batches handed out) goes into Lightning checkpoints
    (Lightning calls `state_dict`/`load_state_dict` on loaders that have them) and comes back exactly: after
    a restart it yields the rest of the interrupted epoch, then the next epochs as an uninterrupted run.

    Iteration starts lazily, at the first batch: Lightning creates the epoch's iterator before it tells
    the sampler the epoch (and, resuming at an epoch boundary, does not create it again)."""

    def __init__(self, dataset: Dataset, *, batch_size: int | None, shuffle: bool, seed: int,
                 drop_last: bool = False, lengths: list[int] | None = None, **kw: Any) -> None:
        self._order = EpochSampler(len(dataset), seed, shuffle, lengths, batch_size)  # type: ignore[arg-type]
        super().__init__(dataset, batch_size=batch_size, sampler=self._order, drop_last=drop_last,
                         generator=torch.Generator(), **kw)
        self._seed = seed
        self._batches = 0  # handed out in the current epoch
        self._resume: dict[str, int] | None = None

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        return self._epoch_batches()

    def _epoch_batches(self) -> Iterator[Any]:
        epoch = self._order.epoch
        skip = 0
        if self._resume is not None and self._resume["epoch"] == epoch:
            skip = self._resume["batches"]
        self._resume = None
        self._order.skip, self._batches = skip * (self.batch_size or 1), skip
        if isinstance(self.dataset, InputDataset):
            self.dataset.epoch = epoch  # (worker processes get a copy made at iter(): this value)
        assert self.generator is not None
        self.generator.manual_seed(mix_seed(self._seed, epoch, 1))  # worker base seeds, per epoch
        for batch in DataLoader.__iter__(self):
            self._batches += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._order.epoch, "batches": self._batches}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resume = {"epoch": int(state["epoch"]), "batches": int(state["batches"])}


def default_workers(modality: str) -> int:
    """Image decoding is worth worker processes; tokenizing is fast enough in the main process."""
    if modality != "image":
        return 0
    return min(2, os.cpu_count() or 1)


def make_loader(backbone: Any, inputs: list[str], modality: str, *, train: bool, batch_size: int,
                targets: list[int] | None = None, num_workers: int | None = None, seed: int = 0,
                max_pixels: int = MAX_PIXELS, shuffle: bool | None = None,
                preprocess: Callable[[Any], Any] | None = None, resumable: bool = False,
                table: np.ndarray | None = None, lengths: list[int] | None = None) -> DataLoader:
    """train: training-time preprocessing (augmentation); shuffle defaults to `train`. `preprocess`
    replaces the backbone's own preprocessing (augmentation policies, text noise). `resumable`: a
    ResumableLoader (single-process training; Lightning re-creates plain loaders for DDP samplers).
    `table`: the encoded table columns of the same rows (a model with `features`): batches of WithTable.
    `lengths` (texts: token counts): a resumable shuffled loader draws length-grouped batches
    (grouped_by_length); an unshuffled one visits the inputs shortest first (for metrics over the whole set:
    its batches no longer come in input order)."""
    shuffle = train if shuffle is None else shuffle
    cfg = backbone.cfg
    draft = int(cfg.input_size / cfg.crop_pct) if modality == "image" else None
    ds = InputDataset(inputs, modality, preprocess or backbone.preprocessor(train), targets, draft, max_pixels,
                      seed=seed if resumable else None, table=table)
    workers = default_workers(modality) if num_workers is None else num_workers
    if num_workers is None and len(inputs) <= SMALL:
        workers = 0  # starting worker processes costs more than decoding a few images in this one
    # a last training batch of one breaks BatchNorm; dropping a partial batch costs < 1 batch per epoch
    drop_last = shuffle and len(inputs) > batch_size
    collate = Collate(backbone.collator(), targets is not None, table is not None)
    if resumable:
        return ResumableLoader(ds, batch_size=batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last,
                               num_workers=workers, persistent_workers=False, collate_fn=collate,
                               lengths=lengths if shuffle else None)
    gen = torch.Generator()
    gen.manual_seed(seed)
    shortest_first = None if shuffle or lengths is None else sorted(range(len(inputs)), key=lengths.__getitem__)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle and shortest_first is None, drop_last=drop_last,
                      num_workers=workers, persistent_workers=False, collate_fn=collate, generator=gen,
                      sampler=shortest_first)
