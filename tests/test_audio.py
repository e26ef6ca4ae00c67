"""Sounds: reading files (formats, rates, channels, damaged files), the speech-embedding backbone against the
original ONNX graphs, the AudioClassifier end to end (fit, predict, save, load, CLI), robustness and explanations.
The backbone is the real one (330k parameters: it runs in milliseconds); the data are synthetic tones."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
import torch

sf = pytest.importorskip("soundfile")
pytest.importorskip("openwakeword", reason="the audio extra (openwakeword==0.4.0) is not installed")

from fmadapt import AudioClassifier, ConfigError, load_model  # noqa: E402
from fmadapt.backbones import audio as A  # noqa: E402
from fmadapt.data.audio import (  # noqa: E402
    AudioLoadError,
    check_audio,
    drop_unreadable_audio,
    load_audio,
    mostly_audio,
)
from fmadapt.data.examples import Examples  # noqa: E402

RATE = 16_000


def tone(freq: float, seconds: float = 1.0, rate: int = RATE, seed: int = 0, amp: float = 0.3) -> np.ndarray:
    """A sine with a little noise, faded in and out (a "word" in the middle of the clip)."""
    t = np.arange(int(seconds * rate)) / rate
    env = np.clip(np.minimum(t, seconds - t) * 8, 0, 1)
    noise = np.random.default_rng(seed).normal(0, 0.01, len(t))
    return (amp * env * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


def write_sound_folder(root: Path, per_class: int = 8) -> Path:
    """root/{train,test}/<low|mid|high>/*.wav: tones of three pitches, lengths 0.6-1.6 s, some 22.05 kHz
    stereo FLAC files among the 16 kHz WAVs."""
    for split, n, seed0 in (("train", per_class, 0), ("test", 4, 100)):
        for cls, f0 in (("low", 200), ("mid", 800), ("high", 2500)):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                rng = np.random.default_rng(seed0 + i)
                secs = float(rng.uniform(0.6, 1.6))
                if i % 4 == 3:  # another rate, two channels, another container
                    w = tone(f0 * rng.uniform(0.9, 1.1), secs, 22_050, seed0 + i)
                    sf.write(str(d / f"{i}.flac"), np.stack([w, 0.5 * w], 1), 22_050)
                else:
                    sf.write(str(d / f"{i}.wav"), tone(f0 * rng.uniform(0.9, 1.1), secs, RATE, seed0 + i), RATE,
                             subtype="PCM_16")
    return root


@pytest.fixture
def sounds(tmp_path) -> Path:
    return write_sound_folder(tmp_path / "sounds")


# -- reading ------------------------------------------------------------------------------------------------
def test_load_audio_resamples_and_mixes_down(tmp_path):
    w = tone(440.0, 1.0, 44_100)
    sf.write(str(tmp_path / "a.flac"), np.stack([w, w], 1), 44_100)
    x = load_audio(tmp_path / "a.flac")
    assert x.dtype == np.float32 and x.ndim == 1 and abs(len(x) - RATE) <= 2
    spectrum = np.abs(np.fft.rfft(x))
    assert abs(np.argmax(spectrum) * RATE / len(x) - 440.0) < 3  # the pitch survives resampling


@pytest.mark.parametrize("fmt,subtype,suffix", [("MP3", None, ".mp3"), ("OGG", "OPUS", ".opus"),
                                                 ("OGG", "VORBIS", ".ogg")])
def test_compressed_formats_decode(tmp_path, fmt, subtype, suffix):
    path = tmp_path / f"a{suffix}"
    try:
        sf.write(str(path), tone(660.0, 1.0, 48_000), 48_000, format=fmt, subtype=subtype)
    except (sf.LibsndfileError, ValueError, TypeError) as e:  # a libsndfile built without this encoder
        pytest.skip(f"libsndfile cannot write {fmt}/{subtype}: {e}")
    x = load_audio(path)
    assert abs(len(x) - RATE) < 0.05 * RATE  # (encoders add a little padding)
    assert abs(np.argmax(np.abs(np.fft.rfft(x))) * RATE / len(x) - 660.0) < 5


def test_load_audio_refuses_damaged_files_with_reasons(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "junk.wav").write_bytes(b"RIFF\x00\x00not really a wave file" * 3)
    sf.write(str(tmp_path / "long.wav"), np.zeros(3 * RATE, np.float32), RATE)
    sf.write(str(tmp_path / "nan.wav"), np.full(RATE, np.nan, np.float32), RATE, subtype="FLOAT")
    with pytest.raises(AudioLoadError, match="empty file"):
        load_audio(tmp_path / "empty.wav")
    with pytest.raises(AudioLoadError, match="corrupt or unsupported"):
        load_audio(tmp_path / "junk.wav")
    with pytest.raises(AudioLoadError, match="over the 2 s limit"):
        load_audio(tmp_path / "long.wav", max_seconds=2)
    with pytest.raises(AudioLoadError, match="not finite"):
        load_audio(tmp_path / "nan.wav")


def test_unreadable_clips_are_skipped_and_odd_ones_reported(tmp_path):
    sf.write(str(tmp_path / "ok.wav"), tone(300), RATE)
    sf.write(str(tmp_path / "silent.wav"), np.zeros(RATE, np.float32), RATE)
    sf.write(str(tmp_path / "clipped.wav"), np.clip(tone(300, amp=3.0), -1, 1), RATE)
    (tmp_path / "bad.wav").write_bytes(b"\x00" * 100)
    paths = sorted(str(p) for p in tmp_path.iterdir())
    bad, odd = check_audio(paths)
    assert list(bad) == [str(tmp_path / "bad.wav")]
    assert odd[str(tmp_path / "silent.wav")].startswith("silent")
    assert odd[str(tmp_path / "clipped.wav")].startswith("clipped")
    ex = drop_unreadable_audio(Examples(inputs=paths, labels=["a"] * 4, ids=paths, modality="audio"))
    assert len(ex) == 3 and [s.where for s in ex.skipped] == [str(tmp_path / "bad.wav")]
    assert any("1 silent" in w for w in ex.warnings) and any("1 clipped" in w for w in ex.warnings)


def test_folders_of_sound_files_are_audio(sounds, tmp_path):
    from fmadapt.cli.app import _modality

    assert mostly_audio(sounds) and _modality(str(sounds)) == "audio"
    (tmp_path / "pics" / "a").mkdir(parents=True)
    (tmp_path / "pics" / "a" / "x.png").write_bytes(b"")
    assert not mostly_audio(tmp_path / "pics") and _modality(str(tmp_path / "pics")) == "image"


# -- the backbone -------------------------------------------------------------------------------------------
def test_speech_embedding_matches_the_original_onnx_graphs():
    """The torch re-implementation against ONNX Runtime running openwakeword's own two graphs (its mel graph, then
    `x / 10 + 2`, then the embedding graph on 76-frame windows every 8 frames), on noise and on a tone."""
    import onnxruntime as ort

    d = A.speech_model_dir()
    mel = ort.InferenceSession(str(d / "melspectrogram.onnx"))
    emb = ort.InferenceSession(str(d / "embedding_model.onnx"))
    bb = A.speech_embedding().eval()
    for wave in (np.random.default_rng(0).normal(0, 0.1, 23_456).astype(np.float32), tone(523.0, 1.3)):
        spec = np.squeeze(mel.run(None, {"input": (wave * 32768)[None]})[0]) / 10 + 2
        windows = np.stack([spec[i:i + 76] for i in range(0, len(spec) - 75, 8)])[..., None].astype(np.float32)
        ref = emb.run(None, {"input_1": windows})[0].reshape(len(windows), 96)
        with torch.no_grad():
            ours = bb.window_embeddings(torch.from_numpy(wave)[None])[0].numpy()
        assert ours.shape == ref.shape
        np.testing.assert_allclose(ours, ref, atol=2e-3 * np.abs(ref).max())


def test_a_clips_features_do_not_depend_on_its_batch():
    bb = A.speech_embedding().eval()
    pre, collate = bb.preprocessor(), bb.collator()
    short, long = pre(tone(300, 0.4)), pre(tone(900, 2.2, seed=1))
    assert len(short) >= A.MIN_SAMPLES  # padded to one window
    with torch.no_grad():
        both = bb(collate([short, long]))
        alone = torch.cat([bb(collate([short])), bb(collate([long]))])
    assert both.shape == (2, 288)
    torch.testing.assert_close(both, alone, atol=1e-4, rtol=1e-4)


def test_onnx_runtime_path_matches_torch():
    from fmadapt.runtime import onnx_encoder

    bb = A.speech_embedding().eval()
    enc = onnx_encoder(bb)
    assert enc is not None
    batch = bb.collator()([bb.preprocessor()(tone(f, s)) for f, s in ((300, 0.7), (1200, 1.9))])
    with torch.no_grad():
        ref = bb(batch).numpy()
    np.testing.assert_allclose(enc(batch), ref, atol=1e-3, rtol=1e-4)


# -- the classifier -----------------------------------------------------------------------------------------
def test_audio_classifier_fits_predicts_saves_and_loads(sounds, tmp_path):
    (sounds / "test" / "low" / "broken.wav").write_bytes(b"RIFF" + b"\x00" * 40)
    clf = AudioClassifier().fit(sounds / "train")
    assert clf.classes_ == ["high", "low", "mid"]
    assert clf.score(sounds / "test") >= 0.9  # three pitches: easy for any sound encoder
    table = clf.predict_table(sounds / "test")
    assert table["error"].notna().sum() == 1 and "broken.wav" in table.loc[table["error"].notna(), "id"].item()
    clf.save_pretrained(tmp_path / "model", report=False)
    saved = json.loads((tmp_path / "model" / "backbone.json").read_text())
    assert saved["modality"] == "audio" and saved["extra"]["context_seconds"] == A.CONTEXT_SECONDS
    again = load_model(tmp_path / "model")
    np.testing.assert_allclose(again.predict_proba(sounds / "test").to_numpy(),
                               clf.predict_proba(sounds / "test").to_numpy(), atol=1e-5)


@pytest.mark.integration
def test_a_sound_model_exports_and_predicts_without_torch(sounds, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from conftest import predict_without_torch
    from fmadapt.cli import app
    from fmadapt.compress.export import export_model

    model_dir = AudioClassifier().fit(sounds / "train").save_pretrained(tmp_path / "m", report=False)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # (ONNX Runtime's failed shape inference leaves files in the working dir)
    meta = export_model(model_dir, tmp_path / "x", data=sounds / "test", int8=True)
    assert list((tmp_path / "cwd").iterdir()) == []
    assert meta["parity"]["fp32"]["end_to_end"]["same_class"] == 1.0
    int8 = meta["parity"]["int8"]  # (the encoder's convolutions in int8, calibrated on the parity clips)
    assert meta["default_graph"] == "int8" and "static QDQ" in int8["quantized"]
    assert int8["accuracy_int8"] >= int8["accuracy_fp32"] - 2 / 12
    assert meta["preprocessing"]["context_seconds"] == A.CONTEXT_SECONDS
    assert (tmp_path / "x" / "server.py").exists() and "soundfile" in (tmp_path / "x" / "requirements.txt").read_text()
    files = sorted(str(p) for p in (sounds / "test").glob("*/*.*"))
    (tmp_path / "x" / "model.int8.onnx").unlink()  # (the fp32 graph against the model, 1e-4)
    meta_file = tmp_path / "x" / "export.json"
    meta_file.write_text(json.dumps({**meta, "default_graph": "fp32"}))
    rows = predict_without_torch(tmp_path / "x", files)
    model = load_model(model_dir)
    want = model.predict_proba(files).to_numpy()
    got = np.asarray([[row["probabilities"][c] for c in model.classes_] for row in rows])
    np.testing.assert_allclose(got, want, atol=1e-4)
    r = CliRunner().invoke(app, ["serve", str(tmp_path / "x"), "--max-sound-seconds", "0"])
    assert r.exit_code == 2 and "--max-sound-seconds" in r.output


