"""Continued self-supervised pretraining of a text backbone (a transformers encoder) on unlabeled texts.

- `mlm`: masked-language modelling with transformers' `DataCollatorForLanguageModeling`. Sentence encoders such as
  all-MiniLM-L6-v2 ship without their masked-LM head: one is built from the encoder's config (its transform layer
  freshly initialised), wrapped around the backbone's own encoder module and tied to its input embeddings, so the
  decoder is the embedding matrix (new tokens included) and only the small transform is new. The head is dropped
  afterwards; the encoder is what is saved.
- `simcse`: unsupervised SimCSE (Gao et al., 2021): each text is encoded twice under different dropout masks and
  must pick its own twin among the batch's texts (InfoNCE at temperature 0.05), on the backbone's own pooling.

Both train in place the backbone they are given, in a seeded order, with AdamW, linear warm-up and decay, and stop
at the end of `epochs` or when `time_budget` is spent, whichever comes first."""

from __future__ import annotations

import copy
import math
import random
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .config import PretrainConfig


def _batches(lengths: list[int], batch: int, epochs: int, seed: int) -> list[list[int]]:
    """Shuffled index batches, epoch after epoch, of texts of similar lengths (sorted within pools of 50 batches,
    then the batches shuffled: padding is what a CPU step wastes most on). A trailing batch of one is dropped
    (SimCSE needs two texts)."""
    rng = random.Random(seed)
    out: list[list[int]] = []
    pool = 50 * batch
    for _ in range(epochs):
        order = list(range(len(lengths)))
        rng.shuffle(order)
        epoch: list[list[int]] = []
        for p in range(0, len(order), pool):
            chunk = sorted(order[p:p + pool], key=lengths.__getitem__)
            epoch += [chunk[s:s + batch] for s in range(0, len(chunk), batch) if len(chunk[s:s + batch]) >= 2]
        rng.shuffle(epoch)
        out += epoch
    return out


def masked_lm(backbone: Any) -> nn.Module:
    """A masked-LM model around the backbone's encoder: a head from the encoder's config, its decoder tied to the
    input embeddings (the encoder module itself is shared, not copied: training the wrapper trains the backbone)."""
    from transformers import AutoModelForMaskedLM

    encoder = backbone.model
    config = copy.deepcopy(encoder.config)
    config.tie_word_embeddings = True
    wrapper = AutoModelForMaskedLM.from_config(config)
    setattr(wrapper, wrapper.base_model_prefix, encoder)
    out = wrapper.get_output_embeddings()
    if out is None:
        raise ValueError(f"{backbone.cfg.name}: its architecture has no masked-LM head to continue pretraining with")
    out.weight = encoder.get_input_embeddings().weight  # (tied: the decoder is the embedding matrix)
    return wrapper


def mlm_loss(model: nn.Module, head: nn.Module | None, encoder: nn.Module, batch: dict[str, torch.Tensor]
             ) -> torch.Tensor:
    """The masked-LM loss of a collated batch: the encoder on every position, the head on the masked ones only
    (the same loss as `model(..., labels=...)`, without the decoder's cost on the unlabeled positions)."""
    if head is None:
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    hidden = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    picked = batch["labels"] != -100
    if not picked.any():  # (a batch of very short texts may draw no mask)
        return hidden.sum() * 0.0
    return nn.functional.cross_entropy(head(hidden[picked]), batch["labels"][picked])


