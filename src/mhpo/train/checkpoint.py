"""Atomic checkpoints: written to a temporary file, synced, then renamed into place, so a
process killed at any moment leaves either the previous checkpoint or the new one, never a
half-written file that would be loaded."""

from __future__ import annotations

import pathlib
import pickle
import re
import shutil
import sys
from typing import Any

import torch

from ..files import atomic_path, disk_full

_NAME = re.compile(r"^step-(\d{6,})\.pt$")
_TEMPORARY = ".step-*.pt.tmp-*"
MiB = 2**20


def state_bytes(state: Any) -> int:
    """Bytes of the tensors in a (nested) checkpoint state: about the size of its file."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(state_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_bytes(v) for v in state)
    return 0


def _step(path: pathlib.Path) -> int:
    return int(_NAME.match(path.name).group(1))


def save_checkpoint(directory: str | pathlib.Path, step: int, state: dict[str, Any], keep: int = 2) -> pathlib.Path:
    """Write ``step-NNNNNN.pt`` atomically, then keep the ``keep`` newest checkpoints up to
    this step. Checkpoints of later steps (left by an earlier, longer timeline) are not
    retention's to delete: this step's write is what is known to be good."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # Temporaries of a process killed mid-write (a second writer is excluded by the run lock):
    # removed first, so that a full disk they helped fill does not fail this write too.
    for stale in directory.glob(_TEMPORARY):
        stale.unlink(missing_ok=True)
    path = directory / f"step-{step:06d}.pt"
    need = state_bytes(state) + MiB
    free = shutil.disk_usage(directory).free
    if free < need:
        raise ValueError(disk_full(directory, need))
    with atomic_path(path, need=need) as tmp, open(tmp, "wb") as handle:
        torch.save(state, handle)
    written = [p for p in list_checkpoints(directory) if _step(p) <= step]
    for old in written[:-keep]:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(directory: str | pathlib.Path) -> list[pathlib.Path]:
    """Complete checkpoints, oldest first (temporary files are never listed)."""
    directory = pathlib.Path(directory)
    if not directory.exists():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


class UnsafeCheckpoint(ValueError):
    """A file that would need arbitrary Python objects unpickled to load."""


def load_state(path: str | pathlib.Path) -> Any:
    """A checkpoint (or warm start) as tensors and plain values. Only those are unpickled
    (``weights_only=True``): a file that asks for anything else, as a crafted one from someone
    else would to run code, is refused whole and nothing in it runs."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"Unsupported global[^.]*", str(error))
        if found is None:
            raise  # a damaged file, not one that asks for code
        raise UnsafeCheckpoint(
            f"{path} holds Python objects other than tensors and plain values, so mhpo does not load it (unpickling "
            f"it could run code; {found.group(0)[:120]}). mhpo writes none; use checkpoints from runs you trust, "
            "or retrain."
        ) from None


def load_latest(directory: str | pathlib.Path, log=None) -> dict[str, Any] | None:
    """The newest checkpoint that loads (a damaged newer one is skipped with a warning); None
    when there is no checkpoint. When there are checkpoints but none loads, ValueError: a
    resume must not silently start over."""
    log = log or (lambda message: print(message, file=sys.stderr))
    unreadable = []
    for path in reversed(list_checkpoints(directory)):
        try:
            return load_state(path)
        except UnsafeCheckpoint:
            raise
        except Exception as error:  # a damaged file: fall back to the previous one
            unreadable.append(path)
            log(f"warning: skipping unreadable checkpoint {path}: {str(error)[:200]}")
    if unreadable:
        raise ValueError(
            f"no checkpoint in {directory} can be read ({', '.join(p.name for p in unreadable)} are damaged), so the "
            "run cannot resume. Restore them from a backup, or move the run directory away and start a new run; "
            "nothing was changed."
        )
    return None
