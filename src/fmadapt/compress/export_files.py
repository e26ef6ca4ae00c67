"""The files of an export besides its graphs: export.json (but for the parity figures and checksums), server.py,
requirements.txt, the Dockerfile and the README (compress/export.py writes them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._version import __version__
from . import exported as runtime
from .export_extras import NGRAM_FILE, TABLE_FILE, ngram_part


def agreement(c: dict[str, Any]) -> float:
    return float(c.get("same_class", c.get("same_labels_at_0.5", 1.0)))


def server_files(modality: str) -> dict[str, str]:
    """server.py (serve/app.py itself), requirements.txt (the versions the export was checked with) and a
    Dockerfile: the export served from a slim image without torch or fmadapt."""
    from importlib.metadata import PackageNotFoundError, version

    from ..serve import app as server

    def pinned(name: str) -> str:
        try:
            return f"{name}=={version(name)}" + ("; sys_platform != 'win32'" if name == "uvloop" else "")
        except PackageNotFoundError:
            return name

    reads = {"text": ["tokenizers"], "audio": ["soundfile", "soxr"]}.get(modality, ["pillow"])
    needs = ["onnxruntime", "numpy", *reads, "fastapi", "uvicorn", "httptools", "uvloop"]
    needs += ["python-multipart"] if modality != "text" else []
    docker = ("FROM python:3.11-slim\nWORKDIR /model\nCOPY requirements.txt .\n"
              "RUN pip install --no-cache-dir -r requirements.txt\nCOPY . .\nEXPOSE 8000\n"
              "# a token is required on 0.0.0.0: docker run -e FMADAPT_TOKEN=... -p 8000:8000 IMAGE\n"
              'CMD ["python", "server.py", ".", "--host", "0.0.0.0", "--port", "8000"]\n')
    return {"server.py": Path(server.__file__).read_text(encoding="utf-8"),
            "request_inputs.py": (Path(server.__file__).parent / "request_inputs.py").read_text(encoding="utf-8"),
            "requirements.txt": "\n".join(pinned(n) for n in needs) + "\n", "Dockerfile": docker}


def readme(meta: dict[str, Any], source: Path) -> str:
    text, audio = meta["modality"] == "text", meta["modality"] == "audio"
    example = '["a great film", "dull"]' if text else '["clip1.wav", "clip2.flac"]' if audio else \
        '["photo1.jpg", "photo2.png"]'
    shell = "rows.csv" if meta.get("table") else '"a great film"' if text else "clip1.wav" if audio else \
        "photo1.jpg"
    p = meta["parity"]
    lines = [
        f"# fmadapt export of `{source}`", "",
        f"A {meta['modality']} {meta['task']} model ({len(meta['classes'])} "
        f"{'outputs' if meta['task'] == 'regression' else 'classes'}) as one ONNX graph. It predicts with "
        f"onnxruntime, numpy and {'tokenizers' if text else 'soundfile + soxr' if audio else 'Pillow'} only:", "",
        "```python", "import sys; sys.path.insert(0, 'THIS_DIRECTORY')", "from predict import ExportedModel", "",
        "model = ExportedModel('THIS_DIRECTORY')", f"print(model.predict({example}))",
        "print(model.predict_proba(...))  # (N, C) calibrated probabilities, columns in the order of model.classes",
        *([f"# this model reads table columns beside the text ({', '.join(meta['table']['columns'])}): give the "
           "rows too,", "# model.predict(texts, table=rows)  (a DataFrame, a list of dicts or a dict of columns)"]
          if meta.get("table") else []),
        "```", "", f"or `python predict.py . {shell}` here. Files: "
        "`model.onnx` (fp32) and, when exported with --int8, `model.int8.onnx` (the default then), "
        "`export.json` (classes, task, inputs, preprocessing, thresholds, parity), "
        + ("`tokenizer.json` (truncation and padding set), " if meta.get("tokenizer") else "")
        + ("`ngram.json` (the n-gram model's vocabularies and idf weights), " if meta.get("ngram") else "")
        + ("`table.json` (the encoding of the table columns read beside the text), " if meta.get("table") else "")
        + "`predict.py` with `exported_inputs.py` (its table and n-gram encodings); `server.py` (HTTP: `python "
        "server.py . --port 8000`) with `request_inputs.py` (how it reads a request), its pinned `requirements.txt` "
        "and a `Dockerfile`.", "",
        f"Checked when exported, on {p['inputs']}: fp32 graph against the model, largest probability difference "
        f"{p['fp32']['graph']['max_abs_diff']:.1e}"
        + (f"; int8 against fp32: same prediction on {agreement(p['int8']):.1%}, largest difference "
           f"{p['int8']['max_abs_diff']:.3f}" if "int8" in p else "") + ".", "",
        "Backbone licence(s): " + "; ".join(f"{b.get('name')}: {b.get('license') or 'see its source'}"
                                           for b in meta["backbones"]) + ".", ""]
    return "\n".join(lines)


def _preprocessing(backbone: Any) -> dict[str, Any]:
    cfg = backbone.cfg
    return {"input_size": int(cfg.input_size), "resize": int(round(cfg.input_size / cfg.crop_pct)),
            "crop_pct": float(cfg.crop_pct), "interpolation": str(cfg.interpolation),
            "jpeg_draft": int(cfg.input_size / cfg.crop_pct),  # (data/loader.make_loader's draft size)
            "mean": [float(v) for v in cfg.mean], "std": [float(v) for v in cfg.std],
            "in_graph": "scaling to [0, 1] and normalisation (mean, std)",
            "outside": "decode (JPEG at a reduced scale >= jpeg_draft), EXIF orientation, RGB (transparency on "
                       "white), resize of the short side (Pillow), centre crop"}


def export_meta(model: Any, first: Any) -> dict[str, Any]:
    """export.json, but for the parity results and the graphs' checksums."""
    task = model.config_.task
    meta: dict[str, Any] = {
        "format": runtime.FORMAT, "format_version": runtime.FORMAT_VERSION, "fmadapt_version": __version__,
        "modality": model.modality, "task": task, "classes": list(model.classes_),
        "output": "value" if task == "regression" else "probabilities",
        "graphs": {"fp32": "model.onnx"}, "default_graph": "fp32", "members": len(model.members_),
        "calibration": {"temperature": float(model.temperature_)},
        "backbones": [{k: v for k, v in m.model.backbone.cfg.to_dict().items()
                       if k in ("name", "license", "source", "sha256", "embed_dim")} for m in model.members_]}
    if task == "multilabel":
        meta["thresholds"] = {c: float(t) for c, t in zip(model.classes_, model.decision_thresholds(), strict=True)}
        meta["label_sep"] = model.config_.label_sep
    if task == "regression" and model.interval_halfwidth() is not None:
        meta["interval"] = dict(model.interval_ or {})
    part = ngram_part(model) if model.modality == "text" else None
    if model.modality == "text":
        meta.update(_text_meta(model, first, part))
    elif model.modality == "audio":
        from ..backbones.audio import MIN_SAMPLES

        extra = first.cfg.extra
        meta.update(preprocessing={
            "sample_rate": int(extra["sample_rate"]), "context_seconds": float(extra["context_seconds"]),
            "min_samples": MIN_SAMPLES, "in_graph": "log-mel frames, the embedding network, pooling over windows",
            "outside": "decode (soundfile), mix to mono, resample to sample_rate (soxr), context_seconds of silence "
                       "on each side, zero-padded to at least min_samples; a batch is zero-padded to its longest"},
            inputs={"waveform": "float32 (batch, samples) in [-1, 1]", "lengths": "int64 (batch,) samples"})
    else:
        meta.update(preprocessing=_preprocessing(first),
                    inputs={"images": f"uint8 (batch, {first.cfg.input_size}, {first.cfg.input_size}, 3) RGB"})
    return meta


