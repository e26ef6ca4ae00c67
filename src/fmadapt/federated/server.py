"""The server side of a federated probe and the run of a federation in Flower's simulation engine.

The server first asks every client for its feature sums (a count, a sum, a sum of squares) and sends the global
mean and standard deviation with every training round, so that all clients train the head on the same
standardised features. Each round, the chosen Flower strategy aggregates the heads the clients send back; before
it does, `Guarded` screens them: an update with NaN/Inf, a wrong shape, or a distance to the global head above
`max_norm_ratio` times the round's median distance is rejected and counted, and a client that failed is counted.
A round with fewer usable updates than `min_clients` keeps the global head as it was, and says so."""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import ConfigError, TrainingDiverged
from .config import FederatedConfig

#: evaluate(arrays, mean, std) -> {"accuracy": ..., "loss": ...} of the global arrays on the server's held-out split
#: (mean, std: the features' standardisation; None when the clients train the top of the backbone)
Evaluate = Callable[[list[np.ndarray], Any, Any], dict[str, float]]


def screen(updates: list[list[np.ndarray] | None], current: list[np.ndarray], max_ratio: float | None
           ) -> tuple[list[int], dict[int, str]]:
    """(indices of the usable updates, {index: why rejected}). None is a client that failed."""
    rejected: dict[int, str] = {}
    dist: dict[int, float] = {}
    for i, u in enumerate(updates):
        if u is None:
            rejected[i] = "failed"
        elif len(u) != len(current) or any(a.shape != c.shape for a, c in zip(u, current, strict=False)):
            rejected[i] = "wrong shape"
        elif not all(np.isfinite(a).all() for a in u):
            rejected[i] = "NaN/Inf"
        else:
            dist[i] = float(np.sqrt(sum(((a.astype(np.float64) - c) ** 2).sum() for a, c in zip(u, current,
                                                                                             strict=True))))
    if max_ratio is not None and len(dist) >= 3:
        median = float(np.median(list(dist.values())))
        for i, d in dist.items():
            if median > 0 and d > max_ratio * median:
                rejected[i] = f"norm {d / median:.1f}x the median"
    return [i for i in range(len(updates)) if i not in rejected], rejected


def head_evaluator(x_va: np.ndarray, y_va: np.ndarray) -> Any:
    """evaluate([w, b], mean, std) -> {"accuracy", "loss"} of a head on the server's held-out features."""

    def evaluate(arrays: list[np.ndarray], mean: Any, std: Any) -> dict[str, float]:
        w, b = arrays
        if not len(y_va):
            return {}
        logits = ((x_va - mean) / std) @ w.T + b
        logits -= logits.max(1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        return {"accuracy": float((logits.argmax(1) == y_va).mean()),
                "loss": float(-logp[np.arange(len(y_va)), y_va].mean())}

    return evaluate


def require_engine() -> None:
    """ConfigError unless Flower and its simulation engine (Ray) are installed (flwr imports without Ray)."""
    try:
        import flwr.simulation  # noqa: F401
        import ray  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"federated fitting needs Flower's simulation engine ({e}); pip install "
                          "'fmadapt[federated]'") from None


def run_engine(server: Any, client: Any, fc: FederatedConfig) -> int:
    """Run a ServerApp and its ClientApp in Flower's simulation engine: one Ray worker per core (at most the
    clients sampled in a round), no dashboard, telemetry and update checks off, Flower's and Ray's logs quiet, and
    Python's `random` (which Flower samples a round's clients with) seeded with `fc.seed` for the run and restored
    after it. Returns the number of workers."""
    from flwr.simulation import run_simulation

    for key, value in (("FLWR_TELEMETRY_ENABLED", "0"), ("FLWR_DISABLE_UPDATE_CHECK", "1"),  # (nothing leaves)
                       ("RAY_DEDUP_LOGS", "0"), ("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")):  # (no GPU is asked for)
        os.environ.setdefault(key, value)
    logging.getLogger("flwr").setLevel(logging.ERROR)  # (its INFO round log, and warnings about settings we chose)
    cores = max(1, min(os.cpu_count() or 1, fc.sampled))
    state = random.getstate()
    random.seed(fc.seed)
    try:
        run_simulation(server, client, num_supernodes=fc.clients, backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": cores, "include_dashboard": False, "logging_level": "ERROR",
                          "log_to_driver": False}})
    finally:
        random.setstate(state)
    return cores


def client_settings(fc: FederatedConfig) -> dict[str, Any]:
    """What every client's local training reads (client.local_train), as sent in each round's configuration."""
    settings: dict[str, Any] = {"lr": fc.lr, "weight-decay": fc.weight_decay, "batch-size": fc.batch_size,
                                "local-epochs": fc.local_epochs, "proximal-mu": 0.0}
    if fc.dp_epsilon is not None:
        settings.update({"dp-epsilon": fc.dp_epsilon, "dp-delta": fc.dp_delta, "dp-clip": fc.dp_clip,
                         "dp-lr": fc.dp_lr, "dp-rounds": fc.rounds})
    return settings


