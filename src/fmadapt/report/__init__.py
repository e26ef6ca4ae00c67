"""The run report: one self-contained ``report.html`` (inline CSS, embedded PNGs, no network access).

``render_report(data)`` / ``write_report(data, path)`` take a plain dict. Only ``model`` is expected; any
other section may be missing and is then shown as "not run" with how to produce it::

    {
     "title": str, "created": ISO str,
     "model": {"dir", "task", "backbone", "strategy", "classes": [str], "config": {...}},
     "data": {"sizes": {split: n}, "class_counts": {split: {class: n}}, "skipped": [{"where", "reason"}],
              "warnings": [str], "validation": str, "vocabulary": {...}},
     "history": {"epochs": [{"epoch", "train_loss", "val_loss", "val_acc", "lr"}]}
                | {"candidates": [{"C", "val_acc", "val_loss"}]},            # linear probe
     "metrics": {split: {"n", "accuracy", "macro_f1", "ece", "per_class": {cls: {"precision", "recall", "f1",
                 "support"}}, "confusion_matrix": [[int]], "classes": [str], "skipped": [...]}},
     "calibration": {"temperature", "before": {"ece", "brier", "nll"}, "after": {...},
                     "reliability": {"before": {"confidence": [], "accuracy": [], "count": []}, "after": {...}}},
     "robustness": {"modality", "n", "clean_accuracy", "corruptions": {name: {"1": acc, ...}},
                    "text": {name: {"0.05": acc}}, "adversarial": {"fgsm": {eps: acc}, "pgd": {eps: acc},
                    "eps_unit", "n", "note"}, "seconds": {...}},
     "fairness": {"group_col", "n", "groups": {g: {"n", "accuracy", "macro_f1", "small"}},
                  "demographic_parity_difference", "equalized_odds_difference", "worst_group",
                  "worst_group_accuracy", "accuracy_gap", "missing_groups", "notes", "positive_class"}
                 | {"task", "metric", "higher_is_better", "groups": {g: {"n", METRIC, ...}}, "worst_group",
                    "worst_group_score", "score_gap", ...},       # multi-label / regression (fairness_tasks.py)
     "explanations": [{"id", "kind", "label", "pred", "confidence", "correct", "method", "image_png",
                       "original_png", "tokens": [[word, score]]}],
     "misclassified": [{"id", "label", "pred", "confidence", "text", "thumb_png"}],
     "environment": environment_info(...),
    }

Images (``*_png``) are base64 strings; anything that is not base64 of a PNG/JPEG/GIF/WebP is dropped.
"""

from .environment import environment_info
from .figures import build_figures
from .html import HOW_TO_ENABLE, SECTIONS, render_report, write_report

__all__ = ["HOW_TO_ENABLE", "SECTIONS", "build_figures", "environment_info", "render_report", "write_report"]
