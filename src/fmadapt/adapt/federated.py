"""`federated`: the probe trained by simulated clients that never share their examples (Flower; fmadapt/federated/);
`federated-finetune` and `federated-lora`: the top blocks of the backbone (or LoRA adapters in them) and the head.

The probe's backbone stays frozen: its features are computed once per client (cached), the training split is
divided among the clients (`extra["federated"]`: FederatedConfig), and only the head travels. The other two cache
each client's activations below the top blocks once, and only the trained tensors travel (federated/suffix.py).
The validation split stays with the server: it scores the global model after every round and calibrates the final
model, as in any fit."""

from __future__ import annotations

import sys
import tempfile
import time
from typing import Any

import numpy as np

from ..config import FitConfig
from ..data.examples import Examples
from ..errors import ConfigError
from ..federated.config import FederatedConfig
from ..federated.partition import describe, describe_counts, partition
from ..model import Classifier
from ..runtime.features import extract_features
from .base import FitContext, Strategy, register_strategy


@register_strategy
class Federated(Strategy):
    """Federated linear probe: clients train the head on their own frozen features, a Flower strategy aggregates
    it (fedavg, fedprox, fedadam, trimmed-mean, median, krum, multikrum), hostile updates are rejected and counted."""

    name = "federated"
    trains_backbone = False

    def options(self, cfg: FitConfig, ctx: FitContext) -> FederatedConfig:
        if ctx.multilabel or ctx.regression or ctx.table is not None:
            raise ConfigError(f"strategy {self.name}: single-label classification on backbone features only (no "
                              "multilabel, regression or table features yet)")
        return FederatedConfig.from_dict(cfg.extra.get("federated"))

    def fit(self, model: Classifier, train: Examples, val: Examples, cfg: FitConfig, ctx: FitContext
            ) -> dict[str, Any]:
        fc = self.options(cfg, ctx)
        t0 = time.perf_counter()
        kw: dict[str, Any] = {"batch_size": max(cfg.batch_size, 64), "cache": ctx.cache,
                              "num_workers": cfg.num_workers, "progress": ctx.progress, "runtime": cfg.runtime}
        x_va = extract_features(model.backbone, val, desc="val features", **kw)
        y_va = np.asarray(ctx.targets(val))
        t_feat = time.perf_counter() - t0
        n_cls = len(ctx.classes)

        say = _say(ctx)
        # with DP, no client statistic may leave a client outside DP-SGD (and SecAgg+ asks none): the server's own
        # split standardises
        stats = None
        if fc.dp_epsilon is not None or fc.secure:
            stats = (x_va.mean(0), x_va.std(0)) if len(x_va) >= 2 else (np.zeros(x_va.shape[1]),
                                                                          np.ones(x_va.shape[1]))
        axes = None
        if fc.superlink is not None:  # the clients are SuperNodes with their own data: `train` is the server's too
            from ..federated.deploy import run_deployment

            bb = model.backbone.cfg
            w, b, mean, std, history = run_deployment(
                fc, x_va, y_va, list(ctx.classes), cfg.to_dict(), {"name": bb.name, "sha256": bb.sha256,
                "input_size": bb.input_size, "crop_pct": bb.crop_pct, "max_tokens": bb.max_tokens}, stats, say)
            clients = {int(c["client"]): c for c in sorted(history.pop("clients"), key=lambda c: int(c["client"]))}
            if all("class-counts" in c for c in clients.values()):  # (not under DP: sizes only)
                described = describe_counts({i: c["class-counts"] for i, c in clients.items()}, ctx.classes)
            else:
                described = [{"client": i, "examples": int(c["num-examples"])} for i, c in clients.items()]
            for row in described:  # (the node id: what the SuperNode's own log calls it)
                row["node"] = str(clients[row["client"]]["node"])
                row.update({k: int(clients[row["client"]][k]) for k in ("unknown-labels", "skipped")
                            if clients[row["client"]].get(k)})
            n_train = sum(c["examples"] for c in described)
            summary: dict[str, Any] = {"sizes": {"train": n_train, "val": len(y_va)}, "validation": "given"}
            if all("classes" in c for c in described):
                summary["class_counts"] = {"train": {k: sum(c["classes"].get(k, 0) for c in described)
                                                     for k in ctx.classes}, "val": val.class_counts()}
            extra = {"data_summary": summary, "trained_on": f"{len(described)} SuperNodes' own data ({n_train} "
                     f"examples); the server holds {len(y_va)} examples of its own"}
        else:
            x_tr = extract_features(model.backbone, train, desc="train features", **kw)
            t_feat = time.perf_counter() - t0
            y_tr, parts = _split(fc, train, cfg, ctx)
            from ..federated.client import write_clients
            from ..federated.server import head_evaluator, simulate, usable_std

            axes = _dp_axes(fc, x_va, stats)
            if axes is not None:  # DP: the head on the top principal axes of the server's split (less noise in all)
                assert stats is not None
                mean0, std0 = stats[0], usable_std(stats[1])
                x_tr, x_va = ((x_tr - mean0) / std0) @ axes.T, ((x_va - mean0) / std0) @ axes.T
                stats = (np.zeros(len(axes)), np.ones(len(axes)))
            with tempfile.TemporaryDirectory(prefix="fmadapt-federated-") as work:
                write_clients(work, x_tr, y_tr, parts)
                if fc.secure:
                    from ..federated.secure import simulate_secure

                    assert stats is not None
                    w, b, mean, std, history = simulate_secure(work, x_tr.shape[1], n_cls, fc,
                                                               head_evaluator(x_va, y_va), stats, say)
                    history["secure"] = {"protocol": "SecAgg+ (Flower's SecAggPlusWorkflow and secaggplus_mod)",
                                         "clip": fc.secure_clip, "note": "the server saw the weighted sum only"}
                else:
                    w, b, mean, std, history = simulate(work, x_tr.shape[1], n_cls, fc, head_evaluator(x_va, y_va),
                                                        say, stats)
            described = describe(parts, y_tr, ctx.classes)
            extra = {"trained_on": f"{fc.clients} clients' training data ({len(y_tr)} examples, partition "
                                   f"{fc.partition}); the server holds the validation split ({len(y_va)} examples)"}
        head_bytes, shape = int(w.nbytes + b.nbytes), f"{w.shape[0]} x {w.shape[1]}"
        if axes is not None:  # back to the standardised features: w·(A z) = (w A)·z
            history["privacy"]["projection"] = {
                "axes": len(axes), "from": f"the server's validation split ({len(y_va)} examples)",
                "note": "the clients trained a head on the top principal axes of the standardised features"}
            shape += f" on {len(axes)} principal axes"
            w, mean, std = (w @ axes).astype(np.float32), mean0, std0
        # the standardisation folded into the head: w·(x - mean)/std + b = (w/std)·x + (b - (w/std)·mean)
        w_raw = w / std
        model.set_linear(w_raw, b - w_raw @ mean)
        federation = {
            "options": fc.to_dict(), "aggregation": fc.aggregation,
            "partition": fc.partition if fc.superlink is None else "each SuperNode's own data",
            "clients": described, "head_bytes": head_bytes,
            "trainable": f"the linear head only ({shape} weights + {b.shape[0]} biases, "
                         f"{head_bytes} bytes); the backbone stays frozen on every client", **history}
        return {"federation": federation, "feature_seconds": round(t_feat, 2),
                "fit_seconds": round(time.perf_counter() - t0, 2), "metric": cfg.metric, **extra}


