"""Hostile files, outside pytest: the payload matrix of tests/test_hostile_files.py run against the public entry
points, as a markdown section for benchmarks/reliability.md.

Command: python benchmarks/reliability_hostile.py   (prints the section; writes nothing in the repository unless
         --csv PATH is given: then its summary rows are appended there)
Import:  from reliability_hostile import run; md = run()   (run(rows) also appends the summary rows to `rows`:
         benchmarks/reliability.py writes them to benchmarks/results/reliability.csv)

Every payload is a real pickle whose unpickling creates a sentinel file (checked live before use): a bare
pickle, and the same object inside torch.save's zip format (what .pt/.pth/.bin/.ckpt files are). Each is
written under a file name fmadapt reads (model directory files, ensemble members, report files, feature and
ONNX caches, --backbone directories, training checkpoints), then the entry point that reads it runs. Outcome:
"refused" (a clean fmadapt error naming the file: ArtifactError/ConfigError in the API; in the CLI a one-line
`error:` and exit 1, or 2 for a bad --backbone, no traceback), "loaded" (the file is not read by that entry
point, or ignored beside valid safetensors), "recomputed" (a cache entry thrown away and rebuilt), or CRASH
(anything else: an uncaught exception or a traceback). The malformed-file cases (truncated or inconsistent
safetensors, wrong-shaped or non-UTF-8 JSON) are counted in a second table. Runs on CPU in about a minute,
with the tests' tiny random backbones (tiny-cnn, tiny-bert) and a temporary feature cache.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

TESTS = Path(__file__).resolve().parents[1] / "tests"


def _outcome_api(fn: Callable[[], Any], ok: str, names: str = "") -> str:
    from fmadapt.errors import FmadaptError

    try:
        fn()
    except FmadaptError as e:
        if "\n" in str(e) or names not in str(e):
            return "CRASH (multi-line message or file not named)"
        return "refused"
    except Exception as e:  # noqa: BLE001 - what the table exists to catch
        return f"CRASH ({type(e).__name__})"
    return ok


def _outcome_cli(args: list[Any], names: str) -> str:
    from typer.testing import CliRunner

    from fmadapt.cli import app

    r = CliRunner().invoke(app, [str(a) for a in args])
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        return f"CRASH ({type(r.exception).__name__})"
    if "Traceback" in r.output:
        return "CRASH (traceback)"
    if r.exit_code == 0:
        return "loaded"
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    if len(errors) != 1 or names not in errors[0]:
        return f"CRASH (exit {r.exit_code}, unclear message)"
    return f"refused (exit {r.exit_code})"


def _build(root: Path, T: Any) -> SimpleNamespace:
    """The tests' fixtures: saved image (with report files), text and ensemble models; hf and timm folders."""
    import json

    import timm
    import torch
    from safetensors.torch import save_file

    from fmadapt import ImageClassifier, TextClassifier
    from fmadapt.backbones import create_backbone

    images = T.write_image_folder(root / "images")
    ImageClassifier(backbone="tiny-cnn", strategy="probe", progress=False).fit(images).save_pretrained(
        root / "image", report=True)
    df = T.text_frame(12)
    df.to_csv(root / "reviews.csv", index=False)
    TextClassifier(backbone="tiny-bert", strategy="probe", progress=False).fit(df).save_pretrained(
        root / "text", report=False)
    ImageClassifier(backbone="tiny-cnn", strategy="probe", ensemble_backbones="tiny-cnn,tiny-cnn-cached",
                    progress=False).fit(images).save_pretrained(root / "ensemble", report=False)
    bb = root / "backbones"
    tiny = create_backbone("tiny-bert")
    tiny.model.save_pretrained(bb / "hf")
    tiny.tokenizer.save_pretrained(bb / "hf")
    torch.manual_seed(0)
    ref = timm.create_model("test_efficientnet", pretrained=False, num_classes=0)
    (bb / "timm").mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(bb / "timm" / "model.safetensors"))
    (bb / "timm" / "config.json").write_text(json.dumps({"architecture": "test_efficientnet", "num_classes": 0}))
    return SimpleNamespace(root=root, images=images, texts=root / "reviews.csv", backbones=bb)


