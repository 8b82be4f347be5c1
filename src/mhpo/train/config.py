"""The trainer's configuration: one dataclass, the single source of truth for the YAML file,
the command-line flags and their help text."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import pathlib
import types
import typing
from typing import Any

import mhpo

TASKS = ("countdown", "arithmetic", "userdata")
# The options each task reads; set under another task they would be ignored, so they are refused.
TASK_OPTIONS = {
    "countdown": ("num_numbers", "max_number", "max_target", "operators", "format_reward"),
    "arithmetic": ("operators", "num_operands", "max_operand", "answer_format"),
    "userdata": ("data_path", "eval_data_path", "prompt_field", "answer_field", "reward_fn", "reward_weights"),
}
# The tiny model's shape; a loaded model keeps its own.
TINY_OPTIONS = ("hidden_size", "num_layers", "num_heads", "intermediate_size")
# Options that only configure something the run may have switched off; set while it is off
# they would be ignored, so they are refused. option -> (is it on?, what it needs, why, the fix).
_LORA = (lambda c: c.lora_rank > 0, "--lora-rank",
         "it configures the LoRA adapter, and without a rank every weight is trained", "add --lora-rank R")
_WARM = (lambda c: c.warmstart_steps_value() > 0, "a warm start",
         "a loaded model or user data gets no supervised warm start unless asked", "add --warmstart-steps N")
NEEDS = {
    "lora_alpha": _LORA,
    "lora_dropout": _LORA,
    "lora_target_modules": _LORA,
    "kl_estimator": (lambda c: c.beta > 0, "--beta",
                     "it chooses the estimator of the KL term, and with --beta 0 there is no KL term", "add --beta B"),
    "warmstart_lr": _WARM,
    "warmstart_batch": _WARM,
    "warmstart_examples": _WARM,
}
DTYPES = ("auto", "float32", "bfloat16")
REPORTERS = ("tensorboard", "trackio", "wandb")

# Options that do not change what a run trains or measures: where it writes, how it shows
# progress, how often it saves. A report does not tell runs apart by them.
NOT_IDENTITY = ("output_dir", "resume", "progress", "threads", "tensorboard", "report_to", "project", "cache_dir",
                "checkpoint_every", "keep_checkpoints", "eval_every", "device")
# What a resumed run may change: the above, and more steps (to extend it).
RESUMABLE = (*NOT_IDENTITY, "steps")

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
    kl_estimator: str = _field("k3", "estimator of the --beta KL term: k1|k2|k3")
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
    eval_data_path: str = _field("", "userdata: a separate held-out file (default: 10% of --data-path's rows)")
    prompt_field: str = _field("prompt", "userdata: prompt column")
    answer_field: str = _field("answer", "userdata: answer column")
    reward_fn: list = _field([], "userdata: reward function module:function, called as f(completion, answer, prompt) "
                             "(repeatable; the reward is their weighted sum; default: math-verify)")
    reward_weights: list = _field([], "userdata: comma-separated weights of the --reward-fn functions (default: 1 each)")
    system_prompt: str = _field("", "chat models: a system message put before every prompt that has none")
    # model
    model: str = _field("tiny", "tiny | smollm2-135m | path to a Hugging Face model directory")
    hidden_size: int = _field(128, "tiny model: width")
    num_layers: int = _field(4, "tiny model: layers")
    num_heads: int = _field(4, "tiny model: attention heads")
    intermediate_size: int = _field(384, "tiny model: MLP width")
    device: str = _field("auto", "auto | cpu | cuda | cuda:N | mps (auto: an accelerator when one is present, else cpu)")
    dtype: str = _field("auto", "auto | float32 | bfloat16 (bfloat16 autocast; auto: bfloat16 on a GPU that supports it, "
                        "else float32)")
    lora_rank: int = _field(0, "LoRA rank r through peft (0 = train every weight); the KL reference is then the "
                            "base model with the adapter disabled")
    lora_alpha: float | None = _field(None, "LoRA scaling alpha (default: 2 x lora_rank)")
    lora_dropout: float = _field(0.0, "LoRA dropout")
    lora_target_modules: str = _field("all-linear", "LoRA target modules: 'all-linear' or comma-separated module names "
                                      "(e.g. q_proj,v_proj)")
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
    gradient_checkpointing: bool = _field(False, "recompute each layer's activations in the backward pass instead of "
                                          "keeping them (much less memory, about a third more compute)")
    share_prompts: bool = _field(True, "compute each prompt once for all the completions in a micro-batch that share it "
                                 "(the same log-probs and gradients up to float rounding, less work)")
    lr: float = _field(1e-4, "AdamW learning rate")
    weight_decay: float = _field(0.0, "AdamW weight decay")
    warmup_steps: int = _field(4, "linear learning-rate warm-up, in optimizer steps")
    max_grad_norm: float = _field(1.0, "gradient clipping norm, > 0 (inf = no clipping; the norm before clipping is logged)")
    relative_clip: float | None = _field(
        None, "also clip at this multiple of the median pre-clip norm of the run's earlier optimizer steps "
        "(none during its first 10 steps), so that clipping removes outliers instead of rescaling every step"
    )
    # DAPO's rollout rules (None = the objective's recipe)
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
    keep_checkpoints: int = _field(2, "checkpoints kept on disk, newest first (each holds weights and optimizer state)")
    resume: bool = _field(False, "continue from the latest checkpoint in output_dir")
    seed: int = _field(0, "seed of sampling, prompts and update order")
    tensorboard: bool = _field(False, "also write TensorBoard events (same as --report-to tensorboard)")
    report_to: str = _field("", "comma-separated trackers besides metrics.jsonl: tensorboard, trackio, wandb")
    project: str = _field("mhpo", "trackio / Weights & Biases project name (the run is named after --output-dir)")
    progress: bool = _field(True, "show a progress bar")
    threads: int = _field(0, "torch threads (0 = torch's default)")

    # ---- derived values -------------------------------------------------------------
    def preset(self, name: str) -> Any:
        """A rollout option's effective value (``dynamic_sampling``, ``overlong_filter``,
        ``overlong_buffer``): the user's, else the objective's recipe (mhpo.get_objective)."""
        value = getattr(self, name)
        if value is not None:
            return value
        rules = mhpo.get_objective(self.objective).rollout
        return rules.overlong_buffer(self.max_new_tokens) if name == "overlong_buffer" else getattr(rules, name)

    @property
    def prompts_per_step(self) -> int:
        return self.batch_size // self.group_size

    def hysteresis_value(self) -> float | str | None:
        """The user's ``--hysteresis`` as a number or "adaptive"; None when not set."""
        return None if self.hysteresis is None else mhpo.hysteresis_setting(self.objective, self.hysteresis)[0]

    def warmstart_steps_value(self) -> int:
        """SFT steps of the warm start: the tiny model starts from random weights and needs one
        to reach non-zero reward; a pretrained model gets none unless asked."""
        if self.warmstart_steps is not None:
            return self.warmstart_steps
        # user data has no solver demonstrations (and a random tiny model cannot learn
        # natural language from them anyway; docs/training.md says to use a pretrained model)
        return 120 if self.model == "tiny" and self.task != "userdata" else 0

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
            (self.max_new_tokens >= 1, "max_new_tokens must be >= 1."),
            (self.task in TASKS, f"unknown task '{self.task}'; use {', '.join(TASKS)}."),
            (self.task != "userdata" or bool(self.data_path), "task userdata needs --data-path."),
            (self.kl_estimator in ("k1", "k2", "k3"), "kl_estimator must be k1, k2 or k3."),
            (self.aggregation is None or self.aggregation in mhpo.AGGREGATIONS, f"unknown aggregation '{self.aggregation}'."),
            (self.advantage_scale in (None, "group", "batch", "none", "valid"), f"unknown advantage_scale '{self.advantage_scale}'."),
            (self.dtype in DTYPES, f"dtype must be one of {', '.join(DTYPES)}; got '{self.dtype}'."),
            (_device_form(self.device), f"device must be auto, cpu, cuda, cuda:N or mps; got '{self.device}'."),
            (not self.reward_weights or len(self.reward_weights) == len(self.reward_fn),
             f"--reward-weights gives {len(self.reward_weights)} weight(s) for {len(self.reward_fn)} --reward-fn "
             "function(s); give one weight per function, in the same order."),
            (not self.system_prompt or self.model != "tiny",
             "--system-prompt needs a chat model (the tiny model has no chat template); use --model with a chat model."),
            (self.lora_rank == 0 or self.lora_target_modules.strip() != "",
             "--lora-target-modules is empty; use 'all-linear' or module names such as q_proj,v_proj."),
            (bool(self.output_dir.strip()), "--output-dir is empty; name the run directory, e.g. --output-dir runs/first."),
            (self.answer_format in ("tag", "number"), f"answer_format must be 'tag' or 'number'; got '{self.answer_format}'."),
        ]
        problems += [message for ok, message in checks if not ok]
        unknown = [r for r in self.reporters() if r not in REPORTERS]
        if unknown:
            problems.append(f"--report-to: unknown tracker(s) {', '.join(unknown)}; use {', '.join(REPORTERS)}.")
        problems += _range_problems(self)
        problems += self._ignored_problems()
        problems += self._needs_problems()
        if not problems:  # the overlong buffer is only meaningful once both numbers are valid
            if self.preset("overlong_buffer") >= self.max_new_tokens:
                problems.append("overlong_buffer must be smaller than max_new_tokens.")
            problems += self._hysteresis_problems()
        if problems:
            raise ValueError("invalid training configuration:\n  - " + "\n  - ".join(problems))
        return self

    def _set_options(self) -> list[str]:
        """The options set away from their defaults, in the dataclass's order."""
        return [f.name for f in dataclasses.fields(self)
                if getattr(self, f.name) != (f.default_factory() if f.default is dataclasses.MISSING else f.default)]  # fmt: skip

    def _ignored_problems(self) -> list[str]:
        """Options this run would ignore: another task's (``--data-path`` without ``--task
        userdata`` would train on Countdown), or the tiny model's shape with another model."""
        problems = []
        for name in self._set_options():
            flag = "--" + name.replace("_", "-")
            owners = [task for task in TASKS if name in TASK_OPTIONS[task]]
            if owners and self.task in TASKS and self.task not in owners:  # an unknown task is reported as such
                problems.append(f"{flag} is for --task {' or '.join(owners)}; this run's task is {self.task}, which "
                                f"would ignore it. Add --task {owners[0]} or drop {flag}.")  # fmt: skip
            if name in TINY_OPTIONS and self.model != "tiny":
                problems.append(f"{flag} is for --model tiny; a loaded model keeps its own shape ({self.model}). "
                                f"Drop {flag}.")  # fmt: skip
        return problems

    def _needs_problems(self) -> list[str]:
        """Options that would be ignored because what they configure is off (NEEDS)."""
        problems = []
        for name in self._set_options():
            if name not in NEEDS:
                continue
            on, needed, why, fix = NEEDS[name]
            if not on(self):
                problems.append(f"--{name.replace('_', '-')} needs {needed} ({why}); {fix} or drop the option.")
        return problems  # LoRA targets are checked against the loaded model itself (Policy.check_lora)

    def _hysteresis_problems(self) -> list[str]:
        """The hysteresis options the library would reject."""
        try:
            mhpo.hysteresis_setting(self.objective, self.hysteresis, self.alpha_min)
        except ValueError as error:
            return [str(error).replace("alpha_min", "--alpha-min").replace("set hysteresis", "add --hysteresis")]
        return []

    def reporters(self) -> list[str]:
        """The trackers to write to (--report-to, and tensorboard for --tensorboard)."""
        names = [n.strip() for n in self.report_to.split(",") if n.strip()] + ["tensorboard"] * self.tensorboard
        return list(dict.fromkeys(names))  # each once: two writers into one TensorBoard directory would double it

    def resolved(self) -> TrainConfig:
        """The configuration as it runs on this machine: absolute file paths, the device that
        ``auto`` picks and the dtype that ``auto`` means there. It is what config.yaml records."""
        device = resolve_device(self.device)
        dtype = self.dtype
        if dtype == "auto":
            dtype = "bfloat16" if _bfloat16_native(device) else "float32"
        return dataclasses.replace(self.with_absolute_paths(), device=device, dtype=dtype)

    def with_absolute_paths(self) -> TrainConfig:
        """The same configuration with its file paths made absolute, so that the saved
        config.yaml still names the same files from another working directory."""
        paths = {name: str(pathlib.Path(getattr(self, name)).expanduser().resolve())
                 for name in ("data_path", "eval_data_path", "cache_dir") if getattr(self, name)}  # fmt: skip
        if paths.get("data_path") and not pathlib.Path(paths["data_path"]).exists():
            del paths["data_path"]  # a dataset name, not a file
        if self.model not in ("tiny", "smollm2-135m") and pathlib.Path(self.model).expanduser().exists():
            paths["model"] = str(pathlib.Path(self.model).expanduser().resolve())
        return dataclasses.replace(self, **paths)

    def changes_from(self, saved: dict[str, Any], allowed: tuple[str, ...] = RESUMABLE) -> list[str]:
        """Each option (outside ``allowed``) whose value differs from the saved configuration,
        as 'option: saved X, now Y'."""
        before, now = TrainConfig.from_dict(saved).with_absolute_paths(), self.with_absolute_paths()
        if "auto" in (before.dtype, now.dtype):  # compare the dtype that each would run with here
            before, now = (dataclasses.replace(c, dtype=c.resolved().dtype) for c in (before, now))
        before, now = before.to_dict(), now.to_dict()
        return [f"{name}: saved {before[name]!r}, now {now[name]!r}"
                for name in now if name not in allowed and before[name] != now[name]]  # fmt: skip

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
        hints = typing.get_type_hints(cls)
        return cls(**{key: coerce(key, value, hints[key]) for key, value in values.items()})

    @classmethod
    def from_yaml(cls, path: str | pathlib.Path, **overrides: Any) -> TrainConfig:
        import yaml

        path = pathlib.Path(path)
        if not path.is_file():
            raise ValueError(f"config file {path} does not exist; check the --config path.")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            where = getattr(error, "problem_mark", None)
            line = f" at line {where.line + 1}" if where is not None else ""
            raise ValueError(f"config file {path} is not valid YAML{line}: {getattr(error, 'problem', error)}.") from None
        if not isinstance(values, dict):
            raise ValueError(f"{path} must hold a mapping of option: value.")
        values.update(overrides)
        return cls.from_dict({k.replace("-", "_"): v for k, v in values.items()})


