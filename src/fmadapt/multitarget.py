"""A fitted model of several targets from one table (`targets="rating:regression,recommended"`, the CLI's
`--label rating:regression --label recommended`): one frozen backbone whose features are computed once per input,
one head per target (each a classification, multi-label or regression head, with its own calibration,
thresholds or intervals), one model directory.

The directory: `config.json` lists the targets (`"targets": [{"name", "task", "dir"}]`), each target's
`targets/<dir>/` is a complete model directory of its own (any command that takes a model directory takes it),
`metrics.json` holds every target's metrics, `report.html` links the targets' reports. Prediction columns are
prefixed by the target's name (`rating_pred`, `rating_lower`, `recommended_prob_1`...). Fitting one:
multitarget_fit.py."""

from __future__ import annotations

import contextlib
import dataclasses
import html
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._version import __version__
from .config import FitConfig
from .data.cache import FeatureCache, MemoryFeatureCache
from .data.readers import DataLike
from .errors import ArtifactError, ConfigError, NotFittedError
from .predictor import Predictor
from .tasks.targets import target_dirs

CONFIG = "config.json"


def holds_targets(path: str | os.PathLike[str]) -> bool:
    """Whether the model directory `path` is one of several targets (its config.json lists them)."""
    from .artifact import read_json

    p = Path(path) / CONFIG
    if not p.is_file():
        return False
    top = read_json(p)
    return isinstance(top, dict) and "targets" in top


