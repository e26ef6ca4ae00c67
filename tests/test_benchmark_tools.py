"""The benchmarks' shared tools: results CSVs that never lose a row, and tables rendered from them that compare
a method only with the baseline of its own run."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import common  # noqa: E402
import render  # noqa: E402


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_append_rows_widens_an_older_header_without_losing_rows(tmp_path):
    path = tmp_path / "topic.csv"
    stamp = {"commit": "abc", "date": "2026-12-01T10:00:00", "machine": "m"}
    common.append_rows(path, ["dataset", "method", "accuracy"], [{"dataset": "a", "method": "x", "accuracy": 0.5}],
                       stamp)
    common.append_rows(path, ["dataset", "method", "accuracy", "peak_mib"],
                       [{"dataset": "a", "method": "y", "accuracy": 0.6, "peak_mib": 812.5}],
                       {**stamp, "date": "2026-12-02T10:00:00"})
    rows = _read(path)
    assert list(rows[0]) == ["commit", "date", "machine", "dataset", "method", "accuracy", "peak_mib"]
    assert [(r["method"], r["accuracy"], r["peak_mib"]) for r in rows] == [("x", "0.5", ""), ("y", "0.6", "812.5")]
    # a writer with the older, narrower field list still lands in the right columns
    common.append_rows(path, ["dataset", "method", "accuracy"], [{"dataset": "b", "method": "x", "accuracy": 0.7}],
                       stamp)
    assert [(r["dataset"], r["accuracy"], r["peak_mib"]) for r in _read(path)][-1] == ("b", "0.7", "")


def test_tables_compare_with_the_baseline_of_the_same_run_only(tmp_path):
    runs = [("c1", "2026-12-01T10:00:00", {"probe": 0.80, "hand_probe": 0.78}, {"probe": 10, "hand_probe": 20}),
            ("c2", "2026-12-02T10:00:00", {"probe": 0.85}, {"probe": 12})]
    rows = [{"commit": c, "date": d, "machine": "m", "dataset": "sst2", "method": m, "accuracy": str(a),
             "seconds": str(secs[m])} for c, d, accs, secs in runs for m, a in accs.items()]
    table = render.best_table(rows, [("accuracy", True)], "seconds", lambda m: "hand_probe")
    lines = {line.split(" | ")[1]: line for line in table.splitlines() if line.startswith("| sst2")}
    # the best probe row is run c2's, which measured no baseline: no difference is claimed
    assert "0.8500" in lines["`probe`"] and "c2" in lines["`probe`"] and "+" not in lines["`probe`"]
    rows.append({"commit": "c2", "date": "2026-12-02T10:00:00", "machine": "m", "dataset": "sst2",
                 "method": "hand_probe", "accuracy": "0.84", "seconds": "24"})
    table = render.best_table(rows, [("accuracy", True)], "seconds", lambda m: "hand_probe")
    probe = next(line for line in table.splitlines() if "`probe`" in line)
    assert "+1.00" in probe and "0.50x" in probe


def test_rmse_is_best_when_lowest_and_every_results_csv_renders(tmp_path):
    rows = [{"commit": "c", "date": "d", "machine": "m", "dataset": "r", "method": "probe", "rmse": v, "seconds": "1"}
            for v in ("0.90", "0.80", "0.85")]
    assert "rmse 0.8000" in render.best_table(rows, [("rmse", False)], "seconds", lambda m: None)
    text = render.render()
    for path in (BENCH / "results").glob("*.csv"):
        assert f"`benchmarks/results/{path.name}`" in text
