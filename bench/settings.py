"""``--set FLEAD_NAME=VALUE``: a setting for every replay a benchmark makes.

The benchmarks run FLEAD without the caller's ``FLEAD_*`` environment, so that a shell's
leftovers do not change a table; a setting measured on purpose is named on the command line.
"""

from __future__ import annotations

import argparse


def setting(text: str) -> tuple[str, str]:
    """``FLEAD_NAME=VALUE`` as a pair; anything else is an argparse error that says why."""
    name, equals, value = text.partition("=")
    if not equals or not name.startswith("FLEAD_") or name != name.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not FLEAD_NAME=VALUE")
    return name, value


def add_set_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        type=setting,
        action="append",
        default=[],
        metavar="FLEAD_NAME=VALUE",
        help="a setting for every replay (a row's own settings come first); repeatable",
    )
