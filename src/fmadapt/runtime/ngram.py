"""The n-gram TF-IDF + linear model that `auto` may choose for texts (fitted in adapt/ngram.py), as prediction
needs it: probabilities from texts, and its files in a model directory. No torch here, so the torch-free
`fmadapt predict` (light_predict.py) serves it too.

Saved without pickle: `ngram.json` (options and vocabularies, terms in column order) and `ngram.safetensors`
(idf per vectorizer, the regression's weights); prediction rebuilds scikit-learn's vectorizers from them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import sparse

if TYPE_CHECKING:  # (scikit-learn is imported where a vectorizer is made: loading a model without one skips it)
    from sklearn.feature_extraction.text import TfidfVectorizer

from ..errors import ArtifactError

#: the vectorizers whose features are concatenated: character n-grams within word boundaries (any script,
#: spelling variants) and words and word pairs; chosen over characters alone and other ranges on the six text
#: sets of the defaults suite (benchmarks/notes/ngram.md)
ANALYZERS: tuple[dict[str, Any], ...] = ({"analyzer": "char_wb", "ngram_range": (1, 3)},
                                         {"analyzer": "word", "ngram_range": (1, 2)})
#: options every vectorizer shares; terms in fewer than MIN_DF training texts are dropped
COMMON: dict[str, Any] = {"sublinear_tf": True, "lowercase": True, "norm": "l2", "use_idf": True,
                          "smooth_idf": True}
MIN_DF = 2
#: the most frequent terms kept per vectorizer (bounds memory and fit time on large tables)
MAX_FEATURES = 200_000
FILES = ("ngram.json", "ngram.safetensors")


class NgramModel:
    """TF-IDF vectorizers + linear weights over their concatenated features -> class probabilities."""

    def __init__(self, vectorizers: list[TfidfVectorizer], coef: np.ndarray, intercept: np.ndarray,
                 info: dict[str, Any] | None = None) -> None:
        self.vectorizers, self.coef, self.intercept = vectorizers, coef, intercept
        self.info = dict(info or {})

    # -- features ------------------------------------------------------------------------------
    @staticmethod
    def fit_vectorizers(texts: list[str]) -> tuple[list[TfidfVectorizer], sparse.csr_matrix]:
        from sklearn.feature_extraction.text import TfidfVectorizer

        vecs, parts = [], []
        for spec in ANALYZERS:
            v = TfidfVectorizer(**spec, **COMMON, min_df=min(MIN_DF, max(1, len(texts) // 2)),
                                max_features=MAX_FEATURES, dtype=np.float32)
            try:
                parts.append(v.fit_transform(texts))
            except ValueError:  # no term survives (e.g. word pairs of one-word texts): an empty block
                v = _empty(spec)
                parts.append(sparse.csr_matrix((len(texts), 0), dtype=np.float32))
            vecs.append(v)
        return vecs, sparse.hstack(parts, format="csr")

    def features(self, texts: list[str]) -> sparse.csr_matrix:
        return _transform(self.vectorizers, texts)

    def logits(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.features(texts) @ self.coef.T, dtype=np.float64) + self.intercept

    def proba(self, texts: list[str]) -> np.ndarray:
        """(N, n_classes) probabilities."""
        if not len(texts):
            return np.zeros((0, len(self.intercept)))
        return _softmax(self.logits(texts))

    def spec(self) -> dict[str, Any]:
        """What computing the features needs, as plain JSON: per vectorizer its options, its terms in column
        order, their idf and its first column (`offset`); `width` columns in all (an exported model's ngram.json)."""
        out, offset = [], 0
        for v in self.vectorizers:
            terms = _terms(v)
            out.append({**_spec(v), "lowercase": bool(v.lowercase), "sublinear_tf": bool(v.sublinear_tf),
                        "norm": v.norm, "token_pattern": v.token_pattern, "offset": offset, "terms": terms,
                        "idf": [float(x) for x in _idf(v)]})
            offset += len(terms)
        return {"vectorizers": out, "width": offset}

    @property
    def n_features(self) -> int:
        return int(self.coef.shape[1])

    # -- persistence ---------------------------------------------------------------------------
    def files(self) -> dict[str, bytes]:
        """{file name: content} for a model directory (JSON + safetensors; nothing pickled)."""
        from safetensors.numpy import save

        meta = {"format": 1, "common": COMMON, "info": self.info, "vectorizers": [
            {**_spec(v), "min_df": v.min_df, "max_features": v.max_features,
             "vocabulary": _terms(v)} for v in self.vectorizers]}
        tensors = {"coef": np.ascontiguousarray(self.coef, dtype=np.float32),
                   "intercept": np.ascontiguousarray(self.intercept, dtype=np.float32)}
        for i, v in enumerate(self.vectorizers):
            tensors[f"idf.{i}"] = np.ascontiguousarray(_idf(v), dtype=np.float32)
        return {"ngram.json": json.dumps(meta, ensure_ascii=False).encode("utf-8"),
                "ngram.safetensors": save(tensors, metadata={"format": "np"})}

    @classmethod
    def load(cls, root: str | Path, n_classes: int) -> NgramModel:
        """Read what `files` wrote; anything malformed raises ArtifactError naming the file."""
        from safetensors.numpy import load_file

        root = Path(root)
        meta_path, weights_path = root / FILES[0], root / FILES[1]
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            tensors = load_file(str(weights_path))
        except (OSError, ValueError) as e:
            raise ArtifactError(f"{meta_path.parent}: the n-gram model ({', '.join(FILES)}) cannot be read "
                                f"({e}); save the model again") from None
        try:
            if meta.get("format") != 1:
                raise ValueError(f"format {meta.get('format')!r} is not one this fmadapt reads")
            vecs = []
            for i, spec in enumerate(meta["vectorizers"]):
                terms = spec["vocabulary"]
                idf = tensors[f"idf.{i}"]
                if spec["analyzer"] not in ("char_wb", "char", "word") or not all(isinstance(t, str) for t in terms) \
                        or idf.shape != (len(terms),) or len(set(terms)) != len(terms):
                    raise ValueError(f"vectorizer {i} is inconsistent")
                vecs.append(_rebuilt(spec, meta.get("common", COMMON), terms, idf))
            coef, intercept = tensors["coef"].astype(np.float64), tensors["intercept"].astype(np.float64)
            width = sum(len(_terms(v)) for v in vecs)
            if coef.shape != (n_classes, width) or intercept.shape != (n_classes,) \
                    or not (np.isfinite(coef).all() and np.isfinite(intercept).all()):
                raise ValueError(f"weights of shape {coef.shape} do not fit {n_classes} classes x {width} terms")
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ArtifactError(f"{meta_path}: malformed n-gram model ({e}); save the model again") from None
        return cls(vecs, coef, intercept, meta.get("info") or {})


def blend(p_probe: np.ndarray, p_ngram: np.ndarray, weight: float) -> np.ndarray:
    """The stack's probabilities: (1 - weight) · probe + weight · n-gram model."""
    return (1.0 - weight) * p_probe + weight * p_ngram


def combined(neural: Callable[[], np.ndarray], ngram: NgramModel | None, weight: float, texts: list[str]
             ) -> np.ndarray:
    """A model's probabilities (float32, before its temperature): `neural()` alone, the n-gram model alone
    (weight 1: `neural` is never called) or their blend. The one rule of the full and the torch-free path."""
    if ngram is None or weight <= 0.0:
        return neural()
    p = ngram.proba(texts)
    if weight < 1.0:
        p = blend(np.asarray(neural(), dtype=np.float64), p, weight)
    return p.astype(np.float32)


# -- helpers --------------------------------------------------------------------------------------
def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def _transform(vecs: list[TfidfVectorizer], texts: list[str]) -> sparse.csr_matrix:
    parts = [v.transform(texts) if _terms(v) else sparse.csr_matrix((len(texts), 0), dtype=np.float32)
             for v in vecs]
    return sparse.hstack(parts, format="csr")


def _spec(v: TfidfVectorizer) -> dict[str, Any]:
    return {"analyzer": v.analyzer, "ngram_range": list(v.ngram_range)}


def _terms(v: TfidfVectorizer) -> list[str]:
    vocab = getattr(v, "vocabulary_", None) or {}
    terms = [""] * len(vocab)
    for t, i in vocab.items():
        terms[i] = t
    return terms


def _idf(v: TfidfVectorizer) -> np.ndarray:
    return np.asarray(v.idf_) if _terms(v) else np.zeros(0, dtype=np.float32)


def _empty(spec: dict[str, Any]) -> TfidfVectorizer:
    from sklearn.feature_extraction.text import TfidfVectorizer

    v = TfidfVectorizer(**spec, **COMMON, dtype=np.float32)
    v.vocabulary_ = {}
    return v


def _rebuilt(spec: dict[str, Any], common: dict[str, Any], terms: list[str], idf: np.ndarray) -> TfidfVectorizer:
    flags = {k: common[k] for k in ("sublinear_tf", "lowercase", "use_idf", "smooth_idf") if k in common}
    low, high = (int(n) for n in spec["ngram_range"])
    if not all(isinstance(f, bool) for f in flags.values()) or common.get("norm", "l2") not in ("l1", "l2", None) \
            or not 1 <= low <= high <= 10:
        raise ValueError("vectorizer options out of range")
    from sklearn.feature_extraction.text import TfidfVectorizer

    # (min_df and max_features only matter when fitting; prediction uses the stored vocabulary)
    v = TfidfVectorizer(analyzer=spec["analyzer"], ngram_range=(low, high), dtype=np.float32,
                        norm=common.get("norm", "l2"), **flags)
    v.vocabulary_ = {t: i for i, t in enumerate(terms)}
    if terms:
        v.idf_ = idf.astype(np.float64)
    return v
