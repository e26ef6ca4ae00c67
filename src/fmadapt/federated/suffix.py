"""Federated training of the top of the backbone: `federated-finetune` (the top `unfreeze` blocks and the head) and
`federated-lora` (LoRA adapters in those blocks, and the head), in Flower's simulation engine.

The frozen prefix (embeddings or stem, and the blocks below the cut) runs once per example, in the process that
starts the federation: each client's activations at the cut are written to `client_<i>.npz` in the federation's
work folder (arrays, never pickled objects), as the probe's clients get their features. The head first trains
alone: the federated probe on the suffix's features for `head_rounds` rounds (LP-FT, as `fit`'s head_init=probe).
Then, for `rounds` rounds, every sampled client trains the trainable tensors of the suffix and the head on its own
activations (AdamW, `local_epochs`) from the global ones and sends them back; only they travel, and their bytes are
counted per round. A client rebuilds the suffix in its own worker process: the backbone by name, cut at the same
block, the same adapters injected, and every weight of the suffix loaded from `suffix.safetensors` (so that a
fine-tuned, pretrained-here or randomly initialised backbone is exactly the server's)."""

from __future__ import annotations

import dataclasses
import functools
import json
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from .config import FederatedConfig

#: federated-finetune: the clients' rate is at most this. Their AdamW restarts every round without warm-up:
#: EfficientNet-Lite0's centralised 1e-3 wrecked the warmed head in the first round on Fashion-MNIST (held-out accuracy
#: 0.8675 -> 0.5275), 1e-4 kept it (0.875); MiniLM's own 1e-4 is the rate AG News was measured at
#: (benchmarks/notes/federated.md)
MAX_FINETUNE_LR = 1e-4


def _cut(bb: Any, unfreeze: int) -> tuple[int, Any]:
    """(blocks on top, bb.split of them) for `unfreeze` top blocks (-1: all the backbone can cut off)."""
    cut = max(1, len(bb.layer_groups()) - 1)
    top = cut if unfreeze < 0 else min(unfreeze, cut)
    split = bb.split(top)
    if split is None:
        raise ConfigError(f"federated fine-tuning and LoRA cut the backbone below its top blocks; {bb.cfg.name!r} "
                          "cannot be cut (BERT-style text encoders and EfficientNet/MobileNet-style timm models can): "
                          "use the federated probe (--strategy probe)")
    return top, split


def build(bb: Any, unfreeze: int, lora: dict[str, Any] | None, dropout: float, head: nn.Linear
          ) -> tuple[Any, Any, dict[str, Any] | None]:
    """(prefix, trained, adapter spec) for the top `unfreeze` blocks of backbone `bb` (-1: all it can cut off):
    `trained` = suffix + dropout + `head`. `lora`: {"r", "alpha", "dropout", "leaves": layer names or None (the
    attention / pointwise layers `lora` adapts)} injects adapters into those layers of the suffix only, recorded by
    full module name (so that the model directory reloads them there); with "targets" (full names, a saved spec)
    exactly those. The suffix's trainable tensors are its adapters (lora) or all of its parameters."""
    from ..adapt.cached import SuffixClassifier

    top, split = _cut(bb, unfreeze)
    spec = None
    if lora is not None:
        from ..backbones.adapters import add_lora, is_adapter_param, lora_targets

        net = getattr(bb, "model", bb)
        targets = lora.get("targets")
        if not targets:
            leaves = set(lora_targets(net, ",".join(lora["leaves"]) if lora.get("leaves") else None))
            inside = {id(m) for m in split[1].modules()}
            targets = [n for n, m in net.named_modules() if id(m) in inside and n.rsplit(".", 1)[-1] in leaves
                       and isinstance(m, (nn.Linear, nn.Conv2d))]
            if not targets:
                raise ConfigError(f"federated-lora: none of the layers {', '.join(sorted(leaves))} is in the top "
                                  f"{top} block(s) of {bb.cfg.name!r}: raise --unfreeze or name others with "
                                  "--set lora_targets=...")
        spec = {"r": int(lora["r"]), "alpha": float(lora["alpha"]), "dropout": float(lora["dropout"]),
                "targets": list(targets)}
        add_lora(bb, spec)
        split = bb.split(top)  # (again: the injection replaced modules the first cut referred to)
        assert split is not None
        for n, p in bb.named_parameters():
            p.requires_grad_(is_adapter_param(n))
    else:
        for p in bb.parameters():
            p.requires_grad_(False)
        for p in split[1].parameters():
            p.requires_grad_(True)
    for p in head.parameters():
        p.requires_grad_(True)
    return split[0], SuffixClassifier(split[1], nn.Dropout(dropout), head), spec