@pytest.mark.integration
def test_sound_models_are_served_as_their_exports_and_model_directories_predict(sounds, tmp_path):
    from fastapi.testclient import TestClient

    from fmadapt.compress.export import export_model
    from fmadapt.serve.app import ServeConfig, create_app

    model_dir = AudioClassifier().fit(sounds / "train").save_pretrained(tmp_path / "m", report=False)
    export_model(model_dir, tmp_path / "x", data=sounds / "test")
    files = sorted((sounds / "test").glob("*/*.*"))  # (16 kHz WAVs and 22.05 kHz stereo FLACs)
    model = load_model(model_dir)
    want = model.predict_proba([str(f) for f in files]).to_numpy()
    body = {"sounds": [base64.b64encode(f.read_bytes()).decode() for f in files]}
    for source in (tmp_path / "x", model_dir):
        with TestClient(create_app(ServeConfig(str(source), max_sound_seconds=5.0))) as c:
            r = c.post("/predict", json=body)
            assert r.status_code == 200, r.text
            got = np.asarray([[p["probabilities"][k] for k in model.classes_] for p in r.json()["predictions"]])
            np.testing.assert_allclose(got, want, atol=1e-4)
            r = c.post("/predict", files=[("files", (f.name, f.read_bytes())) for f in files[:2]])
            assert r.status_code == 200 and len(r.json()["predictions"]) == 2
            long = tmp_path / "long.wav"
            sf.write(str(long), tone(300.0, 6.0), RATE)
            bad = {"sounds": [base64.b64encode(b"RIFF" + b"\x00" * 40).decode()]}
            for payload, status, words in ((bad, 422, "sounds[0]: not a readable sound file"),
                                           ({"sounds": [base64.b64encode(long.read_bytes()).decode()]}, 413,
                                            "6.0 s of sound, over the limit of 5 s"),
                                           ({"texts": ["a"]}, 422, '{"sounds": [...]}')):
                r = c.post("/predict", json=payload)
                assert r.status_code == status and words in r.json()["detail"], r.text
            schema = c.get("/openapi.json").json()["paths"]["/predict"]["post"]["requestBody"]["content"]
            assert "sounds" in schema["application/json"]["schema"]["properties"] and "multipart/form-data" in schema


