"""Secure aggregation (`secure=True`, `fmadapt federate --secure`): Flower's SecAgg+ protocol, so that the server
learns only the weighted sum of the clients' heads, never one client's.

SecAgg+ exists in Flower 1.42 as a workflow of its legacy API only (`SecAggPlusWorkflow` with a `LegacyContext`
and a `flwr.server.strategy` strategy on the server, `secaggplus_mod` around a NumPyClient on the clients), so this
path has its own ServerApp and ClientApp; the clients train exactly as on the plain path (`client.local_train`).
What it cannot do, by construction: screen or robustly aggregate individual updates (the server never sees one;
SecAgg+ computes a weighted mean, so it is FedAvg only), and ask the clients for feature sums (the features are
standardised with the server's own validation split, as under DP). Parameters are clipped to +-`clip` and
quantised to 2**22 levels before masking: a head with larger weights would be distorted, which the round's
held-out accuracy would show."""

from __future__ import annotations

import time
import zlib
from typing import Any

import numpy as np

from .config import FederatedConfig
from .server import Evaluate, client_settings, require_engine, run_engine, usable_std


def simulate_secure(workdir: str, n_features: int, n_classes: int, fc: FederatedConfig, evaluate: Evaluate,
                    stats: tuple[np.ndarray, np.ndarray], progress: Any = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """As server.simulate, with SecAgg+ between the clients and the server (FedAvg)."""
    require_engine()
    from flwr.client import NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.clientapp import ClientApp
    from flwr.common import ndarrays_to_parameters
    from flwr.server import LegacyContext, ServerApp, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

    from .client import load_client, local_train

    mean, std = np.asarray(stats[0], np.float32), usable_std(np.asarray(stats[1], np.float32)).astype(np.float32)
    settings = client_settings(fc)
    seed = fc.seed

    class Client(NumPyClient):  # type: ignore[misc]
        def __init__(self, i: int) -> None:
            self.i = i

        def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[list[np.ndarray], int, dict]:
            x, y = load_client(workdir, self.i)
            rnd = int(config.get("server-round", 0))
            new, loss, _ = local_train(x, y, parameters, mean, std, settings,
                                       seed=zlib.crc32(f"{seed}:{rnd}:{self.i}".encode()))
            return new, len(y), {"train-loss": loss}

    def client_fn(context: Any) -> Any:
        return Client(int(context.node_config["partition-id"])).to_client()

    client = ClientApp(client_fn=client_fn, mods=[secaggplus_mod])
    rounds: list[dict[str, Any]] = []
    clock = {"t": time.perf_counter()}

    out: dict[str, Any] = {}

    def server_evaluate(rnd: int, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[float, dict]:
        w, b = parameters
        before = out.get("arrays")
        out["arrays"] = (np.asarray(w), np.asarray(b))  # (the global head after round `rnd`)
        scores = evaluate([w, b], mean, std)
        now = time.perf_counter()
        if rnd:
            rounds.append({"round": rnd, "seconds": round(now - clock["t"], 2),
                           **{k: round(float(v), 4) for k, v in scores.items()}})
            if before is not None and all(np.array_equal(a, c) for a, c in zip(before, out["arrays"], strict=True)):
                rounds[-1]["note"] = ("no aggregate: SecAgg+ did not complete this round (too few clients "
                                      "answered); the global head is kept as it was")
            if progress is not None and "accuracy" in scores:
                progress(f"round {rnd}/{fc.rounds} (SecAgg+): held-out accuracy {scores['accuracy']:.4f}")
        clock["t"] = now
        return float(scores.get("loss", 0.0)), dict(scores)

    server = ServerApp()

    @server.main()
    def main(grid: Any, context: Any) -> None:
        init = [np.zeros((n_classes, n_features), np.float32), np.zeros(n_classes, np.float32)]
        strategy = FedAvg(fraction_fit=fc.fraction, fraction_evaluate=0.0, min_fit_clients=fc.required,
                          min_available_clients=fc.clients, initial_parameters=ndarrays_to_parameters(init),
                          evaluate_fn=server_evaluate,
                          on_fit_config_fn=lambda rnd: {"server-round": rnd})
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=fc.rounds), strategy=strategy)
        workflow = DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(
            num_shares=max(2, min(fc.sampled, 3)), reconstruction_threshold=max(2, min(fc.required, 2)),
            clipping_range=fc.secure_clip))
        workflow(grid, legacy)
        out["history"] = legacy.history

    t0 = time.perf_counter()
    cores = run_engine(server, client, fc)
    if "history" not in out or len(rounds) < fc.rounds:
        raise RuntimeError("the secure federation ended before its last round (Flower's log above says why)")
    if all("note" in r for r in rounds):
        raise RuntimeError("secure aggregation completed no round: SecAgg+ needs every sampled client's answer to "
                           "its key exchange (Flower's log above says which step failed)")
    w, b = out["arrays"]
    return w, b, mean, std, {
        "rounds": rounds, "seconds": round(time.perf_counter() - t0, 1), "workers": cores, "start": None,
        "statistics_round": {"from": "the server's validation split (SecAgg+ asks the clients for no statistics)"},
        "bytes": None, "rejected": 0, "failed": 0}  # (SecAgg+'s key exchange is not counted; no update is seen)
