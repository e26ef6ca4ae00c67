"""Loading a model directory and predicting run no training code: Lightning and the strategies' modules are
imported only when something is trained (issue 22: the fitted model apart from its fitting)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import text_frame
from fmadapt import TextClassifier
from fmadapt import strategies as base  # (the registry: names, modules, trains_backbone)

TESTS = Path(__file__).resolve().parent


def predict_in_a_fresh_process(model_dir, data) -> tuple[list[str], list[str]]:
    """`load_model(model_dir).predict(data)` in a new interpreter: (its predictions as strings, the training-side
    modules it imported: Lightning, scikit-learn, fmadapt.adapt/train/fitting/auto)."""
    code = (
        f"import json, sys\nsys.path.insert(0, {str(TESTS)!r})\nimport conftest  # registers tiny-bert\n"
        "from fmadapt import load_model\n"
        f"pred = [str(p) for p in load_model({str(model_dir)!r}).predict({data!r})]\n"
        "print(json.dumps({'pred': pred, 'loaded': sorted(m for m in sys.modules if m.split('.')[0] in "
        "('lightning', 'pytorch_lightning', 'sklearn') or m.startswith(('fmadapt.adapt', 'fmadapt.train', "
        "'fmadapt.fitting', 'fmadapt.auto')))}))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    return got["pred"], got["loaded"]


def test_the_builtin_table_agrees_with_the_strategy_classes():
    for name, (module, trains) in base.BUILTIN.items():
        strategy = base.get_strategy(name)
        assert type(strategy).__module__ == f"fmadapt.adapt.{module}"
        assert strategy.trains_backbone is trains and base.trains_backbone(name) is trains
    with pytest.raises(Exception, match="unknown strategy 'nope'; available: contrastive, federated, "
                       "federated-finetune, federated-lora, finetune"):
        base.check_strategy("nope")


@pytest.mark.integration
@pytest.mark.parametrize("strategy", ["probe", "finetune", "lora"])
def test_load_and_predict_import_neither_lightning_nor_a_strategy(tmp_path, strategy):
    df = text_frame(8)
    clf = TextClassifier(backbone="tiny-bert", strategy=strategy, epochs=1, batch_size=8, seed=0).fit(df)
    out = clf.save_pretrained(tmp_path / "m", report=False)
    texts = list(df["text"][:5])
    pred, loaded = predict_in_a_fresh_process(out, texts)
    assert pred == [str(p) for p in clf.predict(texts)]
    # (issue 22's check: no Lightning, no fmadapt.adapt module, no training module, no fit pipeline; issue 21's
    # start-up: no scikit-learn, which only metrics and n-gram models need. conftest's tiny backbones import timm
    # here; with the packaged MiniLM a text model imports no timm either: `python -X importtime`)
    assert loaded == [], loaded


@pytest.mark.integration
def test_lightning_stays_quiet_when_a_strategy_imports_it_later():
    """Lightning sets its loggers to INFO when first imported: now that this happens on a strategy's first use
    rather than with the estimators, the strategy registry quiets them again (ERROR = 40)."""
    code = ("import logging, sys, fmadapt\nfrom fmadapt import TextClassifier\n"
            "before = 'lightning' in sys.modules\nfrom fmadapt.adapt import get_strategy\nget_strategy('finetune')\n"
            "print(before, 'lightning' in sys.modules, "
            "[logging.getLogger(n).level for n in ('lightning.pytorch', 'lightning.fabric')])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == "False True [40, 40]"
