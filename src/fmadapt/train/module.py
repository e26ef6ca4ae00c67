"""The LightningModule: knows the loss and the optimizer, nothing about data files."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from ..errors import TrainingDiverged
from .schedules import make_schedule


class ClassifierModule(pl.LightningModule):
    """Cross-entropy fine-tuning of a Classifier; the head may use a larger learning rate than the body.

    lr_scale: per-parameter multipliers of `lr` (layer-wise decay), keyed by id(param); missing = 1.
    l2sp: α of the L2-SP penalty (α/2)·Σ||w - w0||² over the trainable body parameters, w0 = their values
    when the module is built (the pretrained weights); the body then gets no weight decay (L2-SP replaces
    it), the head keeps it. class_weights: per-class loss weights (imbalance). row_lr: (param, first_row,
    scale): the rows of `param` from `first_row` on (embeddings of tokens added by extend_vocab) take steps
    `scale` times larger than the rest of it; their update is rescaled after each optimizer step, which equals a
    per-row learning rate for any optimizer (AdamW's update is proportional to its learning rate)."""

    def __init__(self, model: nn.Module, *, lr: float, head_lr: float, weight_decay: float,
                 warmup_frac: float, total_steps: int, frozen_groups: list[nn.Module] | None = None,
                 freeze_bn: bool = True, optimizer: str = "adamw", momentum: float = 0.9,
                 schedule: str = "cosine", decay_beta: float | None = None, label_smoothing: float = 0.0,
                 lr_scale: dict[int, float] | None = None, l2sp: float = 0.0,
                 class_weights: torch.Tensor | None = None, mixup: Any = None,
                 adversarial: str = "none", adv_eps: float = 0.0, adv_steps: int = 3,
                 adv_target: Any = None, row_lr: tuple[nn.Parameter, int, float] | None = None,
                 channels_last: bool = False, metric: str = "accuracy", multilabel: bool = False,
                 regression: bool = False, joint: Any = None) -> None:
        super().__init__()
        self.model = model
        self.lr, self.head_lr, self.weight_decay = lr, head_lr, weight_decay
        self.warmup_frac, self.total_steps = warmup_frac, total_steps
        self.frozen_groups = frozen_groups or []
        self.freeze_bn = freeze_bn
        self.optimizer_name, self.momentum = optimizer, momentum
        self.schedule, self.decay_beta = schedule, decay_beta
        self.lr_scale = lr_scale or {}
        self.l2sp = l2sp
        self._anchors: list[tuple[nn.Parameter, torch.Tensor]] = []
        if l2sp > 0:
            self._anchors = [(p, p.detach().clone()) for p in self._body_params()]
        #: multi-label: a sigmoid per label (binary cross-entropy on the 0/1 target rows); validation's
        #: `val_acc` is the subset accuracy at 0.5 and `val_score` the micro-F1 at tuned thresholds
        self.multilabel = multilabel
        #: regression: mean squared error on the standardised target; validation's `val_score` is minus that
        #: error (the epoch's mean over the split: larger is better, as RMSE ranks), and there is no `val_acc`
        self.regression = regression
        #: several targets trained together (tasks.joint.JointSpec): the weighted sum of their losses; validation
        #: logs the weighted mean of their scores as `val_score` (and `val_acc`)
        self.joint = joint
        self.loss_fn: nn.Module = (nn.BCEWithLogitsLoss() if multilabel else nn.MSELoss() if regression else
                                   nn.CrossEntropyLoss(weight=class_weights, label_smoothing=label_smoothing))
        if joint is not None:
            from ..tasks.joint import JointLoss

            self.loss_fn = JointLoss(joint)
        #: timm Mixup (mixup/cutmix with soft targets; it applies the label smoothing itself)
        self.mixup = mixup
        self.class_weights = class_weights
        #: "none", "fgsm"/"pgd" (images: adv_target = per-channel eps in normalised units) or "embedding"
        #: (texts: adv_target = the input-embedding module)
        self.adversarial, self.adv_eps, self.adv_steps = adversarial, adv_eps, adv_steps
        self._adv_target = [adv_target]  # in a list: a module here must not become a registered submodule
        self._row_lr = [row_lr] if row_lr is not None and row_lr[2] != 1.0 else []  # a list, like _adv_target
        #: images: NHWC weights and batches, which oneDNN's CPU convolutions run about 1.5x faster (the caller
        #: turns the weights back to the default layout after training: saved tensors must be contiguous)
        self.channels_last = channels_last
        #: the run's metric (`metric`): other than accuracy, validation also logs it as `val_score`
        self.metric = metric
        self._val_pairs: list[torch.Tensor] = []
        if channels_last:
            model.to(memory_format=torch.channels_last)

    def _head_params(self) -> list[nn.Parameter]:
        heads = getattr(self.model, "head_parameters", None)  # (a Classifier: the table columns' head too)
        return list(heads() if heads is not None else self.model.head.parameters())

    def _body_params(self) -> list[nn.Parameter]:
        head_ids = {id(p) for p in self._head_params()}
        return [p for p in self.model.parameters() if p.requires_grad and id(p) not in head_ids]

    def l2sp_penalty(self) -> torch.Tensor:
        total = torch.zeros((), device=self.device)
        for p, p0 in self._anchors:
            if p.requires_grad:
                total = total + (p - p0.to(p.device)).pow(2).sum()
        return 0.5 * self.l2sp * total

    def forward(self, batch: Any) -> torch.Tensor:
        return self.model(batch)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        x, y = batch
        if self.channels_last and isinstance(x, torch.Tensor) and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def on_train_start(self) -> None:
        self.on_train_epoch_start()  # a run resumed mid-epoch gets no epoch start

    def on_train_epoch_start(self) -> None:
        # Frozen layers keep their BatchNorm statistics and skip dropout.
        for g in self.frozen_groups:
            g.eval()
        if self.freeze_bn:
            # Trainable layers too keep BatchNorm in inference mode: with small data and few steps, batch
            # statistics drift from the running ones (TF-ported BN has momentum 0.01) and evaluation
            # collapses (Fashion-MNIST 500, 96 px: val acc 0.83 -> 0.55 in 2 epochs; 0.80 with BN frozen).
            for m in self.model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self.mixup is not None and len(y) % 2 == 0:  # timm's Mixup pairs samples: even batches only
            x, soft = self.mixup(x, y)
            loss = soft_cross_entropy(self.model(x), soft, self.class_weights)
        elif self.adversarial in ("fgsm", "pgd"):
            from .adversarial import image_adversarial_loss

            clean, adv = image_adversarial_loss(self.model, x, y, self.loss_fn, self._adv_target[0],
                                                self.adversarial, self.adv_steps)
            loss = 0.5 * (clean + adv)
        elif self.adversarial == "embedding":
            from .adversarial import embedding_adversarial_loss

            clean, adv = embedding_adversarial_loss(self.model, self._adv_target[0], x, y, self.loss_fn,
                                                    self.adv_eps)
            loss = 0.5 * (clean + adv)
        else:
            loss = self.loss_fn(self.model(x), y)
        if self._anchors:
            penalty = self.l2sp_penalty()
            self.log("train_l2sp", penalty, batch_size=len(y), sync_dist=False)
            loss = loss + penalty
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"the training loss became {loss.item()} at epoch {self.current_epoch + 1}, "
                                   f"step {self.global_step + 1}: training stopped and nothing was saved from "
                                   "it. Lower the learning rate (--lr), clip gradients (--grad-clip 1.0) or "
                                   "check the inputs")
        self.log("train_loss", loss, prog_bar=True, batch_size=len(y), sync_dist=False)
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # a finite loss can still have Inf/NaN gradients; one step with them makes every weight NaN
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if grads and not bool(torch.isfinite(torch.nn.utils.get_total_norm(grads))):
            raise TrainingDiverged(f"the gradients became non-finite (NaN/Inf) at epoch {self.current_epoch + 1}, "
                                   f"step {self.global_step + 1}, before the weights were updated: training "
                                   "stopped and nothing was saved from it. Lower the learning rate (--lr) or "
                                   "clip gradients (--grad-clip 1.0)")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self.model(x)
        self.log("val_loss", self.loss_fn(logits, y), batch_size=len(y), sync_dist=True, prog_bar=True)
        if self.joint is not None:  # (the score over the whole split, at the end)
            self._val_pairs.append(torch.cat([logits.float(), y.float()], dim=1).cpu())
            return
        if self.regression:
            self.log("val_score", -self.loss_fn(logits, y), batch_size=len(y), sync_dist=True)
            return
        if self.multilabel:
            self.log("val_acc", ((logits > 0) == (y > 0.5)).all(1).float().mean(), batch_size=len(y),
                     sync_dist=True, prog_bar=True)
            self._val_pairs.append(torch.cat([torch.sigmoid(logits.float()), y.float()], dim=1).cpu())
            return
        self.log("val_acc", (logits.argmax(1) == y).float().mean(), batch_size=len(y), sync_dist=True,
                 prog_bar=True)
        if self.metric != "accuracy":  # a metric over the whole split: kept per batch, computed at the end
            self._val_pairs.append(torch.stack([logits.argmax(1), y]).cpu())

    def on_validation_epoch_start(self) -> None:
        self._val_pairs = []

    def on_validation_epoch_end(self) -> None:
        """`val_score`: the run's metric (balanced accuracy, macro-F1) over the validation split, gathered from
        every process, for choosing the epoch (train.selection.selection_key)."""
        if self.joint is not None and self._val_pairs:
            rows = torch.cat(self._val_pairs)
            self._val_pairs = []
            if self.trainer.world_size > 1:
                gathered = self.all_gather(rows.to(self.device))
                assert isinstance(gathered, torch.Tensor)
                rows = gathered.cpu().reshape(-1, rows.shape[1])
            width = self.joint.width
            score = self.joint.score(rows[:, :width].numpy(), rows[:, width:].numpy())
            self.log("val_score", score, sync_dist=False, prog_bar=True)
            self.log("val_acc", score, sync_dist=False)
            return
        if self.multilabel and self._val_pairs:
            rows = torch.cat(self._val_pairs)
            self._val_pairs = []
            if self.trainer.world_size > 1:
                gathered = self.all_gather(rows.to(self.device))  # (world, n, 2 x labels)
                assert isinstance(gathered, torch.Tensor)
                rows = gathered.cpu().reshape(-1, rows.shape[1])
            from ..tasks.multilabel import tuned_micro_f1

            half = rows.shape[1] // 2
            self.log("val_score", tuned_micro_f1(rows[:, :half].numpy(), rows[:, half:].numpy()), sync_dist=False,
                     prog_bar=True)
            return
        if self.metric == "accuracy" or not self._val_pairs:
            return
        pairs = torch.cat(self._val_pairs, dim=1)
        self._val_pairs = []
        if self.trainer.world_size > 1:
            gathered = self.all_gather(pairs.to(self.device))  # (world, 2, n): the sampler pads ranks alike
            assert isinstance(gathered, torch.Tensor)
            pairs = gathered.cpu().permute(1, 0, 2).reshape(2, -1)
        from ..evaluate.metrics import metric_score

        pred, y = pairs[0].numpy(), pairs[1].numpy()
        self.log("val_score", metric_score(self.metric, y, pred, int(max(pred.max(), y.max())) + 1),
                 sync_dist=False, prog_bar=True)

    def param_groups(self) -> list[dict[str, Any]]:
        """The head at `head_lr`; the body at `lr` times its layer-decay multiplier, one group per value."""
        groups: list[dict[str, Any]] = [{"params": [p for p in self._head_params() if p.requires_grad],
                                         "lr": self.head_lr, "weight_decay": self.weight_decay, "name": "head"}]
        by_scale: dict[float, list[nn.Parameter]] = {}
        for p in self._body_params():
            by_scale.setdefault(self.lr_scale.get(id(p), 1.0), []).append(p)
        body_wd = 0.0 if self.l2sp > 0 else self.weight_decay
        for scale in sorted(by_scale, reverse=True):
            groups.append({"params": by_scale[scale], "lr": self.lr * scale, "weight_decay": body_wd,
                           "name": f"body x{scale:.4g}"})
        return groups

    def configure_optimizers(self) -> Any:
        groups = self.param_groups()
        if self.optimizer_name == "sgd":
            opt: torch.optim.Optimizer = torch.optim.SGD(groups, momentum=self.momentum,
                                                         nesterov=self.momentum > 0)
        else:
            opt = torch.optim.AdamW(groups)
        f = make_schedule(self.schedule, self.total_steps, int(self.warmup_frac * self.total_steps),
                          self.decay_beta)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, f)
        for param, first, scale in self._row_lr:
            _scale_row_updates(opt, param, first, scale)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _scale_row_updates(opt: torch.optim.Optimizer, param: nn.Parameter, first: int, scale: float) -> None:
    """Multiply the update the optimizer makes to param[first:] by `scale` at every step."""
    before: list[torch.Tensor] = []

    def pre(*_: Any) -> None:
        before[:] = [param.detach()[first:].clone()]

    def post(*_: Any) -> None:
        if before:
            with torch.no_grad():
                old = before.pop()
                param[first:] = old + scale * (param[first:] - old)

    opt.register_step_pre_hook(pre)
    opt.register_step_post_hook(post)


