"""The HTML run report: sections, escaping, self-containment, figures, and a real headless-browser render."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import matplotlib
import numpy as np
import pytest
from PIL import Image

from fmadapt.report import HOW_TO_ENABLE, SECTIONS, build_figures, environment_info, render_report, write_report
from fmadapt.report import html as report_html

XSS = "<script>alert(1)</script>"
SVG = "{http://www.w3.org/2000/svg}"
SECTION_IDS = [s for s, _ in SECTIONS]


def png_b64(color: tuple[int, int, int], size: int = 48) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def metrics_for(classes: list[str], n_per: int = 20, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    k = len(classes)
    cm = rng.integers(0, 3, (k, k)) + np.diag(np.full(k, n_per))
    per_class = {c: {"precision": 0.8, "recall": 0.7 if i else 0.3, "f1": 0.75 if i else 0.4,
                     "support": int(cm[i].sum())} for i, c in enumerate(classes)}
    return {"n": int(cm.sum()), "accuracy": float(np.trace(cm) / cm.sum()), "macro_f1": 0.71, "ece": 0.05,
            "per_class": per_class, "confusion_matrix": cm.tolist(), "classes": classes, "skipped": []}


def full_report(classes: list[str] | None = None) -> dict:
    classes = classes or ["猫", "dog", XSS]
    img = png_b64((200, 30, 30))
    return {
        "title": f"Run {XSS}",
        "created": "2025-01-01T00:00:00+00:00",
        "model": {"dir": f"runs/{XSS}", "task": "image", "backbone": "efficientnet-lite0", "strategy": "partial",
                  "classes": classes, "config": {"epochs": 3, "lr": 1e-3, "note": XSS, "nested": {"a": [1, 2]}}},
        "data": {"sizes": {"train": 60, "val": 20, "test": 20},
                 "class_counts": {s: {c: n for c in classes} for s, n in (("train", 20), ("val", 7), ("test", 7))},
                 "skipped": [{"where": f"images/{XSS}.png", "reason": "cannot identify image file"},
                             {"where": "data.csv:17", "reason": "empty text"}],
                 "warnings": ["class 'dog' has only 7 validation examples"],
                 "validation": "stratified 20% of train, seed 0", "vocabulary": {"unk_rate": 0.012}},
        "history": {"epochs": [{"epoch": i, "train_loss": 1.0 / (i + 1), "val_loss": 1.1 / (i + 1),
                                "val_acc": 0.5 + 0.1 * i, "lr": 1e-3} for i in range(4)]},
        "metrics": {"val": metrics_for(classes, seed=1), "test": metrics_for(classes, seed=2)},
        "calibration": {"temperature": 1.7, "before": {"ece": 0.12, "brier": 0.3, "nll": 0.8},
                        "after": {"ece": 0.03, "brier": 0.28, "nll": 0.6},
                        "reliability": {k: {"confidence": [0.2, 0.5, 0.8, 0.95], "accuracy": [0.1, 0.4, 0.7, acc],
                                            "count": [3, 10, 20, 40]}
                                        for k, acc in (("before", 0.8), ("after", 0.93))}},
        "robustness": {"modality": "image", "n": 20, "clean_accuracy": 0.9,
                       "corruptions": {"gaussian_noise": {str(s): 0.9 - 0.1 * s for s in range(1, 6)},
                                       "blur": {str(s): 0.9 - 0.05 * s for s in range(1, 6)}},
                       "adversarial": {"fgsm": {"0.001": 0.8, "0.004": 0.5}, "pgd": {"0.001": 0.7, "0.004": 0.2},
                                       "eps_unit": "pixel [0,1]", "n": 20, "note": "white-box, L-inf"},
                       "seconds": {"corruptions": 1.2, "adversarial": 3.4}},
        "fairness": {"group_col": "region", "n": 20, "positive_class": None,
                     "groups": {"north": {"n": 12, "accuracy": 0.9, "macro_f1": 0.88, "small": False},
                                XSS: {"n": 3, "accuracy": 0.66, "macro_f1": 0.5, "small": True}},
                     "demographic_parity_difference": 0.1, "equalized_odds_difference": 0.2, "worst_group": XSS,
                     "worst_group_accuracy": 0.66, "accuracy_gap": 0.24, "missing_groups": 3,
                     "notes": ["groups with fewer than 10 examples are marked small"]},
        "explanations": [
            {"id": f"img_{XSS}", "kind": "image", "label": "猫", "pred": "猫", "confidence": 0.9, "correct": True,
             "method": "integrated gradients", "image_png": img, "original_png": png_b64((30, 30, 200)),
             "tokens": None},
            {"id": "t1", "kind": "text", "label": "pos", "pred": "neg", "confidence": 0.6, "correct": False,
             "method": "occlusion", "image_png": None, "original_png": None,
             "tokens": [["这部电影", 0.9], ["not", -0.5], [XSS, 0.1]]},
        ],
        "misclassified": [{"id": "m1", "label": "dog", "pred": "猫", "confidence": 0.77, "text": None,
                           "thumb_png": png_b64((30, 200, 30))},
                          {"id": "m2", "label": "dog", "pred": XSS, "confidence": 0.55,
                           "text": f"这部电影很好看 {XSS}", "thumb_png": None}],
        "compression": {"rows": [{"name": "model", "kind": "model directory", "accuracy": 0.9, "mb": 86.6,
                                  "p50_ms": 8.4, "p95_ms": 11.8, "per_s": 151.4},
                                 {"name": XSS, "kind": "export", "refused": f"no int8 graph {XSS}"}],
                        "note": f"kept: {XSS}", "held_out": 175, "out": "/tmp/c", "created": "2026-12-06"},
        "environment": environment_info(seed=0, weight_hashes={"backbone": "ab" * 32}, command=f"fmadapt fit {XSS}"),
    }


class _Collect(HTMLParser):
    """Sections, images and script tags as the browser would see them."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, str | None] = {}
        self.imgs: list[dict[str, str | None]] = []
        self.scripts: list[dict[str, str | None]] = []
        self.attrs: list[tuple[str, str, str | None]] = []
        self.body: dict[str, str | None] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.attrs.extend((tag, k, v) for k, v in attrs)
        if tag == "section":
            self.sections[a.get("id") or ""] = a.get("data-section")
        elif tag == "img":
            self.imgs.append(a)
        elif tag == "script":
            self.scripts.append(a)
        elif tag == "body":
            self.body = a


