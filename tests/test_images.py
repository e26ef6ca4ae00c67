import io

import numpy as np
import pytest
from PIL import Image

from fmadapt import DataError, ImageClassifier
from fmadapt.data.images import ImageLoadError, load_image, scan_image_folder, to_rgb


def _save(img: Image.Image, path, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "I;16", "LA", "1"])
def test_modes_become_rgb(tmp_path, mode):
    base = Image.new("RGB", (20, 10), (200, 100, 50))
    if mode == "I;16":
        img = Image.fromarray(np.full((10, 20), 40000, dtype=np.uint16))
        ext = "png"
    else:
        img = base.convert(mode)
        ext = "tiff" if mode == "CMYK" else "png"
    p = _save(img, tmp_path / f"x.{ext}")
    out = load_image(p)
    assert out.mode == "RGB" and out.size == (20, 10)
    if mode == "I;16":  # 40000/65535 of full scale, not clipped to white
        assert abs(int(np.asarray(out)[0, 0, 0]) - round(40000 / 65535 * 255)) <= 1


def test_palette_transparency_composited_on_white(tmp_path):
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 0, 0] + [255, 0, 0] * 255)
    img.info["transparency"] = 0
    p = _save(img, tmp_path / "t.png", transparency=0)
    assert np.asarray(load_image(p))[0, 0].tolist() == [255, 255, 255]


def test_rgba_transparency_composited_on_white():
    img = Image.new("RGBA", (2, 2), (0, 0, 0, 0))
    assert np.asarray(to_rgb(img))[0, 0].tolist() == [255, 255, 255]


def test_exif_orientation_applied(tmp_path):
    img = Image.new("RGB", (30, 10), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 5, 10))  # white stripe on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    p = _save(img, tmp_path / "o.jpg", exif=exif.tobytes(), quality=95)
    out = load_image(p)
    assert out.size == (10, 30)
    a = np.asarray(out).mean(2)
    assert a[:5].mean() > 200 and a[-5:].mean() < 60  # the left stripe is now on top


@pytest.mark.parametrize("kind", ["zero", "random", "text", "truncated"])
def test_unusable_files_raise_with_reason(tmp_path, kind):
    p = tmp_path / "bad.jpg"
    if kind == "zero":
        p.write_bytes(b"")
    elif kind == "random":
        p.write_bytes(np.random.default_rng(0).bytes(2000))
    elif kind == "text":
        p.write_text("this is not an image")
    else:
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
        p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageLoadError):
        load_image(p)


