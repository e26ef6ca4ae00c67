"""The documentation site: the CLI and option reference pages hold every command and every FitConfig field (the
generator the MkDocs hook calls, run here in-process), and `mkdocs build --strict` passes (slow)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fmadapt.config import GROUPS, FitConfig

ROOT = Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "docs" / "gen_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gen():
    return _generator()


def _headings(text: str) -> set[str]:
    """The explicit ids of a page's headings (`## title { #id }`)."""
    return set(re.findall(r"^#+ .*\{ #([\w-]+) \}$", text, flags=re.M))


def test_every_option_has_a_section_of_its_own(gen):
    text = gen.options_reference()
    ids = _headings(text)
    fields = [f.name for f in dataclasses.fields(FitConfig)]
    assert len(fields) > 50
    assert not [n for n in fields if n not in ids], "options without a section on the option reference page"
    assert {f"group-{g}" for g in GROUPS} <= ids
    for title in GROUPS.values():
        assert f"## {gen.md(title)} {{ #group-" in text, title


def test_each_option_shows_its_default_choices_and_help(gen):
    text = gen.options_reference()
    sections = dict(re.findall(r"^### (\w+) \{ #\w+ \}\n(.*?)(?=^##|\Z)", text, flags=re.M | re.S))
    for f in dataclasses.fields(FitConfig):
        body = sections[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        assert f"**Default:** {gen.code(repr(default))}" in body, f.name
        for choice in f.metadata.get("choices") or ():
            assert f"`{choice}`" in body, (f.name, choice)
        words = re.findall(r"[a-z]{4,}", f.metadata.get("help", "").lower())[:3]
        assert all(w in body.lower() for w in words), f.name
    # the flags are the command's own: a renamed or dropped flag would show here
    assert "`--lr <float>`" in sections["lr"] and "`--set optim.lr=VALUE`" in sections["lr"]
    assert "`--restore-best / --no-restore-best`" in sections["restore_best"]
    assert "`--text <str>`" in sections["text_col"] and "`--no-header`" in sections["header"]
    assert "--set" not in sections["extra"]  # not an option of the command line


def test_every_command_argument_and_option_is_on_the_cli_page(gen):
    text = gen.cli_reference()
    cmds = gen.commands()
    names = [name for name, _, _ in cmds]
    assert {"fit", "evaluate", "predict", "embed", "explain", "report", "backbones", "strategies", "demo"} <= set(names)
    ids = _headings(text)
    for name, cmd, _ in cmds:
        assert f"## fmadapt {name} {{ #{name} }}" in text and name in ids
        section = text.split(f"{{ #{name} }}", 1)[1].split("\n## ", 1)[0]
        for param in cmd.params:
            shown = param.opts[0] if param.param_type_name == "option" else param.name
            assert f"`{shown}" in section or f", {shown}" in section, (name, shown)
    fit = text.split("{ #fit }", 1)[1].split("\n## ", 1)[0]
    assert "### Optimisation options" in fit and "[Option `lr_race`](options.md#lr_race)" in fit


def test_help_text_is_escaped_not_rendered_as_html_or_emphasis(gen):
    assert gen.md("timm:<arch> and lr * k**2 and `prob_<class>` [x]") == (
        "timm:&lt;arch&gt; and lr \\* k\\*\\*2 and `prob_<class>` \\[x\\]")


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path):
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None:
        pytest.skip("mkdocs is not installed: pip install -e '.[docs]'")
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (site / "reference" / "options" / "index.html").is_file()
    assert not (ROOT / "docs" / "reference").exists()  # generated into the build, never into docs/
    # every option is a search result of its own, its title the option's name
    index = json.loads((site / "search" / "search_index.json").read_text(encoding="utf-8"))
    found = {d["title"] for d in index["docs"] if d["location"].startswith("reference/options/#")}
    missing = [f.name for f in dataclasses.fields(FitConfig) if f.name not in found]
    assert not missing, missing
