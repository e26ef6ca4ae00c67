import pandas as pd
import pytest

from conftest import text_frame
from fmadapt import DataError, TextClassifier
from fmadapt.data.examples import Examples
from fmadapt.data.tables import examples_from_table, infer_columns, read_table


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
def test_formats_read_the_same(tmp_path, fmt):
    df = text_frame(5)
    p = tmp_path / f"d.{fmt}"
    if fmt == "csv":
        df.to_csv(p, index=False)
    elif fmt == "tsv":
        df.to_csv(p, sep="\t", index=False)
    elif fmt == "jsonl":
        df.to_json(p, orient="records", lines=True, force_ascii=False)
    else:
        df.to_parquet(p)
    got, _ = read_table(p)
    assert got["text"].tolist() == df["text"].tolist()
    assert got["label"].astype(str).tolist() == df["label"].tolist()


def test_columns_inferred_by_name_and_by_shape():
    df = pd.DataFrame({"sentence": ["a b c d e", "f g h i j"], "y": ["p", "n"]})
    assert infer_columns(df, None, None, "s") == ("sentence", "y")
    df = pd.DataFrame({"body_of_text": ["a long piece of text here", "another long piece"], "tag": ["p", "n"]})
    assert infer_columns(df, None, "tag", "s") == ("body_of_text", "tag")


def test_missing_column_lists_existing_ones():
    df = pd.DataFrame({"review": ["x"], "stars": ["5"]})
    with pytest.raises(DataError, match=r"column 'txt' \(--text\) not found. Columns: 'review', 'stars'"):
        infer_columns(df, "txt", "stars", "f.csv")


def test_ambiguous_columns_ask_for_options():
    df = pd.DataFrame({"a": ["x y", "z"], "b": ["p q", "r"], "c": ["1", "2"]})
    with pytest.raises(DataError, match="--text and --label"):
        infer_columns(df, None, None, "f.csv")