def test_audio_options_that_do_not_apply_are_refused():
    with pytest.raises(ConfigError, match="image_size is for images"):
        AudioClassifier(image_size=128)
    with pytest.raises(ConfigError, match="mixup and cutmix are for images"):
        AudioClassifier(strategy="finetune", mixup=0.2)
    with pytest.raises(ConfigError, match="augment_policy"):
        AudioClassifier(strategy="finetune", augment_policy="trivial")


def test_fine_tuning_trains_the_speech_embedding(sounds):
    clf = AudioClassifier(strategy="finetune", epochs=1, progress=False).fit(sounds / "train")
    h = clf.members_[0].history
    assert h["epochs_run"] == 1 and h["trainable_groups"] == h["total_groups"] == 5
    assert clf.predict(sounds / "test").shape == (12,)


def test_training_augmentation_varies_clips_and_masks_frames():
    from fmadapt.data.loader import seed_all

    w = tone(500.0)
    seed_all(1)
    a = A.augment_wave(w, RATE)
    seed_all(1)
    assert np.array_equal(a, A.augment_wave(w, RATE))  # seeded per (run, epoch, example) by the loader
    seed_all(2)
    assert len(a) == len(w) and not np.allclose(a, A.augment_wave(w, RATE))
    mel = torch.randn(64, 100, 32)
    bins = A.spec_masks(mel, bands=1, band_width=4, spans=0) != mel  # (B, T, F)
    frames = A.spec_masks(mel, bands=0, spans=1, span_frames=10) != mel
    assert all(int(c.any(dim=0).sum()) <= 4 for c in bins) and bins.any()  # one band of <= 4 mel bins per clip
    assert all(int(c.any(dim=1).sum()) <= 10 for c in frames) and frames.any()  # one span of <= 10 frames


