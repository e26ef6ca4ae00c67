"""The CLI and option reference pages of the documentation site, generated from the live objects: the click
command of the `fmadapt` Typer app (every command, argument and option, with its help and default) and the fields
of `FitConfig` (grouped by `GROUPS`, with type, default, choices, help and how each is set). Called by the MkDocs
hook (docs/hooks.py) on every build, and by tests/test_docs.py; nothing here is written by hand or committed.

`python docs/gen_reference.py OUT_DIR` writes the two pages into OUT_DIR (to read them outside a build)."""

from __future__ import annotations

import dataclasses
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: the pages, relative to docs/
CLI_PAGE = "reference/cli.md"
OPTIONS_PAGE = "reference/options.md"
#: FitConfig fields set by a `fmadapt fit` flag of another name: field -> the click parameter's name
#: (src/fmadapt/cli/fit.py: `_OWN_FLAGS`); checked against the command on every build
OWN_FLAGS = {"text_col": "text", "label_col": "label", "header": "no_header"}

_CODE = re.compile(r"(`+)(.+?)\1", re.S)
_EXTRA = re.compile(r"\s*\[(default: [^\[\]]*|required)\]\s*$")
#: click's upper-case metavars, as typer before 0.21 writes them (later versions write the Python type: <float>)
_METAVARS = {"FLOAT": "float", "INTEGER": "int", "TEXT": "str", "PATH": "path", "BOOLEAN": "bool"}


def help_record(param: Any, ctx: Any) -> tuple[str, str]:
    """(declaration, help) of a command's parameter, the same whichever typer version builds the command: the
    metavar as the Python type (`--lr <float>`), an argument by its name with its help (typer before 0.21 leaves
    an argument's help out of its record)."""
    if param.param_type_name == "argument":
        return param.name, str(getattr(param, "help", None) or "")
    decl, help_text = param.get_help_record(ctx) or (param.opts[0], "")
    decl = re.sub(r"(?<= )([A-Z]+)$", lambda m: f"<{_METAVARS.get(m.group(1), m.group(1).lower())}>", decl)
    return decl, help_text


def _ensure_importable() -> None:
    """fmadapt from the installed package, else from this checkout's src/ (a build without `pip install -e`)."""
    try:
        import fmadapt  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(ROOT / "src"))


def md(text: str) -> str:
    """Help text as Markdown that renders as written: code spans kept, everything else escaped (`<arch>`, `*`,
    `_`, `[...]` are text, not HTML or emphasis or links)."""

    def plain(s: str) -> str:
        s = s.replace("\\", "\\\\").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        return re.sub(r"([*_\[\]|])", r"\\\1", s)

    out, pos = [], 0
    for m in _CODE.finditer(text):
        out += [plain(text[pos:m.start()]), m.group(0)]
        pos = m.end()
    out.append(plain(text[pos:]))
    return " ".join("".join(out).split())


def code(text: str) -> str:
    """`text` as one code span (longer fences when it holds backticks)."""
    fence = "``" if "`" in text else "`"
    return f"{fence}{text}{fence}" if fence == "`" else f"{fence} {text} {fence}"


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


# -- the command line -------------------------------------------------------------------------------------------
def root_command() -> Any:
    """The click command of the `fmadapt` Typer app, as `fmadapt --help` sees it."""
    _ensure_importable()
    import typer.main

    from fmadapt.cli import app

    return typer.main.get_command(app)


def commands() -> list[tuple[str, Any, Any]]:
    """(name, command, its context) of every visible `fmadapt` command, in `fmadapt --help` order."""
    root = root_command()
    ctx = root.context_class(root, info_name="fmadapt")
    out = []
    for name in root.list_commands(ctx):
        cmd = root.get_command(ctx, name)
        if cmd is not None and not cmd.hidden:
            out.append((name, cmd, cmd.context_class(cmd, info_name=name, parent=ctx)))
    return out


def _param_line(param: Any, ctx: Any, link: str | None) -> str:
    decl, help_text = help_record(param, ctx)
    extras = []
    while m := _EXTRA.search(help_text):
        extras.insert(0, m.group(1))
        help_text = help_text[:m.start()]
    notes = []
    for extra in extras:
        if extra == "required":
            notes.append("**Required.**")
        else:
            notes.append(f"Default: {code(extra.removeprefix('default: '))}.")
    if param.multiple and "repeat" not in help_text.lower():
        notes.append("Repeatable.")
    if link:
        notes.append(f"[Option `{link}`](options.md#{link}).")
    text = md(help_text)
    if text and text[-1] not in ".!?:;":
        text += "."
    text = " ".join(x for x in (text, *notes) if x)
    return f"- {code(decl)}" + (f": {text}" if text else "")


