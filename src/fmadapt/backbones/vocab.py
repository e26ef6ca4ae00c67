"""Vocabulary coverage of a text backbone's tokenizer on the user's texts, and extending it.

The packaged MiniLM knows 244 CJK characters: on Chinese news titles most characters become [UNK] and the
model cannot tell the texts apart. We measure the unknown-token rate on every text fit, warn above 5 %,
and `extend_vocab` adds the missing characters/words as tokens with initialised embeddings, to be learnt
by fine-tuning. With `extend_vocab_ngram` >= 2, frequent runs of 2..n CJK characters (words: Chinese and
Japanese do not separate them with spaces) are added too, so that a word can be one token with its own
embedding rather than a sequence of characters learnt from scratch. The added tokens are saved with the model
and re-added, in the same order (so with the same ids), when it is loaded: they are part of `backbone.json`.
The tokenizer matches added tokens leftmost-longest, before its own splitting: a text is cut into the longest
added words from left to right, the rest into characters."""

from __future__ import annotations

import random
import warnings
from collections import Counter
from typing import Any

import torch

from ..data.textnoise import is_unsegmented
from ..errors import ConfigError

UNK_WARN_RATE = 0.05
#: texts tokenized to measure coverage (a seeded sample; the rate is stable well before this)
COVERAGE_SAMPLE = 5000


def vocabulary_coverage(tokenizer: Any, texts: list[str], sample: int = COVERAGE_SAMPLE, seed: int = 0,
                        top: int = 20) -> dict[str, Any]:
    """{"unk_rate", "tokens", "unk_tokens", "texts_with_unk", "sampled", "missing": [(piece, count), ...]}.

    `missing` lists the input pieces that became the unknown token (via the tokenizer's offsets), most
    frequent first; all of them are counted, `top` are listed."""
    unk_id = getattr(tokenizer, "unk_token_id", None)
    if unk_id is None:  # byte-level BPE and the like: nothing is ever unknown
        return {"unk_rate": 0.0, "tokens": 0, "unk_tokens": 0, "texts_with_unk": 0, "sampled": 0, "missing": [],
                "missing_counts": {}}
    picked = texts if len(texts) <= sample else random.Random(seed).sample(texts, sample)
    missing: Counter[str] = Counter()
    n_tok = n_unk = n_texts = 0
    for start in range(0, len(picked), 256):
        chunk = [str(t) for t in picked[start:start + 256]]
        enc = tokenizer(chunk, add_special_tokens=False, return_offsets_mapping=True, truncation=False)
        for text, ids, offsets in zip(chunk, enc["input_ids"], enc["offset_mapping"], strict=True):
            unk = [k for k, i in enumerate(ids) if i == unk_id]
            n_tok += len(ids)
            n_unk += len(unk)
            n_texts += bool(unk)
            for k in unk:
                a, b = offsets[k]
                if b > a:
                    missing[text[a:b]] += 1
    return {"unk_rate": n_unk / max(1, n_tok), "tokens": n_tok, "unk_tokens": n_unk, "texts_with_unk": n_texts,
            "sampled": len(picked), "missing": missing.most_common(top), "missing_counts": dict(missing)}


def tokens_to_add(tokenizer: Any, texts: list[str], min_count: int = 2, max_new: int = 20000, ngram: int = 1,
                  word_min_count: int = 5) -> list[str]:
    """The unknown pieces seen at least `min_count` times in `texts` (all of them, not a sample), most frequent
    first (ties in first-seen order, so the result is deterministic); with `ngram` >= 2, then the CJK words of
    `frequent_words` the tokenizer does not already have. At most `max_new` in all, pieces first."""
    counts = vocabulary_coverage(tokenizer, texts, sample=len(texts) or 1)["missing_counts"]
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])  # stable: keeps first-seen order among ties
    pieces = [piece for piece, c in ranked if c >= min_count]
    if ngram >= 2:
        known = tokenizer.get_vocab()
        pieces += [w for w in frequent_words(texts, ngram, word_min_count) if w not in known]
    return pieces[:max_new]


def frequent_words(texts: list[str], longest: int = 2, min_count: int = 5) -> list[str]:
    """Runs of 2..`longest` consecutive CJK characters seen at least `min_count` times in `texts`, most frequent
    first (ties in first-seen order). Every run counts, overlapping ones too: "中国人" counts 中国, 国人 and
    (longest >= 3) 中国人; the tokenizer's leftmost-longest matching picks among them at tokenization."""
    counts: Counter[str] = Counter()
    for text in texts:
        text = str(text)
        run = 0  # length of the CJK run ending at i
        for i, ch in enumerate(text):
            run = run + 1 if is_unsegmented(ch) else 0
            for n in range(2, min(run, longest) + 1):
                counts[text[i + 1 - n:i + 1]] += 1
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])  # stable
    return [w for w, c in ranked if c >= min_count]


