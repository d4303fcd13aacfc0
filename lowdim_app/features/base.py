"""The feature layer: every user action declared once.

A feature (one module in :mod:`lowdim_app.features`) is a :class:`Feature` with

* ``Settings``: a frozen :class:`~.settings.Settings` dataclass (types, defaults, bounds, help);
* ``cost(settings)``: a :class:`Cost` -- network passes and a CPU-seconds estimate at a reference
  size, used to size GPU durations and budgets;
* ``run(settings, *, runtime, progress, should_stop)``: the computation (seeded, no gradio, no
  environment reads) returning a :class:`Result` that renders itself (JSON, CSV, figure, images,
  files); ``stream(...)`` yields partial results for actions the UI shows live.

The CLI (:mod:`lowdim_app.cli`) and the Gradio tabs (:mod:`lowdim_app.ui`) are thin adapters:
they build the settings from their inputs, call ``run``/``stream`` and show the result.
"""
from __future__ import annotations

import csv
import io
import json
import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

from ..config import Runtime
from ..errors import UserError
from .settings import Settings


class Cancelled(Exception):
    """Raised inside a run when ``should_stop()`` turned true; adapters report "cancelled"."""


@dataclass(frozen=True)
class Cost:
    """Estimated work of one run.

    ``forward``/``jvp``/``vjp``: network evaluations (one sample each; a JVP costs about two
    forwards and a VJP about three in memory and time); ``cpu_seconds``: work outside networks
    (or of a whole synthetic lab) on one reference CPU core. ``note`` says how it was estimated."""

    forward: int = 0
    jvp: int = 0
    vjp: int = 0
    cpu_seconds: float = 0.0
    note: str = ""

    @property
    def forward_equivalents(self) -> float:
        return self.forward + 2.0 * self.jvp + 3.0 * self.vjp

    def seconds(self, seconds_per_forward: float) -> float:
        """Wall-time estimate given the model's measured seconds per forward pass."""
        return self.forward_equivalents * seconds_per_forward + self.cpu_seconds

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.forward + other.forward, self.jvp + other.jvp, self.vjp + other.vjp,
                    self.cpu_seconds + other.cpu_seconds, "; ".join(n for n in (self.note, other.note) if n))


ProgressFn = Callable[[float | None, str], None]


class Progress:
    """What a run reports: ``stage(fraction, message)``; ``bars`` says whether the library's tqdm
    bars should show (the CLI shows them; the UI tracks them through ``gr.Progress``)."""

    def __init__(self, fn: ProgressFn | None = None, bars: bool = False, should_stop: Callable[[], bool] | None = None):
        self.fn = fn
        self.bars = bars
        self.should_stop = should_stop or (lambda: False)

    def __call__(self, fraction: float | None, message: str = "") -> None:
        self.check()
        if self.fn is not None:
            self.fn(fraction, message)

    def check(self) -> None:
        """Raise :class:`Cancelled` when the caller asked to stop."""
        if self.should_stop():
            raise Cancelled()

    @classmethod
    def wrap(cls, progress, should_stop=None) -> "Progress":
        if isinstance(progress, Progress):
            if should_stop is not None:
                progress.should_stop = should_stop
            return progress
        return cls(progress, bars=False, should_stop=should_stop)


def jsonable(x):
    """Numbers, lists and dicts only; NaN and inf become ``None`` (strict JSON)."""
    import numpy as np
    import torch

    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, torch.Tensor):
        return jsonable(x.detach().cpu().tolist())
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, Path):
        return str(x)
    return x


def dumps(obj, indent: int | None = 1) -> str:
    return json.dumps(jsonable(obj), indent=indent, allow_nan=False)


def csv_text(header: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


@dataclass
class Result:
    """Base of every action's result. Subclasses fill ``settings`` and override what applies."""

    settings: Settings
    finished: bool = True
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"command": self.settings.COMMAND, "settings": self.settings.to_dict(), **self.numbers()}

    def numbers(self) -> dict:
        return {}

    def to_csv(self) -> str | None:
        return None

    def figure(self):
        """A matplotlib Figure (or ``None``)."""
        return None

    def images(self) -> dict[str, Any]:
        """Named PIL images (strips, grids) this result shows."""
        return {}

    def summary(self) -> str:
        """A few lines for the terminal and the UI's status text."""
        return ""

    def reproduce(self, **kw) -> str:
        return self.settings.to_cli(**kw)

    # -- files
    def write_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dumps(self.to_json()))
        return path

    def write_csv(self, path: str | Path) -> Path:
        text = self.to_csv()
        if text is None:
            raise UserError(f"{self.settings.COMMAND} has no table to write as CSV")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    figure_tight: ClassVar[bool] = True   # False for figures that lay themselves out

    def write_figure(self, path: str | Path, dpi: int | None = None) -> Path:
        from ..plots.common import save_figure

        fig = self.figure()
        if fig is None:
            raise UserError(f"{self.settings.COMMAND} has no figure")
        return save_figure(fig, path, dpi=dpi or (110 if self.figure_tight else None), tight=self.figure_tight)


