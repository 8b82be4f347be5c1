"""Atomic checkpoints: written to a temporary file, synced, then renamed into place, so a
process killed at any moment leaves either the previous checkpoint or the new one, never a
half-written file that would be loaded."""

from __future__ import annotations

import os
import pathlib
import re
from typing import Any

import torch

_NAME = re.compile(r"^step-(\d{6,})\.pt$")


def save_checkpoint(directory: str | pathlib.Path, step: int, state: dict[str, Any], keep: int = 2) -> pathlib.Path:
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"step-{step:06d}.pt"
    tmp = directory / f".{path.name}.tmp-{os.getpid()}"
    with open(tmp, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    for stale in directory.glob(".step-*.pt.tmp-*"):  # left by a process killed mid-write
        if not stale.name.endswith(f"-{os.getpid()}"):
            stale.unlink(missing_ok=True)
    return path


def list_checkpoints(directory: str | pathlib.Path) -> list[pathlib.Path]:
    """Complete checkpoints, oldest first (temporary files are never listed)."""
    directory = pathlib.Path(directory)
    if not directory.exists():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def load_latest(directory: str | pathlib.Path) -> dict[str, Any] | None:
    """The newest checkpoint that loads; a corrupt file is skipped with a warning."""
    for path in reversed(list_checkpoints(directory)):
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as error:  # a damaged file: fall back to the previous one
            print(f"warning: skipping unreadable checkpoint {path}: {error}")
    return None
