"""Typed configs: one dataclass per component, overridable from a file and the command line.

Each component owns its config, in a torch-free module so that the command line's help
never loads torch (``LMConfig`` in ``rnnkit.tasks.lm.config``, ``OptimConfig`` and
``TrainerConfig`` in ``rnnkit.train.config``, ``SampleConfig`` in
``rnnkit.decoding.config``), with a default for every field and its help text and allowed
values in the field's metadata (``option``)::

    hidden_size: int = option(256, "units per layer", min=1)

A run's config is a task's settings dataclass whose fields are its sections
(``LMSettings(model=LMConfig(), data=DataConfig(), ...)``, in ``tasks/<task>/config.py``;
a plain dict of sections works too). It resolves in three layers, each overriding the one
before: the defaults, a JSON or TOML file (``{"model": {"hidden_size": 512}}``), and
``--section.field value`` arguments (``--model.hidden_size 512``, or
``--model.hidden_size=512``). Unknown sections or fields, values of the wrong type and
values outside a field's choices or range (``min``/``max`` inclusive, ``gt``/``lt``
exclusive) fail with a message that names the flag, the value and what was expected; then
each section's ``validate()`` (when it has one) checks what spans fields, so a run is refused
before any data is read or model built. The resolved config
is saved in every checkpoint as ``{section: {field: value}}`` (``to_dict``) and read back
with ``from_dict``.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

Sections = dict[str, Any]
"""Section name -> config dataclass instance, e.g. {"model": LMConfig(), ...}."""

S = TypeVar("S")
"""A task's settings: a dataclass of section configs (or a ``Sections`` dict)."""

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")
_NONE = ("none", "null")


class ConfigError(ValueError):
    """A config file or override that does not fit the config's fields and types."""


def _fields(config: Any) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(config)}


def _field_type(config: Any, name: str) -> tuple[type, bool]:
    """(the field's base type, whether None is allowed), from its annotation."""
    hint = typing.get_type_hints(type(config))[name]
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"config field {name!r} has an unsupported type {hint}")
        return rest[0], len(rest) < len(args)
    return hint, False


def coerce(config: Any, name: str, value: Any, where: str) -> Any:
    """``value`` (a string from the command line, or a JSON/TOML value) as the field's type.

    ``where`` names the value in messages (``--model.hidden_size``, ``config.toml``).
    """
    base, optional = _field_type(config, name)
    f = _fields(config)[name]
    expected = base.__name__ + (" or none" if optional else "")
    if value is None or (isinstance(value, str) and value.lower() in _NONE and base is not str):
        if optional:
            return None
        raise ConfigError(f"{where} cannot be none; expected {expected}")
    try:
        if base is bool:
            if isinstance(value, bool):
                out: Any = value
            elif isinstance(value, str) and value.lower() in _TRUE + _FALSE:
                out = value.lower() in _TRUE
            else:
                raise ValueError
        elif base is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            out = int(value)
        elif base is float:
            if isinstance(value, bool):
                raise ValueError
            out = float(value)
            if not math.isfinite(out):
                raise ValueError
        elif base is str:
            if not isinstance(value, str):
                raise ValueError
            out = value
        else:
            raise TypeError(f"config field {name!r} has an unsupported type {base}")
    except ValueError:
        raise ConfigError(f"{where} must be {expected}, got {value!r}") from None
    choices = f.metadata.get("choices")
    if choices is not None and out not in choices:
        raise ConfigError(f"{where} must be one of {', '.join(map(str, choices))}; got {out!r}")
    if out is not None:
        check_range(where, out, optional=optional, **f.metadata)
    return out


def check_range(where: str, value: Any, optional: bool = False, **bounds: Any) -> None:
    """Refuse ``value`` outside ``bounds`` (``min``/``max`` inclusive, ``gt``/``lt``
    exclusive; other keys are ignored) with a message that names ``where`` (a flag, e.g.
    ``--samples``), the value and the range: the same check and words for a command's own
    options as for config fields."""
    if value is not None and not _in_range(bounds, value):
        none = " (or none)" if optional else ""
        raise ConfigError(f"{where} must be {range_text(bounds)}{none}, got {value!r}")


