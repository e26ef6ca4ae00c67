"""The files of an export besides its graphs and export.json: server.py, requirements.txt, the Dockerfile and the
README (compress/export.py writes them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


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
    needs += ["python-multipart"] if modality == "image" else []
    docker = ("FROM python:3.11-slim\nWORKDIR /model\nCOPY requirements.txt .\n"
              "RUN pip install --no-cache-dir -r requirements.txt\nCOPY . .\nEXPOSE 8000\n"
              "# a token is required on 0.0.0.0: docker run -e FMADAPT_TOKEN=... -p 8000:8000 IMAGE\n"
              'CMD ["python", "server.py", ".", "--host", "0.0.0.0", "--port", "8000"]\n')
    return {"server.py": Path(server.__file__).read_text(encoding="utf-8"),
            "requirements.txt": "\n".join(pinned(n) for n in needs) + "\n", "Dockerfile": docker}


def readme(meta: dict[str, Any], source: Path) -> str:
    text, audio = meta["modality"] == "text", meta["modality"] == "audio"
    example = '["a great film", "dull"]' if text else '["clip1.wav", "clip2.flac"]' if audio else \
        '["photo1.jpg", "photo2.png"]'
    shell = '"a great film"' if text else "clip1.wav" if audio else "photo1.jpg"
    p = meta["parity"]
    lines = [
        f"# fmadapt export of `{source}`", "",
        f"A {meta['modality']} {meta['task']} model ({len(meta['classes'])} "
        f"{'outputs' if meta['task'] == 'regression' else 'classes'}) as one ONNX graph. It predicts with "
        f"onnxruntime, numpy and {'tokenizers' if text else 'soundfile + soxr' if audio else 'Pillow'} only:", "",
        "```python", "import sys; sys.path.insert(0, 'THIS_DIRECTORY')", "from predict import ExportedModel", "",
        "model = ExportedModel('THIS_DIRECTORY')", f"print(model.predict({example}))",
        "print(model.predict_proba(...))  # (N, C) calibrated probabilities, columns in the order of model.classes",
        "```", "", f"or `python predict.py . {shell}` here. Files: "
        "`model.onnx` (fp32) and, when exported with --int8, `model.int8.onnx` (the default then), "
        "`export.json` (classes, task, inputs, preprocessing, thresholds, parity), "
        + ("`tokenizer.json` (truncation and padding set), " if text else "") + "`predict.py`"
        + ("." if audio else "; `server.py` (HTTP: `python server.py . --port 8000`), its pinned `requirements.txt` "
           "and a `Dockerfile`."), "",
        f"Checked when exported, on {p['inputs']}: fp32 graph against the model, largest probability difference "
        f"{p['fp32']['graph']['max_abs_diff']:.1e}"
        + (f"; int8 against fp32: same prediction on {agreement(p['int8']):.1%}, largest difference "
           f"{p['int8']['max_abs_diff']:.3f}" if "int8" in p else "") + ".", "",
        "Backbone licence(s): " + "; ".join(f"{b.get('name')}: {b.get('license') or 'see its source'}"
                                           for b in meta["backbones"]) + ".", ""]
    return "\n".join(lines)
