"""A run directory held by one process: created and checked writable before any work, and
locked for the life of the run so that a second process cannot interleave its logs and
checkpoints with the first's."""

from __future__ import annotations

import os
import pathlib

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks; documented
    fcntl = None

LOCK_NAME = ".lock"


class RunDirectory:
    """Owns ``path`` (and ``path/checkpoints``) until :meth:`release` or process exit."""

    def __init__(self, path: str | pathlib.Path) -> None:
        self.path = pathlib.Path(path)
        self._handle = None
        for directory in (self.path, self.path / "checkpoints"):
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise ValueError(f"cannot create the output directory {directory}: {error.strerror}; "
                                 "choose a writable --output-dir.") from None  # fmt: skip
            if not os.access(directory, os.W_OK | os.X_OK):
                raise ValueError(f"the output directory {directory} is not writable; choose a writable --output-dir.")
        try:
            self._handle = open(self.path / LOCK_NAME, "a+")  # noqa: SIM115 - held for the run's life
        except OSError as error:
            raise ValueError(f"cannot write in {self.path}: {error.strerror}; choose a writable --output-dir.") from None
        if fcntl is not None:
            try:
                fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._handle.close()
                self._handle = None
                raise ValueError(
                    f"{self.path} is in use by another mhpo process; wait for it to finish, or choose another "
                    "--output-dir."
                ) from None
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(f"{os.getpid()}\n")
        self._handle.flush()

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the file releases the lock
            self._handle = None

    def __del__(self) -> None:
        self.release()
