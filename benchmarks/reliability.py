#!/usr/bin/env python
"""Reliability and security figures, measured in ONE run on the local CPU, written to benchmarks/reliability.md.

    python benchmarks/reliability.py                 # everything (~15 min on 2 cores)
    python benchmarks/reliability.py --only resume,atomic --out /tmp/r.md

Sections (--only):
  resume       `fmadapt fit` (the CLI, in a subprocess) run uninterrupted, killed with SIGKILL in its second
               epoch, then `fmadapt fit --resume OUT`; and stopped with SIGTERM in its second epoch (exit 143),
               then resumed. Compared: the SHA-256 of model.safetensors and the validation metrics, against the
               uninterrupted run of the same call (the baseline). Two setups: a tiny random timm network on 360
               synthetic images (augmentation on, 2 DataLoader workers), and MiniLM-L6 fully fine-tuned on 600
               SST-2 sentences (../shared/data; skipped when absent). Also: checkpoint size and the seconds one
               checkpoint write takes next to the epoch it follows.
  atomic       20 SIGKILLs at random moments (seeded) while a process saves: 10 into a model directory (two
               models with different classes, saved in turn by save_pretrained) and 10 into a checkpoint file
               (two 64 MB states in turn). After each: is the directory loadable, old or new state, and how many
               temporary files are there before and after the next load (which finishes or removes them).
  nonfinite    fine-tuning with an absurd learning rate: the step it stops at, the message, whether a model or
               a non-finite checkpoint was written.
  determinism  the same fit three times (0, 2, 2 DataLoader workers) and once with another seed: weight hashes.
  diskfull     a real full disk (a 3 MB tmpfs; when mounting is not allowed, a per-process file-size limit,
               RLIMIT_FSIZE, stands in): saving a model and a checkpoint onto it after a first good save.
  hostile      benchmarks/reliability_hostile.py (pickle payloads under every file name fmadapt reads)
  data         benchmarks/reliability_data.py (corrupt images, modes, EXIF, bombs, awkward tables)

Rows appended to benchmarks/results/reliability.csv (--csv): one per check (dataset = the section's setup,
method = what was done, e.g. `uninterrupted` (the baseline of the resumed runs), `sigkill_resume`); passed = the
property held (same weights and metrics, loadable after every kill, a clean error, ...); cases / ok_cases where
a check counts; seconds; peak_mib = the process that did the work, at its peak: a `fmadapt fit` subprocess
(from its own resource usage; for an interrupted run, the resuming process: the killed one's is not measured),
or this process while an in-process step ran.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TESTS = ROOT / "tests"
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(TESTS))
from common import (  # noqa: E402
    add_csv_argument,
    append_rows,
    csv_path,
    git,
    md_table,
    measured_process,
    options_json,
    reset_peak,
    stamp,
    window_peak_mib,
)

#: the columns of benchmarks/results/reliability.csv
CSV_FIELDS = ["dataset", "regime", "method", "options", "passed", "outcome", "cases", "ok_cases", "exit_code",
              "val_accuracy", "weights_sha256", "file_mb", "tmp_before", "tmp_after", "torch_imported",
              "rss_before_mib", "increase_mib", "process_peak_mib", "seconds", "resume_seconds", "peak_mib", "error"]
ROWS: list[dict[str, Any]] = []  # this run's rows, appended by the sections


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_part(run: Any, doc: str, what: str) -> None:
    """`python benchmarks/reliability_{data,hostile}.py [--csv PATH]`: one part of this benchmark on its own; it prints
    the part's markdown and, with --csv, appends `what` (its rows) to that CSV."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--csv", default=None, metavar="PATH",
                    help=f"also append {what} to this CSV (default: none; benchmarks/reliability.py appends them to "
                         "benchmarks/results/reliability.csv)")
    args = ap.parse_args()
    figures: list[dict[str, Any]] = []
    stamp_ = stamp() if args.csv else None
    print(run(figures))
    if args.csv:
        append_rows(Path(args.csv), CSV_FIELDS, figures, stamp_)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------------------- resume
def _val_metrics(out: Path) -> dict[str, float]:
    m = json.loads((out / "metrics.json").read_text())["val"]
    return {k: m[k] for k in ("accuracy", "macro_f1", "ece") if k in m}