def test_bomb_refused_without_decoding(tmp_path, monkeypatch):
    p = _save(Image.new("L", (200, 200)), tmp_path / "big.png")
    from PIL import ImageFile

    decoded = []
    orig = ImageFile.ImageFile.load

    def spy(self):
        decoded.append(self.size)
        return orig(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        load_image(p, max_pixels=10_000)
    assert decoded == []
    load_image(p)  # under the default limit the same file decodes (the spy sees it)
    assert decoded and decoded[0] == (200, 200)


def test_layouts(tmp_path):
    for split in ("train", "val", "test"):
        for c in ("a", "b"):
            _save(Image.new("RGB", (8, 8)), tmp_path / "s" / split / c / "1.png")
    f = scan_image_folder(tmp_path / "s")
    assert set(f.splits) == {"train", "val", "test"}
    assert f.splits["val"].labels == ["a", "b"]
    for c in ("a", "b"):
        _save(Image.new("RGB", (8, 8)), tmp_path / "c" / c / "1.png")
    assert set(scan_image_folder(tmp_path / "c").splits) == {"train"}


def test_empty_class_folder_is_an_error_before_training(tmp_path):
    _save(Image.new("RGB", (8, 8)), tmp_path / "a" / "1.png")
    (tmp_path / "b").mkdir()
    with pytest.raises(DataError, match="b contain no files"):
        ImageClassifier(backbone="tiny-cnn").fit(tmp_path)


def test_single_class_is_an_error(tmp_path):
    for i in range(4):
        _save(Image.new("RGB", (8, 8)), tmp_path / "only" / f"{i}.png")
    with pytest.raises(DataError, match="single class"):
        ImageClassifier(backbone="tiny-cnn").fit(tmp_path)


def test_class_with_one_example_is_an_error(image_folder):
    _save(Image.new("RGB", (8, 8)), image_folder / "lonely" / "1.png")
    with pytest.raises(DataError, match="'lonely' \\(1\\)"):
        ImageClassifier(backbone="tiny-cnn").fit(image_folder)


def test_corrupt_files_skipped_listed_and_run_continues(image_folder, tmp_path):
    (image_folder / "red" / "zero.png").write_bytes(b"")
    (image_folder / "blue" / "notes.txt").write_text("hello")
    clf = ImageClassifier(backbone="tiny-cnn").fit(image_folder)
    skipped = {s["where"].rsplit("/", 1)[-1] for s in clf.data_summary_["skipped"]}
    assert skipped == {"zero.png", "notes.txt"}
    assert sum(clf.data_summary_["sizes"].values()) == 36
    out = clf.save_pretrained(tmp_path / "m")
    import json

    listed = json.loads((out / "metrics.json").read_text())["data"]["skipped"]
    assert {s["where"].rsplit("/", 1)[-1] for s in listed} == skipped


def test_resolved_image_size_is_saved(image_folder, tmp_path):
    import json

    clf = ImageClassifier(backbone="tiny-cnn").fit(image_folder)  # tiny-cnn's default is 32 px: kept
    assert clf.config_.image_size == 32
    out = clf.save_pretrained(tmp_path / "m")
    assert json.loads((out / "config.json").read_text())["fit"]["image_size"] == 32
    assert json.loads((out / "backbone.json").read_text())["input_size"] == 32


def _framed_folder(root, per_class: int, seed: int):
    """Two classes that differ only in a 2-px frame (red or blue) around the same kind of grey noise."""
    rng = np.random.default_rng(seed)
    for name, color in (("red_frame", (220, 30, 30)), ("blue_frame", (30, 40, 220))):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            a = rng.integers(60, 190, (32, 32, 1)).repeat(3, axis=2).astype(np.uint8)
            a[:2], a[-2:], a[:, :2], a[:, -2:] = color, color, color, color
            Image.fromarray(a, mode="RGB").save(root / name / f"{i}.png")
    return root


def test_crop_pct_decides_whether_the_edges_are_seen_and_is_saved(tmp_path):
    import json

    train = _framed_folder(tmp_path / "train", 16, seed=0)
    test = _framed_folder(tmp_path / "test", 16, seed=1)
    whole = ImageClassifier(backbone="tiny-cnn").fit(train)  # tiny-cnn's own crop_pct is 1.0: the frame is kept
    cropped = ImageClassifier(backbone="tiny-cnn", crop_pct=0.8).fit(train)  # resize to 40 px, keep the middle 32
    assert whole.config_.crop_pct == 1.0 and cropped.config_.crop_pct == 0.8
    assert whole.evaluate(test)["accuracy"] >= 0.9
    assert cropped.evaluate(test)["accuracy"] <= 0.75  # the frame is cut away: grey noise alone
    out = cropped.save_pretrained(tmp_path / "m")
    assert json.loads((out / "config.json").read_text())["fit"]["crop_pct"] == 0.8
    assert json.loads((out / "backbone.json").read_text())["crop_pct"] == 0.8
    back = ImageClassifier.from_pretrained(out)
    # reloaded with the saved crop (not tiny-cnn's own 1.0): the same probabilities
    np.testing.assert_allclose(back.predict_proba(test), cropped.predict_proba(test), atol=1e-5)


def test_crop_pct_is_checked():
    from fmadapt import ConfigError, TextClassifier

    with pytest.raises(ConfigError, match="crop_pct must be in"):
        ImageClassifier(backbone="tiny-cnn", crop_pct=1.5)
    with pytest.raises(ConfigError, match="crop_pct .* is for images"):
        TextClassifier(backbone="tiny-bert", crop_pct=1.0)


def _tiny_cnn_cropping(pretrained: bool = True):
    from conftest import tiny_cnn

    bb = tiny_cnn(pretrained)
    bb.cfg.crop_pct = 0.8  # a backbone whose own convention crops (as EfficientNet's 0.875)
    return bb


def test_small_images_are_upscaled_whole_by_default_large_ones_cropped(tmp_path):
    """With crop_pct unset, images no larger than the input size keep their edges (crop 1.0); larger ones are
    resized and centre-cropped with the backbone's own crop_pct. How it was chosen is in the history."""
    from fmadapt.backbones import register_backbone

    register_backbone("tiny-cnn-crop08", "image", "test only: tiny-cnn with crop_pct 0.8")(_tiny_cnn_cropping)
    train = _framed_folder(tmp_path / "train", 16, seed=0)  # 32 px images, the input is 32 px
    test = _framed_folder(tmp_path / "test", 16, seed=1)
    small = ImageClassifier(backbone="tiny-cnn-crop08").fit(train)
    assert small.config_.crop_pct == 1.0 and small.history_["image_crop"]["median_short_side"] == 32
    assert small.evaluate(test)["accuracy"] >= 0.9  # the frame is seen
    forced = ImageClassifier(backbone="tiny-cnn-crop08", crop_pct=0.8).fit(train)  # the user's value wins
    assert forced.config_.crop_pct == 0.8 and "image_crop" not in forced.history_
    big = ImageClassifier(backbone="tiny-cnn-crop08", image_size=16).fit(train)  # 32 px images, 16 px input
    assert big.config_.crop_pct == 0.8 and big.history_["image_crop"]["crop_pct"] == 0.8
