"""Reading a user's data for a modality: labeled data for fitting and evaluation, inputs for prediction.
Shared by the fit pipeline (fitting.py) and the fitted model (predictor.py); no training code."""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING, cast

import pandas as pd

from ..errors import DataError
from .examples import Examples

if TYPE_CHECKING:
    from ..config import FitConfig

DataLike = str | os.PathLike[str] | pd.DataFrame | list[str]

#: what each modality's estimator is called in messages, and its task name in config.json
ESTIMATORS = {"image": "ImageClassifier", "text": "TextClassifier", "audio": "AudioClassifier"}
TASKS = {"image": "image-classification", "text": "text-classification", "audio": "audio-classification"}


def read_labeled(modality: str, data: DataLike, cfg: FitConfig, *, fitting: bool
                 ) -> tuple[dict[str, Examples], dict[str, str]]:
    """({"train": ..., optionally "val"/"test": ...}, the columns inferred from a table) with unreadable inputs
    already skipped. While `fitting`, a table must have the configured (or an inferable) text and label
    columns; afterwards (evaluation) columns named otherwise are matched when unambiguous, with a warning."""
    if modality in ("image", "audio"):  # a folder of class folders, or a table listing the files
        from .filetable import file_examples, is_table_file
        from .images import scan_image_folder

        if isinstance(data, list):
            raise DataError(f"{ESTIMATORS[modality]} reads a folder (root/<class>/<files> or "
                            "root/{train,val,test}/<class>/) or a table with a path and a label column")
        if not is_table_file(data) and cfg.task != "classification":
            kind = "sound" if modality == "audio" else "image"
            raise DataError(f"{data}: a folder of class folders holds one class per {kind}; task {cfg.task} reads "
                            f"a table listing the files, with a path column and a label column"
                            + (" (labels joined by " + repr(cfg.label_sep) + ")" if cfg.task == "multilabel"
                               else " (numbers)"))
        splits = ({"train": file_examples(data, cfg, modality, need_label=True)} if is_table_file(data)
                  else scan_image_folder(data, modality).splits)  # type: ignore[arg-type]
        return {name: _readable(ex) for name, ex in splits.items()}, {}
    if isinstance(data, list):
        raise DataError("TextClassifier.fit needs labels: pass a table (path or DataFrame)")
    ex, text, label = read_text_table(data, cfg, need_label=True, strict=fitting)
    return {"train": ex}, {"text_col": text, "label_col": str(label)}


def read_unlabeled(modality: str, data: DataLike, cfg: FitConfig) -> Examples:
    """Inputs to predict on (labels ignored), unreadable ones listed in `skipped`; a table's text column
    named otherwise than in `cfg` is matched when unambiguous, with a warning."""
    if modality in ("image", "audio"):  # a folder, one file, a list of paths, or a table listing the files
        from .filetable import file_examples, is_table_file
        from .images import unlabeled_images

        if isinstance(data, list):
            files = [str(f) for f in cast("list[str]", data)]
            ex = Examples(inputs=files, labels=None, ids=list(files), source="<list>", modality=modality)
        elif is_table_file(data):
            ex = file_examples(data, cfg, modality, need_label=False)
        else:
            ex = unlabeled_images(data, modality)  # type: ignore[arg-type]
        return _readable(ex)
    if isinstance(data, list):
        return Examples(inputs=[str(t) for t in data], labels=None, ids=[str(i) for i in range(len(data))],
                        source="<list>", modality="text")
    if isinstance(data, (str, os.PathLike)) and str(data).lower().endswith(".txt"):  # one text per line
        lines = text_lines(data, cfg.encoding)
        kept = [i for i, t in enumerate(lines) if t.strip()]
        ex = Examples(inputs=[lines[i] for i in kept], labels=None, ids=[f"line {i + 1}" for i in kept],
                      source=str(data), modality="text")
        if len(kept) < len(lines):
            ex.warnings.append(f"{data}: {len(lines) - len(kept)} empty line(s) left out")
        return ex
    return read_text_table(data, cfg, need_label=False, strict=False)[0]


