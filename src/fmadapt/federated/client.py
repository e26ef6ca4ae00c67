"""The client side of a federated probe: a Flower ClientApp over one client's frozen features (computed once, in
the process that started the federation, and written to `client_<i>.npz` in the federation's work folder).

Each training message carries the global head (weights (C, D), bias (C,)) and the features' global mean and
standard deviation; the client trains the head for `local-epochs` with SGD on its own standardised features and
sends the head back, with its number of examples. Nothing else leaves the client. Runs inside Flower's simulation
workers: it imports numpy and torch only."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np


def client_file(workdir: str | Path, i: int) -> Path:
    return Path(workdir) / f"client_{i}.npz"


def write_clients(workdir: str | Path, x: np.ndarray, y: np.ndarray, parts: list[np.ndarray]) -> None:
    """One file per client: its features (float32) and class indices (never pickled objects)."""
    for i, idx in enumerate(parts):
        np.savez(client_file(workdir, i), x=np.asarray(x[idx], dtype=np.float32), y=np.asarray(y[idx], np.int64))


def load_client(workdir: str | Path, i: int) -> tuple[np.ndarray, np.ndarray]:
    with np.load(client_file(workdir, i), allow_pickle=False) as f:
        return f["x"], f["y"]


def local_train(x: np.ndarray, y: np.ndarray, weights: list[np.ndarray], mu: np.ndarray, sd: np.ndarray,
                cfg: dict[str, Any], seed: int) -> tuple[list[np.ndarray], float]:
    """The head (weight (C, D), bias (C,)) after `local-epochs` of SGD (momentum 0.9, weight decay) on this
    client's standardised features, with FedProx's proximal term when `proximal-mu` > 0; and the mean loss."""
    import torch
    from torch import nn

    torch.set_num_threads(1)  # (the simulation runs one client per core)
    gen = torch.Generator().manual_seed(seed)
    z = torch.as_tensor((x - mu) / sd, dtype=torch.float32)
    t = torch.as_tensor(y, dtype=torch.int64)
    head = nn.Linear(z.shape[1], weights[0].shape[0])
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(weights[0]))
        head.bias.copy_(torch.as_tensor(weights[1]))
    start = [p.detach().clone() for p in head.parameters()]
    opt = torch.optim.SGD(head.parameters(), lr=float(cfg["lr"]), momentum=0.9,
                          weight_decay=float(cfg["weight-decay"]))
    prox = float(cfg.get("proximal-mu", 0.0))
    batch = int(cfg["batch-size"])
    losses = []
    for _ in range(int(cfg["local-epochs"])):
        order = torch.randperm(len(t), generator=gen)
        for s in range(0, len(t), batch):
            b = order[s:s + batch]
            loss = nn.functional.cross_entropy(head(z[b]), t[b])
            losses.append(float(loss.detach()))
            if prox > 0:
                loss = loss + prox / 2 * sum(((p - p0) ** 2).sum() for p, p0 in zip(head.parameters(), start,
                                                                                     strict=True))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return [head.weight.detach().numpy().copy(), head.bias.detach().numpy().copy()], float(np.mean(losses))


def attack(kind: str, new: list[np.ndarray], old: list[np.ndarray]) -> list[np.ndarray]:
    """What a simulated hostile or broken client sends instead of its update (benchmarks and tests)."""
    if kind == "sign-flip":  # the update reversed and enlarged (Fang et al. 2020's sign-flipping client)
        return [o - 4.0 * (n - o) for n, o in zip(new, old, strict=True)]
    if kind == "scale":  # the update scaled up (a model-replacement attack's boosting)
        return [o + 20.0 * (n - o) for n, o in zip(new, old, strict=True)]
    if kind == "nan":
        return [np.full_like(n, np.nan) for n in new]
    if kind == "wrong-shape":
        return [n[..., :-1] for n in new]
    if kind == "crash":
        raise RuntimeError("simulated client failure (attack 'crash')")
    return new


def make_client_app(workdir: str, attacks: dict[int, str], seed: int) -> Any:
    """The ClientApp of the federation whose clients' data are in `workdir`."""
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.query()
    def statistics(msg: Any, context: Context) -> Message:
        """The client's feature sums, for the global standardisation (a count, a sum and a sum of squares)."""
        i = int(context.node_config["partition-id"])
        x, _ = load_client(workdir, i)
        x64 = x.astype(np.float64)
        return Message(RecordDict({"arrays": ArrayRecord([x64.sum(0), (x64 ** 2).sum(0)]),
                                   "metrics": MetricRecord({"num-examples": len(x), "client": i})}), reply_to=msg)

    @app.train()
    def train(msg: Any, context: Context) -> Message:
        i = int(context.node_config["partition-id"])
        x, y = load_client(workdir, i)
        cfg = msg.content["config"]
        old = msg.content["arrays"].to_numpy_ndarrays()
        mu, sd = np.asarray(cfg["feature-mean"], np.float32), np.asarray(cfg["feature-std"], np.float32)
        rnd = int(cfg["server-round"])
        new, loss = local_train(x, y, old, mu, sd, dict(cfg), seed=zlib.crc32(f"{seed}:{rnd}:{i}".encode()))
        new = attack(attacks.get(i, ""), new, old)
        return Message(RecordDict({"arrays": ArrayRecord(new),
                                   "metrics": MetricRecord({"num-examples": len(y), "train-loss": loss})}),
                       reply_to=msg)

    return app