def _run(cmd: list[str]) -> tuple[subprocess.CompletedProcess, float, float]:
    """(result, seconds, peak MiB of the process) of `cmd`, which must succeed."""
    r, seconds, peak = measured_process(cmd, timeout=3600)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])}... exit {r.returncode}: {r.stderr[-2000:]}")
    return r, seconds, peak


def _argv(cmd: list[Any], tmp: Path) -> list[str]:
    """A command line for the CSV's options: the interpreter as "python", temp paths as $TMP."""
    return ["python" if str(a) == sys.executable else str(a).replace(str(tmp), "$TMP") for a in cmd]


def _interrupted(cmd: list[str], ckpt: Path, sig: int, delay: float) -> tuple[int, str, float]:
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not ckpt.is_file():
        if p.poll() is not None:
            raise RuntimeError(f"finished before the first checkpoint: {p.communicate()[1][-2000:]}")
        time.sleep(0.02)
    time.sleep(delay)
    t = time.perf_counter()
    p.send_signal(sig)
    _, err = p.communicate(timeout=600)
    return p.returncode, err.strip().splitlines()[-1] if err.strip() else "", time.perf_counter() - t


def _resume_case(name: str, base: list[str], tmp: Path, delay_frac: float = 0.4) -> list[list[Any]]:
    from fmadapt.train.checkpoint import checkpoint_info

    whole = tmp / f"{name}-whole"
    r, secs, peak = _run([*base, "--out", str(whole), "--json"])
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    epoch_s = summary["history"].get("epoch_seconds") or [10.0]
    ref = (sha(whole / "model.safetensors"), _val_metrics(whole))
    log(f"{name}: uninterrupted {secs:.0f} s, epochs {epoch_s}")
    rows = [[name, "uninterrupted (baseline)", "-", "-", f"{secs:.0f}", ref[0][:12], _fmt(ref[1]), "-"]]
    regime = "`fmadapt fit` in its own process, CPU, seed 0"
    ROWS.append({"dataset": name, "regime": regime, "method": "uninterrupted",
                 "options": options_json({"argv": _argv(base, tmp)}), "passed": True, "exit_code": 0,
                 "val_accuracy": ref[1].get("accuracy", ""), "weights_sha256": ref[0][:12], "seconds": round(secs, 1),
                 "peak_mib": peak})
    for label, sig in (("SIGKILL (kill -9)", signal.SIGKILL), ("SIGTERM", signal.SIGTERM)):
        out = tmp / f"{name}-{sig}"
        ckpt = out / "checkpoints" / "run-0.ckpt"
        t0 = time.perf_counter()
        delay = delay_frac * epoch_s[min(1, len(epoch_s) - 1)]
        rc, last, exit_s = _interrupted([*base, "--out", str(out)], ckpt, sig, delay)
        info = checkpoint_info(ckpt)
        where = f"{info['kind']}: epoch {info['epoch'] + 1}" + (
            f", after batch {info['batch']}" if info["kind"] == "sigterm" else " finished")
        size = ckpt.stat().st_size / 1e6
        r2, secs2, peak2 = _run([sys.executable, "-m", "fmadapt", "fit", "--resume", str(out), "--json"])
        got = (sha(out / "model.safetensors"), _val_metrics(out))
        total = time.perf_counter() - t0
        ROWS.append({"dataset": name, "regime": regime,
                     "method": "sigkill_resume" if sig == signal.SIGKILL else "sigterm_resume",
                     "options": options_json({"signal": label, "in_epoch": 2, "delay_epoch_fraction": delay_frac}),
                     "passed": got == ref, "outcome": f"resumed from {where}; equal to uninterrupted: {got == ref}",
                     "exit_code": rc, "val_accuracy": got[1].get("accuracy", ""), "weights_sha256": got[0][:12],
                     "file_mb": round(size, 1), "seconds": round(total, 1), "resume_seconds": round(secs2, 1),
                     "peak_mib": peak2})
        rows.append([name, f"{label} in epoch 2, then `fit --resume`", f"exit {rc}" +
                     (f" ({exit_s:.1f} s after the signal)" if sig == signal.SIGTERM else ""),
                     f"{where} ({size:.1f} MB)", f"{total:.0f} (resume {secs2:.0f})", got[0][:12], _fmt(got[1]),
                     "**yes**" if got == ref else "**NO**"])
        log(f"{name}: {label} rc {rc} {where}; resumed equal={got == ref}")
    return rows


