"""Every option of a training run, in one dataclass saved (resolved) in every run directory. Each field's group,
help and choices are its metadata (`opt`): `fmadapt fit`'s flags, `--config` files, dotted `--set group.key=value`
(options.py) and the choice checks come from them. Code reads options flat (`cfg.lr`)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

#: the option groups, in the order of `fmadapt fit --help`: name -> title
GROUPS: dict[str, str] = {
    "model": "Model", "optim": "Optimisation", "selection": "Validation and selection", "lora": "LoRA",
    "contrastive": "Contrastive pairs and class names", "augment": "Augmentation", "adversarial": "Adversarial "
    "training", "selftrain": "Self-training", "vocab": "Vocabulary", "ensemble": "Ensembles", "auto": "Strategy auto",
    "distributed": "Hardware and distributed training", "input": "Input", "runtime": "Runtime",
    "logging": "Experiment tracking"}

#: the built-in names of `strategy` (written out: the registry imports torch, which `fmadapt --help` must not;
#: tests/test_cli.py checks them against it); registered strategies add to them
STRATEGY_NAMES = ("probe", "finetune", "progressive", "l2sp", "lora", "contrastive", "federated",
                  "federated-finetune", "federated-lora", "auto")


def parse_duration(text: str | float | int) -> float | None:
    """Seconds from "90s", "10m", "1.5h" or a plain number of seconds; None when unreadable or <= 0."""
    units, t = {"s": 1.0, "m": 60.0, "h": 3600.0}, str(text).strip().lower()
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        return None
    return value if value > 0 else None


def opt(default: Any, group: str, *, help: str, choices: tuple[str, ...] | None = None) -> Any:  # noqa: A002
    """A FitConfig field: its default, group (a key of GROUPS), help and, for a closed set of values, its choices."""
    assert group in GROUPS, group
    return field(default=default, metadata={"group": group, "help": help, "choices": choices})


@dataclass
class FitConfig:
    """Options for `fit`, in groups (`GROUPS`). `None` means "choose from the backbone and data" (resolved values are
    saved). Each field's group, help and choices are its metadata: the CLI's flags, `--config` files and `--set`
    come from them."""

    # -- model
    backbone: str | None = opt(None, "model",
        help="registry name (`fmadapt backbones` lists them), timm:<arch>, hf:<id> or a directory")
    strategy: str = opt("probe", "model",
        help=f"how the backbone is adapted: {' | '.join(STRATEGY_NAMES)} (`fmadapt strategies` describes each; "
             "auto: the measured choice within time_budget)")
    seed: int = opt(0, "model", help="random seed: the validation split, heads, training order")

    # -- optim
    epochs: int = opt(4, "optim",
        help="fine-tuning epochs; 4, as the plain PyTorch loop a user writes, chosen across the defaults suite "
             "(benchmarks/notes/defaults_finetune_*.md): 10 was slower and no more accurate")
    batch_size: int = opt(32, "optim", help="examples per batch (training and feature extraction)")
    group_by_length: str = opt("off", "optim", choices=("auto", "on", "off"), help="text fine-tuning: batches of "
        "similar-length texts, 1.5-2x faster, ~0.5 points lower on SST-2/AG News; auto: if random ones pad >= 1.5x")
    lr: float | None = opt(None, "optim",
        help="backbone learning rate (fine-tuning); default: the backbone's measured `finetune_lr` (MiniLM-L6 "
             "1e-4), else 2e-4 image, 3e-5 text")
    lr_race: str | None = opt(None, "optim",
        help='fine-tuning without a given lr: race these multiples of the default learning rate before the run, '
             '"0.5,1,2" (each trains `race_fraction` of an epoch from the same start and is scored on the '
             "validation split by the run's metric; the best rate runs; ties: the lower validation loss, then the "
             "default). None: off")
    race_fraction: float = opt(0.25, "optim", help="lr_race: the share of an epoch each rate trains (at least 8 steps)")
    head_lr: float = opt(1e-3, "optim", help="head learning rate (fine-tuning)")
    weight_decay: float = opt(0.01, "optim", help="fine-tuning weight decay (AdamW: decoupled)")
    optimizer: str = opt("adamw", "optim", choices=("adamw", "sgd"), help='fine-tuning: "adamw", or "sgd" (Nesterov)')
    momentum: float = opt(0.9, "optim", help="SGD momentum")
    schedule: str = opt("cosine", "optim", choices=("cosine", "inverse_time", "onecycle", "constant"),
        help='learning-rate schedule: "cosine" (warmup + cosine), "inverse_time" (α0/(1+βt)), "onecycle", "constant"')
    decay_beta: float | None = opt(None, "optim", help="inverse_time β per step; None = 9/steps (ends at α0/10)")
    warmup_frac: float = opt(0.1, "optim", help="share of steps spent warming up the learning rate")
    label_smoothing: float = opt(0.0, "optim", help="fine-tuning cross-entropy label smoothing")
    grad_clip: float | None = opt(None, "optim", help="clip the gradient norm to this value (None: no clipping)")
    ema: float = opt(0.0, "optim",
        help="fine-tuning: keep an exponential moving average of the weights with this decay (e.g. 0.999; 0 = "
             "off), warmed up as in timm (update n uses min(ema, (1+n)/(10+n))); validation, the kept epoch and "
             "the saved model use the average")
    layer_decay: float = opt(1.0, "optim",
        help="layer-wise learning-rate decay: layer group k from the top trains at lr * layer_decay**k (1 = off)")
    unfreeze: int = opt(-1, "optim", help="fine-tuning: train only the top N layer groups (-1 = all)")
    dropout: float = opt(0.0, "optim", help="dropout before the head")
    head_init: str = opt("probe", "optim", choices=("probe", "random"),
        help="fine-tuning starts from the probe's head (\"probe\", LP-FT) or a random one")
    bn: str = opt("frozen", "optim", choices=("frozen", "train"),
        help='fine-tuning: BatchNorm statistics "frozen" (inference mode) or "train"')
    l2sp: float = opt(0.01, "optim",
        help='strategy "l2sp": strength α of the pull (α/2)·||w - w_pretrained||² on the backbone')
    max_time: float | None = opt(None, "optim",
        help="fine-tuning: stop training this many seconds after the fit started (setup included; Lightning max_time)")
    precision: str = opt("32-true", "optim", choices=("32-true", "bf16-mixed", "16-mixed"),
        help='fine-tuning arithmetic, passed to the Lightning Trainer: "32-true", or "bf16-mixed" (autocast; about '
             '1.6x faster text fine-tuning on CPUs with AMX/AVX512-BF16, e.g. Xeon Sapphire Rapids) or "16-mixed" '
             "(GPU)")

    # -- selection
    metric: str = opt("accuracy", "selection", choices=("accuracy", "balanced_accuracy", "macro_f1"),
        help="the metric that chooses between candidates on validation (the probe's C and class weighting, the "
             "fine-tuning epoch kept, auto's candidates; saved with the model and reported): \"accuracy\", "
             '"balanced_accuracy" (mean per-class recall) or "macro_f1"')
    patience: int = opt(2, "selection", help='keep="best": epochs without improvement (see select_by) before stopping')
    restore_best: bool = opt(True, "selection",
        help="fine-tuning: choose the weights kept on validation (`keep`); False: all epochs, the last kept")
    keep: str = opt("start_or_last", "selection", choices=("start_or_last", "best"),
        help='fine-tuning, with restore_best: "start_or_last" runs every epoch and keeps the last (annealed) weights '
             'unless the probe start validates strictly better; "best" keeps the best validation epoch (or the '
             "start) and stops after `patience` epochs without improvement. start_or_last: +1.50 points on "
             "clothing ratings, +0.40 on Reuters, the same weights on the other 7 datasets of the defaults suite "
             "(benchmarks/notes/defaults_epoch_choice.md)")
    select_by: str = opt("metric", "selection", choices=("metric", "accuracy", "loss"),
        help="fine-tuning: which epoch is kept (and when to stop early): \"metric\" (the run's `metric` on validation, "
             'ties broken by the lower loss), "accuracy" (validation accuracy, whatever `metric` is) or "loss"')
    val_fraction: float = opt(0.2, "selection", help="share of training data held out when no validation set is given")
    split_groups: str | None = opt(None, "selection",
        help="images and sounds: a regular expression searched in each file's name; its first group (or the match) "
             "names the file's group (speaker, patient, session), and the validation split and the probe's "
             "cross-validation folds keep each group on one side, so that validation meets new groups as the "
             r"test data will (Speech Commands' <speaker>_nohash_<n>.wav: '^([^_]+)_'). None: file by file")
    class_weight: str = opt("auto", "selection", choices=("auto", "balanced", "none"),
        help='class imbalance: "auto" lets a head with the loss weighted by inverse class frequency compete with an '
             "unweighted one on validation (by `metric`) when the classes are imbalanced, and fine-tuning keeps the "
             "probe's choice; \"balanced\" always weights; \"none\" never")
    imbalance_ratio: float = opt(3.0, "selection",
        help='"auto" without a probe to decide (fine-tuning from a random head): weight past this class-count ratio')
    probe_c: float | None = opt(None, "selection", help="probe inverse regularisation C (regression: the ridge's "
                                "α = 1 / C); None = chosen on validation")
    refit: bool = opt(True, "selection",
        help="probe: once C is chosen, refit the head on training + validation data (when the validation split was "
             "carved from the training data); on small data (<= 1,000 examples) C is chosen by 5-fold cross-validation")
    refit_full: bool = opt(False, "selection",
        help="fine-tuning: once the validation split (carved from the training data) has chosen the number of epochs, "
             "train again from the pretrained weights on training + validation data for that many epochs and keep that "
             "model (about twice the time; validation figures and calibration come from the first run)")
    calibrate: bool = opt(True, "selection",
        help="fit a temperature on the validation predictions (Guo et al., 2017); predictions use it. Accuracy is "
             "unchanged, only the confidence of the probabilities")

    # -- lora
    lora_r: int = opt(8, "lora", help='strategy "lora": adapter rank')
    lora_alpha: float = opt(16.0, "lora", help="LoRA scaling numerator (updates are scaled by alpha / r)")
    lora_dropout: float = opt(0.05, "lora", help="dropout on the LoRA adapters' input")
    lora_targets: str | None = opt(None, "lora",
        help="comma list of layer names to adapt (None: attention q/v or 1x1 convs)")

    # -- contrastive
    pair_iterations: int = opt(20, "contrastive",
        help='strategy "contrastive": rounds of pairs; each gives every training example one same-class and one '
             "other-class partner (SetFit's num_iterations)")
    label_template: str | None = opt(None, "contrastive",
        help='texts: use the class names as prior knowledge: each is put into this template (e.g. "This sentence '
             'is {}.") and embedded; the head learns on top of that zero-shot classifier (its strength fitted on '
             "the labels), and `contrastive` adds the class sentences to its pairs. For few labels; None: off")

    # -- augment
    augment: bool | None = opt(None, "augment",
        help='fine-tuning: images, random resized crop + flip (+ `augment_policy`); sounds, gain, shift, noise, '
             "SpecAugment masks. Off by default: in the defaults suite's 4 epochs it cost accuracy on both image sets "
             "where an epoch beat the probe's start (digits -3.50 points at lr 2e-4 and -3.01 at 1e-3, Fashion-MNIST "
             '-1.00 at 2e-4; benchmarks/notes/defaults_finetune_*.md), and without it a partial fine-tune trains on '
             'cached activations. None: off for fine-tuning unless an `augment_policy` other than "basic" is asked '
             "for; on for the contrastive strategy's image pairs (its views)")
    augment_policy: str = opt("basic", "augment", choices=("basic", "trivial", "randaugment", "flip"),
        help='images: "basic", "trivial" (+ TrivialAugmentWide), "randaugment" (+ RandAugment), or "flip" (no '
             "crop: horizontal flip only, for centred, tightly framed images)")
    tta: bool = opt(False, "augment",
        help="images: test-time augmentation, predictions average the image's and its mirror image's probabilities "
             "(twice the prediction time; for subjects that may face either way, not for text, digits or "
             "left-facing shoes)")
    mixup: float = opt(0.0, "augment", help="images, fine-tuning: mixup alpha (timm Mixup; 0 = off)")
    cutmix: float = opt(0.0, "augment", help="images, fine-tuning: cutmix alpha (0 = off)")
    text_noise: float = opt(0.0, "augment",
        help="texts, fine-tuning: per-word probability of noise (dropped word, swapped words or a typo; 0 = off)")

    # -- adversarial
    adversarial: str = opt("none", "adversarial", choices=("none", "fgsm", "pgd", "embedding"),
        help='fine-tuning: adversarial training, "none", "fgsm" / "pgd" (images) or "embedding" (texts: FGM)')
    adv_eps: float | None = opt(None, "adversarial",
        help="perturbation size: images in [0, 1] pixels (default 2/255); texts, relative to the L2 norm of the "
             "text's input embeddings (default 0.05)")
    adv_steps: int = opt(3, "adversarial", help="adversarial pgd: the number of attack steps")

    # -- selftrain
    pseudo_threshold: float = opt(0.9, "selftrain",
        help="self-training (`fit(..., unlabeled=...)`, `--unlabeled`): the probability the first model must give "
             "an unlabeled input for the second model to train on it with that label")
    pseudo_max: int | None = opt(None, "selftrain",
        help="self-training: label at most this many unlabeled inputs (a seeded sample)")
    pseudo_balance: bool = opt(True, "selftrain",
        help="self-training: keep the pseudo-labels in the labeled training data's class proportions")

    # -- vocab
    extend_vocab: bool = opt(False, "vocab",
        help="texts: add the pieces the tokenizer maps to [UNK] (seen >= extend_vocab_min_count times in training) "
             "as new tokens, embeddings initialised to the mean, learnt by fine-tuning all layers")
    extend_vocab_min_count: int = opt(2, "vocab",
        help="extend_vocab: add a piece seen at least this many times in training")
    extend_vocab_ngram: int = opt(1, "vocab",
        help="extend_vocab: also add CJK words, runs of 2..extend_vocab_ngram characters seen >= "
             "extend_vocab_word_min_count times in training (1: characters only)")
    extend_vocab_word_min_count: int = opt(5, "vocab",
        help="extend_vocab_ngram: add a CJK word seen at least this many times in training")
    new_token_lr: float | None = opt(None, "vocab",
        help="extend_vocab: learning rate of the added tokens' embeddings, which start untrained (None: 20 x lr)")

    # -- ensemble
    ensemble: int = opt(1, "ensemble", help="models per backbone, seeds seed..seed+K-1; probabilities are averaged")
    ensemble_backbones: str | None = opt(None, "ensemble",
        help="comma list: an ensemble over backbones (x `ensemble` seeds)")

    # -- auto
    time_budget: str = opt("10m", "auto",
        help='strategy "auto": wall-clock budget for choosing and training ("10m", "90s", "1h" or seconds)')
    auto_ngram: bool = opt(True, "auto",
        help="`auto` on texts: also run the classical candidates, character and word n-gram TF-IDF + logistic "
             "regression and its stack with the probe (seconds each; adapt/ngram.py)")
    candidate_backbones: str | None = opt(None, "auto",
        help='strategy "auto": comma list of backbones ranked first by LogME on their frozen features; the best is '
             "used")

    # -- distributed
    accelerator: str = opt("auto", "distributed", help='passed to the Lightning Trainer ("cpu", "gpu", "auto", ...)')
    devices: str = opt("auto", "distributed", help='passed to the Lightning Trainer ("auto", "1", "2", ...)')
    num_nodes: int = opt(1, "distributed", help="Lightning multi-node training (each node runs the same command)")
    dist_strategy: str = opt("auto", "distributed",
        help='Lightning strategy: "auto", "ddp", "ddp_spawn", "ddp_fork", "fsdp", ...')
    num_workers: int | None = opt(None, "distributed", help="DataLoader workers (default: 2 for images, 0 for text)")

    # -- input
    text_col: str | None = opt(None, "input", help="tables: the text column (None: detected, see the README)")
    label_col: str | None = opt(None, "input",
        help="tables: the label column (None: detected); task multilabel: one column of labels joined by "
             "`label_sep`, or several 0/1 columns, one per label, named with commas (`earn,acq,grain`)")
    targets: str | None = opt(None, "input",
        help='tables: several targets from one table, label columns joined by commas, each `column` or '
             '`column:task` (task classification | multilabel | regression; default: `task`), e.g. '
             '"rating:regression,recommended" (the CLI: --label rating:regression --label recommended). One frozen '
             "backbone computes each input's features once, each target gets its own head, metrics and "
             "calibration, all in one model directory. With a fine-tuning strategy (finetune, progressive, l2sp, "
             "lora) the backbone is trained for all targets at once: the sum of each target's loss, weighted by "
             "`target_weights`, from the targets' probe heads")
    target_weights: str | None = opt(None, "input",
        help='several targets fine-tuned together: each target\'s loss weight, "rating=2,recommended=1" (a target '
             "not named: 1)")
    task: str = opt("classification", "input", choices=("classification", "multilabel", "regression"),
        help='"classification": one class per input; "multilabel": any number of labels per input (a sigmoid per '
             "label, binary cross-entropy, per-label decision thresholds tuned on validation, micro/macro-F1); "
             '"regression": a numeric target (ridge probe or mean-squared-error fine-tuning on the standardised '
             "target, RMSE / MAE / R² / Spearman, split-conformal prediction intervals). multilabel and regression "
             "read tables (of texts or of files), with probe, finetune, progressive, l2sp, lora or auto, for now")
    features: str | None = opt(None, "input",
        help='tables: other columns read beside the text, "age,department" or "auto" (all but the text, labels and '
             "identifiers): numbers standardised (missing ones imputed, flagged), categories one-hot (unseen: none)")
    table_head: str = opt("auto", "input", choices=("auto", "linear", "stack"), help='features: "linear" (a term '
        "in the head), \"stack\" (boosted trees over the text head's outputs and the columns; strategy probe), "
        '"auto" (the probe keeps the better on validation)')
    coverage: float = opt(0.9, "input",
        help="task regression: the share of new targets the prediction intervals are to hold (split conformal "
             "prediction on the validation predictions)")
    label_sep: str = opt(";", "input",
        help='task multilabel: what separates the labels in the label column ("earn;acq")')
    encoding: str = opt("auto", "input",
        help='text tables: "auto" reads UTF-8 and detects another encoding (with a warning), or a codec name')
    header: bool = opt(True, "input", help="tables: the first row holds column names")
    image_size: int | None = opt(None, "input", help="image backbones: input size (default: the backbone's)")
    crop_pct: float | None = opt(None, "input",
        help="images: the share of the resized image the centre crop keeps (the image is resized to image_size / "
             "crop_pct, then cropped to image_size); None: the backbone's (0.875 for the packaged EfficientNet). "
             "1.0 keeps the whole image: for small, tightly framed images whose edges matter (Fashion-MNIST "
             "sleeves)")
    max_tokens: int | None = opt(None, "input",
        help="texts: the most tokens of a text the backbone reads, longer ones are cut (None: the strategy's "
             "default, 128 for fine-tuning and LoRA, and for the probe the backbone's own limit, 256 for MiniLM; "
             "never above the backbone's limit). Fine-tuning's time grows with it: long documents cost about 2x at "
             "256")

    # -- runtime
    runtime: str = opt("auto", "runtime", choices=("auto", "onnx", "int8", "torch"),
        help='frozen-feature inference: "auto" (ONNX Runtime when it passes parity), "torch", or "int8" (opt-in; '
             "images are calibrated on up to 64 of the training images, the ranges saved with the model)")
    cache_activations: str = opt("auto", "runtime", choices=("auto", "on", "off"),
        help="partial fine-tuning: run the frozen prefix once and train the top groups on cached activations. "
             '"auto": when nothing needs per-epoch inputs (text, or images with augment=False); "on": also turns '
             'image augmentation off; "off": never.')

    # -- logging
    log_to: str | None = opt(None, "logging", choices=("csv", "tensorboard", "mlflow"),
        help='experiment tracking: "csv", "tensorboard" or "mlflow" (Lightning loggers)')
    log_dir: str | None = opt(None, "logging", help="where the logs go (the CLI uses <model dir>/logs)")

    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from .options import check_types

        check_types(self)  # a ConfigError naming the option, never a TypeError from a comparison below
        for f in dataclasses.fields(self):
            choices, value = f.metadata.get("choices"), getattr(self, f.name)
            if choices and value not in choices and not (value is None and f.default is None):
                raise ConfigError(f"{f.name} must be one of {' | '.join(choices)}, got {str(value)[:60]!r}")
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
            (self.image_size is None or 16 <= self.image_size <= 1024, "image_size must be in [16, 1024]"),
            (self.crop_pct is None or 0.05 <= self.crop_pct <= 1.0, "crop_pct must be in [0.05, 1]"),
            (self.max_tokens is None or 8 <= self.max_tokens <= 8192, "max_tokens must be in [8, 8192]"),
            (self.lr is None or self.lr > 0, "lr must be positive"),
            (self.head_lr > 0, "head_lr must be positive"),
            (self.probe_c is None or self.probe_c > 0, "probe_c must be positive"),
            (0.0 <= self.momentum < 1.0, "momentum must be in [0, 1)"),
            (self.decay_beta is None or self.decay_beta >= 0, "decay_beta must be >= 0"),
            (0.0 <= self.label_smoothing < 1.0, "label_smoothing must be in [0, 1)"),
            (self.grad_clip is None or self.grad_clip > 0, "grad_clip must be positive"),
            (0.0 <= self.ema < 1.0, "ema must be in [0, 1) (a decay such as 0.999; 0 = off)"),
            (0.0 < self.layer_decay <= 1.0, "layer_decay must be in (0, 1] (1 = off)"),
            (self.l2sp >= 0, "l2sp must be >= 0"),
            (self.pair_iterations >= 1, "pair_iterations must be >= 1"),
            (self.label_template is None or self.label_template.count("{}") == 1,
             "label_template must hold '{}' exactly once, where the class name goes (e.g. 'This sentence is {}.')"),
            (self.lora_r >= 1 and self.lora_alpha > 0 and 0 <= self.lora_dropout < 1,
             "lora_r must be >= 1, lora_alpha > 0, lora_dropout in [0, 1)"),
            (self.imbalance_ratio >= 1, "imbalance_ratio must be >= 1"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (self.extend_vocab_min_count >= 1, "extend_vocab_min_count must be >= 1"),
            (1 <= self.extend_vocab_ngram <= 8, "extend_vocab_ngram must be 1 (characters only) to 8"),
            (self.extend_vocab_word_min_count >= 1, "extend_vocab_word_min_count must be >= 1"),
            (self.new_token_lr is None or self.new_token_lr > 0, "new_token_lr must be > 0"),
            (self.mixup >= 0 and self.cutmix >= 0, "mixup and cutmix alphas must be >= 0"),
            (0.0 <= self.text_noise < 1.0, "text_noise must be in [0, 1)"),
            (self.adv_eps is None or self.adv_eps > 0, "adv_eps must be positive"),
            (self.adv_steps >= 1, "adv_steps must be >= 1"),
            (0.0 < self.pseudo_threshold <= 1.0, "pseudo_threshold must be in (0, 1]"),
            (self.pseudo_max is None or self.pseudo_max >= 1, "pseudo_max must be >= 1 (or unset: all)"),
            (bool(self.label_sep), "label_sep must be a non-empty separator such as ';' or '|'"),
            (0.0 < self.coverage < 1.0, "coverage must be in (0, 1), e.g. 0.9 for 90 % prediction intervals"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)

    def check(self, modality: str | None = None, *, unlabeled: bool = False) -> None:
        """Every rule between options, and between options and the data (its modality, unlabeled data given):
        run before any data is read (the rules: config_rules.py). The single-option rules ran when the FitConfig
        was made."""
        from .config_rules import broken_rules

        for broken, msg in broken_rules(self, modality, unlabeled):
            if broken:
                raise ConfigError(msg)

    def backbone_names(self, default: str | None = None) -> list[str]:
        """The backbones to train: each of `ensemble_backbones`, else `backbone` (or `default`)."""
        names = [b.strip() for b in (self.ensemble_backbones or "").split(",") if b.strip()]
        return names or [str(self.backbone or default)]

    def augments_images(self, strategy_default: bool) -> bool:
        """Whether training varies image inputs by random crops/flips: `augment` when given, else the strategy's
        default (off for fine-tuning, on for contrastive pairs), or on for an `augment_policy` beyond "basic"."""
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
        """Options as saved in a model directory's config.json ("fit"), each of its field's type (else ConfigError)."""
        from .options import check_known

        if not isinstance(d, dict):
            raise ConfigError(f"options must be a JSON object, got {type(d).__name__}")
        check_known(d)
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)
