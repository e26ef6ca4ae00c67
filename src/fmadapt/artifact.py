"""The model directory: safetensors + JSON only (nothing is ever unpickled). The files that make up the
model are committed together (`atomic.commit`): a crash leaves the old model or the new one."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from ._version import __version__
from .atomic import commit, recover, write_file
from .backbones import BackboneCfg, create_backbone
from .backbones.registry import backbone_location, backbone_record
from .errors import ArtifactError
from .model import Classifier

FORMAT_VERSION = 1
CALIBRATION = "int8_calibration.json"
WEIGHTS = "model.safetensors"


def write_text_atomic(path: Path, text: str) -> None:
    write_file(path, text)


def json_text(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def write_json(path: Path, obj: Any) -> None:
    write_file(path, json_text(obj))


def nonfinite(tensors: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors holding NaN or Inf."""
    return [k for k, t in tensors.items() if isinstance(t, torch.Tensor) and t.is_floating_point()
            and not bool(torch.isfinite(t).all())]


def check_finite(tensors: dict[str, torch.Tensor], where: str) -> None:
    """Refuse to store NaN/Inf weights: a diverged model must never overwrite a good one."""
    bad = nonfinite(tensors)
    if bad:
        raise ArtifactError(f"{where}: refusing to save non-finite (NaN/Inf) weights in {len(bad)} tensor(s), "
                            f"e.g. {bad[:3]}; training diverged: lower the learning rate")


def read_json(path: Path) -> Any:
    """A JSON file of a model directory; ArtifactError (naming the file) for anything but the JSON fmadapt
    writes there: missing, unreadable, oversized, not UTF-8, malformed, or of the wrong top-level shape."""
    if not path.is_file():
        raise ArtifactError(f"{path}: missing. Is {path.parent} a model directory written by fmadapt?")
    fix = "restore the file fmadapt wrote, or save the model again"
    try:
        if path.stat().st_size > 256 << 20:
            raise ArtifactError(f"{path}: {path.stat().st_size >> 20} MiB is far larger than any JSON fmadapt "
                                f"writes; {fix}")
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, over-long integers, nesting
        raise ArtifactError(f"{path}: malformed JSON ({' '.join(str(e).split())[:200]}); {fix}") from None
    except OSError as e:
        raise ArtifactError(f"{path}: unreadable ({e.strerror or e}); {fix}") from None
    # the top-level shape of the files fmadapt writes (model directory, run.json, evaluation/<source>/*.json)
    shapes = {"config.json": dict, "backbone.json": dict, "metrics.json": dict, "run.json": dict,
              "source.json": dict, "int8_calibration.json": dict, "robustness.json": dict, "fairness.json": dict,
              "labels.json": list, "explanations.json": list, "misclassified.json": list}
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    want = shapes.get(path.name)
    if want is not None and not isinstance(obj, want):
        raise ArtifactError(f"{path}: expected a JSON {names[want].split()[1]}, got "
                            f"{names.get(type(obj), 'something else')}; {fix}")
    if path.name == "config.json":  # read before anything validates it (ensemble listing, temperature)
        for key, kind in (("fit", dict), ("history", dict), ("calibration", dict), ("ensemble", list)):
            if obj.get(key) is not None and not isinstance(obj[key], kind):
                raise ArtifactError(f"{path}: {key!r} must be {names[kind]}, got "
                                    f"{names.get(type(obj[key]), 'something else')}; {fix}")
        if not all(isinstance(m, dict) and isinstance(m.get("dir"), str) and "\x00" not in m["dir"]
                   for m in obj.get("ensemble") or []):
            raise ArtifactError(f"{path}: 'ensemble' must list member directories ({{\"dir\": ...}}); {fix}")
    return obj


