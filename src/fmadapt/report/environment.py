"""What a run ran on: package versions, Python, platform, CPU/GPU, seed and weight hashes.

Versions come from ``importlib.metadata`` so recording them does not import torch, transformers and friends
(seconds of import time, and a GPU context) just to print a version string.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

# Distribution names as pip knows them (the import name of scikit-learn is sklearn).
PACKAGES = ("fmadapt", "torch", "timm", "transformers", "onnxruntime", "lightning", "scikit-learn", "numpy")


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """``{distribution: version}`` for those installed; absent ones are left out rather than guessed."""
    out: dict[str, str] = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            if name == "fmadapt":  # running from a source tree without an install
                from .._version import __version__

                out[name] = __version__
    return out


def cpu_model() -> str | None:
    """CPU model name from /proc/cpuinfo (Linux), else platform.processor(); None when neither says."""
    path = Path("/proc/cpuinfo")
    if path.is_file():
        try:
            for line in path.read_text(errors="replace").splitlines():
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip() or None
        except OSError:
            pass
    return platform.processor() or None


def gpu_info() -> list[str]:
    """CUDA device names, only if torch is already imported or importable; never fails."""
    if "torch" not in sys.modules:
        try:
            metadata.version("torch")
        except metadata.PackageNotFoundError:
            return []
    try:
        import torch

        if not torch.cuda.is_available():
            return []
        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - a broken driver must not stop the report
        return []


def environment_info(seed: int | None = None, weight_hashes: dict[str, str] | None = None,
                     command: str | None = None) -> dict[str, Any]:
    """The ``environment`` section of the report (JSON-serialisable)."""
    cpu = cpu_model()
    ncpu = os.cpu_count()
    gpus = gpu_info()
    hw = [f"{ncpu} CPU cores" if ncpu else "CPU"]
    if cpu:
        hw[0] += f" ({cpu})"
    hw.extend(f"GPU: {g}" for g in gpus)
    return {
        "versions": package_versions(),
        "seed": seed,
        "hardware": "; ".join(hw),
        "cpu_count": ncpu,
        "cpu_model": cpu,
        "gpus": gpus,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "weight_hashes": dict(weight_hashes or {}),
        "command": command,
    }
