"""The ``medattn`` command line: parse, call the library, print.

Each sub-command is registered by one ``_add_<name>`` function below and does its work through a
public library call, so everything here can also be done from a notebook.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from medattn import __version__
from medattn.errors import MedattnError

# ---------------------------------------------------------------------------------------------
# Sub-commands. Keep each one short: argument parsing plus one library call.
# ---------------------------------------------------------------------------------------------


_REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = []


def command(fn: Callable[[argparse._SubParsersAction], None]):
    """Register a function that adds one sub-parser (keeps the list in file order)."""
    _REGISTRARS.append(fn)
    return fn


# --- commands start ---------------------------------------------------------------------------
# --- commands end -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medattn",
        description="Rigorous studies of self-attention in medical image classification.",
    )
    parser.add_argument("--version", action="version", version=f"medattn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in _REGISTRARS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        result = args.func(args)
    except MedattnError as err:
        print(f"medattn {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"medattn {args.command}: interrupted; finished work is kept, run again to resume.",
              file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