class MultiTarget:
    """Several targets of one table: `predict` (a DataFrame, a column per target), `predict_table` (the columns
    of each target's `predict_table`, prefixed by its name), `predict_proba` (per classification target),
    `evaluate` (per target), `score` (the mean of the targets' scores), `embed`, `save_pretrained`; `targets_`
    maps each target's name to its fitted model (a Predictor), which predicts, evaluates and reports alone."""

    def __init__(self, modality: str, targets: dict[str, Predictor], config: FitConfig, *,
                 cache: bool = True, progress: bool | None = None) -> None:
        self.modality = modality
        self.task = f"{modality}-multi-target"
        self.targets_ = dict(targets)
        self.config_ = config
        self.cache = cache
        self.progress = progress
        self.fit_seconds_: float | None = None
        self.resumed_: list[str] = []

    # -- what the targets are ------------------------------------------------------------------
    @property
    def target_names(self) -> list[str]:
        return list(self.targets_)

    def target(self, name: str) -> Predictor:
        """The fitted model of one target."""
        if name not in self.targets_:
            raise ConfigError(f"no target {name!r}; this model's targets: {', '.join(self.targets_)}")
        return self.targets_[name]

    def check_fitted(self) -> MultiTarget:
        if not self.targets_:
            raise NotFittedError("this model has no fitted target yet")
        for p in self.targets_.values():
            p.check_fitted()
        return self

    @property
    def metrics_(self) -> dict[str, Any]:
        return {name: p.metrics_ for name, p in self.targets_.items()}

    @property
    def data_summary_(self) -> dict[str, Any]:
        return {name: p.data_summary_ for name, p in self.targets_.items()}

    @property
    def history_(self) -> dict[str, Any]:
        return {name: p.history_ for name, p in self.targets_.items()}

    @property
    def splits_(self) -> dict[str, Any]:
        """The first target's splits (every target's validation split holds the same table rows, less the rows
        without that target's label)."""
        return next(iter(self.targets_.values())).splits_

    @property
    def backbone_name(self) -> str:
        first = next(iter(self.targets_.values()))
        return first.members_[0].model.backbone.cfg.name

    @property
    def backbone_note(self) -> str:
        """How the targets share the backbone, in words."""
        return backbone_note(any(p.members_[0].trains_backbone for p in self.targets_.values()))

    # -- prediction ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def shared_features(self) -> Iterator[None]:
        """While inside, the targets read one cache of features (in memory, before the disk cache when caching
        is on), so each input goes through the backbone once."""
        shared = MemoryFeatureCache(FeatureCache() if self.cache else None)
        before = {name: p.cache for name, p in self.targets_.items()}
        for p in self.targets_.values():
            p.cache = shared
        try:
            yield
        finally:
            for name, p in self.targets_.items():
                p.cache = before[name]

    def read_inputs(self, data: DataLike) -> Any:
        self.check_fitted()
        return next(iter(self.targets_.values())).read_inputs(data)

    def predict_table(self, data: DataLike) -> pd.DataFrame:
        """ids (+ text), then per target its `predict_table` columns prefixed by its name (`rating_pred`,
        `rating_lower`, `rating_upper`, `recommended_pred`, `recommended_prob_0`...), and a row with an `error`
        for every input that could not be read."""
        ex = self.read_inputs(data)
        out = pd.DataFrame({"id": ex.ids})
        if ex.modality == "text":
            out["text"] = ex.inputs
        with self.shared_features():
            for name, p in self.targets_.items():
                for col, values in p.prediction_columns(p.proba(ex)).items():
                    out[f"{name}_{col}"] = values
        if ex.skipped:
            bad = pd.DataFrame({"id": [s.where for s in ex.skipped], "error": [s.reason for s in ex.skipped]})
            out = pd.concat([out, bad], ignore_index=True)
        return out

    def predict(self, data: DataLike) -> pd.DataFrame:
        """One row per readable input (index = row id), one column per target: its prediction (a class, labels
        joined by the separator, or a number)."""
        ex = self.read_inputs(data)
        with self.shared_features():
            cols = {name: p.labels_of(p.proba(ex)) for name, p in self.targets_.items()}
        return pd.DataFrame(cols, index=pd.Index(ex.ids, name="id"))

    def predict_proba(self, data: DataLike) -> dict[str, pd.DataFrame]:
        """{target: its `predict_proba` DataFrame} for the classification and multi-label targets."""
        ex = self.read_inputs(data)
        out = {}
        with self.shared_features():
            for name, p in self.targets_.items():
                if not p.regression:
                    out[name] = pd.DataFrame(p.proba(ex), index=pd.Index(ex.ids, name="id"),
                                             columns=[f"prob_{c}" for c in p.classes_])
        return out

    def embed(self, data: DataLike) -> np.ndarray:
        """(N, D) float32: the frozen backbone's features every head reads."""
        return next(iter(self.targets_.values())).embed(data)

    # -- evaluation ----------------------------------------------------------------------------
    def evaluate(self, data: DataLike) -> dict[str, Any]:
        """{"targets": {name: that target's `evaluate` metrics}} on labeled data holding every target's column."""
        self.check_fitted()
        with self.shared_features():
            return {"targets": {name: p.evaluate(data) for name, p in self.targets_.items()}}

    def score(self, data: DataLike) -> float:
        """The mean of the targets' scores (accuracy, subset accuracy or R², as each target's `score`)."""
        self.check_fitted()
        with self.shared_features():
            return float(np.mean([p.score(data) for p in self.targets_.values()]))

    def evaluate_validation(self, out: str | os.PathLike[str], *,
                            groups_of: Callable[[Predictor], list[str]] | None = None, **kw: Any
                            ) -> dict[str, Any]:
        """Each target's `evaluate_validation` (keywords as Predictor's) into its directory of `out` (written by
        save_pretrained); `groups_of(target's model)`: the fairness groups of its validation rows. {target: its
        evaluations}."""
        root = Path(out)
        dirs = target_dirs(self.target_names)
        with self.shared_features():
            result = {name: p.evaluate_validation(root / "targets" / d, groups=groups_of(p) if groups_of else None,
                                                  **kw)
                      for (name, p), d in zip(self.targets_.items(), dirs, strict=True)}
        self._write_index(root)
        return result

    # -- persistence ---------------------------------------------------------------------------
    def save_pretrained(self, path: str | os.PathLike[str], command: str | None = None, report: bool = True
                        ) -> Path:
        """The model directory: config.json listing the targets, each target's complete model directory under
        targets/<dir>/, metrics.json (every target's), a model card and, with `report`, report.html (the targets'
        headline metrics, linking each target's report)."""
        from .artifact import json_text
        from .atomic import commit

        self.check_fitted()
        out = Path(path)
        names = self.target_names
        dirs = target_dirs(names)
        for p, d in zip(self.targets_.values(), dirs, strict=True):
            p.save_pretrained(out / "targets" / d, command=command, report=report)
        listing = [{"name": n, "task": self.targets_[n].config_.task, "dir": f"targets/{d}"}
                   for n, d in zip(names, dirs, strict=True)]
        config = {"fmadapt_version": __version__, "task": self.task, "backbone": self.backbone_name,
                  "strategy": self.config_.strategy, "targets": listing, "fit": self.config_.to_dict()}
        metrics = {"targets": {n: {**p.metrics_, "data": p.data_summary_} for n, p in self.targets_.items()}}
        commit(out, {CONFIG: json_text(config), "metrics.json": json_text(metrics),
                     "README.md": self._card(listing, command)},
               remove=["model.safetensors", "labels.json", "backbone.json"])
        if report:
            self._write_index(out)
        return out

    def _card(self, listing: list[dict[str, Any]], command: str | None) -> str:
        from .artifact import card_front_matter

        bcfg = next(iter(self.targets_.values())).members_[0].model.backbone.cfg
        about = {"task": self.task, "backbone": self.backbone_name, "strategy": self.config_.strategy}
        front = card_front_matter(about, {}, {"license": bcfg.license, "source": bcfg.source},
                                  {name: p.metrics_ for name, p in self.targets_.items()})
        lines = [front + f"# fmadapt model: {self.task}", "",
                 f"- backbone: `{self.backbone_name}` ({self.backbone_note})",
                 f"- strategy: `{self.config_.strategy}`", "", "## Targets", "",
                 "| target | task | directory | validation |", "|---|---|---|---|"]
        for t in listing:
            lines.append(f"| `{t['name']}` | {t['task']} | `{t['dir']}/` | "
                         f"{headline(self.targets_[t['name']].metrics_.get('val') or {})} |")
        if command:
            lines += ["", "## Command", "", f"```\n{command}\n```"]
        lines += ["", "## Use", "", "```python", "from fmadapt import load_model",
                  "model = load_model('.')  # this directory", "model.predict_table(...)  # columns <target>_pred...",
                  "```", "", "Each `targets/<dir>/` is a complete model directory of one target. No pickle."]
        return "\n".join(lines) + "\n"

    def _write_index(self, out: Path) -> None:
        """report.html: each target's headline metrics and a link to its own report."""
        rows = [(name, d, p.config_.task, p.metrics_) for name, d, p in
                zip(self.target_names, target_dirs(self.target_names), self.targets_.values(), strict=True)]
        write_index(out, self.task, self.backbone_name, self.backbone_note, self.config_.strategy, rows)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], *, cache: bool = True, progress: bool | None = None,
                        modality: str | None = None) -> MultiTarget:
        """The model of several targets saved in `path`; the targets' frozen backbones, when the same weights,
        are one module in memory."""
        from .artifact import read_json

        root = Path(path)
        top = read_json(root / CONFIG)
        listing = top.get("targets") if isinstance(top, dict) else None
        if not isinstance(listing, list) or len(listing) < 2 or not all(
                isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("dir"), str)
                for t in listing):
            raise ArtifactError(f"{root / CONFIG}: 'targets' must list at least two {{\"name\", \"dir\"}} entries")
        targets: dict[str, Predictor] = {}
        for t in listing:
            sub = (root / t["dir"]).resolve()
            if root.resolve() not in sub.parents:
                raise ArtifactError(f"{root / CONFIG}: target directory {t['dir']!r} is outside the model directory")
            targets[t["name"]] = Predictor.from_pretrained(sub, cache=cache, progress=progress, modality=modality)
        share_backbones(list(targets.values()))
        first = next(iter(targets.values()))
        config = dataclasses.replace(first.config_, label_col=None, task="classification",
                                     targets=",".join(f"{t['name']}:{targets[t['name']].config_.task}"
                                                      for t in listing))
        return cls(first.modality, targets, config, cache=cache, progress=progress)


