"""`fmadapt embed`: features from a pretrained backbone for the user's own downstream use (fast path)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .adapt.features import extract_features
from .backbones import create_backbone
from .data.cache import FeatureCache
from .data.examples import Examples
from .data.images import check_images, unlabeled_images
from .data.tables import infer_columns, marker_note, na_markers, read_table


def embed(data: str | os.PathLike[str] | pd.DataFrame, backbone: str | None = None, *, text_col: str | None = None,
          encoding: str = "auto", header: bool = True, image_size: int | None = None, batch_size: int = 64,
          cache: bool = True, runtime: str = "auto", progress: bool | None = None
          ) -> tuple[np.ndarray, pd.DataFrame]:
    """(features (N, D), table of N ids with an `error` column). A folder/image file is image data, anything
    else a table of texts. One row per input, in input order; inputs that cannot be read get a NaN row and
    their reason in `error`, so rows stay aligned with the input."""
    is_image = not isinstance(data, pd.DataFrame) and (Path(data).is_dir() or _is_image_file(Path(data)))
    if is_image:
        ex = unlabeled_images(data)
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
    bb = create_backbone(backbone or ("efficientnet_lite0" if is_image else "minilm-l6"))
    if image_size and is_image:
        bb.set_image_size(image_size)
    key = ex.inputs if is_image else ex.ids  # what `bad` is keyed by
    ok = [i for i, k in enumerate(key) if k not in bad]
    feats = np.full((len(ex), bb.cfg.embed_dim), np.nan, dtype=np.float32)
    if ok:
        feats[ok] = extract_features(bb, ex.subset(ok), batch_size=batch_size, cache=FeatureCache() if cache else None,
                                     runtime=runtime, progress=progress, desc="embedding")
    ids = pd.DataFrame({"id": ex.ids, "error": [bad.get(k) for k in key]})
    return feats, ids


_IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def _is_image_file(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in _IMAGE_EXT