def cli_reference() -> str:
    """The CLI reference page (Markdown)."""
    import fmadapt.cli

    root = root_command()
    cmds = commands()
    intro = (fmadapt.cli.__doc__ or "").split("\n\n")[0]
    lines = [
        "# CLI reference",
        "",
        '!!! info "Generated"',
        "    This page is generated on every `mkdocs build` from the `fmadapt` command itself (the click command of",
        "    the Typer app `fmadapt.cli.app`, by `docs/gen_reference.py`). To change it, change the commands' help",
        "    in `src/fmadapt/cli/` (or an option's help in `src/fmadapt/config.py`).",
        "",
        md(root.help or ""),
        "",
        md(intro),
        "Every command also takes `--help`; `python -m fmadapt` is the same command as `fmadapt`.",
        "",
        "| Command | What it does |",
        "|---|---|",
    ]
    lines += [f"| [`{name}`](#{name}) | {md(cmd.get_short_help_str(limit=300))} |" for name, cmd, _ in cmds]
    fit_fields = {f.name for f in _fit_fields()}
    for name, cmd, ctx in cmds:
        usage = cmd.get_usage(ctx).removeprefix("Usage: ")
        lines += ["", f"## fmadapt {name} {{ #{name} }}", "", "```text", usage, "```", "",
                  md((cmd.help or "").split("\f")[0])]
        if name == "fit":
            lines += ["", "Every option of `FitConfig` is a flag here, in the panel of its group, and any of them "
                      "can also be given as `--set KEY=VALUE` or in a `--config` file: see the "
                      "[option reference](options.md)."]
        panels: dict[str, list[str]] = {}
        for param in cmd.params:
            if getattr(param, "hidden", False):
                continue
            if param.param_type_name == "argument":
                panel = "Arguments"
            else:
                panel = getattr(param, "rich_help_panel", None) or "Options"
            link = param.name if name == "fit" and param.name in fit_fields else None
            panels.setdefault(panel, []).append(_param_line(param, ctx, link))
        for panel, items in panels.items():
            lines += ["", f"### {md(panel)}" if panel in ("Arguments", "Options") else f"### {md(panel)} options",
                      "", *items]
    return "\n".join(lines) + "\n"


# -- the options of a fit ---------------------------------------------------------------------------------------
def _fit_fields() -> list[dataclasses.Field]:
    _ensure_importable()
    from fmadapt.config import FitConfig

    return list(dataclasses.fields(FitConfig))