def parse(html: str) -> _Collect:
    p = _Collect()
    p.feed(html)
    return p


def section_text(html: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}".*?</section>', html, re.S)
    assert m, sid
    return m.group(0)


def test_full_report_has_every_section_and_image():
    html = render_report(full_report())
    p = parse(html)
    assert list(p.sections) == SECTION_IDS
    assert all(p.sections[s] == s for s in SECTION_IDS)
    assert "Not run" not in html
    # 2 training/val confusion + training + reliability + 2 robustness + fairness + 2+1 gallery images + 1 thumb
    assert len(p.imgs) >= 10
    for img in p.imgs:
        assert img["alt"], img
        assert img["src"].startswith("data:image/"), img["src"][:40]
        raw = base64.b64decode(img["src"].split(",", 1)[1])
        if img["src"].startswith("data:image/svg+xml;"):  # a figure with text no installed font can draw
            assert ET.fromstring(raw).tag == SVG + "svg"
        else:
            Image.open(io.BytesIO(raw)).verify()  # every embedded image is a real image
    assert p.body["data-images-total"] == str(len(p.imgs))
    # headline accuracy in the header comes from the test split
    assert "accuracy (test, n=" in html
    assert 'href="#robustness"' in html and "(not run)" not in html


def test_minimal_report_explains_how_to_enable_missing_sections():
    classes = ["a", "b"]
    html = render_report({"model": {"classes": classes, "backbone": "tiny"}, "metrics": {"val": metrics_for(classes)}})
    p = parse(html)
    assert list(p.sections) == SECTION_IDS
    assert "--robustness" in section_text(html, "robustness")
    assert "--group-col" in section_text(html, "fairness")
    assert "fmadapt explain" in section_text(html, "explanations")
    for sid in ("data", "training", "calibration", "robustness", "fairness", "explanations", "misclassified",
                "environment"):
        assert "Not run" in section_text(html, sid), sid
    for sid in ("metrics", "confusion", "per-class"):
        assert "Not run" not in section_text(html, sid), sid
    assert HOW_TO_ENABLE["robustness"].split("`")[1] in html  # the command is rendered inside <code>


