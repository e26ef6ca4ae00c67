"""Backbones by name: built-ins, `timm:<arch>`, `hf:<hub id>` and local directories."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, FmadaptError
from .base import Backbone, BackboneCfg


@dataclass(frozen=True)
class BackboneEntry:
    name: str
    modality: str
    factory: Callable[..., Backbone]
    description: str


_REGISTRY: dict[str, BackboneEntry] = {}


def register_backbone(name: str, modality: str, description: str = "") -> Callable:
    """Decorator: `@register_backbone("my-net", "image")` on a `factory(pretrained=True) -> Backbone`."""

    def deco(factory: Callable[..., Backbone]) -> Callable[..., Backbone]:
        _REGISTRY[name] = BackboneEntry(name, modality, factory, description)
        return factory

    return deco


def list_backbones() -> list[BackboneEntry]:
    """Registered backbones (built-ins first). `timm:`/`hf:` names and directories also work."""
    return [_REGISTRY[k] for k in _REGISTRY]


def create_backbone(name: str, pretrained: bool = True) -> Backbone:
    """Build a backbone (in eval mode) by registry name, `timm:<arch>`, `hf:<hub id>` or a directory."""
    return _create(name, pretrained).eval()


def _create(name: str, pretrained: bool) -> Backbone:
    if name in _REGISTRY:
        return _REGISTRY[name].factory(pretrained=pretrained)
    if name.startswith("timm:"):
        from .vision import timm_backbone

        with _refusing_pickle(name):
            return timm_backbone(name[5:], pretrained=pretrained)
    if name.startswith("hf:"):
        from .text import hf_text_backbone

        with _refusing_pickle(name):
            return hf_text_backbone(name[3:], pretrained=pretrained)
    path = Path(name).expanduser()
    if path.is_dir():
        with _refusing_pickle(str(path)):
            return _from_directory(path, pretrained)
    if path.is_file():
        raise ConfigError(f"{path}: a backbone is a directory (config.json + model.safetensors), not a single file; "
                          "fmadapt never loads pickle-based .pt/.pth/.bin/.ckpt files. See `fmadapt backbones`.")
    known = ", ".join(sorted(_REGISTRY))
    raise ConfigError(
        f"unknown backbone {name!r}. Built-ins: {known}; or use timm:<architecture>, hf:<hub id>, "
        "or the path of a local checkpoint directory (see `fmadapt backbones`)."
    )


#: file names of pickle-based weights (torch.save, joblib, pickle): never loaded from a backbone directory
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib")
_CONVERT = ("fmadapt reads safetensors only: convert the weights once, in a Python session you trust them in "
            "(transformers: AutoModel.from_pretrained(DIR).save_pretrained(DIR); timm: safetensors.torch.save_file("
            "torch.load(FILE, weights_only=True), DIR + '/model.safetensors'))")


@contextlib.contextmanager
def _refusing_pickle(what: str) -> Iterator[None]:
    """While a backbone is built from a directory or the hub: torch.load (which transformers and timm fall back
    to for pytorch_model.bin and the like, if with weights_only=True) refuses outright, so no user-supplied
    file is ever unpickled; and any failure of the libraries becomes a ConfigError naming the backbone."""
    import torch

    real = torch.load

    def refuse(f: Any, *args: Any, **kwargs: Any) -> Any:
        raise ConfigError(f"{what}: refusing to unpickle {f} (pickle-based weights). {_CONVERT}")

    torch.load = refuse  # type: ignore[assignment]
    try:
        yield
    except FmadaptError:
        raise
    except Exception as e:  # transformers/timm: OSError, ValueError, RuntimeError, KeyError, ...
        msg = " ".join(str(e).split())[:400]
        if "refusing to unpickle" in msg:  # our refusal, re-wrapped by the library
            raise ConfigError(f"{what}: holds pickle-based weights only. {_CONVERT}") from None
        raise ConfigError(f"{what}: cannot load this backbone ({type(e).__name__}: {msg})") from None
    finally:
        torch.load = real  # type: ignore[assignment]


def _read_json(path: Path) -> Any:
    try:
        if path.stat().st_size > 64 << 20:
            raise ConfigError(f"{path}: too large for a configuration file")
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as e:  # malformed JSON, not UTF-8, over-long integers, deep nesting
        raise ConfigError(f"{path}: malformed JSON ({' '.join(str(e).split())[:200]})") from None
    except OSError as e:
        raise ConfigError(f"{path}: unreadable ({e.strerror or e})") from None


def _check_weight_files(path: Path, cfg: dict[str, Any]) -> None:
    """Refuse a directory whose weights would be read from anything but safetensors: pickle-only folders, a
    config.json pointing transformers at another file, a sharded index listing non-safetensors shards."""
    explicit = cfg.get("transformers_weights")
    if explicit is not None and not (isinstance(explicit, str) and explicit.endswith(
            (".safetensors", ".safetensors.index.json"))):
        raise ConfigError(f"{path / 'config.json'}: transformers_weights {str(explicit)[:80]!r} is not a safetensors "
                          f"file. {_CONVERT}")
    for index in sorted(path.glob("*.safetensors.index.json")):
        shards = _read_json(index)
        weight_map = shards.get("weight_map") if isinstance(shards, dict) else None
        if not isinstance(weight_map, dict) or not all(
                isinstance(f, str) and f.endswith(".safetensors") and "/" not in f and "\\" not in f
                for f in weight_map.values()):
            raise ConfigError(f"{index}: its weight_map must name .safetensors shards of this directory")
    if not any(path.glob("*.safetensors")):
        pickled = sorted(p.name for p in path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES and p.is_file())
        if pickled:
            raise ConfigError(f"{path}: holds pickle-based weights only ({', '.join(pickled[:3])}). {_CONVERT}")


def _from_directory(path: Path, pretrained: bool) -> Backbone:
    """A timm hub-style folder (config.json with "architecture") or a transformers/sentence-transformers
    folder (config.json with "model_type"). Weights are read from safetensors only."""
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise ConfigError(f"{path}: not a model directory (no config.json)")
    cfg = _read_json(cfg_file)
    if not isinstance(cfg, dict):
        raise ConfigError(f"{cfg_file}: expected a JSON object, got {type(cfg).__name__}")
    if pretrained:
        _check_weight_files(path, cfg)
    if "architecture" in cfg:
        import timm

        from .vision import timm_backbone

        arch = cfg["architecture"]
        if not isinstance(arch, str) or not timm.is_model(arch):
            raise ConfigError(f"{cfg_file}: architecture {str(arch)[:80]!r} is not a timm model name "
                              "(`timm.list_models()` lists them)")
        from .packaged import file_sha256

        weights = path / "model.safetensors"
        weights = weights if weights.is_file() else None
        # the folder's own preprocessing (timm's hub config: input size, mean, std, crop, interpolation)
        own = {k: v for k, v in (cfg.get("pretrained_cfg") or {}).items() if k in _TIMM_PREPROCESSING}
        kw = {"pretrained_cfg_overlay": {"file": str(weights), **own}} if weights and pretrained else {}
        bb = timm_backbone(arch, pretrained=bool(weights) and pretrained, name=str(path), **kw)
        bb.cfg.source = f"dir:{path}"
        # a checksum of the weights makes the folder identifiable: its features are cached like a packaged model's
        bb.cfg.sha256 = file_sha256(weights) if weights and pretrained else ""
        _measured_lr(path, bb)
        return bb
    if "model_type" in cfg:
        from .packaged import file_sha256
        from .text import hf_text_backbone

        st = path / "model.safetensors"
        text = hf_text_backbone(str(path), name=str(path), pretrained=pretrained, source=f"dir:{path}",
                                sha256=file_sha256(st) if pretrained and st.is_file() else "")
        _measured_lr(path, text)
        return text
    raise ConfigError(f"{cfg_file}: neither a timm ('architecture') nor a transformers ('model_type') config")


def backbone_record(model_dir: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """backbone.json's content for a model saved to `model_dir`. A backbone folder inside it (`fit --pretrain`'s
    OUT/pretrained-backbone) is also recorded relative to it, so the model directory can be moved or copied whole;
    one that `auto` pretrained into the cache is first copied there (a model must not depend on a cache)."""
    import shutil

    from ..data.cache import default_cache_dir

    name = str(cfg["name"])
    folder = Path(name).expanduser()
    if name in _REGISTRY or name.startswith(("timm:", "hf:")) or not folder.is_dir():  # (what `_create` reads)
        return cfg
    try:
        made = folder.resolve().relative_to((default_cache_dir() / "pretrained").resolve())
    except (ValueError, OSError):
        made = None
    if made is not None:
        target = model_dir / "pretrained-backbone"
        if target.exists():
            shutil.rmtree(target)
        model_dir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(folder, target)
        folder = target
    try:
        rel = folder.resolve().relative_to(model_dir.resolve())
    except (ValueError, OSError):
        return cfg
    return {**cfg, "extra": {**cfg.get("extra", {}), "model_relative_dir": rel.as_posix()}}


def backbone_location(model_dir: Path, cfg: BackboneCfg) -> str:
    """Where a saved model's backbone is built from: the folder inside the model directory it was saved with (when
    it is there), else its name."""
    rel = cfg.extra.get("model_relative_dir")
    if isinstance(rel, str) and rel and not Path(rel).is_absolute() and ".." not in Path(rel).parts \
            and (model_dir / rel).is_dir():
        return str((model_dir / rel).resolve())
    return cfg.name


#: what a timm folder's config.json `pretrained_cfg` may set of its preprocessing
_TIMM_PREPROCESSING = ("input_size", "mean", "std", "crop_pct", "interpolation", "license")


def _measured_lr(path: Path, bb: Backbone) -> None:
    """A folder `fmadapt pretrain` wrote keeps the fine-tuning rate measured for its source backbone."""
    made = _read_json(path / "pretrain.json") if (path / "pretrain.json").is_file() else None
    if isinstance(made, dict) and isinstance(made.get("finetune_lr"), float) and 0 < made["finetune_lr"] < 1:
        bb.cfg.finetune_lr = made["finetune_lr"]


@register_backbone("efficientnet_lite0", "image",
                   "EfficientNet-Lite0, ImageNet-1k, 4.7M params, 1280-d features (packaged, offline)")
def _efficientnet_lite0(pretrained: bool = True) -> Backbone:
    from .packaged import efficientnet_lite0

    return efficientnet_lite0(pretrained)


@register_backbone("minilm-l6", "text",
                   "all-MiniLM-L6-v2 sentence encoder, 22.7M params, 384-d features (packaged, offline)")
def _minilm_l6(pretrained: bool = True) -> Backbone:
    from .packaged import minilm_l6

    return minilm_l6(pretrained)


@register_backbone("speech-embedding", "audio",
                   "Google speech embedding (openwakeword 0.4.0's port), 330k params, 288-d pooled features "
                   "(packaged with the audio extra, offline)")
def _speech_embedding(pretrained: bool = True) -> Backbone:
    from .audio import speech_embedding

    return speech_embedding(pretrained)


@register_backbone("speech-embedding-attention", "audio",
                   "speech-embedding with a trainable attention over the windows (for --strategy finetune "
                   "--unfreeze 1; mean pooling until trained)")
def _speech_embedding_attention(pretrained: bool = True) -> Backbone:
    from .audio import speech_embedding

    return speech_embedding(pretrained, attention=True)
