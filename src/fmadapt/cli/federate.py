"""`fmadapt federate`: a fit (the probe, or the top blocks of the backbone and the head, or LoRA adapters in them)
trained by simulated clients that keep their examples (Flower's simulation engine), written as an ordinary model
directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .app import _JSON, _run, app


@app.command()
def federate(
    data: Annotated[str, typer.Argument(
        help="Image folder, folder of sounds, or a CSV/TSV/JSONL/Parquet table of texts, split among the clients.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model directory to write.")],
    clients: Annotated[int, typer.Option("--clients", help="Number of simulated clients.")] = 10,
    rounds: Annotated[int, typer.Option("--rounds", help="Federated rounds.")] = 20,
    partition: Annotated[str, typer.Option(
        "--partition", help="How the training examples are split among the clients: iid | dirichlet:ALPHA (label "
        "skew, smaller = more skewed) | classes:K (K classes per client) | by-column:COL (a table column names "
        "each example's client).")] = "iid",
    aggregation: Annotated[str, typer.Option(
        "--aggregation", help="fedavg | fedprox | fedadam | trimmed-mean | median | krum | multikrum (the last four "
        "resist hostile clients).")] = "fedavg",
    strategy: Annotated[str, typer.Option(
        "--strategy", help="What the clients train: probe (the linear head on frozen features) | finetune (the top "
        "--unfreeze blocks of the backbone and the head) | lora (LoRA adapters in those blocks and the head). "
        "finetune and lora compute each client's activations below the blocks once, warm the head with "
        "--fed head_rounds=10 probe rounds first, and run in the simulation without --dp or --secure so far.")
    ] = "probe",
    unfreeze: Annotated[int, typer.Option(
        "--unfreeze", help="finetune, lora: how many top blocks of the backbone the clients train (-1: all).")] = 2,
    local_epochs: Annotated[int, typer.Option("--local-epochs", help="Epochs each client trains per round.")] = 2,
    fraction: Annotated[float, typer.Option("--fraction", help="Fraction of the clients sampled per round.")] = 1.0,
    min_clients: Annotated[int | None, typer.Option(
        "--min-clients", help="Usable updates a round needs (default: all sampled clients but one); fewer and "
        "the round keeps the global model as it was.")] = None,
    dp: Annotated[str | None, typer.Option(
        "--dp", help="Differential privacy: epsilon=E[,delta=1e-5,clip=1.0,lr=0.03]. DP-SGD on every client (Opacus: "
        "per-example clipping, noise calibrated so that each client spends at most E over all rounds); the epsilon "
        "spent is reported per client.")] = None,
    secure: Annotated[bool, typer.Option(
        "--secure", help="Secure aggregation (Flower's SecAgg+): the server learns only the sum of the clients' "
        "updates. FedAvg only (robust aggregation and the update screen need each update).")] = False,
    fed: Annotated[list[str] | None, typer.Option(
        "--fed", help="Any other federation option as KEY=VALUE (lr, weight_decay, batch_size, proximal_mu, "
        "server_lr, trim, krum_f, max_norm_ratio, seed; attacks=KIND:CLIENT,... simulates hostile clients); "
        "repeatable.")] = None,
    superlink: Annotated[str | None, typer.Option(
        "--superlink", help="Run on Flower's deployment engine instead of the simulation: the SuperLink's HOST:PORT "
        "(e.g. 127.0.0.1:8000). The clients are SuperNodes started apart, each with its own data (--node-config "
        "'data=\"PATH\"'); DATA is then the server's own held-out data; --clients is how many SuperNodes to wait "
        "for. Run this on the SuperLink's machine (docs/federated.md).")] = None,
    text: Annotated[str | None, typer.Option("--text", help="Text column (tables).")] = None,
    label: Annotated[str | None, typer.Option("--label", help="Label column (tables).")] = None,
    val: Annotated[str | None, typer.Option("--val", help="Separate validation data (held by the server).")] = None,
    backbone: Annotated[str | None, typer.Option("--backbone", help="Backbone name or directory.")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Any fit option as KEY=VALUE (as `fmadapt fit --set`); repeatable.")] = None,
    report: Annotated[str, typer.Option("--report", help="full | basic | off (as `fmadapt fit`).")] = "full",
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Train on DATA split among simulated clients that never share their examples (or, with --superlink, on
    SuperNodes that hold their own data): each round the clients train the trainable part on their own data and
    send only it; the server aggregates it with a Flower strategy, rejecting broken or outsized updates, and
    scores the global model on the validation split it holds. The model directory is an ordinary one (predict,
    evaluate, export, serve) whose report adds the federation."""

    def go() -> None:
        from ..errors import ConfigError
        from ..federated.config import FederatedConfig, assignments
        from .fit import fit

        names = {"probe": "federated", "finetune": "federated-finetune", "lora": "federated-lora"}
        if strategy not in names:
            raise ConfigError(f"--strategy {strategy}: federated fitting trains probe, finetune or lora")
        opts = {"clients": clients, "rounds": rounds, "partition": partition, "aggregation": aggregation,
                "local_epochs": local_epochs, "fraction": fraction, "min_clients": min_clients, "secure": secure,
                "superlink": superlink, "unfreeze": unfreeze}
        opts.update(assignments(fed or []))
        if dp is not None:
            keys = {"epsilon": "dp_epsilon", "delta": "dp_delta", "clip": "dp_clip", "lr": "dp_lr"}
            items = [item.partition("=") for item in dp.split(",")]
            if any(not sep or key.strip() not in keys for key, sep, _ in items):
                raise ConfigError(f"--dp {dp!r}: expected epsilon=E[,delta=D,clip=C,lr=L], e.g. --dp epsilon=8")
            opts.update(assignments([f"{keys[key.strip()]}={value}" for key, _, value in items], "--dp"))
            if "dp_epsilon" not in opts:
                raise ConfigError(f"--dp {dp!r}: give epsilon, e.g. --dp epsilon=8,delta=1e-5")
        fc = FederatedConfig.from_dict(opts)  # checked before any data is read
        if strategy != "probe":
            fc.check_top(f"--strategy {strategy}")
        if superlink is not None and val is not None:
            raise ConfigError("--val with --superlink: DATA is the server's held-out data already (the clients' "
                              "data stays on their SuperNodes)")
        fit(data=data, out=out, text=text, label=[label] if label else None, val=data if superlink else val,
            set_=set_, report=report,
            as_json=as_json, strategy=names[strategy], backbone=backbone, extra={"federated": fc.to_dict()})

    _run(go)

