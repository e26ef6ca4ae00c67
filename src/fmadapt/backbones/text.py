"""Text backbones built on transformers: an encoder + the pooling sentence-transformers applies."""

from __future__ import annotations

import inspect
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .base import Backbone, BackboneCfg


class TextCollator:
    """Tokenizes a whole batch at once (fast tokenizers are much quicker on lists than one by one)."""

    def __init__(self, tokenizer: Any, max_tokens: int) -> None:
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_tokens,
                             return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def _identity(x: Any) -> Any:
    return x


class HFTextBackbone(Backbone):
    """A transformers encoder pooled to one vector per text (mean over real tokens, or [CLS])."""

    def __init__(self, model: nn.Module, tokenizer: Any, cfg: BackboneCfg) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.cfg = cfg

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = batch["attention_mask"]  # (B,T)
        hidden = self.model(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state  # (B,T,H)
        return self.pool(hidden, mask)

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B,T,H), (B,T) -> (B,H): the sentence-transformers pooling this backbone was configured with."""
        if self.cfg.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            m = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        if self.cfg.normalize:
            pooled = nn.functional.normalize(pooled, p=2, dim=1)
        return pooled

    def layer_groups(self) -> list[nn.Module]:
        """[embeddings, layer 0, ..., layer L-1]. The transformers pooler is unused (we pool ourselves) and
        stays frozen; any other leftover parameters (a final norm) join the top layer."""
        m = self.model
        layers = encoder_layers(m)
        embeddings = getattr(m, "embeddings", None) or m.get_input_embeddings()
        groups: list[nn.Module] = [embeddings, *layers]
        covered = {id(p) for g in groups for p in g.parameters()}
        rest = [p for n, p in m.named_parameters() if id(p) not in covered and not n.startswith("pooler.")]
        if rest:
            top = nn.Module()
            top.layer, top.extra = layers[-1], nn.ParameterList(rest)
            groups[-1] = top
        return groups

    def split(self, n_top: int) -> tuple[Any, nn.Module] | None:
        """BERT-style encoders: prefix = embeddings + lower layers -> (hidden (B,T,H), mask (B,T))."""
        m = self.model
        try:
            layers = encoder_layers(m)
        except ValueError:
            return None
        if not hasattr(m, "embeddings") or not 1 <= n_top <= len(layers) or len(self.layer_groups()) != 1 + len(layers):
            return None
        k = len(layers) - n_top
        return _TextPrefix(self, layers[:k]), _TextSuffix(self, layers[k:])

    def preprocessor(self, train: bool = False) -> Any:
        return _identity

    def collator(self) -> TextCollator:
        return TextCollator(self.tokenizer, self.cfg.max_tokens)


def _extended_mask(model: nn.Module, hidden: torch.Tensor, mask: torch.Tensor) -> Any:
    """The attention mask in the form the model's layers take (its own helper; API differs by version)."""
    if hasattr(model, "_create_attention_masks"):  # transformers >= 5
        kw = {"attention_mask": mask, "encoder_attention_mask": None, "embedding_output": hidden,
              "encoder_hidden_states": None, "cache": None}
        if "position_ids" in inspect.signature(model._create_attention_masks).parameters:  # >= 5.25
            kw["position_ids"] = None
        return model._create_attention_masks(**kw)[0]
    return model.get_extended_attention_mask(mask, mask.shape)


def _run_layers(layers: list[nn.Module], hidden: torch.Tensor, ext_mask: Any) -> torch.Tensor:
    for layer in layers:
        out = layer(hidden, ext_mask)
        hidden = out[0] if isinstance(out, tuple) else out
    return hidden


class _TextPrefix(nn.Module):
    def __init__(self, bb: HFTextBackbone, layers: list[nn.Module]) -> None:
        super().__init__()
        self.model, self.layers = bb.model, nn.ModuleList(layers)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        mask = batch["attention_mask"]
        hidden = self.model.embeddings(input_ids=batch["input_ids"])  # (B,T,H)
        return _run_layers(list(self.layers), hidden, _extended_mask(self.model, hidden, mask)), mask


