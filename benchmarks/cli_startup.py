#!/usr/bin/env python
"""How long the `fmadapt` command takes to answer before it does any work: `--help`, and the import behind it,
against importing the estimators (torch, Lightning, transformers, timm), which `import fmadapt` did eagerly before
the names were made lazy. Every command is a fresh Python process; the variants are interleaved.

    python benchmarks/cli_startup.py                  # writes benchmarks/cli_startup.md
    python benchmarks/cli_startup.py --repeats 3 --out /tmp/x.md --csv /tmp/x.csv

Rows appended to benchmarks/results/cli_startup.csv (--csv), one per command: its median, min and max seconds,
× the baseline's speed, and the peak memory of that command's process (the largest over its runs, from its own
resource usage). Method `import_eager` is the baseline.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import statistics
import subprocess
import sys
from pathlib import Path

from common import add_csv_argument, append_rows, csv_path, git, measured_process, options_json, stamp

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
#: the CSV's method name of each variant, in the order of VARIANTS (the first: the baseline)
METHODS = ["import_eager", "import_cli", "help", "fit_help", "python_pass"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7, help="runs of every command (default 7; median reported)")
    ap.add_argument("--out", type=Path, default=HERE / "cli_startup.md")
    add_csv_argument(ap, "cli_startup")
    args = ap.parse_args(argv)
    run_stamp = stamp()
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="0")
    for _, cmd in VARIANTS:  # warm the file cache and the bytecode once
        subprocess.run(cmd, env=env, capture_output=True, check=True)
    times: dict[str, list[float]] = {w: [] for w, _ in VARIANTS}
    peaks: dict[str, list[float]] = {w: [] for w, _ in VARIANTS}
    for _ in range(args.repeats):
        for what, cmd in VARIANTS:
            r, seconds, peak = measured_process(cmd, env=env)
            if r.returncode != 0:
                raise subprocess.CalledProcessError(r.returncode, cmd, r.stdout, r.stderr)
            times[what].append(seconds)
            peaks[what].append(peak)
    base = statistics.median(times[VARIANTS[0][0]])
    import fmadapt

    try:
        commit = git("rev-parse", "--short", "HEAD")
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
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
    path = csv_path(args.csv, "cli_startup")
    if path is not None:
        append_rows(path, ["dataset", "regime", "method", "options", "median_s", "min_s", "max_s", "x_baseline",
                           "seconds", "peak_mib"],
                    [{"dataset": "none", "regime": f"fresh process, median of {args.repeats}", "method": method,
                      "options": options_json({"what": what, "argv": ["python", *cmd[1:]]}),
                      "median_s": round(statistics.median(times[what]), 3), "min_s": round(min(times[what]), 3),
                      "max_s": round(max(times[what]), 3),
                      "x_baseline": round(base / statistics.median(times[what]), 2),
                      "seconds": round(statistics.median(times[what]), 3), "peak_mib": max(peaks[what])}
                     for method, (what, cmd) in zip(METHODS, VARIANTS, strict=True)], run_stamp)
        print(f"appended {len(VARIANTS)} rows to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
