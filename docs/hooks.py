"""MkDocs hook (mkdocs.yml `hooks:`): on every build, the CLI and option reference pages are generated from the
live objects by gen_reference.py, and the benchmark results page from benchmarks/results/*.csv by
benchmarks/render.py; they are added to the site's files and exist nowhere on disk, so nobody edits them by hand."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import gen_reference  # (MkDocs puts this file's folder on sys.path while it loads the hook)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import render  # noqa: E402  (benchmarks/render.py)
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files


def on_files(files: Files, config: Any) -> Files:
    # fmadapt imported afresh on every build, so that `mkdocs serve` (which watches src/) shows edited help texts
    for name in [m for m in sys.modules if m == "fmadapt" or m.startswith("fmadapt.")]:
        del sys.modules[name]
    for uri, text in {**gen_reference.pages(), "benchmark-results.md": render.render()}.items():
        if files.get_file_from_path(uri) is not None:
            raise PluginError(f"docs/{uri} is generated on every build (docs/gen_reference.py): delete the file")
        files.append(File.generated(config, uri, content=text))
    return files
