"""Predict with a model exported by `fmadapt export`: onnxruntime + numpy, and tokenizers (texts), Pillow
(images) or soundfile + soxr (sounds). No torch, no fmadapt: `fmadapt export` copies this very file into the
exported directory as `predict.py`, so the directory runs anywhere those packages install:

    from predict import ExportedModel              # (the exported directory on sys.path)
    model = ExportedModel("exported/")
    model.predict(["a great film", "dull"])        # texts; images: paths or PIL images
    model.predict_proba([...])                     # (N, C) float32, columns in the order of model.classes

or from a shell: `python exported/predict.py exported/ "a great film" "dull"` (one JSON line per input).

The graph (`model.onnx`) holds the whole model: backbone(s), head(s), the ensemble's average, test-time flips,
the calibration temperature and, for images, the scaling to [0, 1] and normalisation. What stays outside it is
here: tokenizing (tokenizer.json holds truncation and padding) or decoding, resizing and centre-cropping images
(export.json's `preprocessing`), turning probabilities into labels (`classes`, multi-label `thresholds`); for a
model that blends in `auto`'s n-gram TF-IDF model, counting the n-grams (ngram.json: the vocabularies and idf
weights; the linear weights and the blend are in the graph); for a model that reads table columns beside the text,
their encoding (table.json; pass the rows as `table=`: a DataFrame, a list of dicts or a dict of columns)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

try:  # (in fmadapt; in an exported directory the file lies beside this one, as exported_inputs.py)
    from .exported_inputs import NgramFeatures, TableColumns
except ImportError:
    from exported_inputs import NgramFeatures, TableColumns  # type: ignore[no-redef]

FORMAT = "fmadapt-onnx"
FORMAT_VERSION = 1
_MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb limit, refused before decoding
#: a text batch is cut where padding would exceed this multiple of its real tokens (see `length_batches`)
PADDING_SLACK = 1.25


class ExportedModel:
    """An exported model directory. `precision`: "fp32", "int8" (when exported with --int8) or None (what
    export.json names as the default)."""

    def __init__(self, root: str | os.PathLike[str], precision: str | None = None, threads: int | None = None
                 ) -> None:
        import onnxruntime as ort

        self.root = Path(root)
        meta = json.loads((self.root / "export.json").read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{self.root / 'export.json'}: not an fmadapt ONNX export of format version "
                             f"{FORMAT_VERSION} (format {meta.get('format')!r}, "
                             f"version {meta.get('format_version')!r})")
        self.meta = meta
        graphs = meta["graphs"]
        self.precision = precision or meta["default_graph"]
        if self.precision not in graphs:
            raise ValueError(f"{self.root}: no {self.precision} graph here (there are: {', '.join(graphs)})")
        self.classes: list[str] = list(meta["classes"])
        self.task: str = meta["task"]  # classification | multilabel | regression
        self.modality: str = meta["modality"]
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.inter_op_num_threads = 1
        so.log_severity_level = 3  # (errors only: not the graph optimizer's notes on unused constants)
        if threads:
            so.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(self.root / graphs[self.precision]), so,
                                            providers=["CPUExecutionProvider"])
        self.tokenizer = None
        self.ngrams = NgramFeatures(self.root / meta["ngram"]["file"]) if meta.get("ngram") else None
        self.table = TableColumns(self.root / meta["table"]["file"]) if meta.get("table") else None
        if self.modality == "text" and meta.get("tokenizer"):
            from tokenizers import Tokenizer

            self.tokenizer = Tokenizer.from_file(str(self.root / meta["tokenizer"]))

    # -- inputs -> graph feeds -------------------------------------------------------------------
    def text_feeds(self, texts: list[str]) -> dict[str, np.ndarray]:
        """(B, T) int64 `input_ids` and `attention_mask`, truncated and padded as tokenizer.json says."""
        assert self.tokenizer is not None
        enc = self.tokenizer.encode_batch([str(t) for t in texts])
        return {"input_ids": np.asarray([e.ids for e in enc], dtype=np.int64),
                "attention_mask": np.asarray([e.attention_mask for e in enc], dtype=np.int64)}

    def image_array(self, image: Any) -> np.ndarray:
        """(S, S, 3) uint8: an image (a path or a PIL image) decoded, turned upright (EXIF), made RGB (transparency
        on white), its short side resized and centre-cropped as the model was trained to see it."""
        from PIL import Image, ImageOps

        pre = self.meta["preprocessing"]
        if isinstance(image, (str, os.PathLike)):
            with Image.open(image) as im:
                if im.size[0] * im.size[1] > _MAX_PIXELS:
                    raise ValueError(f"{image}: {im.size[0]}x{im.size[1]} pixels is over the limit; not decoded")
                if im.format == "JPEG":  # decoded at 1/2, 1/4 or 1/8 scale where still >= jpeg_draft, as fmadapt
                    im.draft("RGB", (pre["jpeg_draft"], pre["jpeg_draft"]))
                im.load()
                image = ImageOps.exif_transpose(im)
        im = _rgb(image)
        size, short = int(pre["input_size"]), int(pre["resize"])
        w, h = im.size
        # torchvision's Resize(short): the short side to `short`, the long side int(short * long / short side)
        if w <= h:
            nw, nh = short, int(short * h / w)
        else:
            nw, nh = int(short * w / h), short
        r = Image.Resampling
        resample = {"bicubic": r.BICUBIC, "bilinear": r.BILINEAR, "nearest": r.NEAREST,
                    "lanczos": r.LANCZOS}[pre["interpolation"]]
        if (nw, nh) != (w, h):
            im = im.resize((nw, nh), resample)
        a = np.asarray(im, dtype=np.uint8)
        return _center_crop(a, size)

    def image_feeds(self, images: list[Any]) -> dict[str, np.ndarray]:
        return {"images": np.stack([self.image_array(x) for x in images])}

    def sound_array(self, clip: Any) -> np.ndarray:
        """(S,) float32: a sound file (a path) or float32 mono samples at the model's rate, decoded (soundfile),
        mixed to mono, resampled (soxr, else SciPy), with the model's silence on each side, at least one window."""
        pre = self.meta["preprocessing"]
        rate = int(pre["sample_rate"])
        if isinstance(clip, (str, os.PathLike)):
            import soundfile as sf

            data, sr = sf.read(str(clip), dtype="float32", always_2d=True)
            wave = data.mean(axis=1)
            if not len(wave) or not np.isfinite(wave).all():
                raise ValueError(f"{clip}: no samples, or samples that are not finite numbers")
            wave = self.at_rate(wave, sr)
        else:
            wave = np.asarray(clip, dtype=np.float32).reshape(-1)
        pad = int(round(float(pre["context_seconds"]) * rate))
        wave = np.pad(np.asarray(wave, dtype=np.float32), pad)
        return np.pad(wave, (0, max(0, int(pre["min_samples"]) - len(wave))))

    def at_rate(self, wave: np.ndarray, sr: int) -> np.ndarray:
        """Mono samples at `sr` Hz resampled to the model's rate (soxr, else SciPy's polyphase filter)."""
        rate = int(self.meta["preprocessing"]["sample_rate"])
        if sr == rate:
            return np.asarray(wave, dtype=np.float32)
        try:
            import soxr

            return np.asarray(soxr.resample(wave, sr, rate, quality="HQ"), dtype=np.float32)
        except ImportError:
            from math import gcd

            from scipy.signal import resample_poly

            return resample_poly(wave, rate // gcd(sr, rate), sr // gcd(sr, rate)).astype(np.float32)

    def sound_feeds(self, clips: list[Any]) -> dict[str, np.ndarray]:
        waves = [self.sound_array(c) for c in clips]
        lengths = np.asarray([len(w) for w in waves], dtype=np.int64)
        batch = np.zeros((len(waves), int(lengths.max())), dtype=np.float32)
        for i, w in enumerate(waves):
            batch[i, :len(w)] = w
        return {"waveform": batch, "lengths": lengths}

    # -- prediction ---------------------------------------------------------------------------
    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The graph's output for prepared feeds: (B, C) probabilities, or (B, 1) numbers for regression."""
        return self.session.run([self.meta["output"]], feeds)[0]

    def predict_proba(self, inputs: list[Any], batch_size: int = 32, table: Any = None) -> np.ndarray:
        """(N, C) float32: calibrated class probabilities (multi-label: one per label), in the order of
        `classes`; regression: (N, 1), the predicted numbers. Texts run in batches of similar length. `table`:
        the rows of the inputs, for a model that reads table columns beside the text (export.json's `table`)."""
        inputs = list(inputs)
        width = len(self.classes) if self.task != "regression" else 1
        out = np.zeros((len(inputs), width), dtype=np.float32)
        if not inputs:
            return out
        encoded = self.table.encode(table, len(inputs)) if self.table is not None else None
        if self.modality in ("image", "audio"):
            prepare = self.image_feeds if self.modality == "image" else self.sound_feeds
            for s in range(0, len(inputs), batch_size):
                out[s:s + batch_size] = self.run(prepare(inputs[s:s + batch_size]))
            return out
        rows = self.ngrams.rows(inputs) if self.ngrams is not None else None
        pad = self.ngrams.pad if self.ngrams is not None else 0
        if self.tokenizer is None:  # (the n-gram model alone)
            assert rows is not None
            for s in range(0, len(inputs), batch_size):
                out[s:s + batch_size] = self.run(NgramFeatures.feeds(rows[s:s + batch_size], pad))
            return out
        feeds = self.text_feeds(inputs)  # (tokenized once, padded to the longest of all)
        mask = feeds["attention_mask"]
        lengths = mask.sum(1)
        left = (self.tokenizer.padding or {}).get("direction") == "left"  # type: ignore[union-attr]
        for idx in length_batches(lengths, batch_size):
            t = int(lengths[idx].max())
            cols = slice(mask.shape[1] - t, None) if left else slice(0, t)
            batch = {k: v[idx][:, cols] for k, v in feeds.items()}
            if encoded is not None:
                batch["table"] = encoded[idx]
            if rows is not None:
                batch.update(NgramFeatures.feeds([rows[i] for i in idx], pad))
            out[idx] = self.run(batch)
        return out

    def labels_of(self, proba: np.ndarray) -> list[Any]:
        """Predictions from `predict_proba`'s output: class names; multi-label: the labels at or above their
        thresholds joined by `label_sep` ("" for none); regression: numbers."""
        if self.task == "regression":
            return [float(v) for v in proba[:, 0]]
        if self.task == "multilabel":
            t = np.asarray([self.meta["thresholds"][c] for c in self.classes], dtype=np.float32)
            sep = self.meta.get("label_sep", "|")
            return [sep.join(c for c, on in zip(self.classes, row >= t, strict=True) if on) for row in proba]
        return [self.classes[int(i)] for i in proba.argmax(1)]

    def predict(self, inputs: list[Any], batch_size: int = 32, table: Any = None) -> list[Any]:
        return self.labels_of(self.predict_proba(inputs, batch_size, table))

    def predictions(self, inputs: list[Any], table: Any = None) -> list[dict[str, Any]]:
        """One {"label", "probabilities"} per input (regression: {"value"}, with "lower" and "upper" when
        the model has prediction intervals)."""
        proba = self.predict_proba(inputs, table=table)
        labels = self.labels_of(proba)
        if self.task == "regression":
            half = (self.meta.get("interval") or {}).get("halfwidth")
            return [{"value": v, **({"lower": v - half, "upper": v + half} if half is not None else {})}
                    for v in labels]
        return [{"label": lab, "probabilities": {c: float(p) for c, p in zip(self.classes, row, strict=True)}}
                for lab, row in zip(labels, proba, strict=True)]


def length_batches(lengths: np.ndarray, batch_size: int, slack: float = PADDING_SLACK, least: int = 4
                   ) -> list[np.ndarray]:
    """Indices of texts in batches of similar length: sorted by token count, a batch ends at `batch_size` texts or
    where the next text would pad it past `slack` times its real tokens (batches of at least `least`). A server's
    micro-batch of 32 random SST-2 sentences ran 1.5x faster cut this way than as one padded batch (int8, 2 cores)."""
    order = np.argsort(lengths, kind="stable")
    out: list[np.ndarray] = []
    cur: list[int] = []
    real = 0
    for i in order:
        n = int(lengths[i])
        if cur and (len(cur) >= batch_size or (len(cur) >= least and n * (len(cur) + 1) > slack * (real + n))):
            out.append(np.asarray(cur))
            cur, real = [], 0
        cur.append(int(i))
        real += n
    if cur:
        out.append(np.asarray(cur))
    return out


def _rgb(im: Any) -> Any:
    """8-bit RGB, as fmadapt reads images: transparency composited on white, 16-bit rescaled."""
    from PIL import Image

    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float32)
        hi = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        return Image.fromarray(np.clip(np.rint(a * (255.0 / hi)), 0, 255).astype(np.uint8), mode="L").convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA") if im.mode != "RGBA" else im
        out = Image.new("RGB", im.size, (255, 255, 255))
        out.paste(im, mask=im.getchannel("A"))
        return out
    return im.convert("RGB")


