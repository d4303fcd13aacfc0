"""Declared settings: one frozen dataclass per user action, validated in one place.

Every field is declared with :func:`setting` (default, bounds, help text, unit, choices). The same
declaration drives

* validation of raw values from any caller (Python, the CLI, the Gradio API): strings, ``None``,
  NaN, inf, out-of-range numbers and oversized lists all become one-line :class:`UserError`\\ s;
* the CLI parser (:func:`add_arguments`, :func:`from_args`) -- one flag per field;
* the reproduce line (:meth:`Settings.to_cli`), so a printed command can never drop a field.

Supported field types: ``int``, ``float``, ``bool``, ``str`` (with ``choices`` for a fixed set),
``tuple[int, ...]`` / ``tuple[float, ...]`` (CLI ranges ``A:B``, ``LO:HI:COUNT``, ``A,B,C``),
``tuple[str, ...]`` (several values: ``nargs="+"`` on the command line), :class:`FileRef` and
``tuple[FileRef, ...]`` (files a run reads: an upload or a path; ``FileRef | str`` also takes the texts
that start with one of ``Spec.keywords``, e.g. ``seed:N``), each optionally ``| None`` (``None`` =
"automatic", shown as such in help).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
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
    max_mb: float | None = None  # files: the largest file accepted
    keywords: tuple[str, ...] = ()   # ``FileRef | str``: texts starting with these are not files


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


# ----------------------------------------------------------------------------- file inputs
@dataclass(frozen=True)
class FileRef:
    """A file a run reads: ``path``, where it lies, and ``name``, what the user knows it by (an upload's
    own file name, or the path as typed). Messages and reproduce lines print the name; ``open``,
    ``Path`` and the loaders read the path. Plain data: it pickles across a process boundary."""

    path: str
    name: str = ""

    def __post_init__(self):
        if not self.name:
            object.__setattr__(self, "name", self.path)

    def __fspath__(self) -> str:
        return self.path

    def __str__(self) -> str:
        return self.name

    @property
    def uploaded(self) -> bool:
        """Received by a server (its name is not the path it lies at)."""
        return self.name != self.path

    @classmethod
    def of(cls, value) -> "FileRef":
        """A path (text or path-like), a file dict of the Gradio API (``path`` and ``orig_name``), or a
        :class:`FileRef`."""
        if isinstance(value, FileRef):
            return value
        if isinstance(value, dict) and isinstance(value.get("path"), str):
            return cls(value["path"], value.get("orig_name") or os.path.basename(value["path"]))
        if isinstance(value, (str, os.PathLike)):
            return cls(os.fspath(value), str(value))
        raise TypeError(value)

    @classmethod
    def upload(cls, path: str | os.PathLike) -> "FileRef":
        """A file the server received: named by its base name (Gradio keeps the uploaded file's own name)."""
        return cls(os.fspath(path), os.path.basename(os.fspath(path)))


def file_texts(values) -> tuple[str, ...]:
    """The names of files and the texts of a ``FileRef | str`` list, for messages and comparisons."""
    return tuple(str(v) for v in values)


# ----------------------------------------------------------------------------- field types
@dataclass(frozen=True)
class FieldType:
    base: type            # int, float, bool, str, tuple, FileRef
    item: type | None     # item type of a tuple
    optional: bool


def _file_union(hint) -> bool:
    """``FileRef`` or ``FileRef | str``."""
    return hint is FileRef or (typing.get_origin(hint) in (typing.Union, _UnionType)
                               and FileRef in typing.get_args(hint))


_UnionType = type(int | str)


def field_type(cls, f: dataclasses.Field) -> FieldType:
    hint = typing.get_type_hints(cls)[f.name]
    args = typing.get_args(hint)
    optional = type(None) in args
    if optional:
        rest = tuple(a for a in args if a is not type(None))
        hint = rest[0] if len(rest) == 1 else typing.Union[rest]
    if _file_union(hint):
        return FieldType(FileRef, None, optional)
    origin = typing.get_origin(hint)
    if origin is tuple:
        item = typing.get_args(hint)[0]
        return FieldType(tuple, FileRef if _file_union(item) else item, optional)
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
    """A bound or value for messages: whole numbers without exponent, others shortest; a huge whole number
    (a seed of 1e308 arrives as a 309-digit int) in exponent form, as it was typed."""
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10**15:
        v = float(v)
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return f"{v:g}".replace("e+", "e") if isinstance(v, float) else str(v)


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


_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


def _to_bool(label: str, value, spec: Spec, f) -> bool:
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, (int, np.integer)) and value in (0, 1)):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise UserError(f"{label} must be true or false, got {_short(value)}")


