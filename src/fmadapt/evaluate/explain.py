"""Why did the model say that? Captum attributions for a sample of right and wrong predictions.

Images: Integrated Gradients (or plain saliency) w.r.t. the normalised input tensor, shown as a heatmap
blended over the image as the model saw it (after resize and crop). Texts: Layer Integrated Gradients on the
input embedding layer, summed per token and merged into words. Everything runs the eager PyTorch model
(never the ONNX runtime a model may predict with), in eval mode, with gradients switched on only here.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.examples import Examples
from .explain_tasks import headline, pick_rows

METHODS = ("ig", "saliency")
#: IG path steps; 32 keeps the completeness gap small for our heads while staying cheap on a CPU
N_STEPS = 32
#: interpolated inputs per forward/backward pass (bounds memory for 224 px images)
INTERNAL_BATCH = 16
THUMB = 128  #: longest side of the original-image thumbnail in the report
HEATMAP_SMALL = 16  #: the heatmap kept in the JSON is average-pooled to at most this many cells a side


# -- model state ------------------------------------------------------------------------------------
@contextlib.contextmanager
def _eval_with_grad(model: nn.Module) -> Iterator[None]:
    """Eval mode (no dropout, BatchNorm running stats) and autograd on, even inside a caller's
    inference_mode; every submodule's own training flag is restored afterwards, since strategies may
    leave frozen parts in eval while others train."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        for m, t in flags:
            m.training = t


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


# -- images ---------------------------------------------------------------------------------------
@dataclass
class ImageAttribution:
    attr: np.ndarray  #: (3, H, W) attribution of the normalised input
    heatmap: np.ndarray  #: (H, W) in [0, 1]: |attr| summed over channels, smoothed, normalised
    delta: float | None  #: IG convergence delta (sum of attributions - (f(x) - f(baseline))); None for saliency