def _fmt(m: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in m.items())


def _checkpoint_cost(tmp: Path) -> list[list[Any]]:
    """Seconds to write a MiniLM-sized fine-tuning checkpoint (weights + 2 AdamW moments + best weights)."""
    import torch

    from fmadapt.train.checkpoint import load_checkpoint, save_checkpoint

    rows = []
    for label, n in (("tiny timm net", 100_000), ("MiniLM-L6 size", 22_700_000)):
        w = {"w": torch.randn(n)}
        ck = {"state_dict": w, "optimizer_states": [{"state": {0: {"exp_avg": torch.randn(n), "exp_avg_sq":
              torch.randn(n), "step": torch.tensor(1.0)}}, "param_groups": [{"params": [0], "lr": 1e-3}]}],
              "callbacks": {"RestoreBest": {"state": {"w": torch.randn(n)}, "best": 0.5, "best_epoch": 0}}}
        p = tmp / f"cost-{n}.ckpt"
        reset_peak()
        t = time.perf_counter()
        save_checkpoint(ck, p)
        ts = time.perf_counter() - t
        peak_s = window_peak_mib()
        reset_peak()
        t = time.perf_counter()
        load_checkpoint(p)
        tl = time.perf_counter() - t
        peak_l = window_peak_mib()
        rows.append([label, f"{n / 1e6:.1f} M", f"{p.stat().st_size / 1e6:.0f} MB", f"{ts:.2f}", f"{tl:.2f}"])
        ROWS.extend({"dataset": "synthetic checkpoint (weights, 2 AdamW moments, best weights)",
                     "regime": f"{label}, {n / 1e6:.1f} M parameters", "method": method, "passed": True,
                     "file_mb": round(p.stat().st_size / 1e6, 1), "seconds": round(secs, 3), "peak_mib": peak}
                    for method, secs, peak in (("save_checkpoint", ts, peak_s), ("load_checkpoint", tl, peak_l)))
    return rows


def section_resume(tmp: Path) -> str:
    from conftest import timm_dir, write_image_folder

    img = write_image_folder(tmp / "img", per_class=120)
    net = timm_dir(tmp / "net")
    tiny = [sys.executable, "-m", "fmadapt", "fit", str(img), "--backbone", str(net), "--strategy", "finetune",
            "--epochs", "4", "--batch-size", "4", "--image-size", "32", "--report", "off", "--no-cache",
            "--set", "head_init=random", "--set", "patience=10", "--set", "num_workers=2"]
    rows = _resume_case("tiny CNN, 360 images, 2 workers", tiny, tmp)
    if (DATA / "sst2" / "train.tsv").is_file():
        import pandas as pd

        df = pd.read_csv(DATA / "sst2" / "train.tsv", sep="\t", quoting=3).drop_duplicates("sentence")
        df = df.groupby("label").sample(300, random_state=0)
        csv = tmp / "sst2_600.csv"
        df.to_csv(csv, index=False)
        minilm = [sys.executable, "-m", "fmadapt", "fit", str(csv), "--text", "sentence", "--label", "label",
                  "--strategy", "finetune", "--epochs", "3", "--batch-size", "16", "--report", "off"]
        rows += _resume_case("MiniLM-L6 full fine-tuning, SST-2 600", minilm, tmp)
    else:
        rows.append(["MiniLM-L6", "skipped: ../shared/data/sst2 absent", "", "", "", "", "", ""])
    cost = _checkpoint_cost(tmp)
    return "\n\n".join([
        "## 1. Resume after kill -9 and SIGTERM",
        "Each row is `fmadapt fit` in its own process (CPU, seed 0). The interrupted runs were signalled "
        f"{0.4:.0%} of an epoch after the first epoch's checkpoint appeared; `where` is the checkpoint the "
        "resume started from. *equal* compares the model.safetensors SHA-256 and the validation metrics with "
        "the uninterrupted run above it.",
        md_table(["setup", "run", "process", "checkpoint resumed from", "seconds", "weights sha256",
                  "val metrics", "equal"], rows),
        "Checkpoint write/read cost (safetensors + JSON, fsync, atomic rename), written once per epoch:",
        md_table(["model", "parameters", "file (weights, 2 AdamW moments, best weights)", "write s", "read s"],
                 cost)])