def soft_cross_entropy(logits: torch.Tensor, soft: torch.Tensor, class_weights: torch.Tensor | None = None
                       ) -> torch.Tensor:
    """Cross-entropy against soft targets (mixup/cutmix); with class weights, each sample is weighted by its
    targets' mix of class weights, normalised like nn.CrossEntropyLoss(weight=...)."""
    per = -(soft * torch.log_softmax(logits, dim=1)).sum(1)
    if class_weights is None:
        return per.mean()
    w = soft @ class_weights.to(soft.device, soft.dtype)
    return (per * w).sum() / w.sum().clamp(min=1e-12)


class History(pl.Callback):
    """Per-epoch metrics for the run summary and the model card. With `path`, rank 0 also writes them to a
    JSON file: under spawned/forked DDP the callbacks run in child processes, and the file carries the
    history back to the parent."""

    def __init__(self, path: str | None = None) -> None:
        self.epochs: list[dict[str, float]] = []
        self.path = path

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        row = {"epoch": trainer.current_epoch}
        for k, v in trainer.callback_metrics.items():
            if k.startswith(("val_", "train_")):
                row[k] = round(float(v), 6)
        self.epochs.append(row)
        if self.path and trainer.is_global_zero:
            with open(self.path, "w", encoding="utf-8") as f:
                json.dump(self.epochs, f)

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epochs = list(state["epochs"])

    def recovered(self) -> list[dict[str, float]]:
        """The epochs seen here, or those a child process wrote."""
        if not self.epochs and self.path and os.path.isfile(self.path):
            with open(self.path, encoding="utf-8") as f:
                self.epochs = json.load(f)
        return self.epochs