def text_lines(path: str | os.PathLike[str], encoding: str = "auto") -> list[str]:
    """The lines of a plain-text file, one text per line (UTF-8, a byte-order mark dropped; `encoding` other than
    "auto" as given). A file that is not valid UTF-8 under "auto" is a DataError that says what to pass."""
    enc = "utf-8-sig" if encoding.strip().lower() in ("auto", "utf-8", "utf8") else encoding
    try:
        with open(path, encoding=enc, newline=None) as f:
            return [line.rstrip("\n") for line in f]
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid {enc} text (byte {e.start}: {e.reason}); pass its encoding with "
                        "--encoding, e.g. --encoding gb18030") from None
    except LookupError as e:
        raise DataError(f"{path}: unknown encoding {encoding!r} ({e})") from None


def _readable(ex: Examples) -> Examples:
    """Image or sound examples without the files that cannot be decoded (listed in `skipped`)."""
    if ex.modality == "audio":
        from .audio import drop_unreadable_audio

        return drop_unreadable_audio(ex)
    from .images import drop_unreadable

    return drop_unreadable(ex)


def read_text_table(data: str | os.PathLike[str] | pd.DataFrame, cfg: FitConfig, need_label: bool, strict: bool
                    ) -> tuple[Examples, str, str | None]:
    """(examples, text column, label column) of a table. Unless `strict`, new data for a trained model may name
    its columns differently (SST-2's test file says "content" where training said "sentence"): an unambiguous
    match is accepted and said (a warning, and in the examples' warnings)."""
    from ..tasks.multilabel import canonical, joined_column, label_columns
    from .tables import examples_from_table, infer_columns, read_table

    df, source = read_table(data, encoding=cfg.encoding, header=cfg.header)
    multilabel = cfg.task == "multilabel" and need_label
    columns = label_columns(cfg.label_col) if multilabel else None  # several 0/1 columns, one per label
    note = None
    try:
        text, label = infer_columns(df, cfg.text_col, None if columns or not need_label else cfg.label_col, source,
                                    need_label=need_label and not columns)
    except DataError as first:
        if strict or columns:
            raise
        try:
            text, label = infer_columns(df, None, None, source, need_label=need_label)
        except DataError:
            raise first from None
        note = (f"{source}: columns {cfg.text_col!r}/{cfg.label_col!r} of training not found; "
                f"using {text!r}" + (f"/{label!r}" if need_label else ""))
        warnings.warn(note, stacklevel=4)
    table = df  # (the user's columns, without the joined label column below)
    if columns:
        label = ",".join(columns)
        df = df.assign(**{label: joined_column(df, columns, cfg.label_sep, source)})
    ex = examples_from_table(df, source, text, label)
    if cfg.features:  # (the fit chooses the feature columns; prediction reads those the model knows)
        ex.table = table.iloc[[int(i) for i in ex.ids]].reset_index(drop=True)
    if multilabel:
        assert ex.labels is not None
        ex.labels, read = canonical(ex.labels, cfg.label_sep, source)
        ex.warnings.extend(read)
    elif cfg.task == "regression" and need_label:
        from ..tasks.regression import canonical as numeric

        assert ex.labels is not None
        ex.labels = numeric(ex.labels, ex.ids, source)
    if cfg.header and label and not columns and ex.labels and not isinstance(data, pd.DataFrame) \
            and label in set(ex.labels):  # (a header-less file: its first example became the column names)
        as_data = (f"{source}: the first row looks like data, not column names (its {label!r} is also a label of "
                   f"other rows), so it was read as the header and left out; if the file has no header row, pass "
                   "--no-header (Python: header=False)")
        warnings.warn(as_data, stacklevel=4)
        ex.warnings.append(as_data)
    if note:
        ex.warnings.append(note)
    return ex, text, label
