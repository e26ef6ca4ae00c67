"""Every command of the README runs as written (the real packaged backbones, on small stand-ins for the user's
files it names): the shell lines of its "Your data" block and its Python block. The first two commands (install +
demo, install + tests) are the demo's test (test_cli.test_demo_end_to_end) and this suite itself."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import NEG, POS, text_frame, write_image_folder
from fmadapt.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def commands() -> list[list[str]]:
    """The `fmadapt ...` lines of the README's bash blocks after the first (comments dropped)."""
    out = []
    for block in blocks("bash")[1:]:
        for line in block.splitlines():
            args = shlex.split(line, comments=True)
            if args:
                assert args[0] == "fmadapt", f"a README line that is not an fmadapt command: {line}"
                out.append(args[1:])
    return out


def reviews(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        good = i % 2 == 0
        w = rng.choice(POS if good else NEG, size=3)
        rows.append({"review": f"the dress was {w[0]} and {w[1]}, truly {w[2]}", "stars": "five" if good else "one",
                     "rating": int(rng.choice([4, 5] if good else [1, 2])), "age": int(rng.integers(20, 70)),
                     "department": rng.choice(["tops", "dresses"]), "recommended": int(good),
                     "region": rng.choice(["north", "south"]),
                     "text": f"shares {w[0]} results" if good else f"takeover {w[0]} bid",
                     "topics": "earn;acq" if i % 3 == 0 else ("earn" if good else "acq")})
    return pd.DataFrame(rows)


def test_the_readme_has_the_commands_this_test_runs():
    cmds = commands()
    assert len(cmds) >= 10 and {c[0] for c in cmds} >= {"fit", "evaluate", "predict", "embed", "explain", "report",
                                                           "export"}
    assert blocks("bash")[0].count("\n") == 2 and "fmadapt demo" in blocks("bash")[0]
    assert "python -m pytest -q" in blocks("bash")[0]


@pytest.mark.slow
def test_every_readme_command_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for folder, seed, per_class in (("photos", 0, 8), ("holdout", 1, 4), ("some_photos", 2, 1),
                                    ("new_photos", 3, 2)):
        write_image_folder(tmp_path / folder, per_class=per_class, seed=seed)
    from test_audio import write_sound_folder

    write_sound_folder(tmp_path / "sounds", per_class=6)
    reviews(48, 0).to_csv("reviews.csv", index=False)
    reviews(48, 1).to_csv("news.csv", index=False)
    reviews(24, 2).to_csv("test.csv", index=False)
    Path("posts.txt").write_text("\n".join(reviews(30, 3)["review"]) + "\n今天的新闻很好看\n", encoding="utf-8")
    runner = CliRunner()
    for args in commands():
        r = runner.invoke(app, args)
        assert r.exit_code == 0, f"fmadapt {shlex.join(args)}\n{r.output[-3000:]}"
    assert len(pd.read_csv("predictions.csv")) == 6 and np.load("features.npy").shape[0] == 24
    for run in ("photos", "reviews", "ft", "news", "rating", "r2", "r3", "sounds", "fed", "my-minilm",
                "my-effnet"):
        assert (tmp_path / "runs" / run).is_dir(), run
    assert (tmp_path / "runs" / "photos" / "report.html").is_file()
    assert (tmp_path / "shipped" / "photos" / "model.onnx").is_file()

    (tmp_path / "py").mkdir()
    monkeypatch.chdir(tmp_path / "py")
    for name, seed in (("train.csv", 0), ("val.csv", 1), ("test.csv", 2)):
        text_frame(n_per_class=12, seed=seed).to_csv(name, index=False)
    scope: dict = {}
    (code,) = blocks("python")
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 (our own README)
    assert list(scope["same"].predict(["great movie", "dull"])) == list(scope["clf"].predict(["great movie", "dull"]))
