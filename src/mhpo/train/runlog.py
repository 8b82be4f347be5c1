"""Metrics logs that survive crashes: one JSON object per line, each written with a single
``write`` of a complete line and flushed to disk; readers skip a torn last line."""

from __future__ import annotations

import errno
import json
import math
import os
import pathlib
from typing import Any

from ..files import atomic_write_text, disk_full


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf; None reads back as "not defined at this step"
    return value


class MetricsLog:
    """Append-only ``metrics.jsonl``."""

    def __init__(self, path: str | pathlib.Path) -> None:
        self.path = pathlib.Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, record: dict[str, Any]) -> None:
        """Write one line whole, or not at all: a short write (a full disk) is cut back off the
        file, and a full disk is the one-line message of :func:`disk_full`."""
        line = (json.dumps({k: _clean(v) for k, v in record.items()}, sort_keys=True) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        size = os.fstat(fd).st_size
        try:
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(errno.ENOSPC, f"short write: {written} of {len(line)} bytes")
            os.fsync(fd)
        except OSError as error:
            os.ftruncate(fd, size)  # no torn line left behind
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise ValueError(disk_full(self.path.parent, len(line))) from None
            raise
        finally:
            os.close(fd)

    def truncate_after(self, step: int) -> None:
        """Keep only records with ``step <= step`` (used when resuming from a checkpoint)."""
        kept = [r for r in read_metrics(self.path) if r.get("step", -1) <= step]
        atomic_write_text(self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))


def read_metrics(path: str | pathlib.Path) -> list[dict[str, Any]]:
    """All complete records of a metrics file; a torn or corrupt line is skipped."""
    path = pathlib.Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _scalars(record: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in record.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}  # fmt: skip


def open_trackers(names: list[str], out: pathlib.Path, project: str, config: dict[str, Any]) -> list:
    """Open the trackers named by --report-to (metrics.jsonl is always written). A missing
    package fails here, before any work, with the install command."""
    trackers = []
    try:
        for name in names:
            if name == "tensorboard":
                trackers.append(TensorBoardLog(out / "tensorboard"))
            elif name == "trackio":
                trackers.append(TrackioLog(project, out.name, config))
            elif name == "wandb":
                trackers.append(WandbLog(project, out.name, config, out))
            else:
                raise ValueError(f"--report-to: unknown tracker '{name}'; use tensorboard, trackio or wandb.")
    except BaseException:
        for tracker in trackers:
            tracker.close()
        raise
    return trackers


class TrackioLog:
    """Metrics mirrored to trackio (local-first: a SQLite store under ~/.cache/huggingface/trackio,
    shown by ``trackio show``)."""

    def __init__(self, project: str, name: str, config: dict[str, Any]) -> None:
        try:
            import trackio
        except ImportError:
            raise ValueError("--report-to trackio needs the trackio package: pip install 'mhpo[tracking]'.") from None
        self.trackio = trackio
        self.run = trackio.init(project=project, name=name, config=config, resume="allow")

    def append(self, record: dict[str, Any]) -> None:
        self.trackio.log(_scalars(record), step=int(record["step"]))

    def close(self) -> None:
        self.trackio.finish()


class WandbLog:
    """Metrics mirrored to Weights & Biases (``WANDB_MODE=offline`` keeps them local)."""

    def __init__(self, project: str, name: str, config: dict[str, Any], out: pathlib.Path) -> None:
        try:
            import wandb
        except ImportError:
            raise ValueError("--report-to wandb needs the wandb package: pip install 'mhpo[tracking]'.") from None
        self.run = wandb.init(project=project, name=name, config=config, dir=str(out), resume="allow",
                              id=_wandb_id(out))  # fmt: skip

    def append(self, record: dict[str, Any]) -> None:
        self.run.log(_scalars(record), step=int(record["step"]))

    def close(self) -> None:
        self.run.finish()


def _wandb_id(out: pathlib.Path) -> str:
    """One W&B run per run directory, so that a resumed run continues its own W&B run."""
    import hashlib

    return "mhpo-" + hashlib.sha256(str(out.resolve()).encode()).hexdigest()[:12]


class TensorBoardLog:
    """Optional TensorBoard mirror of the metrics (needs the tensorboard package)."""

    def __init__(self, directory: str | pathlib.Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ValueError("--tensorboard needs the tensorboard package: pip install 'mhpo[train]'.") from error
        self.writer = SummaryWriter(str(directory))

    def append(self, record: dict[str, Any]) -> None:
        step = record["step"]
        for key, value in _scalars(record).items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
