"""Copy the studies' compact results into docs/results and rebuild every report from the CSVs.

    .venv/bin/python studies/publish.py   # after studies/stability.py, studies/smollm2.py, studies/controls.py

For each study cell, runs.csv (per-step metrics of every run) is copied from the study
directory, and each study's timing.json (wall time of every invocation) with it; report.md,
curves.png and stability.png are then rebuilt from runs.csv alone, by the same code as `mhpo
report runs.csv`, so what docs/results shows is what the committed CSV gives. Then the stability
study's and the controls' cross-cell tables (as in docs/results.md) are printed. The
learning-rate sweep's pieces are merged into one CSV whose run labels carry the rate, and its
report is `mhpo report runs.csv --sweep lr`. Without the run directories (a fresh clone), the
same command with --from-docs rebuilds the reports and tables from the committed CSVs. The
SmolLM2 claims study publishes its own CSVs as it runs; its reports, pilot.md and claims.md
are rebuilt here from them.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
from pathlib import Path

from mhpo.study.report import build_report
from mhpo.study.runs import export_csv, find_runs
from mhpo.study.summary import format_ci, order_labels, summarise

HERE = Path(__file__).resolve().parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"study_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def publish_cell(source: Path | None, target: Path, *, threshold: float, order: list[str], title: str) -> bool:
    if source is not None:
        if not (source / "runs.csv").exists():
            print(f"skip {source}: no runs.csv (run the study first)", file=sys.stderr)
            return False
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / "runs.csv", target / "runs.csv")
    if not (target / "runs.csv").exists():
        return False
    build_report([target / "runs.csv"], target, threshold=threshold, order=order, title=title)
    print(f"wrote {target / 'report.md'}")
    return True


INDICATORS = (
    ("grad_spikes", "Gradient-norm spikes per run (norm above 5x its running median)", 1),
    ("max_ratio", "Largest importance ratio seen in a run", 1),
    ("final_entropy", "Policy entropy at the end (nats/token, last 5 steps)", 3),
    ("final_length", "Response length at the end (tokens, last 5 steps)", 1),
    ("reward_per_update", "Reward per update (area under the training-reward curve / steps)", 3),
    ("reward_per_update_early", "Reward per update over the first half of the steps", 3),
)

CLIPPED = ("clipped_frac", "Share of optimizer steps whose gradient was clipped", 2)


def cross_cell_tables(cells: dict[str, tuple[list, float]], order: list[str], indicators=INDICATORS) -> str:
    """Markdown: held-out accuracy and its paired difference against GRPO in every cell, then
    the stability indicators of every cell, one row per objective."""
    summaries = {}
    for cell, (runs, threshold) in cells.items():
        for run in runs:
            summaries.setdefault(cell, {}).setdefault(run.label, {})[run.seed] = summarise(run, threshold)
    labels = order_labels(list({label for rows in summaries.values() for label in rows}), order)
    names = list(cells)
    lines = ["Held-out greedy accuracy after RL (mean ± 95% interval over seeds) and, below it, the paired",
             "difference against `grpo` on the same seeds:", "",
             "| objective | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]  # fmt: skip
    for label in labels:
        cells_text = []
        for cell in names:
            rows, base = summaries[cell].get(label, {}), summaries[cell].get("grpo", {})
            text = format_ci([r["accuracy_final"] for r in rows.values()])
            if label != "grpo" and rows and base:
                diff = format_ci([rows[s]["accuracy_final"] - base[s]["accuracy_final"] for s in rows if s in base])
                text += f"<br>Δ {diff}"
            cells_text.append(text)
        lines.append(f"| `{label}` | " + " | ".join(cells_text) + " |")
    for key, title, digits in indicators:
        lines += ["", f"{title}:", "", "| objective | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for label in labels:
            row = [format_ci([r[key] for r in summaries[cell].get(label, {}).values()], digits) for cell in names]
            lines.append(f"| `{label}` | " + " | ".join(row) + " |")
    return "\n".join(lines)


def rankings(cells: dict[str, tuple[list, float]]) -> str:
    """Markdown: per cell, the objectives from the highest mean held-out accuracy to the lowest."""
    lines = ["Objectives by mean held-out greedy accuracy, highest first:", "", "| cell | ranking |", "|---|---|"]
    for cell, (runs, threshold) in cells.items():
        by_label: dict[str, list[float]] = {}
        for run in runs:
            by_label.setdefault(run.label, []).append(summarise(run, threshold)["accuracy_final"])
        order = sorted(by_label, key=lambda label: -sum(by_label[label]) / len(by_label[label]))
        lines.append(f"| {cell} | " + " > ".join(f"`{label}`" for label in order) + " |")
    return "\n".join(lines)


def publish_controls(results: Path, docs: Path, *, from_docs: bool) -> None:
    """The controls (one cell per clipping rule and regime) as the stability cells are published,
    with their cross-cell table; then the learning-rate sweep as one CSV and one report."""
    controls = _load("controls")
    for task in controls.CONTROL_TASKS:  # one set of tables per task
        cells = {}
        threshold = controls.TASKS[task]["threshold"]
        for name, _, _, _ in controls.pieces("controls", [task]):
            target = docs / name
            if publish_cell(None if from_docs else results / name, target, threshold=threshold,
                            order=controls.OBJECTIVES, title=f"Controls: {name}"):  # fmt: skip
                cells[name] = (find_runs([target / "runs.csv"]), threshold)
        if cells:
            print()
            print(cross_cell_tables(cells, controls.OBJECTIVES, (*INDICATORS[:2], CLIPPED)))
            print()
            print(rankings(cells))
    target = docs / "sweep"
    if not from_docs:
        sweep_dirs = [results / name / "runs" for name, *_ in controls.pieces("sweep") if (results / name / "runs").exists()]
        if len(sweep_dirs) < 2:  # (and the run labels would not carry a single rate)
            print(f"skip the sweep: fewer than two rates under {results}/sweep-*", file=sys.stderr)
            return
        target.mkdir(parents=True, exist_ok=True)
        export_csv(find_runs(sweep_dirs), target / "runs.csv")
    if (target / "runs.csv").exists():
        build_report([target / "runs.csv"], target, threshold=controls.THRESHOLD, order=controls.OBJECTIVES,
                     title="Learning-rate sweep at mu = 4", sweep="lr")  # fmt: skip
        print(f"wrote {target / 'report.md'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default="results", help="where the studies wrote (default: %(default)s)")
    parser.add_argument("--docs", default="docs/results", help="published results (default: %(default)s)")
    parser.add_argument("--from-docs", action="store_true", help="rebuild from the CSVs already in --docs")
    args = parser.parse_args(argv)
    results, docs = Path(args.results), Path(args.docs)
    source = (lambda path: None) if args.from_docs else (lambda path: path)

    for study in ("stability", "smollm2", "controls"):  # wall times of every invocation
        if not args.from_docs and (results / study / "timing.json").exists():
            (docs / study).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(results / study / "timing.json", docs / study / "timing.json")

    stability = _load("stability")
    cells = {}
    for task in stability.TASKS:
        for regime in stability.REGIMES:
            cell = f"{task}-{regime}"
            threshold = stability.TASKS[task]["threshold"]
            target = docs / "stability" / cell
            if publish_cell(source(results / "stability" / cell), target, threshold=threshold,
                            order=stability.OBJECTIVES, title=f"Stability: {cell}"):  # fmt: skip
                cells[cell] = (find_runs([target / "runs.csv"]), threshold)
    if cells:
        print()
        print(cross_cell_tables(cells, stability.OBJECTIVES))

    publish_controls(results / "controls", docs / "controls", from_docs=args.from_docs)

    smollm2 = _load("smollm2")
    publish_cell(source(results / "smollm2"), docs / "smollm2", threshold=smollm2.THRESHOLD,
                 order=smollm2.OBJECTIVES, title="SmolLM2-135M-Instruct on short-answer arithmetic")  # fmt: skip

    # The claims study publishes itself as it runs (studies/smollm2_claims.py); from its CSVs:
    claims, published = _load("smollm2_claims"), docs / "smollm2_claims"
    if (published / "pilot" / "base_rates.json").exists():
        print(claims.rebuild_pilot(published / "pilot"))
    if list((published / "main").glob("*/runs.csv")):
        print(claims.rebuild_main(published / "main"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