class _TextSuffix(nn.Module):
    def __init__(self, bb: HFTextBackbone, layers: list[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self._model, self._pool = [bb.model], bb.pool  # referenced, not registered: only `layers` train

    def forward(self, acts: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        hidden, mask = acts
        hidden = _run_layers(list(self.layers), hidden, _extended_mask(self._model[0], hidden, mask))
        return self._pool(hidden, mask)


def keep_layers(backbone: HFTextBackbone, kept: list[int]) -> None:
    """Cut the encoder to the layers `kept` (indices, ascending), in place: a smaller student that starts from the
    teacher's own layers (DistilBERT's every-other-layer initialisation). Recorded in `cfg.extra["kept_layers"]`,
    so that a saved model is rebuilt with the same layers (artifact.load_model)."""
    m = backbone.model
    path, mod = _layer_list(m)
    if not kept or sorted(set(kept)) != list(kept) or kept[0] < 0 or kept[-1] >= len(mod):
        raise ValueError(f"layers to keep must be ascending indices below {len(mod)}, got {kept}")
    parent, _, attr = path.rpartition(".")
    setattr(m.get_submodule(parent) if parent else m, attr, nn.ModuleList([mod[i] for i in kept]))
    for key in ("num_hidden_layers", "n_layers", "num_layers", "n_layer"):
        if hasattr(m.config, key):
            setattr(m.config, key, len(kept))
    before = backbone.cfg.extra.get("kept_layers")
    backbone.cfg.extra["kept_layers"] = [before[i] for i in kept] if before else list(kept)


def _layer_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """(its path, the ModuleList) of a transformers encoder's layers."""
    for path in ("encoder.layer", "encoder.layers", "transformer.layer", "layers", "h"):
        try:
            mod = model.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(mod, nn.ModuleList):
            return path, mod
    raise ValueError(f"cannot find the transformer layers of {type(model).__name__}")


def encoder_layers(model: nn.Module) -> list[nn.Module]:
    """A transformers encoder's layers, in order."""
    return list(_layer_list(model)[1])


def hf_text_backbone(name_or_path: str, name: str | None = None, pretrained: bool = True,
                     source: str = "", license: str = "", sha256: str = "") -> HFTextBackbone:
    """A transformers model by hub id or local directory. A sentence-transformers folder's pooling,
    normalisation and maximum length are read from its config files so embeddings match `encode`."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    # no code from the model's folder or repository runs (trust_remote_code=False), and weights come from
    # safetensors only: use_safetensors=True never falls back to torch.load on pytorch_model.bin (the registry
    # also refuses any torch.load while building a backbone from a directory or the hub)
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=False)
    config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=False)
    explicit = getattr(config, "transformers_weights", None)  # a config may name its weights file
    if pretrained and explicit is not None and not str(explicit).endswith((".safetensors", ".safetensors.index.json")):
        raise ValueError(f"{name_or_path}: config.json names non-safetensors weights {str(explicit)[:80]!r}")
    if pretrained:
        model = AutoModel.from_pretrained(name_or_path, config=config, use_safetensors=True, trust_remote_code=False)
    else:
        model = AutoModel.from_config(config, trust_remote_code=False)
    pooling, normalize, max_tokens = _sentence_transformers_settings(_settings_folder(name_or_path))
    model_max = getattr(model.config, "max_position_embeddings", 512)
    max_tokens = min(max_tokens or model_max, model_max)
    cfg = BackboneCfg(
        name=name or f"hf:{name_or_path}",
        modality="text",
        embed_dim=int(model.config.hidden_size),
        source=source or f"hf:{name_or_path}",
        license=license,
        sha256=sha256,
        pretrained=pretrained,
        max_tokens=int(max_tokens),
        pooling=pooling,
        normalize=normalize,
        finetune_lr=None if Path(name_or_path).is_dir() else MEASURED_FINETUNE_LR.get(name_or_path),
    )
    return HFTextBackbone(model.eval(), tokenizer, cfg)


#: body learning rates measured for fine-tuning a hub model's own weights. all-MiniLM-L6-v2, a sentence-similarity
#: encoder turned into a classifier, needs to move further than BERT's usual 2e-5..5e-5: full fine-tuning on SST-2
#: 5,000 scored 85.2 % at 5e-5, 87.0 % at 2e-4, 87.2 % at 3e-4 (seed 0); AG News 90.7 % at 5e-5 and 90.8 % at 2e-4
#: (benchmarks/strategies.md, notes/strategies_sst2_lr.md, notes/strategies_agnews_lr.md). `hf:<id>` and the packaged
#: copy (`minilm-l6`) both take it from here. Those runs had up to 10 epochs; at the default 4 (defaults suite,
#: benchmarks/notes/defaults_finetune_texts.md, against the plain PyTorch loop at 5e-5 in the same run): SST-2
#: 85.50 % at 1e-4 and 85.01 % at 2e-4 (loop 85.50 %), THUCNews 64.90 % and 65.80 % (loop 63.90 %): 1e-4 is the
#: rate that is never below the loop.
MEASURED_FINETUNE_LR = {"sentence-transformers/all-MiniLM-L6-v2": 1e-4}

#: the files that hold a sentence-transformers model's pooling, normalisation and maximum length
_ST_FILES = ["modules.json", "sentence_bert_config.json", "*/config.json"]


def _settings_folder(name_or_path: str) -> Path | None:
    """The folder to read sentence-transformers settings from: the directory itself, or for a hub id its
    snapshot in the Hugging Face cache with those few JSON files fetched (from the cache when offline). Without
    them an `hf:` sentence encoder would pool without its normalisation and not match `encode`."""
    root = Path(name_or_path)
    if root.is_dir():
        return root
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name_or_path, allow_patterns=_ST_FILES))
    except (OSError, ValueError) as e:
        warnings.warn(f"hf:{name_or_path}: could not read its sentence-transformers settings (modules.json): "
                      f"{' '.join(str(e).split())[:200]}. Pooling defaults to the mean, without normalisation; "
                      "download the model folder and pass its path to use its own settings.", stacklevel=3)
        return None


def _sentence_transformers_settings(root: Path | None) -> tuple[str, bool, int | None]:
    """(pooling, normalize, max_seq_length) from a sentence-transformers folder; defaults otherwise. The
    files are the user's: a malformed one is a ValueError naming it (the registry reports it cleanly)."""
    if root is None or not root.is_dir():
        return "mean", False, None

    def read(path: Path) -> Any:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, RecursionError, OSError) as e:
            raise ValueError(f"{path}: unreadable or malformed JSON ({' '.join(str(e).split())[:200]})") from None

    pooling, normalize, max_len = "mean", False, None
    modules = root / "modules.json"
    if modules.is_file():
        listing = read(modules)
        if not isinstance(listing, list) or not all(isinstance(m, dict) for m in listing):
            raise ValueError(f"{modules}: expected a JSON array of module objects")
        for mod in listing:
            kind = str(mod.get("type", ""))
            if kind.endswith("Normalize"):
                normalize = True
            if kind.endswith("Pooling"):
                pcfg = (root / str(mod.get("path", "")) / "config.json").resolve()
                if root.resolve() not in pcfg.parents:
                    raise ValueError(f"{modules}: module path {mod.get('path')!r} lies outside {root}")
                if pcfg.is_file():
                    pc = read(pcfg)
                    if isinstance(pc, dict) and pc.get("pooling_mode_cls_token") is True:
                        pooling = "cls"
    st_cfg = root / "sentence_bert_config.json"
    if st_cfg.is_file():
        st = read(st_cfg)
        max_len = st.get("max_seq_length") if isinstance(st, dict) else None
        if max_len is not None and (type(max_len) is not int or max_len < 1):
            raise ValueError(f"{st_cfg}: max_seq_length must be a positive integer, got {str(max_len)[:40]}")
    return pooling, normalize, max_len
