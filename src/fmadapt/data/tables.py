"""Reading users' text tables: CSV, TSV, JSONL, Parquet or a DataFrame, with clear column errors."""

from __future__ import annotations

import os
import re
import warnings
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
from pandas._libs.parsers import STR_NA_VALUES

from ..errors import DataError
from .examples import Examples, Skipped

_TEXT_NAMES = ("text", "sentence", "review", "content", "title", "document", "body", "comment", "query")
_LABEL_NAMES = ("label", "labels", "target", "class", "category", "y", "sentiment", "topic")


def read_table(data: str | os.PathLike[str] | pd.DataFrame, encoding: str = "auto",
               header: bool = True) -> tuple[pd.DataFrame, str]:
    """(DataFrame, source name). Format by extension: .csv .tsv .txt .jsonl .json .parquet.

    `encoding` "auto" reads UTF-8 (with or without a byte-order mark) and, when the file is not valid UTF-8,
    detects its encoding (charset_normalizer) and says so in a warning; any other encoding is used as given.
    CSV/TSV lines with too many fields are skipped and reported; blank lines are kept as empty rows (so that
    they are counted and reported too). What reading found travels in ``df.attrs["fmadapt"]`` for
    `examples_from_table`."""
    if isinstance(data, pd.DataFrame):
        return data.reset_index(drop=True), "<DataFrame>"
    path = Path(data)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    ext = path.suffix.lower()
    auto = encoding.strip().lower() == "auto"
    # utf-8-sig reads plain UTF-8 too and drops a byte-order mark that would corrupt the first column name
    enc = "utf-8-sig" if auto or encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    notes: list[str] = []
    try:
        try:
            df, bad_lines = _read_file(path, ext, enc, header)
        except UnicodeDecodeError as e:
            if not auto:
                raise
            df, bad_lines, used = _read_detected(path, ext, header, e)
            how = (f"read it as {used}, the encoding detected" if used != "utf-8-sig" else
                   "it is mostly UTF-8: read it as UTF-8 with the invalid bytes replaced by \ufffd")
            notes.append(f"{path}: not valid UTF-8 text (byte {e.start}: {e.reason}); {how}. If the texts look "
                         "wrong, pass the file's encoding with --encoding (Python: encoding=...), e.g. "
                         "--encoding gb18030 or --encoding latin-1.")
            warnings.warn(notes[-1], stacklevel=2)
    except UnicodeDecodeError as e:
        what = "UTF-8 text, and no other encoding fits it" if auto else f"{encoding} text"
        raise DataError(f"{path}: not valid {what} (byte {e.start}: {e.reason}). Pass the file's "
                        "encoding with --encoding, e.g. --encoding latin-1 or --encoding gb18030.") from e
    except LookupError as e:
        raise DataError(f"{path}: unknown encoding {encoding!r} ({e}). Use a Python codec name such as utf-8, "
                        "latin-1, cp1252 or gb18030, or auto.") from e
    except (ValueError, pd.errors.ParserError) as e:
        raise DataError(f"{path}: cannot parse as {ext or 'CSV'} ({e})") from e
    if df.empty:
        raise DataError(f"{path}: the table has no rows")
    read = df.attrs.setdefault("fmadapt", {})
    if bad_lines is not None:
        # CSV/TSV: numbers of the rows as in the file (header = row 1; a quoted multi-line field is one row)
        read.update({"first_row": 2 if header else 1, "bad_lines": bad_lines, "warnings": notes})
    elif notes:
        read["warnings"] = notes
    if not read:
        del df.attrs["fmadapt"]
    return df, str(path)


def missing_column(source: str, col: str, df: pd.DataFrame, opt: str) -> DataError:
    """The error for a column (`opt`: the option that named it) the table does not have, listing those it has."""
    listing = ", ".join(repr(str(c)) for c in df.columns)
    return DataError(f"{source}: column {col!r} ({opt}) not found. Columns: {listing}")


def _tab_separated(path: Path, enc: str, errors: str) -> bool:
    """A .txt table whose first lines (up to 50 that are not blank) all hold a tab is tab-separated (THUCNews-style
    "text<TAB>label" files); otherwise it is read as CSV."""
    lines: list[str] = []
    with open(path, encoding=enc, errors=errors, newline="") as f:
        for line in f:
            if line.strip():
                lines.append(line)
            if len(lines) == 50:
                break
    return bool(lines) and all("\t" in line for line in lines)


