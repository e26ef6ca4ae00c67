"""Report figures drawn with matplotlib's object API and returned as base64 PNG strings (SVG where a label has
characters no installed font can draw).

We build ``matplotlib.figure.Figure`` objects and render them through ``FigureCanvasAgg`` directly instead
of using pyplot: pyplot keeps global figure state and would need ``matplotlib.use("Agg")``, which would
change the backend of a user who calls ``fit`` from a notebook or a GUI session.
"""

from __future__ import annotations

import base64
import functools
import io
import logging
import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.ticker import MaxNLocator

log = logging.getLogger(__name__)

DPI = 100
MAX_MATRIX_CLASSES = 30  # beyond this a full confusion matrix is unreadable; we draw the most-confused subset
MAX_BARS = 40  # fairness groups drawn at most (the worst ones)

# CJK-capable fonts are tried after DejaVu Sans, so Chinese/Japanese class names render where such a font is
# installed (matplotlib >= 3.6 falls back glyph by glyph). Where a figure's text has characters none of them
# can draw (Chinese class names on a server with no CJK font), the figure is written as SVG with its text left
# as text, and the reader's browser draws those characters with its own fonts instead of placeholder boxes.
_FONTS = ["DejaVu Sans", "Noto Sans CJK SC", "Noto Sans CJK JP", "WenQuanYi Zen Hei", "Source Han Sans SC",
          "Microsoft YaHei", "SimHei", "PingFang SC", "Arial Unicode MS"]


def _available_fonts() -> list[str]:
    from matplotlib import font_manager

    names = {f.name for f in font_manager.fontManager.ttflist}
    return [f for f in _FONTS if f in names] or ["DejaVu Sans"]


def _rc() -> dict[str, Any]:
    # Fixed style so output does not depend on the user's matplotlibrc; svg.hashsalt/seed keep it deterministic.
    return {"font.family": _available_fonts(), "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9,
            "legend.fontsize": 8, "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.grid": False,
            "figure.dpi": DPI, "savefig.dpi": DPI, "path.simplify": True}


