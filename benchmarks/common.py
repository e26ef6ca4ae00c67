"""What every benchmark script shares: the machine's description, the checkout's commit, peak memory, timing a
whole process, and the results CSVs (`benchmarks/results/<topic>.csv`, one row per measurement, stamped with the
run's commit, date and machine). Scripts import it as `from common import ...` (benchmarks/ is on sys.path when a
script in it runs)."""

from __future__ import annotations

import csv
import datetime as dt
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def describe_machine() -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "?")
    return f"{os.cpu_count()} cores, {cpu}"


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


def timed_process(cmd: list[str], **kw) -> tuple[subprocess.CompletedProcess, float]:
    """Run `cmd` as a user would and time the whole process (start-up and imports included)."""
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    return r, time.perf_counter() - t0


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


def markdown_table(header: list[str], rows: list[list[object]], numeric_from: int = 1) -> str:
    """A GitHub/MkDocs table; columns from `numeric_from` on are right-aligned."""
    align = ["---" if i < numeric_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join("—" if v is None or v == "" else str(v) for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(describe_machine(), stamp(), peak_mib(), file=sys.stderr)
