"""Federated fitting on Flower's deployment engine: the server and every client are separate processes that talk
over the network (a SuperLink, one SuperNode per data owner), started apart by Flower's own commands
(docs/federated.md). `fmadapt federate SERVER_DATA --superlink HOST:PORT` submits a Flower App (written to a temporary
folder: `server` and `client` below) to the SuperLink with `flwr run`, and waits for it.

- Each SuperNode reads its own data (`--node-config 'data="PATH"'`: a folder or table as for `fmadapt fit`), builds
  the backbone the server names (refusing one whose checksum differs), and computes its features once (the feature
  cache of its machine); its examples never leave it, only the head does (client.train_reply).
- The ServerApp runs in a process the SuperLink starts, on the SuperLink's machine: it reads the server's
  validation features from the work folder `fmadapt federate` wrote there (so both run on that machine), runs the
  same screened rounds as the simulation (server.serve), and writes the head and the history back.
- A ClientApp that dies mid-round is answered by its SuperNode with an error, and a SuperNode that stops
  answering by the SuperLink once its heartbeats stop (about a minute): either way the round goes on with the
  updates it has (`min_clients`) and the client is counted as failed, and SuperNodes that left are no longer
  sampled."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from ..errors import ConfigError
from .client import statistics_reply, train_reply
from .config import FederatedConfig

PACKAGE = "fmadapt_federation"
PYPROJECT = """[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "fmadapt-federation"
version = "1.0.0"
description = "fmadapt's federated probe (written by fmadapt federate --superlink)"
dependencies = []  # fmadapt and flwr are installed where the SuperLink and the SuperNodes run

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "fmadapt"

[tool.flwr.app.components]
serverapp = "fmadapt_federation.apps:server"
clientapp = "fmadapt_federation.apps:client"

[tool.flwr.app.config]
workdir = ""
"""

client = ClientApp()
server = ServerApp()


# -- the client: a SuperNode's own data -----------------------------------------------------------
def _node_data(context: Context, cfg: Any) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """This SuperNode's features and class indices (the server's classes; examples of other labels are left out and
    counted), from its `data` with the backbone and the reading options the server sent."""
    from ..backbones.registry import create_backbone
    from ..config import FitConfig
    from ..data.cache import FeatureCache
    from ..data.examples import concat
    from ..data.readers import read_labeled
    from ..runtime.features import extract_features

    path = context.node_config.get("data")
    if not path:
        raise ConfigError("this SuperNode has no data: start it with --node-config 'data=\"PATH\"' (a folder or "
                          "table of labeled examples, as for fmadapt fit)")
    spec = json.loads(str(cfg["backbone"]))
    fit = FitConfig.from_dict(json.loads(str(cfg["fit"])))
    backbone = create_backbone(spec["name"])
    if spec["sha256"] and backbone.cfg.sha256 != spec["sha256"]:
        raise ConfigError(f"backbone {spec['name']!r} here has checksum {backbone.cfg.sha256[:12] or 'none'}, the "
                          f"server's {spec['sha256'][:12]}: install the same weights on every SuperNode")
    if backbone.cfg.modality == "image":
        backbone.set_image_size(int(spec["input_size"]), float(spec["crop_pct"]))
    elif backbone.cfg.modality == "text":
        backbone.cfg.max_tokens = int(spec["max_tokens"])
    splits, _ = read_labeled(backbone.cfg.modality, str(path), fit, fitting=True)
    ex = splits.pop("train")
    for more in splits.values():  # (a client's val/test folders are its training data too)
        ex = concat(ex, more)
    index = {c: i for i, c in enumerate(json.loads(str(cfg["classes"])))}
    keep = [j for j, label in enumerate(ex.labels or []) if label in index]
    x = extract_features(backbone, ex, batch_size=64, cache=FeatureCache(), progress=False, runtime=fit.runtime)
    y = np.asarray([index[(ex.labels or [])[j]] for j in keep], np.int64)
    return x[keep], y, {"unknown-labels": len(ex) - len(keep), "skipped": len(ex.skipped)}


def _number(context: Context) -> int:
    state: Any = context.state
    return int(state["fmadapt"]["client"]) if "fmadapt" in state else -1


def _node_file(msg: Message, context: Context) -> Path:
    """Where this SuperNode keeps its features and labels between the rounds of a run (its own cache folder; the
    server's last message of the run deletes it)."""
    from ..data.cache import default_cache_dir

    return default_cache_dir() / "federated" / f"{msg.metadata.run_id}-{context.node_id}.npz"


@client.query()
def _statistics(msg: Any, context: Context) -> Message:
    from flwr.app import MetricRecord, RecordDict

    cfg = msg.content["config"]
    if cfg.get("done"):  # (the run is over: the features this node kept go)
        _node_file(msg, context).unlink(missing_ok=True)
        return Message(RecordDict({"metrics": MetricRecord({"client": _number(context)})}), reply_to=msg)
    i = int(cfg["client"])  # (the server numbers the clients; a report names them so)
    context.state["fmadapt"] = MetricRecord({"client": i})
    x, y, info = _node_data(context, cfg)
    if not len(y):
        raise ConfigError(f"{context.node_config.get('data')}: no example with one of the server's classes")
    path = _node_file(msg, context)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x.astype(np.float32), y=y)
    counts = {} if not cfg["statistics"] else {"class-counts": np.bincount(  # (under DP: only the size, which
        y, minlength=len(json.loads(str(cfg["classes"])))).tolist()}           # FedAvg's weighting shows anyway)
    return statistics_reply(msg, x, i, {**info, **counts})