def _new_figure(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # attaches the Agg canvas to this figure only
    return fig


@functools.lru_cache(maxsize=8)
def _drawable(fonts: tuple[str, ...]) -> frozenset[int]:
    """Code points that at least one of these installed fonts has a glyph for."""
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    by_name = {f.name: f.fname for f in font_manager.fontManager.ttflist}
    chars: set[int] = set()
    for name in fonts:
        try:
            chars.update(FT2Font(by_name[name]).get_charmap())
        except (KeyError, OSError, RuntimeError):  # a font listed but unreadable: it draws nothing
            continue
    return frozenset(chars)


def undrawable(fig: Figure) -> str:
    """The characters of the figure's text (titles, tick labels, legends, annotations) that no available font
    can draw, in order of appearance; "" when every one can."""
    ok = _drawable(tuple(_available_fonts()))
    seen: dict[str, None] = {}
    for t in fig.findobj(Text):
        for ch in t.get_text():
            if not ch.isspace() and ord(ch) not in ok:
                seen[ch] = None
    return "".join(seen)


def _image_b64(fig: Figure) -> str:
    """The figure as base64 PNG; as base64 SVG with its text kept as text when some of that text has characters
    no installed font can draw (the browser draws them; a PNG would show boxes)."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # "Glyph ... missing from font": the layout measures such characters with a placeholder; said above
        warnings.filterwarnings("ignore", message=r".*[Gg]lyph.*missing.*")
        if undrawable(fig):
            # svg.fonttype "none": <text> elements in the font families asked for, and the browser falls back
            # glyph by glyph; hashsalt and Date=None make the bytes depend only on the figure
            with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "fmadapt"}):
                fig.savefig(buf, format="svg", dpi=DPI, metadata={"Date": None, "Creator": None})
        else:
            # metadata Software=None: PNG bytes then depend only on the pixels, not the matplotlib version string
            fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _num(x: Any) -> float:
    """A float, or NaN for None/strings/garbage, so one bad value does not sink a whole figure."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v


def _sorted_curve(points: Mapping[Any, Any]) -> tuple[list[float], list[float]]:
    """Keys like "1".."5" or "0.05" sorted numerically; non-numeric keys are dropped."""
    pairs = sorted((_num(k), _num(v)) for k, v in points.items() if not math.isnan(_num(k)))
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _short(label: Any, n: int = 18) -> str:
    s = str(label)
    return s if len(s) <= n else s[: n - 1] + "…"


# ---------------------------------------------------------------------------------------------- training
def training_curves(history: Mapping[str, Any]) -> str | None:
    epochs = history.get("epochs") or []
    if epochs:
        x = [_num(e.get("epoch", i)) for i, e in enumerate(epochs)]
        fig = _new_figure(8, 3)
        ax1, ax2 = fig.subplots(1, 2)
        for key, style in (("train_loss", "-o"), ("val_loss", "-s")):
            ys = [_num(e.get(key)) for e in epochs]
            if not all(math.isnan(y) for y in ys):
                ax1.plot(x, ys, style, ms=3, label=key.replace("_", " "))
        ax1.set(xlabel="epoch", ylabel="loss", title="Loss")
        ys = [_num(e.get("val_acc")) for e in epochs]
        if not all(math.isnan(y) for y in ys):
            ax2.plot(x, ys, "-o", ms=3, color="tab:green", label="val accuracy")
        ax2.set(xlabel="epoch", ylabel="accuracy", title="Validation accuracy", ylim=(0, 1.02))
        for ax in (ax1, ax2):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend()
        return _image_b64(fig)
    cands = history.get("candidates") or []
    if cands:
        # A linear probe has no epochs: show validation accuracy across the regularisation grid instead.
        # one line per searched series (feature scaling x class weighting), each over its own values of C
        series: dict[str, list[tuple[float, float]]] = {}
        for c in cands:
            if c.get("C") is not None:
                name = ", ".join(x for x in (
                    f"{c['scaling']} scaling" if c.get("scaling") else "",
                    {"none": "unweighted", "balanced": "class-weighted"}.get(c.get("class_weight") or "", "")) if x)
                series.setdefault(name, []).append((_num(c.get("C")), _num(c.get("val_acc"))))
        if not series:
            return None
        fig = _new_figure(5, 3)
        ax = fig.subplots()
        for name, pts in series.items():
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o", ms=4, label=name or None)
        if len(series) > 1:
            ax.legend(fontsize=7)
        if all(p[0] > 0 for pts in series.values() for p in pts):
            ax.set_xscale("log")
        ax.set(xlabel="C (inverse regularisation)", ylabel="val accuracy", title="Probe: accuracy vs C")
        ax.grid(alpha=0.3)
        return _image_b64(fig)
    return None


# --------------------------------------------------------------------------------------------- confusion
def confusion_subset(cm: np.ndarray, k: int = MAX_MATRIX_CLASSES) -> np.ndarray:
    """Indices of the k classes most involved in errors (row + column off-diagonal mass), in class order."""
    off = cm - np.diag(np.diag(cm))
    score = off.sum(0) + off.sum(1)
    return np.sort(np.argsort(-score, kind="stable")[:k])


def confusion_matrix(cm_list: list[list[Any]], classes: list[str], title: str = "") -> str | None:
    cm = np.asarray(cm_list, dtype=float)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] == 0:
        return None
    names = list(classes) if len(classes) == cm.shape[0] else [str(i) for i in range(cm.shape[0])]
    note = ""
    if cm.shape[0] > MAX_MATRIX_CLASSES:
        idx = confusion_subset(cm)
        note = f" ({len(idx)} most-confused of {cm.shape[0]} classes)"
        cm, names = cm[np.ix_(idx, idx)], [names[i] for i in idx]
    k = cm.shape[0]
    # Colour by row-normalised rate (recall per true class) so rare classes are visible; text shows counts.
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    side = min(9.0, 2.5 + 0.28 * k)
    fig = _new_figure(side + 1.0, side)
    ax = fig.subplots()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.8, label="fraction of true class")
    ticks = np.arange(k)
    ax.set_xticks(ticks, [_short(n) for n in names], rotation=90 if k > 6 else 30, ha="center" if k > 6 else "right")
    ax.set_yticks(ticks, [_short(n) for n in names])
    ax.set(xlabel="predicted", ylabel="true", title=(title + note).strip())
    if k <= 15:  # annotating more cells than this only produces unreadable clutter
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    return _image_b64(fig)


# ------------------------------------------------------------------------------------------- calibration
def residual_plot(sample: Mapping[str, Any], title: str = "") -> str | None:
    """Regression: predicted against true target (the diagonal is perfect), and residual against prediction."""
    y = np.array([_num(v) for v in sample.get("target") or []])
    p = np.array([_num(v) for v in sample.get("pred") or []])
    n = min(len(y), len(p))
    if n == 0:
        return None
    y, p = y[:n], p[:n]
    fig = _new_figure(9, 4)
    ax, axr = fig.subplots(1, 2)
    lo, hi = float(np.nanmin([y.min(), p.min()])), float(np.nanmax([y.max(), p.max()]))
    ax.plot([lo, hi], [lo, hi], "--", color="gray", lw=1)
    ax.scatter(y, p, s=8, alpha=0.5)
    ax.set(xlabel="true target", ylabel="prediction", title=f"{title}: prediction against target")
    axr.axhline(0, color="gray", lw=1, ls="--")
    axr.scatter(p, p - y, s=8, alpha=0.5, color="tab:orange")
    axr.set(xlabel="prediction", ylabel="residual (prediction - target)", title="residuals")
    for a in (ax, axr):
        a.grid(alpha=0.3)
    return _image_b64(fig)


