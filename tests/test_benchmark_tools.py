"""The benchmarks' shared tools: results CSVs that never lose a row, and tables rendered from them that compare
a method only with the baseline of its own run."""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import common  # noqa: E402
import render  # noqa: E402


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_csv_none_writes_no_file_named_none():
    assert common.csv_path(None, "deploy") == common.RESULTS / "deploy.csv"
    assert common.csv_path(None, "deploy", quick=True) is None
    assert [common.csv_path(v, "deploy") for v in ("", "none", "None", "off")] == [None] * 4
    assert common.csv_path("out.csv", "deploy") == Path("out.csv")


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


def test_every_note_is_in_the_notes_index():
    notes = BENCH / "notes"
    index = (notes / "README.md").read_text(encoding="utf-8")
    missing = [p.name for p in notes.iterdir() if p.name != "README.md" and f"`{p.name}`" not in index]
    assert not missing, f"add these to benchmarks/notes/README.md: {missing}"
    listed = set(re.findall(r"`([\w.]+\.(?:md|log))`", index.split("## Defaults suite", 1)[1]))
    assert not {n for n in listed if not (notes / n).exists()}, "the index names notes that do not exist"


#: figures the documentation states, and the results row each comes from: (page, the sentence's words, CSV topic,
#: the row's fields, its column). The figure is the last number of the words, written as the row's value rounded.
CLAIMS = [
    ("data.md", "two of the 20 validation sentences, scored 0.5717", "pretrain",
     {"commit": "bb1a606 (uncommitted changes)", "dataset": "sst2", "method": "auto", "seed": "0", "labels": "100"},
     "accuracy"),
    ("federated.md", "centralised fine-tuning of the top 2 blocks scores 0.8830", "federated",
     {"commit": "8872bae", "dataset": "fashion_mnist", "method": "centralised finetune, training split"}, "accuracy"),
    ("federated.md", "federated iid 0.8450", "federated",
     {"commit": "8872bae", "dataset": "fashion_mnist", "method": "federated finetune, top 2 blocks",
      "partition": "iid"}, "accuracy"),
    ("federated.md", "and Dirichlet(0.5) 0.8260", "federated",
     {"commit": "8872bae", "dataset": "fashion_mnist", "method": "federated finetune, top 2 blocks",
      "partition": "dirichlet:0.5"}, "accuracy"),
    ("federated.md", "same training examples scores 0.8900", "federated",
     {"commit": "f89f115", "dataset": "ag_news", "method": "centralised finetune, training split"}, "accuracy"),
    ("federated.md", "federated iid 0.8860", "federated",
     {"commit": "f89f115", "dataset": "ag_news", "method": "federated finetune, top 2 blocks", "partition": "iid"},
     "accuracy"),
    ("federated.md", "Dirichlet(0.5) 0.8770", "federated",
     {"commit": "f89f115", "dataset": "ag_news", "method": "federated finetune, top 2 blocks",
      "partition": "dirichlet:0.5"}, "accuracy"),
    ("federated.md", "the federated runs took 966", "federated",
     {"commit": "f89f115", "dataset": "ag_news", "method": "federated finetune, top 2 blocks", "partition": "iid"},
     "fit_seconds"),
    ("federated.md", "same training examples scores 0.8710", "federated",
     {"commit": "63c8b36", "dataset": "ag_news", "method": "centralised probe, training split"}, "accuracy"),
    ("federated.md", "iid 0.8730", "federated",
     {"commit": "63c8b36", "dataset": "ag_news", "method": "federated probe", "partition": "iid", "attack": ""},
     "accuracy"),
    ("federated.md", "Dirichlet(0.5) 0.8640", "federated",
     {"commit": "63c8b36", "dataset": "ag_news", "partition": "dirichlet:0.5"}, "accuracy"),
    ("federated.md", "FedAvg falls to 0.1250", "federated",
     {"commit": "63c8b36", "dataset": "ag_news", "aggregation": "fedavg", "attack": "sign-flip:0,1"}, "accuracy"),
    ("federated.md", "Krum keeps 0.8570", "federated",
     {"commit": "63c8b36", "dataset": "ag_news", "aggregation": "krum"}, "accuracy"),
    ("federated.md", "the median keeps 0.8170", "federated",
     {"commit": "63c8b36", "dataset": "fashion_mnist", "aggregation": "median"}, "accuracy"),
    ("federated.md", "keeps 0.8640 on AG News", "federated",
     {"commit": "965e318", "dataset": "ag_news", "aggregation": "multikrum"}, "accuracy"),
    ("federated.md", "and 0.8390 on Fashion-MNIST", "federated",
     {"commit": "965e318", "dataset": "fashion_mnist", "aggregation": "multikrum"}, "accuracy"),
    ("federated.md", "ε = 8 scores 0.8600", "federated",
     {"commit": "bcc84f9", "dataset": "ag_news", "method": "federated probe, dp epsilon 8"}, "accuracy"),
    ("federated.md", "ε = 1 0.6980", "federated",
     {"commit": "bcc84f9", "dataset": "ag_news", "method": "federated probe, dp epsilon 1"}, "accuracy"),
    ("federated.md", "ε = 8 scores 0.7960", "federated",
     {"commit": "bcc84f9", "dataset": "fashion_mnist", "method": "federated probe, dp epsilon 8"}, "accuracy"),
    ("federated.md", "AG News 0.8740", "federated",
     {"commit": "bcc84f9", "dataset": "ag_news", "method": "federated probe, SecAgg+"}, "accuracy"),
    ("federated.md", "in 33.0", "federated",
     {"commit": "bcc84f9", "dataset": "ag_news", "method": "federated probe, SecAgg+"}, "fit_seconds"),
    ("federated.md", "against 24.9", "federated",
     {"commit": "bcc84f9", "dataset": "ag_news", "method": "federated probe", "partition": "iid"}, "fit_seconds"),
    ("federated.md", "cached: 28.8", "federated",
     {"commit": "63c8b36", "dataset": "ag_news", "method": "fmadapt federate (whole process)"}, "process_seconds"),
    ("audio.md", "default probe scores 0.9333", "audio",
     {"commit": "0646423", "dataset": "speech_keywords", "method": "probe"}, "accuracy"),
    ("audio.md", "against 0.9667", "audio",
     {"commit": "0646423", "dataset": "speech_keywords", "method": "hand_probe"}, "accuracy"),
    ("audio.md", "the probe then scores 0.9500", "audio",
     {"commit": "5f51f7f", "dataset": "speech_keywords", "method": 'probe:split_groups="^([^_]+)_"'}, "accuracy"),
    ("audio.md", "it scored 0.8667", "audio", {"commit": "e0999af", "dataset": "speech_keywords"}, "accuracy"),
    ("audio.md", "and 0.9333 on the spoken digits", "audio", {"commit": "e0999af", "dataset": "spoken_digits"},
     "accuracy"),
    ("audio.md", "measured 416.0", "audio", {"commit": "6a6d87b", "method": "fmadapt features (ONNX Runtime)"},
     "clips_per_s"),
    ("audio.md", "against 92.0", "audio", {"commit": "6a6d87b", "method": "hand-written features"}, "clips_per_s"),
    ("audio.md", "in one run: 333.8", "audio", {"commit": "c92e2c3", "method": "fmadapt features (ONNX Runtime)"},
     "clips_per_s"),
    ("audio.md", "against 76.5", "audio", {"commit": "c92e2c3", "method": "hand-written features"}, "clips_per_s"),
    ("audio.md", "takes 4.67", "audio", {"commit": "c92e2c3", "method": "fmadapt embed (whole process)"},
     "process_seconds"),
    ("audio.md", "graph), 1.45", "audio",
     {"commit": "c92e2c3", "method": "fmadapt embed, graph remembered (whole process)"}, "process_seconds"),
    ("audio.md", "against 3.57", "audio", {"commit": "c92e2c3", "method": "hand-written features (whole process)"},
     "process_seconds"),
    ("benchmarks.md", "test RMSE 0.8379", "table_features",
     {"commit": "14f4070", "dataset": "clothing_rating", "method": "text_features_stack"}, "rmse"),
    ("benchmarks.md", "against 0.8579", "table_features",
     {"commit": "14f4070", "dataset": "clothing_rating", "method": "text_features_linear"}, "rmse"),
    ("benchmarks.md", "and 0.8581", "table_features",
     {"commit": "14f4070", "dataset": "clothing_rating", "method": "text_only"}, "rmse"),
    ("benchmarks.md", "AUC 0.9042", "table_features",
     {"commit": "14f4070", "dataset": "clothing_recommended", "method": "text_features_linear"}, "auc"),
    ("benchmarks.md", "would have scored 0.8910", "table_features",
     {"commit": "14f4070", "dataset": "clothing_recommended", "method": "text_features_stack"}, "auc"),
    ("benchmarks.md", "RMSE 0.7016", "multitarget", {"commit": "edb8d09", "method": "targets_features"}, "rmse"),
    ("benchmarks.md", "AUC 0.9427", "multitarget", {"commit": "edb8d09", "method": "targets_features"}, "auc"),
    ("benchmarks.md", "against 0.7007", "multitarget", {"commit": "edb8d09", "method": "targets"}, "rmse"),
    ("benchmarks.md", "0.9460", "multitarget", {"commit": "edb8d09", "method": "targets"}, "auc"),
    ("benchmarks.md", "without torch: 2.91", "predict_tasks", {"commit": "14f4070", "method": "rating_table"},
     "light_s"),
    ("benchmarks.md", "2.91 s and 2.79", "predict_tasks", {"commit": "14f4070", "method": "two_targets"}, "light_s"),
    ("benchmarks.md", "as whole processes, 3.5", "predict_tasks", {"commit": "14f4070", "method": "rating_table"},
     "ratio"),
    ("benchmarks.md", "SST-2 in 171.6", "defaults", {"commit": "d6246cc", "dataset": "sst2", "method": "finetune"},
     "seconds"),
    ("benchmarks.md", "against 348.0", "defaults",
     {"commit": "d6246cc", "dataset": "sst2", "method": "finetune_set:group_by_length=false"}, "seconds"),
    ("benchmarks.md", "takes 6.59", "deploy", {"commit": "c580588", "dataset": "sst2", "method": "model_dir"},
     "first_prediction_s"),
    ("benchmarks.md", "and 0.37", "deploy", {"commit": "c580588", "dataset": "sst2", "method": "export_fp32"},
     "first_prediction_s"),
    ("benchmarks.md", "int8 export 3.1", "deploy", {"commit": "c580588", "dataset": "sst2", "method": "export_int8"},
     "p50_ms"),
    ("benchmarks.md", "2 cores: 143.6", "deploy",
     {"commit": "c580588", "dataset": "sst2", "method": "serve_int8", "concurrency": "32"}, "per_s"),
    ("benchmarks.md", "serves 477.3", "deploy", {"commit": "1e4ce90", "dataset": "sst2", "method": "serve_int8",
                                                 "concurrency": "32", "p50_ms": "65.36"}, "per_s"),
    ("benchmarks.md", "against 330.2", "deploy", {"commit": "1e4ce90", "dataset": "sst2", "method": "serve_int8_before",
                                                  "concurrency": "32", "p50_ms": "94.44"}, "per_s"),
    ("benchmarks.md", "p50 3.9", "deploy", {"commit": "1e4ce90", "dataset": "sst2", "method": "serve_int8",
                                            "concurrency": "1", "per_s": "241.0"}, "p50_ms"),
    ("benchmarks.md", "on SST-2 (0.8544", "distill", {"commit": "acd70f3", "method": "teacher"}, "accuracy"),
    ("benchmarks.md", "reaches 0.8211", "distill", {"commit": "acd70f3", "method": "student_L3_unlabeled"},
     "accuracy"),
    ("benchmarks.md", "at 1.94", "distill", {"commit": "acd70f3", "method": "student_L3_unlabeled"}, "speedup"),
    ("benchmarks.md", "(teacher 0.896", "distill", {"commit": "ba4ba2b", "dataset": "ag_news", "method": "teacher"},
     "accuracy"),
    ("benchmarks.md", "reaches 0.881", "distill",
     {"commit": "ba4ba2b", "dataset": "ag_news", "method": "student_L3_unlabeled_h0"}, "accuracy"),
    ("benchmarks.md", "at 2.16", "distill",
     {"commit": "ba4ba2b", "dataset": "ag_news", "method": "student_L3_unlabeled_h0"}, "speedup"),
    ("benchmarks.md", "the default since dbbf76d) 0.7844", "distill",
     {"commit": "d636d8d", "dataset": "sst2", "method": "student_static256_h512_unlabeled"}, "accuracy"),
    ("benchmarks.md", "at 24.65", "distill",
     {"commit": "d636d8d", "dataset": "sst2", "method": "student_static256_h512_unlabeled"}, "speedup"),
    ("benchmarks.md", "the static student 0.861", "distill",
     {"commit": "d636d8d", "dataset": "ag_news", "method": "student_static256_h512_unlabeled"}, "accuracy"),
    ("benchmarks.md", "at 40.53", "distill",
     {"commit": "d636d8d", "dataset": "ag_news", "method": "student_static256_h512_unlabeled"}, "speedup"),
    ("pretrain.md", "from 0.5129", "pretrain", {"commit": "1cf55d0", "dataset": "thucnews", "labels": "1000",
                                                "method": "probe"}, "accuracy"),
    ("pretrain.md", "to 0.5945 with", "pretrain",
     {"commit": "1cf55d0", "dataset": "thucnews", "labels": "1000", "method": "pretrained+probe"}, "accuracy"),
    ("pretrain.md", "from 0.6295", "pretrain", {"commit": "1cf55d0", "dataset": "thucnews", "labels": "10000",
                                                "method": "probe"}, "accuracy"),
    ("pretrain.md", "to 0.7265 with", "pretrain",
     {"commit": "1cf55d0", "dataset": "thucnews", "labels": "10000", "method": "pretrained+probe"}, "accuracy"),
    ("pretrain.md", "0.6547 against", "pretrain",
     {"commit": "b33f016", "dataset": "thucnews", "labels": "1000", "method": "pretrained+finetune"}, "accuracy"),
    ("pretrain.md", "against 0.6763", "pretrain",
     {"commit": "b33f016", "dataset": "thucnews", "labels": "1000", "method": "finetune"}, "accuracy"),
    ("pretrain.md", "0.8310 against", "pretrain",
     {"commit": "b33f016", "dataset": "thucnews", "labels": "10000", "method": "pretrained+finetune"}, "accuracy"),
    ("pretrain.md", "against 0.8318", "pretrain",
     {"commit": "b33f016", "dataset": "thucnews", "labels": "10000", "method": "finetune"}, "accuracy"),
    ("pretrain.md", "scores 0.7455", "pretrain",
     {"commit": "b33f016", "dataset": "thucnews", "labels": "1000", "method": "tfidf"}, "accuracy"),
    ("pretrain.md", "fine-tuning 0.6652", "pretrain",
     {"commit": "1ac7085", "labels": "1000", "method": "pretrained+finetune [newtok15k]"}, "accuracy"),
    ("pretrain.md", "against 0.5959", "pretrain",
     {"commit": "1ac7085", "labels": "1000", "method": "pretrained+finetune [all15k]"}, "accuracy"),
    ("pretrain.md", "and 0.8424", "pretrain",
     {"commit": "b33f016", "dataset": "thucnews", "labels": "10000", "method": "tfidf"}, "accuracy"),
    ("pretrain.md", "scores 0.8245", "pretrain",
     {"commit": "1ea6801", "dataset": "fashion_mnist", "seed": "0", "method": "simclr+probe"}, "accuracy"),
    ("pretrain.md", "0.8243 and 0.8236", "pretrain",
     {"commit": "1ea6801", "dataset": "fashion_mnist", "seed": "2", "method": "simclr+probe"}, "accuracy"),
    ("pretrain.md", "against 0.8123", "pretrain",
     {"commit": "1ea6801", "dataset": "fashion_mnist", "seed": "0", "method": "probe"}, "accuracy"),
    ("pretrain.md", "0.7962 and 0.8044", "pretrain",
     {"commit": "1ea6801", "dataset": "fashion_mnist", "seed": "2", "method": "probe"}, "accuracy"),
    ("pretrain.md", "930 steps in 793", "pretrain",
     {"commit": "1ea6801", "dataset": "fashion_mnist", "method": "pretrain (simclr)"}, "fit_seconds"),
    ("pretrain.md", "(seed 1: 0.7243", "pretrain",
     {"commit": "265549a", "labels": "100", "seed": "1", "method": "auto+unlabeled"}, "accuracy"),
    ("pretrain.md", "seed 1: 0.7243 both", "pretrain",
     {"commit": "265549a", "labels": "100", "seed": "1", "method": "auto"}, "accuracy"),
    ("pretrain.md", "self-training were skipped for time (0.8226", "pretrain",
     {"commit": "4dc31d1", "labels": "1000", "seed": "0", "method": "auto+unlabeled"}, "accuracy"),
    ("pretrain.md", "for time (0.8226 both", "pretrain",
     {"commit": "4dc31d1", "labels": "1000", "seed": "0", "method": "auto"}, "accuracy"),
    ("pretrain.md", "which won and scored 0.8281", "pretrain",
     {"commit": "f42d3b2", "labels": "1000", "seed": "0", "method": "auto+unlabeled 30m"}, "accuracy"),
    ("pretrain.md", "it scored 0.8082", "pretrain",
     {"commit": "e43234c", "dataset": "fashion_mnist", "method": "auto+unlabeled"}, "accuracy"),
    ("pretrain.md", "plain probe's 0.8123", "pretrain",
     {"commit": "e43234c", "dataset": "fashion_mnist", "method": "probe"}, "accuracy"),
    ("pretrain.md", "seed 0: 0.6875", "pretrain",
     {"commit": "b7857af", "dataset": "sst2", "seed": "0", "method": "tsdae+probe"}, "accuracy"),
    ("pretrain.md", "seed 0: 0.6875 against 0.6766", "pretrain",
     {"commit": "b7857af", "dataset": "sst2", "seed": "0", "method": "probe"}, "accuracy"),
    ("pretrain.md", "(seed 0: 0.6712", "pretrain",
     {"commit": "c16fb20", "seed": "0", "method": "pretrained+finetune [newtok]"}, "accuracy"),
    ("pretrain.md", "(seed 0: 0.6712 against 0.6763", "pretrain",
     {"commit": "c16fb20", "dataset": "thucnews", "seed": "0", "method": "finetune"}, "accuracy"),
    ("federated.md", "clean`, rows of 07b8816; same data and rounds): federated iid 0.8740", "federated",
     {"commit": "07b8816", "dataset": "ag_news", "method": "federated lora, top 2 blocks", "partition": "iid"},
     "accuracy"),
    ("federated.md", "iid 0.8740 and Dirichlet(0.5) 0.8720", "federated",
     {"commit": "07b8816", "dataset": "ag_news", "method": "federated lora, top 2 blocks",
      "partition": "dirichlet:0.5"}, "accuracy"),
    ("federated.md", "Dirichlet(0.5) 0.8720, against 0.8900", "federated",
     {"commit": "07b8816", "dataset": "ag_news", "method": "centralised lora (all layers), training split"},
     "accuracy"),
    ("federated.md", "rows of 6fc1879) lifts iid to 0.8550", "federated",
     {"commit": "6fc1879", "dataset": "fashion_mnist", "method": "federated finetune, top 2 blocks",
      "partition": "iid"}, "accuracy"),
    ("federated.md", "and leaves Dirichlet(0.5) at 0.8270", "federated",
     {"commit": "6fc1879", "dataset": "fashion_mnist", "method": "federated finetune, top 2 blocks",
      "partition": "dirichlet:0.5"}, "accuracy"),
    ("deploy.md", "int8 export answered 279.9", "deploy",
     {"commit": "a041779", "dataset": "speech_keywords", "method": "serve_int8", "concurrency": "1"}, "per_s"),
    ("deploy.md", "(p50 3.46", "deploy",
     {"commit": "a041779", "dataset": "speech_keywords", "method": "serve_int8", "concurrency": "1"}, "p50_ms"),
    ("deploy.md", "ms) and 447.3", "deploy", {"commit": "a041779", "dataset": "speech_keywords",
                                            "method": "serve_int8", "concurrency": "32", "p50_ms": "71.9"}, "per_s"),
    ("deploy.md", "| clothing export int8 | 86.2 % | 22.4 | 3.13", "deploy",
     {"commit": "1f376be", "dataset": "clothing", "method": "export_int8"}, "p50_ms"),
    ("deploy.md", "| THUCNews model directory (n-gram model) | 78.9 % | — | 0.84", "deploy",
     {"commit": "1f376be", "dataset": "thucnews", "method": "model_dir"}, "p50_ms"),
    ("deploy.md", "| THUCNews export int8 | 78.9 % | 0.3 | 0.04", "deploy",
     {"commit": "1f376be", "dataset": "thucnews", "method": "export_int8"}, "p50_ms"),
    ("pretrain.md", "0.8245 with them", "ngram", {"commit": "f1dfb2c", "features": "char13+jieba12"}, "accuracy"),
    ("pretrain.md", "0.8305 with characters", "ngram", {"commit": "f1dfb2c", "features": "char13"}, "accuracy"),
]


def test_figures_in_the_docs_are_those_of_the_results_csvs():
    docs = Path(__file__).resolve().parents[1] / "docs"
    for page, words, topic, where, column in CLAIMS:
        text = " ".join((docs / page).read_text(encoding="utf-8").split())
        assert words in text, f"docs/{page} no longer says {words!r}: update CLAIMS with the figure's new sentence"
        figure = re.findall(r"\d+(?:\.\d+)?", words)[-1]
        rows = [r for r in _read(BENCH / "results" / f"{topic}.csv") if all(r[k] == v for k, v in where.items())]
        assert rows, f"no row {where} in benchmarks/results/{topic}.csv"
        decimals = len(figure.split(".")[1]) if "." in figure else 0
        assert f"{float(rows[-1][column]):.{decimals}f}" == figure, (page, words, rows[-1][column])
