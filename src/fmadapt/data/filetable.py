"""Tables that list image or sound files by path (a CSV/TSV/JSONL/Parquet table or a DataFrame with a path column
and, for training, a label column): the alternative to class folders when the labels live in a spreadsheet.
Relative paths are read from the table's own folder; a path that is not a file is skipped and named with its row."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..errors import DataError
from .examples import Examples, Skipped

if TYPE_CHECKING:
    from ..config import FitConfig

#: conventional names of a path column (any case)
PATH_NAMES = ("path", "file", "filename", "filepath", "file_path", "audio", "image", "sound", "clip", "wav", "img")
#: file extensions of tables (anything else given as a file is one image or sound to predict on)
TABLE_SUFFIXES = frozenset({".csv", ".tsv", ".tab", ".txt", ".jsonl", ".ndjson", ".json", ".parquet", ".pq"})
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})


def is_table_file(data: Any) -> bool:
    return isinstance(data, pd.DataFrame) or (isinstance(data, (str, os.PathLike)) and Path(data).is_file()
                                              and Path(data).suffix.lower() in TABLE_SUFFIXES)


def _suffix_kind(values: pd.Series) -> str | None:
    """"audio" or "image" when at least 80 % of (the first 200 of) a column's values end like such files."""
    from .audio import AUDIO_SUFFIXES

    sample = [str(v) for v in values.dropna().head(200)]
    if not sample:
        return None
    for kind, suffixes in (("audio", AUDIO_SUFFIXES), ("image", IMAGE_SUFFIXES)):
        if sum(Path(v).suffix.lower() in suffixes for v in sample) >= 0.8 * len(sample):
            return kind
    return None


def path_column(df: pd.DataFrame, given: str | None = None) -> tuple[str, str] | None:
    """(column, "audio" | "image") of the column listing files: `given`, else a conventional name, else the one
    column whose values end like image or sound files; None when there is none."""
    cols = [str(c) for c in df.columns]
    df.columns = cols
    lower = {c.lower(): c for c in cols}
    candidates = [given] if given else [lower[n] for n in PATH_NAMES if n in lower] + cols
    for c in candidates:
        if c in cols and (df[c].dtype == object or pd.api.types.is_string_dtype(df[c])):
            kind = _suffix_kind(df[c])
            if kind:
                return c, kind
    return None


def table_modality(data: str | os.PathLike[str]) -> str | None:
    """"audio" or "image" for a table file listing such files, None for a table of texts (or unreadable). CSV and
    TSV files are peeked at (their first 200 rows), so that a large table of texts is not read twice."""
    from .tables import read_table

    p = Path(data)
    ext = p.suffix.lower()
    if ext not in TABLE_SUFFIXES or not p.is_file():
        return None
    try:
        if ext in (".csv", ".tsv", ".tab"):
            df = pd.read_csv(p, sep="," if ext == ".csv" else "\t", nrows=200, dtype=str, on_bad_lines="skip",
                             encoding_errors="replace")
        else:
            df, _ = read_table(p)
    except Exception:  # (whatever is wrong with it, the reader of texts says so, naming the file)
        return None
    found = path_column(df)
    return found[1] if found else None


def file_examples(data: str | os.PathLike[str] | pd.DataFrame, cfg: FitConfig, modality: str, need_label: bool
                  ) -> Examples:
    """The files a table lists (ids: the paths as written), with their labels when `need_label`. `text_col`
    names the path column when it is not found by name or by its values."""
    from .tables import examples_from_table, infer_columns, read_table

    df, source = read_table(data, encoding=cfg.encoding, header=cfg.header)
    found = path_column(df, cfg.text_col)
    if found is None:
        raise DataError(f"{source}: no column lists {modality} files (a column named path/file/filename, or one whose "
                        f"values end in a {'sound' if modality == 'audio' else 'image'} file's extension); name it "
                        f"with --text. Columns: {', '.join(repr(str(c)) for c in df.columns)}")
    col, kind = found
    if kind != modality:
        raise DataError(f"{source}: column {col!r} lists {kind} files, not {modality} files")
    from ..tasks.multilabel import canonical, joined_column, label_columns

    columns = label_columns(cfg.label_col) if need_label and cfg.task == "multilabel" else None
    label: str | None
    if columns:  # (several 0/1 columns, one per label: joined as the label column)
        label = ",".join(columns)
        df = df.assign(**{label: joined_column(df, columns, cfg.label_sep, source)})
    else:
        _, label = infer_columns(df, col, cfg.label_col if need_label else None, source, need_label=need_label)
    ex = examples_from_table(df, source, col, label if need_label else None)
    if need_label and cfg.task == "multilabel":
        assert ex.labels is not None
        ex.labels, read = canonical(ex.labels, cfg.label_sep, source)
        ex.warnings.extend(read)
    elif need_label and cfg.task == "regression":
        from ..tasks.regression import canonical as numeric

        assert ex.labels is not None
        ex.labels = numeric(ex.labels, ex.ids, source)
    base = Path(source).parent if not isinstance(data, pd.DataFrame) else Path.cwd()
    rows = ex.ids  # (the table's row indices)
    ex.ids = list(ex.inputs)
    ex.inputs = [str(p if Path(p).is_absolute() else base / p) for p in ex.inputs]
    ex.modality = modality
    gone = [i for i, p in enumerate(ex.inputs) if not os.path.isfile(p)]
    if gone:
        from .tables import _row_numbers

        numbers = list(_row_numbers(df, source))
        keep = [i for i in range(len(ex)) if i not in set(gone)]
        skipped = [Skipped(f"{source}:row {numbers[int(rows[i])]}", f"{ex.inputs[i]}: no such file") for i in gone]
        ex = ex.subset(keep)
        ex.skipped = ex.skipped + skipped
    return ex