def save_backbone(bb: Any, out: Path) -> None:
    """The backbone as a folder `create_backbone` reads (texts: transformers' files and the pooling; images: a timm
    folder)."""
    if bb.cfg.modality == "text":
        from ..pretrain import save_text_backbone

        save_text_backbone(bb, out, {"written_by": "fmadapt federated fine-tuning (the clients' copy)"})
    else:
        from ..pretrain.image import save_image_backbone

        save_image_backbone(bb, out, {"written_by": "fmadapt federated fine-tuning (the clients' copy)"},
                            bb.cfg.crop_pct)


def trainable_names(trained: nn.Module) -> list[str]:
    return [n for n, p in trained.named_parameters() if p.requires_grad]


def get_arrays(trained: nn.Module, names: list[str]) -> list[np.ndarray]:
    params = dict(trained.named_parameters())
    return [params[n].detach().cpu().numpy().copy() for n in names]


def set_arrays(trained: nn.Module, names: list[str], arrays: list[np.ndarray]) -> None:
    params = dict(trained.named_parameters())
    with torch.no_grad():
        for n, a in zip(names, arrays, strict=True):
            params[n].copy_(torch.as_tensor(a))


def _train_mode(trained: nn.Module) -> None:
    """Training mode with BatchNorm's running statistics frozen (the pretrained ones: each client's own would differ
    with its labels, and they do not travel)."""
    trained.train()
    for m in trained.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def _batches(data: dict[str, np.ndarray]) -> list[tuple[Any, torch.Tensor]]:
    """A client file's batches: texts (hidden, mask) per length bucket; images one (x, y) batch per stored chunk."""
    out = []
    for j in range(int(data["batches"])):
        x: Any = ((torch.from_numpy(data[f"h{j}"]), torch.from_numpy(data[f"m{j}"])) if f"h{j}" in data
                  else torch.from_numpy(data[f"x{j}"]))
        out.append((x, torch.from_numpy(data[f"y{j}"])))
    return out


def write_client(path: Path, acts: list[tuple[Any, torch.Tensor, list[int]]]) -> int:
    """One client's activations (`cached._activations`) as plain arrays; returns its number of examples."""
    arrays: dict[str, np.ndarray] = {"batches": np.asarray(len(acts))}
    for j, (a, y, _) in enumerate(acts):
        if isinstance(a, tuple):
            arrays[f"h{j}"], arrays[f"m{j}"] = a[0].numpy(), a[1].numpy()
        else:
            arrays[f"x{j}"] = a.numpy()
        arrays[f"y{j}"] = y.numpy()
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return int(sum(len(y) for _, y, _ in acts))


def load_client(workdir: str | Path, i: int) -> list[tuple[Any, torch.Tensor]]:
    with np.load(Path(workdir) / f"client_{i}.npz", allow_pickle=False) as f:
        return _batches({k: f[k] for k in f.files})


def client_size(workdir: str | Path, i: int) -> int:
    """A client's number of examples, from its labels alone (the activations are not read)."""
    with np.load(Path(workdir) / f"client_{i}.npz", allow_pickle=False) as f:
        return int(sum(len(f[f"y{j}"]) for j in range(int(f["batches"]))))


