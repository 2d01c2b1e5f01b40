"""The one validation mechanism for structured user files: configs, energy tables, IR manifests.

A schema is a frozen dataclass whose fields declare their rule with `spec`
(range, choices, length, plain name; every float must be finite). Two entry
points, one set of rules:

* `build(cls, raw)` turns parsed YAML (plain data) into ``cls``: strict types
  (``true`` is not an integer, ``"4"`` is not a number), unknown and missing
  keys, then the rules. Every fault is a `SchemaError` whose ``path`` is the
  dotted field (``model.fan_in``, ``model.hidden[1]``,
  ``actions.syn_ops.pJ``) and whose message says what was expected and what
  was found, e.g. ``model.fan_in: must be >= 1, got 0``.
* A `Schema` subclass checks its rules (and its cross-field `Schema.check`)
  on construction, so `dataclasses.replace` and command-line overrides are
  validated exactly like a file. Dataclasses that are not `Schema` (the IR's
  in-memory form, built from arrays) are checked on demand by `check_fields`.

Values shown in messages are truncated (`show`), so a hostile file cannot
make an error message large or multi-line.

Why not pydantic: the config objects must stay dataclasses. The flow keys its
cache on the fields a step reads (`apical.sw.config.record_reads` hooks
attribute access on the dataclass), steps and tests derive configs with
`dataclasses.replace` (which re-runs this validation; pydantic's
``model_copy(update=...)`` skips it), and other modules add fields by writing
ordinary dataclass fields. The mechanism needed is small (scalar rules, nested
sections, lists and maps), so it lives here, without a compiled dependency.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from enum import Enum
from typing import Any

__all__ = ["Rule", "Schema", "SchemaError", "build", "check_fields", "join", "show", "spec"]

_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")


def show(value: Any, limit: int = 60) -> str:
    """A short one-line ``repr`` of ``value`` for an error message."""
    try:
        text = repr(value) if not isinstance(value, Enum) else repr(value.value)
    except Exception:  # a value whose repr fails is still reported
        text = f"<{type(value).__name__}>"
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def join(path: str, sub: str) -> str:
    """Dotted path ``path`` + ``sub`` (``a`` + ``b`` -> ``a.b``; ``a`` + ``[1]`` -> ``a[1]``)."""
    if not path:
        return sub
    if not sub:
        return path
    return f"{path}{sub}" if sub.startswith("[") else f"{path}.{sub}"


def _key(k: Any) -> str:
    """A mapping key as a path part: itself when a plain word, else its short repr."""
    return k if isinstance(k, str) and k.isidentifier() else show(k, 40)


class SchemaError(ValueError):
    """A value breaks its field's rule; ``path`` is the dotted field, ``msg`` the reason."""

    def __init__(self, path: str, msg: str) -> None:
        super().__init__(f"{path}: {msg}" if path else msg)
        self.path, self.msg = path, msg

    def under(self, prefix: str) -> SchemaError:
        return SchemaError(join(prefix, self.path), self.msg)


def _num(v: float) -> str:
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v)) if abs(v) >= 1e6 else f"{v:g}"
    return f"{v:g}" if isinstance(v, float) else str(v)


