"""The client side of a federated probe: a Flower ClientApp over one client's frozen features (computed once, in
the process that started the federation, and written to `client_<i>.npz` in the federation's work folder).

Each training message carries the global head (weights (C, D), bias (C,)) and the features' global mean and
standard deviation; the client trains the head for `local-epochs` with SGD on its own standardised features and
sends the head back, with its number of examples. Nothing else leaves the client. Runs inside Flower's simulation
workers: it imports numpy and torch only."""

from __future__ import annotations

import functools
import warnings
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
                cfg: dict[str, Any], seed: int, steps_done: int = 0
                ) -> tuple[list[np.ndarray], float, dict[str, float] | None]:
    """The head (weight (C, D), bias (C,)) after `local-epochs` of SGD (momentum 0.9, weight decay) on this
    client's standardised features, with FedProx's proximal term when `proximal-mu` > 0; the mean loss; and, with
    `dp-epsilon` (DP-SGD, `_dp_sgd`), what this client's privacy has cost so far."""
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
    if cfg.get("dp-epsilon") is not None:
        mean_loss, privacy = _dp_sgd(head, z, t, cfg, gen, steps_done)
        return [head.weight.detach().numpy().copy(), head.bias.detach().numpy().copy()], mean_loss, privacy
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
    return [head.weight.detach().numpy().copy(), head.bias.detach().numpy().copy()], float(np.mean(losses)), None


def _dp_sgd(head: Any, z: Any, t: Any, cfg: dict[str, Any], gen: Any, steps_done: int
            ) -> tuple[float, dict[str, float]]:
    """DP-SGD with Opacus: Poisson-sampled batches (expected size `batch-size`), each example's gradient clipped to
    `dp-clip`, Gaussian noise whose multiplier is calibrated (RDP accountant) so that this client's steps over all
    `dp-rounds` rounds spend `dp-epsilon` at `dp-delta`. Returns the mean loss and {epsilon spent so far, delta,
    noise multiplier, steps so far}."""
    import torch
    from opacus import PrivacyEngine
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    # (Opacus warns that its noise comes from torch's generator, not a cryptographic one: secure_mode needs
    # torchcsprng, see docs/federated.md; and that a larger RDP order could tighten epsilon, which only overstates it)
    warnings.filterwarnings("ignore", message="Secure RNG turned off")
    warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
    warnings.filterwarnings("ignore", message="Full backward hook is firing")  # (Opacus's hooks; inputs need none)
    eps, delta, clip = float(cfg["dp-epsilon"]), float(cfg["dp-delta"]), float(cfg["dp-clip"])
    batch = min(int(cfg["batch-size"]), len(t))
    loader = DataLoader(TensorDataset(z, t), batch_size=batch, generator=gen)
    opt = torch.optim.SGD(head.parameters(), lr=float(cfg["dp-lr"]), momentum=0.9,
                          weight_decay=float(cfg["weight-decay"]))
    rate = batch / len(t)
    per_round = int(cfg["local-epochs"]) * len(loader)  # (Opacus's Poisson loader keeps the number of batches)
    sigma = _noise_multiplier(eps, delta, rate, per_round * int(cfg["dp-rounds"]))
    engine = PrivacyEngine(accountant="rdp")
    model, opt, loader = engine.make_private(module=head, optimizer=opt, data_loader=loader, noise_multiplier=sigma,
                                             max_grad_norm=clip, poisson_sampling=True, noise_generator=gen)
    losses, steps = [], 0
    for _ in range(int(cfg["local-epochs"])):
        for xb, yb in loader:
            steps += 1  # (an empty Poisson batch is a step too: the accountant counts every draw)
            if not len(yb):
                continue
            loss = nn.functional.cross_entropy(model(xb), yb)
            losses.append(float(loss.detach()))
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.remove_hooks()
    spent = _epsilon(sigma, rate, steps_done + steps, delta)
    return float(np.mean(losses)) if losses else float("nan"), {
        "epsilon": spent, "delta": delta, "noise_multiplier": float(sigma), "steps": float(steps_done + steps)}


@functools.cache
def _noise_multiplier(epsilon: float, delta: float, rate: float, steps: int) -> float:
    """The Gaussian noise multiplier at which `steps` steps at sampling rate `rate` spend `epsilon` at `delta` (RDP
    accountant). (A binary search of a few tenths of a second: the same client asks again every round.)"""
    from opacus.accountants.utils import get_noise_multiplier

    return float(get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=rate, steps=steps,
                                      accountant="rdp"))


@functools.cache
def _epsilon(sigma: float, rate: float, steps: int, delta: float) -> float:
    """What `steps` steps of DP-SGD at noise `sigma` and sampling rate `rate` spend at `delta` (RDP accountant)."""
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = [(sigma, rate, steps)]
    return float(accountant.get_epsilon(delta))


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


def statistics_reply(msg: Any, x: np.ndarray, i: int, metrics: dict[str, Any] | None = None) -> Any:
    """A client's answer to the statistics query: its number and, unless the server says otherwise (under DP), its
    feature sums for the global standardisation (a count, a sum and a sum of squares); `metrics`: more to say."""
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

    record = {"client": i, "num-examples": len(x), **(metrics or {})}
    if not msg.content["config"]["statistics"]:
        return Message(RecordDict({"metrics": MetricRecord(record)}), reply_to=msg)
    x64 = x.astype(np.float64)
    return Message(RecordDict({"arrays": ArrayRecord([x64.sum(0), (x64 ** 2).sum(0)]),
                               "metrics": MetricRecord(record)}), reply_to=msg)


def train_reply(msg: Any, context: Any, x: np.ndarray, y: np.ndarray, i: int, seed: int, kind: str = "") -> Any:
    """A client's answer to a training round: the head trained on its own examples (`kind`: a simulated attack)."""
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

    cfg = msg.content["config"]
    old = msg.content["arrays"].to_numpy_ndarrays()
    mu, sd = np.asarray(cfg["feature-mean"], np.float32), np.asarray(cfg["feature-std"], np.float32)
    rnd = int(cfg["server-round"])
    # DP-SGD steps this client has already taken (the node's state lives as long as the federation)
    done: Any = context.state["dp"]["steps"] if "dp" in context.state else 0
    new, loss, privacy = local_train(x, y, old, mu, sd, dict(cfg), seed=zlib.crc32(f"{seed}:{rnd}:{i}".encode()),
                                     steps_done=int(done))
    if privacy is not None:
        context.state["dp"] = MetricRecord({"steps": int(privacy["steps"])})
    new = attack(kind, new, old)
    metrics: dict[str, Any] = {"num-examples": len(y), "train-loss": loss, "client": i}
    if privacy is not None:
        metrics.update({f"dp-{k}": float(v) for k, v in privacy.items()})
    return Message(RecordDict({"arrays": ArrayRecord(new), "metrics": MetricRecord(metrics)}), reply_to=msg)


def make_client_app(workdir: str, attacks: dict[int, str], seed: int) -> Any:
    """The ClientApp of the simulated federation whose clients' data are in `workdir`."""
    from flwr.app import Context, Message
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.query()
    def statistics(msg: Any, context: Context) -> Message:
        i = int(context.node_config["partition-id"])
        return statistics_reply(msg, load_client(workdir, i)[0], i)

    @app.train()
    def train(msg: Any, context: Context) -> Message:
        i = int(context.node_config["partition-id"])
        x, y = load_client(workdir, i)
        return train_reply(msg, context, x, y, i, seed, attacks.get(i, ""))

    return app
