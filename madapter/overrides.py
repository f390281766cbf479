"""params.yaml changed from outside the file: presets, ``-S key=value`` pairs, and ``dvc exp run -S``.

A run's configuration is ``params.yaml``, then each preset file merged over it, then each ``-S``
override, validated once (:func:`resolve_params`).  The same change must give the same params
whether it is applied by ``python -m madapter --preset/-S`` or, for a DVC experiment, by
``dvc exp run --set-param`` (what ``python -m madapter preset-args`` prints): DVC reads those
arguments with Hydra's override grammar, not YAML, so :func:`dvc_set_param` writes Hydra's syntax
and checks it by parsing it back with DVC's own parser.

Kept apart from :mod:`madapter.config` (the schema) and :mod:`madapter.cli` (the commands) because
it is neither: it is how a change to the schema's values is written down, in two syntaxes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from madapter.config import (
    ConfigError,
    Params,
    flatten_keys,
    leaf_of,
    load_params,
    merge_value,
    read_yaml_sections,
)


# --------------------------------------------------------------------------- --preset and -S
def parse_overrides(pairs: Iterable[str] | None) -> dict[str, Any]:
    """Turn ``["train.epochs=2", "model.levels=[3,7]"]`` into ``{"train.epochs": 2, ...}``.

    Values are parsed as YAML.  Keys are split only as deep as the schema has sections and
    fields (:func:`madapter.config.split_key`), so ``download.checksums.UCF101.rar=<sha256>`` sets
    one entry of the ``download.checksums`` mapping, and a mapping value
    (``download.checksums={UCF101.rar: <sha256>}``) merges into it, as ``dvc exp run -S`` does.
    ``dvc exp run -S`` itself reads Hydra's syntax, not YAML: :func:`dvc_set_param` writes that.
    """
    overrides: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"-S {pair!r}: expected KEY=VALUE with a dotted key, e.g. -S train.epochs=2")
        leaf = leaf_of(key)
        if leaf is not None and leaf[0] != key and not leaf[1]:
            raise ConfigError(f"-S {pair!r}: {leaf[0]} is one value, not a mapping; set it whole: -S {leaf[0]}=...")
        try:
            overrides[key] = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            raise ConfigError(f"-S {pair!r}: the value is not valid YAML") from None
    return overrides


def read_preset(path: Path) -> dict[str, Any]:
    """Read a preset: a partial ``params.yaml`` (same sections, only the keys it changes)."""
    return read_yaml_sections(path, "preset file not found (see presets/ for the available ones)")


def resolve_params(params_file: Path, presets: Iterable[Path] | None, sets: Iterable[str] | None) -> Params:
    """params.yaml, then each preset, then ``-S`` overrides; validated once (ConfigError on error).

    Applied as an ordered list, not one dict, so when two presets both set a mapping
    (``download.checksums``) the entries of both count, as they do through ``dvc exp run``.
    """
    overrides: list[tuple[str, Any]] = []
    for preset in presets or []:
        overrides.extend(flatten_keys(read_preset(preset)).items())
    overrides.extend(parse_overrides(sets).items())
    return load_params(params_file, overrides=overrides)


# --------------------------------------------------------------------------- dvc exp run -S syntax
# ``dvc exp run -S`` parses each override with Hydra's grammar (dvc/utils/hydra.py), not YAML:
# strings must be quoted (``a,b`` would be a sweep, ``1.0`` a float), mapping keys cannot be quoted
# (so ``: , = ( ) [ ] { }``, spaces and backslashes in them are backslash-escaped), and ``${`` is an
# OmegaConf interpolation unless escaped.
_HYDRA_KEY_SPECIAL = re.compile(r"([\\()\[\]{}:=, \t])")

_HYDRA_PLAIN = re.compile(r"[A-Za-z_/][A-Za-z0-9_\-./]*")
"""Strings Hydra reads back as the same string without quotes (``ucf101``, ``vit_b16.openai``)."""
_HYDRA_WORDS = {"null", "true", "false", "inf", "nan"}


def _hydra_string(text: str) -> str:
    """A Hydra string: bare when that is unambiguous, else single-quoted with backslashes that
    precede a quote (or the end) doubled.  Bare keeps ``preset-args`` output readable."""
    if _HYDRA_PLAIN.fullmatch(text) and text.lower() not in _HYDRA_WORDS:
        return text
    body = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", text)
    body = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, body)
    return "'" + body.replace("${", "\\${") + "'"


def _hydra_key(key: Any) -> str:
    """A mapping key as Hydra reads it unquoted: its special characters backslash-escaped."""
    return _HYDRA_KEY_SPECIAL.sub(r"\\\1", str(key))


def _hydra_value(value: Any) -> str:
    """``value`` in Hydra's override grammar (what ``dvc exp run -S`` reads)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _hydra_string(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{_hydra_key(k)}:{_hydra_value(v)}" for k, v in value.items()) + "}"
    raise ConfigError(f"{value!r}: a {type(value).__name__} value cannot be passed to dvc exp run -S")


def _same(parsed: Any, value: Any) -> bool:
    """Whether Hydra read back exactly ``value`` (types included: ``'1'`` is not ``1``)."""
    if isinstance(value, str):
        return isinstance(parsed, str) and parsed.replace("\\${", "${") == value
    if isinstance(value, dict):
        return (
            isinstance(parsed, dict)
            and [(type(k), k) for k in parsed] == [(type(k), k) for k in value]
            and all(_same(parsed[k], value[k]) for k in value)
        )
    if isinstance(value, list | tuple):
        return isinstance(parsed, list) and len(parsed) == len(value) and all(map(_same, parsed, value))
    if isinstance(value, float) and math.isnan(value):
        return isinstance(parsed, float) and math.isnan(parsed)
    return type(parsed) is type(value) and parsed == value


def dvc_set_param(key: str, value: Any) -> str:
    """``key=value`` for ``dvc exp run --set-param``, checked by parsing it back with DVC's parser.

    A mapping is written ``++key={...}``: Hydra merges it into the mapping in params.yaml and the
    ``++`` lets it add entries params.yaml does not have yet (``--preset`` merges the same way).
    A value Hydra cannot express (a mapping key like ``10`` that it would read as a number, a
    quote in a key, a line break that ``xargs`` would split) is a ConfigError naming the key.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    text = f"{'++' if isinstance(value, dict) else ''}{key}={_hydra_value(value)}"
    try:
        parsed = OverridesParser.create().parse_overrides([text])[0]
        ok = parsed.key_or_group == key and _same(parsed.value(), value)
    except Exception:  # noqa: BLE001 - any parse failure means DVC would reject it too
        ok = False
    if not ok or "\n" in text:
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        raise ConfigError(
            f"{key}: {shown} cannot be written as a 'dvc exp run -S' argument; "
            f"set it in params.yaml instead (or use --preset with python -m madapter)"
        )
    return text


def preset_set_params(presets: Iterable[Path]) -> list[str]:
    """The presets, merged in order, as ``dvc exp run --set-param`` values (one per schema field).

    Merged first (later wins, mappings merge key by key, as ``--preset`` does), so a field two
    presets both set is ONE argument holding the value ``--preset`` would give it.
    """
    merged: dict[str, Any] = {}
    for preset in presets:
        for key, value in flatten_keys(read_preset(preset)).items():
            merged[key] = merge_value(merged.get(key), value)
    return [dvc_set_param(key, value) for key, value in merged.items()]