@dataclasses.dataclass(frozen=True)
class Rule:
    """What a field's value must satisfy; ``why`` says where a limit comes from (docs, messages)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[Any, ...] | None = None
    min_len: int | None = None
    max_len: int | None = None
    plain_name: bool = False  # letters, digits, _ . + -; no path separator; at most 64 characters
    each: Rule | None = None  # rule for every element of a list or value of a map
    keys: Rule | None = None  # rule for every key of a map
    why: str = ""

    def _range(self) -> str | None:
        lo = f"[{_num(self.ge)}" if self.ge is not None else f"({_num(self.gt)}" if self.gt is not None else None
        hi = f"{_num(self.le)}]" if self.le is not None else f"{_num(self.lt)})" if self.lt is not None else None
        if lo and hi:
            return f"in {lo}, {hi}"
        if lo:
            return f">= {_num(self.ge)}" if self.ge is not None else f"> {_num(self.gt)}"
        if hi:
            return f"<= {_num(self.le)}" if self.le is not None else f"< {_num(self.lt)}"
        return None

    def check(self, v: Any, path: str) -> None:
        """Raise `SchemaError` at ``path`` when ``v`` breaks this rule (None always passes)."""
        if v is None:
            return
        if isinstance(v, float) and not math.isfinite(v):
            raise SchemaError(path, f"must be a finite number, got {show(v)}")
        if self.choices is not None and v not in self.choices:
            names = ", ".join(show(c) for c in self.choices)
            raise SchemaError(path, f"must be one of {names}, got {show(v)}")
        if isinstance(v, int | float) and not isinstance(v, bool):
            bad = (
                (self.ge is not None and v < self.ge) or (self.gt is not None and v <= self.gt)
                or (self.le is not None and v > self.le) or (self.lt is not None and v >= self.lt)
            )
            if bad:
                raise SchemaError(path, f"must be {self._range()}, got {show(v)}")
        if isinstance(v, str | tuple | dict):
            n = len(v)
            if self.min_len is not None and n < self.min_len:
                what = "characters" if isinstance(v, str) else "entries"
                raise SchemaError(path, f"needs at least {self.min_len} {what}, got {n}")
            if self.max_len is not None and n > self.max_len:
                what = "characters" if isinstance(v, str) else "entries"
                raise SchemaError(path, f"must have at most {self.max_len} {what}, got {n}")
        if self.plain_name and isinstance(v, str) and not _PLAIN_NAME.fullmatch(v):
            raise SchemaError(
                path, f"must be a plain name (letters, digits, _ . + -, at most 64, no path), got {show(v)}"
            )
        if isinstance(v, tuple) and self.each is not None:
            for i, x in enumerate(v):
                self.each.check(x, f"{path}[{i}]")
        if isinstance(v, dict):
            for k, x in v.items():
                if self.keys is not None:
                    self.keys.check(k, join(path, _key(k)))
                if self.each is not None:
                    self.each.check(x, join(path, _key(k)))


_NO_RULE = Rule()


def spec(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING,
         **rule: Any) -> Any:
    """A dataclass field carrying a `Rule` (keyword arguments as `Rule`'s)."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"rule": Rule(**rule)})


def _rule(f: dataclasses.Field) -> Rule:
    return f.metadata.get("rule", _NO_RULE)


def _finite_inside(v: Any, path: str) -> None:
    if isinstance(v, float) and not math.isfinite(v):
        raise SchemaError(path, f"must be a finite number, got {show(v)}")
    if isinstance(v, tuple):
        for i, x in enumerate(v):
            _finite_inside(x, f"{path}[{i}]")


def check_fields(obj: Any, prefix: str = "") -> None:
    """Apply the rules of every field of the dataclass ``obj`` (not recursing into sub-objects)."""
    for f in dataclasses.fields(obj):
        v = object.__getattribute__(obj, f.name)
        path = join(prefix, f.name)
        _rule(f).check(v, path)
        _finite_inside(v, path)


class Schema:
    """Base of frozen schema dataclasses: rules and `check` run on every construction."""

    __slots__ = ()

    def __post_init__(self) -> None:
        check_fields(self)
        self.check()

    def check(self) -> None:
        """Cross-field rules; raise `SchemaError` naming the field at fault."""


# --------------------------------------------------------------------------- building from plain data

_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true/false"}


def _type_name(tp: Any) -> str:
    if isinstance(tp, type) and issubclass(tp, Enum):
        return "one of " + ", ".join(repr(m.value) for m in tp)
    return _TYPE_NAMES.get(tp, getattr(tp, "__name__", str(tp)))


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _convert(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"{path}: schema type {tp} is not supported")
        return _convert(value, inner[0], path)
    if tp is Any:
        return value
    if origin is tuple:
        elem = typing.get_args(tp)[0]
        if not isinstance(value, list | tuple):
            raise SchemaError(path, f"must be a list, got {show(value)}")
        return tuple(_convert(v, elem, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise SchemaError(path, f"must be a mapping, got {show(value)}")
        out = {}
        for k, v in value.items():
            where = join(path, _key(k))
            out[_convert(k, key_tp, where)] = _convert(v, val_tp, where)
        return out
    if dataclasses.is_dataclass(tp):
        return build(tp, value, path)
    if isinstance(tp, type) and issubclass(tp, Enum):
        try:
            return tp(value)
        except (ValueError, TypeError):
            raise SchemaError(path, f"must be {_type_name(tp)}, got {show(value)}") from None
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok:
            try:
                value = float(value)
            except OverflowError:  # an integer beyond float range
                raise SchemaError(path, f"must be a finite number, got {show(value)}") from None
    elif tp is str:
        ok = isinstance(value, str)
    else:
        raise TypeError(f"{path}: schema type {tp} is not supported")
    if not ok:
        raise SchemaError(path, f"must be {_type_name(tp)}, got {show(value)}")
    return value


def build(cls: type, raw: Any, path: str = "", *, skip: tuple[str, ...] = ()) -> Any:
    """``cls`` (a dataclass) from parsed YAML ``raw``; faults raise `SchemaError` at their dotted path.

    ``skip`` names fields that are never read from ``raw`` (their defaults stand).
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        # the type only: a file that is not a mapping may not be meant as text at all
        raise SchemaError(path or "", f"must be a mapping, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    for key in raw:
        if key not in fields:
            raise SchemaError(join(path, _key(key)), f"unknown field (known: {', '.join(sorted(fields))})")
    hints = _hints(cls)
    kwargs = {}
    for name, f in fields.items():
        if name in raw:
            kwargs[name] = _convert(raw[name], hints[name], join(path, name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise SchemaError(join(path, name), "missing")
    try:
        return cls(**kwargs)
    except SchemaError as e:
        raise e.under(path) from None
