#!/usr/bin/env python
"""What shipping a model costs and gains (issue 24): per dataset, a probe fitted with fmadapt, then its model
directory against its export (`fmadapt export`, fp32 and --int8), all measured in the same run: held-out accuracy,
MB on disk, latency at batch 1 (p50, p95 over single-input calls in one process), throughput at batch 64, and the
first prediction in a fresh process (the whole process, as a user times it: median of 3). Then the int8 export
behind `fmadapt serve` on loopback, loaded by a bare asyncio HTTP/1.1 client (keep-alive connections) at
concurrency 1, 8 and 32 with one input per request, and at 32 with 8 per request: inputs/s, p50/p99 per request and
the count of 5xx answers; with --before COMMIT the same export is served by that commit's code too, in the same run.
`thucnews` fits `auto` (3 minutes; on Chinese titles it picks or blends in its n-gram TF-IDF model) and `clothing`
reads five table columns beside the review (`--features`; served models cannot take rows yet: no server part).

Rows go to benchmarks/results/deploy.csv (--csv): part `model` (method model_dir | export_fp32 | export_int8) and
part `server` (method serve_int8 | serve_int8_before, concurrency c; options: inputs per request, code, int8 graph).

    python benchmarks/deploy.py --datasets sst2,hymenoptera
    python benchmarks/deploy.py --datasets thucnews,clothing    # auto's n-gram model; text + table columns
    python benchmarks/deploy.py --datasets speech_keywords      # sounds (60 test clips)
    python benchmarks/deploy.py --datasets sst2 --strategy finetune --before e36eea8
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (
    ROOT,
    add_csv_argument,
    append_rows,
    csv_path,
    git,
    md_table,
    measured_process,
    options_json,
    stamp,
)

DATA = ROOT.parent / "shared" / "data"
FIELDS = ["part", "dataset", "method", "concurrency", "accuracy", "mb", "p50_ms", "p95_ms", "p99_ms", "per_s",
          "first_prediction_s", "errors_5xx", "requests", "options"]


def _dataset(name: str, quick: bool) -> tuple[str, list[str], list[str], list[str]]:
    """(training data for `fmadapt fit`, held-out inputs, their labels, fit options)."""
    import pandas as pd

    if name == "sst2":
        tmp = Path(tempfile.mkdtemp(prefix="deploy-sst2-"))
        train = pd.read_csv(DATA / "sst2" / "train.tsv", sep="\t", quoting=3, dtype=str)
        train.head(500 if quick else 2000).to_csv(tmp / "train.csv", index=False)
        dev = pd.read_csv(DATA / "sst2" / "dev.tsv", sep="\t", quoting=3, dtype=str)
        dev = dev.head(100) if quick else dev
        dev.to_csv(tmp / "dev.csv", index=False)
        return str(tmp / "train.csv"), dev["content"].tolist(), dev["label"].tolist(), ["--text", "sentence"]
    if name == "thucnews":
        tmp = Path(tempfile.mkdtemp(prefix="deploy-thucnews-"))
        read = dict(sep="\t", header=None, names=["text", "label"], quoting=3, dtype=str)
        pd.read_csv(DATA / "thucnews_titles" / "dev.txt", **read).sample(500 if quick else 2000, random_state=0
                                                                         ).to_csv(tmp / "train.csv", index=False)
        test = pd.read_csv(DATA / "thucnews_titles" / "test.txt", **read).sample(100 if quick else 1000,
                                                                                random_state=0)
        return str(tmp / "train.csv"), test["text"].tolist(), test["label"].tolist(), [
            "--strategy", "auto", "--time-budget", "1m" if quick else "3m"]
    if name == "clothing":  # rows (dicts): the review and the table columns read beside it
        tmp = Path(tempfile.mkdtemp(prefix="deploy-clothing-"))
        src = DATA / "clothing_reviews"
        pd.read_csv(src / "train.csv").head(500 if quick else 2000).to_csv(tmp / "train.csv", index=False)
        test = pd.read_csv(src / "test.csv").head(100 if quick else 1000)
        labels = test.pop("recommended").astype(str).tolist()
        return str(tmp / "train.csv"), test.drop(columns=["rating"]).to_dict("records"), labels, [
            "--text", "review_text", "--label", "recommended", "--features", ",".join(TABLE_COLUMNS)]
    if name == "speech_keywords":
        root = DATA / "speech_keywords"
        test = sorted(p for p in (root / "test").glob("*/*") if p.is_file())[: 20 if quick else None]
        return str(root / "train"), [str(p) for p in test], [p.parent.name for p in test], []
    if name == "hymenoptera":
        root = DATA / "hymenoptera"
        val = sorted((root / "val").glob("*/*"))[: 40 if quick else None]
        return str(root), [str(p) for p in val], [p.parent.name for p in val], []
    raise SystemExit(f"unknown dataset {name}")


#: the table columns the clothing model reads beside the review
TABLE_COLUMNS = ("age", "division_name", "department_name", "class_name", "positive_feedback_count")


def _size_mb(path: Path) -> float:
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20, 1)


def _latency(predict, inputs: list[str], n: int) -> tuple[float, float, float]:
    """p50, p95 (ms) of single-input calls, and inputs/s at batch 64."""
    predict(inputs[:2])  # warm-up
    times = []
    for x in (inputs * (n // max(1, len(inputs)) + 1))[:n]:
        t = time.perf_counter()
        predict([x])
        times.append((time.perf_counter() - t) * 1000)
    t = time.perf_counter()
    for s in range(0, len(inputs), 64):
        predict(inputs[s:s + 64])
    per_s = len(inputs) / (time.perf_counter() - t)
    q = statistics.quantiles(times, n=100)
    return round(q[49], 2), round(q[94], 2), round(per_s, 1)


def _first_prediction(cmd: list[str]) -> float:
    secs = []
    for _ in range(3):
        proc, s, _ = measured_process(cmd)
        if proc.returncode != 0:
            raise SystemExit(f"{cmd} failed: {proc.stderr[-2000:]}")
        secs.append(s)
    return round(statistics.median(secs), 2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _load(port: int, bodies: list[bytes], concurrency: int, requests: int) -> dict:
    """`requests` POSTs of `bodies` from `concurrency` keep-alive connections. A bare HTTP/1.1 client on asyncio
    streams (as wrk or hey would be): the client shares the 2 cores with the server, and an HTTP library's own
    cost (httpx: about 1 ms a request) would be measured as the server's."""
    lat, errors = [], 0
    queue = list(range(requests))

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while queue:
            body = bodies[queue.pop() % len(bodies)]
            t = time.perf_counter()
            writer.write(b"POST /predict HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%b" % (len(body), body))
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            status = int(head[0].split()[1])
            length = next(int(h.split(":")[1]) for h in head if h.lower().startswith("content-length:"))
            answer = await reader.readexactly(length)
            lat.append((time.perf_counter() - t) * 1000)
            errors += status >= 500
            if status != 200 and status < 500:
                raise SystemExit(f"server answered {status}: {answer[:300]!r}")
        writer.close()

    await asyncio.gather(*[worker() for _ in range(2)])  # warm-up
    queue.extend(range(requests))
    lat.clear()
    t = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    wall = time.perf_counter() - t
    q = statistics.quantiles(lat, n=100)
    return {"p50_ms": round(q[49], 2), "p99_ms": round(q[98], 2), "per_s": round(requests / wall, 1),
            "errors_5xx": errors, "requests": requests}