def reliability_diagram(reliability: Mapping[str, Any]) -> str | None:
    curves = {k: v for k, v in reliability.items() if isinstance(v, Mapping) and v.get("confidence")}
    if not curves:
        return None
    fig = _new_figure(5.5, 5)
    ax, axc = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    ax.plot([0, 1], [0, 1], "--", color="gray", lw=1, label="perfect calibration")
    colors = {"before": "tab:red", "after": "tab:blue"}
    width = 0.02
    for i, (name, c) in enumerate(curves.items()):
        conf = np.array([_num(v) for v in c.get("confidence", [])])
        acc = np.array([_num(v) for v in c.get("accuracy", [])])
        n = min(len(conf), len(acc))
        color = colors.get(name, f"C{i}")
        ax.plot(conf[:n], acc[:n], "-o", ms=4, color=color, label=f"{name} temperature scaling"
                if name in colors else name)
        counts = np.array([_num(v) for v in c.get("count", [])][:len(conf)])
        if len(counts):
            axc.bar(conf[:len(counts)] + (i - 0.5) * width, counts, width=width, color=color, alpha=0.7)
    ax.set(ylabel="accuracy", title="Reliability diagram", xlim=(0, 1.0), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    axc.set(xlabel="confidence", ylabel="count")
    return _image_b64(fig)


# -------------------------------------------------------------------------------------------- robustness
def _curve_panel(ax: Any, curves: Mapping[str, Mapping[Any, Any]], clean: float, x0: float | None,
                 unbounded: bool = False) -> None:
    for i, (name, pts) in enumerate(curves.items()):
        if not isinstance(pts, Mapping):
            continue
        xs, ys = _sorted_curve(pts)
        if x0 is not None and not math.isnan(clean) and (not xs or xs[0] > x0):
            xs, ys = [x0, *xs], [clean, *ys]  # start each curve from the clean accuracy
        ax.plot(xs, ys, "-o", ms=3, color=f"C{i % 10}", label=_short(name, 24))
    if not math.isnan(clean):
        ax.axhline(clean, color="gray", ls=":", lw=1, label="clean")
    if not unbounded:  # (an error, as a regression's RMSE, is unbounded)
        ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(curves) > 6 else 1)