def usable_std(std: np.ndarray) -> np.ndarray:
    """Standard deviations to divide by: a constant feature (std 0; all-MiniLM-L6-v2 has one) is left unscaled."""
    return np.where(std > 1e-6, std, 1.0)


def make_strategy(fc: FederatedConfig, log: list[dict[str, Any]], names: dict[int, int],
                  privacy: dict[int, dict[str, Any]]) -> Any:
    """The Flower strategy of `fc.aggregation`, screening updates before it aggregates (a row per round in `log`;
    `names`: Flower's node id -> the client's number; `privacy`: what DP-SGD has cost each client so far)."""
    from flwr.serverapp import strategy as st

    base: Any = {"fedavg": st.FedAvg, "fedprox": st.FedProx, "fedadam": st.FedAdam,
                 "trimmed-mean": st.FedTrimmedAvg, "median": st.FedMedian, "krum": st.Krum,
                 "multikrum": st.MultiKrum}[fc.aggregation]
    # (deployment: a SuperNode that went away is no longer sampled; the simulation's clients never go away)
    least = fc.required if fc.superlink else None
    kw: dict[str, Any] = {"fraction_train": fc.fraction, "fraction_evaluate": 0.0,
                          "min_train_nodes": least or fc.sampled, "min_available_nodes": least or fc.clients}
    if fc.aggregation == "fedprox":
        kw["proximal_mu"] = fc.proximal_mu
    elif fc.aggregation == "fedadam":
        kw.update(eta=fc.server_lr, eta_l=fc.lr)
    elif fc.aggregation == "trimmed-mean":
        kw["beta"] = fc.trim
    elif fc.aggregation in ("krum", "multikrum"):
        kw["num_malicious_nodes"] = fc.krum_f if fc.krum_f is not None else fc.sampled // 5
        if fc.aggregation == "multikrum":
            kw["num_nodes_to_select"] = max(1, fc.sampled - kw["num_malicious_nodes"])

    class Guarded(base):  # type: ignore[misc, valid-type]
        def configure_train(self, server_round: int, arrays: Any, config: Any, grid: Any) -> Any:
            self._current = arrays.to_numpy_ndarrays()
            messages = list(super().configure_train(server_round, arrays, config, grid))
            nbytes = sum(a.nbytes for a in self._current) + (8 * 2 * len(config["feature-mean"])
                                                              if "feature-mean" in config else 0)
            log.append({"round": server_round, "sampled": len(messages), "bytes_down": nbytes * len(messages),
                        "started": time.perf_counter()})
            return messages

        def aggregate_train(self, server_round: int, replies: Any) -> Any:
            replies = list(replies)
            updates = [None if m.has_error() else m.content["arrays"].to_numpy_ndarrays() for m in replies]
            kept, rejected = screen(updates, self._current, fc.max_norm_ratio)
            row = log[-1]
            row["bytes_up"] = int(sum(sum(a.nbytes for a in u) for u in updates if u is not None))
            row["received"] = len(replies) - sum(1 for u in updates if u is None)
            row["failed"] = sum(1 for why in rejected.values() if why == "failed")
            for m in replies:  # (each reply names its client: failed ones are known from earlier rounds)
                if not m.has_error() and "client" in m.content["metrics"]:
                    names[m.metadata.src_node_id] = int(m.content["metrics"]["client"])
            who = [names.get(m.metadata.src_node_id, m.metadata.src_node_id) for m in replies]
            row["rejected"] = {str(who[i]): why for i, why in rejected.items() if why != "failed"}
            row["failed_clients"] = sorted(who[i] for i, why in rejected.items() if why == "failed")
            row["used"] = len(kept)
            spent = {who[i]: m.content["metrics"] for i, m in enumerate(replies) if updates[i] is not None}
            for c, met in spent.items():  # (a rejected client spent its privacy all the same)
                if "dp-epsilon" in met:
                    privacy[c] = {"epsilon": round(float(met["dp-epsilon"]), 4), "steps": int(met["dp-steps"]),
                                  "noise_multiplier": round(float(met["dp-noise_multiplier"]), 4)}
            if privacy:
                row["epsilon"] = max(p["epsilon"] for p in privacy.values())
            if len(kept) < fc.required:
                row["note"] = (f"{len(kept)} usable update(s), {fc.required} required: the global head is kept "
                               "as it was")
                return None, None
            losses = [float(replies[i].content["metrics"]["train-loss"]) for i in kept]
            losses = [v for v in losses if np.isfinite(v)]  # (a DP client may have drawn only empty batches)
            if losses:
                row["train_loss"] = round(float(np.mean(losses)), 4)
            return super().aggregate_train(server_round, [replies[i] for i in kept])

    return Guarded(**kw)