@pytest.mark.parametrize("data", [{"model": {}}, {}, {"model": None, "metrics": {"val": None}, "history": {},
                                                      "explanations": [], "misclassified": [None, 3]}])
def test_degenerate_inputs_do_not_crash(data):
    html = render_report(data)
    assert list(parse(html).sections) == SECTION_IDS


def test_user_strings_are_escaped():
    html = render_report(full_report())
    assert XSS not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    p = parse(html)
    assert len(p.scripts) == 1 and "src" not in p.scripts[0]  # only our own inline image check
    assert not any(k.startswith("on") for _, k, _ in p.attrs)  # no event-handler attributes at all


def test_chinese_text_survives_the_file_round_trip(tmp_path):
    path = write_report(full_report(), tmp_path / "out" / "report.html")
    text = path.read_bytes().decode("utf-8")
    assert '<meta charset="utf-8">' in text
    for s in ("猫", "这部电影很好看", "这部电影"):
        assert s in text


def test_no_network_references():
    data = full_report()
    # hostile image fields: a URL and a markup-breaking string must both be dropped, not embedded
    data["misclassified"].append({"id": "u", "label": "a", "pred": "b", "confidence": 0.5,
                                  "thumb_png": "https://evil.example/x.png"})
    data["explanations"].append({"id": "q", "kind": "image", "image_png": '" onerror="alert(1)', "original_png": None})
    data["model"]["classes"].append("https://example.com/cls")
    html = render_report(data)
    for tag, attr, val in parse(html).attrs:
        if attr in ("src", "href", "action", "poster", "srcset"):
            assert not re.match(r"\s*(https?:|//|file:|javascript:)", val or "", re.I), (tag, attr, val)
    assert not re.search(r"<script[^>]*\bsrc=", html, re.I)
    assert "<link" not in html and "@import" not in html and "url(" not in html
    # CSP: even a missed escape could not load anything or run any script but ours
    csp = [v for t, k, v in parse(html).attrs if t == "meta" and k == "content" and "default-src" in (v or "")]
    assert csp and "default-src 'none'" in csp[0] and "img-src data:" in csp[0]


def test_many_and_two_classes():
    many = [f"class_{i:03d}" for i in range(100)]
    html = render_report({"model": {"classes": many}, "metrics": {"test": metrics_for(many)}})
    p = parse(html)
    assert len(p.imgs) == 1 and "Most confused pairs (20)" in html
    figs = build_figures({"metrics": {"test": metrics_for(many)}})
    assert Image.open(io.BytesIO(base64.b64decode(figs["confusion_test"]))).size[0] <= 1100  # capped, not 100x100
    two = render_report({"model": {"classes": ["yes", "no"]}, "metrics": {"test": metrics_for(["yes", "no"])}})
    assert len(parse(two).imgs) == 1


def test_text_no_installed_font_can_draw_stays_text_in_an_svg(monkeypatch):
    from fmadapt.report import figures

    # a machine with no CJK font: Chinese class names would be drawn as boxes in a PNG
    monkeypatch.setattr(figures, "_available_fonts", lambda: ["DejaVu Sans"])
    zh = ["体育", "财经", XSS]
    b64 = build_figures({"metrics": {"test": metrics_for(zh)}})["confusion_test"]
    assert figures.figure_mime(b64) == "image/svg+xml"
    raw = base64.b64decode(b64)
    root = ET.fromstring(raw)  # well-formed: the class names are escaped
    texts = [t.text or "" for t in root.iter(SVG + "text")]
    assert {"体育", "财经", figures._short(XSS)} <= set(texts)  # as text, for the browser to draw
    assert b"<script" not in raw
    en = build_figures({"metrics": {"test": metrics_for(["sports", "business"])}})["confusion_test"]
    assert figures.figure_mime(en) == "image/png" and base64.b64decode(en)[:8] == b"\x89PNG\r\n\x1a\n"
    html = render_report({"model": {"classes": zh}, "metrics": {"test": metrics_for(zh)}})
    assert [i["src"][:26] for i in parse(html).imgs] == ["data:image/svg+xml;base64,"]
    assert figures.undrawable(figures._new_figure(1, 1)) == ""