def image_baseline(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], kind: str = "black"
                   ) -> torch.Tensor:
    """The IG reference input in normalised space. "black" (default) is pixel value 0, i.e. -mean/std per
    channel, not tensor zeros (which would be mid-grey-ish for ImageNet statistics); it is cheap and the
    attributions then answer "what here differs from nothing". "blur" keeps coarse colour and layout so
    attributions concentrate on edges and texture; blurring commutes with the per-channel affine normalisation."""
    if kind == "black":
        m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return ((0.0 - m) / s).expand_as(x).clone()
    if kind == "blur":
        from torchvision.transforms.v2.functional import gaussian_blur

        k = max(3, (x.shape[-1] // 8) | 1)  # odd kernel ~1/8 of the image
        return gaussian_blur(x, [k, k], [k / 3.0, k / 3.0])
    raise ValueError(f"unknown baseline {kind!r}; use 'black' or 'blur'")


def attribute_image(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, target: int, *,
                    method: str = "ig", baseline: torch.Tensor | None = None, n_steps: int = N_STEPS,
                    internal_batch_size: int = INTERNAL_BATCH, smooth: bool = True) -> ImageAttribution:
    """Attribution of logit `target` to the pixels of `x` (1, 3, H, W), already normalised. `model` maps
    such a batch to logits (B, C); nn.Modules are put in eval mode here. Baseline defaults to zeros of `x`'s
    normalised space; pass `image_baseline(...)` for a black or blurred image."""
    from captum.attr import IntegratedGradients, Saliency

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    ctx = _eval_with_grad(model) if isinstance(model, nn.Module) else _grad_only()
    with ctx:
        inp = x.detach().clone().requires_grad_(True)
        delta: float | None = None
        if method == "ig":
            base = torch.zeros_like(inp) if baseline is None else baseline.detach().clone()
            attr, d = IntegratedGradients(model).attribute(
                inp, baselines=base, target=target, n_steps=n_steps, internal_batch_size=internal_batch_size,
                return_convergence_delta=True)
            delta = float(d.abs().max())
        else:
            attr = Saliency(model).attribute(inp, target=target, abs=True)
    a = attr.detach()[0].float().cpu()  # (3,H,W)
    return ImageAttribution(attr=a.numpy(), heatmap=_heatmap(a, smooth), delta=delta)


@contextlib.contextmanager
def _grad_only() -> Iterator[None]:
    with torch.inference_mode(False), torch.enable_grad():
        yield


def _heatmap(attr: torch.Tensor, smooth: bool) -> np.ndarray:
    """(3,H,W) -> (H,W) in [0,1]. Scaled by the 99th percentile, not the max: IG maps are spiky and one
    hot pixel would otherwise wash out the rest. A light blur turns pixel noise into readable regions."""
    h = attr.abs().sum(0)[None, None]  # (1,1,H,W)
    if smooth:
        from torchvision.transforms.v2.functional import gaussian_blur

        k = max(3, (h.shape[-1] // 32) | 1)
        h = gaussian_blur(h, [k, k], [k / 2.0, k / 2.0])
    hm = h[0, 0].numpy()
    top = float(np.percentile(hm, 99)) if hm.size else 0.0
    return np.clip(hm / top, 0.0, 1.0) if top > 0 else np.zeros_like(hm)


def denormalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(1|-,3,H,W) normalised tensor -> (H,W,3) uint8: the image as the model saw it."""
    t = x.detach().float().cpu().reshape(-1, *x.shape[-3:])[0]
    m, s = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)
    return (((t * s + m).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())


def overlay(rgb: np.ndarray, heatmap: np.ndarray, alpha: float = 0.55, cmap: str = "inferno") -> np.ndarray:
    """Blend a colour-mapped heatmap over an (H,W,3) uint8 image; opacity grows with the heat so cold areas
    keep the photo visible. Uses matplotlib's colormap table only (no figure, no display)."""
    from matplotlib import colormaps

    colours = colormaps[cmap](heatmap)[..., :3]  # (H,W,3) in [0,1]
    a = (alpha * heatmap)[..., None]
    out = rgb.astype(np.float32) / 255.0 * (1 - a) + colours * a
    return (out.clip(0, 1) * 255).round().astype(np.uint8)


def png_bytes(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _small(heatmap: np.ndarray) -> list[list[float]]:
    """Average-pool to at most HEATMAP_SMALL cells a side, for the JSON."""
    t = torch.from_numpy(np.ascontiguousarray(heatmap))[None, None].float()
    size = (min(HEATMAP_SMALL, t.shape[-2]), min(HEATMAP_SMALL, t.shape[-1]))
    p = nn.functional.adaptive_avg_pool2d(t, size)[0, 0].numpy()
    return np.round(p, 3).tolist()


def _explain_image(model: nn.Module, path: str, target: int, method: str, baseline: str, n_steps: int
                   ) -> dict[str, Any]:
    from ..data.images import load_image

    bb = model.backbone
    im = load_image(path)
    x = bb.preprocessor(train=False)(im).unsqueeze(0).to(_device(model))  # (1,3,H,W)
    base = image_baseline(x, bb.cfg.mean, bb.cfg.std, baseline)
    res = attribute_image(model, x, target, method=method, baseline=base, n_steps=n_steps)
    thumb = im.copy()
    thumb.thumbnail((THUMB, THUMB))
    return {"image_png": _b64(png_bytes(overlay(denormalize(x, bb.cfg.mean, bb.cfg.std), res.heatmap))),
            "original_png": _b64(png_bytes(np.asarray(thumb))), "heatmap": _small(res.heatmap),
            "delta": res.delta}


# -- texts ----------------------------------------------------------------------------------------
def attribute_tokens(model: Callable[[dict[str, torch.Tensor]], torch.Tensor], embeddings: nn.Module,
                     batch: dict[str, torch.Tensor], target: int, special: torch.Tensor, pad_id: int, *,
                     n_steps: int = N_STEPS, internal_batch_size: int = INTERNAL_BATCH
                     ) -> tuple[np.ndarray, float]:
    """Per-token attribution (T,) of logit `target` for one tokenised text (`batch` holds (1,T) tensors;
    `model(batch)` -> logits), via Layer IG on the output of `embeddings`. The baseline replaces every token
    except the special ones (`special`, (T,) bool) by padding, so [CLS]/[SEP] and positions stay put and
    only the words' content is credited. Returns (scores, |convergence delta|)."""
    from captum.attr import LayerIntegratedGradients

    keys = [k for k in batch if k != "input_ids"]

    def fwd(input_ids: torch.Tensor, *others: torch.Tensor) -> torch.Tensor:
        return model({"input_ids": input_ids, **dict(zip(keys, others, strict=True))})

    ctx = _eval_with_grad(model) if isinstance(model, nn.Module) else _grad_only()
    with ctx:
        # clones: tensors made under a caller's inference_mode cannot take part in autograd
        ids, rest = batch["input_ids"].clone(), {k: batch[k].clone() for k in keys}
        base = torch.where(special.to(ids.device)[None], ids, torch.full_like(ids, pad_id))
        attr, d = LayerIntegratedGradients(fwd, embeddings).attribute(
            ids, baselines=base, target=target, additional_forward_args=tuple(rest[k] for k in keys),
            n_steps=n_steps, internal_batch_size=internal_batch_size, return_convergence_delta=True)
    return attr.detach()[0].float().sum(-1).cpu().numpy(), float(d.abs().max())  # (T,H) -> (T,)


def word_scores(text: str, tokenizer: Any, ids: list[int], scores: np.ndarray, max_tokens: int
                ) -> list[list[Any]]:
    """Merge token scores (summed) into words and drop special tokens; scores scaled to [-1, 1] by the
    largest |score|. Fast tokenizers give word ids and character offsets, so words are exact substrings of
    the input (whatever the subword scheme); otherwise "##" continuation pieces are glued on."""
    words: list[list[Any]] = []
    enc = None
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, truncation=True, max_length=max_tokens, return_offsets_mapping=True)
        if list(enc["input_ids"]) != list(ids):  # a collator that tokenises differently: use the fallback
            enc = None
    if enc is not None:
        last = None
        for i, (w, (s, e)) in enumerate(zip(enc.word_ids(), enc["offset_mapping"], strict=True)):
            if w is None:
                continue
            if w == last and words:
                words[-1][1] += float(scores[i])
                words[-1].append(e)
            else:
                words.append([s, float(scores[i]), e])
            last = w
        words = [[text[w[0]:w[-1]], w[1]] for w in words]
    else:
        special = set(getattr(tokenizer, "all_special_ids", []))
        for i, (tid, tok) in enumerate(zip(ids, tokenizer.convert_ids_to_tokens(list(ids)), strict=True)):
            if tid in special:
                continue
            if tok.startswith("##") and words:
                words[-1][0] += tok[2:]
                words[-1][1] += float(scores[i])
            else:
                words.append([tok, float(scores[i])])
    top = max((abs(w[1]) for w in words), default=0.0)
    return [[w, round(s / top, 4) if top > 0 else 0.0] for w, s in words]


class _TableHeld(nn.Module):
    """A model that reads table columns beside the text, with one row's columns held fixed: attributions are
    over the text's tokens (the table's linear term moves the logits, not the tokens' share of them)."""

    def __init__(self, model: nn.Module, row: np.ndarray) -> None:
        super().__init__()
        self.model: nn.Module = model
        backbone: Any = model.backbone
        self.backbone = backbone
        self.row: torch.Tensor = torch.from_numpy(np.asarray(row, dtype=np.float32))[None]

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        from ..model import WithTable

        ids = batch["input_ids"]
        if getattr(self.model, "stack", None) is not None:
            # boosted trees have no gradient: the text's share is the text head's score, which the trees read
            model: Any = self.model
            text: torch.Tensor = model.head(model.backbone(batch))
            return text
        out: torch.Tensor = self.model(WithTable(batch, self.row.to(ids.device).expand(ids.shape[0], -1)))
        return out


def _explain_text(model: nn.Module, text: str, target: int, n_steps: int) -> dict[str, Any]:
    bb = model.backbone
    batch = {k: v.to(_device(model)) for k, v in bb.collator()([text]).items()}
    ids = batch["input_ids"][0].tolist()
    special_ids = set(getattr(bb.tokenizer, "all_special_ids", []))
    pad = bb.tokenizer.pad_token_id
    special = torch.tensor([t in special_ids and t != pad for t in ids])
    scores, delta = attribute_tokens(model, bb.model.get_input_embeddings(), batch, target, special,
                                     0 if pad is None else int(pad), n_steps=n_steps)
    return {"tokens": word_scores(text, bb.tokenizer, ids, scores, bb.cfg.max_tokens), "delta": delta}


# -- sampling and the public entry points ------------------------------------------------------------
def _explain_rows(clf: Any, ex: Examples, rows: list[int], proba: np.ndarray, method: str,
                  baseline: str, n_steps: int) -> list[dict[str, Any]]:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    model: nn.Module = clf.model_
    members = clf.members_
    note = (f"ensemble of {len(members)}: predictions are the ensemble's, attributions are member 0's"
            if len(members) > 1 else None)
    if ex.modality == "text" and method == "saliency":
        method = "ig"  # token ids are discrete: gradient saliency on them is undefined; use Layer IG
    table = clf.encoded_table(ex) if ex.modality == "text" else None
    if table is not None:
        stacked = getattr(model, "stack", None) is not None
        note = "; ".join(filter(None, [note, "stacked trees over the text head and the table columns: attributions "
                                       "of the text head's score for the class, which the trees read" if stacked else
                                       "the table columns held at the row's values: attributions over the text"]))
    out: list[dict[str, Any]] = []
    for i in rows:
        t0 = time.perf_counter()
        label = ex.labels[i] if ex.labels is not None else None
        # (what is attributed: the predicted class; a multi-label model's surest label; a regression's number)
        head = headline(clf, proba[i], label)
        target = head.pop("target")
        item: dict[str, Any] = {
            "id": str(ex.ids[i]), "kind": ex.modality, "label": label, **head,
            "method": method, "image_png": None, "original_png": None, "heatmap": None, "tokens": None,
            "delta": None, "note": note}
        try:
            if ex.modality == "image":
                item.update(_explain_image(model, ex.inputs[i], target, method, baseline, n_steps))
            elif ex.modality == "audio":  # attribution over time (evaluate/audio_explain.py)
                from .audio_explain import explain_audio

                item.update(explain_audio(model, ex.inputs[i], target, method, n_steps))
            else:
                item["text"] = ex.inputs[i]
                held = model if table is None else _TableHeld(model, table[i])
                item.update(_explain_text(held, ex.inputs[i], target, n_steps))
        except Exception as e:  # one unreadable input must not lose the others' explanations
            warnings.warn(f"{ex.ids[i]}: no explanation ({e})", stacklevel=2)
            item["error"] = f"{type(e).__name__}: {e}"
        item["seconds"] = round(time.perf_counter() - t0, 3)
        out.append(item)
    return out


def explain_sample(clf: Any, ex: Examples, *, n_right: int = 4, n_wrong: int = 4, method: str = "ig",
                   seed: int = 0, baseline: str = "black", n_steps: int = N_STEPS) -> list[dict[str, Any]]:
    """Explain up to `n_wrong` wrong predictions (most confident first) and `n_right` right ones on labeled
    `ex`. Each item is a JSON-ready dict (see module docs / `explain_inputs`)."""
    if ex.labels is None:
        raise ValueError("explain_sample needs labeled examples; use explain_inputs for unlabeled ones")
    proba = clf.check_fitted().proba(ex)
    rows = pick_rows(clf, ex, proba, n_right, n_wrong, seed)
    return _explain_rows(clf, ex, rows, proba, method, baseline, n_steps)


def explain_inputs(clf: Any, ex: Examples, *, method: str = "ig", limit: int = 20, baseline: str = "black",
                   n_steps: int = N_STEPS) -> list[dict[str, Any]]:
    """Explain the first `limit` inputs of `ex` (what `fmadapt explain MODEL INPUTS` shows). Item keys: id,
    kind, label, pred, confidence, correct, method, image_png (base64 overlay), original_png (base64
    thumbnail), heatmap (≤16x16 list), tokens ([[word, score in -1..1], ...]), delta, note, seconds,
    text (texts only), error (only when it failed); explained (multi-label: the label whose score is attributed;
    evaluate/explain_tasks.py says what each task's items hold)."""
    clf.check_fitted()
    rows = list(range(min(len(ex), max(limit, 0))))
    sub = ex.subset(rows)
    return _explain_rows(clf, sub, rows, clf.proba(sub), method, baseline, n_steps)


def _safe_name(s: str, max_len: int = 60) -> str:
    """An id as a file-name fragment: only [A-Za-z0-9_-] (so no '/', '..' or leading dot), length-capped."""
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", s).strip("_")
    return safe[-max_len:] or "item"


def save_explanations(items: list[dict[str, Any]], out_dir: str | Path) -> list[Path]:
    """Write `<i>_<safe id>.png` overlays and `explanations.json` (items without the base64 blobs, with the
    overlay's file name). Returns the paths written, the JSON last."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    rows = []
    for i, item in enumerate(items):
        row = {k: v for k, v in item.items() if k not in ("image_png", "original_png")}
        if item.get("image_png"):
            p = out / f"{i:03d}_{_safe_name(str(item.get('id', '')))}.png"
            p.write_bytes(base64.b64decode(item["image_png"]))
            row["file"] = p.name
            written.append(p)
        rows.append(row)
    j = out / "explanations.json"
    j.write_text(json.dumps(rows, indent=2, ensure_ascii=False), encoding="utf-8")
    return [*written, j]