def _device_form(name: str) -> bool:
    kind, colon, index = name.partition(":")
    return kind in ("auto", "cpu", "mps") and not colon or kind == "cuda" and (not colon or index.isdigit())


def resolve_device(name: str) -> str:
    """``auto``: the first accelerator present (CUDA, then Apple's MPS), else ``cpu``. An
    accelerator that was asked for but is missing is an error, not a silent CPU run."""
    import torch

    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps is not None and mps.is_available())
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: torch sees no CUDA device (torch {torch.__version__}, CUDA build: "
                             f"{torch.version.cuda or 'no'}); use --device cpu, or auto to take what is present.")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: there are {torch.cuda.device_count()} CUDA device(s); "
                             f"use cuda:0..cuda:{torch.cuda.device_count() - 1}.")
    if name == "mps" and not has_mps:
        raise ValueError("--device mps: Apple's MPS backend is not available here; use --device cpu or auto.")
    return name


def _bfloat16_native(device: str) -> bool:
    import torch

    return device.startswith("cuda") and torch.cuda.is_bf16_supported()


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# Every numeric option's valid range: (field, test, what it must be). Checked before any work,
# so that e.g. a negative clipping norm cannot train by gradient ascent.
_RANGES: list[tuple[str, Any, str]] = [
    ("lr", lambda v: _finite(v) and v > 0, "a finite number > 0"),
    ("warmstart_lr", lambda v: _finite(v) and v > 0, "a finite number > 0"),
    ("weight_decay", lambda v: _finite(v) and v >= 0, "a finite number >= 0"),
    ("beta", lambda v: _finite(v) and v >= 0, "a finite number >= 0 (0 = no KL term)"),
    ("entropy_coef", _finite, "a finite number"),
    ("format_reward", _finite, "a finite number"),
    ("temperature", lambda v: _finite(v) and v >= 0, "a finite number >= 0 (0 = greedy)"),
    ("top_p", lambda v: _finite(v) and 0 < v <= 1, "in (0, 1]"),
    ("max_grad_norm", lambda v: v == math.inf or (_finite(v) and v > 0), "a number > 0, or inf for no clipping"),
    ("alpha_min", lambda v: v is None or (_finite(v) and 0 <= v <= 1), "in [0, 1]"),
    ("relative_clip", lambda v: v is None or (_finite(v) and v > 0), "a finite number > 0 (a multiple of the median norm)"),
    ("threads", lambda v: v >= 0, "an integer >= 0 (0 = torch's default)"),
    ("checkpoint_every", lambda v: v >= 0, "an integer >= 0 (0 = only at the end)"),
    ("eval_every", lambda v: v >= 0, "an integer >= 0 (0 = only at start and end)"),
    ("dynamic_sampling_rounds", lambda v: v >= 1, "an integer >= 1"),
    ("warmup_steps", lambda v: v >= 0, "an integer >= 0"),
    ("warmstart_steps", lambda v: v is None or v >= 0, "an integer >= 0"),
    ("warmstart_batch", lambda v: v >= 1, "an integer >= 1"),
    ("warmstart_examples", lambda v: v >= 1, "an integer >= 1"),
    ("eval_size", lambda v: v >= 1, "an integer >= 1"),
    ("eval_k", lambda v: v >= 1, "an integer >= 1"),
    ("overlong_buffer", lambda v: v is None or v >= 0, "an integer >= 0 (0 = off)"),
    ("seed", lambda v: v >= 0, "an integer >= 0"),
    ("keep_checkpoints", lambda v: v >= 1, "an integer >= 1"),
    ("lora_rank", lambda v: v >= 0, "an integer >= 0 (0 = no LoRA)"),
    ("lora_alpha", lambda v: v is None or (_finite(v) and v > 0), "a finite number > 0"),
    ("lora_dropout", lambda v: _finite(v) and 0 <= v < 1, "in [0, 1)"),
    ("reward_weights", lambda v: all(_finite(w) for w in v), "finite numbers"),
    ("hidden_size", lambda v: v >= 1, "an integer >= 1"),
    ("num_layers", lambda v: v >= 1, "an integer >= 1"),
    ("num_heads", lambda v: v >= 1, "an integer >= 1"),
    ("intermediate_size", lambda v: v >= 1, "an integer >= 1"),
    ("num_numbers", lambda v: v >= 2, "an integer >= 2"),
    ("max_number", lambda v: v >= 1, "an integer >= 1"),
    ("max_target", lambda v: v >= 1, "an integer >= 1"),
    ("num_operands", lambda v: v >= 2, "an integer >= 2"),
    ("max_operand", lambda v: v >= 1, "an integer >= 1"),
]


