"""``python -m lowdim_app <command>``: every UI action as a seeded command.

Command modules (``lowdim_app/commands/*.py``) each add their subcommands through
``register(sub)``; handlers return an exit code. A :class:`~lowdim_app.errors.UserError`
becomes ``error: <reason>`` on stderr and exit code 2, never a traceback
(set ``LOWDIM_DEBUG=1`` to see tracebacks of unexpected errors).
"""
from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

from . import __version__
from .errors import UserError

COMMAND_MODULES = [
    "lowdim_app.commands.core",
    "lowdim_app.commands.theory",
    "lowdim_app.commands.molrg",
    "lowdim_app.commands.editing",
    "lowdim_app.commands.memorization",
    "lowdim_app.commands.steering",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lowdim_app",
                                     description="LowDim Lab: low-dimensional structure of diffusion models.")
    parser.add_argument("--version", action="version", version=f"lowdim_app {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


_NEGATIVE_RANGE = re.compile(r"^-\d[\d.]*(:|,)")


def _join_negative_ranges(argv: list[str]) -> list[str]:
    """Let ``--alpha -6:6:7`` work: argparse would read ``-6:6:7`` as an option."""
    out: list[str] = []
    for a in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and _NEGATIVE_RANGE.match(a):
            out[-1] = f"{out[-1]}={a}"
        else:
            out.append(a)
    return out


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    parser = build_parser()
    args = parser.parse_args(_join_negative_ranges(list(sys.argv[1:] if argv is None else argv)))
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # last resort: one line, not a stack trace
        if os.environ.get("LOWDIM_DEBUG"):
            raise
        print(f"error: unexpected {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''} "
              "(set LOWDIM_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
