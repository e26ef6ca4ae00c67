"""A model directory served through the fitted model's public API (the export backend is in app.py, which must
run without fmadapt): `fmadapt serve` answers as `fmadapt predict` predicts."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from ..errors import ConfigError


class ModelBackend:
    """Predictions of a model directory (Predictor: fmadapt and torch loaded; an export starts faster)."""

    def __init__(self, root: str) -> None:
        from ..multitarget import holds_targets
        from ..predictor import load_model

        if holds_targets(root):
            raise ConfigError(f"{root} holds a model of several targets: serve one target's directory "
                              f"({root}/targets/<name>) or an export of it")
        self.model = load_model(root, progress=False)
        self.modality = self.model.modality
        #: the table columns the model reads beside the text (each request then sends one row per text)
        self.table_columns = [c["name"] for c in self.model.table_encoder_.columns] \
            if self.model.table_encoder_ is not None else []
        self.task = self.model.config_.task
        bcfg = self.model.members_[0].model.backbone.cfg
        metrics = {k: v for k, v in self.model.metrics_.items() if isinstance(v, (int, float))}
        metrics_file = Path(root) / "metrics.json"
        if not metrics and metrics_file.is_file():
            import json

            saved = json.loads(metrics_file.read_text(encoding="utf-8"))
            metrics = {k: v for k, v in saved.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.metadata = {"source": "model directory", "modality": self.modality, "task": self.task,
                         "classes": list(self.model.classes_), "backbones": [
                             {"name": m.model.backbone.cfg.name, "license": m.model.backbone.cfg.license}
                             for m in self.model.members_],
                         "strategy": self.model.config_.strategy, "validation_metrics": metrics,
                         "fmadapt_version": __import__("fmadapt").__version__, "input_size": bcfg.input_size,
                         **({"table_columns": self.table_columns} if self.table_columns else {})}

    def predict(self, items: list[Any]) -> list[dict[str, Any]]:
        """Texts, decoded images (PIL) or decoded sounds ((mono samples, rate)), as the Predictor predicts files of
        them."""
        model = self.model
        if self.table_columns:  # ((text, row) pairs: a table with the training's text column)
            import pandas as pd

            df = pd.DataFrame([row for _, row in items], columns=self.table_columns)
            df.insert(0, model.config_.text_col or "text", [str(t) for t, _ in items])
            return self._rows(model.proba(model.read_inputs(df)))
        if self.modality == "text":
            proba = model.proba(model.read_inputs([str(t) for t in items]))
            return self._rows(proba)
        with tempfile.TemporaryDirectory(prefix="fmadapt-serve-") as tmp:
            paths = []
            if self.modality == "audio":
                import soundfile as sf

                for i, (wave, sr) in enumerate(items):  # (float WAV: the very samples sent, at their rate)
                    paths.append(str(Path(tmp) / f"{i}.wav"))
                    sf.write(paths[-1], wave, sr, subtype="FLOAT")
                return self._rows(model.proba(model.read_inputs(paths)))
            for i, im in enumerate(items):  # (lossless: the model reads the very pixels sent)
                p = Path(tmp) / f"{i}.png"
                (im if im.mode in ("RGB", "RGBA", "L", "LA", "P") else im.convert("RGB")).save(p)
                paths.append(str(p))
            return self._rows(model.proba(model.read_inputs(paths)))

    def _rows(self, proba: Any) -> list[dict[str, Any]]:
        labels = self.model.labels_of(proba)
        if self.task == "regression":
            half = self.model.interval_halfwidth()
            return [{"value": float(v), **({"lower": float(v) - half, "upper": float(v) + half}
                                           if half is not None else {})} for v in labels]
        classes = self.model.classes_
        return [{"label": str(lab), "probabilities": {c: float(p) for c, p in zip(classes, row, strict=True)}}
                for lab, row in zip(labels, proba, strict=True)]
