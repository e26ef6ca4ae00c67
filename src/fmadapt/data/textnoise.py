"""Text noise, the one implementation of fmadapt's word-level perturbations: `TextNoise`, random noise for
training texts (`text_noise`), and `perturb_text`, the seeded, rate-exact perturbations of the robustness
evaluation (evaluate/robustness.py). Both cut a text into the same units (`units`: whitespace words, and
single characters in scripts written without spaces, in mixed texts too) and make the same typos."""

from __future__ import annotations

import random
import re
import string

import numpy as np

#: scripts written without spaces between words, as a regex character class: kana, CJK extension A, CJK
#: unified ideographs (text noise, robustness perturbations and vocabulary words treat them per character)
UNSEGMENTED = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff"
TEXT_PERTURBATIONS = ("typo", "casing", "punctuation", "word_drop")
_PUNCT = set(string.punctuation) | set("，。！？、；：“”‘’（）《》")


def is_unsegmented(ch: str) -> bool:
    """Whether the character `ch` belongs to a script of UNSEGMENTED."""
    return "\u3040" <= ch <= "\u30ff" or "\u3400" <= ch <= "\u4dbf" or "\u4e00" <= ch <= "\u9fff"


class TextNoise:
    """Word-level noise for training texts: each unit (a word; a character of CJK text) is independently
    dropped, swapped with the next one, or, for a word of two or more characters outside CJK, given a typo
    (`typo`), each with probability p/3. At least one unit always remains; spacing stays where it was.
    Picklable (DataLoader workers); randomness from the given `random.Random`, else Python's `random`, which
    Lightning seeds per run and worker."""

    def __init__(self, p: float) -> None:
        if not 0.0 <= p < 1.0:
            raise ValueError("text noise probability must be in [0, 1)")
        self.p = p

    def __call__(self, text: str, rng: random.Random | None = None) -> str:
        if self.p == 0.0 or not text:
            return text
        u = units(text)
        if not u:
            return text
        g = np.random.default_rng((rng or random).getrandbits(64))
        out: list[tuple[str, str]] = []
        i = 0
        while i < len(u):
            (sp, w), x = u[i], g.random()
            if x < self.p / 3 and len(u) > 1:
                i += 1  # drop
                continue
            if x < 2 * self.p / 3 and i + 1 < len(u):
                out += [(sp, u[i + 1][1]), (u[i + 1][0], w)]  # swap the two units, not their spacing
                i += 2
                continue
            if x < self.p and len(w) > 1 and not is_cjk(w) and any(ch.isalnum() for ch in w):
                w = typo(w, g)
            out.append((sp, w))
            i += 1
        return "".join(sp + w for sp, w in out).strip() or u[0][1]


def units(text: str) -> list[list[str]]:
    """[[leading whitespace, unit], ...]: whitespace words, except that runs of CJK/kana characters are
    split into single characters (they are not separated by spaces), in mixed texts ("iPhone 很好用") too."""
    out: list[list[str]] = []
    for m in re.finditer(r"(\s*)(\S+)", text):
        parts = re.findall(rf"[{UNSEGMENTED}]|[^{UNSEGMENTED}]+", m.group(2))
        out += [[m.group(1) if j == 0 else "", p] for j, p in enumerate(parts)]
    return out


def is_cjk(s: str) -> bool:
    return bool(re.search(rf"[{UNSEGMENTED}]", s))


def typo(w: str, rng: np.random.Generator) -> str:
    """One character swapped, deleted, inserted or replaced; always differs from `w`."""
    def letter() -> str:
        return chr(int(rng.integers(0x4E00, 0x9FA6))) if is_cjk(w) else string.ascii_lowercase[rng.integers(26)]
    k = int(rng.integers(len(w)))
    op = int(rng.integers(4 if len(w) > 1 else 2)) + (0 if len(w) > 1 else 2)  # one char: insert/replace
    if op == 0 and k < len(w) - 1 and w[k] != w[k + 1]:
        return w[:k] + w[k + 1] + w[k] + w[k + 2:]
    if op <= 1:
        return w[:k] + w[k + 1:]
    if op == 2:
        return w[:k] + letter() + w[k:]
    new = letter()
    if new == w[k]:
        new = "b" if new == "a" else "a"
    return w[:k] + new + w[k + 1:]


def _casing(w: str, rng: np.random.Generator) -> str:
    if rng.random() < 0.5 and w.upper() != w:
        return w.upper()
    cased = [i for i, ch in enumerate(w) if ch.swapcase() != ch]
    flip = {i for i in cased if rng.random() < 0.5} or {cased[int(rng.integers(len(cased)))]}
    return "".join(ch.swapcase() if i in flip else ch for i, ch in enumerate(w))


def _punctuation(w: str, rng: np.random.Generator) -> str:
    marks = [i for i, ch in enumerate(w) if ch in _PUNCT]
    if marks and rng.random() < 0.5:
        k = marks[int(rng.integers(len(marks)))]
        return w[:k] + w[k + 1:]
    pool = "，。！？、" if is_cjk(w) else ",.!?;:-'\""
    return w + pool[int(rng.integers(len(pool)))]


def perturb_text(text: str, kind: str, rate: float, seed: int = 0, index: int = 0) -> str:
    """`text` with about `rate` of its units (words; CJK characters) perturbed by `kind`. The units are a
    prefix of one seeded permutation, so a higher rate perturbs a superset with the same edits. Never
    returns an empty text; casing leaves units without cased letters (CJK, digits) alone. A CJK typo is a
    random CJK character (a stand-in for the homophone errors of real input methods)."""
    if kind not in TEXT_PERTURBATIONS:
        raise ValueError(f"unknown text perturbation {kind!r}; known: {', '.join(TEXT_PERTURBATIONS)}")
    us = units(text)
    if not us or rate <= 0:
        return text
    rng = np.random.default_rng([seed, TEXT_PERTURBATIONS.index(kind), index])
    # casing needs cased letters; typos hit words, not stand-alone punctuation ("，" in Chinese)
    able = {"casing": lambda w: w.swapcase() != w, "typo": lambda w: any(ch.isalnum() for ch in w)}
    eligible = [i for i, (_, w) in enumerate(us) if able.get(kind, bool)(w)]
    x = rate * len(us)
    k = int(x) + (rng.random() < x - int(x))  # probabilistic rounding: the expected fraction is exact
    k = min(k, len(eligible) - (1 if kind == "word_drop" else 0))
    for i in rng.permutation(np.asarray(eligible, dtype=int))[:max(k, 0)]:
        sp, w = us[i]
        us[i][1] = "" if kind == "word_drop" else {"typo": typo, "casing": _casing,
                                                       "punctuation": _punctuation}[kind](w, rng)
    out = "".join(sp + w for sp, w in us if w).strip()
    return out or text
