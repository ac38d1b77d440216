"""Checking values for a config dataclass against its fields' annotations, before building it.

Configs arrive as TOML, JSON (`--env inner_lr=1e-4`) or a checkpoint's dict, so a value of
the wrong type (`steps = "ten"`, `inner_lr=abc`) or a NaN would otherwise surface later as
a traceback far from its cause. Only the plain annotations are checked: int, float,
bool, str, and any of them `| None`; other fields are left to the class.
"""
from __future__ import annotations

import math
from dataclasses import fields

_KINDS = {"int": ((int,), "an integer"), "float": ((int, float), "a finite number"),
          "bool": ((bool,), "true or false"), "str": ((str,), "a string")}


def type_problems(cls, values: dict) -> list[str]:
    """"key must be an integer, got 'ten'" for every value of `values` that does not fit the
    annotation of the field of dataclass `cls` with that name (keys that are no field: ignored)."""
    annotations = {f.name: f.type if isinstance(f.type, str) else f.type.__name__ for f in fields(cls)}
    problems = []
    for key, value in values.items():
        kind, _, optional = annotations.get(key, "").partition(" | ")
        if kind not in _KINDS or (optional == "None" and value is None):
            continue
        types, words = _KINDS[kind]
        wrong = not isinstance(value, types) or (isinstance(value, bool) and kind != "bool")
        if wrong or (kind == "float" and not math.isfinite(value)):
            problems.append(f"{key} must be {words}{' or null' if optional == 'None' else ''}, got {value!r}")
    return problems


def checked_fields(cls, d: dict, what: str, error: type = ValueError) -> dict:
    """`d` after checking that every key is a field of dataclass `cls` and every value fits its
    field's type: the one rule every config's `from_dict` follows. Raises `error` with one line
    ("unknown model config key(s): x", "invalid env config: lr must be ...")."""
    unknown = sorted(set(d) - {f.name for f in fields(cls)})
    if unknown:
        raise error(f"unknown {what} key(s): {', '.join(unknown)}")
    problems = type_problems(cls, d)
    if problems:
        raise error(f"invalid {what}: {'; '.join(problems)}")
    return d
