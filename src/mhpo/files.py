"""Files that appear whole or not at all: every artifact mhpo writes (checkpoints, logs'
rewrites, configurations, reports, plots, exported models) goes through :func:`atomic_path`."""

from __future__ import annotations

import contextlib
import errno
import os
import pathlib
import shutil
from collections.abc import Iterator

MiB = 2**20


def disk_full(directory: str | pathlib.Path, need: int | None = None) -> str:
    """The message for a write that found no room: where, how much was needed and is free."""
    free = shutil.disk_usage(directory).free
    needs = f"it needs about {max(need, MiB) / MiB:.0f} MiB and " if need is not None else ""
    return (f"not enough disk space in {directory}: {needs}{free / MiB:.0f} MiB are free. Free some space, then "
            "rerun with --resume (the previous checkpoint is intact).")  # fmt: skip


def _is_disk_full(error: BaseException) -> bool:
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    # torch.save reports a failed write of its zip stream as a RuntimeError
    return isinstance(error, RuntimeError) and ("writ" in str(error).lower() or "unexpected pos" in str(error))


def _sync(path: pathlib.Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _remove(tmp: pathlib.Path) -> None:
    if tmp.is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | pathlib.Path, *, need: int | None = None) -> Iterator[pathlib.Path]:
    """A temporary path beside ``path`` to write a file (or a directory) into; when the block
    ends, the file is synced and renamed to ``path`` (the rename is synced too). When the block
    raises, the temporary is removed and nothing at ``path`` changes; a full disk is raised as
    ValueError with the message of :func:`disk_full` (``need``: the bytes the write needed).

    >>> import pathlib, tempfile
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("whole")
    >>> target.read_text(), sorted(p.name for p in target.parent.iterdir())
    ('whole', ['a.txt'])
    """
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    _remove(tmp)  # this process's own leftover (never a user's file: the name is the process's)
    try:
        yield tmp
        if tmp.is_file():
            _sync(tmp)
    except BaseException as error:
        _remove(tmp)
        if _is_disk_full(error):
            raise ValueError(disk_full(path.parent, need)) from None
        raise
    os.replace(tmp, path)
    _sync(path.parent)


def atomic_write_text(path: str | pathlib.Path, text: str) -> None:
    """Write ``path`` whole or not at all (see :func:`atomic_path`)."""
    with atomic_path(path, need=len(text.encode())) as tmp, open(tmp, "w") as handle:
        handle.write(text)


def cache_dir(configured: str = "") -> pathlib.Path:
    """mhpo's cache (warm starts, the converted SmolLM2): ``configured``, else $MHPO_CACHE,
    else ~/.cache/mhpo."""
    return pathlib.Path(configured or os.environ.get("MHPO_CACHE") or pathlib.Path.home() / ".cache" / "mhpo")