def _in_range(metadata: Mapping[str, Any], value: Any) -> bool:
    low, high = metadata.get("min"), metadata.get("max")
    above, below = metadata.get("gt"), metadata.get("lt")
    return (
        (low is None or value >= low)
        and (high is None or value <= high)
        and (above is None or value > above)
        and (below is None or value < below)
    )


def range_text(metadata: Mapping[str, Any]) -> str:
    """A field's range as the help and the messages write it: ``>= 1``, ``in [0, 1)``;
    empty when the field has none."""
    low = ("[", metadata["min"]) if "min" in metadata else ("(", metadata.get("gt"))
    high = ("]", metadata["max"]) if "max" in metadata else (")", metadata.get("lt"))
    if low[1] is not None and high[1] is not None:
        return f"in {low[0]}{low[1]}, {high[1]}{high[0]}"
    if low[1] is not None:
        return f"{'>=' if low[0] == '[' else '>'} {low[1]}"
    if high[1] is not None:
        return f"{'<=' if high[0] == ']' else '<'} {high[1]}"
    return ""


def check(config: Any, where: str) -> Any:
    """``config`` itself once every field is of its type, in its choices and range
    (``where``: the section's name in messages, ``--model``), and its ``validate()`` (the
    checks that span fields) passes. For a config built in Python, not from a file or flags."""
    for name in _fields(config):
        coerce(config, name, getattr(config, name), f"{where}.{name}")
    return _validated(config)


def _validated(config: Any) -> Any:
    validate = getattr(config, "validate", None)
    return validate() if validate is not None else config


def update(config: Any, values: Mapping[str, Any], where: str) -> Any:
    """A copy of ``config`` with ``values`` (field -> value) set, each checked and coerced."""
    known = _own_fields_first(config)
    changes = {}
    for name, value in values.items():
        if name not in known:
            raise ConfigError(f"{where} has no field {name!r}; the fields are: {', '.join(known)}")
        changes[name] = coerce(config, name, value, f"{where}.{name}")
    return dataclasses.replace(config, **changes)


def sections_of(settings: Any) -> Sections:
    """Section name -> config of a settings dataclass (or a copy of a ``Sections`` dict),
    in field order."""
    if isinstance(settings, Mapping):
        return dict(settings)
    return {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}


def merge(settings: S, data: Mapping[str, Any], where: str, validate: bool = True) -> S:
    """Apply a nested mapping {section: {field: value}} (a parsed config file; ``where``
    ``--`` for command-line overrides, so that messages name the flag). Each section given
    is then checked by its ``validate()`` unless ``validate`` is false (a saved config,
    whose machine-dependent settings such as threads are not this machine's)."""
    sections = sections_of(settings)
    out = dict(sections)
    for section, values in data.items():
        if section not in sections:
            raise ConfigError(
                f"{where}: unknown section {section!r}; the sections are: {', '.join(sections)}"
            )
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where}: section {section!r} must be a table of fields")
        name = f"--{section}" if where == "--" else f"{where}: {section}"
        out[section] = update(out[section], values, name)
        if validate:
            out[section] = _validated(out[section])
    if isinstance(settings, Mapping):
        return out  # type: ignore[return-value]
    return dataclasses.replace(settings, **out)  # type: ignore[type-var]


