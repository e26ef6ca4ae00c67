"""`split_groups`: files of one group (a speaker, a patient) stay on one side of the validation split and of the
probe's cross-validation folds."""

from __future__ import annotations

import pytest

from fmadapt import ConfigError, ImageClassifier, TextClassifier
from fmadapt.data.examples import Examples
from fmadapt.data.split import group_ids, stratified_split


def speaker_examples(speakers: int = 10, per: int = 3, classes=("a", "b", "c")) -> Examples:
    """Files named <speaker>_take<k>.wav, every speaker saying every class `per` times."""
    inputs, labels = [], []
    for s in range(speakers):
        for c in classes:
            for k in range(per):
                inputs.append(f"/data/{c}/spk{s:02d}_take{k}.wav")
                labels.append(c)
    return Examples(inputs=inputs, labels=labels, ids=list(inputs), modality="audio")


def test_group_ids_take_the_first_group_the_match_or_the_file():
    ids = group_ids(["/x/a/spk1_take0.wav", "/x/b/spk1_take3.wav", "/x/a/other.wav"], r"^(spk\d+)_")
    assert ids[0] == ids[1] == "g:spk1" and ids[2] == "f:/x/a/other.wav"
    assert group_ids(["/x/p007-scan.png"], r"p\d+") == ["g:p007"]


def test_a_split_by_group_never_puts_one_speaker_on_both_sides():
    ex = speaker_examples()
    train, val = stratified_split(ex, 0.2, seed=0, groups=r"^(spk\d+)_")
    speaker = lambda p: p.rsplit("/", 1)[1].split("_")[0]  # noqa: E731
    assert not {speaker(p) for p in train.inputs} & {speaker(p) for p in val.inputs}
    assert len(val) == 18 and set(train.labels) == set(val.labels) == {"a", "b", "c"}  # 2 of 10 speakers
    # without the option the same data is split example by example: speakers on both sides
    train, val = stratified_split(ex, 0.2, seed=0)
    assert {speaker(p) for p in train.inputs} & {speaker(p) for p in val.inputs}


def test_too_few_groups_split_example_by_example_and_say_so():
    ex = speaker_examples(speakers=3)
    train, val = stratified_split(ex, 0.2, seed=0, groups=r"^(spk\d+)_")
    assert len(train) + len(val) == len(ex)
    assert any("split_groups: 3 group(s)" in w for w in ex.warnings)


def test_the_probe_cross_validates_by_group(image_folder):
    # image names are <colour>_<i>.png: grouping by the index puts each index's three colours in one fold
    clf = ImageClassifier(backbone="tiny-cnn", split_groups=r"_(\d+)\.png$").fit(image_folder)
    assert "folds by group: 12 groups" in clf.history_["selection"]
    plain = ImageClassifier(backbone="tiny-cnn").fit(image_folder)
    assert "folds by group" not in plain.history_["selection"]


def test_bad_patterns_and_texts_are_refused():
    with pytest.raises(ConfigError, match="not a regular expression"):
        ImageClassifier(split_groups="(unclosed")
    with pytest.raises(ConfigError, match="image and sound data"):
        TextClassifier(split_groups="^x")
