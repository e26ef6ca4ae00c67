"""Shipping an adapted model: whole-model export (export.py) and the torch-free runtime that goes with it
(exported.py, copied into every exported directory as predict.py)."""
