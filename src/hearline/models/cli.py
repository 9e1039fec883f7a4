"""`hearline models ...` (placeholder: the models issue fills this in)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``models`` command to the CLI."""
    return None
