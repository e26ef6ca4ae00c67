"""The inputs of an exported model beside tokens, pixels and samples, computed as fmadapt computes them, with numpy
alone: the table columns' encoding (table.json) and `auto`'s n-gram TF-IDF features (ngram.json). `fmadapt export`
copies this file beside predict.py."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np


class TableColumns:
    """The encoding of the table columns a model reads beside the text (table.json, fmadapt's TableEncoder): a
    number imputed with the training median where missing (then a 0/1 "was missing" column if training had any)
    and standardised; a category one 0/1 column per known value (unseen or missing: none)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.columns: list[dict[str, Any]] = json.loads(Path(path).read_text(encoding="utf-8"))["columns"]

    def encode(self, table: Any, n: int) -> np.ndarray:
        """(n, width) float32 of `table`: a DataFrame, a list of n dicts, or a dict of columns of n values."""
        names = [c["name"] for c in self.columns]
        if table is None:
            raise ValueError(f"this model reads table columns beside the text ({', '.join(names)}): pass the "
                             "inputs' rows as table=")
        if hasattr(table, "to_dict"):  # (a pandas DataFrame, without importing pandas)
            table = table.to_dict("list")
        cols = {k: [r.get(k) for r in table] for k in names} if isinstance(table, list) else dict(table)
        missing = [k for k in names if k not in cols]
        if missing or any(len(cols[k]) != n for k in names):
            raise ValueError(f"table= needs the column(s) {', '.join(map(repr, missing or names))} with one value "
                             f"per input ({n})")
        parts: list[np.ndarray] = []
        for c in self.columns:
            values = cols[c["name"]]
            if c["kind"] == "numeric":
                x = np.asarray([_number(v) for v in values], dtype=np.float64)
                gone = np.isnan(x)
                z = (np.where(gone, c["median"], x) - c["mean"]) / c["std"]
                parts.append(np.clip(z, -1e4, 1e4)[:, None])  # (as fmadapt's encoder: MAX_Z)
                if c["missing_column"]:
                    parts.append(gone.astype(np.float64)[:, None])
            else:
                text = [None if _missing(v) else str(v) for v in values]
                parts.append(np.asarray([[t == k for k in c["categories"]] for t in text], dtype=np.float64
                                        ).reshape(n, len(c["categories"])))
        return (np.concatenate(parts, axis=1) if parts else np.zeros((n, 0))).astype(np.float32)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or type(v).__name__ in ("NAType", "NaTType")


def _number(v: Any) -> float:
    """A value as pandas' to_numeric(errors="coerce") reads it, NaN for missing values, non-numbers and infinities
    (as fmadapt's encoder)."""
    if _missing(v):
        return math.nan
    try:
        x = float(v.strip() if isinstance(v, str) else v)
    except (TypeError, ValueError, OverflowError):
        return math.nan
    return x if math.isfinite(x) else math.nan


class NgramFeatures:
    """The n-gram TF-IDF features of `auto`'s text model, computed as scikit-learn's TfidfVectorizer does (its
    analyzers `char_wb`, `char` and `word`; lower-casing, sublinear tf, idf, l2 norm per vectorizer), from
    ngram.json: one entry per vectorizer, its terms in column order and their idf, at a column offset."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        spec = json.loads(Path(path).read_text(encoding="utf-8"))
        self.vectorizers = []
        for v in spec["vectorizers"]:
            terms = {t: v["offset"] + i for i, t in enumerate(v["terms"])}
            self.vectorizers.append((v, terms, np.asarray(v["idf"], dtype=np.float64),
                                     re.compile(v.get("token_pattern") or r"(?u)\b\w\w+\b")))
        self.pad = int(spec["pad_index"])  # (a column of zero weights: padding)

    @staticmethod
    def grams(v: dict[str, Any], text: str, token: re.Pattern[str]) -> list[str]:
        """The n-grams of one text as the vectorizer `v` cuts them (scikit-learn's `_char_wb_ngrams`,
        `_char_ngrams` and `_word_ngrams`, whitespace runs made one space first for characters)."""
        low, high = (int(n) for n in v["ngram_range"])
        text = text.lower() if v.get("lowercase", True) else text
        out: list[str] = []
        if v["analyzer"] == "word":
            words = token.findall(text)
            out += words if low == 1 else []
            for n in range(max(low, 2), min(high, len(words)) + 1):
                out += [" ".join(words[i:i + n]) for i in range(len(words) - n + 1)]
            return out
        text = re.sub(r"\s\s+", " ", text)
        if v["analyzer"] == "char":
            for n in range(low, min(high, len(text)) + 1):
                out += [text[i:i + n] for i in range(len(text) - n + 1)]
            return out
        for w in text.split():  # char_wb: within words padded by a space on each side
            w = f" {w} "
            for n in range(low, high + 1):
                out += [w[i:i + n] for i in range(max(1, len(w) - n + 1))]
                if len(w) <= n:  # (a word shorter than n is counted once)
                    break
        return out

    def rows(self, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(columns, values) of each text's TF-IDF features, vectorizers side by side."""
        out = []
        for text in texts:
            cols: list[int] = []
            vals: list[float] = []
            for v, terms, idf, token in self.vectorizers:
                counts: dict[int, int] = {}
                for g in self.grams(v, str(text), token):
                    j = terms.get(g)
                    if j is not None:
                        counts[j] = counts.get(j, 0) + 1
                if not counts:
                    continue
                idx = list(counts)
                tf = np.asarray([counts[j] for j in idx], dtype=np.float64)
                x = (1.0 + np.log(tf) if v.get("sublinear_tf") else tf) * idf[np.asarray(idx) - v["offset"]]
                norm = v.get("norm", "l2")
                scale = math.sqrt(float(x @ x)) if norm == "l2" else float(np.abs(x).sum()) if norm == "l1" else 1.0
                cols += idx
                vals += list(x / scale) if scale > 0 else list(x)
            out.append((np.asarray(cols, dtype=np.int64), np.asarray(vals, dtype=np.float32)))
        return out

    @staticmethod
    def feeds(rows: list[tuple[np.ndarray, np.ndarray]], pad: int) -> dict[str, np.ndarray]:
        """(B, K) int64 `ngram_index` and float32 `ngram_value`, rows padded with the zero column `pad`."""
        k = max([1] + [len(c) for c, _ in rows])
        index = np.full((len(rows), k), pad, dtype=np.int64)
        value = np.zeros((len(rows), k), dtype=np.float32)
        for i, (c, x) in enumerate(rows):
            index[i, :len(c)], value[i, :len(c)] = c, x
        return {"ngram_index": index, "ngram_value": value}
