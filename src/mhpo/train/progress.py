"""A rich progress bar of a run with reward, loss, grad norm and tokens/s, or nothing."""

from __future__ import annotations


class progress:  # noqa: N801 - used as a context manager, like open()
    """``with progress(enabled, total, completed) as advance: advance(record)``."""

    def __init__(self, enabled: bool, total: int, completed: int) -> None:
        self.enabled, self.total, self.completed = enabled, total, completed

    def __enter__(self):
        if not self.enabled:
            return lambda record: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("[bold]RL"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                            TextColumn("{task.fields[info]}"), transient=False)  # fmt: skip
        self.bar.start()
        self.task = self.bar.add_task("train", total=self.total, completed=self.completed, info="")

        def advance(record):
            info = (f"reward {record['reward/mean']:.3f}  loss {record['loss']:+.4f}  "
                    f"grad {record['grad_norm/max']:.2f}  {record['tokens/rollout_per_s']:.0f} tok/s")  # fmt: skip
            self.bar.update(self.task, advance=1, info=info)

        return advance

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.stop()
        return False