def wait_for_nodes(grid: Any, fc: FederatedConfig, progress: Callable[[str], None] | None) -> list[int]:
    """The connected nodes once `fc.clients` are (deployment: RuntimeError after `fc.connect_timeout` seconds)."""
    t0, said = time.monotonic(), -1
    while len(nodes := list(grid.get_node_ids())) < fc.clients:
        if fc.superlink is None:  # (the simulation starts them all)
            time.sleep(0.2)
            continue
        if time.monotonic() - t0 > fc.connect_timeout:
            raise RuntimeError(f"{len(nodes)} of {fc.clients} SuperNodes connected to the SuperLink at {fc.superlink} "
                               f"within {fc.connect_timeout:.0f} s: start the others (docs/federated.md), or pass "
                               f"--clients {len(nodes)}")
        if len(nodes) != said and progress is not None:
            progress(f"waiting for SuperNodes: {len(nodes)} of {fc.clients} connected")
        said = len(nodes)
        time.sleep(1.0)
    return nodes


def serve(grid: Any, fc: FederatedConfig, initial: list[np.ndarray], evaluate: Evaluate,
          stats: tuple[np.ndarray, np.ndarray] | None, progress: Callable[[str], None] | None,
          query: dict[str, Any] | None = None, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """The server's side of a federation, inside a ServerApp's main: the statistics query round (`query`: more
    settings it sends every client), then `fc.rounds` rounds of the screened strategy from the global arrays
    `initial` (the probe: [weight (C, D), bias (C,)]). `settings`: what the clients' local training reads, instead
    of the probe's (`client_settings`); then no feature statistics are asked or sent. Returns {"arrays", "mean",
    "std", "statistics", "start", "rounds", "privacy", "clients": the clients' answers to the query}."""
    from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict

    t0 = time.perf_counter()
    rounds: list[dict[str, Any]] = []
    privacy: dict[int, dict[str, Any]] = {}
    out: dict[str, Any] = {"rounds": rounds, "privacy": privacy}
    # the clients' numbers (what a failed client is reported by) and, without DP, their feature sums
    nodes = sorted(wait_for_nodes(grid, fc, progress))
    standardise = settings is None
    asks = [Message(RecordDict({"config": ConfigRecord({"statistics": standardise and stats is None, "client": i,
                                                        **(query or {})})}),
                    dst_node_id=n, message_type=MessageType.QUERY) for i, n in enumerate(nodes)]
    answers = list(grid.send_and_receive(asks, timeout=fc.connect_timeout + 600))
    replies: list[Any] = [m for m in answers if not m.has_error()]
    errors = {str(m.metadata.src_node_id): m.error.reason for m in answers if m.has_error()}
    names = {m.metadata.src_node_id: int(m.content["metrics"]["client"]) for m in replies}
    out["clients"] = [{"node": m.metadata.src_node_id, **dict(m.content["metrics"])} for m in replies]
    mean: Any = None
    std: Any = None
    if not standardise:
        out["statistics"] = {"from": "none: the clients train the top of the backbone on its own activations"}
    elif stats is not None:
        mean, std = np.asarray(stats[0], np.float64), np.asarray(stats[1], np.float64)
        out["statistics"] = {"from": "the server's validation split (no client statistics under DP)"}
    else:
        sums = [m.content["arrays"].to_numpy_ndarrays() for m in replies]
        count = sum(int(m.content["metrics"]["num-examples"]) for m in replies)
        if not sums or count == 0:
            raise RuntimeError("no client answered the statistics round" + "".join(
                f"; node {k}: {v}" for k, v in errors.items()))
        mean = np.sum([s[0] for s in sums], axis=0) / count
        std = np.sqrt(np.maximum(np.sum([s[1] for s in sums], axis=0) / count - mean ** 2, 0.0))
        out["statistics"] = {"clients": len(sums), "examples": count, "seconds": round(time.perf_counter() - t0, 2)}
    if errors:
        out["statistics"]["errors"] = errors
    if standardise:
        std = usable_std(std)
        config = ConfigRecord({**client_settings(fc), "feature-mean": mean.tolist(), "feature-std": std.tolist(),
                               **(query or {})})
    else:
        config = ConfigRecord({**(settings or {}), **(query or {})})
    curve: list[dict[str, Any]] = []

    def on_round(rnd: int, arrays: Any) -> None:
        scores = evaluate(arrays.to_numpy_ndarrays(), mean, std)
        row: dict[str, Any] = rounds[-1] if rounds and rounds[-1]["round"] == rnd else {"round": rnd}
        if "started" in row:
            row["seconds"] = round(time.perf_counter() - row.pop("started"), 2)
        curve.append({"round": rnd, **scores})
        row.update({k: round(float(v), 4) for k, v in scores.items()})
        if progress is not None and rnd and "accuracy" in scores:
            progress(f"round {rnd}/{fc.rounds}: held-out accuracy {scores['accuracy']:.4f}, "
                     f"{row.get('used', 0)} of {row.get('sampled', 0)} updates used")

    strategy = make_strategy(fc, rounds, names, privacy)
    result = strategy.start(grid=grid, initial_arrays=ArrayRecord(initial), num_rounds=fc.rounds, timeout=3600,
                            train_config=config, evaluate_fn=lambda rnd, arrays: on_round(rnd, arrays))
    arrays = result.arrays.to_numpy_ndarrays()
    if not arrays:  # (Flower's result holds arrays once a round has aggregated some)
        why = "; ".join(f"round {r['round']}: {r.get('used', 0)} usable, failed {r.get('failed_clients', [])}, "
                        f"rejected {r.get('rejected', {})}" for r in rounds)
        raise TrainingDiverged(f"no round of the federation had the {fc.required} usable update(s) it needs "
                               f"(--min-clients): {why}")
    out.update(arrays=arrays, mean=mean, std=std, start=curve[0] if curve else None)
    return out


def summary(out: dict[str, Any], fc: FederatedConfig, seconds: float, workers: int | None) -> dict[str, Any]:
    """The federation's history (history.json, the report) from what `serve` returned."""
    rounds, privacy = out["rounds"], out["privacy"]
    history = {"rounds": rounds, "statistics_round": out["statistics"], "start": out["start"],
               "seconds": round(seconds, 1), "workers": workers,
               "bytes": int(sum(r.get("bytes_down", 0) + r.get("bytes_up", 0) for r in rounds)),
               "rejected": int(sum(len(r.get("rejected", {})) for r in rounds)),
               "failed": int(sum(r.get("failed", 0) for r in rounds))}
    if fc.dp_epsilon is not None:
        history["privacy"] = {
            "mechanism": f"DP-SGD on every client (Opacus): per-example gradients clipped to {fc.dp_clip}, Gaussian "
                         f"noise calibrated with the RDP accountant for epsilon {fc.dp_epsilon} at delta {fc.dp_delta} "
                         f"over {fc.rounds} rounds; example-level privacy of each client's data",
            "epsilon_target": fc.dp_epsilon, "delta": fc.dp_delta,
            "epsilon": max((p["epsilon"] for p in privacy.values()), default=None),
            "clients": {str(c): p for c, p in sorted(privacy.items())}}
    return history


def simulate(workdir: str, n_features: int, n_classes: int, fc: FederatedConfig,
             evaluate: Evaluate, progress: Callable[[str], None] | None = None,
             stats: tuple[np.ndarray, np.ndarray] | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Run the federated probe in Flower's simulation engine (one process per core; the clients' data in
    `workdir`). `stats`: the features' mean and standard deviation from data the server holds (with DP: no
    statistics round). Returns (weight (C, D), bias (C,), feature mean, feature std, history)."""
    from .client import make_client_app

    require_engine()
    initial = [np.zeros((n_classes, n_features), np.float32), np.zeros(n_classes, np.float32)]
    out, history = run_apps(make_client_app(workdir, fc.attack_of(), fc.seed), initial, fc, evaluate, progress,
                            stats)
    w, b = out["arrays"]
    return w, b, out["mean"], out["std"], history


def run_apps(client: Any, initial: list[np.ndarray], fc: FederatedConfig, evaluate: Evaluate,
             progress: Callable[[str], None] | None = None, stats: tuple[np.ndarray, np.ndarray] | None = None,
             settings: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """`serve` (from the global arrays `initial`) against the ClientApp `client` in Flower's simulation engine.
    Returns (what `serve` returned, the federation's history)."""
    from flwr.serverapp import Grid, ServerApp

    logging.getLogger("flwr").setLevel(logging.ERROR)  # (its INFO round log, and warnings about settings we chose)
    out: dict[str, Any] = {}
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Any) -> None:
        try:
            out.update(serve(grid, fc, initial, evaluate, stats, progress, settings=settings))
        except TrainingDiverged as e:  # (raised again outside Flower's engine, which would only log it)
            out["error"] = e

    t0 = time.perf_counter()
    cores = run_engine(server, client, fc)
    if "error" in out:
        raise out["error"]
    if "arrays" not in out:
        raise RuntimeError("the federation ended without a model (Flower's log above says why)")
    return out, summary(out, fc, time.perf_counter() - t0, cores)