def write_index(out: Path, task: str, backbone: str, note: str, strategy: str,
                rows: list[tuple[str, str, str, dict[str, Any]]]) -> None:
    """report.html of a model of several targets: per target (name, directory, task, metrics by split) its
    headline figures and a link to its own report."""
    from .atomic import write_file

    cells = []
    for name, d, kind, metrics in rows:
        figures = "".join(f"<td>{html.escape(headline(metrics.get(split) or {}))}</td>" for split in ("val", "test"))
        cells.append(f"<tr><td><a href=\"targets/{html.escape(d)}/report.html\">{html.escape(name)}</a></td>"
                     f"<td>{html.escape(kind)}</td>{figures}</tr>")
    page = ("<!doctype html><html><head><meta charset=\"utf-8\"><title>fmadapt: several targets</title>"
            "<style>body{font-family:sans-serif;margin:2em}td,th{padding:.3em .8em;border-bottom:1px solid #ddd;"
            "text-align:left}</style></head><body>"
            f"<h1>{html.escape(task)}</h1><p>backbone <code>{html.escape(backbone)}</code> ({html.escape(note)}), "
            f"strategy {html.escape(strategy)}, one head per target. Each target's report has its metrics, "
            "calibration and mistakes.</p><table><tr><th>target</th><th>task</th><th>validation</th><th>test</th></tr>"
            + "".join(cells) + "</table></body></html>\n")
    write_file(out / "report.html", page)