def _to_number(whole: bool):
    def convert(label: str, value, spec: Spec, f):
        v = _number(label, value, whole=whole)
        _check_bounds(label, v, spec)
        return v
    return convert


def _to_text(label: str, value, spec: Spec, f) -> str:
    if not isinstance(value, str):
        raise UserError(f"{label} must be text, got {_short(value)}")
    if len(value) > spec.max_chars:
        raise UserError(f"{label} is too long ({len(value)} characters, at most {spec.max_chars})")
    if "\x00" in value:
        raise UserError(f"{label} must not contain NUL characters")
    if spec.choices is not None and value not in spec.choices:
        raise UserError(f"{label} must be one of {', '.join(map(str, spec.choices))}, got {_short(value)}")
    return value


def _to_texts(label: str, value, spec: Spec, f) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) for v in items):
        raise UserError(f"{label} must be a list of text values, got {_short(value)}")
    if not items and spec.positional and f.default is dataclasses.MISSING:
        raise UserError(f"{label}: give at least one value")
    if len(items) > spec.max_items:
        raise UserError(f"{label}: at most {spec.max_items} values, got {len(items)}")
    if any(len(v) > spec.max_chars or "\x00" in v for v in items):
        raise UserError(f"{label}: a value is too long or contains NUL characters")
    return tuple(items)


def _to_file(label: str, value, spec: Spec, f) -> "FileRef | str":
    """An upload or a path -> :class:`FileRef` (its name checked like text, a regular file's size against
    ``spec.max_mb``); a text starting with one of ``spec.keywords`` stays text."""
    if isinstance(value, str) and spec.keywords and value.strip().startswith(spec.keywords):
        return _to_text(label, value.strip(), spec, f)
    if isinstance(value, str) and not value.strip():
        raise UserError(f"{label} must be " + "".join(f"{k}... or " for k in spec.keywords) + "a file")
    try:
        ref = FileRef.of(value)
    except TypeError:
        raise UserError(f"{label} must be a file, got {_short(value)}") from None
    for text in (ref.name, ref.path):
        if not text.strip() or len(text) > spec.max_chars or "\x00" in text:
            raise UserError(f"{label}: not a usable file name: {_short(ref.name)}")
    if spec.max_mb is not None and os.path.isfile(ref.path):
        mb = os.path.getsize(ref.path) / 2**20
        if mb > spec.max_mb:
            raise UserError(f"{label}: {ref.name} is too large ({mb:.1f} MB, at most {fmt(spec.max_mb)} MB)")
    return ref


def _to_files(label: str, value, spec: Spec, f) -> tuple:
    items = [value] if isinstance(value, (str, os.PathLike, dict, FileRef)) else value
    if not isinstance(items, (list, tuple)):
        raise UserError(f"{label} must be a list of files, got {_short(value)}")
    if not items and spec.positional and f.default is dataclasses.MISSING:
        raise UserError(f"{label}: give at least one file")
    if len(items) > spec.max_items:
        raise UserError(f"{label}: at most {spec.max_items} files, got {len(items)}")
    return tuple(_to_file(label, v, spec, f) for v in items)


def _to_numbers(item: type):
    def convert(label: str, value, spec: Spec, f) -> tuple:
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
        number = _to_number(item is int)
        return tuple(number(label, v, spec, f) for v in items)
    return convert


_CONVERTERS = {bool: _to_bool, int: _to_number(True), float: _to_number(False), str: _to_text,
               (tuple, str): _to_texts, (tuple, int): _to_numbers(int), (tuple, float): _to_numbers(float),
               FileRef: _to_file, (tuple, FileRef): _to_files}


