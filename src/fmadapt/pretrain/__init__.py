"""`fmadapt pretrain`: continued self-supervised pretraining of a backbone on the user's unlabeled data (texts:
text.py; images: image.py), written as a backbone directory that `--backbone DIR` takes everywhere (safetensors +
config (+ tokenizer), with the source backbone's checksum and the data's fingerprint in pretrain.json), checked
before and after (guard.py)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError
from .config import PretrainConfig

#: unlabeled inputs held out of pretraining for the guard's proxies (at most; a tenth of the inputs when fewer)
GUARD_INPUTS = 500


def read_texts(data: str | os.PathLike[str] | list[str], text: str | None = None, encoding: str = "auto"
               ) -> tuple[list[str], dict[str, Any]]:
    """The unlabeled texts of `data`: a list, a .txt file (one text per line), or a table (its `text` column, or the
    one text column there is). Empty texts are left out and counted. Returns (texts, {"source", "read", "empty"})."""
    if isinstance(data, list):
        raw, source = [str(t) for t in data], "<list>"
    else:
        path = Path(data)
        if not path.is_file():
            raise DataError(f"{path}: no such file (pretrain reads a .txt file, one text per line, or a table)")
        source = str(path)
        if path.suffix.lower() == ".txt":
            from ..data.readers import text_lines

            raw = text_lines(path, encoding)
        else:
            from ..config import FitConfig
            from ..data.readers import read_unlabeled

            raw = read_unlabeled("text", str(path), FitConfig(text_col=text, encoding=encoding)).inputs
    texts = [t.strip() for t in raw if t and t.strip()]
    if len(texts) < 2:
        raise DataError(f"{source}: {len(texts)} non-empty text(s): pretraining needs unlabeled texts, one per line "
                        "of a .txt file or one per row of a table")
    return texts, {"source": source, "read": len(raw), "empty": len(raw) - len(texts)}


def fingerprint(inputs: list[str], modality: str = "text") -> str:
    """sha256 of the texts, in order, or of the images' paths, sizes and modification times (what pretrain.json
    records of the data)."""
    h = hashlib.sha256()
    for t in inputs:
        if modality != "text":
            st = os.stat(t)
            t = f"{t}\t{st.st_size}\t{st.st_mtime_ns}"
        h.update(t.encode("utf-8", "replace") + b"\n")
    return h.hexdigest()


def read_images(data: str | os.PathLike[str] | list[str]) -> tuple[list[str], dict[str, Any]]:
    """The unlabeled images of `data`: a folder (every image under it, any depth: class folders are simply
    folders), a table with a path column, or a list of paths; unreadable files are left out and counted.
    Returns (paths, {"source", "read", "skipped"})."""
    from ..config import FitConfig
    from ..data.readers import read_unlabeled

    if not isinstance(data, list) and not Path(data).exists():
        raise DataError(f"{data}: no such file or directory (pretrain reads a folder of images or a table of paths)")
    ex = read_unlabeled("image", data if isinstance(data, list) else str(data), FitConfig())
    source = "<list>" if isinstance(data, list) else str(data)
    if len(ex.inputs) < 2:
        raise DataError(f"{source}: {len(ex.inputs)} readable image(s): pretraining needs unlabeled images "
                        f"({len(ex.skipped)} unreadable)")
    return list(ex.inputs), {"source": source, "read": len(ex.inputs) + len(ex.skipped), "skipped": len(ex.skipped),
                             "skipped_files": [s.to_dict() for s in ex.skipped[:20]]}


def pretrain(data: str | os.PathLike[str] | list[str], out: str | os.PathLike[str], backbone: str | None = None,
             options: PretrainConfig | dict[str, Any] | None = None, text: str | None = None,
             labeled: str | os.PathLike[str] | None = None, label: str | None = None,
             labeled_text: str | None = None, progress: bool = True, guard: bool = True) -> dict[str, Any]:
    """Continue pretraining `backbone` on the unlabeled inputs `data` (texts: a .txt file, a table or a list; images:
    a folder, a table of paths or a list of paths) and write it to `out` (a backbone directory). `labeled` (texts: a
    table with `label` / `labeled_text` columns; images: a class folder or a table): the guard's quick probe data.
    `backbone` None: the image default (efficientnet_lite0) for a folder, else the text default (minilm-l6).
    `guard=False`: no check before and after (auto judges the backbone on its validation split instead).
    Returns the record also written to out/pretrain.json."""
    pc = options if isinstance(options, PretrainConfig) else PretrainConfig.from_dict(options)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out}: exists and is not empty; choose a new directory for the pretrained backbone")
    t0 = time.perf_counter()
    from ..backbones.registry import create_backbone
    from .guard import proxies, quick_probe, verdict
    from .text import say

    if backbone is None:
        from ..estimators import ImageClassifier, TextClassifier

        folder = not isinstance(data, list) and Path(data).is_dir()
        backbone = (ImageClassifier if folder else TextClassifier).default_backbone
    bb = create_backbone(backbone)
    modality = bb.cfg.modality
    pc = pc.resolved(modality)
    if modality == "text" and (getattr(bb, "tokenizer", None) is None or not hasattr(bb.model, "config")):
        raise ConfigError(f"backbone {bb.cfg.name!r}: pretrain continues transformers text encoders (mlm, simcse)")
    if modality == "image" and "arch" not in bb.cfg.extra:
        raise ConfigError(f"backbone {bb.cfg.name!r}: pretrain continues timm image backbones (simclr)")
    inputs, read = read_texts(data, text) if modality == "text" else read_images(data)
    if pc.max_inputs is not None and len(inputs) > pc.max_inputs:
        inputs = random.Random(pc.seed).sample(inputs, pc.max_inputs)
    source_crop = bb.cfg.crop_pct
    if modality == "image":
        from ..data.images import default_crop, median_short_side

        size = pc.image_size or bb.cfg.input_size
        bb.set_image_size(size, float(default_crop(median_short_side(inputs), size, source_crop)["crop_pct"]))
    report = say if progress else None
    # the guard's held-out inputs: never trained on
    n_guard = min(GUARD_INPUTS, len(inputs) // 10) if guard else 0
    order = list(range(len(inputs)))
    random.Random(pc.seed + 1).shuffle(order)
    held, train = [inputs[i] for i in order[:n_guard]], [inputs[i] for i in order[n_guard:]]
    probe_data = _labeled(modality, labeled, label, labeled_text, pc.seed) if labeled is not None else None

    def check() -> dict[str, Any]:
        if not guard:
            return {}
        if probe_data is not None:
            return {"probe_accuracy": round(quick_probe(bb, *probe_data), 4)}
        return proxies(bb, held, pc.seed) if len(held) >= 2 else {}

    source = {"name": bb.cfg.name, "sha256": bb.cfg.sha256, "source": bb.cfg.source, "license": bb.cfg.license}
    before = check()
    vocab: dict[str, Any] = {}
    if pc.extend_vocab:
        from ..backbones.vocab import extend_vocabulary, tokens_to_add, vocabulary_coverage

        unk = vocabulary_coverage(bb.tokenizer, train, seed=pc.seed)["unk_rate"]
        new = tokens_to_add(bb.tokenizer, train, pc.extend_vocab_min_count, ngram=pc.extend_vocab_ngram,
                            word_min_count=pc.extend_vocab_word_min_count)
        vocab = {"unk_rate": round(unk, 4), "added_tokens": extend_vocabulary(bb, new),
                 "added_words": sum(len(t) > 1 for t in new),
                 "unk_rate_after": round(vocabulary_coverage(bb.tokenizer, train, seed=pc.seed)["unk_rate"], 4)}
        if report:
            report(f"vocabulary: {vocab['added_tokens']} tokens added; unknown tokens {unk:.1%} -> "
                   f"{vocab['unk_rate_after']:.1%}")
    if modality == "text":
        from .text import train_text

        run = train_text(bb, train, pc, report)
    else:
        from .image import train_image

        run = train_image(bb, train, pc, report)
    after = check()
    what = "texts" if modality == "text" else "images"
    checked = {"before": before, "after": after, "on": ("a quick probe on " + str(labeled)) if probe_data else
               f"{len(held)} held-out unlabeled {what}" if guard else "not checked (guard=False)"}
    if before and after:
        checked["verdict"] = verdict(before, after, str(pc.method), what)
    from .. import __version__

    record = {"fmadapt_version": __version__, "method": pc.method, "modality": modality, "options": pc.to_dict(),
              "source_backbone": source,
              "data": {**read, what: len(inputs), "inputs": len(inputs), "trained_on": len(train),
                       "held_out": len(held), "fingerprint": fingerprint(inputs, modality)},
              "vocabulary": vocab, "run": run, "guard": checked, "seconds": round(time.perf_counter() - t0, 1),
              "finetune_lr": bb.cfg.finetune_lr}
    if modality == "text":
        save_text_backbone(bb, out, record)
    else:
        from .image import save_image_backbone

        save_image_backbone(bb, out, record, source_crop)
    return record


def _labeled(modality: str, path: str | os.PathLike[str], label: str | None, text: str | None, seed: int
             ) -> tuple[Any, ...]:
    from ..config import FitConfig
    from ..data.readers import read_labeled
    from .guard import probe_split

    splits, _ = read_labeled(modality, str(path), FitConfig(text_col=text, label_col=label), fitting=True)
    ex = splits["train"]
    labels = [str(v) for v in ex.labels or []]
    return ex.inputs, labels, probe_split(labels, seed)


def save_text_backbone(bb: Any, out: Path, record: dict[str, Any]) -> None:
    """The encoder (safetensors), its config and tokenizer, and sentence-transformers' pooling files (so that
    `--backbone DIR` and sentence-transformers pool it as the source backbone did), plus pretrain.json."""
    out.mkdir(parents=True, exist_ok=True)
    bb.model.save_pretrained(out, safe_serialization=True)
    bb.tokenizer.save_pretrained(out)
    cfg = bb.cfg
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if cfg.normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (out / "2_Normalize").mkdir(exist_ok=True)
    (out / "modules.json").write_text(json.dumps(modules, indent=2))
    (out / "1_Pooling").mkdir(exist_ok=True)
    (out / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": cfg.embed_dim, "pooling_mode_cls_token": cfg.pooling == "cls",
        "pooling_mode_mean_tokens": cfg.pooling != "cls", "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False}, indent=2))
    (out / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": cfg.max_tokens,
                                                               "do_lower_case": False}, indent=2))
    (out / "pretrain.json").write_text(json.dumps(record, indent=2, ensure_ascii=False, default=str))
