"""Errors in OpenAI's envelope (placeholder: the REST issue fills this in)."""

from fastapi import FastAPI


def install_error_handlers(app: FastAPI) -> None:
    return None
