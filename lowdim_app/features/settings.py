"""Declared settings: one frozen dataclass per user action, validated in one place.

Every field is declared with :func:`setting` (default, bounds, help text, unit, choices). The same
declaration drives

* validation of raw values from any caller (Python, the CLI, the Gradio API): strings, ``None``,
  NaN, inf, out-of-range numbers and oversized lists all become one-line :class:`UserError`\\ s;
* the CLI parser (:func:`add_arguments`, :func:`from_args`) -- one flag per field;
* the reproduce line (:meth:`Settings.to_cli`), so a printed command can never drop a field.

Supported field types: ``int``, ``float``, ``bool``, ``str`` (with ``choices`` for a fixed set),
``tuple[int, ...]`` / ``tuple[float, ...]`` (CLI ranges ``A:B``, ``LO:HI:COUNT``, ``A,B,C``),
``tuple[str, ...]`` (several values, e.g. file paths: ``nargs="+"`` on the command line), each
optionally ``| None`` (``None`` = "automatic", shown as such in help).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import shlex
import typing
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import UserError

SEED_MAX = 2**31 - 1
MAX_TEXT = 2000          # characters in any free-text setting
MAX_ITEMS = 256          # items in any list setting


@dataclass(frozen=True)
class Spec:
    """What a setting accepts; attached to the dataclass field as ``metadata["spec"]``."""

    help: str = ""
    lo: float | None = None
    hi: float | None = None
    unit: str = ""
    choices: tuple | None = None
    label: str = ""              # name in messages and UI labels (default: the field name)
    positional: bool = False     # CLI positional argument instead of ``--flag``
    max_items: int = MAX_ITEMS
    max_chars: int = MAX_TEXT
    range_style: str = "list"    # how tuple[float] ranges print: "list" or "linspace" (LO:HI:COUNT)
    cli: bool = True             # False: a setting only the Python API and the UI set


def setting(default: Any = dataclasses.MISSING, **spec) -> Any:
    """A dataclass field with a :class:`Spec`; list defaults become tuples (settings are frozen)."""
    if isinstance(default, list):
        default = tuple(default)
    kwargs = {"metadata": {"spec": Spec(**spec)}}
    if default is not dataclasses.MISSING:
        kwargs["default"] = default
    return dataclasses.field(**kwargs)


def seed_setting(default: int = 0, help: str = "random seed (same seed, same result)") -> Any:
    return setting(default, lo=0, hi=SEED_MAX, help=help)


# ----------------------------------------------------------------------------- field types
@dataclass(frozen=True)
class FieldType:
    base: type            # int, float, bool, str, tuple
    item: type | None     # item type of a tuple
    optional: bool


def field_type(cls, f: dataclasses.Field) -> FieldType:
    hint = typing.get_type_hints(cls)[f.name]
    args = typing.get_args(hint)
    optional = type(None) in args
    if optional:
        rest = [a for a in args if a is not type(None)]
        hint = rest[0]
    origin = typing.get_origin(hint)
    if origin is tuple:
        item = typing.get_args(hint)[0]
        return FieldType(tuple, item, optional)
    if hint not in (int, float, bool, str):
        raise TypeError(f"{cls.__name__}.{f.name}: unsupported setting type {hint!r}")
    return FieldType(hint, None, optional)


def spec_of(f: dataclasses.Field) -> Spec:
    return f.metadata.get("spec", Spec())


def _label(f: dataclasses.Field) -> str:
    return spec_of(f).label or f.name


# ----------------------------------------------------------------------------- coercion
def _number(label: str, value, whole: bool):
    if isinstance(value, bool):
        raise UserError(f"{label} must be a number, got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text) if whole and text.lstrip("+-").isdigit() else float(text)
        except ValueError:
            raise UserError(f"{label} must be a number, got {_short(value)}") from None
    if isinstance(value, (np.integer, np.floating)):
        value = value.item()
    if not isinstance(value, (int, float)):
        raise UserError(f"{label} must be a number, got {_short(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{label} must be a finite number, got {value!r}")
    if whole:
        if isinstance(value, float):
            if value != int(value):
                raise UserError(f"{label} must be a whole number, got {value!r}")
            value = int(value)
        return int(value)
    return float(value)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def fmt(v) -> str:
    """A bound or value for messages: whole numbers without exponent, others shortest."""
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return f"{v:g}" if isinstance(v, float) else str(v)


def _check_bounds(label: str, value, spec: Spec) -> None:
    lo, hi = spec.lo, spec.hi
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        u = f" {spec.unit}" if spec.unit else ""
        if lo is not None and hi is not None:
            raise UserError(f"{label} must be between {fmt(lo)} and {fmt(hi)}{u}, got {fmt(value)}")
        if lo is not None:
            raise UserError(f"{label} must be at least {fmt(lo)}{u}, got {fmt(value)}")
        raise UserError(f"{label} must be at most {fmt(hi)}{u}, got {fmt(value)}")


def parse_range(text: str, item: type) -> list:
    """CLI/UI text -> list: ``"2:8"`` (ints, inclusive), ``"2:8:2"`` (ints, step), ``"-6:6:7"``
    (floats: LO:HI:COUNT, evenly spaced), ``"1,2,4"`` or ``"5"``."""
    text = text.strip().replace(" ", "")
    if not text:
        return []
    if ":" in text:
        parts = text.split(":")
        if item is int:
            nums = [int(p) for p in parts]
            if len(nums) not in (2, 3) or (len(nums) == 3 and nums[2] == 0):
                raise ValueError
            step = nums[2] if len(nums) == 3 else 1
            if abs((nums[1] - nums[0]) / step) > 10 * MAX_ITEMS:
                raise ValueError
            return list(range(nums[0], nums[1] + (1 if step > 0 else -1), step))
        if len(parts) != 3:
            raise ValueError
        lo, hi, count = float(parts[0]), float(parts[1]), int(parts[2])
        if not 1 <= count <= 10 * MAX_ITEMS:
            raise ValueError
        return [float(v) for v in np.linspace(lo, hi, count)]
    return [item(p) for p in text.split(",") if p]


def coerce(cls, f: dataclasses.Field, value):
    """One raw value -> the field's type, or :class:`UserError` with one line."""
    ft, spec, label = field_type(cls, f), spec_of(f), _label(f)
    if value is None or (isinstance(value, str) and not value.strip() and ft.optional and ft.base is not str):
        if ft.optional:
            return None
        if ft.base is str and spec.choices is None:
            return ""
        raise UserError(f"{label} is required")
    if ft.base is bool:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        if isinstance(value, (int, np.integer)) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "1", "0", "on", "off"):
            return value.strip().lower() in ("true", "yes", "1", "on")
        raise UserError(f"{label} must be true or false, got {_short(value)}")
    if ft.base in (int, float):
        v = _number(label, value, whole=ft.base is int)
        _check_bounds(label, v, spec)
        return v
    if ft.base is str:
        if not isinstance(value, str):
            raise UserError(f"{label} must be text, got {_short(value)}")
        if len(value) > spec.max_chars:
            raise UserError(f"{label} is too long ({len(value)} characters, at most {spec.max_chars})")
        if "\x00" in value:
            raise UserError(f"{label} must not contain NUL characters")
        if spec.choices is not None and value not in spec.choices:
            raise UserError(f"{label} must be one of {', '.join(map(str, spec.choices))}, got {_short(value)}")
        return value
    # tuples
    item = ft.item
    if item is str:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) for v in items):
            raise UserError(f"{label} must be a list of text values, got {_short(value)}")
        if not items and spec.positional and f.default is dataclasses.MISSING:
            raise UserError(f"{label}: give at least one value")
        if len(items) > spec.max_items:
            raise UserError(f"{label}: at most {spec.max_items} values, got {len(items)}")
        for v in items:
            if len(v) > spec.max_chars or "\x00" in v:
                raise UserError(f"{label}: a value is too long or contains NUL characters")
        return tuple(items)
    if isinstance(value, str):
        if len(value) > spec.max_chars:
            raise UserError(f"{label} is too long ({len(value)} characters)")
        try:
            items = parse_range(value, item)
        except (ValueError, OverflowError):
            form = "A:B, A:B:STEP or A,B,C" if item is int else "LO:HI:COUNT or A,B,C"
            raise UserError(f"{label}: not a list of numbers: {_short(value)} (use {form})") from None
    elif isinstance(value, (list, tuple, np.ndarray)):
        items = list(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        items = [value]
    else:
        raise UserError(f"{label} must be a list of numbers, got {_short(value)}")
    if not items:
        raise UserError(f"{label} must not be empty")
    if len(items) > spec.max_items:
        raise UserError(f"{label}: at most {spec.max_items} values, got {len(items)}")
    out = []
    for v in items:
        v = _number(label, v, whole=item is int)
        _check_bounds(label, v, spec)
        out.append(v)
    return tuple(out)


# ----------------------------------------------------------------------------- the base class
@dataclass(frozen=True)
class Settings:
    """Base of every action's settings. Subclasses are ``@dataclass(frozen=True)`` with fields
    made by :func:`setting`; construction validates and coerces every field, then calls
    :meth:`check` for rules that involve several fields."""

    COMMAND: typing.ClassVar[str] = ""

    def __post_init__(self):
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, coerce(type(self), f, getattr(self, f.name)))
        self.check()

    def check(self) -> None:
        """Cross-field rules; raise :class:`UserError`."""

    @classmethod
    def from_raw(cls, **raw):
        """Build from raw values (any types); unknown names are an error, missing ones take defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - names)
        if unknown:
            raise UserError(f"unknown setting(s) for {cls.COMMAND or cls.__name__}: {', '.join(unknown)}")
        return cls(**raw)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                for f in dataclasses.fields(self)}

    def to_cli(self, *, placeholders: dict[str, str] | None = None, extra: str = "") -> str:
        """The exact command line that reproduces these settings.

        Every setting is spelled out -- so the line means the same when a later version changes a
        default -- except ``auto`` (``None``), empty texts and empty lists left at their default.
        ``placeholders`` replaces the values of path fields the caller cannot know
        (e.g. ``{"image": "IMAGE.png"}``)."""
        placeholders = placeholders or {}
        parts = ["python -m lowdim_app", self.COMMAND]
        flags: list[str] = []
        for f in dataclasses.fields(self):
            spec = spec_of(f)
            if not spec.cli:
                continue
            v = getattr(self, f.name)
            if f.name in placeholders:
                text = placeholders[f.name]
                text = " ".join(shlex.quote(t) for t in text) if isinstance(text, (list, tuple)) else text
                parts.append(text) if spec.positional else flags.append(f"{_flag(f)} {text}")
                continue
            if not spec.positional and _equal(v, f.default) and (v is None or v == "" or v == ()):
                continue
            ft = field_type(type(self), f)
            if ft.item is str:
                quoted = " ".join(shlex.quote(x) for x in v)
                if spec.positional:
                    if quoted:
                        parts.append(quoted)
                elif v:
                    flags.append(f"{_flag(f)} {quoted}")
            elif spec.positional:
                parts.append(shlex.quote(_format(v, ft, spec)))
            elif ft.base is bool:
                flags.append(_flag(f) if v else "--no-" + f.name.replace("_", "-"))
            elif v is None:
                flags.append(f"{_flag(f)} auto")
            else:
                text = _format(v, ft, spec)
                flags.append(f"{_flag(f)}={shlex.quote(text)}" if text.startswith("-") else
                             f"{_flag(f)} {shlex.quote(text)}")
        return " ".join(parts + flags + ([extra] if extra else []))


def _equal(a, b) -> bool:
    if b is dataclasses.MISSING:
        return False
    if isinstance(b, list):
        b = tuple(b)
    return a == b


def _flag(f: dataclasses.Field) -> str:
    return "--" + f.name.replace("_", "-")


def _num(v) -> str:
    return repr(float(v)) if isinstance(v, float) and v != int(v) else (str(int(v)) if isinstance(v, float) else str(v))


def _format(v, ft: FieldType, spec: Spec) -> str:
    if ft.base is tuple:
        vals = list(v)
        if ft.item is int:
            if len(vals) > 2 and vals == list(range(vals[0], vals[-1] + 1)):
                return f"{vals[0]}:{vals[-1]}"
            return ",".join(str(x) for x in vals)
        if spec.range_style == "linspace" and len(vals) >= 2:
            lin = [float(x) for x in np.linspace(vals[0], vals[-1], len(vals))]
            if lin == [float(x) for x in vals]:
                return f"{_num(vals[0])}:{_num(vals[-1])}:{len(vals)}"
        return ",".join(_num(x) for x in vals)
    if ft.base is float:
        return _num(v)
    return str(v)


# ----------------------------------------------------------------------------- CLI parser
def add_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """One argparse argument per field of ``cls``; values are parsed as text and validated by
    the dataclass itself (so the CLI, the API and Python share one validation path)."""
    for f in dataclasses.fields(cls):
        spec = spec_of(f)
        if not spec.cli:
            continue
        ft = field_type(cls, f)
        default = None if f.default is dataclasses.MISSING else f.default
        help_ = spec.help
        bits = []
        if spec.lo is not None or spec.hi is not None:
            bits.append(f"{'' if spec.lo is None else fmt(spec.lo)}..{'' if spec.hi is None else fmt(spec.hi)}"
                        + (f" {spec.unit}" if spec.unit else ""))
        if spec.choices:
            bits.append("one of " + ", ".join(map(str, spec.choices)))
        if not spec.positional and f.default is not dataclasses.MISSING and default != ():
            bits.append("default: " + ("auto" if default is None else _format(default, ft, spec) if default != "" else "''"))
        if bits:
            help_ = f"{help_} ({'; '.join(bits)})" if help_ else "; ".join(bits)
        help_ = help_.replace("%", "%%")
        if spec.positional:
            if ft.item is str:
                required = f.default is dataclasses.MISSING
                parser.add_argument(f.name, help=help_, metavar=f.name.upper(), nargs="+" if required else "*",
                                    **({} if required else {"default": list(f.default)}))
            else:
                parser.add_argument(f.name, help=help_, metavar=f.name.upper())
        elif ft.item is str:
            parser.add_argument(_flag(f), dest=f.name, default=argparse.SUPPRESS, help=help_, nargs="+",
                                metavar=f.name.upper())
        elif ft.base is bool:
            parser.add_argument(_flag(f), dest=f.name, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=help_)
        else:
            parser.add_argument(_flag(f), dest=f.name, default=argparse.SUPPRESS, help=help_,
                                metavar=f.name.upper() if ft.base is not tuple else "LIST")


def from_args(cls, args: argparse.Namespace):
    """Settings from parsed CLI arguments (``auto`` means ``None`` for optional fields)."""
    raw = {}
    for f in dataclasses.fields(cls):
        if not hasattr(args, f.name):
            continue
        v = getattr(args, f.name)
        if isinstance(v, str) and v.strip().lower() == "auto" and field_type(cls, f).optional:
            v = None
        raw[f.name] = v
    return cls(**raw)


def describe(cls) -> list[dict]:
    """Field table for documentation and UI builders: name, type, default, bounds, help, unit."""
    rows = []
    for f in dataclasses.fields(cls):
        spec, ft = spec_of(f), field_type(cls, f)
        rows.append({"name": f.name, "type": ft.base.__name__ + (f"[{ft.item.__name__}]" if ft.item else ""),
                     "optional": ft.optional, "default": None if f.default is dataclasses.MISSING else f.default,
                     "lo": spec.lo, "hi": spec.hi, "choices": spec.choices, "help": spec.help, "unit": spec.unit})
    return rows
