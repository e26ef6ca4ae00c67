"""Vocabulary coverage report and --extend-vocab (MiniLM's tokenizer knows few CJK characters)."""

import json

import numpy as np
import pandas as pd
import pytest

from fmadapt import ConfigError, TextClassifier, load_model
from fmadapt.backbones import create_backbone
from fmadapt.backbones.vocab import extend_vocabulary, frequent_words, tokens_to_add, vocabulary_coverage
from fmadapt.data.cache import backbone_key

SPORT = ["篮球比赛今晚开始", "足球队赢得冠军", "球员转会新球队", "篮球明星得分新高", "足球联赛积分榜"]
MONEY = ["股市今日大涨", "银行利率下调", "基金收益创新高", "股票市场震荡", "银行发布财报"]


def chinese_frame(n: int = 12) -> pd.DataFrame:
    rows = [{"text": SPORT[i % 5] + str(i), "label": "sport"} for i in range(n)]
    rows += [{"text": MONEY[i % 5] + str(i), "label": "money"} for i in range(n)]
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0).reset_index(drop=True)


def test_coverage_finds_the_unknown_characters():
    tok = create_backbone("tiny-bert").tokenizer
    zh = vocabulary_coverage(tok, SPORT + MONEY)
    en = vocabulary_coverage(tok, ["a perfectly ordinary english sentence", "another one"])
    assert zh["unk_rate"] > 0.3 and en["unk_rate"] == 0.0
    missing = dict(zh["missing"])
    assert all(len(p) == 1 for p in missing) and missing.get("篮", 0) >= 2
    assert zh["texts_with_unk"] == 10


def test_tokens_to_add_respects_min_count_and_is_deterministic():
    tok = create_backbone("tiny-bert").tokenizer
    a = tokens_to_add(tok, SPORT + MONEY, min_count=2)
    assert a == tokens_to_add(tok, SPORT + MONEY, min_count=2)
    counts = vocabulary_coverage(tok, SPORT + MONEY)["missing_counts"]
    assert set(a) == {p for p, c in counts.items() if c >= 2}


def test_frequent_words_count_cjk_runs_only():
    texts = ["篮球比赛 NBA篮球", "篮球明星", "中国篮球队", "ab篮c球"]
    # 篮球 x4 (the split 篮c球 is no run); 球比/比赛/球明/明星/中国/国篮/球队 once; nothing Latin
    assert frequent_words(texts, longest=2, min_count=2) == ["篮球"]
    three = frequent_words(texts, longest=3, min_count=1)
    assert "中国篮" in three and "国篮球" in three and not any(len(w) > 3 for w in three)
    assert three[0] == "篮球" and all(all("\u4e00" <= c <= "\u9fff" for c in w) for w in three)
    assert frequent_words(texts, longest=3, min_count=1) == three  # deterministic
    assert frequent_words(["篮球"] * 4, longest=2, min_count=5) == []


def test_words_are_added_after_the_characters_and_tokenize_as_one():
    bb = create_backbone("tiny-bert")
    texts = SPORT + MONEY + ["篮球新闻", "银行新闻"]
    chars = tokens_to_add(bb.tokenizer, texts, min_count=1)
    both = tokens_to_add(bb.tokenizer, texts, min_count=1, ngram=2, word_min_count=2)
    words = both[len(chars):]
    assert both[:len(chars)] == chars and {"篮球", "银行", "新闻"} <= set(words)
    assert all(len(w) == 2 for w in words) and "股市" not in words  # seen once
    extend_vocabulary(bb, both)
    ids = bb.tokenizer("篮球股市新闻", add_special_tokens=False)["input_ids"]
    assert len(ids) == 4  # 篮球 + 股 + 市 + 新闻: words matched first, the rest as characters
    assert bb.tokenizer.convert_tokens_to_ids("篮球") in ids


def test_extension_changes_tokenization_embeddings_and_cache_identity():
    bb = create_backbone("tiny-bert")
    bb.cfg.sha256, bb.cfg.pretrained = "3" * 64, True
    key = backbone_key(bb.cfg)
    rows = bb.model.get_input_embeddings().weight.shape[0]
    new = tokens_to_add(bb.tokenizer, SPORT + MONEY, min_count=1)
    assert extend_vocabulary(bb, new) == len(new)
    emb = bb.model.get_input_embeddings().weight
    assert emb.shape[0] == rows + len(new)
    assert np.allclose(emb[-1].detach().numpy(), emb[:rows].mean(0).detach().numpy(), atol=1e-6)
    assert vocabulary_coverage(bb.tokenizer, SPORT + MONEY)["unk_rate"] == 0.0
    assert backbone_key(bb.cfg) != key  # never served features of the original vocabulary
    assert bb.cfg.extra["added_tokens"] == new