def extend_vocabulary(backbone: Any, new_tokens: list[str], init: str = "mean") -> int:
    """Add `new_tokens` to the backbone's tokenizer and embedding matrix; returns how many were added.

    New embedding rows start at the mean of the existing rows (Hewitt, 2021: keeps the initial outputs
    close to the pretrained ones) unless `init="zeros"`. Changes the backbone's identity (`cfg.extra`), so
    no feature cache or ONNX export of the original weights is ever used for it."""
    tokenizer, model = getattr(backbone, "tokenizer", None), getattr(backbone, "model", None)
    if tokenizer is None or model is None or not hasattr(model, "resize_token_embeddings"):
        raise ConfigError(f"backbone {backbone.cfg.name!r} has no tokenizer/embeddings to extend")
    before = len(tokenizer)
    new_tokens = list(dict.fromkeys(new_tokens))  # unique, order kept: ids follow this order
    added = tokenizer.add_tokens(new_tokens)
    if added == 0:
        return 0
    if added != len(new_tokens):
        raise ConfigError(f"{added} of {len(new_tokens)} tokens were new to the {backbone.cfg.name} tokenizer; "
                          "extend only with pieces it maps to the unknown token (tokens_to_add)")
    emb = model.get_input_embeddings()
    with torch.no_grad():
        mean = emb.weight[:before].mean(0)
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        emb = model.get_input_embeddings()
        emb.weight[before:] = 0.0 if init == "zeros" else mean
    # part of the backbone's identity (feature cache keys, ONNX fingerprints) and saved in backbone.json
    backbone.cfg.extra["added_tokens"] = list(backbone.cfg.extra.get("added_tokens", [])) + new_tokens
    return added


def vocabulary_report(backbone: Any, train: Any, cfg: Any, trains_backbone: bool) -> dict[str, Any]:
    """Unknown-token rate of the tokenizer on the training texts (`train`: Examples); with `cfg.extend_vocab`,
    the missing pieces become new tokens (before training, so that fine-tuning learns them); above
    UNK_WARN_RATE without it, a warning (also added to the training data's warnings)."""
    tok = getattr(backbone, "tokenizer", None)
    if tok is None:
        return {}
    cov = vocabulary_coverage(tok, train.inputs, seed=cfg.seed)
    info: dict[str, Any] = {"unk_rate": round(cov["unk_rate"], 4), "texts_with_unk": cov["texts_with_unk"],
                            "sampled_texts": cov["sampled"], "top_missing": [p for p, _ in cov["missing"]]}
    if cfg.extend_vocab:
        if not trains_backbone or cfg.unfreeze != -1:
            raise ConfigError("extend_vocab adds token embeddings that must be learnt: use a fine-tuning "
                              "strategy (finetune, progressive, l2sp) with all layers trainable (unfreeze -1)")
        new = tokens_to_add(tok, train.inputs, cfg.extend_vocab_min_count, ngram=cfg.extend_vocab_ngram,
                            word_min_count=cfg.extend_vocab_word_min_count)
        info["added_tokens"] = extend_vocabulary(backbone, new)
        if cfg.extend_vocab_ngram >= 2:
            info["added_words"] = sum(len(t) > 1 for t in new)
        info["unk_rate_after"] = round(vocabulary_coverage(tok, train.inputs, seed=cfg.seed)["unk_rate"], 4)
    elif cov["unk_rate"] > UNK_WARN_RATE:
        shown = "".join(info["top_missing"][:12]) if all(len(p) == 1 for p in info["top_missing"][:12]) \
            else ", ".join(info["top_missing"][:8])
        msg = (f"{cov['unk_rate']:.0%} of the training tokens are unknown to the {backbone.cfg.name} tokenizer "
               f"(e.g. {shown}): the model cannot tell them apart. Use --extend-vocab with --strategy "
               "finetune to add them as new tokens, --strategy auto (its n-gram TF-IDF candidate reads any "
               "script), or a backbone whose vocabulary covers this language")
        train.warnings.append(msg)
        warnings.warn(msg, stacklevel=4)
    return info