def save_model(out: Path, model: Classifier, classes: list[str], config: dict[str, Any],
               include_backbone: bool, extra_files: dict[str, Any] | None = None,
               remove: list[str] | None = None) -> None:
    """config.json, labels.json, backbone.json and model.safetensors (+ `extra_files`, e.g. metrics.json),
    committed together. When the backbone was frozen and its weights are identifiable (checksum), only the
    head is stored and the backbone is referenced."""
    state = model.state_dict()
    adapter = getattr(model.backbone, "adapter", None)
    mode = "included" if include_backbone else "reference"
    if adapter and model.backbone.cfg.pretrained and model.backbone.cfg.extra.get("initial_sha256"):
        mode = "reference+adapter"  # pretrained weights untouched: store the head and the adapters only
    if mode != "included":
        state = {k: v for k, v in state.items()
                 if k.startswith(("head.", "table_head.", "stack.")) or (mode != "reference" and "lora_" in k)}
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    check_finite(tensors, str(out / WEIGHTS))
    files: dict[str, Any] = {
        # one metadata key: safetensors writes its metadata map in a random order per process, so with two
        # keys the same weights gave two different files (and file hashes)
        WEIGHTS: safetensors_bytes(tensors, metadata={"format": "pt"}),
        "labels.json": json_text(classes),
        "backbone.json": json_text(backbone_record(out, model.backbone.cfg.to_dict())),
    }
    calibration = getattr(model.backbone, "int8_calibration", None)
    if calibration:  # int8 image runtime: activation ranges, so prediction rebuilds the same int8 graph
        files[CALIBRATION] = json_text(calibration)
    files["config.json"] = json_text({
        "fmadapt_version": __version__,
        "format_version": FORMAT_VERSION,
        "backbone_weights": mode,
        "num_classes": len(classes),
        **({"adapter": adapter} if adapter else {}),
        **config,
    })
    commit(out, {**files, **(extra_files or {})}, remove=[*(remove or []), *([] if calibration else [CALIBRATION])])