def train_text(backbone: Any, texts: list[str], pc: PretrainConfig,
               progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Pretrain `backbone` (in place) on `texts`; returns the run's record: steps, examples seen, seconds, whether
    the time budget stopped it, the loss at the start and end and a curve of (step, mean loss) points."""
    torch.manual_seed(pc.seed)
    tok = backbone.tokenizer
    max_len = min(pc.max_tokens, backbone.cfg.max_tokens)
    batches = _batches([len(t) for t in texts], pc.batch_size, pc.epochs, pc.seed)
    if not batches:
        raise ValueError("pretrain: fewer than 2 texts to train on")
    if pc.method == "mlm":
        from transformers import DataCollatorForLanguageModeling

        model: nn.Module = masked_lm(backbone)
        collate = DataCollatorForLanguageModeling(tokenizer=tok, mlm_probability=pc.mask_prob)
        # the head on the masked positions only (BERT's `cls`, RoBERTa's `lm_head`): the decoder over the whole
        # vocabulary is most of a step's cost, and the other 85 % of positions have no label
        head = getattr(model, "cls", None) or getattr(model, "lm_head", None)

        def loss_of(chunk: list[str]) -> torch.Tensor:
            enc = tok(chunk, truncation=True, max_length=max_len, return_special_tokens_mask=True)
            batch = collate([{k: enc[k][i] for k in enc} for i in range(len(chunk))])
            return mlm_loss(model, head, backbone.model, batch)
    else:
        model = backbone.model
        encode = backbone.collator()
        encode.max_tokens = max_len

        def loss_of(chunk: list[str]) -> torch.Tensor:
            batch = encode(chunk)
            two = {k: torch.cat([v, v]) for k, v in batch.items()}  # (one pass, two dropout masks)
            z = nn.functional.normalize(backbone(two), dim=1)
            a, b = z[:len(chunk)], z[len(chunk):]
            logits = a @ b.T / pc.temperature
            return nn.functional.cross_entropy(logits, torch.arange(len(chunk)))

    emb = backbone.model.get_input_embeddings().weight
    added = len(backbone.cfg.extra.get("added_tokens", []))
    first = emb.shape[0] - added  # rows of the tokens extend_vocab added: they start at the mean
    hook = None
    if pc.trainable == "new-tokens":  # the encoder frozen; of the embeddings, the new rows only
        for param in backbone.model.parameters():
            param.requires_grad_(False)
        emb.requires_grad_(True)
        hook = emb.register_hook(lambda g: torch.cat([torch.zeros_like(g[:first]), g[first:]]))
    # (no weight decay on the embeddings in new-tokens mode: it would shrink the pretrained rows it must not touch)
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2
             and not (hook is not None and p is emb)]
    plain = [p for n, p in model.named_parameters() if p.requires_grad and (p.ndim < 2 or (hook is not None
                                                                                          and p is emb))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": pc.weight_decay},
                             {"params": plain, "weight_decay": 0.0}], lr=pc.peak_lr)
    total, warm = len(batches), max(1, int(pc.warmup * len(batches)))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (total - s) / max(1, total - warm)))
    budget = pc.budget_seconds()
    every = max(1, total // 50)
    curve: list[list[float]] = []
    window: list[float] = []
    model.train()
    t0, stopped, seen, steps = time.perf_counter(), False, 0, 0
    try:
        for step, idx in enumerate(batches):
            if budget is not None and time.perf_counter() - t0 > budget:
                stopped = True
                break
            loss = loss_of([texts[i] for i in idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            before = emb.detach()[first:].clone() if added and pc.new_token_lr_scale != 1.0 else None
            opt.step()
            if before is not None:  # (AdamW's step is proportional to lr: rescaling it is a per-row lr)
                with torch.no_grad():
                    emb[first:] = before + pc.new_token_lr_scale * (emb[first:] - before)
            sched.step()
            steps, seen = step + 1, seen + len(idx)
            window.append(float(loss.detach()))
            if steps % every == 0 or steps == total:
                curve.append([steps, round(sum(window) / len(window), 4)])
                window = []
                if progress is not None:
                    progress(f"step {steps}/{total}: {pc.method} loss {curve[-1][1]:.4f} "
                             f"({time.perf_counter() - t0:.0f} s)")
    finally:
        model.eval()
        backbone.model.eval()
        for param in backbone.model.parameters():
            param.requires_grad_(True)
        if hook is not None:
            hook.remove()
    if window:
        curve.append([steps, round(sum(window) / len(window), 4)])
    if not curve or not all(math.isfinite(v) for _, v in curve):
        raise RuntimeError(f"pretrain: the {pc.method} loss is not finite ({curve[-1:] or 'no step ran'}); lower lr")
    return {"steps": steps, "planned_steps": total, "texts_seen": seen, "epochs_done": round(seen / len(texts), 3),
            "seconds": round(time.perf_counter() - t0, 1), "stopped_by_time_budget": stopped,
            "loss_first": curve[0][1], "loss_last": curve[-1][1], "curve": curve, "lr": pc.peak_lr,
            "max_tokens": max_len}


def say(line: str) -> None:
    print(f"pretrain: {line}", file=sys.stderr, flush=True)
