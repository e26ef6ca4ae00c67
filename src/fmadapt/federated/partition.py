"""Splitting the training examples among simulated clients, the partitioners of flwr-datasets written for arrays
(that package reads Hugging Face datasets only): IID, Dirichlet label skew, K classes per client, and by a
column's values. Seeded; every client gets at least one example, or the split is refused."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import DataError


def partition(y: np.ndarray, clients: int, kind: str, param: Any = None, seed: int = 0,
              column: Sequence[Any] | None = None) -> list[np.ndarray]:
    """The sorted example indices of each client. `y`: class indices (n,). `column`: by-column's values (n,)."""
    y = np.asarray(y)
    n = len(y)
    if n < clients:
        raise DataError(f"federated: {n} training examples cannot be split among {clients} clients; use fewer "
                        "--clients")
    rng = np.random.default_rng(seed)
    if kind == "iid":
        parts = np.array_split(rng.permutation(n), clients)
    elif kind == "dirichlet":
        parts = _dirichlet(y, clients, float(param), rng)
    elif kind == "classes":
        parts = _classes(y, clients, int(param), rng)
    elif kind == "by-column":
        parts = _by_column(column, clients, str(param), rng)
    else:
        raise ValueError(f"unknown partition {kind!r}")
    out = [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    empty = [i for i, p in enumerate(out) if len(p) == 0]
    if empty:
        raise DataError(f"federated: partition {kind}{':' + str(param) if param is not None else ''} leaves client(s) "
                        f"{', '.join(map(str, empty[:10]))} without examples; use fewer --clients or a milder skew")
    return out


def _dirichlet(y: np.ndarray, clients: int, alpha: float, rng: np.random.Generator, min_size: int = 2,
               tries: int = 50) -> list[np.ndarray]:
    """Each class's examples shared among the clients by proportions drawn from Dirichlet(alpha) (Hsu et al. 2019,
    flwr-datasets' DirichletPartitioner); drawn again while a client would get fewer than `min_size` examples."""
    classes = np.unique(y)
    need = min(min_size, len(y) // clients)
    parts: list[list[int]] = []
    for _ in range(tries):
        parts = [[] for _ in range(clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(y == c))
            share = rng.dirichlet(np.full(clients, alpha))
            cuts = (np.cumsum(share)[:-1] * len(idx)).astype(int)
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].extend(chunk.tolist())
        if min(len(p) for p in parts) >= need:
            break
    return [np.asarray(p) for p in parts]


def _classes(y: np.ndarray, clients: int, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """About `k` classes per client (pathological non-IID, McMahan et al. 2017): the examples sorted by class are
    cut into clients x k shards of equal size, and each client gets k shards drawn at random."""
    order = np.argsort(y + rng.random(len(y)) * 0.5, kind="stable")  # by class, shuffled within each class
    shards = np.array_split(order, clients * k)
    drawn = rng.permutation(clients * k)
    return [np.concatenate([shards[s] for s in drawn[i * k:(i + 1) * k]]) for i in range(clients)]


def _by_column(column: Sequence[Any] | None, clients: int, name: str, rng: np.random.Generator) -> list[np.ndarray]:
    """Examples with the same value of the column stay together; the values are dealt to the clients, largest
    first, each to the client with the fewest examples so far (so sizes stay close)."""
    if column is None:
        raise DataError(f"federated: partition by-column:{name} needs a table with column {name!r}")
    values = np.asarray([str(v) for v in column])
    uniq, counts = np.unique(values, return_counts=True)
    if len(uniq) < clients:
        raise DataError(f"federated: column {name!r} has {len(uniq)} distinct value(s) for {clients} clients; use "
                        f"--clients {len(uniq)} or fewer")
    order = np.lexsort((rng.random(len(uniq)), -counts))
    parts: list[list[int]] = [[] for _ in range(clients)]
    for u in uniq[order]:
        i = int(np.argmin([len(p) for p in parts]))
        parts[i].extend(np.flatnonzero(values == u).tolist())
    return [np.asarray(p) for p in parts]


def describe(parts: list[np.ndarray], y: np.ndarray, classes: Sequence[str]) -> list[dict[str, Any]]:
    """Per client: its number of examples, its class counts and its label skew (total-variation distance between
    its class distribution and the whole training split's, 0 = the same, 1 = disjoint)."""
    y = np.asarray(y)
    return describe_counts({i: np.bincount(y[p], minlength=len(classes)) for i, p in enumerate(parts)}, classes)


def describe_counts(counts: dict[int, Any], classes: Sequence[str]) -> list[dict[str, Any]]:
    """`describe` from each client's class counts {client: counts}."""
    overall = np.sum([np.asarray(c) for c in counts.values()], axis=0) if counts else np.zeros(len(classes))
    overall = overall / max(1, overall.sum())
    rows = []
    for i, c in counts.items():
        c = np.asarray(c)
        dist = c / max(1, c.sum())
        rows.append({"client": i, "examples": int(c.sum()),
                     "classes": {str(classes[k]): int(n) for k, n in enumerate(c) if n},
                     "label_skew": round(float(0.5 * np.abs(dist - overall).sum()), 3)})
    return rows