@register_strategy
class FederatedFineTune(Federated):
    """Federated fine-tuning: clients train the top blocks of the backbone (`unfreeze`, default 2) and the head on
    activations computed once below them, after a federated probe warms the head; only those tensors travel."""

    name = "federated-finetune"
    trains_backbone = True
    lora = False

    def fit(self, model: Classifier, train: Examples, val: Examples, cfg: FitConfig, ctx: FitContext
            ) -> dict[str, Any]:
        from ..federated.suffix import fit_top

        fc = self.options(cfg, ctx)
        fc.check_top(self.name)
        t0 = time.perf_counter()
        y_tr, parts = _split(fc, train, cfg, ctx)
        federation = {"options": fc.to_dict(), "aggregation": fc.aggregation, "partition": fc.partition,
                      "clients": describe(parts, y_tr, ctx.classes),
                      **fit_top(model, train, val, cfg, ctx, fc, parts, self.lora, _say(ctx))}
        return {"federation": federation, "fit_seconds": round(time.perf_counter() - t0, 2), "metric": cfg.metric,
                "trained_on": f"{fc.clients} clients' training data ({len(y_tr)} examples, partition "
                              f"{fc.partition}); the server holds the validation split ({len(val)} examples)"}


@register_strategy
class FederatedLoRA(FederatedFineTune):
    """Federated LoRA: clients train low-rank adapters in the top blocks of the backbone (`unfreeze`, default 2) and
    the head, on activations computed once below them; only the adapters and the head travel."""

    name = "federated-lora"
    lora = True


def _split(fc: FederatedConfig, train: Examples, cfg: FitConfig, ctx: FitContext
           ) -> tuple[np.ndarray, list[np.ndarray]]:
    """(class indices of the training examples, the examples of each client) as `fc.partition` deals them."""
    kind, param = fc.partition_spec()
    y_tr = np.asarray(ctx.targets(train))
    column = _column(train, str(param), cfg) if kind == "by-column" else None
    return y_tr, partition(y_tr, fc.clients, kind, param, fc.seed, column)


def _dp_axes(fc: FederatedConfig, x_va: np.ndarray, stats: Any) -> np.ndarray | None:
    """Under DP (simulation, not SecAgg+): the top `dp_axes` principal axes (rows) of the server's standardised
    validation features, when there are more features and more validation examples than that; else None."""
    if fc.dp_epsilon is None or fc.secure or not fc.dp_axes or stats is None:
        return None
    from ..federated.server import usable_std

    k = int(fc.dp_axes)
    if k >= x_va.shape[1] or k >= len(x_va):
        return None
    z = (x_va - stats[0]) / usable_std(stats[1])
    return np.linalg.svd(z - z.mean(0), full_matrices=False)[2][:k].astype(np.float64)


def _say(ctx: FitContext) -> Any:
    def say(line: str) -> None:
        if ctx.progress:
            print(f"federated: {line}", file=sys.stderr, flush=True)

    return say


def _column(train: Examples, name: str, cfg: FitConfig) -> list[str]:
    """by-column: the column's value of each training example (its row of the table it was read from; images and
    sounds: the row of their path in a table of paths)."""
    from ..data.filetable import is_table_file

    if not train.source or train.source.startswith("<") or not is_table_file(train.source):
        what = "a table file (CSV/TSV/JSONL/Parquet)" if train.modality == "text" else (
            f"a table of the {train.modality} files (a path column, the label and {name!r}) instead of a folder")
        raise ConfigError(f"federated: partition by-column:{name} needs {what}")
    from ..evaluate.fairness import group_labels_from_metadata, group_labels_from_table

    if train.modality != "text":  # (their ids are the paths as written in the table)
        return group_labels_from_metadata(train.source, train, name)
    return group_labels_from_table(train.source, name, train, encoding=cfg.encoding, header=cfg.header,
                                   option=f"--partition by-column:{name}")