def test_fine_tuning_with_augmentation_says_so_and_turns_masks_off_for_prediction(sounds):
    clf = AudioClassifier(strategy="finetune", epochs=1, augment=True, progress=False).fit(sounds / "train")
    h = clf.members_[0].history
    assert h["augmentation"] == "gain+shift+noise+spec masks"
    bb = clf.members_[0].model.backbone
    assert not bb.training  # (the masks apply in training mode only)
    p1, p2 = clf.predict_proba(sounds / "test"), clf.predict_proba(sounds / "test")
    np.testing.assert_array_equal(p1.to_numpy(), p2.to_numpy())


def test_attention_pooling_starts_as_the_mean_and_trains_alone_on_top(sounds):
    plain, attn = A.speech_embedding().eval(), A.speech_embedding(attention=True).eval()
    batch = plain.collator()([plain.preprocessor()(tone(f, s)) for f, s in ((300, 0.8), (900, 2.0))])
    with torch.no_grad():
        torch.testing.assert_close(attn(batch), plain(batch))  # zero-initialised: mean pooling
    assert len(attn.layer_groups()) == 6 and attn.layer_groups()[-1] is attn.attention
    clf = AudioClassifier(backbone="speech-embedding-attention", strategy="finetune", unfreeze=1, epochs=2,
                          restore_best=False, progress=False).fit(sounds / "train")  # (the last epoch's weights)
    bb = clf.members_[0].model.backbone
    assert clf.members_[0].history["trainable_groups"] == 1
    assert bb.attention.score.weight.abs().sum() > 0  # trained
    for mine, start in zip(bb.stages.parameters(), attn.stages.parameters(), strict=True):
        assert torch.equal(mine, start)  # the network below stayed frozen


