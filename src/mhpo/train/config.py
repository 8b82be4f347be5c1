"""The trainer's configuration: one dataclass, the single source of truth for the YAML file,
the command-line flags and their help text."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import pathlib
import types
import typing
from typing import Any

import mhpo

# Trainer-side defaults that belong to an objective's recipe (DAPO's dynamic sampling and
# overlong shaping); a value the user sets explicitly always wins.
OBJECTIVE_PRESETS: dict[str, dict[str, Any]] = {
    "dapo": {"dynamic_sampling": True, "overlong_filter": True, "overlong_buffer": 4},
}


def _field(default: Any, help: str, **kwargs) -> Any:
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kwargs)
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)


@dataclasses.dataclass
class TrainConfig:
    """Everything `mhpo train` can be told. Flags use dashes (``--batch-size``), YAML keys
    underscores (``batch_size:``)."""

    # objective
    objective: str = _field("mhpo", "registered objective: " + ", ".join(mhpo.list_objectives()))
    hp: dict = _field({}, "objective hyperparameter KEY=VALUE (repeatable), e.g. --hp c=2.0 --hp use_dhp=false")
    aggregation: str | None = _field(None, "loss aggregation (default: the objective's): " + ", ".join(mhpo.AGGREGATIONS))
    advantage_scale: str | None = _field(None, "advantage scale group|batch|none (default: the objective's)")
    hysteresis: str | None = _field(None, "weight of A<0 completions: a number in [0,1] or 'adaptive' (default: the objective's)")
    alpha_min: float | None = _field(None, "lower bound of the adaptive hysteretic weight (A-HPO, default 0.1)")
    beta: float = _field(0.0, "KL coefficient to a frozen copy of the starting policy (0 = no reference model)")
    kl_estimator: str = _field("k3", "KL estimator k1|k2|k3")
    entropy_coef: float = _field(0.0, "entropy bonus coefficient")
    # task
    task: str = _field("countdown", "countdown | arithmetic | userdata")
    num_numbers: int = _field(3, "countdown: numbers per problem")
    max_number: int = _field(9, "countdown: numbers are drawn from 1..max_number")
    max_target: int = _field(50, "countdown: targets lie in 1..max_target")
    operators: str = _field("+-*", "countdown/arithmetic: operators used to build problems")
    format_reward: float = _field(0.0, "countdown: reward for a well-formed wrong answer (0 = sparse)")
    num_operands: int = _field(3, "arithmetic: operands per expression")
    max_operand: int = _field(20, "arithmetic: operands are drawn from 0..max_operand")
    answer_format: str = _field("tag", "arithmetic: 'tag' (integer inside <answer></answer>) or 'number' (last integer counts)")
    data_path: str = _field("", "userdata: .jsonl/.parquet file or dataset name/directory")
    prompt_field: str = _field("prompt", "userdata: prompt column")
    answer_field: str = _field("answer", "userdata: answer column")
    reward_fn: str = _field("", "userdata: reward function module:function (default: math-verify)")
    # model
    model: str = _field("tiny", "tiny | smollm2-135m | path to a Hugging Face model directory")
    hidden_size: int = _field(128, "tiny model: width")
    num_layers: int = _field(4, "tiny model: layers")
    num_heads: int = _field(4, "tiny model: attention heads")
    intermediate_size: int = _field(384, "tiny model: MLP width")
    dtype: str = _field("float32", "float32 | bfloat16 (bfloat16 autocast)")
    # warm start (supervised fine-tuning on solver demonstrations, cached by its config)
    warmstart_steps: int | None = _field(
        None, "SFT steps on solver demonstrations before RL (default: 120 for the tiny model, 0 = none for a pretrained one)"
    )
    warmstart_lr: float = _field(3e-3, "SFT learning rate")
    warmstart_batch: int = _field(64, "SFT batch size")
    warmstart_examples: int = _field(2000, "number of distinct demonstrations")
    cache_dir: str = _field("", "warm-start cache (default: $MHPO_CACHE or ~/.cache/mhpo)")
    # rollout
    steps: int = _field(60, "RL steps (one rollout batch each)")
    batch_size: int = _field(128, "completions per RL step (prompts x group size)")
    group_size: int = _field(8, "completions per prompt, G")
    temperature: float = _field(1.0, "sampling temperature")
    top_p: float = _field(1.0, "nucleus sampling mass")
    max_new_tokens: int = _field(16, "completion token budget")
    # update
    mu: int = _field(2, "passes over each rollout batch (mu > 1 moves ratios off 1)")
    minibatches: int = _field(2, "optimizer steps per pass")
    micro_batch_size: int = _field(64, "completions per forward/backward (gradient accumulation)")
    lr: float = _field(1e-4, "AdamW learning rate")
    weight_decay: float = _field(0.0, "AdamW weight decay")
    warmup_steps: int = _field(4, "linear learning-rate warm-up, in optimizer steps")
    max_grad_norm: float = _field(1.0, "gradient clipping norm (the norm before clipping is logged)")
    # DAPO options (None = the objective's preset)
    dynamic_sampling: bool | None = _field(None, "drop groups with equal rewards and sample more prompts")
    dynamic_sampling_rounds: int = _field(4, "most sampling rounds per step with dynamic sampling")
    overlong_filter: bool | None = _field(None, "mask completions that hit the token budget")
    overlong_buffer: int | None = _field(None, "soft overlong punishment buffer L_c in tokens (0 = off)")
    # evaluation
    eval_every: int = _field(20, "evaluate every N steps (0 = only at start and end)")
    eval_size: int = _field(500, "held-out problems")
    eval_k: int = _field(4, "samples per problem for avg@k")
    # output
    output_dir: str = _field("runs/train", "run directory (metrics.jsonl, checkpoints, TensorBoard)")
    checkpoint_every: int = _field(10, "checkpoint every N steps (0 = only at the end)")
    resume: bool = _field(False, "continue from the latest checkpoint in output_dir")
    seed: int = _field(0, "seed of sampling, prompts and update order")
    tensorboard: bool = _field(False, "also write TensorBoard events")
    progress: bool = _field(True, "show a progress bar")
    threads: int = _field(0, "torch threads (0 = torch's default)")

    # ---- derived values -------------------------------------------------------------
    def preset(self, name: str) -> Any:
        """An option's effective value: the user's, else the objective preset's, else off."""
        value = getattr(self, name)
        if value is not None:
            return value
        return OBJECTIVE_PRESETS.get(self.objective, {}).get(name, 0 if name == "overlong_buffer" else False)

    @property
    def prompts_per_step(self) -> int:
        return self.batch_size // self.group_size

    def hysteresis_value(self) -> float | str | None:
        if self.hysteresis is None:
            return None
        if self.hysteresis == "adaptive":
            return "adaptive"
        try:
            return float(self.hysteresis)
        except ValueError:
            raise ValueError(f"hysteresis must be a number in [0, 1] or 'adaptive'; got '{self.hysteresis}'.") from None

    def warmstart_steps_value(self) -> int:
        """SFT steps of the warm start: the tiny model starts from random weights and needs one
        to reach non-zero reward; a pretrained model gets none unless asked."""
        if self.warmstart_steps is not None:
            return self.warmstart_steps
        return 120 if self.model == "tiny" else 0

    def validate(self) -> TrainConfig:
        """Check everything that can be checked before any work starts; raise ValueError."""
        problems = []
        try:
            mhpo.get_objective(self.objective).make_config(**self.hp)
        except ValueError as error:
            problems.append(str(error))
        if self.group_size < 2:
            problems.append(f"group_size must be >= 2 for group-relative advantages; got {self.group_size}.")
        if self.batch_size < 1 or self.batch_size % max(self.group_size, 1):
            problems.append(
                f"batch_size {self.batch_size} is not a multiple of group_size {self.group_size}; "
                f"use e.g. --batch-size {max(self.group_size, 1) * max(1, self.batch_size // max(self.group_size, 1))}."
            )
        checks = [
            (self.mu >= 1, f"mu must be >= 1; got {self.mu}."),
            (self.steps >= 1, f"steps must be >= 1; got {self.steps}."),
            (1 <= self.minibatches <= max(self.batch_size, 1), "minibatches must be in 1..batch_size."),
            (self.micro_batch_size >= 1, "micro_batch_size must be >= 1."),
            (self.lr > 0, "lr must be > 0."),
            (self.max_new_tokens >= 1, "max_new_tokens must be >= 1."),
            (0 <= self.temperature, "temperature must be >= 0 (0 = greedy)."),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]."),
            (self.task in ("countdown", "arithmetic", "userdata"), f"unknown task '{self.task}'; use countdown, arithmetic or userdata."),
            (self.task != "userdata" or bool(self.data_path), "task userdata needs --data-path."),
            (self.kl_estimator in ("k1", "k2", "k3"), "kl_estimator must be k1, k2 or k3."),
            (self.beta >= 0, "beta must be >= 0."),
            (self.aggregation is None or self.aggregation in mhpo.AGGREGATIONS, f"unknown aggregation '{self.aggregation}'."),
            (self.advantage_scale in (None, "group", "batch", "none"), f"unknown advantage_scale '{self.advantage_scale}'."),
            (self.eval_size >= 1 and self.eval_k >= 1, "eval_size and eval_k must be >= 1."),
            (self.preset("overlong_buffer") < self.max_new_tokens, "overlong_buffer must be smaller than max_new_tokens."),
            (self.warmstart_steps is None or self.warmstart_steps >= 0, "warmstart_steps must be >= 0."),
        ]
        problems += [message for ok, message in checks if not ok]
        if problems:
            raise ValueError("invalid training configuration:\n  - " + "\n  - ".join(problems))
        hysteresis = self.hysteresis_value()
        if isinstance(hysteresis, float) and not 0 <= hysteresis <= 1:
            raise ValueError(f"hysteresis must be in [0, 1]; got {hysteresis}.")
        return self

    # ---- (de)serialisation ----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        names = [f.name for f in dataclasses.fields(cls)]
        for key in values:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f" Did you mean '{close[0]}'?" if close else ""
                raise ValueError(f"unknown training option '{key}'.{hint}")
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | pathlib.Path, **overrides: Any) -> TrainConfig:
        import yaml

        values = yaml.safe_load(pathlib.Path(path).read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path} must hold a mapping of option: value.")
        values.update(overrides)
        return cls.from_dict({k.replace("-", "_"): v for k, v in values.items()})


def _base_type(annotation: Any) -> type:
    hint = typing.get_type_hints(TrainConfig)[annotation] if isinstance(annotation, str) else annotation
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0]
    return hint


def _parse_hp(text: str) -> tuple[str, Any]:
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got '{text}'")
    return key.strip(), yaml.safe_load(value)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, with its help text; defaults are left to the dataclass."""
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = _base_type(hints[f.name])
        help_text = f.metadata["help"] + (f" (default: {f.default})" if f.default is not dataclasses.MISSING else "")
        if f.name == "hp":
            parser.add_argument(flag, type=_parse_hp, action="append", default=argparse.SUPPRESS, help=help_text)
        elif kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        else:
            parser.add_argument(flag, type=kind, default=argparse.SUPPRESS, help=help_text)


def config_from_args(args: argparse.Namespace, config_path: str | None = None) -> TrainConfig:
    """Defaults < YAML file < flags."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    if "hp" in given:
        given["hp"] = dict(given["hp"])
    if config_path:
        return TrainConfig.from_yaml(config_path, **given)
    return TrainConfig.from_dict(given)
