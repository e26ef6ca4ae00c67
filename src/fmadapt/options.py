"""Fit options from text: `--set KEY=VALUE` (flat or dotted `group.key`), `--config run.yaml|json` files (flat or
nested by group) and a saved config.json, each value converted to its FitConfig field's type, with errors that name
the option, the file and what it accepts. Torch-free (the CLI reads options before anything heavy is imported)."""

from __future__ import annotations

import dataclasses
import numbers
import os
import types
import typing
from functools import cache
from typing import Any

from .config import GROUPS, FitConfig
from .errors import ConfigError

#: what the API and Lightning also take besides the declared type
_LENIENT: dict[str, tuple[type, ...]] = {"devices": (int, list), "time_budget": (int, float)}
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
#: a --config file larger than this is not a configuration file
MAX_CONFIG_BYTES = 1 << 20


@cache
def _fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(FitConfig) if f.name != "extra"}


@cache
def _kinds(name: str, cls: type = FitConfig) -> tuple[type, ...]:
    """The types field `name` of dataclass `cls` takes (NoneType included for Optional ones)."""
    hint = typing.get_type_hints(cls)[name]
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    return tuple(typing.get_origin(a) or a for a in args)


def option_type(name: str) -> type:
    """The type of option `name`'s values other than None (bool, int, float or str)."""
    return next(k for k in _kinds(name) if k is not type(None))


def describe(name: str) -> str:
    """`name (type, default X[, one of a | b]): help` — for error messages and `--help`."""
    f = _fields()[name]
    kinds = " or ".join("none" if k is type(None) else k.__name__ for k in _kinds(name))
    choices = f.metadata.get("choices")
    return (f"{name} ({kinds}, default {f.default!r}{', one of ' + ' | '.join(choices) if choices else ''}): "
            f"{f.metadata['help']}")


def _is(value: Any, kind: type) -> bool:
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    return isinstance(value, kind)


def check_types(cfg: Any, where: str = "option") -> None:
    """Every field of `cfg` (a FitConfig, or another options dataclass such as the federation's) has its declared
    type (ConfigError naming the first that has not)."""
    cls: type = type(cfg)
    if cls is FitConfig and not isinstance(cfg.extra, dict):
        raise ConfigError(f"option extra: expected a mapping, got {type(cfg.extra).__name__}")
    names = _fields() if cls is FitConfig else [f.name for f in dataclasses.fields(cls)]
    for name in names:
        value, kinds = getattr(cfg, name), _kinds(name, cls)
        if cls is FitConfig and type(value) in _LENIENT.get(name, ()):
            continue
        if any(_is(value, k) for k in kinds):
            if type(value) not in (int, float, bool, str, list, type(None)):  # numpy scalars: saved as JSON later
                setattr(cfg, name, float(value) if float in kinds else int(value))
            continue
        raise ConfigError(f"{where} {name}: {str(value)[:60]!r} is not of type "
                          f"{' or '.join('None' if k is type(None) else k.__name__ for k in kinds)}")


def check_known(d: dict[str, Any], where: str = "options") -> None:
    unknown = sorted(str(k) for k in d if k not in _fields() and k != "extra")
    if unknown:
        raise ConfigError(f"{where}: unknown option(s) {', '.join(unknown)[:200]}; see `fmadapt fit --help`")


def resolve_name(key: str, where: str) -> str:
    """`lr`, `optim.lr` or `optim-lr` -> `lr`; the group, when named, must be the option's."""
    key = key.strip().replace("-", "_")
    group, _, name = key.rpartition(".")
    fields = _fields()
    if name not in fields:
        close = [n for n in fields if name and (name in n or n in name)][:5]
        raise ConfigError(f"{where}: unknown option {key!r}" + (f" (did you mean {', '.join(close)}?)" if close else
                                                                 "; see `fmadapt fit --help` for all options"))
    if group and group != fields[name].metadata["group"]:
        raise ConfigError(f"{where}: {name} is in group {fields[name].metadata['group']!r}, not {group!r}")
    return name


