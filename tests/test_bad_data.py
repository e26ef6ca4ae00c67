"""Bad data at scale ("Reliability and security"): corrupt files among many images, every image mode, the eight
EXIF orientations, decompression bombs (peak memory measured in a fresh process), and a text table with every
kind of awkward row, in UTF-8, UTF-8 with a byte-order mark, Latin-1 and GB18030.

The dataset builders here are also used by benchmarks/reliability_data.py, which prints the figures.

"Wrong extension" is judged by content, not by name: fmadapt decodes whatever is in a class folder, so a valid
image under a misleading extension (a PNG named .jpg, a JPEG named .png) is *used*, and a file that is not an
image but carries an image extension (a text note, an HTML page, a PDF saved as .jpg/.png) is *skipped* and
named with the reason "not an image".
"""

from __future__ import annotations

import csv
import io
import json
import os
import struct
import subprocess
import sys
import zlib
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import fmadapt
from conftest import make_image
from fmadapt import ImageClassifier, TextClassifier
from fmadapt.data.images import ImageLoadError, load_image
from fmadapt.data.tables import examples_from_table, read_table

# --------------------------------------------------------------------------------------------------------------
# 1,000 images, 50 of them unusable
# --------------------------------------------------------------------------------------------------------------

CLASS_COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "gray": (128, 128, 128)}
BAD_KINDS = ("truncated-jpeg", "truncated-png", "zero-byte", "random-bytes", "wrong-extension")
#: the reason each kind of bad file must be reported with
BAD_REASONS = {"truncated-jpeg": "corrupt or truncated", "truncated-png": "corrupt or truncated",
               "zero-byte": "empty file", "random-bytes": "not an image", "wrong-extension": "not an image"}
