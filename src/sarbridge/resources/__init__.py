"""Data files shipped with sarbridge (the embedded HOSS sample and the demo config)."""

from __future__ import annotations

from pathlib import Path


def resource_path(name: str) -> Path:
    """Path of a file or folder in ``sarbridge/resources``."""
    return Path(__file__).resolve().parent / name