@client.train()
def _train(msg: Any, context: Context) -> Message:
    path = _node_file(msg, context)
    if path.is_file():
        with np.load(path, allow_pickle=False) as f:
            x, y = f["x"], f["y"]
    else:  # (this node missed the statistics round)
        x, y, _ = _node_data(context, msg.content["config"])
    kind, _, when = str(context.node_config.get("attack", "")).partition(":")
    if kind == "exit" and int(msg.content["config"]["server-round"]) >= int(when or 1):
        os._exit(1)  # (tests: this ClientApp process dies mid-round, as a killed or crashed one would)
    return train_reply(msg, context, x, y, _number(context), int(msg.content["config"]["seed"]), kind)


# -- the server: inside the process the SuperLink starts ---------------------------------------------
@server.main()
def _main(grid: Grid, context: Context) -> None:
    from .server import head_evaluator, serve, summary

    work = Path(str(context.run_config["workdir"]))
    if not (work / "job.json").is_file():
        raise RuntimeError(f"{work}/job.json not found: fmadapt federate --superlink runs on the SuperLink's machine")
    job = json.loads((work / "job.json").read_text())
    fc = FederatedConfig.from_dict(job["federated"])

    def progress(line: str) -> None:
        with open(work / "progress.log", "a", encoding="utf-8") as f:
            f.write(line + "\n")

    try:
        with np.load(work / "server.npz", allow_pickle=False) as f:
            x_va, y_va, mean, std = f["x"], f["y"], f["mean"], f["std"]
        stats = (mean, std) if job["server_statistics"] else None
        query = {"fit": json.dumps(job["fit"]), "backbone": json.dumps(job["backbone"]),
                 "classes": json.dumps(job["classes"]), "seed": fc.seed}
        t0 = time.perf_counter()
        n = len(job["classes"])
        initial = [np.zeros((n, x_va.shape[1]), np.float32), np.zeros(n, np.float32)]
        out = serve(grid, fc, initial, head_evaluator(x_va, y_va), stats, progress, query)
        _finish(grid)
        w, b = out["arrays"]
        np.savez(work / "result.npz", w=w, b=b, mean=out["mean"], std=out["std"])
        history = {**summary(out, fc, time.perf_counter() - t0, None), "clients": out["clients"]}
        (work / "result.json").write_text(json.dumps(history, default=_plain))
    except Exception as e:
        (work / "error.json").write_text(json.dumps({"error": f"{type(e).__name__}: {e}"}))
        raise