def _center_crop(a: np.ndarray, size: int) -> np.ndarray:
    """torchvision's CenterCrop(size) of an (H, W, 3) array: zero-padded first where it is smaller."""
    h, w = a.shape[:2]
    if h < size or w < size:
        top, left = max(0, (size - h) // 2), max(0, (size - w) // 2)
        a = np.pad(a, ((top, max(0, size - h - top)), (left, max(0, size - w - left)), (0, 0)))
        h, w = a.shape[:2]
    y, x = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return np.ascontiguousarray(a[y:y + size, x:x + size])


def main(argv: list[str] | None = None) -> int:
    """`python predict.py EXPORT_DIR INPUT...`: texts (or image or sound paths), or `-` to read one per line from
    stdin; a model reading table columns beside the text takes one CSV file with the text and those columns. Prints
    one JSON object per input."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2:
        print(main.__doc__, file=sys.stderr)
        return 2
    model = ExportedModel(args[0])
    table = None
    if model.table is not None:  # (rows of a CSV file: the text column and the table columns)
        import csv

        text_col = model.meta["table"].get("text_column") or "text"
        if len(args) != 2 or not args[1].lower().endswith(".csv"):
            print(f"this model reads table columns beside the text: give one CSV file with the columns {text_col!r}, "
                  + ", ".join(repr(c["name"]) for c in model.table.columns), file=sys.stderr)
            return 2
        with open(args[1], newline="", encoding="utf-8-sig") as f:
            table = [{k: (None if v == "" else v) for k, v in row.items()} for row in csv.DictReader(f)]
        inputs = [str(r.get(text_col) or "") for r in table]
    else:
        inputs = [line.rstrip("\n") for line in sys.stdin] if args[1:] == ["-"] else args[1:]
    for x, p in zip(inputs, model.predictions(inputs, table=table), strict=True):
        print(json.dumps({"input": x, **p}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
