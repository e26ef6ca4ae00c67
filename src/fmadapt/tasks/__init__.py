"""Per task: targets, metrics and prediction columns (single-label classification lives in the fitted model and
evaluate/metrics.py; multi-label in tasks/multilabel.py)."""