def coerce(cls, f: dataclasses.Field, value):
    """One raw value -> the field's type, or :class:`UserError` with one line."""
    ft, spec, label = field_type(cls, f), spec_of(f), _label(f)
    blank = isinstance(value, str) and not value.strip() and ft.base is not str
    if value is None or (blank and ft.optional):
        if ft.optional:
            return None
        if ft.base is str and spec.choices is None:
            return ""
        raise UserError(f"{label} is required")
    key = (tuple, ft.item) if ft.base is tuple else ft.base
    return _CONVERTERS[key](label, value, spec, f)


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
        """JSON-ready values; files by the name the user gave them."""
        def plain(v):
            return str(v) if isinstance(v, FileRef) else v
        return {f.name: [plain(x) for x in v] if isinstance(v := getattr(self, f.name), tuple) else plain(v)
                for f in dataclasses.fields(self)}

    def to_cli(self, *, placeholders: dict[str, str] | None = None, extra: str = "", omit=()) -> str:
        """The exact command line that reproduces these settings.

        Every setting is spelled out -- so the line means the same when a later version changes a
        default -- except ``auto`` (``None``), empty texts and empty lists left at their default, and
        the settings named in ``omit`` (those the model does not use, e.g. guidance of an unconditional
        model). ``placeholders`` replaces the values of path fields the caller cannot know
        (e.g. ``{"image": "IMAGE.png"}``)."""
        placeholders = placeholders or {}
        positional: list[str] = []
        flags: list[str] = []
        for f in dataclasses.fields(self):
            spec = spec_of(f)
            if not spec.cli or f.name in omit:
                continue
            v = getattr(self, f.name)
            if f.name in placeholders:
                text = placeholders[f.name]
                text = " ".join(shlex.quote(t) for t in text) if isinstance(text, (list, tuple)) else text
            elif not spec.positional and _equal(v, f.default) and (v is None or v == "" or v == ()):
                continue
            else:
                text = _cli_value(v, field_type(type(self), f), spec)
            if spec.positional:
                positional += [text] if text else []
            elif text is not None:
                flags.append(_cli_flag(f, v, text))
        return " ".join(["python -m lowdim_app", self.COMMAND] + positional + flags + ([extra] if extra else []))


def _cli_value(v, ft: FieldType, spec: Spec) -> str | None:
    """A setting's value as shell text (``None``: nothing to write, e.g. an empty list flag)."""
    if ft.item in (str, FileRef):
        return " ".join(shlex.quote(str(x)) for x in v) if v or spec.positional else None
    if ft.base is FileRef:
        return shlex.quote(str(v))
    if ft.base is bool:
        return ""
    if v is None:
        return "auto"
    return shlex.quote(_format(v, ft, spec))


def _cli_flag(f: dataclasses.Field, v, text: str) -> str:
    if isinstance(v, bool):
        return _flag(f) if v else "--no-" + f.name.replace("_", "-")
    return f"{_flag(f)}={text}" if text.startswith("-") else f"{_flag(f)} {text}"


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
def _help(f: dataclasses.Field, ft: FieldType, spec: Spec) -> str:
    """Help text with the bounds, choices and default appended (``%`` escaped for argparse)."""
    bits = []
    if spec.lo is not None or spec.hi is not None:
        bits.append(f"{'' if spec.lo is None else fmt(spec.lo)}..{'' if spec.hi is None else fmt(spec.hi)}"
                    + (f" {spec.unit}" if spec.unit else ""))
    if spec.choices:
        bits.append("one of " + ", ".join(map(str, spec.choices)))
    default = None if f.default is dataclasses.MISSING else f.default
    if not spec.positional and f.default is not dataclasses.MISSING and default != () and ft.base is not FileRef:
        bits.append("default: " + ("auto" if default is None else "''" if default == "" else _format(default, ft, spec)))
    text = spec.help
    if bits:
        text = f"{text} ({'; '.join(bits)})" if text else "; ".join(bits)
    return text.replace("%", "%%")


def add_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """One argparse argument per field of ``cls``; values are parsed as text and validated by
    the dataclass itself (so the CLI, the API and Python share one validation path)."""
    for f in dataclasses.fields(cls):
        spec = spec_of(f)
        if not spec.cli:
            continue
        ft = field_type(cls, f)
        kw = {"help": _help(f, ft, spec)}
        if spec.positional:
            if ft.item in (str, FileRef):
                required = f.default is dataclasses.MISSING
                kw.update(nargs="+" if required else "*", **({} if required else {"default": list(f.default)}))
            parser.add_argument(f.name, metavar=f.name.upper(), **kw)
            continue
        kw.update(dest=f.name, default=argparse.SUPPRESS)
        if ft.base is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw.update(metavar="LIST" if ft.base is tuple and ft.item not in (str, FileRef) else f.name.upper(),
                      **({"nargs": "+"} if ft.item in (str, FileRef) else {}))
        parser.add_argument(_flag(f), **kw)


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
