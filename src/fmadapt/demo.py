"""`fmadapt demo`: the whole pipeline on a real dataset that ships inside scikit-learn (8x8 handwritten
digits, 1,797 images), with the packaged EfficientNet-Lite0 — no user data and no network needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

#: 8x8 digits upscaled; measured on 2 cores (benchmarks/demo_image_size.md): 96 px scored 95.8 % vs 95.5 % at
#: 224 px, in 0.28x the time.
DEMO_IMAGE_SIZE = 96


def write_digits_folder(root: Path) -> Path:
    """Write scikit-learn's digits as PNGs in root/<digit>/<i>.png (the normal image-folder layout)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    for i, (img, y) in enumerate(zip(d.images, d.target, strict=True)):
        folder = root / str(y)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i:04d}.png"
        if not path.exists():
            a = (255 - img * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)  # dark digit on white
            Image.fromarray(a, mode="L").save(path)
    return root
