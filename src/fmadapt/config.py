"""Every option of a training run, in one dataclass saved (resolved) in every run directory."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError


def parse_duration(text: str | float | int) -> float | None:
    """Seconds from "90s", "10m", "1.5h" or a plain number of seconds; None when unreadable or <= 0."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    t = str(text).strip().lower()
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        return None
    return value if value > 0 else None


@dataclass
class FitConfig:
    """Options for `fit`. `None` means "choose from the backbone and data" (resolved values are saved)."""

    backbone: str | None = None  #: registry name, timm:<arch>, hf:<id> or a directory
    strategy: str = "probe"  #: "probe" (frozen features + logistic regression) or "finetune"
    #: fine-tuning epochs (early stopping may end sooner); 4, as the plain PyTorch loop a user writes: chosen across
    #: the defaults suite (benchmarks/notes/defaults_finetune_*.md), where 10 was slower and no more accurate
    epochs: int = 4
    batch_size: int = 32
    #: backbone learning rate (fine-tuning); default: the backbone's measured `finetune_lr` (MiniLM-L6 1e-4),
    #: else 2e-4 image, 3e-5 text
    lr: float | None = None
    head_lr: float = 1e-3  #: head learning rate (fine-tuning)
    weight_decay: float = 0.01
    optimizer: str = "adamw"  #: fine-tuning optimizer: "adamw" or "sgd" (with `momentum`, Nesterov)
    momentum: float = 0.9  #: SGD momentum
    #: learning-rate schedule: "cosine" (warmup + cosine), "inverse_time" (α0/(1+βt)), "onecycle", "constant"
    schedule: str = "cosine"
    decay_beta: float | None = None  #: inverse_time β per step; None = 9/steps (ends at α0/10)
    warmup_frac: float = 0.1  #: share of steps spent warming up the learning rate
    label_smoothing: float = 0.0  #: fine-tuning cross-entropy label smoothing
    grad_clip: float | None = None  #: clip the gradient norm to this value (None: no clipping)
    #: fine-tuning: keep an exponential moving average of the weights with this decay (e.g. 0.999; 0 = off),
    #: warmed up as in timm (update n uses min(ema, (1+n)/(10+n))); validation, the kept epoch and the saved
    #: model use the average
    ema: float = 0.0
    #: layer-wise learning-rate decay: layer group k from the top trains at lr * layer_decay**k (1 = off)
    layer_decay: float = 1.0
    lora_r: int = 8  #: strategy "lora": adapter rank
    lora_alpha: float = 16.0  #: LoRA scaling numerator (updates are scaled by alpha / r)
    lora_dropout: float = 0.05
    lora_targets: str | None = None  #: comma list of layer names to adapt (None: attention q/v or 1x1 convs)
    #: strategy "contrastive": rounds of pairs; each gives every training example one same-class and one
    #: other-class partner (SetFit's num_iterations)
    pair_iterations: int = 20
    #: texts: use the class names as prior knowledge: each is put into this template (e.g. "This sentence is
    #: {}.") and embedded; the head learns on top of that zero-shot classifier (its strength fitted on the
    #: labels), and `contrastive` adds the class sentences to its pairs. For few labels; None: off
    label_template: str | None = None
    l2sp: float = 0.01  #: strategy "l2sp": strength α of the pull (α/2)·||w - w_pretrained||² on the backbone
    #: class imbalance: "auto" lets a head with the loss weighted by inverse class frequency compete with an
    #: unweighted one on validation (by `metric`) when the classes are imbalanced, and fine-tuning keeps the
    #: probe's choice; "balanced" always weights; "none" never
    class_weight: str = "auto"
    #: "auto" without a probe to decide (fine-tuning from a random head): weight past this class-count ratio
    imbalance_ratio: float = 3.0
    #: the metric that chooses between candidates on validation (the probe's C and class weighting, the
    #: fine-tuning epoch kept, auto's candidates; saved with the model and reported): "accuracy",
    #: "balanced_accuracy" (mean per-class recall) or "macro_f1"
    metric: str = "accuracy"
    patience: int = 2  #: epochs without improvement (see select_by) before stopping (2 of the default 4)
    #: fine-tuning: choose the weights kept on validation (see `keep`); False runs all epochs and keeps the last
    restore_best: bool = True
    #: fine-tuning, with restore_best: "best" keeps the best validation epoch (or the probe start when no epoch
    #: beats it) and stops after `patience` epochs without improvement; "start_or_last" runs every epoch and keeps
    #: the last (annealed) weights unless the probe start validates strictly better (benchmarks/notes/
    #: defaults_epoch_choice.md)
    keep: str = "best"
    #: fine-tuning: which epoch is kept (and when to stop early): "metric" (the run's `metric` on validation,
    #: ties broken by the lower loss), "accuracy" (validation accuracy, whatever `metric` is) or "loss"
    select_by: str = "metric"
    #: fine-tuning: stop training this many seconds after the fit started (its setup included; Lightning max_time)
    max_time: float | None = None
    #: strategy "auto": wall-clock budget for choosing and training ("10m", "90s", "1h" or seconds)
    time_budget: str = "10m"
    #: `auto` on texts: also run the classical candidates, character and word n-gram TF-IDF + logistic
    #: regression and its stack with the probe (seconds each; adapt/ngram.py)
    auto_ngram: bool = True
    #: strategy "auto": comma list of backbones ranked first by LogME on their frozen features; the best is used
    candidate_backbones: str | None = None
    unfreeze: int = -1  #: fine-tuning: train only the top N layer groups (-1 = all)
    dropout: float = 0.0  #: dropout before the head
    head_init: str = "probe"  #: fine-tuning starts from the probe's head ("probe", LP-FT) or a random one
    bn: str = "frozen"  #: fine-tuning: BatchNorm statistics "frozen" (inference mode) or "train"
    #: images, fine-tuning: random resized crop + flip (+ `augment_policy`). Off by default: in the defaults suite's
    #: 4 epochs it cost accuracy on both image sets where an epoch beat the probe's start (digits -3.50 points at
    #: lr 2e-4 and -3.01 at 1e-3, Fashion-MNIST -1.00 at 2e-4; benchmarks/notes/defaults_finetune_*.md), and
    #: without it a partial fine-tune trains on cached activations. None: off for fine-tuning unless an
    #: `augment_policy` other than "basic" is asked for; on for the contrastive strategy's image pairs (its views)
    augment: bool | None = None
    #: images: "basic", "trivial" (+ TrivialAugmentWide), "randaugment" (+ RandAugment), or "flip" (no crop:
    #: horizontal flip only, for centred, tightly framed images)
    augment_policy: str = "basic"
    #: images: test-time augmentation, predictions average the image's and its mirror image's probabilities
    #: (twice the prediction time; for subjects that may face either way, not for text, digits or left-facing shoes)
    tta: bool = False
    mixup: float = 0.0  #: images, fine-tuning: mixup alpha (timm Mixup; 0 = off)
    cutmix: float = 0.0  #: images, fine-tuning: cutmix alpha (0 = off)
    #: fine-tuning: adversarial training, "none", "fgsm" / "pgd" (images) or "embedding" (texts: FGM)
    adversarial: str = "none"
    #: perturbation size: images in [0, 1] pixels (default 2/255); texts, relative to the L2 norm of the text's
    #: input embeddings (default 0.05)
    adv_eps: float | None = None
    adv_steps: int = 3  #: PGD steps
    #: texts, fine-tuning: per-word probability of noise (dropped word, swapped words or a typo; 0 = off)
    text_noise: float = 0.0
    #: partial fine-tuning: run the frozen prefix once and train the top groups on cached activations.
    #: "auto": when nothing needs per-epoch inputs (text, or images with augment=False); "on": also turns
    #: image augmentation off; "off": never.
    cache_activations: str = "auto"
    probe_c: float | None = None  #: probe inverse regularisation; None = chosen on validation
    #: probe: once C is chosen, refit the head on training + validation data (when the validation split was
    #: carved from the training data); on small data (<= 1,000 examples) C is chosen by 5-fold cross-validation
    refit: bool = True
    #: fine-tuning: once the validation split (carved from the training data) has chosen the number of epochs,
    #: train again from the pretrained weights on training + validation data for that many epochs and keep that
    #: model (about twice the time; validation figures and calibration come from the first run)
    refit_full: bool = False
    #: self-training (`fit(..., unlabeled=...)`, `--unlabeled`): the probability the first model must give an
    #: unlabeled input for the second model to train on it with that label
    pseudo_threshold: float = 0.9
    pseudo_max: int | None = None  #: self-training: label at most this many unlabeled inputs (a seeded sample)
    #: self-training: keep the pseudo-labels in the labeled training data's class proportions
    pseudo_balance: bool = True
    #: fit a temperature on the validation predictions (Guo et al., 2017); predictions use it. Accuracy is
    #: unchanged, only the confidence of the probabilities
    calibrate: bool = True
    log_to: str | None = None  #: experiment tracking: "csv", "tensorboard" or "mlflow" (Lightning loggers)
    log_dir: str | None = None  #: where the logs go (the CLI uses <model dir>/logs)
    val_fraction: float = 0.2  #: share of training data held out when no validation set is given
    seed: int = 0
    ensemble: int = 1  #: models per backbone, seeds seed..seed+K-1; probabilities are averaged
    ensemble_backbones: str | None = None  #: comma list: an ensemble over backbones (x `ensemble` seeds)
    image_size: int | None = None  #: image backbones: input size (default: the backbone's)
    #: images: the share of the resized image the centre crop keeps (the image is resized to image_size /
    #: crop_pct, then cropped to image_size); None: the backbone's (0.875 for the packaged EfficientNet).
    #: 1.0 keeps the whole image: for small, tightly framed images whose edges matter (Fashion-MNIST sleeves)
    crop_pct: float | None = None
    #: texts: the most tokens of a text the backbone reads, longer ones are cut (None: the strategy's default,
    #: 128 for fine-tuning and LoRA, and for the probe the backbone's own limit, 256 for MiniLM; never above the
    #: backbone's limit). Fine-tuning's time grows with it: long documents cost about 2x at 256
    max_tokens: int | None = None
    num_workers: int | None = None  #: DataLoader workers (default: 2 for images, 0 for text)
    #: frozen-feature inference: "auto" (ONNX Runtime when it passes parity), "torch", or "int8" (opt-in;
    #: images are calibrated on up to 64 of the training images, the ranges saved with the model)
    runtime: str = "auto"
    accelerator: str = "auto"  #: passed to the Lightning Trainer ("cpu", "gpu", "auto", ...)
    #: fine-tuning arithmetic, passed to the Lightning Trainer: "32-true", or "bf16-mixed" (autocast; about
    #: 1.6x faster text fine-tuning on CPUs with AMX/AVX512-BF16, e.g. Xeon Sapphire Rapids) or "16-mixed" (GPU)
    precision: str = "32-true"
    devices: str = "auto"  #: passed to the Lightning Trainer ("auto", "1", "2", ...)
    num_nodes: int = 1  #: Lightning multi-node training (each node runs the same command)
    dist_strategy: str = "auto"  #: Lightning strategy: "auto", "ddp", "ddp_spawn", "ddp_fork", "fsdp", ...
    #: texts: add the pieces the tokenizer maps to [UNK] (seen >= extend_vocab_min_count times in training)
    #: as new tokens, embeddings initialised to the mean, learnt by fine-tuning all layers
    extend_vocab: bool = False
    extend_vocab_min_count: int = 2
    #: extend_vocab: also add CJK words, runs of 2..extend_vocab_ngram characters seen >=
    #: extend_vocab_word_min_count times in training (1: characters only)
    extend_vocab_ngram: int = 1
    extend_vocab_word_min_count: int = 5
    #: extend_vocab: learning rate of the added tokens' embeddings, which start untrained (None: 20 x lr)
    new_token_lr: float | None = None
    text_col: str | None = None
    label_col: str | None = None
    #: text tables: "auto" reads UTF-8 and detects another encoding (with a warning), or a codec name
    encoding: str = "auto"
    header: bool = True  #: tables: the first row holds column names
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.ensemble >= 1, "ensemble must be >= 1"),
            (self.max_time is None or self.max_time > 0, "max_time must be positive"),
            (parse_duration(self.time_budget) is not None, "time_budget must look like 10m, 90s, 1h or 600"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (0.0 < self.val_fraction < 0.9, "val_fraction must be in (0, 0.9)"),
            (0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)"),
            (0.0 <= self.warmup_frac < 1.0, "warmup_frac must be in [0, 1)"),
            (self.unfreeze >= -1, "unfreeze must be -1 (all) or a number of top layer groups"),
            (self.patience >= 1, "patience must be >= 1"),
            (self.num_nodes >= 1, "num_nodes must be >= 1"),
            (self.head_init in ("probe", "random"), "head_init must be 'probe' or 'random'"),
            (self.bn in ("frozen", "train"), "bn must be 'frozen' or 'train'"),
            (self.cache_activations in ("auto", "on", "off"), "cache_activations must be 'auto', 'on' or 'off'"),
            (self.image_size is None or 16 <= self.image_size <= 1024, "image_size must be in [16, 1024]"),
            (self.crop_pct is None or 0.05 <= self.crop_pct <= 1.0, "crop_pct must be in [0.05, 1]"),
            (self.max_tokens is None or 8 <= self.max_tokens <= 8192, "max_tokens must be in [8, 8192]"),
            (self.lr is None or self.lr > 0, "lr must be positive"),
            (self.head_lr > 0, "head_lr must be positive"),
            (self.probe_c is None or self.probe_c > 0, "probe_c must be positive"),
            (self.runtime in ("auto", "onnx", "int8", "torch"), "runtime must be 'auto', 'onnx', 'int8' or 'torch'"),
            (self.optimizer in ("adamw", "sgd"), "optimizer must be 'adamw' or 'sgd'"),
            (0.0 <= self.momentum < 1.0, "momentum must be in [0, 1)"),
            (self.schedule in ("cosine", "inverse_time", "onecycle", "constant"),
             "schedule must be 'cosine', 'inverse_time', 'onecycle' or 'constant'"),
            (self.decay_beta is None or self.decay_beta >= 0, "decay_beta must be >= 0"),
            (0.0 <= self.label_smoothing < 1.0, "label_smoothing must be in [0, 1)"),
            (self.grad_clip is None or self.grad_clip > 0, "grad_clip must be positive"),
            (0.0 <= self.ema < 1.0, "ema must be in [0, 1) (a decay such as 0.999; 0 = off)"),
            (0.0 < self.layer_decay <= 1.0, "layer_decay must be in (0, 1] (1 = off)"),
            (self.l2sp >= 0, "l2sp must be >= 0"),
            (self.pair_iterations >= 1, "pair_iterations must be >= 1"),
            (self.label_template is None or self.label_template.count("{}") == 1,
             "label_template must hold '{}' exactly once, where the class name goes (e.g. 'This sentence is {}.')"),
            (self.log_to in (None, "csv", "tensorboard", "mlflow"), "log_to must be csv, tensorboard or mlflow"),
            (self.lora_r >= 1 and self.lora_alpha > 0 and 0 <= self.lora_dropout < 1,
             "lora_r must be >= 1, lora_alpha > 0, lora_dropout in [0, 1)"),
            (self.class_weight in ("auto", "balanced", "none"), "class_weight must be 'auto', 'balanced' or 'none'"),
            (self.imbalance_ratio >= 1, "imbalance_ratio must be >= 1"),
            (self.metric in ("accuracy", "balanced_accuracy", "macro_f1"),
             "metric must be 'accuracy', 'balanced_accuracy' or 'macro_f1'"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (self.extend_vocab_min_count >= 1, "extend_vocab_min_count must be >= 1"),
            (1 <= self.extend_vocab_ngram <= 8, "extend_vocab_ngram must be 1 (characters only) to 8"),
            (self.extend_vocab_word_min_count >= 1, "extend_vocab_word_min_count must be >= 1"),
            (self.precision in ("32-true", "bf16-mixed", "16-mixed"),
             "precision must be '32-true', 'bf16-mixed' or '16-mixed'"),
            (self.select_by in ("metric", "accuracy", "loss"), "select_by must be 'metric', 'accuracy' or 'loss'"),
            (self.keep in ("best", "start_or_last"), "keep must be 'best' or 'start_or_last'"),
            (self.new_token_lr is None or self.new_token_lr > 0, "new_token_lr must be > 0"),
            (self.augment_policy in ("basic", "trivial", "randaugment", "flip"),
             "augment_policy must be 'basic', 'trivial', 'randaugment' or 'flip'"),
            (self.mixup >= 0 and self.cutmix >= 0, "mixup and cutmix alphas must be >= 0"),
            (0.0 <= self.text_noise < 1.0, "text_noise must be in [0, 1)"),
            (self.adversarial in ("none", "fgsm", "pgd", "embedding"),
             "adversarial must be 'none', 'fgsm', 'pgd' (images) or 'embedding' (texts)"),
            (self.adv_eps is None or self.adv_eps > 0, "adv_eps must be positive"),
            (self.adv_steps >= 1, "adv_steps must be >= 1"),
            (0.0 < self.pseudo_threshold <= 1.0, "pseudo_threshold must be in (0, 1]"),
            (self.pseudo_max is None or self.pseudo_max >= 1, "pseudo_max must be >= 1 (or unset: all)"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)

    def augments_images(self, strategy_default: bool) -> bool:
        """Whether training varies image inputs by random crops/flips: `augment` when given; left unset (None),
        the strategy's default (off for fine-tuning, on for contrastive pairs), or on when an `augment_policy`
        beyond the basic one was asked for."""
        if self.augment is not None:
            return self.augment
        return strategy_default or self.augment_policy != "basic"

    def how_set(self, name: str) -> str:
        """`value (name, the default|given)`, for histories that say how a setting was chosen."""
        value = getattr(self, name)
        default = next(f.default for f in dataclasses.fields(self) if f.name == name)
        return f"{value} ({name}, {'the default' if value == default else 'given'})"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FitConfig:
        """Options as saved in a model directory's config.json ("fit"): every value must have its field's type
        (ConfigError otherwise, never a TypeError from a comparison in the checks)."""
        import types
        import typing

        if not isinstance(d, dict):
            raise ConfigError(f"options must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = {str(k) for k in d} - known
        if unknown:
            raise ConfigError(f"unknown option(s): {', '.join(sorted(unknown))[:200]}")
        hints = typing.get_type_hints(cls)
        lenient = {"devices": (int, list), "time_budget": (int, float)}  # what the API and Lightning also take
        for key, value in d.items():
            hint = hints[key]
            if type(value) in lenient.get(key, ()):
                continue
            kinds = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
            ok = False
            for kind in kinds:
                kind = typing.get_origin(kind) or kind
                if kind is type(None):
                    ok = value is None
                elif kind is float:
                    ok = type(value) in (int, float)
                elif kind is int:
                    ok = type(value) is int
                else:
                    ok = isinstance(value, kind)
                if ok:
                    break
            if not ok:
                raise ConfigError(f"option {key}: {str(value)[:60]!r} is not of type "
                                  f"{getattr(hint, '__name__', hint)}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)
