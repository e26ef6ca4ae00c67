"""Text fine-tuning draws length-grouped batches (less padding), still random and resumable."""

from __future__ import annotations

import random

import pytest
import torch

from fmadapt.data.loader import (
    GROUP_MIN_PADDING,
    MEGABATCH,
    EpochSampler,
    grouped_by_length,
    length_grouping,
    make_loader,
)


def _lengths(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(3, 128) for _ in range(n)]


def _padded(order: list[int], lengths: list[int], batch: int) -> int:
    return sum(max(lengths[i] for i in order[s:s + batch]) * len(order[s:s + batch])
               for s in range(0, len(order), batch))


@pytest.mark.parametrize("n", [1000, 1000 + 7, 31, 3200 + 5])
def test_grouped_order_is_a_permutation_in_aligned_batches_of_similar_length(n):
    lengths, batch = _lengths(n), 32
    g = torch.Generator()
    g.manual_seed(1)
    order = torch.randperm(n, generator=g).tolist()
    out = grouped_by_length(order, lengths, batch, g)
    assert sorted(out) == list(range(n))
    full = n - n % batch
    assert out[full:] == order[full:]  # the partial batch, a random draw, comes last (aligned with the loader's)
    # each full batch comes out of one sorted chunk: its members are consecutive in that chunk's sorted order
    chunks = [sorted(order[s:min(full, s + batch * MEGABATCH)], key=lengths.__getitem__)
              for s in range(0, full, batch * MEGABATCH)]
    runs = {tuple(c[i:i + batch]) for c in chunks for i in range(0, len(c), batch)}
    assert {tuple(out[s:s + batch]) for s in range(0, full, batch)} == runs
    if n > 4 * batch:
        assert _padded(out, lengths, batch) < 0.75 * _padded(order, lengths, batch)


def test_epochs_differ_and_a_seed_and_epoch_give_the_same_order():
    lengths = _lengths(500)
    a, b = EpochSampler(500, 3, True, lengths, 16), EpochSampler(500, 3, True, lengths, 16)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(3)
    assert list(a) != first
    # the batches themselves are drawn anew each epoch, not just their order
    assert {frozenset(first[s:s + 16]) for s in range(0, 496, 16)} != {frozenset(list(a)[s:s + 16])
                                                                       for s in range(0, 496, 16)}
    with pytest.raises(ValueError, match="499 lengths for 500"):
        EpochSampler(500, 0, True, lengths[:499], 16)


def test_make_loader_groups_training_batches_and_visits_validation_shortest_first():
    from fmadapt.backbones.registry import create_backbone
    from fmadapt.runtime.features import token_counts

    bb = create_backbone("tiny-bert")
    rng = random.Random(0)
    texts = [" ".join(["word"] * rng.randint(1, 40)) for _ in range(96)]
    lengths = token_counts(bb, texts)

    def widths(loader) -> list[int]:
        return [int(b[0]["input_ids"].shape[1]) for b in loader]

    plain = make_loader(bb, texts, "text", train=False, shuffle=True, batch_size=8, targets=[0] * 96,
                        resumable=True, seed=0)
    grouped = make_loader(bb, texts, "text", train=False, shuffle=True, batch_size=8, targets=[0] * 96,
                          resumable=True, seed=0, lengths=lengths)
    assert len(grouped) == len(plain) == 12
    assert sum(widths(grouped)) < 0.75 * sum(widths(plain))
    val = make_loader(bb, texts, "text", train=False, batch_size=8, targets=list(range(96)), lengths=lengths)
    seen = [int(y) for _, ys in val for y in ys]
    assert sorted(seen) == list(range(96)) and [lengths[i] for i in seen] == sorted(lengths)


def test_text_fine_tuning_passes_token_counts_unless_turned_off(tmp_path, monkeypatch):
    from conftest import text_frame
    from fmadapt import TextClassifier
    from fmadapt.adapt import finetune

    data = tmp_path / "t.csv"
    text_frame(n_per_class=12).to_csv(data, index=False)
    seen: list[bool] = []
    real = finetune.make_loader

    def spy(*args, **kw):
        seen.append(kw.get("lengths") is not None)
        return real(*args, **kw)

    monkeypatch.setattr(finetune, "make_loader", spy)
    for option, grouped in (("on", True), ("off", False)):
        seen.clear()
        clf = TextClassifier(backbone="tiny-bert", strategy="finetune", epochs=1, batch_size=4, head_init="random",
                             cache=False, progress=False, group_by_length=option).fit(data)
        assert seen == [grouped, True]  # the training loader; validation always runs shortest first
        h = clf.history_["group_by_length"]
        if grouped:
            assert h["grouped"] is True and h["option"] == "on" and h["padding_random"] >= h["padding_grouped"] >= 1
        else:  # nothing counted when off
            assert h == {"grouped": False, "option": "off"}


def test_auto_groups_only_when_random_batches_would_pad_a_lot():
    spread = _lengths(2000)  # 3..128 tokens: random batches of 32 pad to ~1.9x
    narrow = [random.Random(i).randint(18, 24) for i in range(2000)]  # headlines: ~1.2x
    wide = length_grouping(spread, 32, 0, "auto")
    assert wide["grouped"] and wide["padding_random"] >= GROUP_MIN_PADDING > 1.1 > wide["padding_grouped"]
    short = length_grouping(narrow, 32, 0, "auto")
    assert not short["grouped"] and 1 < short["padding_random"] < GROUP_MIN_PADDING
    assert length_grouping(narrow, 32, 0, "on")["grouped"] and not length_grouping(spread, 32, 0, "off")["grouped"]
    assert not length_grouping(spread, 32, 0, "on", one_process=False)["grouped"]  # DDP: Lightning's sampler