# ------------------------------------------------------------------------------------------------------- atomic
CKPT_WRITER = r"""
import sys, torch
from fmadapt.train.checkpoint import save_checkpoint
out = sys.argv[1]
states = [{{"state_dict": {{"w": torch.full((16_000_000,), float(v))}}, "tag": v}} for v in (1, 2)]
print("ready", flush=True)
i = 0
while True:
    save_checkpoint(states[i % 2], out)
    i += 1
"""


def _kill_loop(cmd: list[str], n: int, rng: random.Random, check: Any, target: Path) -> list[dict[str, Any]]:
    from fmadapt import atomic

    results = []
    for _ in range(n):
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 1.0))
        p.send_signal(signal.SIGKILL)
        p.wait()
        d = target if target.is_dir() else target.parent
        before = [x.name for x in atomic.temporary_files(d)]
        try:
            state = check(target)
            ok = True
        except Exception as e:  # noqa: BLE001 - a failure is the figure
            state, ok = f"{type(e).__name__}: {e}", False
        after = [x.name for x in atomic.temporary_files(d)]
        results.append({"loadable": ok, "state": state, "tmp_before": len(before), "tmp_after": len(after)})
    return results


def section_atomic(tmp: Path) -> str:
    from conftest import write_image_folder
    from fmadapt import atomic, load_model
    from fmadapt.train.checkpoint import load_checkpoint

    rng = random.Random(0)
    a = write_image_folder(tmp / "a", per_class=6, classes=("red", "green"))
    b = write_image_folder(tmp / "b", per_class=6, classes=("red", "green", "blue"), seed=1)
    mw, cw = tmp / "model_writer.py", tmp / "ckpt_writer.py"
    from test_atomic import WRITER as MODEL_WRITER  # the test's writer, killed 5 times there

    mw.write_text(MODEL_WRITER.format(tests=str(TESTS)))
    cw.write_text(CKPT_WRITER.format())

    def model_state(out: Path) -> str:
        if not (out / "config.json").exists():
            return "nothing saved yet"
        clf = load_model(out)  # recovers the directory first
        assert clf.model_.head.weight.shape[0] == len(clf.classes_), "weights and labels disagree"
        return {2: "model A (2 classes)", 3: "model B (3 classes)"}[len(clf.classes_)]

    def ckpt_state(path: Path) -> str:
        if not path.exists():
            return "nothing saved yet"
        atomic.recover(path.parent)
        ck = load_checkpoint(path)
        w = ck["state_dict"]["w"]
        assert bool((w == w[0]).all()), "mixed tensor"
        return f"state {ck['tag']}"

    rows = []
    for label, cmd, target, check in (
            ("model directory (save_pretrained)", [sys.executable, str(mw), str(a), str(b), str(tmp / "m")],
             tmp / "m", model_state),
            ("checkpoint file (64 MB)", [sys.executable, str(cw), str(tmp / "c" / "run-0.ckpt")],
             tmp / "c" / "run-0.ckpt", ckpt_state)):
        (tmp / "c").mkdir(exist_ok=True)
        t = time.perf_counter()
        res = _kill_loop(cmd, 10, rng, check, target)
        states = sorted({r["state"] for r in res if r["loadable"]})
        rows.append([label, len(res), sum(r["loadable"] for r in res),
                     "; ".join(f"{s} x{sum(r['state'] == s for r in res)}" for s in states),
                     sum(r["tmp_before"] for r in res), sum(r["tmp_after"] for r in res)])
        loadable = sum(r["loadable"] for r in res)
        ROWS.append({"dataset": label, "regime": "10 SIGKILLs at seeded random moments (0.05-1.0 s) while saving",
                     "method": "sigkill_during_save", "options": options_json({"seed": 0, "kills": len(res)}),
                     "passed": loadable == len(res) and sum(r["tmp_after"] for r in res) == 0, "outcome": rows[-1][3],
                     "cases": len(res), "ok_cases": loadable, "tmp_before": rows[-1][4], "tmp_after": rows[-1][5],
                     "seconds": round(time.perf_counter() - t, 1)})
        log(f"atomic {label}: {rows[-1]}")
    return "\n\n".join([
        "## 2. Atomic saves under kill -9",
        "20 SIGKILLs at seeded random moments (0.05-1.0 s into a loop that does nothing but save, alternating "
        "two states). *temporary files before*: left by the killed writer (a staged file, or the commit journal "
        "of a save killed between its renames); *after*: once the directory is next loaded (or saved), which "
        "finishes a committed save and deletes what a dead writer left.",
        md_table(["target", "kills", "loadable after", "state found", "temporary files before",
                  "temporary files after load"], rows)])


