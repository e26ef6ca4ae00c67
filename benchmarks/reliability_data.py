#!/usr/bin/env python
"""Reliability with bad data: the figures of the "Bad data at scale" requirement, as a markdown section.

    python benchmarks/reliability_data.py          # prints the "## Bad data" section
    python benchmarks/reliability_data.py --csv benchmarks/results/reliability.csv   # also appends its rows

`run()` returns the same markdown (benchmarks/reliability.md is assembled by another script); `run(rows)` also
appends the figures to `rows` as rows of benchmarks/results/reliability.csv (benchmarks/reliability.py does).
The datasets are the ones tests/test_bad_data.py checks, built by its functions in a temp dir:

- images: 1,000 files in 4 class folders, 50 unusable (10 each: truncated JPEG, truncated PNG, zero-byte,
  random bytes named .jpg, a non-image under an image extension), 10 valid images under the other format's
  extension (used: fmadapt judges files by content); `ImageClassifier(backbone="tiny-cnn").fit(folder)`;
- the 5 image modes and the 8 EXIF orientations (PNG, and JPEG through the draft-decoding path);
- decompression bombs (200 MP PNG streamed from zero rows, the same declared with a truncated IDAT, 90 MP PNG,
  200 MP JPEG and GIF headers, 4.2 GP JPEG header) loaded in a fresh process, memory from /proc/self/status;
  and two images just under the 89 MP limit, which are decoded (what they cost is shown for the record);
- a text table with label variants, NaN/empty/blank rows, a 1 MB text, emoji, ZWJ, RTL, NUL, a malformed line,
  written as UTF-8, UTF-8 with BOM, Latin-1 and GB18030, read with the default encoding "auto";
  `TextClassifier(backbone="tiny-bert").fit(file)` then predict.

The tiny random backbones come from tests/conftest.py: the figures are about data handling, not accuracy.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _setup() -> None:
    for p in (REPO / "tests", REPO / "src"):
        if str(p) not in sys.path:
            sys.path.insert(0, str(p))


def _row(method: str, regime: str, cases: int, ok: int, **more: Any) -> dict[str, Any]:
    """A row of benchmarks/results/reliability.csv (dataset "bad data"); passed: every case handled."""
    return {"dataset": "bad data", "regime": regime, "method": method, "cases": cases, "ok_cases": ok,
            "passed": ok == cases, **more}


def _images(tmp: Path, rows: list[dict[str, Any]]) -> list[str]:
    import conftest  # noqa: F401  (registers tiny-cnn)
    from fmadapt import ImageClassifier
    from test_bad_data import BAD_KINDS, BAD_REASONS, build_bad_image_folder

    built = build_bad_image_folder(tmp / "images")
    bad: dict[str, str] = built["bad"]  # type: ignore[assignment]
    t = time.perf_counter()
    clf = ImageClassifier(backbone="tiny-cnn", strategy="probe", progress=False).fit(tmp / "images")
    seconds = time.perf_counter() - t
    ds = clf.data_summary_
    used = set(clf.splits_["train"].inputs) | set(clf.splits_["val"].inputs)
    skipped = {s["where"]: s["reason"] for s in ds["skipped"]}
    named = sum(1 for p, k in bad.items() if skipped.get(p, "").startswith(BAD_REASONS[k]))
    misnamed = sum(1 for p in built["misnamed"] if p in used)  # type: ignore[attr-defined]
    n_misnamed = len(built["misnamed"])  # type: ignore[arg-type]
    rows.append(_row("image_folder_fit", "1,000 files, 50 unusable, 10 under the other format's extension",
                     len(bad) + n_misnamed, named + misnamed,
                     outcome=f"used {ds['sizes']['train'] + ds['sizes']['val']}, skipped {len(skipped)} "
                             f"({len(set(skipped) - set(bad))} others)", seconds=round(seconds, 1),
                     options='{"backbone": "tiny-cnn", "strategy": "probe"}'))
    lines = [
        "### Images: 1,000 files, 50 unusable",
        "",
        "| total | used (train + val) | skipped | bad files named, with the right reason | others skipped "
        "| valid images under a misleading extension, used | fit s |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| 1000 | {ds['sizes']['train'] + ds['sizes']['val']} | {len(skipped)} | {named}/{len(bad)} "
        f"| {len(set(skipped) - set(bad))} | {misnamed}/{len(built['misnamed'])} | {seconds:.1f} |",  # type: ignore
        "",
        "| kind of bad file | files | skipped | reason given (first) |",
        "|---|---:|---:|---|",
    ]
    for kind in BAD_KINDS:
        paths = [p for p, k in bad.items() if k == kind]
        reasons = [skipped[p] for p in paths if p in skipped]
        lines.append(f"| {kind} | {len(paths)} | {len(reasons)} | {_cell(reasons[0] if reasons else '-')} |")
    return lines


def _modes_orientations(tmp: Path, rows: list[dict[str, Any]]) -> list[str]:
    from test_bad_data import check_mode_image, orientation_ok, write_mode_images, write_oriented

    files = write_mode_images(tmp / "modes")
    ok_modes = []
    for mode, path in files.items():
        try:
            check_mode_image(mode, path)
            ok_modes.append(mode)
        except Exception:  # noqa: BLE001 - a failure is a figure here
            pass
    lines = [f"| image modes accepted ({', '.join(files)}) | {len(ok_modes)}/{len(files)} |"]
    rows.append(_row("image_modes", ", ".join(files), len(files), len(ok_modes)))
    for ext in ("png", "jpg"):
        oriented = write_oriented(tmp / f"orient_{ext}", ext)
        ok = sum(1 for p in oriented.values() if orientation_ok(p) and orientation_ok(p, draft_size=256))
        lines.append(f"| EXIF orientations 1-8 applied ({ext.upper()}) | {ok}/8 |")
        rows.append(_row("exif_orientation", ext.upper(), 8, ok))
    return ["### Image modes and EXIF orientation", "", "| check | result |", "|---|---:|", *lines]


def _bombs(tmp: Path, rows: list[dict[str, Any]]) -> list[str]:
    from test_bad_data import build_bomb_folder, measure_bombs, write_png_bomb

    kinds = build_bomb_folder(tmp / "bombs")
    bombs = sorted(k for k, v in kinds.items() if v == "bomb")
    good = sorted(k for k, v in kinds.items() if v == "good")
    lines = [
        "### Decompression bombs",
        "",
        f"Bombs: {', '.join(f'`{b}`' for b in bombs)}; next to {len(good)} good images. Loaded in a fresh "
        "process (`drop_unreadable` on the folder, then `load_image` on each refused file). Memory from "
        "/proc/self/status: RSS before loading (after imports), the peak while loading (VmHWM, reset before "
        "loading), and the process's highest peak including its imports.",
        "",
        "| process | bombs refused | good images used | imports torch | RSS before MB | peak while loading MB "
        "| increase MB | process peak MB | peak < 500 MB |",
        "|---|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for isolated, label in ((True, "image reader only (`fmadapt.data.images`)"), (False, "after `import fmadapt`")):
        m = measure_bombs(tmp / "bombs", isolated)
        refused = sum(1 for b in bombs if "decompression bomb" in m["skipped"].get(b, ""))
        inc = m["load_peak_mb"] - m["rss_before_mb"]
        used = sum(g in m["used"] for g in good)
        rows.append(_row("decompression_bombs", label, len(bombs) + len(good), refused + used,
                         outcome=f"{refused}/{len(bombs)} bombs refused, {used}/{len(good)} good images used",
                         torch_imported=m["torch_imported"], rss_before_mib=round(m["rss_before_mb"], 1),
                         increase_mib=round(inc, 1), process_peak_mib=round(m["peak_mb"], 1),
                         peak_mib=round(m["load_peak_mb"], 1)))
        lines.append(f"| {label} | {refused}/{len(bombs)} | {sum(g in m['used'] for g in good)}/{len(good)} "
                     f"| {'yes' if m['torch_imported'] else 'no'} | {m['rss_before_mb']:.0f} | "
                     f"{m['load_peak_mb']:.0f} | {inc:.0f} | {m['peak_mb']:.0f} | "
                     f"{'yes' if m['peak_mb'] < 500 else 'no (imports)' if inc < 500 else 'no'} |")
    lines += ["", "Under the 89 MP limit, images are decoded; for the record, what the largest cost "
              "(image reader only):", "",
              "| image | file KB | RSS before MB | peak while loading MB | increase MB |", "|---|---:|---:|---:|---:|"]
    for name, depth, ctype in (("9400 x 9400 (88 MP) 16-bit grey PNG", 16, 0), ("9400 x 9400 (88 MP) RGBA PNG", 8, 6),
                               ("4000 x 4000 (16 MP) 16-bit grey PNG", 16, 0)):
        side = 4000 if name.startswith("4000") else 9400
        big = write_png_bomb(tmp / f"big_{side}_{depth}_{ctype}.png", side, side, bit_depth=depth, color_type=ctype)
        m = measure_bombs(tmp / "bombs", True, big)
        lines.append(f"| {name} | {big.stat().st_size / 1024:.0f} | {m['big_rss_before_mb']:.0f} | "
                     f"{m['big_peak_mb']:.0f} | {m['big_peak_mb'] - m['big_rss_before_mb']:.0f} |")
        rows.append({"dataset": "bad data", "regime": name, "method": "decode_large_image",
                     "outcome": f"decoded, file {big.stat().st_size / 1024:.0f} KB",
                     "rss_before_mib": round(m["big_rss_before_mb"], 1),
                     "increase_mib": round(m["big_peak_mb"] - m["big_rss_before_mb"], 1),
                     "peak_mib": round(m["big_peak_mb"], 1)})
        big.unlink()
    return lines


def _tables(tmp: Path, rows: list[dict[str, Any]]) -> list[str]:
    import conftest  # noqa: F401  (registers tiny-bert)
    from test_bad_data import TABLE_FILES, check_table, table_records

    lines = [
        "### Text tables",
        "",
        f"Each file: {len(table_records('utf-8'))} rows of data (header not counted): label variants "
        "`pos`/`Pos`/` pos `, a NaN label, a missing label, empty, whitespace-only and NUL-only texts, an "
        "all-empty row, a blank line, a line with too many fields, a 1 MB text, a quoted multi-line text, "
        "a text with a NUL inside; emoji, ZWJ sequences, Arabic, Hebrew and bidi marks (accented Latin text "
        "in the Latin-1 file, which cannot hold the others). Read with the default encoding `auto`; every "
        "skip is listed with its row number and reason.",
        "",
        "| file | written as | read as | rows | loaded | skipped | loaded + skipped = rows | fit + predict |",
        "|---|---|---|---:|---:|---:|---|---|",
    ]
    for name, enc in TABLE_FILES.items():
        try:
            f = check_table(tmp / name, enc, fit=True)
            lines.append(f"| {name} | {enc} | {f['encoding read']} | {f['rows']} | {f['loaded']} | {f['skipped']} "
                         f"| {'yes' if f['loaded'] + f['skipped'] == f['rows'] else 'no'} | {f['fit']} |")  # type: ignore
            rows.append(_row("text_table_fit", f"{name}, written as {enc}", int(f["rows"]),  # type: ignore
                             int(f["loaded"]) + int(f["skipped"]),  # type: ignore
                             outcome=f"read as {f['encoding read']}; loaded {f['loaded']}, skipped {f['skipped']}; "
                                     f"fit + predict {f['fit']}"))
        except Exception as e:  # noqa: BLE001 - a failure is a figure here
            lines.append(f"| {name} | {enc} | - | - | - | - | no | FAILED: {_cell(repr(e))} |")
            rows.append({"dataset": "bad data", "regime": f"{name}, written as {enc}", "method": "text_table_fit",
                         "passed": False, "error": repr(e)[:300]})
    return lines


def _cell(s: str, n: int = 90) -> str:
    s = s.replace("|", "\\|").replace("\n", " ")
    return s if len(s) <= n else s[: n - 1] + "…"


def run(rows: list[dict[str, Any]] | None = None) -> str:
    """The "## Bad data" markdown section (builds everything in a temp dir, ~1 min on 2 CPU cores); its figures
    are appended to `rows` (when given) as rows of benchmarks/results/reliability.csv."""
    rows = [] if rows is None else rows
    _setup()
    old_cache = os.environ.get("FMADAPT_CACHE")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fmadapt-bad-data-") as d:
        tmp = Path(d)
        os.environ["FMADAPT_CACHE"] = str(tmp / "cache")
        try:
            parts = []
            for section in (_images, _modes_orientations, _bombs, _tables):
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        parts.append("\n".join(section(tmp, rows)))
                except Exception:  # noqa: BLE001 - report, go on with the other sections
                    parts.append(f"### {section.__name__.strip('_')}: FAILED\n\n```\n{traceback.format_exc()}```")
                    rows.append({"dataset": "bad data", "method": section.__name__.strip("_"), "passed": False,
                                 "error": traceback.format_exc().strip().splitlines()[-1][:300]})
        finally:
            if old_cache is None:
                os.environ.pop("FMADAPT_CACHE", None)
            else:
                os.environ["FMADAPT_CACHE"] = old_cache
    head = ("## Bad data\n\n"
            f"`python benchmarks/reliability_data.py` ({time.perf_counter() - t0:.0f} s; {platform.machine()}, "
            f"{os.cpu_count()} CPU cores, Python {platform.python_version()}). Datasets and checks: "
            "tests/test_bad_data.py.\n")
    return head + "\n" + "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    from reliability import run_part

    run_part(run, __doc__, "the figures")
