"""``python -m lowdim_app <command>``: every action of the app as a seeded command.

The commands are generated from the feature layer (:mod:`lowdim_app.features`): one flag per
setting, validated by the settings dataclass. A :class:`~lowdim_app.errors.UserError` becomes
``error: <reason>`` on stderr and exit code 2, never a traceback (set ``LOWDIM_DEBUG=1`` to see
tracebacks of unexpected errors).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys

from . import __version__
from .errors import UserError


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line as ``error: ...`` with exit code 2."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _stage_printer(command: str):
    last = {"msg": None}

    def show(fraction, message):
        if message and message != last["msg"]:
            last["msg"] = message
            print(f"[{command}] {message}", file=sys.stderr, flush=True)
    return show


def _process_group(device: str):
    """accelerate's process state when launched by ``torchrun`` / ``accelerate launch`` (gloo on CPU,
    NCCL with one GPU per process); ``None`` for a plain one-process run."""
    if "LOCAL_RANK" not in os.environ and "RANK" not in os.environ:
        return None
    import torch
    from accelerate import PartialState

    return PartialState(cpu=device == "cpu" or not torch.cuda.is_available())


def _local_processes() -> int:
    """Processes of this command on this machine (``torchrun`` / ``accelerate launch`` say how many)."""
    text = os.environ.get("LOCAL_WORLD_SIZE", "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else 1


OUTPUT_ARGS = ("out", "json", "png", "csv", "save_direction", "save_vector")   # every path a command writes


def _check_writable(args) -> None:
    """Refuse, before any computation, an output path the command could not create: the nearest folder
    that exists must be a folder where a file can be made (tried with a temporary file, which is removed)."""
    import tempfile
    from pathlib import Path

    for name in OUTPUT_ARGS:
        value = getattr(args, name, None)
        if not isinstance(value, str) or not value.strip():
            continue
        folder = Path(value)
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        flag = "--" + name.replace("_", "-")
        if folder.exists() and not folder.is_dir():
            if folder == Path(value) and os.access(folder, os.W_OK):
                continue   # an existing file: overwritten
            raise UserError(f"{flag} {value}: cannot write there ({folder} is a file, not a folder)")
        try:
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as err:
            raise UserError(f"{flag} {value}: cannot write there (no file can be created in {folder}: "
                            f"{err.strerror or type(err).__name__})") from None


def _run_feature(feature, args) -> int:
    from . import threads
    from .config import from_environment
    from .features.base import Progress
    from .features.settings import from_args

    threads.apply(workers=_local_processes())
    runtime = from_environment()
    if getattr(args, "device", None):
        runtime = dataclasses.replace(runtime, device=args.device)
    settings = from_args(feature.Settings, args)
    _check_writable(args)
    quiet = getattr(args, "quiet", False)
    progress = Progress(None if quiet else _stage_printer(feature.name), bars=not quiet)
    inputs = feature.cli_inputs(args)
    if feature.distributed:
        inputs["state"] = _process_group(runtime.device)
    result = feature.run(settings, runtime=runtime, progress=progress, **inputs)
    try:
        lines = feature.write_outputs(result, args)
    except OSError as err:   # e.g. the disk filled up or the folder went away during the run
        raise UserError(f"cannot write {err.filename or 'the output'}: {err.strerror or type(err).__name__}") from None
    for line in lines:
        print(line)
    return 0


def _add_feature(sub, feature) -> None:
    from .features.settings import add_arguments

    p = sub.add_parser(feature.name, help=feature.help, description=feature.help)
    add_arguments(p, feature.Settings)
    uses_model = feature.uses_model
    if uses_model is None:
        uses_model = any(f.name == "model" for f in dataclasses.fields(feature.Settings))
    if uses_model:
        p.add_argument("--device", default=None, help="cpu, cuda, ... (default: LOWDIM_DEVICE or auto)")
    feature.add_output_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=lambda args, f=feature: _run_feature(f, args))


def _cmd_serve(args) -> int:
    from .ui.app import launch

    launch(host=args.host, port=args.port)
    return 0


def _cmd_models(args) -> int:
    from .config import from_environment
    from .diffusion.registry import list_models

    for e in list_models(from_environment()):
        state = "ready" if e.available else "unavailable"
        print(f"{e.model_id:34s} {e.kind:8s} {state:12s} {e.description}" + (f" ({e.detail})" if e.detail else ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .features import all_features

    parser = _Parser(prog="python -m lowdim_app",
                     description="LowDim Lab: low-dimensional structure of diffusion models.")
    parser.add_argument("--version", action="version", version=f"lowdim_app {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    p = sub.add_parser("serve", help="start the web app")
    p.add_argument("--host", default=None, help="default: GRADIO_SERVER_NAME or 127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="default: GRADIO_SERVER_PORT or 7860")
    p.set_defaults(func=_cmd_serve)
    p = sub.add_parser("models", help="list models and whether they can be loaded here")
    p.set_defaults(func=_cmd_models)
    for feature in all_features():
        _add_feature(sub, feature)
    return parser


_NEGATIVE_VALUE = re.compile(r"^-(\d|\.\d)[\d.eE+-]*([:,][-\d.eE+]+)*$")


def _join_negative_values(argv: list[str]) -> list[str]:
    """Let ``--alpha -6:6:7`` and ``--p-mean -1.2`` work: argparse would read them as options."""
    out: list[str] = []
    for a in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and _NEGATIVE_VALUE.match(a):
            out[-1] = f"{out[-1]}={a}"
        else:
            out.append(a)
    return out


def main(argv: list[str] | None = None) -> int:
    from . import threads

    threads.prefer_passive_waiting()     # before torch is imported (OpenMP reads it once)
    from .data.images import ImageError
    from .features.base import Cancelled

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    parser = build_parser()
    try:
        args = parser.parse_args(_join_negative_values(list(sys.argv[1:] if argv is None else argv)))
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        return int(args.func(args) or 0)
    except (UserError, ImageError) as err:
        print(f"error: {str(err).splitlines()[0] if str(err) else type(err).__name__}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Cancelled):
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # last resort: one line, not a stack trace
        if os.environ.get("LOWDIM_DEBUG"):
            raise
        print(f"error: unexpected {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''} "
              "(set LOWDIM_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
