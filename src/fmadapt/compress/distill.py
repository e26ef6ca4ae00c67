"""`fmadapt distill TEACHER DATA --out DIR`: a smaller student trained on a fitted model's soft targets.

The teacher is any saved single-label classifier (an ensemble too: its averaged probabilities are the targets), used
through its public API only. The student is, for texts, the teacher's own encoder cut to `student_layers` evenly
spaced layers (DistilBERT's initialisation: 3 of MiniLM's 6 keeps layers 1, 3, 5); for images, the teacher at a
smaller input size (224 -> 160 px by default); or any registered backbone by name (`student`) with a new head.
It trains on the Lightning Trainer with Hinton et al.'s loss: alpha x T² x KL(teacher at temperature T || student
at T) + (1 - alpha) x cross-entropy on the labels; unlabeled inputs (`unlabeled`) add soft targets only. The student
is saved as an ordinary model directory (predict, evaluate, export and serve work on it); the summary compares it
with the teacher on held-out data: accuracy, agreement, and inputs per second in the same process (`speedup`)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError

DEFAULTS: dict[str, Any] = {"student_layers": 3, "student": None, "student_image_size": None, "student_prune": None,
                            "temperature": 2.0, "hidden_weight": 0.0,
                            "alpha": 0.5, "epochs": 3, "lr": 1e-4, "batch_size": 32, "val_fraction": 0.2, "seed": 0}

#: a static student's default learning rate: its embedding table moves far from its PCA start (Model2Vec trains its
#: classifiers at 1e-3 too)
STATIC_LR = 1e-3


def kept_layers(n: int, k: int) -> list[int]:
    """`k` of `n` layers, evenly spaced and ending with the top one (3 of 6: 1, 3, 5; 2 of 6: 2, 5)."""
    if not 1 <= k < n:
        raise ConfigError(f"--student-layers must be between 1 and {n - 1} (the teacher has {n} layers), got {k}")
    return sorted({n - 1 - int(round(i * n / k)) for i in range(k)})


def _module(student: Any, soft: torch.Tensor, hard: torch.Tensor, o: dict[str, Any], steps: int,
            teacher: Any = None, pairs: list[tuple[int, int]] | None = None) -> Any:
    import lightning.pytorch as pl
    import torch.nn.functional as F  # noqa: N812

    hidden = bool(o["hidden_weight"]) and teacher is not None and bool(pairs)
    seen: dict[tuple[str, int], torch.Tensor] = {}
    hooks: list[Any] = []  # (removed by `distill` once trained: the saved student and the teacher keep none)
    if hidden:  # (layer outputs caught by hooks: student layer j learns the teacher's layer pairs[j])
        from ..backbones.text import encoder_layers

        def catch(key: tuple[str, int]) -> Any:
            def hook(mod: nn.Module, inp: Any, out: Any) -> None:
                seen[key] = out[0] if isinstance(out, tuple) else out
            return hook

        s_layers, t_layers = encoder_layers(student.backbone.model), encoder_layers(teacher.backbone.model)
        for j, (si, ti) in enumerate(pairs or []):
            hooks.append(s_layers[si].register_forward_hook(catch(("s", j))))
            hooks.append(t_layers[ti].register_forward_hook(catch(("t", j))))
        teacher.eval().requires_grad_(False)

    class DistillModule(pl.LightningModule):
        soft: torch.Tensor
        hard: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            self.model = student
            self.register_buffer("soft", soft)  # (N, C): the teacher's probabilities at temperature T
            self.register_buffer("hard", hard)  # (N,): class index, -1 where unlabeled
            self.hooks: list[Any] = hooks

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, i = batch
            if hidden:
                with torch.no_grad():
                    teacher.backbone(x)
            logits = self.model(x)
            t = o["temperature"]
            kd = F.kl_div(F.log_softmax(logits / t, dim=1), self.soft[i], reduction="batchmean") * t * t
            y = self.hard[i]
            labeled = y >= 0
            if labeled.any() and o["alpha"] < 1.0:
                loss = o["alpha"] * kd + (1 - o["alpha"]) * F.cross_entropy(logits[labeled], y[labeled])
            else:
                loss = kd
            if hidden:  # 1 - cosine of each real token's hidden state to the teacher's, averaged
                m = x["attention_mask"].to(logits.dtype)
                cos = torch.stack([F.cosine_similarity(seen[("s", j)], seen[("t", j)], dim=-1)
                                   for j in range(len(pairs or []))])  # (pairs, B, T)
                loss = loss + o["hidden_weight"] * ((1 - cos) * m).sum() / (m.sum() * cos.shape[0])
            self.log("train_loss", loss, prog_bar=True)
            return loss

        def configure_optimizers(self) -> Any:
            opt = torch.optim.AdamW(self.model.parameters(), lr=o["lr"], weight_decay=0.01)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=o["lr"], total_steps=max(1, steps),
                                                        pct_start=0.1, anneal_strategy="linear")
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    return DistillModule()


def _speed(model: Any, ex: Any, repeats: int = 2) -> float:
    """Texts per second of `model.proba` on `ex` (best of `repeats`, after a warm-up batch)."""
    model.proba(ex.subset(list(range(min(8, len(ex))))))
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        model.proba(ex)
        best = max(best, len(ex) / (time.perf_counter() - t))
    return round(best, 1)


def _student(first: Any, modality: str, n_classes: int, o: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The student network (in training mode) and what describes it beside the teacher (for the summary):
    another backbone by name (`student`), the teacher at a smaller image size (`student_image_size`; images'
    default: 5/7 of the teacher's, in multiples of 32: 224 -> 160), or the teacher's encoder cut to
    `student_layers` layers (texts' default)."""
    import copy

    from ..backbones.registry import create_backbone
    from ..model import Classifier

    teacher_bb = first.model.backbone
    name, size = o.get("student"), o.get("student_image_size")
    static = re.fullmatch(r"static(?::(\d+))?(?::(\d+))?", str(name or ""))
    if static:  # (texts: the Model2Vec recipe on the teacher's own encoder, backbones/static.py)
        from ..backbones.static import DEFAULT_DIM, DEFAULT_HIDDEN, static_from

        if modality != "text":
            raise ConfigError("--student static is for text teachers")
        dim, hidden = int(static.group(1) or DEFAULT_DIM), int(static.group(2) or DEFAULT_HIDDEN)
        if not (1 <= dim <= 65536 and hidden <= 65536):
            raise ConfigError(f"--student {name}: static:DIM[:HIDDEN] takes 1 <= DIM <= 65536 and 0 <= HIDDEN <= "
                              "65536 (HIDDEN 0: no hidden layer)")
        sbb = static_from(teacher_bb, dim, hidden)
        net = Classifier(sbb, n_classes, float(first.config.dropout or 0.0))
        dim = int(sbb.embedding.weight.shape[1])
        return net.train(), {"teacher": {"backbone": teacher_bb.cfg.name},
                             "student": {"backbone": f"static ({dim}-d vectors of its tokens"
                                         + (f", a hidden layer of {hidden})" if hidden else ")")}}
    if name:
        bb = create_backbone(str(name))
        if bb.cfg.modality != modality:
            raise ConfigError(f"--student {name} is a {bb.cfg.modality} backbone; the teacher reads {modality}")
        if modality == "image" and size:
            bb.set_image_size(int(size))
        net = Classifier(bb, n_classes, float(first.config.dropout or 0.0))
        return net.train(), {"teacher": {"backbone": teacher_bb.cfg.name}, "student": {"backbone": bb.cfg.name}}
    net = copy.deepcopy(first.model).train()
    if modality == "image" and o.get("student_prune"):  # (channels removed, at the teacher's size unless given)
        from .channels import prune_channels

        try:
            cost = prune_channels(net.backbone, float(o["student_prune"]))
        except ValueError as e:
            raise ConfigError(f"--student-prune: {e}") from None
        if size:
            net.backbone.set_image_size(int(size))
        return net, {"teacher": {"macs": cost["macs"][0], "params": cost["params"][0]},
                     "student": {"pruned": float(o["student_prune"]), "macs": cost["macs"][1],
                                 "params": cost["params"][1], **({"image_size": int(size)} if size else {})}}
    if modality == "image":
        t_size = int(teacher_bb.cfg.input_size)
        size = int(size or max(32, int(round(t_size * 5 / 7 / 32)) * 32))
        if not 32 <= size < t_size:
            raise ConfigError(f"--student-image-size must be between 32 and {t_size - 1} (the teacher's is "
                              f"{t_size}), got {size}")
        net.backbone.set_image_size(size)
        return net, {"teacher": {"image_size": t_size}, "student": {"image_size": size}}
    if o.get("student_prune"):  # (texts: heads and feed-forward neurons removed, the layers all kept)
        from .prune import prune

        try:
            left = prune(net.backbone, float(o["student_prune"]))
        except ValueError as e:
            raise ConfigError(f"--student-prune: {e}") from None
        n = len(left["heads"])
        return net, {"teacher": {"heads": sum(int(lay.attention.self.num_attention_heads) for lay in
                                              first.model.backbone.layer_groups()[1:])},
                     "student": {"pruned": float(o["student_prune"]), "heads": sum(left["heads"]),
                                 "ffn": sum(left["ffn"])}, "pairs": [(j, j) for j in range(n)]}
    from ..backbones.text import keep_layers

    n_layers = len(net.backbone.layer_groups()) - 1
    kept = kept_layers(n_layers, int(o["student_layers"]))
    keep_layers(net.backbone, kept)
    return net, {"teacher": {"layers": n_layers},
                 "student": {"layers": int(o["student_layers"]), "kept_layers": net.backbone.cfg.extra["kept_layers"]},
                 "pairs": list(enumerate(kept))}