def _read_file(path: Path, ext: str, enc: str, header: bool, errors: str = "strict"
               ) -> tuple[pd.DataFrame, list[tuple[int, str]] | None]:
    """(DataFrame, [(row, reason)] of the CSV/TSV lines skipped as malformed; None for other formats)."""
    if ext in (".parquet", ".pq"):
        try:
            return pd.read_parquet(path), None
        except ImportError as e:
            raise DataError(f"{path}: reading Parquet needs pyarrow: pip install 'fmadapt[parquet]'") from e
    if ext in (".jsonl", ".ndjson") or (ext == ".json" and _looks_jsonl(path)):
        return pd.read_json(path, lines=True, encoding=enc, encoding_errors=errors, dtype=False), None
    if ext == ".json":
        return pd.read_json(path, encoding=enc, encoding_errors=errors, dtype=False), None
    sep = "\t" if ext in (".tsv", ".tab") or (ext == ".txt" and _tab_separated(path, enc, errors)) else ","
    # keep_default_na=False, then _mark_missing: the same missing values as pandas' default, but remembering
    # which marker each was, so that a skipped row can say that its label was the word "None", not empty.
    # The C parser skips lines with too many fields and reports each as a ParserWarning "Skipping line N: ..."
    # (N counts rows as in the file, header = 1). The python engine's on_bad_lines callable gets no row
    # number, and it silently drops fields longer than csv.field_size_limit (131,072 characters).
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        df = pd.read_csv(path, sep=sep, encoding=enc, encoding_errors=errors, header=0 if header else None, dtype=str,
                         keep_default_na=False, quoting=3 if sep == "\t" else 0, on_bad_lines="warn",
                         skip_blank_lines=False)
    bad: list[tuple[int, str]] = []
    for w in caught:
        msg = str(w.message)
        found = _BAD_LINE.findall(msg) if issubclass(w.category, pd.errors.ParserWarning) else []
        bad.extend((int(n), reason.strip()) for n, reason in found)
        if not found:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if not header:
        df.columns = [str(c) for c in df.columns]
    df.attrs["fmadapt"] = {"na_markers": _mark_missing(df)}
    return df, sorted(bad)


#: what pandas reads as a missing value by default ("NA", "N/A", "NaN", "null", "None", "#N/A", ...; case-sensitive)
NA_MARKERS = frozenset(STR_NA_VALUES) - {""}


def _mark_missing(df: pd.DataFrame) -> dict[str, dict[int, str]]:
    """Empty fields and pandas' missing-value markers become missing values, as pandas' default reading does (R
    writes a missing value as NA; other tools as NaN, null or None). Returns {column: {row position: marker}}
    for the markers, so that a report can say which word was taken as missing."""
    found: dict[str, dict[int, str]] = {}
    for pos, col in enumerate(df.columns):
        values = df.iloc[:, pos]
        missing = values.isin(NA_MARKERS | {""})
        if not missing.any():
            continue
        rows = missing.to_numpy().nonzero()[0]
        markers = {int(i): str(values.iat[i]) for i in rows if values.iat[i] != ""}
        if markers:
            found[str(col)] = markers
        df.iloc[rows, pos] = None
    return found


_BAD_LINE = re.compile(r"Skipping line (\d+): ([^\n]*)")

#: Tie-break among encodings that fit a sample equally well: the likeliest for our users first (Windows-1252
#: is Latin-1 plus printable characters in 0x80-0x9F; GB18030 is a superset of GBK and GB2312).
_PREFERRED_ENCODINGS = ("cp1252", "gb18030", "big5", "cp932", "shift_jis", "euc_jp", "cp949", "euc_kr", "cp1251",
                        "cp1250", "latin_1", "iso8859_15")


def detect_encoding(raw: bytes) -> list[str]:
    """Candidate encodings of text that is not UTF-8, likeliest first (empty when nothing fits)."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return ["utf_16"]
    from charset_normalizer import from_bytes

    sample = _non_ascii_lines(raw)
    found: dict[str, float] = {}
    for r in from_bytes(sample):
        name = "gb18030" if r.encoding in ("gb2312", "gbk", "hz") else r.encoding
        found.setdefault(name, r.chaos)
    if not found:
        # mixed scripts (emoji, Arabic) in GB18030's four-byte sequences defeat the detector; a strict decode of
        # the whole sample is still good evidence for a multi-byte encoding
        return [e for e in ("gb18030", "big5", "cp932", "cp949") if _decodes(sample, e)]
    best = min(found.values())
    rank = {e: i for i, e in enumerate(_PREFERRED_ENCODINGS)}
    close = sorted((e for e, c in found.items() if c <= best + 0.05), key=lambda e: rank.get(e, len(rank)))
    return close + [e for e in found if e not in close]


def _non_ascii_lines(raw: bytes) -> bytes:
    """The lines with non-ASCII bytes (up to 256 KB): they carry all the evidence. NUL bytes inside texts,
    which confuse the detector, are left out."""
    sample = b"\n".join(line for line in raw.splitlines() if max(line, default=0) >= 0x80)[:1 << 18]
    return sample.replace(b"\x00", b"")


def _mostly_utf8(raw: bytes) -> bool:
    """UTF-8 with a few stray bytes (a file pasted together from two sources): at least 95 % of the non-ASCII
    characters decode as UTF-8. Other encodings' non-ASCII bytes rarely form valid UTF-8 sequences."""
    text = _non_ascii_lines(raw).decode("utf-8", errors="replace")
    bad = text.count("\ufffd")
    good = sum(1 for ch in text if ord(ch) > 127) - bad
    return good >= 19 * bad


