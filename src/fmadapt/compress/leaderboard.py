"""`fmadapt compress MODEL DATA --out DIR`: the smaller models of a fitted one, measured side by side.

Candidates: the model itself, its export (fp32 and int8), and a distilled student (texts: the encoder cut to 3 of
its layers; images: the model at 5/7 of its input size) with its exports — every export checked as `fmadapt export`
checks it, an int8 graph beyond tolerance listed as refused. Each is measured in the same run on the same held-out
inputs (the 20 % of DATA that distillation holds out; the students never train on them): accuracy, MB of weights,
p50 / p95 latency at batch 1, and throughput at batch 64. `keep` selects one — `best-under:latency=10ms` (the most
accurate whose p50 is at most 10 ms) or `smallest-within:1pt` (the smallest within 1 point of the model's accuracy)
— and copies it to DIR/kept. Written: DIR/leaderboard.csv, DIR/leaderboard.md, DIR/candidates/<name>/."""

from __future__ import annotations

import re
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, ExportError

LATENCY_CALLS = 50
THROUGHPUT_INPUTS = 512


def parse_keep(keep: str | None) -> tuple[str, float] | None:
    """("best-under-latency", ms) or ("smallest-within", points), or None; a ConfigError names the forms."""
    if not keep:
        return None
    m = re.fullmatch(r"best-under:latency=(\d+(?:\.\d+)?)ms", keep.strip())
    if m:
        return "best-under-latency", float(m.group(1))
    m = re.fullmatch(r"smallest-within:(\d+(?:\.\d+)?)pts?", keep.strip())
    if m:
        return "smallest-within", float(m.group(1))
    raise ConfigError(f"--keep {keep!r}: use best-under:latency=10ms or smallest-within:1pt")


def choose(rows: list[dict[str, Any]], keep: tuple[str, float]) -> dict[str, Any] | None:
    """The row `keep` selects among the measured ones (None when none qualifies)."""
    ok = [r for r in rows if r.get("accuracy") is not None]
    if keep[0] == "best-under-latency":
        under = [r for r in ok if r["p50_ms"] <= keep[1]]
        return max(under, key=lambda r: (r["accuracy"], -r["p50_ms"])) if under else None
    base = next((r["accuracy"] for r in ok if r["name"] == "model"), max((r["accuracy"] for r in ok), default=0))
    within = [r for r in ok if r["accuracy"] >= base - keep[1] / 100 - 1e-9]
    return min(within, key=lambda r: (r["mb"], -r["accuracy"])) if within else None


