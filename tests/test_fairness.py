"""Fairness: group labels from tables and image metadata, per-group metrics and Fairlearn disparities."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fmadapt.data.examples import Examples
from fmadapt.data.tables import examples_from_table, read_table
from fmadapt.errors import DataError
from fmadapt.evaluate.fairness import (
    MISSING,
    fairness_report,
    fairness_summary_lines,
    group_labels_from_metadata,
    group_labels_from_table,
)


def _macro_f1(t: np.ndarray, p: np.ndarray) -> float:
    """Macro F1 from the definition, over the classes present in t or p."""
    f1s = []
    for c in sorted(set(t) | set(p)):
        tp = np.sum((t == c) & (p == c))
        prec = tp / max(np.sum(p == c), 1)
        rec = tp / max(np.sum(t == c), 1)
        f1s.append(0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec))
    return float(np.mean(f1s))


def test_per_group_numbers_match_hand_computation() -> None:
    rng = np.random.default_rng(0)
    yt = rng.choice(["no", "yes"], 40)
    yp = np.where(rng.random(40) < 0.7, yt, rng.choice(["no", "yes"], 40))
    g = rng.choice(["a", "b", "c"], 40)
    rep = fairness_report(yt, yp, list(g), ["no", "yes"])
    for k in ("a", "b", "c"):
        m = g == k
        r = rep["groups"][k]
        assert r["n"] == m.sum()
        assert r["accuracy"] == pytest.approx(np.mean(yt[m] == yp[m]))
        assert r["macro_f1"] == pytest.approx(_macro_f1(yt[m], yp[m]))
        assert r["selection_rate"] == pytest.approx(np.mean(yp[m] == "yes"))
        lo, hi = r["accuracy_ci95"]
        assert lo <= r["accuracy"] <= hi
    accs = {k: v["accuracy"] for k, v in rep["groups"].items()}
    worst = min(accs, key=accs.get)
    assert rep["worst_group"] == worst and rep["worst_group_accuracy"] == accs[worst]
    assert rep["accuracy_gap"] == pytest.approx(max(accs.values()) - min(accs.values()))
    assert rep["positive_class"] == "yes" and any("'yes'" in n for n in rep["notes"])
    # DP difference from its definition: max - min selection rate over groups
    rates = [np.mean(yp[g == k] == "yes") for k in ("a", "b", "c")]
    assert rep["demographic_parity_difference"] == pytest.approx(max(rates) - min(rates))


def test_dp_and_eo_by_construction() -> None:
    # group A always predicted positive, group B always negative, both with mixed true labels:
    # selection rates 1 vs 0 -> DP 1; TPR 1 vs 0 and FPR 1 vs 0 -> EO 1
    yt = ["1", "0", "1", "0", "1", "0", "1", "0"]
    yp = ["1"] * 4 + ["0"] * 4
    g = ["A"] * 4 + ["B"] * 4
    rep = fairness_report(yt, yp, g, ["0", "1"])
    assert rep["demographic_parity_difference"] == 1.0
    assert rep["equalized_odds_difference"] == 1.0
    # a perfect predictor with equal base rates: no disparity at all
    rep = fairness_report(yt, yt, g, ["0", "1"])
    assert rep["demographic_parity_difference"] == 0.0 and rep["equalized_odds_difference"] == 0.0
    assert rep["accuracy_gap"] == 0.0


def test_integer_labels_map_to_classes() -> None:
    a = fairness_report([1, 0, 1, 0], [1, 1, 0, 0], ["x", "x", "y", "y"], ["neg", "pos"])
    b = fairness_report(["pos", "neg", "pos", "neg"], ["pos", "pos", "neg", "neg"], ["x", "x", "y", "y"],
                        ["neg", "pos"])
    assert a == b


def test_multiclass_one_vs_rest_max() -> None:
    classes = ["cat", "dog", "fox"]
    # group A: everything predicted 'cat'; group B: predictions perfect
    yt = np.array(["cat", "dog", "fox", "cat", "dog", "fox"])
    yp = np.array(["cat", "cat", "cat", "cat", "dog", "fox"])
    g = np.array(["A", "A", "A", "B", "B", "B"])
    rep = fairness_report(yt, yp, list(g), classes)
    assert rep["positive_class"] is None
    assert set(rep["per_class"]) == set(classes)
    for c in classes:
        rates = [np.mean(yp[g == k] == c) for k in ("A", "B")]
        assert rep["per_class"][c]["demographic_parity_difference"] == pytest.approx(abs(rates[0] - rates[1]))
    assert rep["per_class"]["cat"]["demographic_parity_difference"] == pytest.approx(1 - 1 / 3)
    assert rep["demographic_parity_difference"] == max(
        v["demographic_parity_difference"] for v in rep["per_class"].values())
    assert rep["equalized_odds_difference"] == max(
        v["equalized_odds_difference"] for v in rep["per_class"].values())
    assert rep["groups"]["A"]["selection_rate"] == pytest.approx({"cat": 1.0, "dog": 0.0, "fox": 0.0})


def test_single_group_small_groups_and_json() -> None:
    rep = fairness_report(["a", "b", "a"], ["a", "a", "a"], ["g"] * 3, ["a", "b"])
    assert rep["demographic_parity_difference"] == 0.0 and rep["equalized_odds_difference"] == 0.0
    assert any("2 groups" in n for n in rep["notes"])
    # group 'tiny' (n=1, accuracy 0) is flagged small and not picked as the worst group
    yt = ["a"] * 6 + ["b"]
    yp = ["a", "a", "a", "b", "a", "a", "a"]
    g = ["big"] * 3 + ["mid"] * 3 + ["tiny"]
    rep = fairness_report(yt, yp, g, ["a", "b"], min_group_size=3, group_col="region")
    assert rep["groups"]["tiny"]["small"] and not rep["groups"]["big"]["small"]
    assert rep["worst_group"] == "mid"
    assert json.loads(json.dumps(rep, allow_nan=False)) == rep
    text = "\n".join(fairness_summary_lines(rep))
    assert "region" in text and "tiny" in text and "(small)" in text


def test_missing_groups_counted_and_excluded() -> None:
    yt = ["1", "0", "1", "0", "1"]
    yp = ["1", "0", "0", "0", "1"]
    g = ["A", "A", "B", "B", MISSING]
    rep = fairness_report(yt, yp, g, ["0", "1"])
    assert rep["missing_groups"] == 1 and rep["groups"][MISSING]["n"] == 1
    assert rep["worst_group"] != MISSING
    # the difference ignores the (missing) example: A selects 1/2, B 0/2 ((missing) 1/1 would make it 1)
    assert rep["demographic_parity_difference"] == pytest.approx(0.5)
    with pytest.raises(DataError, match="no example has a group"):
        fairness_report(["1"], ["1"], [MISSING], ["0", "1"])


# ----------------------------------------------------------------------------------------- tables
def test_group_labels_from_table_aligns_with_skipped_rows(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    pd.DataFrame({"text": ["good", "", "bad", "fine", "meh"], "label": ["p", "p", "n", "p", "n"],
                  "sex": ["F", "M", "M", None, "F"]}).to_csv(path, index=False)
    df, source = read_table(path)
    ex = examples_from_table(df, source, "text", "label")  # row 1 (empty text) is skipped
    assert ex.ids == ["0", "2", "3", "4"]
    groups = group_labels_from_table(path, "sex", ex.subset([3, 0, 2]))
    assert groups == ["F", "F", MISSING]
    groups = group_labels_from_table(path, "sex", ex)
    assert groups == ["F", "M", MISSING, "F"]
    assert any("1 of 4" in w for w in ex.warnings)


def test_missing_group_column_lists_columns(tmp_path: Path) -> None:
    df = pd.DataFrame({"text": ["x", "y"], "label": ["a", "b"], "region": ["n", "s"]})
    ex = Examples(["x", "y"], ["a", "b"], ["0", "1"], "<DataFrame>", "text")
    with pytest.raises(DataError) as e:
        group_labels_from_table(df, "gender", ex)
    msg = str(e.value)
    assert "'gender'" in msg and "--group-col" in msg
    for c in ("'text'", "'label'", "'region'"):
        assert c in msg
    assert group_labels_from_table(df, "region", ex) == ["n", "s"]


# ----------------------------------------------------------------------------------------- images
def _images(tmp_path: Path, names: list[str]) -> Examples:
    root = tmp_path / "imgs"
    paths = []
    for n in names:
        p = root / n
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
        paths.append(str(p))
    return Examples(paths, [n.split("/")[-2] for n in names], list(paths), str(root), "image")


def test_metadata_by_relative_path_and_by_filename(tmp_path: Path) -> None:
    ex = _images(tmp_path, ["train/cat/1.jpg", "train/cat/2.jpg", "train/dog/3.jpg", "train/dog/4.jpg"])
    meta = tmp_path / "meta.csv"
    pd.DataFrame({"path": ["train/cat/1.jpg", "cat/2.jpg", "3.jpg"], "site": ["A", "B", "A"]}).to_csv(meta,
                                                                                                      index=False)
    assert group_labels_from_metadata(meta, ex) == ["A", "B", "A", MISSING]  # only other column = group
    assert any("1 of 4" in w and "4.jpg" in w for w in ex.warnings)
    # JSONL with a 'filename' column and an explicit group column among several
    jl = tmp_path / "meta.jsonl"
    jl.write_text("\n".join(json.dumps({"filename": f"{i}.jpg", "site": s, "year": 2020})
                            for i, s in zip(range(1, 5), "ABBA", strict=True)))
    assert group_labels_from_metadata(jl, ex, group_col="site") == ["A", "B", "B", "A"]
    with pytest.raises(DataError, match="--group-col"):
        group_labels_from_metadata(jl, ex)
    with pytest.raises(DataError, match="'sex'.*Columns:.*'site'"):
        group_labels_from_metadata(jl, ex, group_col="sex")


def test_metadata_ambiguous_filename_refused(tmp_path: Path) -> None:
    ex = _images(tmp_path, ["cat/001.jpg", "dog/001.jpg"])
    meta = tmp_path / "m.csv"
    pd.DataFrame({"file": ["001.jpg"], "g": ["A"]}).to_csv(meta, index=False)
    with pytest.raises(DataError, match=r"'001.jpg' matches 2 images.*more of the path"):
        group_labels_from_metadata(meta, ex)
    pd.DataFrame({"file": ["cat/001.jpg", "dog/001.jpg"], "g": ["A", "B"]}).to_csv(meta, index=False)
    assert group_labels_from_metadata(meta, ex) == ["A", "B"]
    # one image given two different groups by two rows
    pd.DataFrame({"file": ["cat/001.jpg", "imgs/cat/001.jpg"], "g": ["A", "B"]}).to_csv(meta, index=False)
    with pytest.raises(DataError, match="keep one"):
        group_labels_from_metadata(meta, ex)


def test_metadata_nothing_matches(tmp_path: Path) -> None:
    ex = _images(tmp_path, ["cat/1.jpg"])
    meta = tmp_path / "m.csv"
    pd.DataFrame({"image": ["other.jpg"], "g": ["A"]}).to_csv(meta, index=False)
    with pytest.raises(DataError, match="no image matched"):
        group_labels_from_metadata(meta, ex)
    pd.DataFrame({"name": ["1.jpg"], "g": ["A"]}).to_csv(meta, index=False)
    with pytest.raises(DataError, match="no image path column"):
        group_labels_from_metadata(meta, ex)


def test_multilabel_fairness_is_per_label_parity_and_micro_f1_per_group():
    from sklearn.metrics import f1_score

    from fmadapt.evaluate.fairness_tasks import task_fairness_lines, task_fairness_report

    rng = np.random.default_rng(0)
    yt = rng.integers(0, 2, (60, 3))
    yp = yt.copy()
    g = np.array(["a"] * 30 + ["b"] * 28 + [MISSING] * 2)
    flip = rng.random((28, 3)) < 0.4  # group b's decisions are worse
    yp[30:58][flip] = 1 - yp[30:58][flip]
    rep = task_fairness_report("multilabel", yt, yp, list(g), ["x", "y", "z"], min_group_size=5, group_col="site")
    assert rep["groups"]["a"]["micro_f1"] == 1.0 and rep["groups"]["a"]["subset_accuracy"] == 1.0
    b = g == "b"
    assert rep["groups"]["b"]["micro_f1"] == pytest.approx(f1_score(yt[b], yp[b], average="micro"))
    assert rep["worst_group"] == "b" and rep["score_gap"] == pytest.approx(1 - rep["groups"]["b"]["micro_f1"])
    assert rep["missing_groups"] == 2 and rep["groups"][MISSING]["small"]
    known = g != MISSING
    for j, c in enumerate("xyz"):  # demographic parity per label: the gap in the share predicted positive
        rates = [yp[known & (g == k), j].mean() for k in ("a", "b")]
        assert rep["per_class"][c]["demographic_parity_difference"] == pytest.approx(abs(rates[0] - rates[1]))
    assert rep["demographic_parity_difference"] == max(v["demographic_parity_difference"]
                                                       for v in rep["per_class"].values())
    lines = task_fairness_lines(rep)
    assert lines[2].startswith("b ") and "worst group b" in lines[-len(rep["notes"]) - 1]


def test_regression_fairness_names_the_group_with_the_largest_error_and_the_biased_one():
    from fmadapt.evaluate.fairness_tasks import task_fairness_report

    y = np.arange(12, dtype=float)
    pred = y.copy()
    pred[:4] += 2.0   # group a: over-estimated by 2
    pred[4:8] -= 0.5  # group b: under-estimated by 0.5; group c exact
    g = ["a"] * 4 + ["b"] * 4 + ["c"] * 4
    rep = task_fairness_report("regression", y, pred, g, ["target"], min_group_size=1)
    assert rep["groups"]["a"]["mae"] == 2.0 and rep["groups"]["b"]["mean_error"] == -0.5
    assert rep["worst_group"] == "a" and rep["score_gap"] == 2.0 and rep["mean_error_gap"] == 2.5
    assert rep["mean_prediction_gap"] == pytest.approx((9.5 + 0) - (1.5 + 2))
    small = task_fairness_report("regression", y, pred, g, ["target"], min_group_size=5)
    # (every group is small: none is left out of the ranking)
    assert small["worst_group"] == "a" and any("fewer than 5" in n for n in small["notes"])
    with pytest.raises(ValueError, match="task"):
        task_fairness_report("classification", y, pred, g, ["target"])
