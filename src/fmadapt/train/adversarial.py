"""Adversarial training: the loss is the mean of the clean loss and the loss on perturbed inputs.

Images: FGSM (one signed-gradient step of size eps) or PGD (`steps` steps of eps/4 projected onto the
eps-ball, random start), with eps in pixel units of [0, 1] (divided by the normalisation std, so the
perturbation is what it says on the raw image). Texts: FGM in embedding space (Miyato et al., 2017): each
text's input embeddings move along the loss gradient, normalised over the whole text as in the paper, by eps
times the L2 norm of the text's own embeddings (so eps is scale-free: 0.05 moves a text 5 % of its norm).
Moving every token by a fixed norm instead is no small step: the packaged MiniLM's token embeddings have
norm ~1.07, and a step of 1.0 per token left SST-2 fine-tuning at the majority class (val acc 0.557)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def image_adversary(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn, eps: torch.Tensor,
                    kind: str = "fgsm", steps: int = 3, *, step: torch.Tensor | None = None,
                    bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Perturbed copy of the (normalised) batch `x`, |x_adv - x| <= eps per channel (`eps`: (C,), (1,C,1,1)
    or scalar): FGSM, one signed-gradient step of eps; PGD, `steps` steps of `step` (eps/4 unless given) from
    a random start in the eps-ball, each projected back onto it. The one FGSM/PGD of fmadapt: adversarial
    training calls it as it is; the robustness evaluation (`evaluate.robustness.attack`) also gives `bounds`
    (lo, hi: every step and the start are projected onto the valid pixel range too, so that only images that
    could exist are counted) and a `generator` that seeds PGD's start."""
    if kind not in ("fgsm", "pgd"):
        raise ValueError(f"attack must be 'fgsm' or 'pgd', got {kind!r}")
    eps = _eps_like(eps, x)
    x = x.detach()

    def project(t: torch.Tensor) -> torch.Tensor:
        t = x + torch.maximum(torch.minimum(t - x, eps), -eps)
        return t if bounds is None else torch.maximum(torch.minimum(t, bounds[1]), bounds[0])

    if kind == "fgsm":
        steps, step, x_adv = 1, eps, x.clone()
    else:
        step = eps / 4 if step is None else step
        noise = torch.rand_like(x) if generator is None else \
            torch.rand(x.shape, generator=generator, dtype=torch.float32).to(x)
        x_adv = project(x + (noise * 2 - 1) * eps)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (g,) = torch.autograd.grad(loss_fn(model(x_adv), y), x_adv)
        x_adv = project(x_adv.detach() + step * g.sign())
    return x_adv.detach()


def _eps_like(eps: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return eps.to(x.device, x.dtype).view(1, -1, 1, 1) if eps.dim() else eps.to(x.device, x.dtype)


def image_adversarial_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn,
                           eps: torch.Tensor, kind: str = "fgsm", steps: int = 3
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean loss, loss on the perturbed batch). FGSM takes its gradient from the clean forward pass itself
    (one forward saved per step); PGD starts from a random point, so its steps run separately."""
    if kind != "fgsm":
        x_adv = image_adversary(model, x, y, loss_fn, eps, kind, steps)
        return loss_fn(model(x), y), loss_fn(model(x_adv), y)
    x = x.detach().requires_grad_(True)
    clean = loss_fn(model(x), y)
    (g,) = torch.autograd.grad(clean, x, retain_graph=True)
    x_adv = (x + _eps_like(eps, x) * g.sign()).detach()
    return clean, loss_fn(model(x_adv), y)


def embedding_adversarial_loss(model: nn.Module, embeddings: nn.Module, batch: Any, y: torch.Tensor,
                               loss_fn: LossFn, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean loss, loss with each text's input embeddings moved along their loss gradient by eps times their
    norm; the norms count real tokens only, and padding, which has no gradient, does not move)."""
    store: dict[str, torch.Tensor] = {}

    def capture(_m: nn.Module, _i: Any, out: torch.Tensor) -> torch.Tensor:
        store["e"] = out
        return out

    h = embeddings.register_forward_hook(capture)
    try:
        clean = loss_fn(model(batch), y)
    finally:
        h.remove()
    (g,) = torch.autograd.grad(clean, store["e"], retain_graph=True)
    e = store["e"].detach()
    mask = batch.get("attention_mask") if isinstance(batch, Mapping) else None
    if mask is not None and tuple(mask.shape) == tuple(e.shape[:2]):
        e = e * mask.unsqueeze(-1).to(e.dtype)
    scale = eps * e.flatten(1).norm(dim=1) / (g.flatten(1).norm(dim=1) + 1e-12)
    delta = (scale.view(-1, *([1] * (g.dim() - 1))) * g).detach()
    h = embeddings.register_forward_hook(lambda _m, _i, out: out + delta)
    try:
        adv = loss_fn(model(batch), y)
    finally:
        h.remove()
    return clean, adv