def test_probe_history_shows_candidates():
    data = {"model": {}, "history": {"candidates": [{"C": c, "val_acc": a, "val_loss": 1 - a}
                                                    for c, a in ((0.01, 0.6), (1.0, 0.8), (100.0, 0.75))]}}
    assert "training" in build_figures(data)
    assert "regularisation search" in section_text(render_report(data), "training")


def test_text_robustness_curves():
    rob = {"modality": "text", "n": 50, "clean_accuracy": 0.8,
           "text": {"typos": {"0.05": 0.78, "0.1": 0.7, "0.2": 0.6}, "synonyms": {"0.1": 0.79, "0.05": 0.8}}}
    assert "robustness_text" in build_figures({"robustness": rob})
    sec = section_text(render_report({"model": {}, "robustness": rob}), "robustness")
    assert "perturbation rate" in sec and "<th>0.05</th><th>0.1</th><th>0.2</th>" in sec  # numeric column order


def test_token_attributions_are_coloured_by_sign():
    sec = section_text(render_report(full_report()), "explanations")
    assert re.search(r'style="background-color:rgba\(220,40,40,0\.850\)"[^>]*>这部电影<', sec)  # strongest, red
    assert re.search(r'style="background-color:rgba\(40,90,220,0\.47\d\)"[^>]*>not<', sec)  # negative, blue


def test_figures_deterministic_and_leave_matplotlib_alone():
    backend, rc = matplotlib.get_backend(), dict(matplotlib.rcParams)
    data = full_report()
    a, b = build_figures(data), build_figures(data)
    assert a == b
    assert {"training", "confusion_val", "confusion_test", "reliability", "robustness_corruptions",
            "robustness_adversarial", "fairness"} <= set(a)
    assert matplotlib.get_backend() == backend and dict(matplotlib.rcParams) == rc


def test_a_broken_figure_does_not_lose_the_report():
    data = {"model": {"classes": ["a", "b"]},
            "metrics": {"val": {"n": 3, "accuracy": 0.5, "confusion_matrix": [[1, 2], [3]], "classes": ["a", "b"]}},
            "calibration": {"reliability": {"before": {"confidence": ["x"], "accuracy": [None], "count": []}}}}
    html = render_report(data)
    assert "Figure could not be drawn" in section_text(html, "confusion")


def test_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "report.html"
    path.write_text("old", encoding="utf-8")

    def boom(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(report_html.os, "replace", boom)
    with pytest.raises(OSError):
        write_report({"model": {}}, path)
    assert path.read_text(encoding="utf-8") == "old" and [p.name for p in tmp_path.iterdir()] == ["report.html"]
    monkeypatch.undo()
    assert write_report({"model": {}}, path) == path
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_environment_info():
    env = environment_info(seed=7, weight_hashes={"w": "0" * 64}, command="fmadapt fit x")
    json.dumps(env)
    assert env["seed"] == 7 and env["weight_hashes"] == {"w": "0" * 64} and env["command"] == "fmadapt fit x"
    assert {"python", "fmadapt", "numpy"} <= set(env["versions"])
    assert env["versions"]["python"] == env["python"] and env["hardware"] and env["platform"]


CHROMIUM = shutil.which("chromium")


@pytest.mark.integration
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's `chromium` is not installed (apt-get install chromium)")
def test_renders_in_headless_chromium(tmp_path):
    path = write_report(full_report(), tmp_path / "report.html")
    base = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    dom = subprocess.run([*base, "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=90).stdout
    p = parse(dom)
    assert list(p.sections) == SECTION_IDS
    total = int(p.body["data-images-total"] or 0)
    # the inline script ran under the page's CSP and every embedded image decoded
    assert total >= 10 and p.body.get("data-images-ok") == str(total), p.body
    assert "这部电影很好看" in dom and XSS not in dom
    shot = tmp_path / "report.png"
    subprocess.run([*base, f"--screenshot={shot}", "--window-size=1280,4000", path.as_uri()],
                   capture_output=True, timeout=90)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    im = Image.open(shot).convert("L")
    assert im.size == (1280, 4000)
    assert np.asarray(im).std() > 10  # not a blank page
