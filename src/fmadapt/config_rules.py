"""The rules between FitConfig's options, and between its options and the data (the modality, unlabeled data
given): FitConfig.check raises the first one broken, before any data is read. The rules of one option alone
(ranges, choices) are in FitConfig.__post_init__."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import FitConfig

#: the strategies that train multi-label and regression models (task multilabel, regression) so far
TASK_STRATEGIES = ("probe", "finetune", "progressive", "l2sp", "lora", "auto")
#: several targets: a head each on a frozen backbone, or one backbone fine-tuned for all of them
JOINT_STRATEGIES = ("probe", "finetune", "progressive", "l2sp", "lora")


def race_multiples(text: str) -> list[float]:
    """The multiples of `lr_race`, "0.5,1,2" (commas and/or spaces); ValueError for a word that is no number."""
    return [float(x) for x in re.split(r"[,\s]+", text.strip()) if x]


def broken_rules(cfg: FitConfig, modality: str | None, unlabeled: bool) -> list[tuple[bool, str]]:
    """(broken?, message) of every rule, in the order they are checked."""
    rules: list[tuple[bool, str]] = []
    if modality is not None:
        other = "texts" if modality != "text" else "images"
        rules += [
            (cfg.tta and modality != "image",
             "tta (averaging over mirror images) is for images; texts have no mirror image"),
            (cfg.crop_pct is not None and modality != "image",
             "crop_pct (the share of a resized image the centre crop keeps) is for images"),
            (cfg.max_tokens is not None and modality != "text",
             "max_tokens (the most tokens of a text the backbone reads) is for texts"),
            (cfg.label_template is not None and modality != "text",
             "label_template (class names as prior knowledge) is for texts: the image backbones have no text "
             "encoder to embed the names with"),
            (cfg.adversarial != "none" and modality != "audio"
             and (cfg.adversarial == "embedding") != (modality == "text"),
             f"adversarial '{cfg.adversarial}' is for {other}: use "
             + ("'fgsm' or 'pgd'" if modality == "image" else "'embedding'") + f" on {modality}s"),
        ]
    if cfg.split_groups is not None:
        import re

        try:
            re.compile(cfg.split_groups)
            bad = ""
        except re.error as e:
            bad = str(e)
        rules += [(bool(bad), f"split_groups {cfg.split_groups!r} is not a regular expression ({bad})"),
                  (modality == "text", "split_groups groups files by their names: it is for image and sound data")]
    if modality == "audio":  # (what the audio path does not do yet is refused, not silently ignored)
        rules += [
            (cfg.image_size is not None, "image_size is for images"),
            (bool(cfg.mixup or cfg.cutmix), "mixup and cutmix are for images"),
            (cfg.augment_policy != "basic", "augment_policy chooses image augmentations; sounds have one (augment)"),
            (cfg.adversarial != "none", "adversarial training is for images and texts for now, not sounds"),
            (cfg.features is not None or cfg.targets is not None, "features and targets are for text tables"),
        ]
    if cfg.task != "classification":
        t = cfg.task
        rules += [
            (cfg.strategy not in TASK_STRATEGIES,
             f"task {t} trains with strategy {' | '.join(TASK_STRATEGIES)} for now, not {cfg.strategy!r}"),
            (cfg.label_smoothing > 0, "label_smoothing is for single-label classification (cross-entropy)"),
            (cfg.adversarial != "none", "adversarial training is for single-label classification for now"),
            (cfg.label_template is not None, "label_template is for single-label classification"),
            (unlabeled, f"task {t} does not take unlabeled data (self-training) yet"),
            (t == "regression" and cfg.select_by == "accuracy",
             "select_by 'accuracy' is for classification; task regression chooses epochs by RMSE ('metric') "
             "or 'loss'"),
        ]
    if cfg.features:
        rules += [
            (modality == "image", "features (table columns beside the text) is for text tables"),
            (cfg.strategy not in (*JOINT_STRATEGIES, "auto"),
             f"features trains with strategy {' | '.join((*JOINT_STRATEGIES, 'auto'))} for now, not {cfg.strategy!r}"),
            (cfg.label_template is not None, "features does not combine with label_template"),
            (unlabeled, "features does not take unlabeled data (self-training) yet"),
            (cfg.table_head == "stack" and cfg.strategy != "probe",
             "table_head 'stack' (boosted trees) is a probe's head: fine-tuning trains a linear table head"),
            (cfg.table_head == "stack" and cfg.task == "multilabel",
             "table_head 'stack' is for classification and regression; multi-label heads read the table linearly"),
        ]
    elif cfg.table_head != "auto":
        rules.append((True, f"table_head {cfg.table_head!r} says how table columns are read: give them (features)"))
    if cfg.targets:
        from .tasks.targets import parse_weights, target_specs

        try:
            specs = target_specs(cfg.targets, cfg.task)
            parse_weights(cfg.target_weights, [c for c, _ in specs])
            spec_error = ""
        except ValueError as e:
            spec_error = str(e)
        rules += [
            (bool(spec_error), f"targets: {spec_error}"),
            (modality == "image", "targets (several label columns) is for text tables"),
            (cfg.label_col is not None, "give the label columns as targets or as label_col, not both"),
            (cfg.strategy not in (*JOINT_STRATEGIES, "auto"),
             f"several targets train with strategy {' | '.join((*JOINT_STRATEGIES, 'auto'))} for now, not "
             f"{cfg.strategy!r} "
             "(or fit one model per target with a single label column)"),

            (cfg.target_weights is not None and cfg.strategy == "probe",
             "target_weights weigh the targets' losses when one backbone is fine-tuned for all of them: the probe "
             "fits each target's head on its own"),
            (cfg.label_template is not None, "several targets do not combine with label_template"),
            (unlabeled, "several targets do not take unlabeled data (self-training) yet"),
        ]
    if cfg.lr_race is not None:
        try:
            mults = race_multiples(cfg.lr_race)
        except ValueError:
            mults = []
        rules += [
            (len(mults) < 2 or not all(m > 0 for m in mults),
             f"lr_race {cfg.lr_race!r}: give two or more positive multiples of the default rate, e.g. '0.5,1,2'"),
            (cfg.lr is not None, "lr_race chooses the learning rate: do not give lr as well"),
            (not 0 < cfg.race_fraction <= 1, "race_fraction must be in (0, 1]"),
        ]
    if cfg.target_weights is not None and not cfg.targets:
        rules.append((True, "target_weights weigh several targets' losses: name the targets (targets, or --label "
                            "repeated)"))
    names = cfg.backbone_names()
    fresh = cfg.text_noise or cfg.mixup or cfg.cutmix or cfg.adversarial != "none"
    rules += [
        (cfg.strategy == "auto" and (cfg.ensemble > 1 or len(names) > 1),
         "strategy 'auto' chooses one model: it does not combine with ensembles"),
        (cfg.ensemble > 1 and cfg.strategy == "probe" and len(names) == 1,
         "a probe is deterministic: an ensemble over seeds would repeat one model; ensemble over backbones "
         "(ensemble_backbones) or use a fine-tuning strategy"),
        (cfg.adversarial != "none" and bool(cfg.mixup or cfg.cutmix),
         "adversarial training and mixup/cutmix do not combine; choose one"),
        (cfg.cache_activations == "on" and bool(fresh),
         "cache_activations 'on' trains on fixed activations: text_noise, mixup, cutmix and adversarial "
         "training need the inputs every epoch; use cache_activations 'auto' or 'off'"),
        (cfg.strategy.startswith("federated") and (cfg.task != "classification" or bool(cfg.features or cfg.targets)
                                          or cfg.ensemble > 1 or len(names) > 1 or unlabeled),
         f"strategy {cfg.strategy!r} trains one single-label classifier on backbone features so far: no multilabel or "
         "regression task, table features, several targets, ensembles or unlabeled data"),
        (unlabeled and cfg.refit_full,
         "unlabeled data (self-training) does not combine with refit_full: the student is chosen on the "
         "validation split, which refit_full would train on"),
    ]
    return rules