_NOT_IMAGES = [(".png", b"shopping list: milk, eggs\n"), (".jpg", b"<!DOCTYPE html><html><body>404</body></html>"),
               (".jpeg", b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n"), (".png", b"id,label\n1,cat\n")]
_GOOD_FORMATS = [("PNG", ".png")] * 5 + [("JPEG", ".jpg")] * 4 + [("WEBP", ".webp"), ("BMP", ".bmp"),
                                                                  ("GIF", ".gif"), ("TIFF", ".tif")]


def _encoded(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def build_bad_image_folder(root: Path, total: int = 1000, n_bad: int = 50, misnamed: int = 10, size: int = 32
                           ) -> dict[str, object]:
    """`total` files in 4 class folders; `n_bad` unusable ones (the 5 BAD_KINDS in turn) and `misnamed` valid
    images under the other format's extension. Returns {"bad": {path: kind}, "misnamed": [paths], "good": n}."""
    classes = list(CLASS_COLORS)
    rng = np.random.default_rng(0)
    bad_at = set(rng.choice(total, n_bad, replace=False).tolist())
    misnamed_at = set(rng.choice(sorted(set(range(total)) - bad_at), misnamed, replace=False).tolist())
    bad: dict[str, str] = {}
    misnamed_paths: list[str] = []
    for i in range(total):
        c = classes[i % len(classes)]
        d = root / c
        d.mkdir(parents=True, exist_ok=True)
        img = make_image(CLASS_COLORS[c], i, size=size)
        if i in bad_at:
            kind = BAD_KINDS[len(bad) % len(BAD_KINDS)]
            if kind == "truncated-jpeg":
                data, ext = _encoded(img, "JPEG"), ".jpg"
                data = data[: len(data) // 2]
            elif kind == "truncated-png":
                data, ext = _encoded(img, "PNG"), ".png"
                data = data[: len(data) // 2]
            elif kind == "zero-byte":
                data, ext = b"", (".jpg", ".png")[len(bad) % 2]
            elif kind == "random-bytes":
                data, ext = rng.bytes(int(rng.integers(100, 5000))), ".jpg"
            else:
                ext, data = _NOT_IMAGES[len(bad) % len(_NOT_IMAGES)]
            p = d / f"bad_{i:04d}{ext}"
            p.write_bytes(data)
            bad[str(p)] = kind
        elif i in misnamed_at:
            fmt, ext = (("PNG", ".jpg"), ("JPEG", ".png"))[len(misnamed_paths) % 2]
            p = d / f"misnamed_{i:04d}{ext}"
            p.write_bytes(_encoded(img, fmt))
            misnamed_paths.append(str(p))
        else:
            fmt, ext = _GOOD_FORMATS[i % len(_GOOD_FORMATS)]
            (d / f"img_{i:04d}{ext}").write_bytes(_encoded(img, fmt))
    return {"bad": bad, "misnamed": misnamed_paths, "good": total - n_bad}


def test_thousand_images_fifty_bad_run_completes_and_names_each(tmp_path):
    built = build_bad_image_folder(tmp_path / "images")
    bad: dict[str, str] = built["bad"]  # type: ignore[assignment]
    assert len(bad) == 50 and set(bad.values()) == set(BAD_KINDS)
    clf = ImageClassifier(backbone="tiny-cnn", strategy="probe", progress=False).fit(tmp_path / "images")

    ds = clf.data_summary_
    assert ds["sizes"]["train"] + ds["sizes"]["val"] == 950
    used = set(clf.splits_["train"].inputs) | set(clf.splits_["val"].inputs)
    assert set(built["misnamed"]) <= used  # type: ignore[arg-type]  # valid images under a misleading extension
    skipped = {s["where"]: s["reason"] for s in ds["skipped"]}
    assert set(skipped) == set(bad)  # exactly the 50, each named once
    for path, kind in bad.items():
        assert skipped[path].startswith(BAD_REASONS[kind]), (path, kind, skipped[path])

    out = clf.save_pretrained(tmp_path / "model", report=False)
    listed = json.loads((out / "metrics.json").read_text())["data"]["skipped"]
    assert {s["where"]: s["reason"] for s in listed} == skipped
    assert len(clf.predict(sorted(used)[:5])) == 5


# --------------------------------------------------------------------------------------------------------------
# image modes and EXIF orientation
# --------------------------------------------------------------------------------------------------------------

def _two_tone() -> np.ndarray:
    a = np.zeros((16, 16, 3), np.uint8)
    a[:8], a[8:] = (200, 30, 30), (30, 30, 200)
    return a


def write_mode_images(d: Path) -> dict[str, Path]:
    """One file per mode: L, RGBA (left quarter transparent), CMYK (JPEG), P with a transparent palette entry
    (PNG; top half transparent), 16-bit greyscale PNG (I;16, a ramp over the full 16-bit range)."""
    d.mkdir(parents=True, exist_ok=True)
    base = Image.fromarray(_two_tone())
    rgba = np.dstack([_two_tone(), np.full((16, 16), 255, np.uint8)])
    rgba[:, :4, 3] = 0
    pal = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    ramp = (np.arange(256, dtype=np.uint32).reshape(16, 16) * 257).astype(np.uint16)  # 0 .. 65535
    files = {"L": d / "l.png", "RGBA": d / "rgba.png", "CMYK": d / "cmyk.jpg", "P+transparency": d / "p.png",
             "I;16": d / "i16.png"}
    base.convert("L").save(files["L"])
    Image.fromarray(rgba, "RGBA").save(files["RGBA"])
    base.convert("CMYK").save(files["CMYK"], quality=95)
    pal.save(files["P+transparency"], transparency=int(np.asarray(pal)[0, 0]))
    Image.fromarray(ramp).save(files["I;16"])
    return files


def check_mode_image(mode: str, path: Path) -> None:
    """load_image gives 8-bit RGB with the pixels each mode should give (AssertionError otherwise)."""
    with Image.open(path) as im:
        assert im.mode == mode.split("+")[0], (mode, im.mode)  # the file really is in that mode
    out = load_image(path)
    assert out.mode == "RGB" and out.size == (16, 16)
    a = np.asarray(out).astype(int)
    if mode == "L":
        assert (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()
        assert abs(a[0, 0, 0] - round(0.299 * 200 + 0.587 * 30 + 0.114 * 30)) <= 1
    elif mode == "RGBA":
        assert (a[:, :4] == 255).all()  # transparent: composited on white
        assert np.abs(a[0, 8] - (200, 30, 30)).max() <= 1 and np.abs(a[15, 8] - (30, 30, 200)).max() <= 1
    elif mode == "CMYK":
        assert np.abs(a[2:6, 2:14].mean((0, 1)) - (200, 30, 30)).max() < 20
        assert np.abs(a[10:14, 2:14].mean((0, 1)) - (30, 30, 200)).max() < 20
    elif mode == "P+transparency":
        assert (a[:8] == 255).all()  # the transparent palette entry: white
        assert np.abs(a[8:].mean((0, 1)) - (30, 30, 200)).max() <= 2
    else:  # I;16: rescaled from 0..65535 to 0..255, not clipped to white
        g = a[..., 0].ravel()
        assert g[0] == 0 and g[-1] == 255 and np.abs(g - np.arange(256)).max() <= 1


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P+transparency", "I;16"])
def test_image_modes_load_as_rgb(tmp_path, mode):
    check_mode_image(mode, write_mode_images(tmp_path)[mode])


_T = Image.Transpose
#: what to apply to the displayed image so that EXIF orientation k (then applied by the viewer) shows it again
_INVERSE = {1: None, 2: _T.FLIP_LEFT_RIGHT, 3: _T.ROTATE_180, 4: _T.FLIP_TOP_BOTTOM, 5: _T.TRANSPOSE,
            6: _T.ROTATE_90, 7: _T.TRANSVERSE, 8: _T.ROTATE_270}


def displayed_image() -> np.ndarray:
    """48x32, four quadrants of different colours: every flip and rotation of it is distinguishable."""
    a = np.zeros((32, 48, 3), np.uint8)
    a[:16, :24], a[:16, 24:], a[16:, :24], a[16:, 24:] = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)
    return a


def _quadrant_means(a: np.ndarray) -> np.ndarray:
    return np.array([a[4:12, 4:20].mean((0, 1)), a[4:12, 28:44].mean((0, 1)), a[20:28, 4:20].mean((0, 1)),
                     a[20:28, 28:44].mean((0, 1))])


def write_oriented(d: Path, ext: str) -> dict[int, Path]:
    """The displayed image stored 8 ways, each with the EXIF orientation tag that displays it upright."""
    d.mkdir(parents=True, exist_ok=True)
    shown = Image.fromarray(displayed_image())
    files = {}
    for k, inv in _INVERSE.items():
        stored = shown if inv is None else shown.transpose(inv)
        exif = Image.Exif()
        exif[0x0112] = k
        files[k] = d / f"orientation_{k}.{ext}"
        stored.save(files[k], exif=exif, **({"quality": 95} if ext == "jpg" else {}))
    return files


def orientation_ok(path: Path, draft_size: int | None = None) -> bool:
    out = np.asarray(load_image(path, draft_size=draft_size)).astype(float)
    want = displayed_image()
    return out.shape == want.shape and np.abs(_quadrant_means(out) - _quadrant_means(want)).max() < 30


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_all_eight_exif_orientations_applied(tmp_path, ext):
    files = write_oriented(tmp_path, ext)
    for k, p in files.items():
        with Image.open(p) as im:
            assert im.getexif().get(0x0112) == k
            assert im.size == ((48, 32) if k <= 4 else (32, 48))  # 5-8 are stored on their side
        assert orientation_ok(p), k
        assert orientation_ok(p, draft_size=256), k  # the path the training loader and the checks take
    if ext == "png":  # lossless: exactly the displayed pixels
        for p in files.values():
            assert (np.asarray(load_image(p)) == displayed_image()).all()


# --------------------------------------------------------------------------------------------------------------
# decompression bombs, in a fresh process so that its peak memory can be read
# --------------------------------------------------------------------------------------------------------------

def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png_bomb(path: Path, width: int, height: int, *, complete: bool = True, bit_depth: int = 8,
                   color_type: int = 0) -> Path:
    """A PNG of width x height zero pixels, compressed row by row so the pixels never exist in memory
    (20000 x 10000 greyscale: 200 MP, 190 KB). `complete=False` writes 100 rows and no IEND (2 KB)."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color_type]
    z = zlib.compressobj(9)
    row = bytes(width * channels * bit_depth // 8 + 1)
    idat = b"".join(z.compress(row) for _ in range(height if complete else 100))
    idat += z.flush() if complete else z.flush(zlib.Z_SYNC_FLUSH)
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat)
                     + (_chunk(b"IEND", b"") if complete else b""))
    return path


def write_header_bomb(path: Path, fmt: str, width: int, height: int) -> Path:
    """A tiny JPEG or GIF whose header declares width x height."""
    buf = io.BytesIO()
    Image.new("L" if fmt == "JPEG" else "P", (8, 8)).save(buf, fmt)
    b = bytearray(buf.getvalue())
    if fmt == "JPEG":
        i = b.index(b"\xff\xc0")  # start of frame: length(2) precision(1) height(2) width(2)
        b[i + 5:i + 9] = struct.pack(">HH", height, width)
    else:
        b[6:10] = struct.pack("<HH", width, height)  # logical screen
        i = b.index(b"\x2c")  # image descriptor: left(2) top(2) width(2) height(2)
        b[i + 5:i + 9] = struct.pack("<HH", width, height)
    path.write_bytes(bytes(b))
    return path


def build_bomb_folder(d: Path, n_good: int = 3) -> dict[str, str]:
    """Bombs next to a few good images: {file name: "bomb" | "good"}."""
    d.mkdir(parents=True, exist_ok=True)
    kinds = {}
    write_png_bomb(d / "bomb_200mp.png", 20000, 10000)
    write_png_bomb(d / "bomb_200mp_header_only.png", 20000, 10000, complete=False)
    write_png_bomb(d / "bomb_90mp.png", 10000, 9000)  # just over fmadapt's 89 MP limit
    write_header_bomb(d / "bomb_200mp.jpg", "JPEG", 20000, 10000)
    write_header_bomb(d / "bomb_200mp.gif", "GIF", 20000, 10000)
    write_header_bomb(d / "bomb_4gp.jpg", "JPEG", 65000, 65000)
    for p in d.iterdir():
        kinds[p.name] = "bomb"
    for i in range(n_good):
        make_image((100, 150, 200), i).save(d / f"good_{i}.png")
        kinds[f"good_{i}.png"] = "good"
    return kinds


_PROBE = r"""
import json, sys, types
def status_mb(key):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(key + ":")) / 1024
def reset_peak():  # Linux >= 4.0: VmHWM starts again from the current RSS
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False
src, isolated, folder, big = sys.argv[1], sys.argv[2] == "1", sys.argv[3], sys.argv[4]
if isolated:  # the image reader alone: skip fmadapt/__init__ (torch, transformers, lightning, ...)
    pkg = types.ModuleType("fmadapt"); pkg.__path__ = [src + "/fmadapt"]; sys.modules["fmadapt"] = pkg
else:  # as in a training process: the estimators loaded (`import fmadapt` alone no longer loads torch)
    import fmadapt.estimators
from fmadapt.data.images import ImageLoadError, drop_unreadable, load_image, unlabeled_images
out = {"torch_imported": "torch" in sys.modules, "import_peak_mb": status_mb("VmHWM")}
out["peak_reset"] = reset_peak()
out["rss_before_mb"] = status_mb("VmRSS")
ex = drop_unreadable(unlabeled_images(folder))
out["used"] = sorted(p.rsplit("/", 1)[-1] for p in ex.inputs)
out["skipped"] = {s.where.rsplit("/", 1)[-1]: s.reason for s in ex.skipped}
for s in ex.skipped:  # and one by one, as the training loader would
    try:
        load_image(s.where)
    except ImageLoadError:
        pass
out["load_peak_mb"] = status_mb("VmHWM")
out["peak_mb"] = max(out["import_peak_mb"], out["load_peak_mb"])
if big:  # a large image under the limit: decoded; what does it cost?
    reset_peak()
    out["big_rss_before_mb"] = status_mb("VmRSS")
    load_image(big)
    out["big_peak_mb"] = status_mb("VmHWM")
print(json.dumps(out))
"""


def measure_bombs(folder: Path, isolated: bool, big: Path | None = None) -> dict:
    """Load `folder` (drop_unreadable, then load_image on each refused file) in a fresh Python process and
    return what it used and skipped, and its memory from /proc/self/status: import_peak_mb (VmHWM after the
    imports), rss_before_mb (VmRSS right before loading), load_peak_mb (VmHWM while loading; the peak is reset
    first where Linux allows), peak_mb (the process's highest). Not ru_maxrss: on Linux a child's ru_maxrss
    starts from its parent's resident size at fork (a pytest process with torch loaded: ~1 GB)."""
    src = str(Path(fmadapt.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", _PROBE, src, "1" if isolated else "0", str(folder), str(big or "")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.integration
def test_bombs_refused_with_bounded_memory(tmp_path):
    kinds = build_bomb_folder(tmp_path / "bombs")
    big = write_png_bomb(tmp_path / "big16.png", 4000, 4000, bit_depth=16)  # 16 MP, 16-bit: under the limit
    for isolated in (True, False):
        m = measure_bombs(tmp_path / "bombs", isolated, big)
        assert m["used"] == sorted(k for k, v in kinds.items() if v == "good")
        assert set(m["skipped"]) == {k for k, v in kinds.items() if v == "bomb"}
        for name, reason in m["skipped"].items():
            assert "decompression bomb" in reason, (name, reason)
        assert m["torch_imported"] is not isolated
        # refusing the bombs costs (next to) nothing: the pixels are never decoded (VmHWM can only be read as
        # the peak of the loading itself where Linux lets it be reset)
        assert m["load_peak_mb"] - m["rss_before_mb"] < 100 or not m["peak_reset"], m
        if isolated:  # the image reader on its own stays far below 500 MB (fmadapt's imports alone: ~0.9 GB)
            assert m["peak_mb"] < 500, m
        # 16 MP at 16 bits is 32 MB decoded; converting it to 8-bit RGB must not take float64 copies (~260 MB)
        if m["peak_reset"]:
            assert m["big_peak_mb"] - m["big_rss_before_mb"] < 200, m


def test_bomb_refused_by_fmadapt_even_without_pils_guard(tmp_path, monkeypatch):
    """Some libraries switch PIL's own guard off (Image.MAX_IMAGE_PIXELS = None); fmadapt's limit still holds,
    before any decoding."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    p = write_png_bomb(tmp_path / "b.png", 20000, 10000, complete=False)
    with pytest.raises(ImageLoadError, match=r"200 MP exceeds the 89 MP limit \(possible decompression bomb\)"):
        load_image(p)


# --------------------------------------------------------------------------------------------------------------
# a text table with every kind of awkward row
# --------------------------------------------------------------------------------------------------------------

BIG_TEXT = ("a very long review " * 55_000)[:1_000_000]
_POS = ["great film, loved it", "wonderful acting", "excellent story", "superb and lovely", "brilliant",
        "delightful evening", "amazing cast", "truly great"]
_NEG = ["awful film", "terrible acting", "boring story", "dreadful and dull", "horrible", "painful evening",
        "bad cast", "truly awful"]
_UNICODE = [("I love it 😀🎉", "pos"), ("family night 👩‍👩‍👧 and 👨🏽‍💻", "pos"), ("هذا فيلم رائع", "pos"),
            ("סרט משעמם מאוד", "neg"), ("bidi \u200fmarks\u200e שלום abc", "neg"), ("这部电影很无聊", "neg")]
_LATIN = [("café crème brûlée, très bon", "pos"), ("naïve façade, schön", "pos"), ("Ærø smørrebrød ½ ©", "neg"),
          ("¿Qué tal? ¡Olé! niño", "neg"), ("Größe und Fußball", "pos"), ("déjà vu, raté", "neg")]
#: rows that must be skipped: (record, reason the skip must give)
_SKIPS = [(("no label here", ""), "missing label"), (("label is NaN", "NaN"), "missing label"),
          (("", "pos"), "empty text"), (("   \t ", "neg"), "empty text"), (("", ""), "empty text"),
          ("", "empty text"),  # a blank line
          (("\x00", "pos"), "empty text"),  # nothing but a NUL
          ("too, many, commas, here,pos", "malformed line")]  # 5 fields in a 2-column file

TABLE_FILES = {"utf8.csv": "utf-8", "utf8_bom.csv": "utf-8-sig", "latin1.csv": "latin-1", "gb18030.csv": "gb18030"}


def table_records(encoding: str) -> list[tuple[object, str | None]]:
    """[(record, expected skip reason or None)]: a record is (text, label) written by csv, or a raw line.
    Labels come in case/whitespace variants ("pos", "Pos", " pos "), each often enough to train on."""
    special = _LATIN if encoding == "latin-1" else _UNICODE  # Latin-1 cannot hold emoji, Arabic or Chinese
    recs: list[tuple[object, str | None]] = [((t, ("pos", "Pos", " pos ")[i % 3]), None) for i, t in enumerate(_POS)]
    recs += [((t, "neg"), None) for t in _NEG] + [(r, None) for r in special]
    recs += [((BIG_TEXT, "pos"), None), (("good\x00movie", "pos"), None), (("a quoted\nmulti-line\ntext", "neg"), None)]
    # the rows to skip go in the middle, so that the row numbers of the rows after them are checked too
    mid = len(recs) // 2
    return recs[:mid] + [(r, why) for r, why in _SKIPS] + recs[mid:]


def write_table(path: Path, encoding: str) -> list[tuple[object, str | None]]:
    recs = table_records(encoding)
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["text", "label"])
    for rec, _ in recs:
        if isinstance(rec, tuple):
            w.writerow(rec)
        else:
            buf.write(rec + "\n")
    path.write_bytes(buf.getvalue().encode(encoding))
    return recs


def check_table(path: Path, encoding: str, fit: bool = True) -> dict[str, object]:
    """Read with the default encoding ("auto"), check every row is loaded or reported, train and predict.
    Returns the figures (rows, loaded, skipped, ...)."""
    recs = write_table(path, encoding)
    expect_detection = encoding not in ("utf-8", "utf-8-sig")
    with pytest.warns(UserWarning, match="the encoding detected") if expect_detection else nullcontext():
        df, src = read_table(path, encoding="auto")
    ex = examples_from_table(df, src, "text", "label")
    assert len(ex) + len(ex.skipped) == len(recs)
    # each skip names its row (file rows: header = 1) and the reason
    want = {i + 2: why for i, (_, why) in enumerate(recs) if why}
    got = {int(s.where.rsplit("row ", 1)[1]): s.reason for s in ex.skipped}
    assert set(got) == set(want), (got, want)
    for row, why in want.items():
        assert got[row].startswith(why), (row, got[row], why)
    kept = [r for r, why in recs if not why]
    assert ex.inputs == [str(t).replace("\x00", "") for t, _ in kept]  # every text intact, in order
    assert ex.labels == [lab for _, lab in kept]
    assert any("differ only by case or whitespace" in w for w in ex.warnings)
    detected = [w for w in ex.warnings if "the encoding detected" in w]
    assert bool(detected) == expect_detection
    assert all("--encoding" in w for w in detected)
    figures: dict[str, object] = {"rows": len(recs), "loaded": len(ex), "skipped": len(ex.skipped),
                                  "encoding read": detected[0].split("read it as ")[1].split(",")[0]
                                  if detected else "utf-8"}
    if fit:
        with pytest.warns(UserWarning, match="the encoding detected") if detected else nullcontext():
            clf = TextClassifier(backbone="tiny-bert", progress=False).fit(path)
        assert sum(clf.data_summary_["sizes"].values()) == len(ex)
        assert {s["where"] for s in clf.data_summary_["skipped"]} == {s.where for s in ex.skipped}
        assert len(clf.predict([t for t, _ in kept[:3]] + [BIG_TEXT, "👩‍👩‍👧", "\x00"])) == 6
        figures["fit"] = "ok"
    return figures


@pytest.mark.parametrize("name", list(TABLE_FILES))
def test_awkward_table_every_row_loaded_or_reported(tmp_path, name):
    check_table(tmp_path / name, TABLE_FILES[name])


def test_explicit_encoding_is_honoured_and_wrong_one_errors(tmp_path):
    p = tmp_path / "latin1.csv"
    write_table(p, "latin-1")
    df, _ = read_table(p, encoding="latin-1")
    assert "café crème brûlée, très bon" in df["text"].tolist() and df.attrs["fmadapt"]["warnings"] == []
    with pytest.raises(fmadapt.DataError, match=r"not valid utf-8 text .*--encoding"):
        read_table(p, encoding="utf-8")
    with pytest.raises(fmadapt.DataError, match="unknown encoding 'no-such-codec'"):
        read_table(p, encoding="no-such-codec")
    assert fmadapt.FitConfig().encoding == "auto"


def test_short_chinese_gbk_file_is_detected(tmp_path):
    p = tmp_path / "gbk.csv"
    p.write_bytes("text,label\n你好,好\n很差,差\n".encode("gbk"))
    with pytest.warns(UserWarning, match="read it as gb18030"):
        df, _ = read_table(p, encoding="auto")
    assert df["text"].tolist() == ["你好", "很差"] and df["label"].tolist() == ["好", "差"]


def test_mostly_utf8_file_with_a_stray_byte_is_not_read_as_another_encoding(tmp_path):
    """A UTF-8 file with one Latin-1 line pasted in: the UTF-8 texts stay intact (not mojibake from a detected
    single-byte encoding), the stray byte becomes U+FFFD, and a warning says so."""
    p = tmp_path / "mixed.csv"
    p.write_bytes(b"text,label\n" + "".join(f"caf\u00e9 {i} \u4f60\u597d,a\n" for i in range(50)).encode("utf-8")
                  + "na\u00efve,b\n".encode("latin-1"))
    with pytest.warns(UserWarning, match="mostly UTF-8"):
        df, _ = read_table(p, encoding="auto")
    assert df["text"].tolist()[:2] == ["caf\u00e9 0 \u4f60\u597d", "caf\u00e9 1 \u4f60\u597d"]
    assert df["text"].tolist()[-1] == "na\ufffdve"


def test_malformed_lines_skipped_in_tsv_and_headerless_files(tmp_path):
    p = tmp_path / "d.tsv"
    p.write_text("text\tlabel\nfine\ta\nbad\tb\textra\nalso fine\tb\n", encoding="utf-8")
    df, src = read_table(p)
    ex = examples_from_table(df, src, "text", "label")
    assert ex.inputs == ["fine", "also fine"]
    assert [(s.where.rsplit(":", 1)[1], s.reason.split(" (")[0]) for s in ex.skipped] == [
        ("row 3", "malformed line, skipped")]
    p = tmp_path / "nh.csv"
    p.write_text("a,1\nb,2,3\nc,1\nd,2\n", encoding="utf-8")
    df, src = read_table(p, header=False)
    ex = examples_from_table(df, src, "0", "1")
    assert ex.inputs == ["a", "c", "d"] and [s.where.rsplit(":", 1)[1] for s in ex.skipped] == ["row 2"]