# ---------------------------------------------------------------------------------------------------- nonfinite
def section_nonfinite(tmp: Path) -> str:
    import torch

    from conftest import write_image_folder
    from fmadapt.train.checkpoint import load_checkpoint

    img = write_image_folder(tmp / "nf", per_class=20)
    rows = []
    for lr in ("10", "100"):
        out = tmp / f"nf-out-{lr}"
        cmd = [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(TESTS)!r}); import conftest; "
               "from fmadapt.cli import app; app()", "fit", str(img), "--out", str(out), "--backbone", "tiny-cnn",
               "--strategy", "finetune", "--epochs", "3", "--batch-size", "4", "--optimizer", "sgd", "--lr", lr,
               "--set", f"head_lr={lr}", "--set", "warmup_frac=0.9", "--set", "head_init=random",
               "--report", "off"]
        r, secs, peak = measured_process(cmd, timeout=600)
        ck = out / "checkpoints" / "run-0.ckpt"
        left = "none (diverged in epoch 1)"
        if ck.is_file():
            state = load_checkpoint(ck)
            finite = all(bool(torch.isfinite(t).all()) for t in state["state_dict"].values() if t.is_floating_point())
            left = f"end of epoch {state['fmadapt']['epoch'] + 1}, all weights finite: {finite}"
        msg = next((ln for ln in r.stderr.splitlines() if ln.startswith("error:")), r.stderr[-300:])
        rows.append([lr, r.returncode, msg.replace("|", "/"), (out / "model.safetensors").exists(), left])
        written = (out / "model.safetensors").exists()
        ROWS.append({"dataset": "tiny CNN, 48 training images", "regime": f"SGD at lr {lr} (body and head)",
                     "method": "nonfinite_stop",
                     "options": options_json({"argv": _argv(cmd[3:], tmp), "lr": float(lr)}),
                     "passed": r.returncode != 0 and msg.startswith("error:") and not written,
                     "outcome": f"{msg[:200]}; model written: {written}; checkpoint left: {left}",
                     "exit_code": r.returncode, "seconds": round(secs, 1), "peak_mib": peak})
    return "\n\n".join([
        "## 3. Non-finite loss or gradients",
        "`fmadapt fit` (tiny CNN, 48 training images, batch 4, SGD at the given learning rate for body and head, "
        "warmed up over 90 % of the steps, random head). The loss is checked at every step, and the gradients "
        "before every optimizer step, so a non-finite gradient never reaches the weights.",
        md_table(["lr", "exit code", "message", "model.safetensors written", "checkpoint left"], rows),
        "tests/test_nonfinite.py checks, on a NaN loss and on an Inf gradient injected at step 7, that the run "
        "stops at that step with the weights of the step before (bit for bit) and no finished-run file."])