def _range_problems(cfg: TrainConfig) -> list[str]:
    problems = []
    for name, ok, requirement in _RANGES:
        value = getattr(cfg, name)
        try:
            valid = bool(ok(value))
        except TypeError:  # a value of the wrong type, e.g. text given in Python
            valid = False
        if not valid:
            problems.append(f"--{name.replace('_', '-')} must be {requirement}; got {value!r}.")
    return problems


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def coerce(name: str, value: Any, annotation: Any) -> Any:
    """``value`` as the type of field ``name``, or a ValueError naming the key. YAML reads
    ``3e-4`` as a string and ``"false"`` is a string, so text is converted where it is
    unambiguous; anything else of the wrong type is refused rather than passed on."""
    kind = _base_type(annotation)
    optional = kind is not annotation
    if value is None:
        if optional:
            return None
        raise ValueError(f"option '{name}' cannot be empty (null); give a {kind.__name__}.")

    def refuse() -> ValueError:
        wanted = {bool: "true or false", int: "an integer", float: "a number", str: "text", dict: "a mapping"}
        return ValueError(f"option '{name}' must be {wanted.get(kind, kind.__name__)}; got {value!r} ({type(value).__name__}).")

    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise refuse()
    if kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise refuse()
        if isinstance(value, str):
            try:
                value = kind(value.strip())
            except ValueError:
                raise refuse() from None
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise refuse()
        return kind(value)
    if kind is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # e.g. ``hysteresis: 0.6`` or ``operators: 1``
        raise refuse()
    if kind is dict:
        if isinstance(value, dict):
            return dict(value)
        raise refuse()
    if kind is list:
        items = value
        if isinstance(value, str):  # "1,0.5" from a flag, or one function in YAML
            items = [part.strip() for part in value.split(",") if part.strip()]
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            items = [value]
        if not isinstance(items, (list, tuple)):
            raise ValueError(f"option '{name}' must be a list; got {value!r} ({type(value).__name__}).")
        element = _LIST_ITEMS.get(name, str)
        return [coerce(f"{name}[{i}]", item, element) for i, item in enumerate(items)]
    return value


