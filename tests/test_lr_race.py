"""`lr_race`: a short race of learning rates from the fine-tuning start, judged on validation; the winner runs
from the very same start (the race leaves no trace in the weights), and the history says what ran."""

import hashlib

import pytest

from conftest import text_frame
from fmadapt import TextClassifier
from fmadapt.errors import ConfigError


def digest(clf: TextClassifier) -> str:
    h = hashlib.sha256()
    for t in clf.members_[0].model.state_dict().values():
        h.update(t.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def test_the_race_chooses_on_validation_and_the_winner_runs_from_the_same_start():
    data = text_frame(n_per_class=20)
    options = {"backbone": "tiny-bert", "strategy": "finetune", "epochs": 2, "cache": False, "progress": False}
    raced = TextClassifier(lr_race="0.5, 1 300", race_fraction=0.5, **options).fit(data)  # commas or spaces
    race = raced.history_["lr_race"]
    assert race["multiples"] == [0.5, 1.0, 300.0] and race["steps"] >= 8
    assert [round(r["lr"] / 3e-5, 6) for r in race["candidates"]] == [0.5, 1.0, 300.0]
    best = max(race["candidates"], key=lambda r: (r["val_acc"], -r["val_loss"]))
    assert race["chosen_lr"] == best["lr"] == raced.history_["lr"]
    assert "raced on validation" in raced.history_["lr_chosen_by"]
    given = TextClassifier(lr=race["chosen_lr"], **options).fit(data)
    assert digest(raced) == digest(given)


@pytest.mark.parametrize("options, message", [
    ({"lr_race": "1"}, "two or more positive multiples"),
    ({"lr_race": "0.5,x"}, "two or more positive multiples"),
    ({"lr_race": "0.5,1", "lr": 1e-4}, "do not give lr"),
    ({"lr_race": "0.5,1", "race_fraction": 0.0}, "race_fraction"),
])
def test_bad_races_are_refused(options, message):
    with pytest.raises(ConfigError, match=message):
        TextClassifier(backbone="tiny-bert", strategy="finetune", **options)


def test_a_rate_that_diverges_loses_the_race(monkeypatch):
    from fmadapt.errors import TrainingDiverged
    from fmadapt.train import module as train_module

    real = train_module.ClassifierModule.training_step

    def blows_up_when_fast(self, batch, batch_idx):
        if self.lr > 1e-3:
            raise TrainingDiverged("the training loss became nan")
        return real(self, batch, batch_idx)

    monkeypatch.setattr(train_module.ClassifierModule, "training_step", blows_up_when_fast)
    clf = TextClassifier(backbone="tiny-bert", strategy="finetune", epochs=1, lr_race="1,100", cache=False,
                         progress=False).fit(text_frame(n_per_class=12))
    race = clf.history_["lr_race"]
    assert "diverged" in race["candidates"][1] and race["chosen_multiple"] == 1.0