@dataclass
class StagedResult(Result):
    """A result built stage by stage (the theory labs): every number in ``values``, the stage names,
    how many finished and the wall time; ``summary_lines()`` says what the numbers show."""

    values: dict = field(default_factory=dict)
    stages: list[str] = field(default_factory=list)
    completed: int = 0
    wall_s: float = 0.0
    figure_tight: ClassVar[bool] = False

    def numbers(self) -> dict:
        return {"wall_s": round(self.wall_s, 2), "numbers": self.values}

    def summary_lines(self) -> list[str]:
        return []

    def summary(self) -> str:
        return "\n".join(self.summary_lines() + [f"done in {self.wall_s:.1f} s"])


class Feature:
    """One user action. Subclasses set ``name``, ``Settings`` and implement ``run`` (and
    ``stream`` when partial results exist)."""

    name: ClassVar[str] = ""
    help: ClassVar[str] = ""
    Settings: ClassVar[type[Settings]] = Settings
    uses_model: ClassVar[bool | None] = None   # adds --device on the CLI; None: when the settings have `model`
    distributed: ClassVar[bool] = False        # run() takes ``state`` (a process group under torchrun / accelerate)

    def cost(self, settings, unet_config: dict | None = None) -> Cost:
        """Work of one run; ``unet_config`` (the model's U-Net config, when known) lets a feature size
        it by the model (guidance doubles the batch of a text model, n = C x H x W, ...)."""
        return Cost()

    def run(self, settings, *, runtime: Runtime | None = None, progress=None, should_stop=None, **inputs) -> Result:
        res = None
        for res in self.stream(settings, runtime=runtime, progress=progress, should_stop=should_stop, **inputs):
            pass
        if res is None:
            raise RuntimeError(f"{self.name}: stream produced no result")
        return res

    def stream(self, settings, *, runtime: Runtime | None = None, progress=None, should_stop=None,
               **inputs) -> Iterator[Result]:
        """Partial results as they exist, the final one last (``finished=True``)."""
        yield self.run(settings, runtime=runtime, progress=progress, should_stop=should_stop, **inputs)

    def settings(self, **raw):
        return self.Settings.from_raw(**raw)

    # -- CLI outputs: which files a command can write besides what it prints
    outputs: ClassVar[tuple[str, ...]] = ("json",)
    echo_command: ClassVar[bool] = False    # print the reproducing command line (with its output files) first

    def add_output_arguments(self, parser) -> None:
        helps = {"json": "write the settings and all numbers to this JSON file",
                 "png": "write the figure to this PNG file", "csv": "write the table to this CSV file"}
        for kind in self.outputs:
            parser.add_argument(f"--{kind}", default=None, metavar="PATH", help=helps[kind])

    def cli_inputs(self, args) -> dict:
        """Extra ``run`` inputs taken from output-side CLI arguments (e.g. the folder ``train`` writes)."""
        return {}

    def write_outputs(self, result: Result, args) -> list[str]:
        """Print the summary and write the files the command line asked for; returns the lines."""
        lines = [result.summary()] if result.summary() else []
        if self.echo_command:
            files = " ".join(f"--{k} {shlex.quote(getattr(args, k))}" for k in self.outputs if getattr(args, k, None))
            lines.insert(0, result.reproduce(extra=files))
        writers = {"json": result.write_json, "png": result.write_figure, "csv": result.write_csv}
        for kind in self.outputs:
            path = getattr(args, kind, None)
            if path:
                lines.append(f"wrote {writers[kind](path)}")
        return lines


def runtime_or_default(runtime: Runtime | None) -> Runtime:
    """The operator's settings passed by the adapter, or the built-in defaults (no environment read)."""
    return runtime if runtime is not None else Runtime()
