"""What every benchmark script shares: the machine's description, the checkout's commit, peak memory (of the whole
process, of one step of it: `reset_peak` / `window_peak_mib`, or of one child process: `measured_process`), timing
a whole process, and the results CSVs (`benchmarks/results/<topic>.csv`, one row per measurement, stamped with the
run's commit, date and machine; every script's `--csv` option: `add_csv_argument`, `csv_path`), and markdown
tables (`md_table`). Scripts import it as `from common import ...` (benchmarks/ is on sys.path when a script in it
runs)."""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("?" where there is none)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "?"
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "?")


def describe_machine() -> str:
    return f"{os.cpu_count()} cores, {cpu_model()}"


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def stamp() -> dict[str, str]:
    """This run's commit (marked when the checkout has uncommitted changes), start time and machine."""
    dirty = " (uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else ""
    return {"commit": git("rev-parse", "--short", "HEAD") + dirty,
            "date": dt.datetime.now().isoformat(timespec="seconds"), "machine": describe_machine()}


def peak_mib() -> float:
    """Peak resident memory of this process and of the children it has waited for (MiB; Linux reports KiB)."""
    kib = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return round(kib / 1024, 1)


def reset_peak() -> None:
    """Start a new peak-memory window for this process: Linux sets its high-water mark (VmHWM) back to its
    current resident size (/proc/self/clear_refs, Linux >= 4.0). Does nothing where that is not allowed."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def window_peak_mib() -> float:
    """Peak resident memory of this process alone since the last `reset_peak()` (VmHWM, MiB): what one step of
    an in-process benchmark used, where `peak_mib()` would carry the largest step before it. Child processes
    (DataLoader workers, subprocesses) are not in it. Without /proc (or without a reset) the process's peak."""
    try:
        m = re.search(r"^VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        m = None
    if m is None:
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return round(int(m.group(1)) / 1024, 1)


def measured_process(cmd: list[str], timeout: float | None = None,
                     **kw: Any) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run `cmd` as a user would, timing the whole process (start-up and imports included; output captured as
    text), and return the peak resident memory of that process (MiB: the largest of it and of the descendants it
    waited for), from its own resource usage (os.wait4), so other children of this process do not mix in.
    `timeout` (s): the process is killed and subprocess.TimeoutExpired raised, as subprocess.run does."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, **kw)
        expired = threading.Event()

        def kill() -> None:
            expired.set()
            p.kill()

        timer = threading.Timer(timeout, kill) if timeout else None
        if timer is not None:
            timer.start()
        try:
            _, status, usage = os.wait4(p.pid, 0)
        finally:
            if timer is not None:
                timer.cancel()
        seconds = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
        out.seek(0)
        err.seek(0)
        stdout, stderr = (f.read().decode("utf-8", errors="replace") for f in (out, err))
    if expired.is_set():
        raise subprocess.TimeoutExpired(cmd, timeout or 0.0, stdout, stderr)
    return subprocess.CompletedProcess(cmd, p.returncode, stdout, stderr), seconds, round(usage.ru_maxrss / 1024, 1)


def add_csv_argument(ap: argparse.ArgumentParser, topic: str, quick: bool = False) -> None:
    """The `--csv` option every benchmark script has: where its rows are appended (`quick`: the script has a
    --quick smoke run, which appends nothing unless --csv is given; see `csv_path`)."""
    ap.add_argument("--csv", default=None, metavar="PATH",
                    help=f"append this run's rows to this CSV (default: benchmarks/results/{topic}.csv; '' or none "
                         "for none" + ("; a --quick run appends none unless --csv is given)" if quick else ")"))


def csv_path(value: str | Path | None, topic: str, quick: bool = False) -> Path | None:
    """The CSV a run appends to: `--csv` as given ('', 'none' or 'off' = none: not a file of that name), else
    benchmarks/results/<topic>.csv, except for a smoke run (`quick`), whose numbers are not meant to be kept."""
    if value is None:
        return None if quick else RESULTS / f"{topic}.csv"
    return None if str(value).strip().lower() in ("", "none", "off") else Path(value)


def options_json(options: Any) -> str:
    """A row's options as a JSON string (values JSON cannot hold written as text)."""
    return json.dumps(options, default=str, ensure_ascii=False)


def append_rows(path: Path, fields: list[str], rows: list[dict], stamp_: dict[str, str] | None = None) -> None:
    """Append `rows` to a results CSV: the run's commit, date and machine (`stamp_`, else `stamp()`) first, then
    `fields`; a field a row lacks is left empty. A file whose header lacks some of the fields is rewritten once
    with the union of both (its rows keep their values, the new columns empty): no row is ever lost."""
    stamp_ = stamp_ or stamp()
    header = ["commit", "date", "machine", *fields]
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        with path.open(newline="", encoding="utf-8") as f:
            old = list(csv.DictReader(f))
            f.seek(0)
            have = next(csv.reader(f), [])
        missing = [h for h in header if h not in have]
        if missing:
            header = have + missing
            with path.open("w", newline="", encoding="utf-8") as f:
                w = csv.DictWriter(f, fieldnames=header, restval="")
                w.writeheader()
                w.writerows(old)
        else:
            header = have
    new = not path.exists()
    with path.open("a", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=header, restval="")
        if new:
            w.writeheader()
        for r in rows:
            w.writerow({**stamp_, **r})


def md_table(header: list[str], rows: list[list[Any]], align: str | None = None) -> str:
    """A GitHub/MkDocs table; `align`: its separator row without the outer bars ("---|---:"), default all left."""
    align = align or "|".join("---" for _ in header)
    lines = ["| " + " | ".join(header) + " |", "|" + align + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)

if __name__ == "__main__":
    print(describe_machine(), stamp(), peak_mib(), window_peak_mib(), file=sys.stderr)
