"""Training checkpoints without pickle, and exact resume.

A checkpoint is one safetensors file: the tensors (weights, optimizer moments, the best epoch's weights) as
tensors, everything else (loop counters, scheduler and callback states) as JSON in its metadata. Lightning
writes and reads it through `SafeCheckpointIO`, so a checkpoint file can never execute code, and it is
replaced atomically (old or new, never half-written).

`RunCheckpoints` is the checkpoint directory of one `fit`: run k (an ensemble or an auto search trains
several models) keeps `run-<k>.ckpt` (state at the end of its last finished epoch, or where SIGTERM stopped
it) and, once finished, `run-<k>.done.ckpt` (its final weights and history). Resuming repeats what is
deterministic and cheap (reading data, the probe that initialises the head) and continues each run from its
checkpoint; the continuation is exact (ResumableLoader; BatchSeeds for dropout and mixup)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.callbacks import Checkpoint
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from .._version import __version__
from ..artifact import nonfinite
from ..atomic import recover, write_file
from ..data.loader import mix_seed, seed_all
from ..errors import ArtifactError, ConfigError, TrainingInterrupted

META_KEY = "fmadapt_checkpoint"
FORMAT = 1


# -- the file format -------------------------------------------------------------------------------
def _encode(obj: Any, tensors: dict[str, torch.Tensor], where: str) -> Any:
    """JSON-able structure; tensors (and numpy arrays) replaced by references into `tensors`."""
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().to("cpu").contiguous().clone()  # clone: no shared storage in the file
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": _encode(torch.from_numpy(np.ascontiguousarray(obj)), tensors, where)["__tensor__"]}
    if isinstance(obj, np.generic):
        return _encode(obj.item(), tensors, where)
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"__float__": repr(obj)}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tensors, f"{where}.{k}") for k, v in obj.items()}
        return {"__items__": [[_encode(k, tensors, where), _encode(v, tensors, f"{where}[{k!r}]")]
                              for k, v in obj.items()]}
    raise ArtifactError(f"checkpoint: cannot store a {type(obj).__name__} at {where} (only tensors, numbers, "
                        "strings and containers of them)")


def _decode(obj: Any, tensors: Any) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if len(obj) == 1:
        (tag, val), = obj.items()
        if tag == "__tensor__":
            return tensors.get_tensor(val)
        if tag == "__ndarray__":
            return tensors.get_tensor(val).numpy()
        if tag == "__float__":
            return float(val)
        if tag == "__tuple__":
            return tuple(_decode(v, tensors) for v in val)
        if tag == "__items__":
            return {_decode(k, tensors): _decode(v, tensors) for k, v in val}
    return {k: _decode(v, tensors) for k, v in obj.items()}


def save_checkpoint(checkpoint: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write a checkpoint dict atomically; refuses non-finite weights (a diverged run must not overwrite
    the last good state)."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    structure = _encode(checkpoint, tensors, "checkpoint")
    bad = nonfinite(checkpoint.get("state_dict") or {})
    if bad:
        raise ArtifactError(f"{path}: refusing to save a checkpoint with non-finite (NaN/Inf) weights "
                            f"({bad[:3]}); the previous checkpoint is kept")
    meta = {META_KEY: json.dumps({"format": FORMAT, "fmadapt": __version__, "structure": structure})}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file(path, safetensors_bytes(tensors, metadata=meta))


def _open(path: Path) -> tuple[Any, dict[str, Any]]:
    if not path.is_file():
        raise ArtifactError(f"{path}: no such checkpoint")
    try:
        handle = safe_open(str(path), framework="pt")
        meta = json.loads((handle.metadata() or {})[META_KEY])
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or "structure" not in meta:
            raise ValueError("unknown format")
    except (SafetensorError, OSError, ValueError, KeyError, TypeError, RecursionError) as e:
        raise ArtifactError(f"{path}: not an fmadapt checkpoint ({type(e).__name__}: {e}). It is read as "
                            "safetensors only, never unpickled; delete it to start the run over") from e
    return handle, meta


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint dict written by `save_checkpoint` (safetensors + JSON: nothing is unpickled)."""
    handle, meta = _open(Path(path))
    try:
        return _decode(meta["structure"], handle)
    except (SafetensorError, KeyError, TypeError, ValueError, RecursionError) as e:
        raise ArtifactError(f"{path}: damaged checkpoint ({e}); delete it to start the run over") from e


