"""Table columns as model inputs beside the text (`features`): which columns, and their encoding into numbers
that a linear head reads next to the text embedding.

Numeric columns: missing values (and values that are no finite number) imputed with the training median (and a
0/1 "was missing" column when training had any), then standardised. Other columns are categories: one 0/1 column
per category seen at least twice in training (the MAX_CATEGORIES commonest); a category never seen, or a missing
value, sets none of them. The encoder is plain JSON (saved in the model directory), numpy and pandas only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError

#: the most categories a column encodes (the rest count as unseen)
MAX_CATEGORIES = 50
#: standardised numbers are clipped to +-this (an absurd value must not overflow float32 into inf and NaN)
MAX_Z = 1e4
#: a column is numeric when at least this share of its non-missing training values read as numbers
NUMERIC_SHARE = 0.95
#: column names `features="auto"` leaves out (identifiers)
ID_NAMES = {"id", "idx", "index", "row", "row_id", "uid", "uuid"}


def feature_columns(df: pd.DataFrame, features: str, exclude: Sequence[str], source: str) -> list[str]:
    """The columns `features` names ("age,department") or, for "auto", every column but the text and label
    ones and identifiers (a column named like one, or a non-numeric column with a distinct value in every row)."""
    cols = [str(c) for c in df.columns]
    if features.strip().lower() != "auto":
        named = [c.strip() for c in features.split(",") if c.strip()]
        missing = [c for c in named if c not in cols]
        if missing:
            raise DataError(f"{source}: feature column(s) {', '.join(map(repr, missing))} not found (--features); "
                            f"columns are {', '.join(map(repr, cols))[:300]}")
        clash = [c for c in named if c in exclude]
        if clash:
            raise DataError(f"{source}: {', '.join(map(repr, clash))} is the text or a label (target) column, "
                            "not a feature")
        return named
    out = []
    for c in cols:
        if c in exclude or c.strip().lower() in ID_NAMES:
            continue
        values = df[c].dropna()
        if len(df) > 1 and values.nunique() == len(df) and not _mostly_numeric(values):
            continue  # an identifier (every row its own value)
        out.append(c)
    if not out:
        raise DataError(f"{source}: --features auto found no column besides the text and the label(s)")
    return out


def _mostly_numeric(values: pd.Series) -> bool:
    if not len(values):
        return False
    parsed = pd.to_numeric(values, errors="coerce")
    return bool(parsed.notna().mean() >= NUMERIC_SHARE)


class TableEncoder:
    """Fitted on the training rows' feature columns; `transform` gives the (n, width) float32 matrix."""

    def __init__(self, columns: list[dict[str, Any]]) -> None:
        self.columns = columns

    @classmethod
    def fit(cls, df: pd.DataFrame) -> TableEncoder:
        specs: list[dict[str, Any]] = []
        for c in df.columns:
            values = df[c]
            present = values.dropna()
            if _mostly_numeric(present):
                x = pd.to_numeric(values, errors="coerce").astype(float).replace([np.inf, -np.inf], np.nan)
                median = float(np.nanmedian(x)) if x.notna().any() else 0.0
                filled = x.fillna(median)
                specs.append({"name": str(c), "kind": "numeric", "median": median, "mean": float(filled.mean()),
                              "std": float(filled.std(ddof=0)) or 1.0, "missing_column": bool(x.isna().any())})
            else:
                counts = present.astype(str).value_counts()
                cats = [str(k) for k, n in counts.items() if n >= 2][:MAX_CATEGORIES]
                specs.append({"name": str(c), "kind": "categorical", "categories": cats})
        return cls(specs)

    @property
    def width(self) -> int:
        return sum((1 + s["missing_column"]) if s["kind"] == "numeric" else len(s["categories"])
                   for s in self.columns)

    def names(self) -> list[str]:
        out: list[str] = []
        for s in self.columns:
            if s["kind"] == "numeric":
                out += [s["name"]] + ([f"{s['name']} missing"] if s["missing_column"] else [])
            else:
                out += [f"{s['name']}={c}" for c in s["categories"]]
        return out

    def transform(self, df: pd.DataFrame, source: str = "data") -> np.ndarray:
        missing = [s["name"] for s in self.columns if s["name"] not in df.columns]
        if missing:
            raise DataError(f"{source}: the model reads feature column(s) {', '.join(map(repr, missing))} beside "
                            "the text; they are missing here")
        parts = []
        for s in self.columns:
            values = df[s["name"]]
            if s["kind"] == "numeric":  # (a value that is no finite number counts as missing)
                x = pd.to_numeric(values, errors="coerce").astype(float).replace([np.inf, -np.inf], np.nan)
                z = ((x.fillna(s["median"]) - s["mean"]) / s["std"]).to_numpy()
                parts.append(np.clip(z, -MAX_Z, MAX_Z)[:, None])
                if s["missing_column"]:
                    parts.append(x.isna().to_numpy(dtype=float)[:, None])
            else:
                text = values.astype(str).where(values.notna(), None)
                parts.append(np.stack([(text == c).to_numpy(dtype=float) for c in s["categories"]], axis=1)
                             if s["categories"] else np.zeros((len(df), 0)))
        return (np.concatenate(parts, axis=1) if parts else np.zeros((len(df), 0))).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"columns": self.columns}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> TableEncoder:
        from ..errors import ArtifactError

        cols = d.get("columns") if isinstance(d, dict) else None
        ok = isinstance(cols, list) and all(
            isinstance(s, dict) and isinstance(s.get("name"), str) and (
                (s.get("kind") == "numeric" and isinstance(s.get("missing_column"), bool)
                 and all(isinstance(s.get(k), (int, float)) for k in ("median", "mean", "std")) and s["std"] > 0)
                or (s.get("kind") == "categorical" and isinstance(s.get("categories"), list)
                    and all(isinstance(c, str) for c in s["categories"]))) for s in cols)
        if not ok or not isinstance(cols, list):
            raise ArtifactError(f"{where}: 'table_features' must list the feature columns and their encoding")
        return cls(list(cols))