# -- robustness and explanations ------------------------------------------------------------------------------
def test_perturbations_hit_their_levels():
    from fmadapt.evaluate.audio_robustness import perturb_audio

    rng = np.random.default_rng(0)
    w = tone(440.0, 2.0)
    for severity, snr in zip((1, 2, 3), (20, 10, 0), strict=True):
        noisy = perturb_audio(w, "noise", severity, rng)
        measured = 10 * np.log10(np.mean(w ** 2) / np.mean((noisy - w) ** 2))
        assert abs(measured - snr) < 0.5
    quiet = perturb_audio(w, "quieter", 2, rng)
    assert abs(20 * np.log10(np.abs(quiet).max() / np.abs(w).max()) + 20) < 0.01
    assert np.abs(perturb_audio(w, "clipping", 3, rng)).max() <= 1.0
    shifted = perturb_audio(w, "time_shift", 1, rng)
    assert len(shifted) == len(w) and (np.count_nonzero(shifted == 0) >= int(0.1 * RATE))


def test_robustness_and_explanations_on_sounds(sounds):
    from fmadapt.evaluate.explain import explain_sample
    from fmadapt.evaluate.robustness import robustness_report

    clf = AudioClassifier().fit(sounds / "train")
    ex = clf.read_inputs(sounds / "test")
    ex.labels = [Path(p).parent.name for p in ex.inputs]
    rob = robustness_report(clf, ex)
    assert set(rob["corruptions"]) == {"noise", "quieter", "clipping", "time_shift"}
    assert all(set(v) == {"1", "2", "3"} for v in rob["corruptions"].values())
    assert rob["params"]["corruptions"]["noise"]["values"] == [20, 10, 0]
    items = explain_sample(clf, ex, n_right=2, n_wrong=0)
    assert len(items) == 2 and not any("error" in i for i in items)
    for item in items:
        seconds = len(load_audio(item["id"])) / RATE
        assert abs(len(item["heatmap"][0]) - seconds / 0.02) <= 1 and max(item["heatmap"][0]) == 1.0
        assert base64.b64decode(item["image_png"])[:4] == b"\x89PNG"


