"""Continued self-supervised pretraining (fmadapt/pretrain/, `fmadapt pretrain`): masked-LM and SimCSE on a tiny
randomly-initialised BERT, the backbone directory it writes, the guard, and the errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fmadapt.errors import ConfigError, DataError
from fmadapt.pretrain import pretrain, read_texts
from fmadapt.pretrain.config import PretrainConfig, assignments

ZH = ["今天的新闻很好看", "股票市场大幅上涨", "球队赢得了比赛", "新的电影上映了", "天气预报说明天下雨"]


def _texts(n: int = 60) -> list[str]:
    en = ["the match ended in a draw", "stocks rose sharply today", "a new film opens this week",
          "rain is expected tomorrow", "the team won the final"]
    return [(en + ZH)[i % 10] + f" {i % 7}" for i in range(n)]


def _features(bb, texts):
    from fmadapt.pretrain.guard import _features

    return _features(bb, texts)


def test_mlm_head_is_tied_and_its_masked_only_loss_is_the_full_one():
    from transformers import DataCollatorForLanguageModeling

    from fmadapt.backbones.registry import create_backbone
    from fmadapt.pretrain.text import masked_lm, mlm_loss

    bb = create_backbone("tiny-bert")
    model = masked_lm(bb).eval()
    # the decoder is the embedding matrix itself, and the wrapper trains the backbone's own encoder
    assert model.get_output_embeddings().weight is bb.model.get_input_embeddings().weight
    assert getattr(model, model.base_model_prefix) is bb.model
    torch.manual_seed(0)
    enc = bb.tokenizer(_texts(8), truncation=True, max_length=32, return_special_tokens_mask=True)
    batch = DataCollatorForLanguageModeling(bb.tokenizer, mlm_probability=0.3)(
        [{k: enc[k][i] for k in enc} for i in range(8)])
    full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    fast = mlm_loss(model, model.cls, bb.model, batch)
    assert torch.allclose(full, fast, atol=1e-5) and (batch["labels"] != -100).sum() > 0


def test_mlm_with_new_tokens_writes_a_backbone_folder_that_loads_tokenizes_and_embeds_as_trained(tmp_path):
    from fmadapt.backbones.registry import create_backbone

    texts = _texts()
    rec = pretrain(texts, tmp_path / "bb", "tiny-bert", {"epochs": 4, "batch_size": 8, "lr": 1e-3,
                                                         "extend_vocab": True}, progress=False)
    run, vocab = rec["run"], rec["vocabulary"]
    assert run["steps"] == run["planned_steps"] and not run["stopped_by_time_budget"]
    assert run["loss_last"] < run["loss_first"]  # (ten sentences seen four times: it learns to fill their gaps)
    # tiny-bert's vocabulary (MiniLM's) lacks some of these characters: added, then known
    assert vocab["added_tokens"] > 0 and vocab["unk_rate"] > 0 and vocab["unk_rate_after"] == 0
    assert rec["data"]["texts"] == 60 and rec["data"]["held_out"] == 6 and rec["data"]["trained_on"] == 54
    assert set(rec["guard"]["before"]) == {"alignment", "uniformity"} and "verdict" in rec["guard"]
    saved = json.loads((tmp_path / "bb" / "pretrain.json").read_text())
    assert saved["source_backbone"]["name"] == "tiny-bert" and len(saved["data"]["fingerprint"]) == 64
    loaded = create_backbone(str(tmp_path / "bb"))
    original = create_backbone("tiny-bert")
    assert len(loaded.tokenizer) == len(original.tokenizer) + vocab["added_tokens"]
    assert loaded.tokenizer.unk_token_id not in loaded.tokenizer(ZH[0])["input_ids"]
    assert len(loaded.cfg.sha256) == 64  # (a transformers folder is identified by its weights: features cache)
    assert loaded.cfg.pooling == original.cfg.pooling and loaded.cfg.normalize == original.cfg.normalize
    assert not np.allclose(_features(loaded, texts[:4]), _features(original, texts[:4]), atol=1e-4)


def test_simcse_learns_and_the_guard_probes_labeled_data_before_and_after(tmp_path):
    from conftest import text_frame

    df = text_frame(20)
    df.to_csv(tmp_path / "labeled.csv", index=False)
    rec = pretrain(list(df["text"]) * 2, tmp_path / "bb", "tiny-bert", {"method": "simcse", "epochs": 3,
                                                                        "batch_size": 16}, labeled=tmp_path /
                   "labeled.csv", progress=False)
    assert rec["run"]["loss_last"] < rec["run"]["loss_first"]
    g = rec["guard"]
    assert 0 <= g["before"]["probe_accuracy"] <= 1 and 0 <= g["after"]["probe_accuracy"] <= 1
    assert "quick probe" in g["verdict"] and g["on"].endswith("labeled.csv")


def test_a_pretrained_folder_is_a_backbone_for_fit(tmp_path, text_csv):
    from fmadapt import TextClassifier

    pretrain(_texts(), tmp_path / "bb", "tiny-bert", {"epochs": 1, "batch_size": 8}, progress=False)
    clf = TextClassifier(backbone=str(tmp_path / "bb"), progress=False).fit(str(text_csv))
    assert clf.config_.backbone == str(tmp_path / "bb") and len(clf.predict(["a text"])) == 1


def test_unlabeled_text_files_are_one_text_per_line(tmp_path):
    from fmadapt.config import FitConfig
    from fmadapt.data.readers import read_unlabeled

    f = tmp_path / "u.txt"
    f.write_text("\ufefffirst, with a comma\n\nsecond \"quoted\"\n  \nthird\n", encoding="utf-8")
    texts, info = read_texts(f)
    assert texts == ["first, with a comma", 'second "quoted"', "third"] and info["empty"] == 2
    ex = read_unlabeled("text", str(f), FitConfig())
    assert ex.inputs[0] == "first, with a comma" and ex.ids == ["line 1", "line 3", "line 5"] and ex.warnings
    (tmp_path / "bad.txt").write_bytes("标题".encode("gb18030") + b"\xff\n")
    with pytest.raises(DataError, match="bad.txt: not valid"):
        read_texts(tmp_path / "bad.txt")


def test_what_pretrain_refuses_it_refuses_before_training(tmp_path):
    for bad, words in [({"method": "mae"}, "method must be one of"), ({"time_budget": "soon"}, "time_budget"),
                       ({"batch_size": 1}, "batch_size"), ({"epoch": 2}, "unknown option"),
                       ({"lr": "fast"}, "pretrain option lr")]:
        with pytest.raises(ConfigError, match=words):
            PretrainConfig.from_dict(bad)
    assert assignments(["lr=5e-5", "max_inputs=none", "extend_vocab=true"]) == {
        "lr": 5e-5, "max_inputs": None, "extend_vocab": True}
    with pytest.raises(ConfigError, match="method 'mlm' does not apply to an image backbone .one of simclr."):
        pretrain(_texts(), tmp_path / "img", "tiny-cnn", {"method": "mlm"}, progress=False)
    with pytest.raises(ConfigError, match="method 'simclr' does not apply to a text backbone"):
        pretrain(_texts(), tmp_path / "txt", "tiny-bert", {"method": "simclr"}, progress=False)
    with pytest.raises(DataError, match="0 readable image.s.: pretraining needs unlabeled images .60 unreadable"):
        pretrain(_texts(), tmp_path / "img", "tiny-cnn", progress=False)  # (texts given to an image backbone)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        pretrain(_texts(), tmp_path / "full", "tiny-bert", progress=False)
    with pytest.raises(DataError, match="1 non-empty text"):
        pretrain(["only one", "  "], tmp_path / "one", "tiny-bert", progress=False)


def test_pretrain_command(tmp_path):
    from typer.testing import CliRunner

    from fmadapt.cli import app

    (tmp_path / "u.txt").write_text("\n".join(_texts(40)), encoding="utf-8")
    runner = CliRunner()
    bad = runner.invoke(app, ["pretrain", str(tmp_path / "u.txt"), "--out", str(tmp_path / "x"), "--set", "lr=0"])
    assert bad.exit_code == 2 and "lr must be" in bad.output and not (tmp_path / "x").exists()
    r = runner.invoke(app, ["pretrain", str(tmp_path / "u.txt"), "--out", str(tmp_path / "bb"), "--backbone",
                            "tiny-bert", "--method", "simcse", "--time-budget", "1h", "--set", "batch_size=8",
                            "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["method"] == "simcse" and out["run"]["steps"] == 5 and out["data"]["trained_on"] == 36
    assert (tmp_path / "bb" / "model.safetensors").is_file() and (tmp_path / "bb" / "modules.json").is_file()


def test_fit_pretrain_continues_the_backbone_on_unlabeled_texts_first_and_reuses_it(tmp_path, text_csv):
    from typer.testing import CliRunner

    from fmadapt import load_model
    from fmadapt.cli import app

    (tmp_path / "u.txt").write_text("\n".join(_texts(40)), encoding="utf-8")
    runner = CliRunner()
    base = ["fit", str(text_csv), "--backbone", "tiny-bert", "--unlabeled", str(tmp_path / "u.txt"), "--report",
            "off"]
    no = runner.invoke(app, ["fit", str(text_csv), "--pretrain", "--out", str(tmp_path / "x"), "--report", "off"])
    assert no.exit_code == 2 and "give --unlabeled" in no.output
    r = runner.invoke(app, [*base, "--pretrain", "--out", str(tmp_path / "m"), "--json"])
    assert r.exit_code == 0, r.output
    backbone = tmp_path / "m" / "pretrained-backbone"
    record = json.loads((backbone / "pretrain.json").read_text())
    assert record["source_backbone"]["name"] == "tiny-bert" and record["data"]["texts"] == 40
    assert record["data"]["source"] == str(tmp_path / "u.txt")  # (where the unlabeled texts came from)
    model = load_model(tmp_path / "m")
    assert model.config_.backbone == str(backbone.resolve()) and len(model.predict(["a text"])) == 1
    assert "self_training" not in json.dumps(model.history_)  # (the texts served pretraining only)
    again = runner.invoke(app, [*base, "--pretrain", "--out", str(tmp_path / "m")])
    assert again.exit_code == 0 and "pretrained backbone reused" in again.output


def test_new_tokens_mode_teaches_the_added_rows_and_leaves_everything_else_exactly_as_it_was(tmp_path):
    from safetensors.torch import load_file

    from fmadapt.backbones.registry import create_backbone

    texts = _texts()
    with pytest.raises(ConfigError, match="trains the tokens --extend-vocab adds"):
        PretrainConfig(trainable="new-tokens")
    rec = pretrain(texts, tmp_path / "bb", "tiny-bert", {"epochs": 2, "batch_size": 8, "extend_vocab": True,
                                                         "trainable": "new-tokens"}, progress=False)
    added = rec["vocabulary"]["added_tokens"]
    before = create_backbone("tiny-bert").model.state_dict()
    after = load_file(str(tmp_path / "bb" / "model.safetensors"))
    key = next(k for k in after if k.endswith("word_embeddings.weight"))
    old = before[key].shape[0]
    assert after[key].shape[0] == old + added and torch.equal(after[key][:old], before[key])
    new_rows = after[key][old:]
    assert not torch.allclose(new_rows, new_rows.mean(0).expand_as(new_rows))  # (they all started at the mean)
    assert all(torch.equal(after[k], before[k]) for k in after if k != key and k in before)


def test_auto_with_unlabeled_texts_tries_continued_pretraining_and_judges_it_on_validation(tmp_path, text_csv):
    import shutil
    from pathlib import Path

    from fmadapt import TextClassifier, load_model

    def search():
        return TextClassifier(backbone="tiny-bert", strategy="auto", time_budget="200s", auto_ngram=False, epochs=1,
                              progress=False).fit(str(text_csv), unlabeled=_texts())

    clf = search()
    auto = clf.history_["auto"]
    rows = {r["candidate"]: r for r in auto["candidates"]}
    assert rows["continued pretraining"]["status"].startswith("done: mlm, 2 steps on 60 unlabeled inputs")
    pre = auto["pretrain"]
    assert Path(pre["folder"]).is_dir() and not pre["reused"] and pre["unlabeled"] == 60
    assert pre["budget_seconds"] == 60.0  # (30 % of the budget)
    again_rows = [r for r in auto["candidates"] if r["candidate"].endswith(", pretrained backbone")]
    assert len(again_rows) == 2 and again_rows[0]["strategy"] == "probe"  # (then the leading fine-tuning one)
    assert all(r["status"] == "ran" for r in again_rows)
    best = max(r["val_score"] for r in auto["candidates"] if r["status"] == "ran")
    assert rows[auto["winner"]]["val_score"] == best
    # then the leader labels the unlabeled texts and teaches a self-trained student (a candidate like the others)
    student = rows[f"{auto['self_training']['teacher']} + self-training"]
    assert auto["self_training"]["labeled_by_teacher"] == 60
    assert student["status"] == "ran" or "no prediction that confident" in student["status"]
    # a second search on the same texts reuses the pretrained backbone
    assert search().history_["auto"]["pretrain"] == {**pre, "reused": True}
    # a model whose backbone auto pretrained carries its own copy: it does not depend on the cache
    model = TextClassifier(backbone=pre["folder"], progress=False).fit(str(text_csv))
    out = model.save_pretrained(tmp_path / "m")
    assert (out / "pretrained-backbone" / "pretrain.json").is_file()
    moved = tmp_path / "moved"
    out.rename(moved)
    shutil.rmtree(pre["folder"])
    assert load_model(moved).model_.backbone.cfg.name == str((moved / "pretrained-backbone").resolve())


def test_the_guards_quick_probe_is_cross_validated_on_a_stratified_sample(monkeypatch):
    from fmadapt.pretrain import guard

    rng = np.random.default_rng(0)
    labels = [str(i % 3) for i in range(3000)]
    idx, folds = guard.probe_split(labels, seed=0)
    assert len(idx) == guard.PROBE_MAX and sorted(set(folds)) == list(range(guard.FOLDS))
    for f in range(guard.FOLDS):  # (stratified: every fold holds every class, in proportion)
        counts = np.unique(np.asarray(labels)[idx][folds == f], return_counts=True)[1]
        assert len(counts) == 3 and counts.max() - counts.min() <= 1
    centres = rng.normal(0, 1, (3, 8))
    feats = {str(i): centres[i % 3] + rng.normal(0, 0.3, 8) for i in range(3000)}
    monkeypatch.setattr(guard, "_features", lambda bb, inputs: np.stack([feats[t] for t in inputs]))
    inputs = [str(i) for i in range(3000)]
    assert guard.quick_probe(None, inputs, labels, (idx, folds)) > 0.99
    shuffled = list(rng.permutation(labels))
    assert guard.quick_probe(None, inputs, shuffled, (idx, folds)) < 0.45  # (chance: 1/3)


def test_tsdae_decoder_is_tied_to_the_encoder_causal_and_reads_only_the_sentence_embedding(tmp_path):
    from fmadapt.backbones.registry import create_backbone
    from fmadapt.pretrain.text import tsdae_decoder

    bb = create_backbone("tiny-bert")
    dec = tsdae_decoder(bb).eval()
    base = getattr(dec, dec.base_model_prefix)
    assert dec.get_output_embeddings().weight is bb.model.get_input_embeddings().weight
    enc_layer, dec_layer = bb.model.encoder.layer[0], base.encoder.layer[0]
    assert dec_layer.attention is enc_layer.attention and dec_layer.output is enc_layer.output
    assert not any(p is q for p in dec_layer.crossattention.parameters() for q in bb.model.parameters())
    torch.manual_seed(0)
    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102]])
    z = torch.randn(1, 1, 32)
    logits = dec(input_ids=ids, attention_mask=torch.ones_like(ids), encoder_hidden_states=z).logits
    later = ids.clone()
    later[0, -1] = 2000  # (changing the last token changes no earlier position's prediction: causal)
    again = dec(input_ids=later, attention_mask=torch.ones_like(ids), encoder_hidden_states=z).logits
    assert torch.allclose(logits[0, :-1], again[0, :-1], atol=1e-5)
    other = dec(input_ids=ids, attention_mask=torch.ones_like(ids), encoder_hidden_states=z + 1).logits
    assert not torch.allclose(logits, other, atol=1e-4)  # (it reads the sentence embedding)
    rec = pretrain(_texts(), tmp_path / "bb", "tiny-bert", {"method": "tsdae", "epochs": 4, "batch_size": 8,
                                                             "lr": 1e-3}, progress=False)
    assert rec["method"] == "tsdae" and rec["run"]["loss_last"] < rec["run"]["loss_first"]
    saved = json.loads((tmp_path / "bb" / "config.json").read_text())
    assert not saved.get("is_decoder") and not saved.get("add_cross_attention")  # (the encoder alone is saved)
    assert create_backbone(str(tmp_path / "bb")).cfg.embed_dim == 32


def test_only_a_backbone_folder_is_recorded_relative_to_the_model(tmp_path, monkeypatch, text_csv):
    from fmadapt import TextClassifier
    from fmadapt.backbones.registry import backbone_record

    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny-bert").mkdir()  # (a folder named like the registered backbone: the registry wins)
    assert "model_relative_dir" not in backbone_record(tmp_path, {"name": "tiny-bert", "extra": {}})["extra"]
    pretrain(_texts(), tmp_path / "m" / "bb", "tiny-bert", {"epochs": 1, "batch_size": 8}, progress=False)
    clf = TextClassifier(backbone=str(tmp_path / "m" / "bb"), progress=False).fit(str(text_csv))
    saved = json.loads((clf.save_pretrained(tmp_path / "m") / "backbone.json").read_text())
    assert saved["extra"]["model_relative_dir"] == "bb"


def test_tsdae_refuses_an_encoder_without_a_decoder_form_with_a_message():
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertModel

    from fmadapt.backbones.base import BackboneCfg
    from fmadapt.backbones.packaged import minilm_l6_path
    from fmadapt.backbones.text import HFTextBackbone
    from fmadapt.pretrain.text import tsdae_decoder

    tok = AutoTokenizer.from_pretrained(str(minilm_l6_path()))
    model = DistilBertModel(DistilBertConfig(vocab_size=tok.vocab_size, dim=32, n_layers=1, n_heads=2,
                                             hidden_dim=64, max_position_embeddings=64))
    bb = HFTextBackbone(model, tok, BackboneCfg(name="tiny-distilbert", modality="text", embed_dim=32,
                                                pretrained=False, max_tokens=64))
    with pytest.raises(ConfigError, match="tiny-distilbert.*--method mlm or simcse"):
        tsdae_decoder(bb)
