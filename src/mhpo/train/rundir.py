"""A run directory: ``config.yaml`` (the run's identity), ``metrics.jsonl``, ``checkpoints/``
and ``done``. This module is the one place that opens a saved run: the trainer (to start or
resume one, locked for the life of the run so that a second process cannot interleave its logs
and checkpoints with the first's), and evaluation, export, studies and reports (to read one)."""

from __future__ import annotations

import os
import pathlib
import time
from typing import Any

import yaml

from ..files import atomic_write_text
from .checkpoint import list_checkpoints, load_latest, save_checkpoint
from .config import RESUMABLE, TrainConfig
from .runlog import MetricsLog, read_metrics

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks; documented
    fcntl = None

LOCK_NAME = ".lock"
CONFIG, METRICS, DONE, CHECKPOINTS = "config.yaml", "metrics.jsonl", "done", "checkpoints"


def saved_config(directory: str | pathlib.Path) -> dict[str, Any] | None:
    """The configuration saved in ``directory`` as written (None when it has no config.yaml);
    ValueError when it cannot be read or is not a training configuration."""
    path = pathlib.Path(directory) / CONFIG
    if not path.exists():
        return None
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"its config.yaml cannot be read ({str(error).splitlines()[0]})") from None
    if not isinstance(config, dict) or not isinstance(config.get("objective"), str):
        raise ValueError("its config.yaml is not a training configuration (no objective)")
    return config


def run_config(directory: str | pathlib.Path) -> TrainConfig:
    """The configuration of the run in ``directory``, for reading the run (evaluate, export)."""
    directory = pathlib.Path(directory)
    if not (directory / CONFIG).is_file():
        raise ValueError(f"{directory} has no config.yaml; pass a run directory written by mhpo train.")
    try:
        return TrainConfig.from_dict(saved_config(directory))
    except ValueError as error:
        raise ValueError(f"{directory}: {error}") from None


def latest_state(directory: str | pathlib.Path, log=None) -> dict[str, Any]:
    """The state of the latest readable checkpoint of the run in ``directory``."""
    checkpoints = pathlib.Path(directory) / CHECKPOINTS
    state = load_latest(checkpoints, log=log)
    if state is None:
        raise ValueError(f"no checkpoint in {checkpoints}; a run writes one at its end and every --checkpoint-every steps.")
    return state


class RunDirectory:
    """Owns ``path`` (and ``path/checkpoints``) until :meth:`release` or process exit."""

    def __init__(self, path: str | pathlib.Path) -> None:
        self.path = pathlib.Path(path)
        self.checkpoints = self.path / CHECKPOINTS
        self._handle = None
        for directory in (self.path, self.checkpoints):
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise ValueError(f"cannot create the output directory {directory}: {error.strerror}; "
                                 "choose a writable --output-dir.") from None  # fmt: skip
            if not os.access(directory, os.W_OK | os.X_OK):
                raise ValueError(f"the output directory {directory} is not writable; choose a writable --output-dir.")
        self._lock()

    def _lock(self) -> None:
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

    def metrics_log(self) -> MetricsLog:
        return MetricsLog(self.path / METRICS)

    def resume_state(self, cfg: TrainConfig, log=print) -> dict[str, Any] | None:
        """What the directory holds, checked against ``cfg``: the latest checkpoint's state to
        resume from, or None to start at step 0. Raises ValueError for a fresh start over an
        earlier run, for a resume with another configuration, and when no checkpoint can be
        read; nothing is deleted."""
        out, metrics = self.path, self.path / METRICS
        if not cfg.resume:
            if list_checkpoints(self.checkpoints) or read_metrics(metrics):
                raise ValueError(f"{out} holds an earlier run; pass --resume to continue it, or choose another "
                                 "--output-dir (nothing was overwritten).")  # fmt: skip
            return None
        state = load_latest(self.checkpoints, log=log)
        try:  # config.yaml lost: the checkpoint carries the configuration too
            saved = saved_config(out) if (out / CONFIG).exists() else (state["config"] if state is not None else None)
        except ValueError as error:
            raise ValueError(f"cannot resume {out}: {error}; restore it, or choose another --output-dir.") from None
        changes = cfg.changes_from(saved) if saved else []
        if changes:
            raise ValueError(
                f"cannot resume {out} with another configuration; only {', '.join(RESUMABLE)} may change. "
                "Differences:\n    " + "\n    ".join(changes) + "\n  Resume with the saved options "
                f"(mhpo train --config {out / CONFIG} --resume), or choose another --output-dir."
            )
        if state is None:
            if metrics.exists():  # interrupted before its first checkpoint: start again, keep the old log
                kept = out / f"{METRICS}.before-restart-{time.strftime('%Y%m%d-%H%M%S')}"
                metrics.rename(kept)
                log(f"resume: no checkpoint in {self.checkpoints}; starting from step 0 (earlier log kept as {kept.name})")
            return None
        if state["step"] > cfg.steps:
            raise ValueError(f"{out} has already run {state['step']} steps; ask for --steps >= {state['step']} to resume it.")
        return state

    def write_config(self, cfg: TrainConfig) -> None:
        atomic_write_text(self.path / CONFIG, yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    def save(self, step: int, state: dict[str, Any], keep: int) -> pathlib.Path:
        return save_checkpoint(self.checkpoints, step, state, keep=keep)

    def mark_done(self, step: int) -> None:
        atomic_write_text(self.path / DONE, f"{step}\n")

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the file releases the lock
            self._handle = None

    def __del__(self) -> None:
        self.release()
