"""What a request to the server sends, read and checked: JSON bodies of texts, images or sounds (and table rows),
multipart files; every problem a RequestError with its 4xx status. No torch, no fmadapt: `fmadapt export` copies
this file beside server.py."""

import base64
import binascii
import io
from typing import Any


class RequestError(Exception):
    """A bad request: its HTTP status and what to tell the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _image(data: bytes, where: str, cfg: Any) -> Any:
    """A decoded RGB image, checked: pixels counted before decoding (decompression bombs), decoded in full."""
    import warnings

    from PIL import Image, ImageOps

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            w, h = im.size
            if w * h > cfg.max_image_pixels:
                raise RequestError(413, f"{where}: {w}x{h} = {w * h} pixels, over the limit of "
                                        f"{cfg.max_image_pixels}; send a smaller image")
            im.load()
            return ImageOps.exif_transpose(im)
    except RequestError:
        raise
    except Exception as e:  # (any decoder failure: not an image, truncated, a bomb)
        raise RequestError(422, f"{where}: not a readable image ({type(e).__name__}: "
                                f"{' '.join(str(e).split())[:160]})") from None


def _sound(data: bytes, where: str, cfg: Any) -> tuple[Any, int]:
    """(float32 mono samples, sample rate) of a sound file (WAV, FLAC, OGG, MP3... as libsndfile reads them),
    checked: its duration read from the header before decoding, then decoded in full, finite and not empty."""
    import numpy as np
    import soundfile as sf

    try:
        info = sf.info(io.BytesIO(data))
        seconds = info.frames / max(1, info.samplerate)
        if seconds > cfg.max_sound_seconds:
            raise RequestError(413, f"{where}: {seconds:.1f} s of sound, over the limit of {cfg.max_sound_seconds:g} "
                                    "s; send a shorter clip")
        wave, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except RequestError:
        raise
    except Exception as e:  # (any decoder failure: not a sound file, truncated, an unknown format)
        raise RequestError(422, f"{where}: not a readable sound file ({type(e).__name__}: "
                                f"{' '.join(str(e).split())[:160]})") from None
    mono = wave.mean(axis=1)
    if not len(mono) or not np.isfinite(mono).all():
        raise RequestError(422, f"{where}: no samples, or samples that are not finite numbers")
    return mono, int(sr)


#: the JSON field of each modality's inputs
KEYS = {"text": "texts", "image": "images", "audio": "sounds"}


def _items(body: Any, modality: str, cfg: Any, table_columns: list[str] | None = None) -> list[Any]:
    """The inputs of a JSON body {"texts": [...]}, {"images": [base64, ...]} or {"sounds": [base64, ...]},
    checked; for a model reading `table_columns` beside the text, {"texts": [...], "table": [{column: value}, ...]}
    gives (text, row) pairs."""
    key = KEYS[modality]
    if not isinstance(body, dict):
        raise RequestError(422, f'the body must be a JSON object: {{"{key}": [...]}}')
    if table_columns:
        texts = _items({k: v for k, v in body.items() if k != "table"}, modality, cfg)
        return list(zip(texts, _rows(body.get("table"), len(texts), table_columns), strict=True))
    extra = sorted(set(body) - {key})
    if extra:
        raise RequestError(422, f"this is a {modality} model: send {{\"{key}\": [...]}}; unexpected field(s) "
                                f"{', '.join(map(repr, extra))[:200]}")
    items = body.get(key)
    if not isinstance(items, list) or not items:
        raise RequestError(422, f"'{key}' must be a non-empty list")
    if len(items) > cfg.max_batch:
        raise RequestError(413, f"{len(items)} {key} in one request, over the limit of {cfg.max_batch}: "
                                "split them over several requests")
    if modality == "text":
        for i, t in enumerate(items):
            if not isinstance(t, str):
                raise RequestError(422, f"texts[{i}] is not a string")
            if len(t) > cfg.max_text_chars:
                raise RequestError(413, f"texts[{i}] has {len(t)} characters, over the limit of "
                                        f"{cfg.max_text_chars}")
        return items
    decode = _image if modality == "image" else _sound
    out = []
    for i, b64 in enumerate(items):
        if not isinstance(b64, str):
            raise RequestError(422, f"{key}[{i}] is not a base64 string")
        try:
            raw = base64.b64decode(b64.split(",", 1)[1] if b64.startswith("data:") else b64, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(422, f"{key}[{i}] is not valid base64") from None
        out.append(decode(raw, f"{key}[{i}]", cfg))
    return out


def _rows(table: Any, n: int, columns: list[str]) -> list[dict[str, Any]]:
    """The "table" of a request: one object per text with the model's columns, values that are strings, numbers,
    booleans or null (a missing value: imputed or no category, as in training)."""
    if not isinstance(table, list) or len(table) != n:
        raise RequestError(422, f"this model reads table columns beside the text ({', '.join(columns)}): send "
                                f'"table": a list of {n} objects, one per text')
    for i, row in enumerate(table):
        if not isinstance(row, dict):
            raise RequestError(422, f"table[{i}] is not an object")
        missing = [c for c in columns if c not in row]
        if missing:
            raise RequestError(422, f"table[{i}] lacks the column(s) {', '.join(map(repr, missing))[:200]}")
        bad = [c for c in columns if not (row[c] is None or isinstance(row[c], (str, int, float)))]
        if bad:
            raise RequestError(422, f"table[{i}][{bad[0]!r}] is not a string, number, boolean or null")
        long = [c for c in columns if isinstance(row[c], str) and len(row[c]) > 1000]
        if long:
            raise RequestError(413, f"table[{i}][{long[0]!r}] is over 1000 characters")
    return [{c: row[c] for c in columns} for row in table]


async def _multipart(request: Any, modality: str, cfg: Any) -> list[Any]:
    if modality == "text":
        raise RequestError(415, 'multipart uploads are for image and sound models; send JSON {"texts": [...]}')
    try:
        form = await request.form(max_files=cfg.max_batch + 1, max_fields=cfg.max_batch + 1)
    except Exception as e:
        raise RequestError(400, f"unreadable multipart body ({type(e).__name__})") from None
    what, decode = ("images", _image) if modality == "image" else ("sounds", _sound)
    files = [v for _, v in form.multi_items() if hasattr(v, "read")]
    if not files:
        raise RequestError(422, f"no file in the multipart body: send {what} as file fields")
    if len(files) > cfg.max_batch:
        raise RequestError(413, f"{len(files)} {what} in one request, over the limit of {cfg.max_batch}")
    return [decode(await f.read(), f"file {f.filename or i}", cfg) for i, f in enumerate(files)]
