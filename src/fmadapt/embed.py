"""`fmadapt embed`: features from a pretrained backbone for the user's own downstream use (fast path).

Texts whose backbone already ran in ONNX Runtime once (its graph exported, checked and remembered, see
runtime/light.py) are embedded without importing torch, transformers or Lightning; everything else (images, the
first run of a backbone, `runtime="torch"`) takes the PyTorch-side path, which then remembers the graph."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .data.examples import Examples
from .data.tables import infer_columns, marker_note, na_markers, read_table

DEFAULT_TEXT_BACKBONE = "minilm-l6"


def embed(data: str | os.PathLike[str] | pd.DataFrame, backbone: str | None = None, *, text_col: str | None = None,
          encoding: str = "auto", header: bool = True, image_size: int | None = None, batch_size: int = 64,
          cache: bool = True, runtime: str = "auto", progress: bool | None = None
          ) -> tuple[np.ndarray, pd.DataFrame]:
    """(features (N, D), table of N ids with an `error` column). A folder or file of images is image data, of
    sound files audio data, anything else a table of texts. One row per input, in input order; inputs that
    cannot be read get a NaN row and their reason in `error`, so rows stay aligned with the input."""
    from .data.cache import FeatureCache

    path = None if isinstance(data, pd.DataFrame) else Path(data)
    audio = path is not None and _is_audio(path)
    files = audio or (path is not None and (path.is_dir() or _is_image_file(path)))  # (not a table)
    if files:
        from .data.images import check_images, unlabeled_images

        ex = unlabeled_images(data, "audio" if audio else "image")
        if audio:
            from .data.audio import check_audio

            bad = check_audio(ex.inputs)[0]
        else:
            bad = check_images(ex.inputs)
    else:
        df, source = read_table(data, encoding=encoding, header=header)
        text, _ = infer_columns(df, text_col, None, source, need_label=False)
        # keep empty rows (NaN features) rather than dropping them: one output row per input row
        ex = Examples(inputs=["" if pd.isna(t) else str(t) for t in df[text]], labels=None,
                      ids=[str(i) for i in range(len(df))], source=source, modality="text")
        na = na_markers(df, text)
        bad = {str(i): f"missing text: {marker_note(na[i])}" if i in na else "empty text"
               for i, t in enumerate(ex.inputs) if not t.strip()}
    key = ex.inputs if files else ex.ids  # what `bad` is keyed by
    ok = [i for i, k in enumerate(key) if k not in bad]
    ids = pd.DataFrame({"id": ex.ids, "error": [bad.get(k) for k in key]})
    name = backbone or ("speech-embedding" if audio else "efficientnet_lite0" if files else DEFAULT_TEXT_BACKBONE)
    fc = FeatureCache() if cache else None
    if not files or audio:
        from .runtime.light import light_audio_encoder, light_encoder

        light: Any = light_audio_encoder(name, runtime) if audio else light_encoder(name, runtime)
        if light is not None:  # no torch: the remembered graph, the same batches and the same feature cache
            feats = np.full((len(ex), light.embed_dim), np.nan, dtype=np.float32)
            try:
                if ok:
                    feats[ok] = light.features([ex.inputs[i] for i in ok], fc, batch_size=batch_size)
                return feats, ids
            except Exception:  # noqa: S110 - e.g. a graph damaged since it loaded: the full path rebuilds it
                pass
    from .backbones import create_backbone
    from .runtime.features import extract_features

    bb = create_backbone(name)
    if bb.cfg.modality != ex.modality:
        from .errors import ConfigError

        raise ConfigError(f"backbone {name!r} reads {bb.cfg.modality}; {data} holds {ex.modality}")
    if image_size and files and not audio:
        bb.set_image_size(image_size)
    feats = np.full((len(ex), bb.cfg.embed_dim), np.nan, dtype=np.float32)
    if ok:
        feats[ok] = extract_features(bb, ex.subset(ok), batch_size=batch_size, cache=fc, runtime=runtime,
                                     progress=progress, desc="embedding")
        if not files or audio:
            from .runtime.light import remember

            remember(bb)  # created by name just above and only run since: its graph can serve later runs
    return feats, ids


def _is_audio(p: Path) -> bool:
    from .data.audio import is_audio_file, mostly_audio

    return mostly_audio(p) if p.is_dir() else is_audio_file(p)


_IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def _is_image_file(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in _IMAGE_EXT