# -------------------------------------------------------------------------------------------------- determinism
def section_determinism(tmp: Path) -> str:
    from conftest import write_image_folder
    from fmadapt import ImageClassifier

    img = write_image_folder(tmp / "det", per_class=40)
    rows = []
    for workers, seed in ((0, 0), (2, 0), (2, 0), (0, 1)):
        out = tmp / f"det-{workers}-{seed}-{len(rows)}"
        reset_peak()
        t = time.perf_counter()
        clf = ImageClassifier(backbone="tiny-cnn", strategy="finetune", epochs=3, batch_size=4, progress=False,
                              head_init="random", num_workers=workers, seed=seed, cache=False)
        clf.fit(img).save_pretrained(out, report=False)
        rows.append([workers, seed, f"{time.perf_counter() - t:.1f}", sha(out / "model.safetensors")[:16],
                     f"{clf.metrics_['val']['accuracy']:.4f}", f"{clf.metrics_['val']['log_loss']:.6f}"
                     if "log_loss" in clf.metrics_["val"] else "-"])
        ROWS.append({"dataset": "tiny CNN, 120 images, augmentation on", "regime": f"{workers} DataLoader workers, "
                     f"seed {seed}", "method": "finetune", "options": options_json(
                         {"epochs": 3, "batch_size": 4, "head_init": "random", "num_workers": workers, "seed": seed}),
                     "val_accuracy": round(clf.metrics_["val"]["accuracy"], 4), "weights_sha256": rows[-1][3],
                     "seconds": float(rows[-1][2]), "peak_mib": window_peak_mib()})
    same = len({r[3] for r in rows[:3]}) == 1
    for r in ROWS[-4:]:  # the seed-0 runs must agree bit for bit, the seed-1 run must not
        r["passed"] = same and (rows[3][3] != rows[0][3])
    return "\n\n".join([
        "## 4. Determinism",
        "The same fine-tuning fit (tiny CNN, 120 images, random crop/flip augmentation) with 0 and 2 DataLoader "
        "workers, and once with another seed. Each example's augmentation is seeded from (seed, epoch, index) "
        "and each batch's dropout from (seed, epoch, batch), so the worker count cannot change the result. "
        f"Seed 0 runs identical: **{same}**; seed 1 differs: **{rows[3][3] != rows[0][3]}**.",
        md_table(["workers", "seed", "seconds", "model.safetensors sha256", "val accuracy", "val log loss"], rows)])


# ----------------------------------------------------------------------------------------------------- diskfull
def section_diskfull(tmp: Path) -> str:
    from conftest import write_image_folder

    mnt = tmp / "small_disk"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)],
                             capture_output=True).returncode == 0
    img = write_image_folder(tmp / "df", per_class=6)
    script = tmp / "diskfull.py"
    script.write_text(f"""
import json, os, resource, sys, torch
sys.path.insert(0, {str(TESTS)!r})
import conftest
from fmadapt import ImageClassifier, load_model, atomic
from fmadapt.errors import FmadaptError
from fmadapt.train.checkpoint import save_checkpoint, load_checkpoint
mnt, img, mounted = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
clf = ImageClassifier(backbone="tiny-cnn", progress=False).fit(img)
clf.save_pretrained(mnt + "/model", report=False)
save_checkpoint({{"state_dict": {{"w": torch.ones(50_000)}}}}, mnt + "/run-0.ckpt")
size = os.path.getsize(mnt + "/model/model.safetensors")
if mounted:
    free = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize
    with open(mnt + "/filler", "wb") as f:
        f.write(b"0" * max(0, free - 100_000))  # leave 100 kB: less than either save needs
else:
    import signal
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
out = {{}}
clf.model_.head.weight.data += 1.0  # a different model to save
for what, save, check in (
        ("model directory", lambda: clf.save_pretrained(mnt + "/model", report=False),
         lambda: load_model(mnt + "/model").classes_),
        ("checkpoint", lambda: save_checkpoint({{"state_dict": {{"w": torch.zeros(500_000)}}}}, mnt + "/run-0.ckpt"),
         lambda: float(load_checkpoint(mnt + "/run-0.ckpt")["state_dict"]["w"][0]))):
    try:
        save()
        err = None
    except FmadaptError as e:
        err = str(e)
    except Exception as e:
        err = "UNCLEAN " + type(e).__name__ + ": " + str(e)
    try:
        kept = str(check())
    except Exception as e:
        kept = "NOT LOADABLE: " + str(e)
    d = mnt + ("/model" if what == "model directory" else "")
    out[what] = {{"error": err, "previous": kept, "tmp": [p.name for p in atomic.temporary_files(d)]}}
print(json.dumps(out))
""")
    try:
        r = subprocess.run([sys.executable, str(script), str(mnt), str(img), "1" if mounted else "0"],
                           capture_output=True, text=True, timeout=600)
    finally:
        if mounted:
            subprocess.run(["umount", str(mnt)], capture_output=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-3000:])
    res = json.loads(r.stdout.strip().splitlines()[-1])
    rows = [[what, (v["error"] or "NO ERROR").replace("|", "/"), v["previous"], len(v["tmp"])]
            for what, v in res.items()]
    how = ("a 3 MB tmpfs filled to 100 kB free: the kernel's ENOSPC" if mounted else
           "RLIMIT_FSIZE of 100 kB (mounting a tmpfs was not allowed): the kernel's EFBIG")
    ROWS.extend({"dataset": "disk full during a save", "regime": "tmpfs 3 MB, 100 kB free" if mounted else
                 "RLIMIT_FSIZE 100 kB", "method": "save_" + ("model" if what == "model directory" else "checkpoint"),
                 "passed": bool(v["error"]) and not v["error"].startswith("UNCLEAN")
                 and not v["previous"].startswith("NOT LOADABLE") and not v["tmp"],
                 "outcome": f"error: {v['error'] or 'NO ERROR'}; previous: {v['previous']}"[:300],
                 "tmp_after": len(v["tmp"])} for what, v in res.items())
    return "\n\n".join([
        "## 5. Disk full during a save",
        f"A first model and checkpoint saved; then the disk is full ({how}); then a new model and a bigger "
        "checkpoint are saved onto it. *previous*: what loads afterwards (the first model's classes; the first "
        "checkpoint's value 1.0).",
        md_table(["save", "error reported", "previous", "temporary files left"], rows),
        "tests/test_atomic.py also fails a checkpoint write with ENOSPC in the middle of a fine-tuning run: the "
        "run stops with that message, the previous epoch's checkpoint loads, and `resume` continues from it."])


