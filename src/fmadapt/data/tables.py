"""Reading users' text tables: CSV, TSV, JSONL, Parquet or a DataFrame, with clear column errors."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import pandas as pd

from ..errors import DataError
from .examples import Examples, Skipped

_TEXT_NAMES = ("text", "sentence", "review", "content", "title", "document", "body", "comment", "query")
_LABEL_NAMES = ("label", "labels", "target", "class", "category", "y", "sentiment", "topic")


def read_table(data: str | os.PathLike[str] | pd.DataFrame, encoding: str = "utf-8",
               header: bool = True) -> tuple[pd.DataFrame, str]:
    """(DataFrame, source name). Format by extension: .csv .tsv .txt .jsonl .json .parquet."""
    if isinstance(data, pd.DataFrame):
        return data.reset_index(drop=True), "<DataFrame>"
    path = Path(data)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    ext = path.suffix.lower()
    # utf-8-sig reads plain UTF-8 too and drops a byte-order mark that would corrupt the first column name
    enc = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        if ext in (".parquet", ".pq"):
            try:
                df = pd.read_parquet(path)
            except ImportError as e:
                raise DataError(f"{path}: reading Parquet needs pyarrow: pip install 'fmadapt[parquet]'") from e
        elif ext in (".jsonl", ".ndjson") or (ext == ".json" and _looks_jsonl(path)):
            df = pd.read_json(path, lines=True, encoding=enc, dtype=False)
        elif ext == ".json":
            df = pd.read_json(path, encoding=enc, dtype=False)
        else:
            sep = "\t" if ext in (".tsv", ".tab") else ","
            df = pd.read_csv(path, sep=sep, encoding=enc, header=0 if header else None, dtype=str,
                             keep_default_na=True, quoting=3 if sep == "\t" else 0)
            if not header:
                df.columns = [str(c) for c in df.columns]
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid {encoding} text (byte {e.start}: {e.reason}). Pass the file's "
                        "encoding with --encoding, e.g. --encoding latin-1 or --encoding gb18030.") from e
    except (ValueError, pd.errors.ParserError) as e:
        raise DataError(f"{path}: cannot parse as {ext or 'CSV'} ({e})") from e
    if df.empty:
        raise DataError(f"{path}: the table has no rows")
    return df, str(path)


def _looks_jsonl(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(1) == b"{"


def infer_columns(df: pd.DataFrame, text: str | None, label: str | None, source: str,
                  need_label: bool = True) -> tuple[str, str | None]:
    """Resolve --text/--label. Explicit names must exist; otherwise conventional names, otherwise the
    only sensible choice; when ambiguous, an error listing the columns."""
    cols = [str(c) for c in df.columns]
    df.columns = cols
    listing = ", ".join(repr(c) for c in cols)
    for opt, val in (("--text", text), ("--label", label)):
        if val is not None and val not in cols:
            raise DataError(f"{source}: column {val!r} ({opt}) not found. Columns: {listing}")
    lower = {c.lower(): c for c in cols}
    if text is None:
        text = next((lower[n] for n in _TEXT_NAMES if n in lower and lower[n] != label), None)
    if label is None and need_label:
        label = next((lower[n] for n in _LABEL_NAMES if n in lower and lower[n] != text), None)
    if text is None:
        others = [c for c in cols if c != label and (df[c].dtype == object or pd.api.types.is_string_dtype(df[c]))]
        if len(others) == 1:
            text = others[0]
        elif len(others) > 1:
            # the column with the longest strings is almost always the text
            lengths = {c: df[c].astype(str).str.len().mean() for c in others}
            best = sorted(lengths, key=lengths.get, reverse=True)
            if lengths[best[0]] >= 2 * lengths[best[1]]:
                text = best[0]
    if label is None and need_label:
        rest = [c for c in cols if c != text]
        if len(rest) == 1:
            label = rest[0]
    if text is None or (need_label and label is None):
        missing = " and ".join(o for o, v in (("--text", text), ("--label", label)) if v is None and
                               (o == "--text" or need_label))
        raise DataError(f"{source}: cannot tell which column is which; pass {missing}. Columns: {listing}")
    return text, label


def examples_from_table(df: pd.DataFrame, source: str, text: str, label: str | None,
                        id_col: str | None = None) -> Examples:
    """Clean rows: empty/NaN texts and NaN labels dropped and counted; case/whitespace label variants flagged."""
    skipped: list[Skipped] = []
    texts = df[text]
    labels = _label_strings(df[label]) if label else None
    keep: list[int] = []
    for i in range(len(df)):
        t = texts.iloc[i]
        row = f"{source}:row {i + 2 if source.endswith(('.csv', '.tsv')) else i}"
        if t is None or (isinstance(t, float) and pd.isna(t)) or not str(t).strip():
            skipped.append(Skipped(row, f"empty text in column {text!r}"))
            continue
        if labels is not None and labels[i] is None:
            skipped.append(Skipped(row, f"missing label in column {label!r}"))
            continue
        keep.append(i)
    ids = [str(df[id_col].iloc[i]) for i in keep] if id_col else [str(i) for i in keep]
    ex = Examples(
        inputs=[str(texts.iloc[i]).replace("\x00", "") for i in keep],
        labels=None if labels is None else [labels[i] for i in keep],  # type: ignore[misc]
        ids=ids,
        source=source,
        modality="text",
        skipped=skipped,
    )
    if ex.labels is not None:
        ex.warnings.extend(label_variant_warnings(ex.labels, source))
    return ex


def _label_strings(col: pd.Series) -> list[str | None]:
    """Labels as strings; integral floats (from a column with gaps) print as integers, not '1.0'."""
    out: list[str | None] = []
    for v in col.tolist():
        if v is None or (isinstance(v, float) and pd.isna(v)):
            out.append(None)
        elif isinstance(v, float) and v.is_integer():
            out.append(str(int(v)))
        else:
            s = str(v)
            out.append(s if s.strip() else None)
    return out


def label_variant_warnings(labels: list[str], source: str) -> list[str]:
    """Labels that differ only by case or surrounding whitespace are probably one class."""
    groups: dict[str, set[str]] = defaultdict(set)
    for lab in set(labels):
        groups[" ".join(lab.split()).casefold()].add(lab)
    return [f"{source}: labels {sorted(v)} differ only by case or whitespace; they are treated as "
            f"{len(v)} different classes. Clean the label column if they mean the same class."
            for v in groups.values() if len(v) > 1]
