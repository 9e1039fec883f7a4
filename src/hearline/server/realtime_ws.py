"""Placeholder router; the protocol lands here."""

from fastapi import APIRouter

router = APIRouter()