def _rows(m: SimpleNamespace, T: Any, work: Path, sentinel: Path, p: dict[str, bytes]) -> list[dict[str, str]]:
    """Every (file, entry point, payload) of the matrix: run it, record the outcome and the sentinel."""
    import numpy as np

    from fmadapt import ImageClassifier, load_model
    from fmadapt.backbones import create_backbone
    from fmadapt.runtime import onnx as onnx_runtime

    rows: list[dict[str, str]] = []
    hostile = SimpleNamespace(sentinel=sentinel, pickle=p["pickle"], torch_save=p["torch.save"])
    n = 0

    def fresh() -> Path:
        nonlocal n
        n += 1
        d = work / f"case{n}"
        d.mkdir()
        return d

    def record(file: str, entry: str, variant: str, outcome: str) -> None:
        rows.append({"file": file, "entry": entry, "payload": variant, "outcome": outcome,
                     "sentinel": "YES" if sentinel.exists() else "no"})
        sentinel.unlink(missing_ok=True)

    def copy(kind: str) -> Path:
        d = fresh() / kind
        shutil.copytree(m.root / kind, d)
        return d

    # model directories: every file, every entry point that reads it (and load_model on files it does not read)
    matrix = [*T.MATRIX, ("image", "metrics.json", ("api",)), ("image", "README.md", ("api", "predict")),
              ("image", ".fmadapt-commit.json", ("api",))]
    for kind, name, entries in matrix:
        for entry in entries:
            for variant in ("pickle", "torch.save"):
                d = copy(kind)
                (d / name).write_bytes(p[variant])
                data = m.texts if kind == "text" else m.images
                short = name.rsplit("/", 1)[-1]
                if entry == "api":
                    ok = "loaded (journal discarded)" if name == ".fmadapt-commit.json" else "loaded (not read)"
                    outcome = _outcome_api(lambda d=d: load_model(d), ok, short)
                elif entry == "predict":
                    outcome = _outcome_cli(["predict", d, data, "-o", d.parent / "p.csv"], short)
                elif entry == "evaluate":
                    outcome = _outcome_cli(["evaluate", d, data], short)
                else:
                    outcome = _outcome_cli(["report", d], short)
                if entry != "api" and outcome == "loaded":
                    outcome = "loaded (not read)"
                record(f"{kind}: {name}", "load_model" if entry == "api" else f"fmadapt {entry}", variant, outcome)

    # feature cache entries and cached ONNX exports
    def object_array() -> bytes:
        buf = io.BytesIO()
        np.save(buf, np.array([T.Touch(sentinel), 1], dtype=object), allow_pickle=True)
        return buf.getvalue()

    for variant, content in (("pickle", p["pickle"]), ("torch.save", p["torch.save"]),
                             ("np.save object array", None)):
        d = fresh()
        os.environ["FMADAPT_CACHE"] = str(d / "cache")
        clf = ImageClassifier(backbone="tiny-cnn-cached", strategy="probe", progress=False).fit(m.images)
        want = clf.predict_proba(m.images).to_numpy()
        for e in sorted((d / "cache" / "features").rglob("*.npy")):
            e.write_bytes(content if content is not None else object_array())
        onnx_runtime._SESSIONS.clear()

        def refit(want: Any = want) -> None:
            again = ImageClassifier(backbone="tiny-cnn-cached", strategy="probe", progress=False).fit(m.images)
            if not np.allclose(again.predict_proba(m.images).to_numpy(), want, atol=1e-5):
                raise AssertionError("different predictions")

        record("feature cache: features/<key>.npy", "fit + predict", variant, _outcome_api(refit, "recomputed"))
    d = fresh()
    os.environ["FMADAPT_CACHE"] = str(d / "cache")
    clf = ImageClassifier(backbone="tiny-cnn", strategy="probe", progress=False).fit(m.images)
    for e in sorted((d / "cache" / "onnx").glob("*.onnx")):
        e.write_bytes(p["pickle"])
    onnx_runtime._SESSIONS.clear()
    record("ONNX cache: onnx/<backbone>-<fp>.onnx", "predict", "pickle",
           _outcome_api(lambda: clf.predict(m.images), "recomputed (PyTorch this run)"))
    os.environ["FMADAPT_CACHE"] = str(work / "cache")

    # --backbone directories and files
    for kind, case in T.BACKBONE_CASES:
        d = T._plant(m.backbones, kind, fresh(), hostile, case)
        ok = "loaded (file ignored)" if (kind, case) in T.IGNORED else "loaded"
        variant = "torch.save" if case in ("pytorch_model.bin", "model.pth", "model.pt", "model.ckpt",
                                           "transformers_weights", "sharded-index") else "pickle"
        if case in ("remote-code", "hub-architecture"):
            variant = "code" if case == "remote-code" else "config"
        record(f"--backbone {kind} dir: {case}", "create_backbone", variant,
               _outcome_api(lambda d=d: create_backbone(str(d)), ok, str(d)))
    for kind, case in (("hf", "pytorch_model.bin"), ("timm", "model.pth"), ("hf", "config.json")):
        d = T._plant(m.backbones, kind, fresh(), hostile, case)
        data = m.texts if kind == "hf" else m.images
        record(f"--backbone {kind} dir: {case}", "fmadapt fit", "torch.save" if case != "config.json" else "pickle",
               _outcome_cli(["fit", data, "--out", d.parent / "m", "--backbone", d, "--report", "off"], str(d)))
    d = T._plant(m.backbones, "timm", fresh(), hostile, "pytorch_model.bin")
    record("timm:local-dir:DIR (pytorch_model.bin)", "create_backbone", "torch.save",
           _outcome_api(lambda: create_backbone(f"timm:local-dir:{d}"), "loaded"))
    for suffix in (".pth", ".bin", ".ckpt"):
        f = fresh() / f"weights{suffix}"
        f.write_bytes(p["torch.save"])
        record(f"--backbone FILE (*{suffix})", "create_backbone", "torch.save",
               _outcome_api(lambda f=f: create_backbone(str(f)), "loaded"))

    # training checkpoints (skipped while fmadapt.train.checkpoint.load_checkpoint does not exist)
    try:
        from fmadapt.train.checkpoint import load_checkpoint
    except ImportError:
        load_checkpoint = None
    if load_checkpoint is not None:
        for name in T.CHECKPOINT_NAMES:
            for variant in ("pickle", "torch.save"):
                f = fresh() / "checkpoints" / name
                f.parent.mkdir()
                f.write_bytes(p[variant])
                record(f"checkpoints/{name}", "load_checkpoint", variant,
                       _outcome_api(lambda f=f: load_checkpoint(f), "loaded", name))
    return rows


