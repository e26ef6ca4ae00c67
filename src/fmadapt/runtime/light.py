"""Torch-free inference from a cached ONNX graph: texts with tokenizers + onnxruntime + numpy, sound files with
soundfile + soxr + onnxruntime + numpy (`fmadapt embed`).

`fmadapt embed` and `fmadapt predict` of a frozen-backbone model spent most of their time importing torch,
transformers and Lightning and building the backbone in PyTorch, only to run its cached ONNX graph
(benchmarks/notes/fastpath.md). The first run of a backbone still takes that path: it exports the graph, checks it
against PyTorch (runtime/onnx.py) and then `remember`s it here, in an index entry beside the graphs:

    <cache>/onnx/light/<name>-<hash>.json    the backbone's config (BackboneCfg.to_dict()), the graphs that passed
                                             the parity check (fp32, int8), tokenizer settings, and the size and
                                             mtime of the files the backbone was built from
    <cache>/onnx/light/<fingerprint>-tokenizer.json   the tokenizer exactly as transformers built it

Later runs find the entry by backbone name and run the very same graph on the very same token ids, in the same
length-sorted batches, so the features are those of the PyTorch-side ONNX path. An entry is written only for a
backbone as created by its name (pristine pretrained weights, identifiable by checksum), and used only while the
files it was built from and the fmadapt version are unchanged; anything else is the full path's business."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..data.cache import FeatureCache, default_cache_dir

INDEX_VERSION = 1
#: FMADAPT_FAST_PATH=0 turns the torch-free path off (the full path then runs every time)
ENV_SWITCH = "FMADAPT_FAST_PATH"
_MAX_FILES = 200


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def light_dir() -> Path:
    return default_cache_dir() / "onnx" / "light"


def _entry_path(name: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[-60:]
    return light_dir() / f"{safe}-{hashlib.sha256(name.encode()).hexdigest()[:16]}.json"


def default_threads() -> int:
    """What torch.get_num_threads() gives the PyTorch-side sessions: $OMP_NUM_THREADS, else the physical cores
    available to this process (hyper-threads slow ONNX Runtime's matrix products down rather than up)."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        import psutil

        n = min(n, psutil.cpu_count(logical=False) or n)
    except ImportError:  # pragma: no cover - psutil comes with lightning
        pass
    return max(1, n)


def _file_stamps(backbone: Any) -> list[dict[str, Any]] | None:
    """(path, size, mtime) of the files of the directory the backbone was built from; [] when it was not built
    from files; None when there are too many to watch."""
    root = str(getattr(getattr(backbone, "model", None), "name_or_path", "") or "")
    if not root or not Path(root).is_dir():
        return []
    files = sorted(p for p in Path(root).rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    if len(files) > _MAX_FILES:
        return None
    return [{"path": str(p), "size": (st := p.stat()).st_size, "mtime_ns": st.st_mtime_ns} for p in files]


#: the modules whose code decides the graph, the backbone's config and the token ids an entry stands for: an entry
#: is used only while none of them changed (an upgrade of transformers, torch or tokenizers, or of fmadapt in place)
_CODE = ("transformers", "torch", "tokenizers", "fmadapt.backbones.base", "fmadapt.backbones.text",
         "fmadapt.backbones.packaged", "fmadapt.backbones.registry", "fmadapt.runtime.onnx", "fmadapt.runtime.int8",
         "fmadapt.runtime.light")


def _code_stamps() -> list[dict[str, Any]]:
    import sys

    paths = [getattr(sys.modules.get(m), "__file__", None) for m in _CODE]
    return [{"path": p, "size": (st := os.stat(p)).st_size, "mtime_ns": st.st_mtime_ns} for p in paths if p]


def remember(backbone: Any) -> bool:
    """Record the ONNX graphs ONNX Runtime ran for `backbone` in this process, for torch-free reuse. Callers pass
    only a backbone as created by its name (`create_backbone`), never one whose weights changed since. Never
    fails a run: returns whether an entry was written."""
    try:
        return _remember(backbone)
    except Exception:  # an index that cannot be written only costs speed
        return False


def _remember(backbone: Any) -> bool:
    cfg = backbone.cfg
    if cfg.modality == "audio":
        return _remember_audio(backbone)
    tok = getattr(backbone, "tokenizer", None)
    backend = getattr(tok, "backend_tokenizer", None)
    if cfg.modality != "text" or not (cfg.pretrained and cfg.sha256) or cfg.extra.get("added_tokens") \
            or backend is None:
        return False
    from . import onnx as rt

    if backbone not in rt._FINGERPRINTS:  # ONNX Runtime did not run this backbone in this process
        return False
    fp = rt.weights_fingerprint(backbone)
    graphs = {kind: enc.path for kind, enc in (("fp32", rt._SESSIONS.get(fp)), ("int8", rt._SESSIONS.get("int8:" + fp)))
              if enc is not None}
    stamps = _file_stamps(backbone)
    if not graphs or stamps is None:
        return False
    stamps += _code_stamps()
    light_dir().mkdir(parents=True, exist_ok=True)
    tok_json = backend.to_str()  # named by its content: a tokenizer built differently is another file
    tok_file = light_dir() / f"{hashlib.sha256(tok_json.encode()).hexdigest()[:24]}-tokenizer.json"
    if not tok_file.is_file():
        _write_atomic(tok_file, tok_json)
    entry = {
        "index_version": INDEX_VERSION, "fmadapt": __version__, "name": cfg.name, "cfg": cfg.to_dict(),
        "fingerprint": fp, "files": stamps, "graphs": graphs, "tokenizer": str(tok_file),
        "max_tokens": int(cfg.max_tokens), "pad_id": int(tok.pad_token_id or 0), "pad_token": str(tok.pad_token),
        "pad_type_id": int(getattr(tok, "pad_token_type_id", 0) or 0), "padding_side": str(tok.padding_side),
        "truncation_side": str(getattr(tok, "truncation_side", "right")),
    }
    old = load_entry(cfg.name)
    if old is not None and all(old.get(k) == entry[k] for k in ("fingerprint", "cfg", "files", "tokenizer")):
        if all(old["graphs"].get(k) == v for k, v in graphs.items()):
            return True
        entry["graphs"] = {**old["graphs"], **graphs}
    _write_atomic(_entry_path(cfg.name), json.dumps(entry, indent=1))
    return True


def _remember_audio(backbone: Any) -> bool:
    """The speech embedding's graph: its entry watches the two ONNX files it was built from and the code that
    reads sound files and builds the graph."""
    cfg = backbone.cfg
    if not (cfg.pretrained and cfg.sha256) or cfg.name != "speech-embedding":
        return False
    from ..backbones.audio import SHA256, speech_model_dir
    from . import onnx as rt

    if backbone not in rt._FINGERPRINTS:
        return False
    fp = rt.weights_fingerprint(backbone)
    enc = rt._SESSIONS.get(fp)
    if enc is None:
        return False
    import sys

    files = [str(speech_model_dir() / n) for n in SHA256]
    files += [p for p in (getattr(sys.modules.get(m), "__file__", None) for m in AUDIO_CODE) if p]
    stamps = [{"path": p, "size": (st := os.stat(p)).st_size, "mtime_ns": st.st_mtime_ns} for p in files]
    entry = {"index_version": INDEX_VERSION, "fmadapt": __version__, "name": cfg.name, "cfg": cfg.to_dict(),
             "fingerprint": fp, "files": stamps + _code_stamps(), "graphs": {"fp32": enc.path}, "tokenizer": None}
    light_dir().mkdir(parents=True, exist_ok=True)
    _write_atomic(_entry_path(cfg.name), json.dumps(entry, indent=1))
    return True


#: what decides an audio entry's features besides _CODE: the backbone and the reading of sound files
AUDIO_CODE = ("fmadapt.backbones.audio", "fmadapt.data.audio")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def load_entry(name: str) -> dict[str, Any] | None:
    """The index entry of backbone `name`, or None when there is none or it no longer describes what is
    installed (fmadapt upgraded, the backbone's files changed, a graph gone)."""
    p = _entry_path(name)
    try:
        e = json.loads(p.read_text(encoding="utf-8"))
        if not (e.get("index_version") == INDEX_VERSION and e.get("fmadapt") == __version__ and e.get("name") == name
                and isinstance(e.get("cfg"), dict) and isinstance(e.get("graphs"), dict)):
            return None
        for f in e["files"]:
            st = os.stat(f["path"])
            if st.st_size != f["size"] or st.st_mtime_ns != f["mtime_ns"]:
                return None
        if e["tokenizer"] is not None and not Path(e["tokenizer"]).is_file():
            return None
        if not any(Path(g).is_file() for g in e["graphs"].values()):
            return None
        return e
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


class LightTextEncoder:
    """Texts -> (N, D) float32 features with a remembered graph; what `extract_features` computes for them."""

    def __init__(self, entry: dict[str, Any], runtime: str) -> None:
        from tokenizers import Tokenizer

        self.entry, self.cfg = entry, entry["cfg"]
        self.variant = "int8" if runtime == "int8" else ""  # the feature cache's variant, as extract_features
        self.graph = entry["graphs"]["int8" if runtime == "int8" else "fp32"]
        tok = Tokenizer.from_file(entry["tokenizer"])
        # what transformers' fast tokenizer sets for padding=True, truncation=True, max_length=max_tokens
        tok.enable_truncation(max_length=entry["max_tokens"], stride=0, strategy="longest_first",
                              direction=entry["truncation_side"])
        tok.no_padding()  # each batch is padded below, to its longest text, as transformers pads it
        self.tokenizer = tok
        self.pad_left = entry["padding_side"] == "left"
        self.session = _session(self.graph)

    @property
    def embed_dim(self) -> int:
        return int(self.cfg["embed_dim"])

    def batch(self, encodings: list[Any]) -> dict[str, np.ndarray]:
        """Unpadded encodings -> the padded (B, T) int64 inputs the graph takes."""
        width = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), width), self.entry["pad_id"], dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        for r, e in enumerate(encodings):
            cols = slice(width - len(e.ids), width) if self.pad_left else slice(0, len(e.ids))
            ids[r, cols], mask[r, cols] = e.ids, e.attention_mask
        return {"input_ids": ids, "attention_mask": mask}

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Batches sorted by token count, as extract_features (far less padding); results in input order."""
        enc = self.tokenizer.encode_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: len(enc[i].ids))
        out = np.empty((len(texts), self.embed_dim), dtype=np.float32)
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            out[idx] = self.session.run(["features"], self.batch([enc[i] for i in idx]))[0]
        return out

    def features(self, texts: list[str], cache: FeatureCache | None, batch_size: int = 64) -> np.ndarray:
        """`encode`, read from and written to the feature cache under the key the PyTorch path uses."""
        return _cached(cache, self.cfg, texts, "text", self.variant, lambda: self.encode(texts, batch_size))


def _session(graph: str) -> Any:
    """An ONNX Runtime session set as runtime/onnx.py's OnnxEncoder sets its own: same graph, same kernels, same
    numbers."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = default_threads()
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(graph, so, providers=["CPUExecutionProvider"])