# --------------------------------------------------------------------------------------------------------- main
SECTIONS = {"resume": section_resume, "atomic": section_atomic, "nonfinite": section_nonfinite,
            "determinism": section_determinism, "diskfull": section_diskfull}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="resume,atomic,nonfinite,determinism,diskfull,hostile,data")
    ap.add_argument("--out", default=str(HERE / "reliability.md"))
    add_csv_argument(ap, "reliability")
    args = ap.parse_args()
    run_stamp = stamp()
    import torch

    torch.set_num_threads(2)
    t0 = time.perf_counter()
    parts, failed = [], []
    with tempfile.TemporaryDirectory(prefix="fmadapt-reliability-") as d:
        os.environ["FMADAPT_CACHE"] = str(Path(d) / "cache")
        for name in args.only.split(","):
            log(f"section {name}")
            t = time.perf_counter()
            try:
                if name == "hostile":
                    import reliability_hostile

                    md = reliability_hostile.run(ROWS).replace("## Hostile files", "## 6. Hostile files", 1)
                elif name == "data":
                    import reliability_data

                    md = reliability_data.run(ROWS).replace("## Bad data", "## 7. Bad data", 1)
                else:
                    sub = Path(d) / name
                    sub.mkdir()
                    md = SECTIONS[name](sub)
                parts.append(md + f"\n\n({name}: {time.perf_counter() - t:.0f} s)")
            except Exception:  # noqa: BLE001 - report it, go on
                failed.append(name)
                parts.append(f"## {name}: FAILED\n\n```\n{traceback.format_exc()}```")
                log(traceback.format_exc())
                ROWS.append({"dataset": name, "method": "section", "passed": False,
                             "error": traceback.format_exc().strip().splitlines()[-1][:300]})
    commit = git("rev-parse", "--short", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    only = f" --only {args.only}" if args.only != ap.get_default("only") else ""
    head = (f"# Reliability and security\n\n`python benchmarks/reliability.py{only}` "
            f"at {commit}{' (with uncommitted changes)' if dirty else ''}, {_dt.date.today()}, "
            f"{platform.machine()} {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
            f"torch {torch.__version__}; {time.perf_counter() - t0:.0f} s in all."
            + (f" FAILED sections: {', '.join(failed)}." if failed else "") + "\n")
    text = head + "\n" + "\n\n".join(parts) + "\n"
    Path(args.out).write_text(text)
    print(text)
    path = csv_path(args.csv, "reliability")
    if path is not None and ROWS:
        append_rows(path, CSV_FIELDS, ROWS, run_stamp)
        print(f"appended {len(ROWS)} rows to {path}")


if __name__ == "__main__":
    main()
