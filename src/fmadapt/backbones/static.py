"""Static text embeddings (the Model2Vec recipe, re-implemented: the `model2vec` package pins transformers < 5.4):
one vector per token of a transformer's vocabulary — the transformer's own pooled output for that token alone
([CLS] token [SEP]), reduced by PCA — and a text's embedding is the mean of its tokens' vectors, through one
hidden layer (Linear + GELU; Model2Vec's classifiers have one too) unless `hidden` is 0. No attention: tens of times
faster than the transformer, with its tokenizer. `fmadapt distill --student static` builds
one from the teacher's (fine-tuned) encoder and trains it, with a new head, on the teacher's soft targets.

A static backbone keeps the name of the backbone it was made from (for its tokenizer) and records its size in
`cfg.extra["static"]`, so a saved model is rebuilt with the same shapes before its weights load
(`restore_structure`, called by artifact.load_model; cut layers and pruning are restored there too)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from .base import Backbone
from .text import TextCollator, _identity

DEFAULT_DIM = 256
#: the hidden layer's width (0: none, the mean goes to the head): +2.75 to +6.19 points over none in four comparisons,
#: SST-2 and AG News with and without unlabeled texts (benchmarks/notes/static_student.md)
DEFAULT_HIDDEN = 512
_CHUNK = 1024


class StaticTextBackbone(Backbone):
    """Token ids (B, T) -> the mean of their static vectors over real tokens (B, dim), through the hidden layer
    when there is one (B, hidden)."""

    def __init__(self, tokenizer: Any, embedding: nn.Embedding, cfg: Any, hidden: int = 0) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.embedding = embedding
        self.cfg = cfg
        dim = embedding.weight.shape[1]
        self.hidden = nn.Sequential(nn.Linear(dim, hidden), nn.GELU()) if hidden else None

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        m = batch["attention_mask"].unsqueeze(-1).to(self.embedding.weight.dtype)  # (B,T,1)
        mean = (self.embedding(batch["input_ids"]) * m).sum(1) / m.sum(1).clamp(min=1.0)
        return mean if self.hidden is None else self.hidden(mean)

    def layer_groups(self) -> list[nn.Module]:
        return [self.embedding] + ([self.hidden] if self.hidden is not None else [])

    def preprocessor(self, train: bool = False) -> Any:
        return _identity

    def collator(self) -> TextCollator:
        return TextCollator(self.tokenizer, self.cfg.max_tokens)


def _token_vectors(source: Any) -> torch.Tensor:
    """(V, H): the source encoder's pooled output for every token of its vocabulary alone."""
    tok = source.tokenizer
    n = len(tok)
    wrap = [t for t in (tok.cls_token_id, tok.sep_token_id) if t is not None]
    out = []
    was = source.training
    source.eval()
    with torch.inference_mode():
        for s in range(0, n, _CHUNK):
            ids = torch.arange(s, min(n, s + _CHUNK)).unsqueeze(1)  # (b, 1)
            if len(wrap) == 2:
                ids = torch.cat([torch.full_like(ids, wrap[0]), ids, torch.full_like(ids, wrap[1])], dim=1)
            out.append(source({"input_ids": ids, "attention_mask": torch.ones_like(ids)}).float())
    source.train(was)
    return torch.cat(out)


def static_from(source: Any, dim: int = DEFAULT_DIM, hidden: int = DEFAULT_HIDDEN) -> StaticTextBackbone:
    """A static backbone distilled from the text backbone `source` (its current weights): its token vectors,
    centred and reduced to `dim` dimensions by PCA (kept whole when `dim` >= their size), and a new hidden layer of
    `hidden` units (0: none)."""
    if source.cfg.modality != "text" or getattr(source, "tokenizer", None) is None:
        raise ValueError("a static student is made from a text backbone with a tokenizer")
    vectors = _token_vectors(source)
    dim = int(min(dim, vectors.shape[1]))
    centred = vectors - vectors.mean(0, keepdim=True)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    reduced = centred @ v[:dim].T  # (V, dim)
    emb = nn.Embedding(reduced.shape[0], dim)
    with torch.no_grad():
        emb.weight.copy_(reduced)
    return StaticTextBackbone(source.tokenizer, emb, _static_cfg(source.cfg, dim, hidden), hidden)


def _static_cfg(cfg: Any, dim: int, hidden: int = 0) -> Any:
    extra = {k: v for k, v in cfg.extra.items() if k not in ("kept_layers", "pruned")}
    shape = {"dim": dim, **({"hidden": hidden} if hidden else {})}  # (no "hidden": a model saved before it existed)
    return dataclasses.replace(cfg, embed_dim=hidden or dim, sha256="", pooling="mean", normalize=False,
                               extra={**extra, "static": shape})


def restore_structure(backbone: Any, extra: dict[str, Any]) -> Any:
    """The backbone a saved model was trained with, from the one its name builds: the encoder cut to
    `kept_layers`, its `pruned` heads and neurons (or image `channels`) removed, or made `static` (then a new object:
    returned)."""
    if extra.get("kept_layers") is not None:
        from .text import keep_layers

        keep_layers(backbone, [int(i) for i in extra["kept_layers"]])
    if extra.get("pruned") is not None:
        from ..compress.prune import apply as apply_pruning

        apply_pruning(backbone, extra["pruned"])
    if extra.get("channels") is not None:
        from ..compress.channels import apply_channels

        apply_channels(backbone, extra["channels"])
    static = extra.get("static")
    if static is not None:
        dim, hidden = int(static["dim"]), int(static.get("hidden", 0))
        if not (1 <= dim <= 65536 and 0 <= hidden <= 65536) or getattr(backbone, "tokenizer", None) is None:
            raise ValueError(f"a static backbone of {dim} dimensions (hidden layer: {hidden}) cannot be made from "
                             f"{backbone.cfg.name}")
        backbone = StaticTextBackbone(backbone.tokenizer, nn.Embedding(len(backbone.tokenizer), dim),
                                      _static_cfg(backbone.cfg, dim, hidden), hidden)
    return backbone