class EpochTimer(pl.Callback):
    """Wall seconds of each training epoch (what cached activations speed up)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._t0 = 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0 = time.perf_counter()  # (a run resumed mid-epoch starts here, without an epoch start)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds.append(round(time.perf_counter() - self._t0, 3))

    def state_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seconds = list(state["seconds"])


@torch.no_grad()
def evaluation_metrics(model: nn.Module, loader: Any, loss_fn: nn.Module, metric: str = "accuracy",
                       multilabel: bool = False, regression: bool = False, joint: Any = None) -> dict[str, float]:
    """{"val_loss", "val_acc"} of `model` (eval mode) over a (x, y) loader, the loss as `loss_fn` computes it
    (the same as the training module's validation loss: label smoothing and class weights included), batches
    weighted by their size like Lightning's epoch means; with another `metric`, also "val_score" as the
    training module logs it (multi-label: "val_acc" the subset accuracy at 0.5, "val_score" the micro-F1 at
    tuned thresholds)."""
    was = model.training
    model.eval()
    if joint is not None:  # several targets: the weighted mean of their scores (as logged in training)
        loss, n, outs, targets = 0.0, 0, [], []
        for x, y in loader:
            logits = model(x)
            loss += float(loss_fn(logits, y)) * len(y)
            n += len(y)
            outs.append(logits.float().cpu())
            targets.append(y.float().cpu())
        model.train(was)
        score = joint.score(torch.cat(outs).numpy(), torch.cat(targets).numpy())
        return {"val_loss": loss / max(1, n), "val_acc": score, "val_score": score}
    if regression:  # (mean squared error of the standardised target; val_score = minus it, as logged in training)
        loss, n = 0.0, 0
        for x, y in loader:
            loss += float(loss_fn(model(x), y)) * len(y)
            n += len(y)
        model.train(was)
        return {"val_loss": loss / max(1, n), "val_score": -loss / max(1, n)}
    if multilabel:
        from ..tasks.multilabel import tuned_micro_f1

        loss, n, probs, targets = 0.0, 0, [], []
        for x, y in loader:
            logits = model(x)
            loss += float(loss_fn(logits, y)) * len(y)
            n += len(y)
            probs.append(torch.sigmoid(logits.float()).cpu())
            targets.append(y.float().cpu())
        model.train(was)
        p, t = torch.cat(probs).numpy(), torch.cat(targets).numpy()
        return {"val_loss": loss / max(1, n), "val_acc": float(((p >= 0.5) == (t > 0.5)).all(1).mean()),
                "val_score": tuned_micro_f1(p, t)}
    loss, correct, n = 0.0, 0, 0
    preds, ys = [], []
    for x, y in loader:
        logits = model(x)
        loss += float(loss_fn(logits, y)) * len(y)
        correct += int((logits.argmax(1) == y).sum())
        n += len(y)
        preds.append(logits.argmax(1).cpu())
        ys.append(y.cpu())
    model.train(was)
    out = {"val_loss": loss / max(1, n), "val_acc": correct / max(1, n)}
    if metric != "accuracy" and n:
        from ..evaluate.metrics import metric_score

        pred, y_all = torch.cat(preds).numpy(), torch.cat(ys).numpy()
        out["val_score"] = metric_score(metric, y_all, pred, int(max(pred.max(), y_all.max())) + 1)
    return out
