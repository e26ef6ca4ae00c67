"""Weight EMA during fine-tuning (`ema=`): the warm-up rule, and that validation, the kept epoch and the saved
model are all the average's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import text_frame
from fmadapt import ConfigError, TextClassifier
from fmadapt.train.ema import warmup_ema


def test_warmup_ema_follows_the_model_early_and_caps_the_decay():
    update = warmup_ema(0.9)
    avg, cur = [torch.zeros(3)], [torch.ones(3)]
    update(avg, cur, torch.tensor(1))  # update 1: decay min(0.9, 2/11)
    assert torch.allclose(avg[0], torch.full((3,), 1 - 2 / 11))
    avg = [torch.zeros(3)]
    update(avg, cur, torch.tensor(1000))  # late: the cap 0.9, not 1001/1010
    assert torch.allclose(avg[0], torch.full((3,), 0.1))
    counts = [torch.tensor(5)]  # an integer buffer (BatchNorm's batch counter) follows the model
    update(counts, [torch.tensor(9)], torch.tensor(3))
    assert counts[0].item() == 9


def _refit_figures(clf):
    va = clf.splits_["val"]
    p = clf.predict_proba(va.inputs).to_numpy()
    y = np.array([clf.classes_.index(lab) for lab in va.labels])
    return -np.log(p[np.arange(len(y)), y] + 1e-12).mean(), (p.argmax(1) == y).mean()


def _fit(**kw):
    return TextClassifier(backbone="tiny-bert", strategy="finetune", epochs=3, batch_size=8, lr=1e-3, head_lr=1e-2,
                          head_init="random", calibrate=False, progress=False, cache=False, **kw).fit(text_frame(16))


def test_the_kept_epoch_is_the_average_that_validation_scored():
    clf = _fit(ema=0.9)
    h = clf.history_
    assert h["ema"] == 0.9 and h["best_epoch"] >= 0
    nll, acc = _refit_figures(clf)
    kept = h["epochs"][h["best_epoch"]]
    # RestoreBest keeping the raw weights instead would not reproduce the averaged model's figures
    assert nll == pytest.approx(kept["val_loss"], abs=1e-4) and acc == pytest.approx(kept["val_acc"])


def test_without_epoch_selection_the_model_ends_as_the_average():
    plain, averaged = _fit(restore_best=False), _fit(restore_best=False, ema=0.9)
    for clf in (plain, averaged):  # the last epoch's figures are the final model's
        nll, _ = _refit_figures(clf)
        assert nll == pytest.approx(clf.history_["epochs"][-1]["val_loss"], abs=1e-4)
    # same seed, same steps: only the averaging differs
    assert plain.history_["epochs"][-1]["val_loss"] != pytest.approx(averaged.history_["epochs"][-1]["val_loss"])


@pytest.mark.parametrize("bad", [1.0, -0.1])
def test_a_decay_outside_0_1_is_refused(bad):
    with pytest.raises(ConfigError, match="ema"):
        TextClassifier(backbone="tiny-bert", strategy="finetune", ema=bad)