def distill(teacher_dir: str | Path, data: Any, out: str | Path, *, unlabeled: Any = None,
            progress: bool = False, **options: Any) -> dict[str, Any]:
    """Train and save the student (see the module's docstring); returns the summary (also in the student's
    config.json history, "distillation"). `options`: DEFAULTS' keys."""
    import dataclasses

    from ..adapt.finetune import build_trainer
    from ..data.loader import make_loader
    from ..data.readers import read_unlabeled
    from ..data.split import stratified_split
    from ..member import Member
    from ..predictor import Predictor, load_model

    o = {**DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    if options.get("lr") is None and str(o.get("student") or "").startswith("static"):
        o["lr"] = STATIC_LR
    unknown = set(o) - set(DEFAULTS)
    if unknown:
        raise ConfigError(f"unknown distillation option(s): {', '.join(sorted(unknown))}")
    # (no feature cache: a probe teacher would otherwise be timed on cached features, its speed-up meaningless)
    teacher = load_model(teacher_dir, cache=False, progress=progress)
    if not isinstance(teacher, Predictor) or teacher.config_.task != "classification":
        raise ConfigError(f"{teacher_dir}: distillation takes a single-label classifier for now "
                          f"(this is a {getattr(teacher, 'task', 'model of several targets')} model)")
    modality = teacher.modality
    ex = teacher.read_labeled(data)
    train, val = stratified_split(ex, o["val_fraction"], o["seed"])
    extra = read_unlabeled(modality, unlabeled, teacher.config_) if unlabeled is not None else None
    inputs = list(train.inputs) + (list(extra.inputs) if extra is not None else [])
    t0 = time.perf_counter()
    soft_in = train if extra is None else dataclasses.replace(train, inputs=inputs, labels=None,
                                                              ids=[str(i) for i in range(len(inputs))], table=None)
    p = np.clip(teacher.proba(soft_in, calibrated=False), 1e-12, 1.0)
    z = np.log(p) / o["temperature"]
    soft = np.exp(z - z.max(1, keepdims=True))
    soft /= soft.sum(1, keepdims=True)
    hard = np.concatenate([teacher.encode_labels(train.labels), -np.ones(len(inputs) - len(train), np.int64)])

    first = teacher.members_[0]
    student, described = _student(first, modality, len(teacher.classes_), o)
    student.backbone.cfg.sha256 = ""  # (trained weights of its own: never taken for the pretrained ones)
    for prm in student.parameters():
        prm.requires_grad_(True)
    torch.manual_seed(o["seed"])
    loader = make_loader(student.backbone, inputs, modality, train=True, batch_size=o["batch_size"],
                         targets=list(range(len(inputs))), seed=o["seed"])
    steps = len(loader) * o["epochs"]
    bcfg = student.backbone.cfg
    cfg = dataclasses.replace(first.config, strategy="finetune", epochs=o["epochs"], lr=o["lr"],
                              batch_size=o["batch_size"], seed=o["seed"], runtime="auto", ensemble=1,
                              ensemble_backbones=None, tta=False, backbone=bcfg.name,
                              **({"image_size": bcfg.input_size, "crop_pct": bcfg.crop_pct} if modality == "image"
                                 else {}))
    pairs = described.pop("pairs", None)  # (texts' layer and pruned students: whose hidden states can be matched)
    o["hidden_weight"] = float(o["hidden_weight"]) if pairs else 0.0
    module = _module(student, torch.from_numpy(soft.astype(np.float32)), torch.from_numpy(hard), o, steps,
                     first.model if o["hidden_weight"] else None, pairs)
    build_trainer(cfg, [], progress).fit(module, train_dataloaders=loader)
    for hook in module.hooks:
        hook.remove()
    student.eval()
    fit_seconds = time.perf_counter() - t0

    model = Predictor(modality, teacher.classes_, cfg, cache=False, progress=progress)
    model.set_members([Member(student, cfg, {}, True)])
    ref = teacher.with_runtime("auto")
    pt, ps = ref.proba(val), model.proba(val)
    y = teacher.encode_labels(val.labels)
    from ..evaluate.calibration import fit_temperature

    model.temperature_ = float(fit_temperature(ps, y)) if len(val) >= 20 else 1.0
    summary: dict[str, Any] = {
        "teacher": {"dir": str(teacher_dir), "accuracy": float((pt.argmax(1) == y).mean()),
                    "per_s": _speed(ref, val), **described["teacher"]},
        "student": {"accuracy": float((ps.argmax(1) == y).mean()), "per_s": _speed(model, val),
                    **described["student"]},
        "agreement": float((pt.argmax(1) == ps.argmax(1)).mean()), "validation": len(val), "train": len(train),
        "unlabeled": 0 if extra is None else len(extra), "fit_seconds": round(fit_seconds, 1), "options": o}
    summary["speedup"] = round(summary["student"]["per_s"] / max(summary["teacher"]["per_s"], 1e-9), 2)
    summary["accuracy_ratio"] = round(summary["student"]["accuracy"] / max(summary["teacher"]["accuracy"], 1e-9), 4)
    model.members_[0].history["distillation"] = summary
    model.history_ = {"distillation": summary}
    model.metrics_ = {"accuracy": summary["student"]["accuracy"], "teacher_accuracy": summary["teacher"]["accuracy"]}
    model.splits_ = {"train": train, "val": val}  # (manifests/: what it trained on, what it was measured on)
    model.save_pretrained(out, command=f"fmadapt distill {teacher_dir}", report=False)
    return summary