@pytest.mark.integration
def test_cli_fits_a_sound_folder(sounds, tmp_path):
    from typer.testing import CliRunner

    from fmadapt.cli import app

    r = CliRunner().invoke(app, ["fit", str(sounds), "--out", str(tmp_path / "m"), "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["backbone"] == "speech-embedding" and summary["metrics"]["test"]["n"] == 12
    assert json.loads((tmp_path / "m" / "config.json").read_text())["task"] == "audio-classification"
    r = CliRunner().invoke(app, ["embed", str(sounds / "test"), "-o", str(tmp_path / "f.npy")])
    assert r.exit_code == 0, r.output
    assert np.load(tmp_path / "f.npy").shape == (12, 288)


# -- tables that list the files ---------------------------------------------------------------------------------
def test_a_table_of_sound_files_trains_like_a_folder(sounds, tmp_path):
    import pandas as pd

    from fmadapt.cli.app import _modality

    rows = [{"file": str(p.relative_to(sounds)), "word": p.parent.name}
            for p in sorted((sounds / "train").glob("*/*.*"))]
    rows.append({"file": "train/low/missing.wav", "word": "low"})
    pd.DataFrame(rows).to_csv(sounds / "labels.csv", index=False)
    assert _modality(str(sounds / "labels.csv")) == "audio"
    clf = AudioClassifier(label_col="word").fit(sounds / "labels.csv")
    assert clf.classes_ == ["high", "low", "mid"]
    skipped = clf.data_summary_["skipped"]
    assert [s["where"] for s in skipped] == [f"{sounds / 'labels.csv'}:row {len(rows) + 1}"]
    assert skipped[0]["reason"].endswith("missing.wav: no such file")
    test = pd.DataFrame({"path": [str(p) for p in sorted((sounds / "test").glob("*/*.*"))]})
    table = clf.predict_table(test)
    assert len(table) == 12 and (table["pred"] == [Path(p).parent.name for p in test["path"]]).mean() >= 0.9


def test_a_table_of_image_files_trains_an_image_classifier(image_folder, tmp_path):
    import pandas as pd

    from fmadapt import ImageClassifier
    from fmadapt.cli.app import _modality
    from fmadapt.config import FitConfig
    from fmadapt.data.filetable import file_examples

    files = sorted(p for p in image_folder.rglob("*.*") if p.is_file())
    pd.DataFrame({"image": [str(p) for p in files], "label": [p.parent.name for p in files]}).to_csv(
        tmp_path / "imgs.csv", index=False)
    assert _modality(str(tmp_path / "imgs.csv")) == "image"
    with pytest.raises(Exception, match="lists image files, not audio files"):
        file_examples(tmp_path / "imgs.csv", FitConfig(), "audio", need_label=True)
    clf = ImageClassifier(backbone="tiny-cnn").fit(tmp_path / "imgs.csv")
    assert sorted(clf.classes_) == sorted({p.parent.name for p in files})


@pytest.mark.integration
def test_embed_of_sounds_imports_no_torch_once_the_graph_is_remembered(sounds, tmp_path):
    import subprocess
    import sys

    from fmadapt.embed import embed

    embed(sounds / "train", cache=False)  # the full path: exports the graph, checks it, remembers it
    reference, _ = embed(sounds / "test", cache=False, runtime="torch")
    code = ("import sys\nfrom fmadapt.cli import main\nsys.argv = ['fmadapt', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'lightning', 'transformers', 'timm'}))")
    r = subprocess.run([sys.executable, "-c", code, "embed", str(sounds / "test"), "-o", str(tmp_path / "f.npy")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]", r.stdout
    np.testing.assert_allclose(np.load(tmp_path / "f.npy"), reference, atol=2e-3 * np.abs(reference).max())
    # and `fmadapt predict` of a probe model, with the table the full path writes
    import pandas as pd

    from fmadapt.light_predict import remember_model

    (sounds / "test" / "low" / "broken.wav").write_bytes(b"RIFF" + b"\x00" * 40)
    AudioClassifier().fit(sounds / "train").save_pretrained(tmp_path / "m", report=False)
    model = load_model(tmp_path / "m")
    full = model.predict_table(sounds / "test")
    remember_model(model, tmp_path / "m")
    r = subprocess.run([sys.executable, "-c", code, "predict", str(tmp_path / "m"), str(sounds / "test"), "-o",
                        str(tmp_path / "p.csv")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]", r.stdout
    light = pd.read_csv(tmp_path / "p.csv")
    assert list(light.columns) == list(full.columns)
    assert list(light["pred"].fillna("")) == list(full["pred"].fillna("")) and light["error"].notna().sum() == 1
    probs = [c for c in full.columns if c.startswith("prob_")]
    np.testing.assert_allclose(light[probs].to_numpy(), full[probs].to_numpy(dtype=float), atol=1e-4)


def test_unlabeled_sounds_self_train_without_the_labeled_ones(sounds, tmp_path):
    import shutil

    unlabeled = tmp_path / "more"
    shutil.copytree(sounds / "test", unlabeled)  # 12 clips of the three pitches, without their labels
    shutil.copy(sounds / "train" / "low" / "0.wav", unlabeled / "renamed_copy.wav")  # a labeled clip, renamed
    (unlabeled / "broken.wav").write_bytes(b"RIFF" + b"\x00" * 40)
    clf = AudioClassifier(pseudo_threshold=0.5, progress=False).fit(sounds / "train", unlabeled=unlabeled)
    st = clf.history_["self_training"]
    pool = clf.data_summary_["unlabeled"]
    assert pool["found"] == 13 and pool["labeled_overlap_dropped"] == 1 and pool["used"] == 12
    assert [s["where"] for s in pool["skipped"]] == [str(unlabeled / "broken.wav")]
    assert st["unlabeled"] == 12 and st["pseudo_labeled"] > 0 and st["kept"] in ("teacher", "student")
    assert clf.score(sounds / "test") >= 0.9