def local_train(trained: nn.Module, names: list[str], batches: list[tuple[Any, torch.Tensor]], cfg: dict[str, Any],
                seed: int) -> tuple[list[np.ndarray], float]:
    """The trainable tensors after `local-epochs` of AdamW over this client's batches (in a new order each epoch),
    with FedProx's proximal term when `proximal-mu` > 0; and the mean loss."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    params = dict(trained.named_parameters())
    body = [params[n] for n in names if not n.startswith("head.")]
    head = [params[n] for n in names if n.startswith("head.")]
    opt = torch.optim.AdamW([{"params": body, "lr": float(cfg["lr"])}, {"params": head, "lr": float(cfg["head-lr"])}],
                            weight_decay=float(cfg["weight-decay"]))
    prox = float(cfg.get("proximal-mu", 0.0))
    start = [params[n].detach().clone() for n in names] if prox > 0 else []
    _train_mode(trained)
    losses = []
    images = bool(batches) and isinstance(batches[0][0], torch.Tensor)
    if images:  # (image activations: new batches every epoch, as the uncached loader draws them)
        xs, ys, size = torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches]), len(batches[0][1])
    for _ in range(int(cfg["local-epochs"])):
        if images:
            order = torch.randperm(len(ys), generator=gen)
            batches = [(xs[order[s:s + size]], ys[order[s:s + size]]) for s in range(0, len(ys), size)]
        for j in torch.randperm(len(batches), generator=gen).tolist():
            x, y = batches[j]
            loss = nn.functional.cross_entropy(trained(x), y)
            losses.append(float(loss.detach()))
            if prox > 0:
                loss = loss + prox / 2 * sum(((params[n] - p0) ** 2).sum() for n, p0 in zip(names, start, strict=True))
            opt.zero_grad()
            loss.backward()
            opt.step()
    trained.eval()
    return get_arrays(trained, names), float(np.mean(losses)) if losses else float("nan")


@functools.cache
def _worker_model(workdir: str) -> tuple[nn.Module, list[str]]:
    """The suffix and head as the server built them, rebuilt once per worker process."""
    from safetensors.torch import load_file

    from ..backbones.registry import create_backbone

    torch.set_num_threads(1)  # (the simulation runs one client per core)
    spec = json.loads((Path(workdir) / "suffix.json").read_text())
    bb = create_backbone(spec["backbone"])
    _, trained, _ = build(bb, spec["unfreeze"], spec["adapter"], spec["dropout"],
                          nn.Linear(bb.cfg.embed_dim, spec["classes"]))
    missing, unexpected = trained.load_state_dict(load_file(str(Path(workdir) / "suffix.safetensors")), strict=False)
    names = trainable_names(trained)
    if missing or unexpected or names != spec["names"]:
        raise RuntimeError(f"a client rebuilt {spec['name']!r} differently from the server (missing "
                           f"{missing[:3]}, unexpected {unexpected[:3]})")
    return trained, names


def make_client_app(workdir: str, attacks: dict[int, str], seed: int) -> Any:
    """The ClientApp whose clients train the suffix and head on their activations in `workdir`."""
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    from .client import attack, statistics_reply

    app = ClientApp()

    @app.query()
    def statistics(msg: Any, context: Context) -> Message:
        i = int(context.node_config["partition-id"])
        n = client_size(workdir, i)
        return statistics_reply(msg, np.empty((n, 0), np.float32), i)

    @app.train()
    def train(msg: Any, context: Context) -> Message:
        i = int(context.node_config["partition-id"])
        trained, names = _worker_model(workdir)
        old = msg.content["arrays"].to_numpy_ndarrays()
        set_arrays(trained, names, old)
        cfg = dict(msg.content["config"])
        batches = load_client(workdir, i)
        new, loss = local_train(trained, names, batches, cfg, zlib.crc32(f"{seed}:{cfg['server-round']}:{i}".encode()))
        new = attack(attacks.get(i, ""), new, old)
        metrics: dict[str, Any] = {"num-examples": sum(len(y) for _, y in batches), "train-loss": loss, "client": i}
        return Message(RecordDict({"arrays": ArrayRecord(new), "metrics": MetricRecord(metrics)}), reply_to=msg)

    return app


def evaluator(trained: nn.Module, names: list[str], val: list[tuple[Any, torch.Tensor, list[int]]]) -> Any:
    """evaluate(arrays, mean, std) -> {"accuracy", "loss"} of the global suffix and head on the server's split."""

    @torch.no_grad()
    def evaluate(arrays: list[np.ndarray], mean: Any, std: Any) -> dict[str, float]:
        if not val:
            return {}
        set_arrays(trained, names, arrays)
        trained.eval()
        logits = torch.cat([trained(a) for a, _, _ in val])
        y = torch.cat([t for _, t, _ in val])
        return {"accuracy": float((logits.argmax(1) == y).float().mean()),
                "loss": float(nn.functional.cross_entropy(logits, y))}

    return evaluate


@torch.no_grad()
def _features(suffix: nn.Module, acts: list[tuple[Any, torch.Tensor, list[int]]], n: int) -> np.ndarray:
    """The suffix's output (the backbone's features) for activations `acts`, back in input order."""
    suffix.eval()
    out: np.ndarray | None = None
    for a, _, idx in acts:
        f = suffix(a).numpy()
        if out is None:
            out = np.zeros((n, f.shape[1]), np.float32)
        out[idx] = f
    return out if out is not None else np.zeros((0, 0), np.float32)