def _finish(grid: Grid) -> None:
    """Tell every SuperNode still there that the run is over (each deletes the features it kept)."""
    from flwr.app import ConfigRecord, MessageType, RecordDict

    grid.send_and_receive([Message(RecordDict({"config": ConfigRecord({"done": True})}), dst_node_id=n,
                                   message_type=MessageType.QUERY) for n in grid.get_node_ids()], timeout=60)


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v.tolist() if isinstance(v, np.ndarray) else str(v)


# -- the submitting side: `fmadapt federate --superlink` -------------------------------------------
def run_deployment(fc: FederatedConfig, x_va: np.ndarray, y_va: np.ndarray, classes: list[str], fit: dict[str, Any],
                   backbone: dict[str, Any], stats: tuple[np.ndarray, np.ndarray] | None, progress: Any
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Submit the federation to the SuperLink at `fc.superlink` and wait for it: (weight, bias, feature mean,
    feature std, history), as server.simulate. `stats`: the server's own standardisation (under DP)."""
    flwr = shutil.which("flwr") or str(Path(sys.executable).with_name("flwr"))
    if not Path(flwr).exists():
        raise ConfigError("the flwr command was not found: pip install 'fmadapt[federated]'")
    with tempfile.TemporaryDirectory(prefix="fmadapt-deploy-") as tmp:
        work = Path(tmp)
        np.savez(work / "server.npz", x=x_va.astype(np.float32), y=y_va.astype(np.int64),
                 mean=np.asarray(stats[0] if stats else 0.0), std=np.asarray(stats[1] if stats else 1.0))
        job = {"federated": fc.to_dict(), "classes": list(classes), "fit": fit, "backbone": backbone,
               "server_statistics": stats is not None}
        (work / "job.json").write_text(json.dumps(job, default=_plain))
        app = work / "app"
        (app / PACKAGE).mkdir(parents=True)
        (app / PACKAGE / "__init__.py").write_text("")
        (app / PACKAGE / "apps.py").write_text(  # (Flower checks the names statically: assigned, not imported)
            "from fmadapt.federated import deploy\n\nclient = deploy.client\nserver = deploy.server\n")
        (app / "pyproject.toml").write_text(PYPROJECT)
        home = work / "flwr-home"  # (Flower's CLI reads the SuperLink's address from FLWR_HOME/config.toml)
        home.mkdir()
        tls = (f"root-certificates = {json.dumps(fc.root_certificates)}" if fc.root_certificates else
               "insecure = true")
        (home / "config.toml").write_text(f'[superlink]\ndefault = "fmadapt"\n\n[superlink.fmadapt]\n'
                                          f"address = {json.dumps(fc.superlink)}\n{tls}\n")
        env = {**os.environ, "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}
        log = work / "flwr-run.log"
        t0 = time.perf_counter()
        with open(log, "wb") as out:
            proc = subprocess.Popen([flwr, "run", str(app), "fmadapt", "--stream", "--run-config",
                                     f"workdir={json.dumps(str(work))}"], stdout=out, stderr=subprocess.STDOUT,
                                    env=env, cwd=tmp)
            seen = 0
            while True:
                done = proc.poll() is not None or (work / "result.json").exists() or (work / "error.json").exists()
                lines = (work / "progress.log").read_text().splitlines() if (work / "progress.log").exists() else []
                for line in lines[seen:]:
                    progress(line)
                seen = len(lines)
                if done:
                    break
                time.sleep(0.5)
            if proc.poll() is None:  # (the result is written: the log stream may outlive it by a few seconds)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.terminate()
        if (work / "error.json").exists():
            why = json.loads((work / "error.json").read_text())["error"]
            raise RuntimeError(f"the federation failed on the server: {why}")
        if not (work / "result.json").exists():
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the federation at {fc.superlink} ended without a model (is the SuperLink running, "
                               f"and on this machine?). flwr run said:\n{tail}")
        history = json.loads((work / "result.json").read_text())
        with np.load(work / "result.npz", allow_pickle=False) as f:
            w, b, mean, std = f["w"], f["b"], f["mean"], f["std"]
    history["seconds_total"] = round(time.perf_counter() - t0, 1)
    history["deployment"] = {"superlink": fc.superlink, "tls": fc.root_certificates is not None,
                             "engine": "Flower deployment engine (SuperLink + SuperNodes)"}
    return w, b, mean, std, history
