"""How report.html shows values: numbers, percentages, `code` in notes, validated image data URIs,
attribution colours. Pure functions of their argument (no markup from a caller's string gets through)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from markupsafe import Markup, escape

_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_MIME = {"iVBORw0KGgo": "image/png", "/9j/": "image/jpeg", "R0lGOD": "image/gif", "UklGR": "image/webp"}


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def fmt(x: Any, digits: int = 4) -> str:
    """Numbers to fixed decimals, ints as ints, None/NaN as a dash; anything else as its string."""
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    v = _num(x)
    if v is None:
        return "—" if isinstance(x, float) else str(x)
    return str(int(v)) if v.is_integer() and abs(v) >= 1000 else f"{v:.{digits}f}"


def pct(x: Any) -> str:
    v = _num(x)
    return "—" if v is None else f"{100 * v:.1f}%"


def codeify(text: str) -> Markup:
    """Escape, then turn `x` into <code>x</code> (only our own note strings go through here)."""
    parts = str(escape(text)).split("`")
    return Markup("".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts)))


def data_uri(b64: Any) -> str | None:
    """A data: URI for base64 image bytes, or None when it is not base64 of a known image format.

    Validating here means a caller's broken or hostile string can never become markup or a network URL.
    """
    if isinstance(b64, bytes | bytearray):
        b64 = bytes(b64).decode("ascii", errors="replace")
    if not isinstance(b64, str) or not b64:
        return None
    s = re.sub(r"\s+", "", b64.split(",", 1)[1] if b64.startswith("data:") else b64)
    if not _B64.fullmatch(s):
        return None
    mime = next((m for prefix, m in _MIME.items() if s.startswith(prefix)), None)
    return f"data:{mime};base64,{s}" if mime else None


def _kv(d: Any) -> list[tuple[str, str]]:
    """A mapping as (key, display value) rows; nested values as compact JSON."""
    if not isinstance(d, Mapping):
        return []
    rows = []
    for k, v in d.items():
        if isinstance(v, Mapping | list | tuple):
            v = json.dumps(v, ensure_ascii=False, default=str, sort_keys=True)
        rows.append((str(k), fmt(v)))
    return rows


def _mapping(x: Any) -> Mapping[str, Any]:
    return x if isinstance(x, Mapping) else {}


def token_style(score: Any, scale: float) -> str:
    """Inline style for one attributed token: red supports the prediction, blue opposes, opacity ∝ |score|."""
    v = _num(score) or 0.0
    a = min(1.0, abs(v) / scale) if scale > 0 else 0.0
    rgb = "220,40,40" if v > 0 else "40,90,220"
    return f"background-color:rgba({rgb},{0.85 * a:.3f})"