def robustness_curves(rob: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    clean = _num(rob.get("clean_accuracy"))
    # (a multi-label model's micro-F1 or a regression's RMSE under the same keys, evaluate/robustness.task_scorer)
    m = str(rob.get("metric") or "accuracy").replace("_", "-").replace("rmse", "RMSE")
    unbounded = rob.get("higher_is_better") is False
    if isinstance(rob.get("corruptions"), Mapping) and rob["corruptions"]:
        fig = _new_figure(6.5, 3.8)
        ax = fig.subplots()
        _curve_panel(ax, rob["corruptions"], clean, 0.0, unbounded)
        ax.set(xlabel="severity", ylabel=m, title=f"{m[0].upper() + m[1:]} under corruptions")
        out["robustness_corruptions"] = _image_b64(fig)
    if isinstance(rob.get("text"), Mapping) and rob["text"]:
        fig = _new_figure(6.5, 3.8)
        ax = fig.subplots()
        _curve_panel(ax, rob["text"], clean, 0.0, unbounded)
        ax.set(xlabel="perturbation rate", ylabel=m, title=f"{m[0].upper() + m[1:]} under text perturbations")
        out["robustness_text"] = _image_b64(fig)
    adv = rob.get("adversarial")
    if isinstance(adv, Mapping):
        curves = {k: adv[k] for k in ("fgsm", "pgd") if isinstance(adv.get(k), Mapping) and adv[k]}
        if curves:
            fig = _new_figure(6.5, 3.8)
            ax = fig.subplots()
            _curve_panel(ax, {k.upper(): v for k, v in curves.items()}, clean, 0.0)
            unit = str(adv.get("eps_unit") or "")
            ax.set(xlabel=f"ε ({unit})" if unit else "ε", ylabel="accuracy", title="Adversarial accuracy")
            out["robustness_adversarial"] = _image_b64(fig)
    return out


# --------------------------------------------------------------------------------------------- fairness
def fairness_bars(fair: Mapping[str, Any]) -> str | None:
    groups = fair.get("groups")
    if not isinstance(groups, Mapping) or not groups:
        return None
    # the headline metric: accuracy, or a multi-label model's micro-F1 / a regression model's MAE (fairness_tasks)
    metric = str(fair.get("metric") or "accuracy")
    sign = 1.0 if fair.get("higher_is_better", True) else -1.0
    items = sorted(((str(g), v) for g, v in groups.items() if isinstance(v, Mapping)),
                   key=lambda gv: (sign * _num(gv[1].get(metric)), gv[0]))[:MAX_BARS]
    if not items:
        return None
    fig = _new_figure(6.5, max(2.0, 0.8 + 0.28 * len(items)))
    ax = fig.subplots()
    acc = [_num(v.get(metric)) for _, v in items]
    colors = ["#bbbbbb" if v.get("small") else "tab:blue" for _, v in items]
    y = np.arange(len(items))
    ax.barh(y, [0 if math.isnan(a) else a for a in acc], color=colors)
    ax.set_yticks(y, [f"{_short(g, 22)} (n={v.get('n', '?')})" for g, v in items])
    top = 1.0 if sign > 0 else 1.15 * max([a for a in acc if not math.isnan(a)] + [1e-12])  # (an error: unbounded)
    for yi, a in zip(y, acc, strict=True):
        if not math.isnan(a):
            ax.text(min(a + 0.01 * top, 0.93 * top), yi, f"{a:.3g}" if sign < 0 else f"{a:.3f}", va="center",
                    fontsize=7)
    name = metric.replace("_", "-") if metric != "mae" else "mean absolute error"
    ax.set(xlim=(0, top), xlabel=name,
           title=f"{name[0].upper() + name[1:]} by {_short(fair.get('group_col') or 'group', 30)} (grey: small group)")
    ax.grid(axis="x", alpha=0.3)
    return _image_b64(fig)


# --------------------------------------------------------------------------------------------- assembly
def _safe(name: str, fn: Callable[[], str | dict[str, str] | None], out: dict[str, str]) -> None:
    """Draw one figure; a failure is logged and leaves the figure out rather than losing the whole report."""
    try:
        res = fn()
    except Exception as exc:  # noqa: BLE001 - a report with one missing figure beats no report
        log.warning("report figure %r could not be drawn: %s", name, exc)
        out[f"_error_{name}"] = f"{type(exc).__name__}: {exc}"
        return
    if isinstance(res, dict):
        out.update(res)
    elif res:
        out[name] = res


def figure_mime(b64: str) -> str:
    """The MIME type of a figure from `build_figures`: "image/svg+xml" for one `_image_b64` wrote as SVG, else
    "image/png"."""
    head = base64.b64decode(b64[:24] + "=" * (-len(b64[:24]) % 4), validate=False)
    return "image/svg+xml" if head.lstrip().startswith((b"<?xml", b"<svg")) else "image/png"


def build_figures(data: Mapping[str, Any]) -> dict[str, str]:
    """All report figures as ``{key: base64 PNG}`` (base64 SVG for a figure whose text no installed font can
    draw: see `_image_b64`; `figure_mime` tells them apart).

    Keys: ``training``, ``confusion_<split>`` per metrics split, ``reliability``, ``robustness_corruptions``,
    ``robustness_text``, ``robustness_adversarial``, ``fairness``. A figure that failed to draw appears as
    ``_error_<key>`` with the error message instead (the HTML shows it in place of the image).
    """
    out: dict[str, str] = {}
    with matplotlib.rc_context(_rc()):  # rc_context restores settings and never touches the backend
        hist = data.get("history")
        if isinstance(hist, Mapping):
            _safe("training", lambda: training_curves(hist), out)
        metrics = data.get("metrics")
        if isinstance(metrics, Mapping):
            for split, m in metrics.items():
                sample = m.get("residual_sample") if isinstance(m, Mapping) else None
                if isinstance(sample, Mapping):
                    _safe(f"residuals_{split}", functools.partial(residual_plot, sample, str(split)), out)
                if isinstance(m, Mapping) and m.get("confusion_matrix"):
                    classes = list(m.get("classes") or (data.get("model") or {}).get("classes") or [])
                    _safe(f"confusion_{split}",
                          lambda m=m, c=classes, s=split: confusion_matrix(m["confusion_matrix"], c, f"{s}"), out)
        cal = data.get("calibration")
        if isinstance(cal, Mapping) and isinstance(cal.get("reliability"), Mapping):
            _safe("reliability", lambda: reliability_diagram(cal["reliability"]), out)
        rob = data.get("robustness")
        if isinstance(rob, Mapping):
            _safe("robustness", lambda: robustness_curves(rob), out)
        fair = data.get("fairness")
        if isinstance(fair, Mapping):
            _safe("fairness", lambda: fairness_bars(fair), out)
    return out