def test_high_unknown_rate_is_warned_and_reported():
    with pytest.warns(UserWarning, match="unknown to the tiny-bert tokenizer"):
        clf = TextClassifier(backbone="tiny-bert").fit(chinese_frame())
    voc = clf.data_summary_["vocabulary"]
    assert voc["unk_rate"] > 0.3 and "篮" in voc["top_missing"]
    assert any("--extend-vocab" in w for w in clf.data_summary_["warnings"])


def test_extend_vocab_needs_a_strategy_that_trains_the_embeddings():
    with pytest.raises(ConfigError, match="extend_vocab"):
        TextClassifier(backbone="tiny-bert", extend_vocab=True).fit(chinese_frame())
    with pytest.raises(ConfigError, match="unfreeze"):
        TextClassifier(backbone="tiny-bert", strategy="finetune", unfreeze=1, extend_vocab=True).fit(chinese_frame())


@pytest.mark.parametrize("ngram", [1, 2])
def test_extended_model_learns_saves_and_reloads_identically(tmp_path, ngram):
    df = chinese_frame()
    clf = TextClassifier(backbone="tiny-bert", strategy="finetune", extend_vocab=True, epochs=2, batch_size=8,
                         lr=1e-3, seed=0, extend_vocab_ngram=ngram, extend_vocab_word_min_count=2).fit(df)
    voc = clf.data_summary_["vocabulary"]
    assert voc["added_tokens"] > 10 and voc["unk_rate_after"] < voc["unk_rate"]
    assert (voc.get("added_words", 0) > 5) == (ngram == 2)
    added = clf.model_.backbone.cfg.extra["added_tokens"]
    new_rows = clf.model_.backbone.model.get_input_embeddings().weight[-len(added):].detach()
    assert float(new_rows.std(0).max()) > 0  # no longer all equal to the mean they started at: learnt
    out = clf.save_pretrained(tmp_path / "m")
    assert json.loads((out / "backbone.json").read_text())["extra"]["added_tokens"] == added
    again = load_model(out)
    tok_a, tok_b = clf.model_.backbone.tokenizer, again.model_.backbone.tokenizer
    assert tok_a("篮球股市")["input_ids"] == tok_b("篮球股市")["input_ids"]
    assert len(tok_b("篮球股市", add_special_tokens=False)["input_ids"]) == (2 if ngram == 2 else 4)
    texts = ["篮球比赛", "股市大涨", "足球冠军"]
    np.testing.assert_allclose(again.predict_proba(texts).to_numpy(), clf.predict_proba(texts).to_numpy(), atol=1e-5)


def test_row_update_scaling_equals_a_per_row_learning_rate():
    import torch

    from fmadapt.train.module import _scale_row_updates

    def one_step(scale: float, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        w = torch.nn.Parameter(torch.arange(12.0).reshape(6, 2) / 10)
        opt = torch.optim.AdamW([w], lr=lr, weight_decay=0.0)
        if scale != 1.0:
            _scale_row_updates(opt, w, 4, scale)
        start = w.detach().clone()
        for k in range(3):
            opt.zero_grad()
            (w.pow(2).sum() * (k + 1)).backward()
            opt.step()
        return start, w.detach()

    start, plain = one_step(1.0, 1e-2)
    _, scaled = one_step(5.0, 1e-2)
    _, big_lr = one_step(1.0, 5e-2)
    assert torch.equal(scaled[:4], plain[:4])  # the old rows: untouched by the scaling
    torch.testing.assert_close(scaled[4:], big_lr[4:])  # the new rows: as if their learning rate were 5x
    assert not torch.allclose(scaled[4:], plain[4:])


def test_new_token_embeddings_learn_at_their_own_rate():
    df = chinese_frame()

    def drift(**kw):
        clf = TextClassifier(backbone="tiny-bert", strategy="finetune", extend_vocab=True, epochs=1, batch_size=8,
                             lr=1e-4, head_lr=1e-4, seed=0, calibrate=False, **kw).fit(df)
        n = len(clf.model_.backbone.cfg.extra["added_tokens"])
        w = clf.model_.backbone.model.get_input_embeddings().weight.detach()
        return float((w[-n:] - w[-n:].mean(0)).norm())  # they all started at the same mean row

    slow = drift(new_token_lr=1e-4)
    assert drift() > 5 * slow  # default: 20 x lr


def test_new_token_lr_must_be_positive():
    with pytest.raises(ConfigError, match="new_token_lr"):
        TextClassifier(backbone="tiny-bert", strategy="finetune", new_token_lr=0.0).fit(chinese_frame())


@pytest.mark.parametrize("bad", [{"extend_vocab_ngram": 0}, {"extend_vocab_ngram": 9},
                                 {"extend_vocab_word_min_count": 0}])
def test_word_options_are_validated(bad):
    with pytest.raises(ConfigError, match=next(iter(bad))):
        TextClassifier(backbone="tiny-bert", strategy="finetune", extend_vocab=True, **bad).fit(chinese_frame())
