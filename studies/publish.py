"""Copy the studies' compact results into docs/results and rebuild every report from the CSVs.

    .venv/bin/python studies/publish.py          # after studies/stability.py and studies/smollm2.py

For each study cell, runs.csv (per-step metrics of every run) and timing.json are copied from
the study directory; report.md, curves.png and stability.png are then rebuilt from runs.csv
alone, by the same code as `mhpo report runs.csv`, so what docs/results shows is what the
committed CSV gives. Without the run directories (a fresh clone), the same command with
--from-docs rebuilds the reports from the committed CSVs.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
from pathlib import Path

from mhpo.study.report import build_report, find_runs, summary_table
from mhpo.train.runlog import atomic_write_text

HERE = Path(__file__).resolve().parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"study_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def publish_cell(source: Path | None, target: Path, *, threshold: float, order: list[str], title: str) -> bool:
    target.mkdir(parents=True, exist_ok=True)
    if source is not None:
        if not (source / "runs.csv").exists():
            print(f"skip {source}: no runs.csv (run the study first)")
            return False
        for name in ("runs.csv", "timing.json"):
            if (source / name).exists():
                shutil.copyfile(source / name, target / name)
    if not (target / "runs.csv").exists():
        return False
    build_report([target / "runs.csv"], target, threshold=threshold, order=order, title=title)
    print(f"wrote {target / 'report.md'}")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default="results", help="where the studies wrote (default: %(default)s)")
    parser.add_argument("--docs", default="docs/results", help="published results (default: %(default)s)")
    parser.add_argument("--from-docs", action="store_true", help="rebuild from the CSVs already in --docs")
    args = parser.parse_args(argv)
    results, docs = Path(args.results), Path(args.docs)
    source = (lambda path: None) if args.from_docs else (lambda path: path)

    stability = _load("stability")
    sections = ["# Stability study: summary", ""]
    for task in stability.TASKS:
        for regime in stability.REGIMES:
            cell = f"{task}-{regime}"
            threshold = stability.TASKS[task]["threshold"]
            target = docs / "stability" / cell
            if publish_cell(source(results / "stability" / cell), target, threshold=threshold,
                            order=stability.OBJECTIVES, title=f"Stability: {cell}"):  # fmt: skip
                runs = find_runs([target / "runs.csv"])
                sections += [f"## {cell}", "", summary_table(runs, threshold=threshold, order=stability.OBJECTIVES), ""]
    atomic_write_text(docs / "stability" / "summary.md", "\n".join(sections) + "\n")

    smollm2 = _load("smollm2")
    publish_cell(source(results / "smollm2"), docs / "smollm2", threshold=smollm2.THRESHOLD,
                 order=smollm2.OBJECTIVES, title="SmolLM2-135M-Instruct on short-answer arithmetic")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