def checkpoint_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What fmadapt recorded about a checkpoint (no tensors read)."""
    _, meta = _open(Path(path))
    info = meta["structure"].get("fmadapt") if isinstance(meta["structure"], dict) else None
    return _decode(info, None) if isinstance(info, dict) else {}


class SafeCheckpointIO(CheckpointIO):
    """Lightning's checkpoint I/O through `save_checkpoint`/`load_checkpoint` (instead of torch.save/load)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        save_checkpoint(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: Any = None) -> dict[str, Any]:
        return load_checkpoint(path)

    def remove_checkpoint(self, path: Any) -> None:
        Path(path).unlink(missing_ok=True)


# -- one fit's checkpoints -------------------------------------------------------------------------
def data_hash(ids: list[str], labels: list[str] | None) -> str:
    h = hashlib.sha256()
    for i, lab in zip(ids, labels or [""] * len(ids), strict=True):
        h.update(f"{i}\x00{lab}\x01".encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:16]


class RunCheckpoints:
    """The checkpoint directory of one fit (see the module docstring). `resume=False` refuses a directory
    that holds an unfinished run's checkpoints rather than overwriting them."""

    def __init__(self, directory: str | os.PathLike[str], resume: bool = False) -> None:
        self.dir = Path(directory)
        self.resume = resume
        self._next = 0
        self.resumed: list[str] = []  # what was continued, for the run summary
        existing = sorted(self.dir.glob("run-*.ckpt")) if self.dir.is_dir() else []
        if existing and not resume:
            raise ConfigError(f"{self.dir} holds the checkpoints of an unfinished run ({existing[0].name}, "
                              f"{time.ctime(existing[0].stat().st_mtime)}). Continue it with --resume (the same "
                              "data and options), or delete the directory to start over.")
        if resume:
            recover(self.dir)

    def slot(self, fingerprint: dict[str, Any]) -> RunSlot:
        k, self._next = self._next, self._next + 1
        return RunSlot(self, k, fingerprint)

    def remove(self) -> None:
        """Drop the checkpoints once the model they lead to is saved."""
        if self.dir.is_dir():
            for p in self.dir.iterdir():
                if p.name.startswith("run-") or ".fmadapt-tmp-" in p.name:
                    p.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # something else lives there: keep it
                self.dir.rmdir()


class RunSlot:
    """Checkpoints of the k-th training run of a fit."""

    def __init__(self, owner: RunCheckpoints, k: int, fingerprint: dict[str, Any]) -> None:
        self.owner, self.k, self.fingerprint = owner, k, json.loads(json.dumps(fingerprint, default=str))
        self.last = owner.dir / f"run-{k}.ckpt"
        self.done = owner.dir / f"run-{k}.done.ckpt"

    def _check(self, path: Path) -> dict[str, Any]:
        info = checkpoint_info(path)
        theirs = info.get("fingerprint") or {}
        if theirs != self.fingerprint:
            diff = sorted({k for k in set(theirs) | set(self.fingerprint) if theirs.get(k) != self.fingerprint.get(k)})
            if "config" in diff:
                a, b = theirs.get("config") or {}, self.fingerprint.get("config") or {}
                diff = [d for d in diff if d != "config"] + [f"option {k}" for k in sorted(set(a) | set(b))
                                                              if a.get(k) != b.get(k)]
            raise ConfigError(f"{path} was written for other data or options (differs in: {', '.join(diff)}). "
                              "Resume with the same data and options (`fmadapt fit --resume RUN_DIR` reuses "
                              "them), or delete the checkpoint to start over.")
        return info

    def resume_path(self) -> str | None:
        """The checkpoint Lightning continues from (None: start this run afresh)."""
        if not self.owner.resume or not self.last.is_file():
            return None
        info = self._check(self.last)
        self.owner.resumed.append(f"run {self.k}: from epoch {info.get('epoch')}, batch {info.get('batch')}")
        return str(self.last)

    def finished(self) -> dict[str, Any] | None:
        """{"state": model weights, "history": ...} when this run finished before the interruption."""
        if not self.owner.resume or not self.done.is_file():
            return None
        self._check(self.done)
        ck = load_checkpoint(self.done)
        self.owner.resumed.append(f"run {self.k}: already finished")
        return {"state": ck["state_dict"], "history": ck["history"]}

    def finish(self, state: dict[str, torch.Tensor], history: dict[str, Any]) -> None:
        save_checkpoint({"state_dict": state, "history": history,
                         "fmadapt": {"fingerprint": self.fingerprint, "kind": "finished"}}, self.done)
        self.last.unlink(missing_ok=True)

    def callback(self) -> Checkpointing:
        return Checkpointing(self)