def rewrite_reports(root: Path) -> Path:
    """`fmadapt report` of a model of several targets: each target's report.html rewritten from its directory,
    then the index, from the JSON files alone (no model loaded)."""
    from .artifact import read_json
    from .report.run import write_run_report

    top = read_json(root / CONFIG)
    metrics = read_json(root / "metrics.json") if (root / "metrics.json").is_file() else {}
    rows = []
    for t in top.get("targets") or []:
        d = str(t.get("dir", ""))
        sub = (root / d).resolve()
        if not d.startswith("targets/") or root.resolve() not in sub.parents:
            raise ArtifactError(f"{root / CONFIG}: target directory {d!r} is outside the model directory")
        write_run_report(sub, sub / "report.html")
        found = ((metrics.get("targets") or {}).get(t.get("name")) or {}) if isinstance(metrics, dict) else {}
        rows.append((str(t.get("name")), d.split("/", 1)[1], str(t.get("task")), found))
    trained = any(read_json(root / str(t.get("dir")) / CONFIG).get("strategy") != "probe" for t in top["targets"])
    write_index(root, str(top.get("task")), str(top.get("backbone")), backbone_note(trained),
                str(top.get("strategy")), rows)
    return root / "report.html"


def backbone_note(trained: bool) -> str:
    """How the targets share the backbone, in words (model card, report index, fit summary)."""
    return ("fine-tuned for all targets at once, with a loss per target" if trained else
            "frozen; its features computed once per input")


def headline(m: dict[str, Any]) -> str:
    """One target's headline figures of a split's metrics ("" when none)."""
    for key, label in (("rmse", "RMSE"), ("micro_f1", "micro-F1"), ("accuracy", "accuracy")):
        if key in m:
            extra = (f", R² {m['r2']:.4f}" if key == "rmse" and "r2" in m else
                     f", macro-F1 {m['macro_f1']:.4f}" if "macro_f1" in m else "")
            return f"{label} {m[key]:.4f}{extra} (n={m.get('n', '?')})"
    return ""


def share_backbones(targets: list[Predictor]) -> None:
    """Point the frozen backbones of the targets' models at one module when they hold the same weights (same
    configuration, checksum included): one copy in memory."""
    import json

    import torch

    seen: dict[str, list[Any]] = {}
    for p in targets:
        for m in p.members_:
            b = m.model.backbone
            if not m.trains_backbone and not (b.cfg.sha256 and b.cfg.pretrained):
                continue
            key = json.dumps(b.cfg.to_dict(), sort_keys=True, default=str)
            same = None
            for other in seen.setdefault(key, []):
                if other is b or not m.trains_backbone:
                    same = other
                    break
                # a trained backbone (fine-tuned for all targets at once, saved in each target's directory): one
                # module when the weights are equal
                mine, theirs = b.state_dict(), other.state_dict()
                if mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine):
                    same = other
                    break
            if same is None:
                seen[key].append(b)
            elif same is not b:
                m.model.backbone = same
