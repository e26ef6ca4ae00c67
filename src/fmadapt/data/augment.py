"""Training-time augmentation. Images: torchvision policies (in `backbones.vision.build_image_transform`)
and timm's mixup/cutmix (batch level, in the training step). Texts: light, configurable noise."""

from __future__ import annotations

import random
import string
from typing import Any

#: scripts written without spaces between words, as a regex character class: kana, CJK extension A, CJK
#: unified ideographs (text noise, robustness perturbations and vocabulary words treat them per character)
UNSEGMENTED = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff"


def is_unsegmented(ch: str) -> bool:
    """Whether the character `ch` belongs to a script of UNSEGMENTED."""
    return "\u3040" <= ch <= "\u30ff" or "\u3400" <= ch <= "\u4dbf" or "\u4e00" <= ch <= "\u9fff"


class TextNoise:
    """Word-level noise for training texts: each word (or, in CJK text without spaces, each character) is
    independently dropped, swapped with its neighbour, or given a character typo (substitution, deletion,
    insertion or transposition), each with probability p/3. At least one word always remains. Picklable
    (DataLoader workers); randomness from Python's `random`, which Lightning seeds per run and worker."""

    def __init__(self, p: float) -> None:
        if not 0.0 <= p < 1.0:
            raise ValueError("text noise probability must be in [0, 1)")
        self.p = p

    def __call__(self, text: str, rng: random.Random | None = None) -> str:
        r = rng or random
        if self.p == 0.0 or not text:
            return text
        words = text.split()
        joiner = " "
        if len(words) <= 1 and sum(is_unsegmented(c) for c in text) > len(text) / 2:
            words, joiner = list(text), ""  # unsegmented CJK: characters are the units
        out: list[str] = []
        i = 0
        while i < len(words):
            w, u = words[i], r.random()
            if u < self.p / 3 and len(words) > 1:
                i += 1  # drop
                continue
            if u < 2 * self.p / 3 and i + 1 < len(words):
                out += [words[i + 1], w]  # swap with the next word
                i += 2
                continue
            if u < self.p and joiner == " " and len(w) > 1:
                w = _typo(w, r)
            out.append(w)
            i += 1
        return joiner.join(out) if out else words[0]


def _typo(word: str, r: Any) -> str:
    k = r.randrange(len(word))
    kind = r.randrange(4)
    letters = string.ascii_lowercase
    if kind == 0:
        return word[:k] + r.choice(letters) + word[k + 1:]
    if kind == 1:
        return word[:k] + word[k + 1:]
    if kind == 2:
        return word[:k] + r.choice(letters) + word[k:]
    k = min(k, len(word) - 2)
    return word[:k] + word[k + 1] + word[k] + word[k + 2:]


def mixup_fn(mixup: float, cutmix: float, label_smoothing: float, num_classes: int) -> Any:
    """timm's Mixup (batch-level mixup and/or cutmix, soft targets), or None when both alphas are 0."""
    if mixup <= 0 and cutmix <= 0:
        return None
    from timm.data import Mixup

    return Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=label_smoothing,
                 num_classes=num_classes)