def _serve(export: Path, inputs: list[str], modality: str, requests: int, src: Path) -> list[dict]:
    """The server (fmadapt's code under `src`) on `export`, loaded at concurrency 1, 8 and 32 with one input per
    request, and at 32 with 8 per request; per_s counts inputs."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(src)}
    proc = subprocess.Popen([sys.executable, "-m", "fmadapt", "serve", str(export), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        import urllib.request

        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise SystemExit(f"server did not start: {proc.stderr.read()[-2000:]}") from None
                time.sleep(0.3)
        if modality == "text":
            items = [json.dumps(t) for t in inputs]
        else:
            items = [json.dumps(base64.b64encode(Path(p).read_bytes()).decode()) for p in inputs[:32]]
        key = {"text": "texts", "image": "images", "audio": "sounds"}[modality]
        out = []
        for c, per in ((1, 1), (8, 1), (32, 1), (32, 8)):
            bodies = [f'{{"{key}": [{", ".join(items[i:i + per])}]}}'.encode()
                      for i in range(0, len(items) - per + 1, per)]
            n = requests if per == 1 else max(1, requests // per)
            r = asyncio.run(_load(port, bodies, c, n))
            out.append({"concurrency": c, **r, "per_s": round(r["per_s"] * per, 1), "per_request": per})
        return out
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def _before_tree(commit: str) -> Path:
    return Path(tempfile.gettempdir()) / f"fmadapt-deploy-before-{commit}"


def before_src(commit: str) -> Path:
    """src/ of `commit`, checked out once in a detached git worktree (removed by main at the end)."""
    tree = _before_tree(commit)
    if not tree.is_dir():
        git("worktree", "add", "--detach", str(tree), commit)
    return tree / "src"


def run_dataset(name: str, work: Path, quick: bool, strategy: str = "probe", before: str | None = None
                ) -> list[dict]:
    sys.path.insert(0, str(ROOT / "src"))
    from fmadapt import load_model
    from fmadapt.compress.exported import ExportedModel

    train, inputs, labels, fit_opts = _dataset(name, quick)
    model_dir, export = work / f"{name}-model", work / f"{name}-export"
    fmadapt = [sys.executable, "-m", "fmadapt"]
    subprocess.run([*fmadapt, "fit", train, "--strategy", strategy, "--out", str(model_dir), "--report", "off",
                    *fit_opts], check=True, capture_output=True)
    held_out = work / f"{name}-heldout.csv"
    import pandas as pd

    modality = {"hymenoptera": "image", "speech_keywords": "audio"}.get(name, "text")
    table = isinstance(inputs[0], dict)  # (rows: the text and the table columns read beside it)
    check = ["--data", str(held_out)] if modality == "text" else \
        ["--data", str(Path(inputs[0]).parent.parent)] if modality == "audio" else []
    if table:
        pd.DataFrame(inputs).assign(recommended=labels).to_csv(held_out, index=False)
    elif modality == "text":
        pd.DataFrame({"text": inputs, "label": labels}).to_csv(held_out, index=False)
    rows = []
    model = load_model(model_dir, cache=False)  # (new inputs: no feature cache to hit)
    fitted = {"fit": " ".join(fit_opts)} if fit_opts else {}
    history = json.loads((model_dir / "config.json").read_text(encoding="utf-8")).get("history") or {}
    if history.get("auto"):  # (the model's own strategy is the winner's)
        fitted.update(winner=history["auto"].get("winner"), ngram_weight=model.ngram_weight_)
    one = json.dumps(inputs[0]) if table else inputs[0]
    for method in ("model_dir", "export_fp32", "export_int8"):
        if method == "model_dir":
            where = model_dir
            predict = (lambda xs: model.predict(pd.DataFrame(xs))) if table else (lambda xs: model.predict(xs))
            call = "pd.DataFrame([json.loads(sys.argv[2])])" if table else "[sys.argv[2]]"
            first = [*fmadapt[:1], "-c", "import sys, json; import pandas as pd; from fmadapt import load_model; "
                     f"print(load_model(sys.argv[1]).predict({call}))", str(model_dir), one]
        else:
            where = export.with_name(export.name + "-" + method[-4:])
            shutil.rmtree(where, ignore_errors=True)
            r = subprocess.run([*fmadapt, "export", str(model_dir), "--out", str(where), "--json", *check,
                                *(["--int8"] if method == "export_int8" else [])], capture_output=True, text=True)
            if r.returncode != 0:
                rows.append({"part": "model", "dataset": name, "method": method,
                             "options": options_json({"refused": r.stderr.strip()[-300:]})})
                print(f"{name} {method}: {r.stderr.strip()[-300:]}", file=sys.stderr)
                continue
            em = ExportedModel(where)
            predict = (lambda xs, em=em: em.predict([x["review_text"] for x in xs], table=xs)) if table else \
                em.predict
            first = [sys.executable, "-c", "import sys, json; sys.path.insert(0, sys.argv[1]); from predict import "
                     "ExportedModel; r = json.loads(sys.argv[2]); print(ExportedModel(sys.argv[1]).predict("
                     "[r['review_text']], table=[r]))", str(where), one] if table else \
                [sys.executable, str(where / "predict.py"), str(where), inputs[0]]
        pred = [str(p) for s in range(0, len(inputs), 64) for p in predict(inputs[s:s + 64])]
        acc = sum(p == y for p, y in zip(pred, labels, strict=True)) / len(labels)
        p50, p95, per_s = _latency(predict, inputs, 30 if quick else 100)
        # MB: the files this precision needs (a model directory references its packaged backbone: not counted)
        unused = {"export_fp32": "model.int8.onnx", "export_int8": "model.onnx"}.get(method)
        mb = "" if method == "model_dir" else round(_size_mb(where) - (where / unused).stat().st_size / 2**20, 1) \
            if (where / unused).exists() else _size_mb(where)
        rows.append({"part": "model", "dataset": name, "method": method, "accuracy": round(acc, 4),
                     "mb": mb, "p50_ms": p50, "p95_ms": p95, "per_s": per_s,
                     "first_prediction_s": _first_prediction(first),
                     "options": options_json({"inputs": len(inputs), "strategy": strategy, **fitted,
                                              "note": "a model directory references its packaged backbone"
                                              if method == "model_dir" else ""})})
        print(json.dumps(rows[-1]), file=sys.stderr)
    int8 = export.with_name(export.name + "-int8")
    if int8.is_dir() and not table:  # (a server takes no table rows yet)
        servers = [("serve_int8", ROOT / "src", git("rev-parse", "--short", "HEAD"))]
        if before:  # the same export behind the older code, in this run (same client, same machine state)
            servers.append(("serve_int8_before", before_src(before), before))
        graph = json.loads((int8 / "export.json").read_text())["parity"]["int8"]["quantized"]
        for method, src, commit in servers:
            for r in _serve(int8, inputs, modality, 100 if quick else 1000, src):
                per = r.pop("per_request")
                rows.append({"part": "server", "dataset": name, "method": method, **r,
                             "options": options_json({"inputs per request": per, "code": commit,
                                                      "int8": graph})})
                print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default="sst2,hymenoptera")
    ap.add_argument("--work", default=None, help="where the models and exports go (default: a temporary folder)")
    ap.add_argument("--quick", action="store_true", help="a smoke run on a few inputs")
    ap.add_argument("--strategy", default="probe", help="how the model served is fitted (fmadapt fit --strategy)")
    ap.add_argument("--before", default=None, help="also serve the int8 export with the code of this commit (a git "
                    "worktree), in the same run: the server's baseline")
    add_csv_argument(ap, "deploy", quick=True)
    args = ap.parse_args()
    run_stamp = stamp()
    work = Path(args.work or tempfile.mkdtemp(prefix="fmadapt-deploy-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("FMADAPT_FAST_PATH", "1")
    try:
        rows = [r for name in args.datasets.split(",")
                for r in run_dataset(name.strip(), work, args.quick, args.strategy, args.before)]
    finally:
        if args.before and _before_tree(args.before).is_dir():
            git("worktree", "remove", "--force", str(_before_tree(args.before)))
    out = csv_path(args.csv, "deploy", args.quick)
    if out:
        append_rows(out, FIELDS, rows, run_stamp)
    table = [[r["dataset"], r["method"], r.get("concurrency", ""), r.get("accuracy", ""), r.get("mb", ""),
              r.get("p50_ms", ""), r.get("p95_ms", r.get("p99_ms", "")), r.get("per_s", ""),
              r.get("first_prediction_s", r.get("errors_5xx", ""))] for r in rows]
    print(md_table(["dataset", "method", "concurrency", "accuracy", "MB", "p50 ms", "p95 (server: p99) ms",
                    "inputs/s", "first prediction s (server: 5xx)"], table,
                   "---|---|---:|---:|---:|---:|---:|---:|---:"))


if __name__ == "__main__":
    main()
