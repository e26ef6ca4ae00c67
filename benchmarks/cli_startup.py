#!/usr/bin/env python
"""How long the `fmadapt` command takes to answer before it does any work: `--help`, and the import behind it,
against importing the estimators (torch, Lightning, transformers, timm), which `import fmadapt` did eagerly before
the names were made lazy. Every command is a fresh Python process; the variants are interleaved.

    python benchmarks/cli_startup.py                  # writes benchmarks/cli_startup.md
    python benchmarks/cli_startup.py --repeats 3 --out /tmp/x.md
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PY = sys.executable
VARIANTS = [
    # (what, argv); the first one is the baseline of the ratios
    ("`import fmadapt.cli, fmadapt.estimators` (what `fmadapt --help` imported before; baseline)",
     [PY, "-c", "import fmadapt.cli, fmadapt.estimators"]),
    ("`import fmadapt.cli` (what it imports now)", [PY, "-c", "import fmadapt.cli"]),
    ("`fmadapt --help`", [PY, "-m", "fmadapt", "--help"]),
    ("`fmadapt fit --help`", [PY, "-m", "fmadapt", "fit", "--help"]),
    ("`python -c pass` (the interpreter alone)", [PY, "-c", "pass"]),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7, help="runs of every command (default 7; median reported)")
    ap.add_argument("--out", type=Path, default=HERE / "cli_startup.md")
    args = ap.parse_args(argv)
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="0")
    for _, cmd in VARIANTS:  # warm the file cache and the bytecode once
        subprocess.run(cmd, env=env, capture_output=True, check=True)
    times: dict[str, list[float]] = {w: [] for w, _ in VARIANTS}
    for _ in range(args.repeats):
        for what, cmd in VARIANTS:
            t0 = time.perf_counter()
            subprocess.run(cmd, env=env, capture_output=True, check=True)
            times[what].append(time.perf_counter() - t0)
    base = statistics.median(times[VARIANTS[0][0]])
    import fmadapt

    commit = "unknown"
    if shutil.which("git"):
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True,
                                text=True).stdout.strip() or commit
    rows = ["| command (fresh process) | median s | min–max s | × baseline speed |", "|---|---:|---:|---:|"]
    for what, _ in VARIANTS:
        ts = times[what]
        med = statistics.median(ts)
        rows.append(f"| {what} | {med:.2f} | {min(ts):.2f}–{max(ts):.2f} | {base / med:.1f} |")
    loads = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    text = "\n".join([
        "# Command-line start-up: `fmadapt --help` before and after the lazy package imports", "",
        f"- Command: `python benchmarks/cli_startup.py{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}` "
        "(from the repository root)",
        f"- Date: {_dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}; one run, {args.repeats} "
        "repeats of every command, interleaved, after one warm-up run each",
        f"- Machine: nproc = {os.cpu_count()}; python {sys.version.split()[0]}; fmadapt {fmadapt.__version__} "
        f"@ {commit}; load average at the end {loads}",
        "",
        "*× baseline speed* = the baseline's median / this command's median. The baseline imports what "
        "`import fmadapt` imported before the estimators, backbones and their libraries were made lazy (PEP 562 "
        "`__getattr__` in `fmadapt/__init__.py`); `fmadapt --help` now imports only the command-line module, "
        "typer and transformers' logging switch.",
        "", *rows, "",
    ])
    args.out.write_text(text, encoding="utf-8")
    print(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
