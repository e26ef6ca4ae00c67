"""Continued pretraining for `--strategy auto` (auto.py): run within a share of the budget into the feature cache's
folder, keyed by the source backbone, the unlabeled inputs and the options, so a second search on the same inputs
reuses it; the saved model carries its own copy (backbones/registry.py `backbone_record`)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from .config import PretrainConfig


def pretrained_dir(cache_root: Path, backbone: str, inputs: list[str], modality: str, pc: PretrainConfig) -> Path:
    from . import fingerprint

    key = json.dumps({"backbone": backbone, "data": fingerprint(inputs, modality), "options": pc.to_dict()},
                     sort_keys=True)
    return cache_root / "pretrained" / hashlib.sha256(key.encode()).hexdigest()[:24]


def pretrain_within(cache_root: Path, backbone: str, inputs: list[str], modality: str, seconds: float,
                    extend_vocab: bool, image_size: int | None, seed: int, progress: bool
                    ) -> tuple[Path, dict[str, Any], bool]:
    """(the pretrained backbone folder, its pretrain.json record, whether an earlier run's folder was reused).
    Training stops after `seconds` (the record says after how many steps); no guard: auto judges on validation."""
    from . import pretrain

    pc = PretrainConfig(time_budget=f"{max(1, int(seconds))}s", extend_vocab=extend_vocab,
                        image_size=image_size if modality == "image" else None, seed=seed).resolved(modality)
    out = pretrained_dir(cache_root, backbone, inputs, modality, pc)
    done = out / "pretrain.json"
    if done.is_file():
        return out, json.loads(done.read_text(encoding="utf-8")), True
    if out.exists():
        shutil.rmtree(out)  # (an interrupted run)
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    record = pretrain(inputs, partial, backbone, pc, progress=progress, guard=False)
    partial.rename(out)
    return out, record, False