class BatchSeeds(pl.Callback):
    """Reseeds the random generators before every training batch from (seed, epoch, batch, rank): dropout masks
    and mixup pairs then do not depend on what ran before, so a resumed run draws the same ones as an
    uninterrupted run (and a run with checkpoints the same as one without)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        seed_all(mix_seed(self.seed, trainer.current_epoch, batch_idx, trainer.global_rank, 2))


#: signals that save the run and stop it at the next batch boundary: (checkpoint kind, what to call it, exit code)
STOP_SIGNALS = {signal.SIGTERM: ("sigterm", "SIGTERM", 143), signal.SIGINT: ("sigint", "Ctrl-C", 130)}


class Checkpointing(Checkpoint):
    """Saves the run at the end of every epoch and, on SIGTERM or a first Ctrl-C, at the next batch boundary
    (then stops; a second Ctrl-C aborts at once). (A `Checkpoint` subclass: Lightning runs it after the other
    callbacks, so their epoch-end states are in the file.)"""

    def __init__(self, slot: RunSlot) -> None:
        self.slot = slot
        self.stop_requested: int | None = None  # the signal that asked
        self._previous: dict[int, Any] = {}
        self._trainer: pl.Trainer | None = None
        self._kind = "epoch-end"

    # state restored before training resumes: whether the run had already decided to stop early
    def state_dict(self) -> dict[str, Any]:
        return {"should_stop": bool(self._trainer and self._trainer.should_stop)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("should_stop") and self._trainer is not None:
            self._trainer.should_stop = True

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning's own SIGTERM handler stops at the next batch, also inside validation, where no exact
        # restart point exists; this one only records the request, acted on at a batch or epoch boundary
        if trainer.world_size == 1 and threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.stop_requested == signal.SIGINT and signum == signal.SIGINT:
            self._restore_handler()
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, from the last checkpoint written
        self.stop_requested = signum
        if signum == signal.SIGINT:
            sys.stderr.write("\nCtrl-C: saving the run at the end of this batch (Ctrl-C again: stop at once)\n")

    def _restore_handler(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.stop_requested and batch_idx + 1 < trainer.num_training_batches:
            self._save(trainer, STOP_SIGNALS[signal.Signals(self.stop_requested)][0], batch_idx + 1)
            self._stop(trainer, batch_idx + 1)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save(trainer, "epoch-end", int(trainer.num_training_batches))
        if self.stop_requested:  # (also after the last epoch: whatever follows may outlast the grace period)
            self._stop(trainer, int(trainer.num_training_batches))

    def _save(self, trainer: pl.Trainer, kind: str, batch: int) -> None:
        self._kind, self._batch = kind, batch
        trainer.save_checkpoint(self.slot.last)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        checkpoint["fmadapt"] = {"fingerprint": self.slot.fingerprint, "kind": self._kind,
                                 "epoch": trainer.current_epoch, "batch": getattr(self, "_batch", 0),
                                 "saved": time.time()}

    def _stop(self, trainer: pl.Trainer, batch: int) -> None:
        self._restore_handler()
        _, name, code = STOP_SIGNALS[signal.Signals(self.stop_requested or signal.SIGTERM)]
        err = TrainingInterrupted(
            f"stopped by {name} in epoch {trainer.current_epoch + 1} after batch {batch}; the state is saved in "
            f"{self.slot.last}. Continue with: fmadapt fit --resume RUN_DIR (or fit(..., resume=True)).")
        err.exit_code = code
        raise err

    # put Lightning's handler back before Lightning restores the one it found (its teardown comes before the
    # callbacks' `teardown` hook, which would reinstall Lightning's handler for good: SIGTERM then ignored)
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore_handler()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore_handler()
