"""The options of `fmadapt pretrain` (continued self-supervised pretraining of a backbone on unlabeled data), saved
in the output's pretrain.json. Torch-free: the CLI checks them before anything heavy is imported."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

TEXT_METHODS = ("mlm", "simcse", "tsdae")
IMAGE_METHODS = ("simclr",)
#: the method a modality gets when none is named
DEFAULT_METHOD = {"text": "mlm", "image": "simclr"}


@dataclass
class PretrainConfig:
    """How the backbone keeps pretraining. Texts: `mlm`: masked-language modelling (a masked-LM head is initialised
    and tied to the input embeddings, then dropped: the encoder is what is saved); `simcse`: unsupervised SimCSE
    (each text against itself under another dropout mask, the batch's other texts as negatives); `tsdae` (a decoder
    tied to the encoder rebuilds each text from the embedding of its copy with 60 % of the words deleted). Images:
    `simclr`
    (two augmented views of each image must find each other among the batch's views, through a projection head
    that is dropped afterwards)."""

    #: None: the backbone's modality's default (texts mlm, images simclr)
    method: str | None = None
    #: passes over the unlabeled inputs; training stops earlier when `time_budget` is spent
    epochs: int = 1
    #: wall-clock limit of the training loop ("30m", "90s", "1h", seconds); None: the epochs run in full
    time_budget: str | None = None
    #: at most this many texts or images (a seeded sample); None: all (called max_texts before images came)
    max_inputs: int | None = None
    #: inputs per step; None: the method's (mlm and simcse 32; simclr 64 images, i.e. 128 views: its negatives are
    #: the batch's other views)
    batch_size: int | None = None
    #: peak learning rate (linear warm-up over `warmup` of the steps, then linear decay to 0); None: the method's
    #: default (mlm 1e-4, the rate fine-tuning all-MiniLM-L6-v2 measured best; simcse 3e-5, SimCSE's BERT-base rate;
    #: tsdae 3e-5, TSDAE's; simclr 2e-5: of 2e-5, 1e-4 and 3e-4, the one that kept a frozen probe's accuracy on
    #: Fashion-MNIST after 200 steps; the larger rates cost it 2 points, benchmarks/notes/pretrain.md)
    lr: float | None = None
    warmup: float = 0.06
    weight_decay: float = 0.01
    #: texts are cut to this many tokens (short texts are what pretraining here is for: titles, posts, reviews)
    max_tokens: int = 64
    #: mlm: the share of tokens masked (BERT's 15 %: 80 % [MASK], 10 % random, 10 % kept)
    mask_prob: float = 0.15
    #: tsdae: the share of each text's words (CJK characters) deleted from the encoder's input
    delete_prob: float = 0.6
    #: simcse / simclr: the softmax temperature of the contrastive loss; None: the method's (simcse 0.05, SimCSE's;
    #: simclr 0.2, MoCo v2's for small batches)
    temperature: float | None = None
    #: images: the side the views are trained at (None: the backbone's input size); the backbone directory records
    #: it as its input size. Smaller is much faster on a CPU (EfficientNet-Lite0: 64 px ~30x faster than 224 px)
    image_size: int | None = None
    #: simclr: the smallest share of an image a random crop keeps
    crop_scale: float = 0.2
    #: simclr: the share of the steps that train the new projection head alone, on the backbone's features as they
    #: are (a random head's gradients would first pull the pretrained features apart)
    head_warmup: float = 0.1
    #: add the pieces the tokenizer maps to [UNK] (seen >= extend_vocab_min_count times) as new tokens before
    #: pretraining, so that they learn what they mean from the unlabeled texts (backbones/vocab.py)
    extend_vocab: bool = False
    extend_vocab_min_count: int = 2
    #: also add CJK words of 2..N characters (N >= 2), seen >= extend_vocab_word_min_count times
    extend_vocab_ngram: int = 1
    extend_vocab_word_min_count: int = 5
    #: what trains: "all" (the encoder and its embeddings) or "new-tokens" (only the embeddings of the tokens
    #: extend_vocab added, and mlm's head: the encoder and every pretrained embedding stay exactly as they were, so
    #: the new tokens learn to mean something in the encoder's own space)
    trainable: str = "all"
    #: the added tokens' embeddings take steps this many times larger than the rest (they start at the mean of
    #: the pretrained rows; fine-tuning's new_token_lr default is the same 20 x)
    new_token_lr_scale: float = 20.0
    seed: int = 0

    def __post_init__(self) -> None:
        from ..config import parse_duration
        from ..options import check_types

        check_types(self, "pretrain option")
        checks = [
            (self.method is None or self.method in TEXT_METHODS + IMAGE_METHODS,
             f"method must be one of {' | '.join(TEXT_METHODS)} (texts) or {' | '.join(IMAGE_METHODS)} (images), "
             f"got {self.method!r}"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.time_budget is None or parse_duration(self.time_budget) is not None,
             "time_budget must look like 30m, 90s, 1h or 600"),
            (self.max_inputs is None or self.max_inputs >= 2, "max_inputs must be >= 2"),
            (self.batch_size is None or self.batch_size >= 2,
             "batch_size must be >= 2 (simcse's and simclr's negatives are the batch's other inputs)"),
            (self.lr is None or 0 < self.lr < 1, "lr must be in (0, 1)"),
            (0 <= self.warmup < 1, "warmup must be in [0, 1)"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (4 <= self.max_tokens <= 4096, "max_tokens must be in [4, 4096]"),
            (0 < self.mask_prob < 1, "mask_prob must be in (0, 1)"),
            (0 <= self.delete_prob < 1, "delete_prob must be in [0, 1)"),
            (self.temperature is None or self.temperature > 0, "temperature must be > 0"),
            (self.image_size is None or 16 <= self.image_size <= 1024, "image_size must be in [16, 1024]"),
            (0 < self.crop_scale <= 1, "crop_scale must be in (0, 1]"),
            (0 <= self.head_warmup < 1, "head_warmup must be in [0, 1)"),
            (self.extend_vocab_min_count >= 1 and self.extend_vocab_word_min_count >= 1,
             "extend_vocab_min_count and extend_vocab_word_min_count must be >= 1"),
            (self.extend_vocab_ngram >= 1, "extend_vocab_ngram must be >= 1"),
            (self.new_token_lr_scale > 0, "new_token_lr_scale must be > 0"),
            (self.trainable in ("all", "new-tokens"), f"trainable must be all or new-tokens, got {self.trainable!r}"),
            (self.trainable == "all" or (self.extend_vocab and self.method in ("mlm", None)),
             "trainable=new-tokens trains the tokens --extend-vocab adds, with mlm"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"pretrain: {msg}")

    def resolved(self, modality: str) -> PretrainConfig:
        """These options for a backbone of `modality`: the method named or the modality's default, checked."""
        method = self.method or DEFAULT_METHOD.get(modality)
        allowed = {"text": TEXT_METHODS, "image": IMAGE_METHODS}.get(modality, ())
        if method not in allowed:
            article = "a" if modality == "text" else "an"
            raise ConfigError(f"pretrain: method {method!r} does not apply to {article} {modality} backbone" + (
                f" (one of {' | '.join(allowed)})" if allowed else ": pretraining continues text and image backbones"))
        if self.extend_vocab and modality != "text":
            raise ConfigError("pretrain: extend_vocab adds tokens to a text backbone's vocabulary")
        resolved = dataclasses.replace(self, method=method)
        return dataclasses.replace(resolved, batch_size=resolved.batch)

    @property
    def batch(self) -> int:
        return self.batch_size or (64 if self.method == "simclr" else 32)

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else {"mlm": 1e-4, "simcse": 3e-5, "tsdae": 3e-5, "simclr": 2e-5}[
            str(self.method)]

    @property
    def tau(self) -> float:
        return self.temperature if self.temperature is not None else {"simclr": 0.2}.get(str(self.method), 0.05)

    def budget_seconds(self) -> float | None:
        from ..config import parse_duration

        return None if self.time_budget is None else parse_duration(self.time_budget)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> PretrainConfig:
        from ..options import dataclass_from_dict

        return dataclass_from_dict(cls, d, "pretrain")  # type: ignore[no-any-return]


def assignments(items: list[str], where: str = "--set") -> dict[str, Any]:
    """["lr=5e-5", "max_inputs=20000", ...] -> each value of its pretrain option's type (options.coerce)."""
    from ..options import dataclass_assignments

    return dataclass_assignments(PretrainConfig, items, where)
