"""The one in-memory form of a dataset that flows through fmadapt."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Skipped:
    """An input left out, and why (listed in the run summary and metrics.json)."""

    where: str  #: file path, or "file:row N"
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"where": self.where, "reason": self.reason}


@dataclass
class Examples:
    """Inputs (image paths or texts), their labels (None when unlabeled) and ids for output files."""

    inputs: list[str]
    labels: list[str] | None
    ids: list[str]
    source: str = ""
    modality: str = "image"
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: tables read with `features`: the table's rows of these examples (a pandas DataFrame, same order), whose
    #: feature columns the model reads beside the text; None otherwise
    table: Any = None

    def __len__(self) -> int:
        return len(self.inputs)

    def subset(self, idx: list[int]) -> Examples:
        return Examples(
            inputs=[self.inputs[i] for i in idx],
            labels=None if self.labels is None else [self.labels[i] for i in idx],
            ids=[self.ids[i] for i in idx],
            source=self.source,
            modality=self.modality,
            skipped=list(self.skipped),
            warnings=list(self.warnings),
            table=None if self.table is None else self.table.iloc[idx].reset_index(drop=True),
        )

    def class_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(self.labels or []).items()))


def concat(a: Examples, b: Examples) -> Examples:
    """a's examples then b's (b's skipped inputs and warnings were reported with b)."""
    table = None
    if a.table is not None and b.table is not None:
        import pandas as pd

        table = pd.concat([a.table, b.table], ignore_index=True)
    return Examples(inputs=a.inputs + b.inputs, labels=(a.labels or []) + (b.labels or []), ids=a.ids + b.ids,
                    source=a.source, modality=a.modality, skipped=list(a.skipped), warnings=list(a.warnings),
                    table=table)


def label_indices(classes: Sequence[str], labels: Iterable[str] | None, unknown: int | None = None) -> np.ndarray:
    """The one label -> class index mapping (int64): each label's position in `classes`, the model's class
    names in their fixed order. A label not among them raises KeyError, or maps to `unknown` when given."""
    index = {c: i for i, c in enumerate(classes)}
    if unknown is None:
        return np.asarray([index[lab] for lab in labels or []], dtype=np.int64)
    return np.asarray([index.get(lab, unknown) for lab in labels or []], dtype=np.int64)