def _decodes(raw: bytes, encoding: str) -> bool:
    try:
        raw.decode(encoding)
        return True
    except UnicodeDecodeError:
        return False


def _read_detected(path: Path, ext: str, header: bool, err: UnicodeDecodeError
                   ) -> tuple[pd.DataFrame, list[tuple[int, str]] | None, str]:
    """Read a file that is not UTF-8 in the first detected encoding that decodes all of it ("utf-8-sig" when it is
    UTF-8 with a few invalid bytes: they are replaced)."""
    with open(path, "rb") as f:
        raw = f.read(64 << 20)
    if _mostly_utf8(raw):
        df, bad = _read_file(path, ext, "utf-8-sig", header, errors="replace")
        return df, bad, "utf-8-sig"
    for enc in detect_encoding(raw):
        try:
            df, bad = _read_file(path, ext, enc, header)
            return df, bad, enc
        except UnicodeDecodeError:
            continue
    raise err


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
    """Clean rows: empty/NaN texts and NaN labels dropped and counted; case/whitespace label variants flagged.
    Lines `read_table` skipped as malformed are reported here too, with their row numbers."""
    read: dict = df.attrs.get("fmadapt") or {}
    skipped: list[tuple[int, Skipped]] = [
        (n, Skipped(f"{source}:row {n}", f"malformed line, skipped ({reason})"))
        for n, reason in read.get("bad_lines", [])]
    texts = df[text]
    labels = _label_strings(df[label]) if label else None
    text_na, label_na = na_markers(df, text), na_markers(df, label) if label else {}
    keep: list[int] = []
    cleaned: list[str] = []
    for i, n in zip(range(len(df)), _row_numbers(df, source), strict=False):
        t = texts.iloc[i]
        row = f"{source}:row {n}"
        clean = "" if t is None or (isinstance(t, float) and pd.isna(t)) else str(t).replace("\x00", "")
        if i in text_na and not clean.strip():
            skipped.append((n, Skipped(row, f"missing text in column {text!r}: {marker_note(text_na[i])}")))
            continue
        if not clean.strip():
            skipped.append((n, Skipped(row, f"empty text in column {text!r}")))
            continue
        if labels is not None and labels[i] is None:
            note = f": {marker_note(label_na[i], 'class')}" if i in label_na else ""
            skipped.append((n, Skipped(row, f"missing label in column {label!r}{note}")))
            continue
        keep.append(i)
        cleaned.append(clean)
    ids = [str(df[id_col].iloc[i]) for i in keep] if id_col else [str(i) for i in keep]
    ex = Examples(
        inputs=cleaned,
        labels=None if labels is None else [labels[i] for i in keep],  # type: ignore[misc]
        ids=ids,
        source=source,
        modality="text",
        skipped=[s for _, s in sorted(skipped, key=lambda x: x[0])],
        warnings=list(read.get("warnings", [])),
    )
    if ex.labels is not None:
        ex.warnings.extend(label_variant_warnings(ex.labels, source))
    return ex


def na_markers(df: pd.DataFrame, column: str) -> dict[int, str]:
    """{row position: marker} of the cells of `column` that `read_table` read as missing because they held one of
    NA_MARKERS (empty for a DataFrame given directly)."""
    return ((df.attrs.get("fmadapt") or {}).get("na_markers") or {}).get(column, {})


def marker_note(value: str, what: str = "text") -> str:
    """Why a cell holding one of NA_MARKERS counts as missing, and how to keep the word."""
    return (f"{value!r} is read as a missing value, as pandas reads it (NA, N/A, NaN, null, None, ...); if it is "
            f"the {what}, write it otherwise (e.g. in lower case for NA or None)")


def _row_numbers(df: pd.DataFrame, source: str) -> Iterator[int]:
    """The number of each DataFrame row in its file: CSV/TSV rows as the parser counts them (header = 1),
    passing over the malformed lines it skipped; other formats from 0."""
    read = df.attrs.get("fmadapt") or {}
    if "first_row" not in read:
        first = 2 if source.endswith((".csv", ".tsv")) else 0
        yield from range(first, first + len(df))
        return
    bad = {n for n, _ in read.get("bad_lines", [])}
    n = read["first_row"]
    for _ in range(len(df)):
        while n in bad:
            n += 1
        yield n
        n += 1


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