def load_model(path: str | os.PathLike[str]) -> tuple[Classifier, list[str], dict[str, Any]]:
    """(model in eval mode, class names, config) from a model directory."""
    root = Path(path)
    if not root.is_dir():
        raise ArtifactError(f"{root}: no such model directory")
    try:
        recover(root)  # a save killed after its commit point is finished; stale temporary files go
    except (OSError, ValueError, RecursionError) as e:  # a journal fmadapt did not write (nested, naming a folder)
        from .atomic import JOURNAL

        raise ArtifactError(f"{root / JOURNAL}: cannot finish the interrupted save it records "
                            f"({' '.join(str(e).split())[:200]}); delete it and check the model") from None
    # every file is checked for the shape fmadapt writes before anything is built from it: a damaged or
    # hostile file gives an ArtifactError naming it, never a traceback, and nothing is ever unpickled

    from .backbones.static import restore_structure
    from .config import FitConfig
    from .errors import FmadaptError
    from .strategies import check_strategy

    def _short(e: BaseException) -> str:
        return " ".join(str(e).split())[:300]

    fix = "restore the file fmadapt wrote, or save the model again"
    cfg_file, labels_file, bb_file = root / "config.json", root / "labels.json", root / "backbone.json"
    config = read_json(cfg_file)
    classes = read_json(labels_file)
    try:
        bcfg = BackboneCfg.from_dict(read_json(bb_file))
    except (TypeError, ValueError) as e:
        raise ArtifactError(f"{bb_file}: {_short(e)}; {fix}") from None
    n = config.get("num_classes")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ArtifactError(f"{cfg_file}: num_classes must be a positive integer, got {repr(n)[:40]}; {fix}")
    if len(classes) != n or not all(isinstance(c, str) for c in classes) or len(set(classes)) != n:
        raise ArtifactError(f"{labels_file}: expected a list of {n} distinct class names (strings), as config.json's "
                            f"num_classes says; {fix}")
    version = config.get("format_version", FORMAT_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise ArtifactError(f"{cfg_file}: format_version {str(version)[:40]} is not one fmadapt {__version__} "
                            f"reads (1 to {FORMAT_VERSION}); a newer fmadapt wrote it? Upgrade fmadapt")
    mode = config.get("backbone_weights")
    if mode not in ("included", "reference", "reference+adapter"):
        raise ArtifactError(f"{cfg_file}: backbone_weights must be 'included', 'reference' or "
                            f"'reference+adapter', got {str(mode)[:40]!r}; {fix}")
    try:  # the options the estimator is rebuilt from
        check_strategy(FitConfig.from_dict(config.get("fit", {})).strategy)
    except FmadaptError as e:
        raise ArtifactError(f"{cfg_file}: invalid 'fit' options ({_short(e)}); {fix}") from None
    weights = root / WEIGHTS
    if not weights.is_file():
        raise ArtifactError(f"{weights}: missing")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as e:  # header JSON + raw bytes only
        raise ArtifactError(f"{weights}: not a valid safetensors file ({_short(e)}); {fix}") from e
    included = mode == "included"
    try:
        backbone = create_backbone(backbone_location(root, bcfg), pretrained=not included)
    except Exception as e:  # unknown name, missing package, a backbone directory that is gone or refused
        raise ArtifactError(f"{bb_file}: the backbone {bcfg.name!r} it names cannot be loaded ({_short(e)})") from None
    if included:  # weights of their own (trained): never identified, or cached, as the pretrained ones
        backbone.cfg.sha256 = ""
    expected = bcfg.extra.get("initial_sha256", "") if mode == "reference+adapter" else bcfg.sha256
    if not included and expected and backbone.cfg.sha256 != expected:
        raise ArtifactError(f"{root}: the installed {bcfg.name} weights (sha256 {backbone.cfg.sha256[:12]}…) "
                            f"differ from those the model was trained on ({str(expected)[:12]}…)")
    if bcfg.modality == "image":
        backbone.set_image_size(bcfg.input_size, bcfg.crop_pct)
    elif bcfg.modality == "text" and bcfg.max_tokens < backbone.cfg.max_tokens:
        backbone.cfg.max_tokens = bcfg.max_tokens  # (fit's max_tokens: the model read no more in training)
    elif bcfg.modality == "audio" and "context_seconds" in bcfg.extra:  # the silence padding it was trained with
        backbone.cfg.extra["context_seconds"] = float(bcfg.extra["context_seconds"])
    added = bcfg.extra.get("added_tokens")
    if added:  # extended vocabulary: the same tokens in the same order get the same ids as in training
        from .backbones.vocab import extend_vocabulary

        if not isinstance(added, list) or not all(isinstance(t, str) for t in added):
            raise ArtifactError(f"{root / 'backbone.json'}: extra.added_tokens must be a list of strings")
        try:
            extend_vocabulary(backbone, added)
        except FmadaptError as e:
            raise ArtifactError(f"{bb_file}: extra.added_tokens cannot be added ({_short(e)}); {fix}") from None
    try:  # cut layers, pruned heads, static embeddings: the shapes the weights were saved with
        backbone = restore_structure(backbone, bcfg.extra)
    except (TypeError, ValueError, AttributeError, KeyError, RuntimeError) as e:
        raise ArtifactError(f"{bb_file}: its extra structure does not fit {bcfg.name!r} ({_short(e)}); {fix}") from None
    if (backbone.cfg.modality, backbone.cfg.embed_dim) != (bcfg.modality, bcfg.embed_dim):
        raise ArtifactError(f"{bb_file}: says {bcfg.name!r} is a {bcfg.modality} backbone with {bcfg.embed_dim}-d "
                            f"features; the installed one is a {backbone.cfg.modality} backbone with "
                            f"{backbone.cfg.embed_dim}-d features; {fix}")
    adapter = config.get("adapter")
    if adapter:
        from .backbones.adapters import add_lora

        r, alpha, drop, targets = (adapter.get(k) for k in ("r", "alpha", "dropout", "targets")) \
            if isinstance(adapter, dict) else (None, None, None, None)
        if not (isinstance(adapter, dict) and adapter.get("type") == "lora" and type(r) is int and 1 <= r <= 4096
                and type(alpha) in (int, float) and 0 < alpha < float("inf")
                and type(drop) in (int, float) and 0 <= drop < 1
                and isinstance(targets, list) and targets and all(isinstance(t, str) for t in targets)):
            raise ArtifactError(f"{root / 'config.json'}: unknown adapter description {str(adapter)[:200]}; {fix}")
        try:
            add_lora(backbone, {k: adapter[k] for k in ("r", "alpha", "dropout", "targets")})
        except Exception as e:  # e.g. target layers this backbone does not have
            raise ArtifactError(f"{cfg_file}: the adapter does not fit {bcfg.name!r} ({_short(e)}); {fix}") from None
    head = state.get("head.weight")
    if head is None or tuple(head.shape) != (n, bcfg.embed_dim):  # checked before the head is allocated
        raise ArtifactError(f"{weights}: head.weight must be {n} x {bcfg.embed_dim} (classes x features), got "
                            f"{None if head is None else tuple(head.shape)}; {fix}")
    table = state.get("table_head.weight")  # (a model reading table columns beside the text: `features`)
    if table is not None and (table.ndim != 2 or table.shape[0] != n or not 1 <= table.shape[1] <= 100_000):
        raise ArtifactError(f"{weights}: table_head.weight must be {n} x the encoded table width, got "
                            f"{tuple(table.shape)}; {fix}")
    stack = None
    if "stack.feature" in state:  # (table columns stacked late: boosted trees, adapt/tablestack.py)
        from .runtime.trees import TreeStack

        trees, nodes, outputs = (*state["stack.feature"].shape, *state.get("stack.baseline", torch.zeros(0)).shape)
        if not (1 <= trees <= 100_000 and 1 <= nodes <= 100_000 and 1 <= outputs <= n):
            raise ArtifactError(f"{weights}: stacked trees of shape {trees} x {nodes} with {outputs} output(s) do "
                                f"not fit a head of {n}; {fix}")
        scored = state.get("stack.classes", torch.zeros(0)).numel()  # (the classes the trees score)
        regression = bool(state.get("stack.regression", torch.tensor(False)))
        if not (regression and scored == 1 or not regression and scored == max(2, outputs) and scored <= n):
            raise ArtifactError(f"{weights}: stacked trees with {outputs} output(s) for {scored} class(es); {fix}")
        stack = TreeStack(trees, nodes, outputs, regression, scored)
    model = Classifier(backbone, len(classes), table_dim=0 if table is None else int(table.shape[1]), stack=stack)
    own = model.state_dict()
    wrong = [k for k, t in state.items() if k in own and (t.dtype != own[k].dtype or t.shape != own[k].shape)]
    if wrong:
        k = wrong[0]
        raise ArtifactError(f"{weights}: tensor {k} is {str(state[k].dtype)[6:]} {tuple(state[k].shape)}, the model "
                            f"needs {str(own[k].dtype)[6:]} {tuple(own[k].shape)} ({len(wrong)} such); {fix}")
    bad = nonfinite(state)
    if bad:
        raise ArtifactError(f"{weights}: non-finite (NaN/Inf) values in {len(bad)} tensor(s), e.g. {bad[:3]}; {fix}")
    missing, unexpected = model.load_state_dict(state, strict=False)
    # a referenced backbone comes from its package; the head, adapters (and an included backbone) must be complete
    bad_missing = [k for k in missing if included or k.startswith(("head.", "table_head.", "stack.")) or "lora_" in k]
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
    return model.eval(), list(classes), config


#: the metrics a model card's front matter lists, per task: (metrics.json key, Hugging Face metric type)
CARD_METRICS = {"classification": (("accuracy", "accuracy"), ("macro_f1", "f1")),
                "multilabel": (("micro_f1", "f1"), ("macro_f1", "f1"), ("subset_accuracy", "accuracy")),
                "regression": (("rmse", "rmse"), ("mae", "mae"), ("r2", "r_squared"))}


def card_front_matter(config: dict[str, Any], metrics: dict[str, Any], backbone: dict[str, Any] | None,
                      targets: dict[str, dict[str, Any]] | None = None) -> str:
    """The model card's YAML front matter in the Hugging Face layout (library, pipeline tag, tags, licence and base
    model of the backbone, and a model-index with the metrics of each split), so that the directory can be pushed
    to a hub as it is. `targets`: a model of several targets, {name: its metrics.json} (metrics named by target)."""
    import re

    import yaml

    def task_of(m: dict[str, Any]) -> str:
        return next((v.get("task") for v in m.values() if isinstance(v, dict) and v.get("task")), None) or (
            "classification")

    parts = {"": metrics} if targets is None else {f"{name} ": m for name, m in targets.items()}
    tasks = list(dict.fromkeys(task_of(m) for m in parts.values()))
    modality = next((m for m in ("image", "audio") if str(config.get("task", "")).startswith(m)), "text")
    pipeline = f"{modality}-classification"  # (the hub has no text-regression pipeline: regression is a tag)
    meta: dict[str, Any] = {"library_name": "fmadapt", "pipeline_tag": pipeline,
                            "tags": ["fmadapt", str(config.get("strategy")), *tasks,
                                     *(["multi-target"] if targets is not None else [])]}
    backbone = backbone or {}
    if backbone.get("license"):
        meta["license"] = str(backbone["license"])
    hub = re.search(r"(?:^hf:|\()([\w.-]+/[\w.-]+)\)?$", str(backbone.get("source", "")))
    if hub:
        meta["base_model"] = hub.group(1)
    results = []
    for prefix, part in parts.items():
        for split, m in part.items():
            if not isinstance(m, dict):
                continue
            found = [{"type": kind, "value": round(float(m[key]), 6), "name": f"{prefix}{split} {key}"}
                     for key, kind in CARD_METRICS.get(task_of(part), ()) if isinstance(m.get(key), (int, float))]
            if found:
                results.append({"task": {"type": pipeline}, "dataset": {"name": f"{split} split", "type": split},
                                "metrics": found})
    if results:
        meta["model-index"] = [{"name": f"fmadapt-{config.get('backbone')}-{config.get('strategy')}",
                                "results": results}]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\n"


def model_card(config: dict[str, Any], classes: list[str], metrics: dict[str, Any],
               data: dict[str, Any], command: str | None, backbone: dict[str, Any] | None = None) -> str:
    """README.md of a model directory: what it is, what it was trained on, how well it does (Hugging Face layout:
    YAML front matter, then sections)."""
    lines = [card_front_matter(config, metrics, backbone) + f"# fmadapt model: {config.get('task', 'classification')}",
             "",
             f"- backbone: `{config.get('backbone')}`", f"- strategy: `{config.get('strategy')}`",
             f"- classes ({len(classes)}): {', '.join(f'`{c}`' for c in classes[:50])}"]
    ngram = config.get("ngram")
    if isinstance(ngram, dict):
        lines.append(f"- n-gram TF-IDF model (`ngram.json`, `ngram.safetensors`): weight {ngram.get('weight')} "
                     "in the prediction, the model above the rest")
    for split, n in data.get("sizes", {}).items():
        lines.append(f"- {split}: {n} examples")
    if data.get("skipped"):
        lines.append(f"- skipped inputs: {len(data['skipped'])} (see metrics.json)")
    if any(isinstance(m, dict) and m.get("task") == "regression" for m in metrics.values()):
        lines += ["", "## Metrics", "", "Regression: the target's scale and the prediction intervals are in "
                  "`config.json` (\"target\", \"interval\").", "",
                  "| split | n | RMSE | MAE | R² | interval coverage |", "|---|---|---|---|---|---|"]
        lines += [f"| {split} | {m['n']} | {m['rmse']:.4f} | {m['mae']:.4f} | {m['r2']:.4f} | "
                  f"{m.get('interval_coverage', float('nan')):.4f} |"
                  for split, m in metrics.items() if isinstance(m, dict) and "rmse" in m]
    elif any(isinstance(m, dict) and m.get("task") == "multilabel" for m in metrics.values()):
        lines += ["", "## Metrics", "", "Multi-label: each label's decision threshold is in `config.json` "
                  "(\"thresholds\").", "", "| split | n | micro-F1 | macro-F1 | subset accuracy |",
                  "|---|---|---|---|---|"]
        lines += [f"| {split} | {m['n']} | {m['micro_f1']:.4f} | {m['macro_f1']:.4f} | {m['subset_accuracy']:.4f} |"
                  for split, m in metrics.items() if isinstance(m, dict) and "micro_f1" in m]
    else:
        lines += ["", "## Metrics", "", "| split | n | accuracy | macro-F1 | ECE |", "|---|---|---|---|---|"]
        lines += [f"| {split} | {m['n']} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | {m['ece']:.4f} |"
                  for split, m in metrics.items() if isinstance(m, dict) and "accuracy" in m]
    federation = (config.get("history") or {}).get("federation")
    if isinstance(federation, dict):
        from .federated.card import card_lines

        lines += card_lines(federation)
    if command:
        lines += ["", "## Command", "", f"```\n{command}\n```"]
    lines += ["", "## Use", "", "```python", "from fmadapt import load_model",
              "clf = load_model('.')  # this directory", "clf.predict(...)", "```",
              "", "Files: `model.safetensors` (weights), `config.json`, `labels.json`, `backbone.json`, "
              "`metrics.json`. No pickle."]
    return "\n".join(lines) + "\n"


def checked_listing(root: Path, listing: Any) -> list[dict[str, Any]]:
    """The member directories an ensemble's config.json lists (each inside the model directory)."""
    if not isinstance(listing, list) or not listing or not all(
            isinstance(m, dict) and isinstance(m.get("dir"), str) for m in listing):
        raise ArtifactError(f"{root / 'config.json'}: 'ensemble' must list member directories")
    for m in listing:
        p = (root / m["dir"]).resolve()
        if root.resolve() not in p.parents:
            raise ArtifactError(f"{root / 'config.json'}: member directory {m['dir']!r} lies outside the model")
    return listing


def stored_temperature(path: Path) -> float:
    """The calibration temperature config.json stores (1.0 when none), checked."""
    t = (read_json(path).get("calibration") or {}).get("temperature", 1.0)
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not (math.isfinite(t) and t > 0):
        raise ArtifactError(f"{path}: calibration temperature must be a positive number, got {t!r}; "
                            "set it to 1.0 to use the uncalibrated probabilities")
    return float(t)