def _type_name(hint: Any) -> str:
    if isinstance(hint, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "None"
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__name__
    return str(hint).replace("typing.", "")


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None


def _fit_flags() -> dict[str, str]:
    """FitConfig field -> its `fmadapt fit` flag as `--help` shows it, read from the command."""
    ctx = next((c for n, _, c in commands() if n == "fit"), None)
    if ctx is None:
        raise RuntimeError("the fmadapt app has no `fit` command")
    params = {p.name: p for p in ctx.command.params}
    flags = {}
    for f in _fit_fields():
        param = params.get(OWN_FLAGS.get(f.name, f.name))
        if param is not None:
            flags[f.name] = help_record(param, ctx)[0]
    for field_name, param_name in OWN_FLAGS.items():
        if field_name not in flags:
            raise RuntimeError(f"docs/gen_reference.py: `fmadapt fit` has no parameter {param_name!r} for "
                               f"{field_name}: update OWN_FLAGS")
    return flags


def _settable(name: str, group: str | None) -> bool:
    """Whether `--set` and `--config` files take the field (asked of fmadapt.options itself)."""
    from fmadapt.errors import ConfigError
    from fmadapt.options import resolve_name

    try:
        resolve_name(f"{group}.{name}" if group else name, "docs")
    except ConfigError:
        return False
    return True


def _ways(name: str, group: str | None, flags: dict[str, str]) -> str:
    ways = []
    flag = flags.get(name)
    if flag is not None:
        ways.append(code(flag) + (" (header `False`)" if name == "header" else ""))
    elif name == "log_dir":
        ways.append("no flag of its own (`fmadapt fit` sets `<model dir>/logs` when `log_to` is given)")
    if _settable(name, group):
        ways += [code(f"--set {name}=VALUE"), code(f"--set {group}.{name}=VALUE"),
                 f"a `--config` file ({code(f'{name}: VALUE')} or {code(f'{group}: {{{name}: VALUE}}')})"]
    ways.append(f"Python: the keyword {code(f'{name}=...')} of `ImageClassifier` / `TextClassifier`")
    return "; ".join(ways)


def _option(f: dataclasses.Field, hints: dict[str, Any], flags: dict[str, str]) -> list[str]:
    group = f.metadata.get("group")
    choices = f.metadata.get("choices")
    help_text = f.metadata.get("help") or (
        "FitConfig's free-form dictionary, not an option of the command line: given in Python only, saved with "
        "the model." if f.name == "extra" else "")
    items = [f"- **Type:** {code(_type_name(hints[f.name]))}", f"- **Default:** {code(repr(_default(f)))}"]
    if choices:
        items.append(f"- **Choices:** {', '.join(code(c) for c in choices)}")
    items.append(f"- **Set with:** {_ways(f.name, group, flags)}")
    return ["", f"### {f.name} {{ #{f.name} }}", "", md(_sentence(help_text)), "", *items]


def options_reference() -> str:
    """The option reference page (Markdown)."""
    _ensure_importable()
    from fmadapt.config import GROUPS, FitConfig

    fields = _fit_fields()
    hints = typing.get_type_hints(FitConfig)
    flags = _fit_flags()
    fit_ctx = next(c for n, _, c in commands() if n == "fit")
    own = {p.name: p for p in fit_ctx.command.params}
    by_group: dict[str | None, list[dataclasses.Field]] = {}
    for f in fields:
        by_group.setdefault(f.metadata.get("group"), []).append(f)
    unknown = set(by_group) - set(GROUPS) - {None}
    if unknown:
        raise RuntimeError(f"FitConfig fields in groups missing from GROUPS: {sorted(map(str, unknown))}")
    lines = [
        "# Option reference",
        "",
        '!!! info "Generated"',
        "    This page is generated on every `mkdocs build` from `dataclasses.fields(FitConfig)` (each field's",
        "    group, help and choices are its metadata, `src/fmadapt/config.py`) and from the flags of `fmadapt fit`,",
        "    by `docs/gen_reference.py`. To change it, change the field in `src/fmadapt/config.py`.",
        "",
        md(" ".join((FitConfig.__doc__ or "").split())),
        "",
        "## Setting an option { #setting }",
        "",
        "- **A flag of `fmadapt fit`**: every option below has one, in the `--help` panel of its group "
        "(`fmadapt fit data.csv -o model --lr 1e-4`; on/off options as `--name/--no-name`), apart from "
        "`text_col`, `label_col`, `header` (`--text`, `--label`, `--no-header`) and `log_dir`.",
    ]
    for param_name in ("set_", "config"):
        param = own.get(param_name)
        if param is not None:
            decl, help_text = help_record(param, fit_ctx)
            lines.append(f"- **{code(decl)}**: {md(help_text)}")
    lines += [
        "- **Python**: the estimators take every option as a keyword, "
        "`TextClassifier(backbone=..., strategy=..., lr=1e-4)`; a fitted model's options are its `config_` "
        "(a `FitConfig`), saved resolved in the model directory's `config.json`.",
        "",
        "| Group | Key (`--set GROUP.KEY=...`, `GROUP:` in a file) | Options |",
        "|---|---|---|",
    ]
    for key, title in GROUPS.items():
        names = ", ".join(f"[{n.name}](#{n.name})" for n in by_group.get(key, []))
        lines.append(f"| [{md(title)}](#group-{key}) | `{key}` | {names} |")
    for key, title in GROUPS.items():
        if not by_group.get(key):
            continue
        lines += ["", f"## {md(title)} {{ #group-{key} }}", "",
                  f"Group key `{key}`: `--set {key}.NAME=VALUE`, or `{key}:` in a `--config` file. In "
                  f"`fmadapt fit --help`, the panel {md(title)}."]
        for f in by_group[key]:
            lines += _option(f, hints, flags)
    if by_group.get(None):
        lines += ["", "## Not options { #group-none }", "",
                  "Fields of `FitConfig` outside the groups: neither flags nor taken by `--set` or `--config`."]
        for f in by_group[None]:
            lines += _option(f, hints, flags)
    return "\n".join(lines) + "\n"


def pages() -> dict[str, str]:
    """{path relative to docs/: Markdown} of every generated page."""
    return {CLI_PAGE: cli_reference(), OPTIONS_PAGE: options_reference()}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python docs/gen_reference.py OUT_DIR")
    for rel, text in pages().items():
        path = Path(sys.argv[1]) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(path)
