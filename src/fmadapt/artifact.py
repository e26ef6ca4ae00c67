"""The model directory: safetensors + JSON only (nothing is ever unpickled), written atomically per file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ._version import __version__
from .backbones import BackboneCfg, create_backbone
from .errors import ArtifactError
from .model import Classifier

FORMAT_VERSION = 1
CALIBRATION = "int8_calibration.json"
WEIGHTS = "model.safetensors"


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise ArtifactError(f"{path}: missing. Is {path.parent} a model directory written by fmadapt?")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path}: malformed JSON ({e})") from e


def save_model(out: Path, model: Classifier, classes: list[str], config: dict[str, Any],
               include_backbone: bool) -> None:
    """config.json, labels.json, backbone.json and model.safetensors. When the backbone was frozen and its
    weights are identifiable (checksum), only the head is stored and the backbone is referenced."""
    out.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    adapter = getattr(model.backbone, "adapter", None)
    mode = "included" if include_backbone else "reference"
    if adapter and model.backbone.cfg.pretrained and model.backbone.cfg.extra.get("initial_sha256"):
        mode = "reference+adapter"  # pretrained weights untouched: store the head and the adapters only
    if mode != "included":
        state = {k: v for k, v in state.items() if k.startswith("head.") or (mode != "reference" and "lora_" in k)}
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    tmp = out / f".{WEIGHTS}.tmp{os.getpid()}"
    save_file(tensors, str(tmp), metadata={"format": "pt", "fmadapt": __version__})
    os.replace(tmp, out / WEIGHTS)
    write_json(out / "labels.json", classes)
    write_json(out / "backbone.json", model.backbone.cfg.to_dict())
    calibration = getattr(model.backbone, "int8_calibration", None)
    if calibration:  # int8 image runtime: activation ranges, so prediction rebuilds the same int8 graph
        write_json(out / CALIBRATION, calibration)
    else:
        (out / CALIBRATION).unlink(missing_ok=True)
    write_json(out / "config.json", {
        "fmadapt_version": __version__,
        "format_version": FORMAT_VERSION,
        "backbone_weights": mode,
        "num_classes": len(classes),
        **({"adapter": adapter} if adapter else {}),
        **config,
    })


def load_model(path: str | os.PathLike[str]) -> tuple[Classifier, list[str], dict[str, Any]]:
    """(model in eval mode, class names, config) from a model directory."""
    root = Path(path)
    if not root.is_dir():
        raise ArtifactError(f"{root}: no such model directory")
    config = read_json(root / "config.json")
    classes = read_json(root / "labels.json")
    bcfg = BackboneCfg.from_dict(read_json(root / "backbone.json"))
    if not isinstance(classes, list) or len(classes) != config.get("num_classes"):
        raise ArtifactError(f"{root / 'labels.json'}: expected a list of {config.get('num_classes')} class names")
    weights = root / WEIGHTS
    if not weights.is_file():
        raise ArtifactError(f"{weights}: missing")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise ArtifactError(f"{weights}: not a valid safetensors file ({e})") from e
    mode = config.get("backbone_weights")
    included = mode == "included"
    backbone = create_backbone(bcfg.name, pretrained=not included)
    expected = bcfg.extra.get("initial_sha256", "") if mode == "reference+adapter" else bcfg.sha256
    if not included and expected and backbone.cfg.sha256 != expected:
        raise ArtifactError(f"{root}: the installed {bcfg.name} weights (sha256 {backbone.cfg.sha256[:12]}…) "
                            f"differ from those the model was trained on ({expected[:12]}…)")
    if bcfg.modality == "image":
        backbone.set_image_size(bcfg.input_size)
    added = bcfg.extra.get("added_tokens")
    if added:  # extended vocabulary: the same tokens in the same order get the same ids as in training
        from .backbones.vocab import extend_vocabulary

        if not isinstance(added, list) or not all(isinstance(t, str) for t in added):
            raise ArtifactError(f"{root / 'backbone.json'}: extra.added_tokens must be a list of strings")
        extend_vocabulary(backbone, added)
    adapter = config.get("adapter")
    if adapter:
        from .adapt.lora import add_lora

        if not (isinstance(adapter, dict) and adapter.get("type") == "lora"
                and {"r", "alpha", "dropout", "targets"} <= set(adapter)):
            raise ArtifactError(f"{root / 'config.json'}: unknown adapter description {adapter!r}")
        add_lora(backbone, {k: adapter[k] for k in ("r", "alpha", "dropout", "targets")})
    model = Classifier(backbone, len(classes))
    missing, unexpected = model.load_state_dict(state, strict=False)
    # a referenced backbone comes from its package; the head, adapters (and an included backbone) must be complete
    bad_missing = [k for k in missing if included or k.startswith("head.") or "lora_" in k]
    if unexpected or bad_missing:
        raise ArtifactError(f"{weights}: tensors do not match the model "
                            f"(missing {bad_missing[:3]}, unexpected {list(unexpected)[:3]})")
    for p in model.parameters():
        p.requires_grad_(False)
    if (root / CALIBRATION).is_file():
        calibration = read_json(root / CALIBRATION)
        if not (isinstance(calibration, dict) and isinstance(calibration.get("graph"), str)
                and isinstance(calibration.get("ranges"), dict)):
            raise ArtifactError(f"{root / CALIBRATION}: not an fmadapt int8 calibration (delete it to calibrate "
                                "again on the data you predict)")
        backbone.int8_calibration = calibration
    return model.eval(), [str(c) for c in classes], config


def model_card(config: dict[str, Any], classes: list[str], metrics: dict[str, Any],
               data: dict[str, Any], command: str | None) -> str:
    """README.md of a model directory: what it is, what it was trained on, how well it does."""
    lines = [f"# fmadapt model: {config.get('task', 'classification')}", "",
             f"- backbone: `{config.get('backbone')}`", f"- strategy: `{config.get('strategy')}`",
             f"- classes ({len(classes)}): {', '.join(f'`{c}`' for c in classes[:50])}"]
    for split, n in data.get("sizes", {}).items():
        lines.append(f"- {split}: {n} examples")
    if data.get("skipped"):
        lines.append(f"- skipped inputs: {len(data['skipped'])} (see metrics.json)")
    lines += ["", "## Metrics", "", "| split | n | accuracy | macro-F1 | ECE |", "|---|---|---|---|---|"]
    for split, m in metrics.items():
        if isinstance(m, dict) and "accuracy" in m:
            lines.append(f"| {split} | {m['n']} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | {m['ece']:.4f} |")
    if command:
        lines += ["", "## Command", "", f"```\n{command}\n```"]
    lines += ["", "## Use", "", "```python", "from fmadapt import load_model",
              "clf = load_model('.')  # this directory", "clf.predict(...)", "```",
              "", "Files: `model.safetensors` (weights), `config.json`, `labels.json`, `backbone.json`, "
              "`metrics.json`. No pickle."]
    return "\n".join(lines) + "\n"