def _cached(cache: FeatureCache | None, cfg: dict[str, Any], inputs: list[str], modality: str, variant: str,
            compute: Any) -> np.ndarray:
    """Features read from and written to the feature cache under the key the PyTorch path uses."""
    key = cache.key(cfg, inputs, modality, variant) if cache else None
    hit = cache.get(key, len(inputs)) if cache else None
    if hit is not None:
        return hit
    feats = compute()
    if cache:
        cache.put(key, feats)
    return feats


class LightAudioEncoder:
    """Sound files -> (N, D) float32 features with the remembered speech-embedding graph: decoded and resampled
    as data/audio.py does, padded as backbones/audio.py's AudioPreprocess does, in the same batches as
    extract_features (input order)."""

    def __init__(self, entry: dict[str, Any]) -> None:
        self.cfg = entry["cfg"]
        extra = self.cfg["extra"]
        self.rate = int(extra["sample_rate"])
        self.pad = int(round(float(extra["context_seconds"]) * self.rate))
        self.min_samples = int(extra["n_fft"]) + (int(extra["window_frames"]) - 1) * int(extra["hop"])
        self.session = _session(entry["graphs"]["fp32"])

    @property
    def embed_dim(self) -> int:
        return int(self.cfg["embed_dim"])

    def encode(self, paths: list[str], batch_size: int = 64) -> np.ndarray:
        from ..data.audio import batch_clips, load_audio, pad_clip

        out = np.empty((len(paths), self.embed_dim), dtype=np.float32)
        for s in range(0, len(paths), batch_size):
            waves = [pad_clip(load_audio(p, self.rate), self.pad, self.min_samples) for p in paths[s:s + batch_size]]
            batch, lengths = batch_clips(waves)
            out[s:s + len(waves)] = self.session.run(["features"], {"waveform": batch, "lengths": lengths})[0]
        return out

    def features(self, paths: list[str], cache: FeatureCache | None, batch_size: int = 64) -> np.ndarray:
        return _cached(cache, self.cfg, paths, "audio", "", lambda: self.encode(paths, batch_size))


def light_encoder(name: str, runtime: str) -> LightTextEncoder | None:
    """The torch-free encoder of backbone `name` for `runtime` (auto/onnx: fp32, int8), or None when the full
    path must run (turned off, nothing remembered yet, the graph unreadable, onnxruntime/tokenizers missing)."""
    if not enabled() or runtime not in ("auto", "onnx", "int8"):
        return None
    entry = load_entry(name)
    if entry is None or not Path(entry["graphs"].get("int8" if runtime == "int8" else "fp32", "")).is_file():
        return None
    try:
        return LightTextEncoder(entry, runtime) if entry["tokenizer"] is not None else None
    except Exception:  # a damaged graph or tokenizer file: the full path deletes and rebuilds it
        return None


def light_audio_encoder(name: str, runtime: str) -> LightAudioEncoder | None:
    """The torch-free encoder of a remembered sound backbone (fp32 only), or None when the full path must run."""
    if not enabled() or runtime not in ("auto", "onnx"):
        return None
    entry = load_entry(name)
    if entry is None or entry["tokenizer"] is not None or not Path(entry["graphs"].get("fp32", "")).is_file():
        return None
    try:
        return LightAudioEncoder(entry)
    except Exception:  # a damaged graph: the full path rebuilds it
        return None