def _measure(predict: Any, inputs: list[str], y: np.ndarray) -> dict[str, Any]:
    acc = float((np.concatenate([predict(inputs[s:s + 64]) for s in range(0, len(inputs), 64)]).argmax(1)
                 == y).mean())
    predict(inputs[:2])  # (warm-up)
    times = []
    for x in (inputs * (LATENCY_CALLS // max(1, len(inputs)) + 1))[:LATENCY_CALLS]:
        t = time.perf_counter()
        predict([x])
        times.append((time.perf_counter() - t) * 1000)
    sample = (inputs * (THROUGHPUT_INPUTS // max(1, len(inputs)) + 1))[:min(THROUGHPUT_INPUTS, max(64, len(inputs)))]
    t = time.perf_counter()
    for s in range(0, len(sample), 64):
        predict(sample[s:s + 64])
    q = statistics.quantiles(times, n=100) if len(times) > 1 else [times[0]] * 99
    return {"accuracy": round(acc, 4), "p50_ms": round(q[49], 2), "p95_ms": round(q[94], 2),
            "per_s": round(len(sample) / (time.perf_counter() - t), 1)}


def _weights_mb(model: Any) -> float:
    return round(sum(p.numel() * p.element_size() for m in model.members_ for p in m.model.parameters()) / 2**20, 2)


def compress(model_dir: str | Path, data: Any, out: str | Path, *, keep: str | None = None, int8: bool = True,
             progress: bool = False, **distill_options: Any) -> dict[str, Any]:
    """Build, check and measure the candidates (see the module's docstring); returns {"rows", "kept"}."""
    from ..data.split import stratified_split
    from ..predictor import Predictor, load_model
    from .distill import DEFAULTS, distill
    from .export import export_model
    from .exported import ExportedModel

    rule = parse_keep(keep)
    out = Path(out)
    cands = out / "candidates"
    cands.mkdir(parents=True, exist_ok=True)
    model = load_model(model_dir, cache=False, progress=progress)
    if not isinstance(model, Predictor) or model.config_.task != "classification":
        raise ConfigError(f"{model_dir}: compress takes a single-label classifier for now")
    ex = model.read_labeled(data)
    seed = distill_options.get("seed") or DEFAULTS["seed"]
    _, held = stratified_split(ex, DEFAULTS["val_fraction"], seed)  # (the split distill holds out)
    inputs, y = list(held.inputs), model.encode_labels(held.labels)
    check = held  # (every export is checked on the labeled held-out inputs: int8 judged by accuracy on them)
    rows: list[dict[str, Any]] = []

    def add_model(name: str, where: Path, m: Any) -> None:
        rows.append({"name": name, "kind": "model directory", "dir": str(where), "mb": _weights_mb(m),
                     **_measure(lambda xs: m.proba(m.read_inputs(xs)), inputs, y)})

    def add_exports(name: str, where: Path) -> None:
        for precision in ("fp32", "int8") if int8 else ("fp32",):
            dest = cands / f"{name}-{precision}"
            shutil.rmtree(dest, ignore_errors=True)
            try:
                export_model(where, dest, int8=precision == "int8", data=check)
            except ExportError as e:
                rows.append({"name": f"{name}-{precision}", "kind": "export", "dir": "", "refused": str(e)[:300]})
                continue
            em = ExportedModel(dest, precision)
            graph = dest / em.meta["graphs"][precision]
            rows.append({"name": f"{name}-{precision}", "kind": "export", "dir": str(dest),
                         "mb": round(graph.stat().st_size / 2**20, 2), **_measure(em.predict_proba, inputs, y)})

    add_model("model", Path(model_dir), model)
    add_exports("model", Path(model_dir))
    student_dir = cands / "student"
    summary = distill(model_dir, data, student_dir, progress=progress, **distill_options)
    add_model("student", student_dir, load_model(student_dir, cache=False))
    add_exports("student", student_dir)
    kept = choose(rows, rule) if rule else None
    if rule and kept is None:
        note = "no candidate qualifies for --keep " + str(keep)
    elif kept:
        shutil.rmtree(out / "kept", ignore_errors=True)
        shutil.copytree(kept["dir"], out / "kept")
        note = f"kept: {kept['name']} -> {out / 'kept'}"
    else:
        note = ""
    _write(out, rows, note, summary)
    _into_report(Path(model_dir), out, rows, note, len(inputs))
    return {"rows": rows, "kept": kept["name"] if kept else None, "note": note, "held_out": len(inputs),
            "student": summary["student"]}


def _into_report(model_dir: Path, out: Path, rows: list[dict[str, Any]], note: str, held_out: int) -> None:
    """The leaderboard beside the model (compression.json) and in its report.html (section "Compression")."""
    import datetime as dt

    from ..artifact import write_json
    from ..report.run import COMPRESSION, write_run_report

    write_json(model_dir / COMPRESSION, {"rows": rows, "note": note, "held_out": held_out, "out": str(out.resolve()),
                                         "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")})
    write_run_report(model_dir)


def _write(out: Path, rows: list[dict[str, Any]], note: str, summary: dict[str, Any]) -> None:
    import csv

    fields = ["name", "kind", "accuracy", "mb", "p50_ms", "p95_ms", "per_s", "dir", "refused"]
    with (out / "leaderboard.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields, restval="", extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    lines = ["| candidate | accuracy | MB | p50 ms (batch 1) | p95 ms | inputs/s (batch 64) |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "refused" in r:
            lines.append(f"| {r['name']} | refused: {r['refused'][:120]} | | | | |")
        else:
            lines.append(f"| {r['name']} | {r['accuracy']:.4f} | {r['mb']} | {r['p50_ms']} | {r['p95_ms']} | "
                         f"{r['per_s']} |")
    student = ", ".join(f"{k} {v}" for k, v in summary["student"].items()
                        if k in ("layers", "image_size", "backbone", "pruned", "macs"))
    (out / "leaderboard.md").write_text("\n".join(
        ["# Compression leaderboard", "", f"Held-out: {summary['validation']} inputs of the data given (never seen by "
         f"the student). Student: {student}, distilled in {summary['fit_seconds']} s.", "", *lines, "", note, ""]),
        encoding="utf-8")
