"""Continued self-supervised pretraining of a text backbone (a transformers encoder) on unlabeled texts.

- `mlm`: masked-language modelling with transformers' `DataCollatorForLanguageModeling`. Sentence encoders such as
  all-MiniLM-L6-v2 ship without their masked-LM head: one is built from the encoder's config (its transform layer
  freshly initialised), wrapped around the backbone's own encoder module and tied to its input embeddings, so the
  decoder is the embedding matrix (new tokens included) and only the small transform is new. The head is dropped
  afterwards; the encoder is what is saved.
- `simcse`: unsupervised SimCSE (Gao et al., 2021): each text is encoded twice under different dropout masks and
  must pick its own twin among the batch's texts (InfoNCE at temperature 0.05), on the backbone's own pooling.
- `tsdae`: TSDAE (Wang et al., 2021): 60 % of each text's words (CJK: characters) are deleted, the encoder pools
  what is left into one sentence embedding, and a decoder tied to the encoder must rebuild the original text from
  that vector alone; the decoder's cross-attention layers are new and dropped afterwards.

Both train in place the backbone they are given, in a seeded order, with AdamW, linear warm-up and decay, and stop
at the end of `epochs` or when `time_budget` is spent, whichever comes first."""

from __future__ import annotations

import copy
import random
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
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
        raise ConfigError(f"{backbone.cfg.name}: its architecture has no masked-LM head to continue pretraining with")
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


def tsdae_decoder(backbone: Any) -> nn.Module:
    """TSDAE's decoder (Wang et al., 2021): a causal LM of the encoder's architecture whose layers share the
    encoder's modules (embeddings, self-attention, feed-forward: tied, as in the paper), with new cross-attention
    modules that read the sentence embedding only; its output layer is the (shared) input embedding matrix."""
    from transformers import AutoModelForCausalLM

    encoder = backbone.model
    config = copy.deepcopy(encoder.config)
    config.is_decoder, config.add_cross_attention, config.tie_word_embeddings = True, True, True
    try:
        # eager: the model then builds its causal mask as a tensor. The shared self-attention modules are the
        # encoder's (not causal themselves): under SDPA the model would leave the mask to them, and each position
        # would see the tokens it must predict
        decoder = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    except ValueError:
        raise ConfigError(f"{backbone.cfg.name}: its architecture has no causal-LM form for TSDAE's decoder; use "
                         "--method mlm or simcse") from None
    base = getattr(decoder, decoder.base_model_prefix)
    try:  # (BERT-style module names; other encoders have no shared layout to tie)
        base.embeddings = encoder.embeddings
        enc_layers, dec_layers = encoder.encoder.layer, base.encoder.layer
    except AttributeError:
        raise ConfigError(f"{backbone.cfg.name}: TSDAE's decoder ties BERT-style encoders (embeddings, encoder.layer) "
                         "only; use --method mlm or simcse") from None
    for enc, dec in zip(enc_layers, dec_layers, strict=True):
        for name, child in enc.named_children():
            if hasattr(dec, name):
                setattr(dec, name, child)
    out = decoder.get_output_embeddings()
    if out is None:
        raise ConfigError(f"{backbone.cfg.name}: its architecture has no LM head for TSDAE's decoder")
    out.weight = encoder.get_input_embeddings().weight
    return decoder


def tsdae_loss(backbone: Any, decoder: nn.Module, noisy: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
               ) -> torch.Tensor:
    """The decoder reconstructs each original text, token by token, from the sentence embedding of its damaged
    copy alone (cross-attention to that one vector)."""
    z = backbone(noisy)  # (B, H): the backbone's own pooling
    ids, mask = target["input_ids"], target["attention_mask"]
    logits = decoder(input_ids=ids[:, :-1], attention_mask=mask[:, :-1],
                     encoder_hidden_states=z[:, None, :]).logits
    labels = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)


def train_text(backbone: Any, texts: list[str], pc: PretrainConfig,
               progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Pretrain `backbone` (in place) on `texts`; returns the run's record: steps, examples seen, seconds, whether
    the time budget stopped it, the loss at the start and end and a curve of (step, mean loss) points."""
    torch.manual_seed(pc.seed)
    tok = backbone.tokenizer
    max_len = min(pc.max_tokens, backbone.cfg.max_tokens)
    batches = _batches([len(t) for t in texts], pc.batch, pc.epochs, pc.seed)
    if not batches:
        raise ConfigError("pretrain: fewer than 2 texts to train on")
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
    elif pc.method == "tsdae":
        from ..data.textnoise import perturb_text

        decoder = tsdae_decoder(backbone)
        model = nn.ModuleDict({"encoder": backbone.model, "decoder": decoder})
        encode = backbone.collator()
        encode.max_tokens = max_len
        drawn = [0]

        def loss_of(chunk: list[str]) -> torch.Tensor:
            drawn[0] += 1  # (a new deletion pattern each step, seeded)
            noisy = [perturb_text(t, "word_drop", pc.delete_prob, pc.seed + drawn[0], i) for i, t in enumerate(chunk)]
            return tsdae_loss(backbone, decoder, encode(noisy), encode(chunk))
    else:
        model = backbone.model
        encode = backbone.collator()
        encode.max_tokens = max_len

        def loss_of(chunk: list[str]) -> torch.Tensor:
            batch = encode(chunk)
            two = {k: torch.cat([v, v]) for k, v in batch.items()}  # (one pass, two dropout masks)
            z = nn.functional.normalize(backbone(two), dim=1)
            a, b = z[:len(chunk)], z[len(chunk):]
            logits = a @ b.T / pc.tau
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

    def step(opt: torch.optim.Optimizer) -> None:
        before = emb.detach()[first:].clone()
        opt.step()
        with torch.no_grad():  # (AdamW's step is proportional to lr: rescaling it is a per-row lr)
            emb[first:] = before + pc.new_token_lr_scale * (emb[first:] - before)

    def stop() -> None:
        backbone.model.eval()
        for param in backbone.model.parameters():
            param.requires_grad_(True)
        if hook is not None:
            hook.remove()

    from .loop import optimise

    # (no weight decay on the embeddings in new-tokens mode: it would shrink the pretrained rows it must not touch)
    run = optimise(model, [[texts[i] for i in idx] for idx in batches], loss_of, pc, progress, items=len(texts),
                   no_decay=[emb] if hook is not None else [],
                   step=step if added and pc.new_token_lr_scale != 1.0 else None, on_stop=stop)
    return {**run, "max_tokens": max_len}


def say(line: str) -> None:
    print(f"pretrain: {line}", file=sys.stderr, flush=True)
