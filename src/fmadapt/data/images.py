"""Reading users' image folders safely: any mode, EXIF orientation, corrupt files skipped, bombs refused."""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps

from ..errors import DataError
from .examples import Examples, Skipped

#: Refuse images above this many pixels before decoding them (PIL's own guard is 89 M with a warning).
MAX_PIXELS = 89_478_485
SPLIT_NAMES = ("train", "val", "test")
_VAL_ALIASES = {"val": "val", "valid": "val", "validation": "val", "dev": "val", "train": "train", "test": "test"}

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error we report, not grey pixels


class ImageLoadError(Exception):
    """One image could not be used; the message says why (shown in the run summary)."""


def load_image(path: str | os.PathLike[str], max_pixels: int = MAX_PIXELS, draft_size: int | None = None
               ) -> Image.Image:
    """Open, check size before decoding, decode, apply EXIF orientation, convert to 8-bit RGB."""
    try:
        if os.path.getsize(path) == 0:
            raise ImageLoadError("empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
            w, h = im.size
            if w * h > max_pixels:
                raise ImageLoadError(f"{w}x{h} = {w * h / 1e6:.0f} MP exceeds the {max_pixels / 1e6:.0f} MP "
                                     "limit (possible decompression bomb); not decoded")
            if draft_size and im.format == "JPEG":
                # JPEG can decode at 1/2, 1/4, 1/8 scale directly: much faster for photos we shrink anyway.
                im.draft("RGB", (draft_size, draft_size))
            im.load()
            im = ImageOps.exif_transpose(im)
            return to_rgb(im)
    except ImageLoadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageLoadError(f"refused as a decompression bomb ({e})") from e
    except Image.UnidentifiedImageError as e:
        raise ImageLoadError("not an image (unrecognised format)") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageLoadError(f"corrupt or truncated image ({e})") from e


def to_rgb(im: Image.Image) -> Image.Image:
    """8-bit RGB from any PIL mode; transparency is composited on white, 16-bit is rescaled.

    Memory stays near the decoded image plus the RGB result (a 16-bit or RGBA image just under MAX_PIXELS
    must not need gigabytes): 16-bit rows are rescaled in blocks, alpha is pasted as a mask."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        hi = 65535.0 if im.mode.startswith("I;16") or im.getextrema()[1] > 255 else 255.0
        w, h = im.size
        out = np.empty((h, w), dtype=np.uint8)
        step = max(1, (1 << 22) // max(w, 1))  # ~4 M pixels of float32 at a time
        for y in range(0, h, step):
            a = np.asarray(im.crop((0, y, w, min(h, y + step))), dtype=np.float32)
            np.multiply(a, 255.0 / hi, out=a)
            out[y:y + step] = np.clip(np.rint(a, out=a), 0, 255, out=a)
        return Image.fromarray(out, mode="L").convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        if im.mode != "RGBA":
            im = im.convert("RGBA")
        out = Image.new("RGB", im.size, (255, 255, 255))
        out.paste(im, mask=im.getchannel("A"))
        return out
    return im.convert("RGB")


def check_images(paths: list[str], max_pixels: int = MAX_PIXELS, workers: int = 4) -> dict[str, str]:
    """Decode every file once (threads: PIL releases the GIL while decoding). Returns {path: reason}
    for the files that cannot be used."""

    def one(p: str) -> tuple[str, str | None]:
        try:
            load_image(p, max_pixels, draft_size=256)
            return p, None
        except ImageLoadError as e:
            return p, str(e)

    with ThreadPoolExecutor(max_workers=workers) as ex:
        return {p: r for p, r in ex.map(one, paths) if r is not None}


def median_short_side(paths: list[str], sample: int = 256, seed: int = 0) -> int | None:
    """The median short side, in pixels, of (a seeded sample of up to `sample` of) the images, read from the
    file headers without decoding; None when none can be read."""
    rng = np.random.default_rng(seed)
    pick = paths if len(paths) <= sample else [paths[i] for i in rng.choice(len(paths), sample, replace=False)]
    sides = []
    for p in pick:
        try:
            with Image.open(p) as im:
                sides.append(min(im.size))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            continue
    return int(np.median(sides)) if sides else None


def default_crop(short_side: int | None, size: int, backbone_crop: float) -> dict[str, Any]:
    """crop_pct when the user left it unset, and why: the centre crop is for photos shrunk to the input size
    (timm's convention, the backbone's value); images no larger than the input are upscaled whole (1.0), since
    cropping them cuts off edges that hold the object (Fashion-MNIST sleeves, 32 px photos)."""
    small = short_side is not None and short_side <= size
    return {"median_short_side": short_side, "input_size": size, "crop_pct": 1.0 if small else backbone_crop,
            "why": "images no larger than the input size are upscaled whole, not cropped" if small else
            "images larger than the input size: resized and centre-cropped (the backbone's)"}


@dataclass
class ImageFolder:
    """A scanned folder: one Examples per split found on disk ('train' only for root/<class>/ layout)."""

    root: Path
    splits: dict[str, Examples]


def _list_files(d: Path) -> list[Path]:
    return sorted(p for p in d.rglob("*") if p.is_file() and not any(part.startswith(".") for part in
                                                                      p.relative_to(d).parts))


def _class_dirs(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))


def _scan_classes(d: Path, source: str, modality: str = "image") -> Examples:
    classes = _class_dirs(d)
    kind = "sound" if modality == "audio" else "image"
    if not classes:
        raise DataError(f"{d}: no class folders found. Expected {d}/<class>/<{kind} files> "
                        f"or {d}/{{train,val,test}}/<class>/<{kind} files>.")
    empty = [c.name for c in classes if not _list_files(c)]
    if empty:
        raise DataError(f"{d}: class folder(s) {', '.join(empty)} contain no files. Add {kind} files or remove "
                        "the folder(s).")
    inputs, labels = [], []
    for c in classes:
        for f in _list_files(c):
            inputs.append(str(f))
            labels.append(c.name)
    return Examples(inputs=inputs, labels=labels, ids=list(inputs), source=source, modality=modality)


def scan_image_folder(root: str | os.PathLike[str], modality: str = "image") -> ImageFolder:
    """Find the layout: root/{train,val,test}/<class>/… or root/<class>/… (of images, or of sound files)"""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such directory")
    subdirs = {p.name.lower(): p for p in _class_dirs(root)}
    split_dirs = {_VAL_ALIASES[k]: v for k, v in subdirs.items() if k in _VAL_ALIASES}
    if "train" in split_dirs and set(subdirs) <= set(_VAL_ALIASES):
        return ImageFolder(root, {s: _scan_classes(p, f"{p}", modality) for s, p in split_dirs.items()})
    return ImageFolder(root, {"train": _scan_classes(root, str(root), modality)})


def unlabeled_images(path: str | os.PathLike[str], modality: str = "image") -> Examples:
    """Images (or sound files) to predict on: one file, or every file under a folder (any depth)."""
    p = Path(path)
    if p.is_file():
        files = [p]
    elif p.is_dir():
        files = _list_files(p)
    else:
        raise DataError(f"{p}: no such file or directory")
    if not files:
        raise DataError(f"{p}: no files found")
    inputs = [str(f) for f in files]
    return Examples(inputs=inputs, labels=None, ids=list(inputs), source=str(p), modality=modality)


def drop_unreadable(ex: Examples, max_pixels: int = MAX_PIXELS) -> Examples:
    """Remove files that cannot be decoded; each is recorded in `ex.skipped` with the reason."""
    bad = check_images(ex.inputs, max_pixels)
    if not bad:
        return ex
    keep = [i for i, p in enumerate(ex.inputs) if p not in bad]
    out = ex.subset(keep)
    out.skipped = ex.skipped + [Skipped(where=p, reason=r) for p, r in bad.items()]
    return out