def read_file(path: str | Path) -> dict[str, Any]:
    """A config file as a nested dict: ``.json`` or ``.toml``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        import tomllib  # Python 3.11+
    except ImportError:  # pragma: no cover
        tomllib = None  # type: ignore[assignment]
    try:
        if path.suffix == ".toml":
            if tomllib is None:
                raise ConfigError(f"{str(path)!r}: TOML needs Python 3.11+; use a .json file")
            return tomllib.loads(path.read_text(encoding="utf-8"))
        if path.suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ConfigError(f"config file {str(path)!r} must hold a JSON object")
            return data
    except (json.JSONDecodeError, ValueError) as error:  # TOMLDecodeError is a ValueError
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f"config file {str(path)!r} is not valid: {error}") from None
    raise ConfigError(f"config file {str(path)!r} must end in .json or .toml")


def parse_overrides(args: Sequence[str]) -> dict[str, dict[str, str]]:
    """``["--model.hidden_size", "512", "--optim.lr=0.1"]`` -> {"model": {...}, "optim": ...}.

    A boolean field may be given as a bare flag (``--model.tie_weights``) when the next
    argument is another option or absent.
    """
    out: dict[str, dict[str, str]] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or "." not in arg:
            raise ConfigError(
                f"unexpected argument {arg!r}; config overrides look like --section.field VALUE"
            )
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                value = args[i + 1]
                i += 1
            else:
                value = "true"
        section, _, name = key.partition(".")
        out.setdefault(section, {})[name.replace("-", "_")] = value
        i += 1
    return out


def resolve(defaults: S, file: str | Path | None = None, overrides: Sequence[str] = ()) -> S:
    """Defaults, then the config file, then ``--section.field value`` overrides; then every
    section's ``validate()``, once all three layers are in (a file may set a pair of fields
    that only the overrides make consistent)."""
    sections = defaults
    if file is not None:
        data = read_file(file)
        data.pop("meta", None)  # provenance in a checkpoint's config.json, not a setting
        sections = merge(sections, data, str(file), validate=False)
    sections = merge(sections, parse_overrides(overrides), "--", validate=False)
    return _validate_all(sections)


def _validate_all(settings: S) -> S:
    checked = {name: _validated(c) for name, c in sections_of(settings).items()}
    if isinstance(settings, Mapping):
        return checked  # type: ignore[return-value]
    return dataclasses.replace(settings, **checked)  # type: ignore[type-var]


def to_dict(settings: Any) -> dict[str, dict[str, Any]]:
    """{section: {field: value}}: the JSON saved as a checkpoint's config.json."""
    return {name: dataclasses.asdict(config) for name, config in sections_of(settings).items()}


def from_dict(defaults: S, data: Mapping[str, Any], where: str = "config") -> S:
    """Settings from a saved ``to_dict``; fields absent there keep their defaults."""
    known = sections_of(defaults)
    return merge(defaults, {k: v for k, v in data.items() if k in known}, where, validate=False)


def help_table(settings: Any) -> str:
    """Every field as ``--section.field DEFAULT  (type) help``, one per line."""
    lines = []
    for section, config in sections_of(settings).items():
        lines.append(f"{section} ({type(config).__name__}):")
        for name, f in _own_fields_first(config).items():
            base, optional = _field_type(config, name)
            choices = f.metadata.get("choices")
            kind = "|".join(map(str, choices)) if choices else base.__name__
            kind += "|none" if optional else ""
            bounds = range_text(f.metadata)
            kind += f", {bounds}" if bounds else ""
            default = getattr(config, name)
            shown = "none" if default is None else repr(default) if default == "" else default
            lines.append(
                f"  --{section}.{name} {shown}  ({kind}) {f.metadata.get('help', '')}".rstrip()
            )
    return "\n".join(lines)


def _own_fields_first(config: Any) -> dict[str, dataclasses.Field]:
    """A config's fields, those its own class declares first, then the inherited ones
    (``rnnkit.common.variants.CellVariants``), so help reads the task's shape first."""
    own = inspect.get_annotations(type(config))
    fields = _fields(config)
    return {n: fields[n] for n in sorted(fields, key=lambda n: n not in own)}


def option(default: Any, help: str, **metadata: Any) -> Any:
    """A dataclass field with its help text and its allowed values in the metadata:
    ``choices``, or a range by ``min``/``max`` (inclusive) and ``gt``/``lt`` (exclusive)."""
    return dataclasses.field(default=default, metadata={"help": help, **metadata})