def _malformed(m: SimpleNamespace, T: Any, work: Path) -> list[tuple[str, int, int]]:
    """(kind, cases, clean errors) for the malformed safetensors and JSON cases of the tests, on load_model."""
    import json

    from fmadapt import load_model

    out = []
    for label, cases in (("model.safetensors", list(T.SAFETENSORS_CASES.items())),
                         ("JSON (config, labels, backbone, int8_calibration)", T.JSON_CASES)):
        clean = 0
        for i, (key, value) in enumerate(cases):
            d = work / f"malformed-{len(out)}-{i}"
            shutil.copytree(m.root / "image", d)
            if label == "model.safetensors":
                good = (d / "model.safetensors").read_bytes()
                (d / "model.safetensors").write_bytes(value(good, T._tensors(d)))
                name = "model.safetensors"
            else:
                name = key
                if callable(value):
                    (d / name).write_text(json.dumps(value(json.loads((d / name).read_text()))))
                else:
                    (d / name).write_bytes(value)
            outcome = _outcome_api(lambda d=d: load_model(d), "loaded", name)
            clean += outcome == "refused"
        out.append((label, len(cases), clean))
    return out


def run(csv_rows: list[dict[str, Any]] | None = None) -> str:
    """The `## Hostile files` markdown section (runs the whole matrix; about a minute on 2 CPU cores). Its summary
    (the payload matrix, and each kind of malformed file) is appended to `csv_rows` when given, as rows of
    benchmarks/results/reliability.csv; peak_mib: this process's peak while the matrix ran."""
    from common import reset_peak, window_peak_mib

    reset_peak()
    t0 = time.perf_counter()
    sys.path.insert(0, str(TESTS))
    old_cache = os.environ.get("FMADAPT_CACHE")
    tmp = Path(tempfile.mkdtemp(prefix="fmadapt-hostile-"))
    try:
        os.environ["FMADAPT_CACHE"] = str(tmp / "cache")
        import test_hostile_files as T  # registers the tiny test backbones (via conftest)

        sys.path.remove(str(TESTS))

        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            sentinel = tmp / "SENTINEL"
            p = T.payloads(sentinel)
            live = []
            for variant, load in (("pickle", lambda b: __import__("pickle").loads(b)),
                                  ("torch.save", lambda b: __import__("torch").load(io.BytesIO(b),
                                                                                     weights_only=False))):
                load(p[variant])
                live.append(sentinel.exists())
                sentinel.unlink(missing_ok=True)
            if not all(live):
                raise RuntimeError("the payloads do not execute when unpickled: the matrix would prove nothing")
            m = _build(tmp / "models", T)
            work = tmp / "work"
            work.mkdir()
            rows = _rows(m, T, work, sentinel, p)
            malformed = _malformed(m, T, tmp / "malformed")
    finally:
        if old_cache is None:
            os.environ.pop("FMADAPT_CACHE", None)
        else:
            os.environ["FMADAPT_CACHE"] = old_cache
        shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.perf_counter() - t0

    executed = sum(r["sentinel"] == "YES" for r in rows)
    crashes = sum(r["outcome"].startswith("CRASH") for r in rows)
    payload_rows = [r for r in rows if r["payload"] in ("pickle", "torch.save", "np.save object array")]
    counts: dict[str, int] = {}
    for r in rows:
        key = r["outcome"].split(" (")[0]
        counts[key] = counts.get(key, 0) + 1
    lines = [
        "## Hostile files", "",
        "Every file name fmadapt reads, with a real pickle payload in it (one whose unpickling creates a sentinel "
        "file; checked live first): a bare pickle, and the same object saved by `torch.save` (the zip format of "
        ".pt/.pth/.bin/.ckpt). Then the entry point that reads the file. `refused`: a clean fmadapt error naming "
        "the file (API: ArtifactError/ConfigError; CLI: one `error:` line, exit 1, or 2 for a bad `--backbone`, "
        "no traceback). `loaded (not read)`: that entry point does not read the file. `recomputed`: a cache "
        "entry thrown away and rebuilt (same predictions). Command: `python benchmarks/reliability_hostile.py`.",
        "",
        f"**{executed} of {len(payload_rows)} payloads executed** (sentinel created); {len(rows)} cases in all: "
        + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + f"; {crashes} crashes. "
        f"({seconds:.0f} s on {os.cpu_count()} CPU cores.)",
        "",
        "| file | entry point | payload | outcome | sentinel created |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| `{r['file']}` | {r['entry']} | {r['payload']} | {r['outcome']} | {r['sentinel']} |" for r in rows]
    lines += ["", "Malformed files (the cases of tests/test_hostile_files.py), loaded with `fmadapt.load_model`:", "",
              "| file | cases | clean ArtifactError naming the file |", "|---|---|---|"]
    lines += [f"| {label} | {n} | {clean} of {n} |" for label, n, clean in malformed]
    if csv_rows is not None:
        csv_rows.append({"dataset": "hostile files", "regime": f"{len(rows)} cases (file x entry point x payload)",
                         "method": "pickle_payloads", "cases": len(payload_rows),
                         "ok_cases": len(payload_rows) - executed, "passed": executed == 0 and crashes == 0,
                         "outcome": f"{executed} payloads executed; " + ", ".join(f"{v} {k}" for k, v in
                                                                                 sorted(counts.items())),
                         "seconds": round(seconds, 1), "peak_mib": window_peak_mib()})
        csv_rows += [{"dataset": "hostile files", "regime": label, "method": "malformed_file_load", "cases": n,
                      "ok_cases": clean, "passed": clean == n, "outcome": f"{clean} of {n} clean ArtifactError"}
                     for label, n, clean in malformed]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from reliability import run_part

    run_part(run, __doc__, "the summary rows")
