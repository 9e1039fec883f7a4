"""Hearline: a self-hosted, offline speech-to-text server."""

__version__ = "0.1.0"