_LIST_ITEMS = {"reward_fn": str, "reward_weights": float}  # the element type of each list option


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


def add_config_arguments(parser: argparse.ArgumentParser, only: tuple[str, ...] | None = None) -> None:
    """One flag per TrainConfig field (or per field in ``only``), with its help text; defaults
    are left to the dataclass."""
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = _base_type(hints[f.name])
        if only is not None and f.name not in only:
            continue
        help_text = f.metadata["help"]
        if f.default not in (dataclasses.MISSING, None, "") and "default" not in help_text:
            help_text += f" (default: {f.default})"
        help_text = help_text.replace("%", "%%")  # argparse formats help with %: a literal one is %%
        if f.name == "hp":
            parser.add_argument(flag, type=_parse_hp, action="append", default=argparse.SUPPRESS, help=help_text)
        elif f.name == "reward_fn":
            parser.add_argument(flag, action="append", default=argparse.SUPPRESS, help=help_text)
        elif kind is list:
            parser.add_argument(flag, type=str, default=argparse.SUPPRESS, help=help_text)
        elif kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        else:
            parser.add_argument(flag, type=kind, default=argparse.SUPPRESS, help=help_text)


def config_from_args(args: argparse.Namespace, config_path: str | None = None) -> TrainConfig:
    """Defaults < YAML file < flags. A run's own config.yaml with --resume continues that run,
    in the directory the file is in: the output_dir inside it names where the run was made,
    which after a copy (or from another working directory) is another run."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    if "hp" in given:
        given["hp"] = dict(given["hp"])
    if not config_path:
        return TrainConfig.from_dict(given)
    cfg = TrainConfig.from_yaml(config_path, **given)
    run = pathlib.Path(config_path).expanduser().resolve().parent
    is_run = pathlib.Path(config_path).name == "config.yaml" and ((run / "metrics.jsonl").exists() or (run / "checkpoints").is_dir())
    if cfg.resume and is_run and pathlib.Path(cfg.output_dir).expanduser().resolve() != run:
        if "output_dir" in given:
            raise ValueError(f"--config {config_path} is the configuration of the run in {run}, and --output-dir names "
                             f"{cfg.output_dir}; to continue that run drop --output-dir, or start a new run there "
                             "without --resume.")  # fmt: skip
        cfg = dataclasses.replace(cfg, output_dir=str(run))
    return cfg