def coerce(name: str, value: Any, where: str, cls: type = FitConfig) -> Any:
    """`value` (text from a command line, or a value from a YAML/JSON file) as option `name`'s type (a field of
    FitConfig, or of another options dataclass `cls`)."""
    kinds = _kinds(name, cls)
    if isinstance(value, str) and type(None) in kinds and value.strip().lower() in ("none", "null", ""):
        return None
    if (cls is FitConfig and type(value) in _LENIENT.get(name, ())) or any(_is(value, k) for k in kinds):
        return float(value) if float in kinds and int not in kinds and _is(value, int) else value
    if isinstance(value, str):
        raw = value.strip()
        for kind in kinds:
            if kind is bool and raw.lower() in _TRUE + _FALSE:
                return raw.lower() in _TRUE
            if kind in (int, float):
                try:
                    return kind(raw)
                except ValueError:
                    continue
            if kind is str:
                return raw
    what = describe(name) if cls is FitConfig else (
        f"{name} ({' or '.join('none' if k is type(None) else k.__name__ for k in kinds)})")
    raise ConfigError(f"{where}: {str(value)[:60]!r} is not a valid value for {what}")


def parse_assignments(items: list[str], where: str = "--set") -> dict[str, Any]:
    """["lr=1e-4", "optim.epochs=3", ...] -> {"lr": 0.0001, "epochs": 3}, each value of its option's type."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{where} {item!r}: expected KEY=VALUE (e.g. optim.lr=1e-4 or dropout=0.1)")
        name = resolve_name(key, f"{where} {item!r}")
        out[name] = coerce(name, raw, f"{where} {item!r}")
    return out


def flatten(d: Any, where: str) -> dict[str, Any]:
    """A --config mapping, flat ({"lr": ...}), by group ({"optim": {"lr": ...}}) or dotted ({"optim.lr": ...}),
    -> {option: value of its type}."""
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a mapping of options (e.g. `optim: {{lr: 1.0e-4}}`), "
                          f"got {type(d).__name__}")
    out: dict[str, Any] = {}
    for key, value in d.items():
        key = str(key)
        if key in GROUPS:
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: {key} is a group of options; give them as a mapping "
                                  f"({key}: {{option: value}}), not {type(value).__name__}")
            items = {f"{key}.{k}": v for k, v in value.items()}
        else:
            items = {key: value}
        for k, v in items.items():
            name = resolve_name(k, where)
            if name in out:
                raise ConfigError(f"{where}: {name} is given twice")
            out[name] = coerce(name, v, f"{where}: {k}")
    return out


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Options from a YAML (.yaml/.yml) or JSON file: flat, by group, or dotted keys. Safe loading only."""
    import json

    where = str(path)
    try:
        size = os.path.getsize(path)
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{where}: {size} bytes is too large for a configuration file")
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such configuration file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: not a UTF-8 text file") from None
    except OSError as e:
        raise ConfigError(f"{where}: unreadable ({e.strerror or e})") from None
    if where.lower().endswith(".json"):
        try:
            data = json.loads(text)
        except ValueError as e:
            raise ConfigError(f"{where}: malformed JSON ({e})") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"{where}: malformed YAML ({' '.join(str(e).split())[:300]})") from None
    return flatten(data if data is not None else {}, where)


def dataclass_from_dict(cls: type, d: dict[str, Any] | None, where: str) -> Any:
    """An options dataclass (the federation's, pretraining's) from a dict: ConfigError naming unknown keys."""
    d = dict(d or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in set(d) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return cls(**d)


def dataclass_assignments(cls: type, items: list[str], where: str, lists: tuple[str, ...] = ()) -> dict[str, Any]:
    """["lr=0.05", "max_inputs=none", ...] -> each value of its option's type in `cls` (coerce, as `fmadapt fit
    --set`); the options in `lists` are ;-separated lists; unknown keys are kept as text (from_dict names them)."""
    known = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"{where} {item!r}: expected KEY=VALUE")
        if key in lists:
            out[key] = [v for v in raw.split(";") if v]
        else:
            out[key] = coerce(key, raw, f"{where} {item!r}", cls) if key in known else raw
    return out