def _text_meta(model: Any, first: Any, part: tuple[Any, float, dict[str, Any]] | None) -> dict[str, Any]:
    """export.json's entries for a text model: its tokenizer, table columns and n-gram model, and the inputs."""
    meta: dict[str, Any] = {"inputs": {}}
    if part is None or part[1] < 1.0:
        meta.update(tokenizer="tokenizer.json", max_tokens=int(first.cfg.max_tokens),
                    inputs={"input_ids": "int64 (batch, tokens)", "attention_mask": "int64 (batch, tokens)"})
    if model.table_encoder_ is not None and (part is None or part[1] < 1.0):
        enc = model.table_encoder_
        meta["table"] = {"file": TABLE_FILE, "columns": [c["name"] for c in enc.columns], "encoded": enc.names(),
                         "text_column": model.config_.text_col,
                         "in_graph": "the table's linear term in the head, or the stacked boosted trees",
                         "outside": "the columns' encoding (predict.py): numbers imputed and standardised, "
                                    "categories one-hot"}
        meta["inputs"]["table"] = f"float32 (batch, {enc.width}) the encoded columns"
    if part is not None:
        meta["ngram"] = {"file": NGRAM_FILE, "weight": part[1], "columns": part[2]["width"],
                         "in_graph": "the linear weights over the TF-IDF features, softmax, the blend",
                         "outside": "counting the n-grams, tf-idf and the norm per vectorizer (predict.py)"}
        meta["inputs"] = {**meta.get("inputs", {}), "ngram_index": "int64 (batch, terms) columns, padded with "
                          f"{part[2]['pad_index']}", "ngram_value": "float32 (batch, terms) TF-IDF values"}
    return meta
