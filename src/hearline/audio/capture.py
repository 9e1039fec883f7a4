"""Microphone and system-audio capture (placeholder: the captions issue fills this in)."""

from __future__ import annotations

import argparse


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``devices`` command to the CLI."""
    return None