def fit_top(model: Any, train: Any, val: Any, cfg: Any, ctx: Any, fc: FederatedConfig, parts: list[np.ndarray],
            lora: bool, say: Callable[[str], None]) -> dict[str, Any]:
    """Train the top of `model`'s backbone and its head federated (the module's docstring); returns the history's
    federation entries (those of the probe's `simulate`, with `head`: the head's warm-up federation)."""
    from safetensors.torch import save_file

    from ..adapt.cached import _activations, split_is_exact
    from ..adapt.finetune import FineTune
    from ..adapt.lora import LoRA
    from .client import write_clients
    from .server import head_evaluator, require_engine, run_apps, simulate

    require_engine()
    bb = model.backbone
    mod = bb.cfg.modality
    _cut(bb, fc.unfreeze)  # (refused before any work when the backbone cannot be cut)
    spec_in = {"r": cfg.lora_r, "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout,
               "leaves": cfg.lora_targets.split(",") if cfg.lora_targets else None} if lora else None
    y_tr = np.asarray(ctx.targets(train))
    t0 = time.perf_counter()
    bs = fc.batch_size
    with tempfile.TemporaryDirectory(prefix="fmadapt-federated-") as work:
        # the clients' worker processes build the backbone from this folder (a backbone registered in this process
        # is unknown there), before adapters are injected
        save_backbone(bb, Path(work) / "backbone")
        prefix, trained, adapter = build(bb, fc.unfreeze, spec_in, model.dropout.p, model.head)
        if not split_is_exact(bb, prefix, trained.suffix, train):
            raise ConfigError(f"federated fine-tuning: the cut of {bb.cfg.name!r} below its top blocks does not "
                              "reproduce its features; use the federated probe (--strategy probe)")
        names = trainable_names(trained)
        lr = cfg.lr or (LoRA.default_lr[mod] if lora else
                        min(bb.cfg.finetune_lr or FineTune.default_lr[mod], MAX_FINETUNE_LR))
        x_tr: np.ndarray | None = None
        for i, idx in enumerate(parts):  # each client's activations at the cut, and its features for the head
            acts = _activations(bb, prefix, train.subset(idx.tolist()), y_tr[idx].tolist(), bs, cfg.num_workers)
            write_client(Path(work) / f"client_{i}.npz", acts)
            if not len(idx):  # (a client a skewed partition left without examples)
                continue
            f = _features(trained.suffix, acts, len(idx))
            if x_tr is None:
                x_tr = np.zeros((len(y_tr), f.shape[1]), np.float32)
            x_tr[idx] = f
        va = _activations(bb, prefix, val, ctx.targets(val), bs * 2, cfg.num_workers)
        y_va = np.asarray(ctx.targets(val))
        t_cache = time.perf_counter() - t0
        say(f"activations at the cut cached for {len(parts)} clients and the server ({t_cache:.0f} s)")
        head: dict[str, Any] = {"rounds": 0}
        if fc.head_rounds > 0:  # LP-FT: the head trained alone first (the federated probe on the suffix's features)
            assert x_tr is not None
            with tempfile.TemporaryDirectory(prefix="fmadapt-federated-head-") as hw:
                write_clients(hw, x_tr, y_tr, parts)
                w, b, mean, std, head = simulate(hw, x_tr.shape[1], len(ctx.classes),
                                                 dataclasses.replace(fc, rounds=fc.head_rounds),
                                                 head_evaluator(_features(trained.suffix, va, len(y_va)), y_va), say)
            w_raw = w / std
            model.set_linear(w_raw, b - w_raw @ mean)
        save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(Path(work) / "suffix.safetensors"))
        (Path(work) / "suffix.json").write_text(json.dumps({
            "backbone": str(Path(work) / "backbone"), "name": bb.cfg.name, "unfreeze": fc.unfreeze, "adapter": adapter,
            "dropout": model.dropout.p,
            "classes": len(ctx.classes), "names": names}))
        settings = {"lr": lr, "head-lr": cfg.head_lr, "weight-decay": cfg.weight_decay, "batch-size": bs,
                    "local-epochs": fc.local_epochs, "proximal-mu": 0.0}
        out, history = run_apps(make_client_app(work, fc.attack_of(), fc.seed), get_arrays(trained, names), fc,
                                evaluator(trained, names, va), say, settings=settings)
    set_arrays(trained, names, out["arrays"])
    trained.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if not lora and bb.cfg.sha256:  # (the weights are no longer the checksummed pretrained file)
        bb.cfg.extra["initial_sha256"] = bb.cfg.sha256
        bb.cfg.sha256 = ""
    n_body = sum(a.size for n, a in zip(names, out["arrays"], strict=True) if not n.startswith("head."))
    nbytes = int(sum(a.nbytes for a in out["arrays"]))
    what = (f"LoRA adapters (r={adapter['r']}) in the top {fc.unfreeze if fc.unfreeze > 0 else 'all'} block(s): "
            f"{len(adapter['targets'])} layers" if adapter else
            f"the top {fc.unfreeze if fc.unfreeze > 0 else 'all'} block(s) of the backbone")
    history.update(head=head, activation_seconds=round(t_cache, 2), lr=lr, head_lr=cfg.head_lr,
                   trainable=f"{what} ({n_body} numbers) and the head: {nbytes} bytes each way per client and round; "
                             "the blocks below stay frozen, their activations computed once per client")
    if adapter:
        history["adapter"] = adapter
    return {**history, "trainable_bytes": nbytes}
