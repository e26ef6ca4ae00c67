"""On-disk cache of frozen features, keyed by backbone identity + preprocessing + input content.

A second run on the same data with the same backbone skips extraction entirely."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # backbones.base imports torch; the torch-free inference path (runtime/light.py) uses this module
    from ..backbones.base import BackboneCfg

CACHE_VERSION = 1
#: MemoryFeatureCache's keys of live (not identifiable) backbones start so
LIVE = "live-"


def default_cache_dir() -> Path:
    env = os.environ.get("FMADAPT_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fmadapt"


def content_hash(item: str, modality: str) -> str:
    """Hash of what the model sees: file bytes for images and sounds, the string for texts."""
    h = hashlib.blake2b(digest_size=16)
    if modality in ("image", "audio"):
        with open(item, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    else:
        h.update(item.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def backbone_key(cfg: BackboneCfg | dict[str, Any]) -> str | None:
    """None when the weights are not identifiable (random init, unknown checksum): never cache those. `cfg`: a
    BackboneCfg or its `to_dict()` (what the torch-free inference path has)."""
    d = cfg if isinstance(cfg, dict) else cfg.to_dict()
    if not d.get("pretrained") or not d.get("sha256"):
        return None
    ident = {k: v for k, v in d.items() if k not in ("license", "source", "extra")}
    ident["cache_version"] = CACHE_VERSION
    added = (d.get("extra") or {}).get("added_tokens")
    if added:  # an extended vocabulary tokenizes (and embeds) differently
        ident["added_tokens"] = hashlib.sha256("\n".join(added).encode()).hexdigest()
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]


class FeatureCache:
    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root else default_cache_dir() / "features"

    def key(self, cfg: BackboneCfg | dict[str, Any], inputs: list[str], modality: str, variant: str = "") -> str | None:
        bkey = backbone_key(cfg)
        if bkey is None:
            return None
        h = hashlib.sha256((bkey + variant).encode())
        for item in inputs:
            h.update(content_hash(item, modality).encode())
        return f"{bkey}/{h.hexdigest()[:32]}"

    def _path(self, key: str) -> Path:
        return self.root / f"{key}.npy"

    def get(self, key: str | None, n: int) -> np.ndarray | None:
        if key is None:
            return None
        p = self._path(key)
        if not p.is_file():
            return None
        # Anything but the float32 (n, D) array `put` writes is a damaged (or planted) entry: recomputed and
        # overwritten. Never unpickled (allow_pickle=False refuses object arrays and pickle files), and a zip
        # (.npz, or a torch.save file under this name) is not opened as an archive.
        try:
            with open(p, "rb") as f:
                if f.read(6) != b"\x93NUMPY":
                    return None
            arr = np.load(p, allow_pickle=False)
        except (ValueError, OSError, EOFError):
            return None
        if not (isinstance(arr, np.ndarray) and arr.dtype == np.float32 and arr.ndim == 2 and arr.shape[0] == n
                and bool(np.isfinite(arr).all())):
            return None
        return arr

    def put(self, key: str | None, feats: np.ndarray) -> None:
        if key is None:
            return
        p = self._path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(f".tmp{os.getpid()}.npy")
        np.save(tmp, feats.astype(np.float32), allow_pickle=False)
        os.replace(tmp, p)  # atomic: a killed run never leaves a half-written entry under the real name


class MemoryFeatureCache(FeatureCache):
    """Features kept in memory for one job in which several heads read the same inputs' features (several
    targets of one table), in front of the disk cache when there is one. Keys as FeatureCache's: features of a
    backbone that is not identifiable are never kept."""

    def __init__(self, disk: FeatureCache | None = None) -> None:
        super().__init__(disk.root if disk is not None else None)
        self.disk = disk
        self._kept: dict[str, np.ndarray] = {}

    def key(self, cfg: BackboneCfg | dict[str, Any], inputs: list[str], modality: str, variant: str = ""
            ) -> str | None:
        """FeatureCache's key; for a backbone that is not identifiable (fine-tuned weights), a key of that live
        backbone object, valid while this cache lives and never written to disk."""
        found = super().key(cfg, inputs, modality, variant)
        if found is not None or isinstance(cfg, dict):
            return found
        h = hashlib.sha256(variant.encode())
        for item in inputs:
            h.update(content_hash(item, modality).encode())
        return f"{LIVE}{id(cfg)}/{h.hexdigest()[:32]}"

    def get(self, key: str | None, n: int) -> np.ndarray | None:
        if key is None:
            return None
        hit = self._kept.get(key)
        if hit is None and self.disk is not None and not key.startswith(LIVE):
            hit = self.disk.get(key, n)
        if hit is None or hit.shape[0] != n:
            return None
        self._kept[key] = hit
        return hit

    def put(self, key: str | None, feats: np.ndarray) -> None:
        if key is None:
            return
        self._kept[key] = feats.astype(np.float32)
        if self.disk is not None and not key.startswith(LIVE):
            self.disk.put(key, feats)