def test_empty_and_nan_texts_dropped_and_counted(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("text,label\nhello there,a\n,b\n   ,a\nfine,\nok then,b\n", encoding="utf-8")
    df, src = read_table(p)
    ex = examples_from_table(df, src, "text", "label")
    assert ex.inputs == ["hello there", "ok then"]
    reasons = sorted(s.reason for s in ex.skipped)
    assert reasons == ["empty text in column 'text'"] * 2 + ["missing label in column 'label'"]
    assert "row 3" in ex.skipped[0].where  # file line numbers (header is line 1)


def test_missing_value_markers_are_missing_and_the_skip_names_the_word(tmp_path):
    # as pandas (and R's NA): "NA", "null", "None", "N/A", "nan" are missing values; the report says which word
    for sep, ext in ((",", "csv"), ("\t", "tsv")):
        p = tmp_path / f"d.{ext}"
        p.write_text(sep.join(["text", "label"]) + "\n" + "\n".join(
            sep.join(r) for r in [("NA", "pos"), ("fine", "None"), ("good", "none"), ("ok", "na"), ("null", "N/A"),
                                  ("", "pos"), ("well", "")]) + "\n", encoding="utf-8")
        df, src = read_table(p)
        ex = examples_from_table(df, src, "text", "label")
        assert ex.inputs == ["good", "ok"] and ex.labels == ["none", "na"], ext  # lower case: kept as classes
        why = {int(s.where.rsplit("row ", 1)[1]): s.reason for s in ex.skipped}
        assert sorted(why) == [2, 3, 6, 7, 8], ext
        assert why[2].startswith("missing text in column 'text': 'NA' is read as a missing value"), why[2]
        assert why[3].startswith("missing label in column 'label': 'None' is read as a missing value"), why[3]
        assert "if it is the class, write it otherwise" in why[3]
        assert why[6].startswith("missing text in column 'text': 'null'")  # the text decides first
        assert why[7] == "empty text in column 'text'" and why[8] == "missing label in column 'label'"


def test_label_variants_flagged():
    df = pd.DataFrame({"text": ["a", "b", "c", "d"], "label": ["Pos", "pos ", "neg", "neg"]})
    ex = examples_from_table(df, "f.csv", "text", "label")
    assert len(ex.warnings) == 1 and "'Pos'" in ex.warnings[0] and "'pos '" in ex.warnings[0]


def test_integral_float_labels_print_as_integers():
    df = pd.DataFrame({"text": ["a", "b", "c"], "label": [1.0, None, 2.0]})
    ex = examples_from_table(df, "f", "text", "label")
    assert ex.labels == ["1", "2"]


def test_non_utf8_file_is_detected_by_default_and_strict_utf8_names_the_encoding_option(tmp_path):
    p = tmp_path / "latin.csv"
    p.write_bytes("text,label\ncafé crème,a\nnaïve,b\n".encode("latin-1"))
    with pytest.warns(UserWarning, match="--encoding"):
        df, _ = read_table(p)  # default "auto": detected, and the warning says how to override
    assert df["text"].tolist() == ["café crème", "naïve"]
    with pytest.raises(DataError, match="--encoding"):
        read_table(p, encoding="utf-8")
    df, _ = read_table(p, encoding="latin-1")
    assert df["text"].tolist() == ["café crème", "naïve"]


def test_utf8_bom_does_not_corrupt_first_column(tmp_path):
    p = tmp_path / "bom.csv"
    p.write_bytes("text,label\n你好,a\n".encode("utf-8-sig"))
    df, _ = read_table(p)
    assert list(df.columns) == ["text", "label"] and df["text"][0] == "你好"


def test_headerless_table(tmp_path):
    p = tmp_path / "nh.tsv"
    p.write_text("some news title\t3\nanother title\t1\n", encoding="utf-8")
    df, _ = read_table(p, header=False)
    assert list(df.columns) == ["0", "1"] and len(df) == 2


def test_unseen_labels_at_evaluation_are_an_error(text_csv, tmp_path):
    clf = TextClassifier(backbone="tiny-bert").fit(text_csv)
    bad = text_frame(3)
    bad.loc[0, "label"] = "neutral"
    with pytest.raises(DataError, match="never seen in training: 'neutral'"):
        clf.evaluate(bad)


def test_inferred_columns_are_saved_but_not_sticky_across_fits():
    clf = TextClassifier(backbone="tiny-bert")
    clf.fit(text_frame(8))
    assert (clf.config_.text_col, clf.config_.label_col) == ("text", "label")
    clf.fit(text_frame(8).rename(columns={"text": "sentence", "label": "y"}))
    assert (clf.config_.text_col, clf.config_.label_col) == ("sentence", "y")
    assert clf.options.get("text_col") is None


def test_trained_model_accepts_renamed_columns_with_a_warning():
    clf = TextClassifier(backbone="tiny-bert").fit(text_frame(8))
    renamed = text_frame(4, seed=1).rename(columns={"text": "content"})
    with pytest.warns(UserWarning, match="using 'content'/'label'"):
        m = clf.evaluate(renamed)
    assert m["n"] == 8
    ambiguous = text_frame(4).rename(columns={"text": "body_a"}).assign(body_b="another string column, same length")
    with pytest.raises(DataError, match="column 'text' \\(--text\\) not found"):
        clf.evaluate(ambiguous)


def test_a_lone_label_variant_is_named_with_the_class_it_resembles():
    from fmadapt.data.split import check_trainable

    ex = Examples(inputs=list("abcde"), labels=["pos", "pos", "neg", "neg", " Pos"], ids=list("abcde"),
                  source="t.csv", modality="text")
    with pytest.raises(DataError, match="' Pos' looks like 'pos'"):
        check_trainable(ex)


def test_max_tokens_cuts_long_texts_in_training_and_after_loading(tmp_path):
    """`max_tokens`: the backbone reads at most that many tokens (what makes fine-tuning long documents cheaper);
    it is saved with the model and applied again when it is loaded; never above the backbone's own limit."""
    from fmadapt import ConfigError, ImageClassifier, load_model

    df = text_frame(8)
    long = [" ".join(["word"] * 200) + " tail " + t for t in df["text"]]  # the label words after 200 tokens
    clf = TextClassifier(backbone="tiny-bert", max_tokens=16, seed=0).fit(df.assign(text=long))
    assert clf.model_.backbone.cfg.max_tokens == 16 and clf.config_.max_tokens == 16
    batch = clf.model_.backbone.collator()(long[:3])
    assert batch["input_ids"].shape[1] == 16  # cut: without the option, 64 (tiny-bert's limit)
    again = load_model(clf.save_pretrained(tmp_path / "m", report=False))
    assert again.model_.backbone.cfg.max_tokens == 16
    assert (again.predict_proba(long[:6]).to_numpy() == clf.predict_proba(long[:6]).to_numpy()).all()
    capped = TextClassifier(backbone="tiny-bert", max_tokens=1000, seed=0).fit(df)
    assert capped.config_.max_tokens == 64  # tiny-bert reads 64 at most
    with pytest.raises(ConfigError, match="max_tokens"):
        ImageClassifier(backbone="tiny-cnn", max_tokens=64)
    with pytest.raises(ConfigError, match="max_tokens must be in"):
        TextClassifier(backbone="tiny-bert", max_tokens=2)


def test_fine_tuning_reads_fewer_tokens_by_default_and_the_probe_all(monkeypatch):
    """Unset, max_tokens is the strategy's default: the fine-tuning family's (128 for MiniLM, where the loop
    reads 128; here lowered to 16 so that tiny-bert's 64 does not hide it); the probe reads the backbone's own."""
    from fmadapt.adapt.finetune import FineTune

    monkeypatch.setattr(FineTune, "max_tokens", 16)
    df = text_frame(8)
    ft = TextClassifier(backbone="tiny-bert", strategy="finetune", epochs=1, batch_size=8, seed=0).fit(df)
    assert ft.model_.backbone.cfg.max_tokens == 16 and ft.config_.max_tokens == 16
    assert ft.history_["text_tokens"] == {"max_tokens": 16, "chosen_by": "the finetune default (16; the "
                                          "backbone's limit when lower)"}
    given = TextClassifier(backbone="tiny-bert", strategy="finetune", epochs=1, batch_size=8, max_tokens=32).fit(df)
    assert given.model_.backbone.cfg.max_tokens == 32 and given.history_["text_tokens"]["chosen_by"] == \
        "given (max_tokens)"
    probe = TextClassifier(backbone="tiny-bert", seed=0).fit(df)
    assert probe.model_.backbone.cfg.max_tokens == 64 and probe.config_.max_tokens is None


def test_a_tab_separated_txt_file_is_read_as_such_and_a_header_that_is_data_is_said(tmp_path):
    from fmadapt.config import FitConfig
    from fmadapt.data.readers import read_text_table

    rows = ["体验2D巅峰 倚天屠龙记, 十大创新\t8", "同步A股首秀：港股缩量回调\t2", "六十年铁树开花\t8",
            "一个新的标题\t2"]
    (tmp_path / "t.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
    ex = read_text_table(tmp_path / "t.txt", FitConfig(header=False), need_label=True, strict=True)[0]
    assert ex.inputs[0] == "体验2D巅峰 倚天屠龙记, 十大创新" and ex.labels == ["8", "2", "8", "2"]  # (the comma stays)
    with pytest.warns(UserWarning, match="first row looks like data.*--no-header"):
        ex = read_text_table(tmp_path / "t.txt", FitConfig(), need_label=True, strict=True)[0]
    assert len(ex) == 3 and "--no-header" in ex.warnings[0]
    (tmp_path / "h.txt").write_text("text,label\n\"fine, really\tgood\",pos\nbad,neg\n", encoding="utf-8")
    ex = read_text_table(tmp_path / "h.txt", FitConfig(), need_label=True, strict=True)[0]  # (a tab on one line)
    assert ex.labels == ["pos", "neg"] and not ex.warnings
