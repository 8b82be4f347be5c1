"""TRL plug-in: :class:`GRPOTrainer` with any registered mhpo objective.

    from mhpo.integrations.trl import ObjectiveGRPOConfig, ObjectiveGRPOTrainer

    args = ObjectiveGRPOConfig(output_dir="out", objective="mhpo", objective_hyperparameters={"c": 1.5})
    trainer = ObjectiveGRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=dataset)

Everything else is TRL's: generation, rewards, reference model, vLLM, accelerate. The
objective's recipe comes from the registry: TRL's ``scale_rewards`` and
``mask_truncated_completions`` default to the objective's advantage scale and overlong filter
(a value you set wins, with a warning at start), the advantages and the batch's α are
:func:`mhpo.prepare_rollout` of TRL's rewards over the whole generation batch, and what TRL
cannot express (DAPO's dynamic sampling and soft overlong punishment) is a warning at start.
The loss is one call of :func:`mhpo.policy_loss` per micro-batch, with TRL's conventions:

* old log-probs are TRL's ``old_per_token_logps`` when it computes them, else the detached
  current ones (on-policy);
* the loss mask is ``completion_mask`` times ``tool_mask``;
* vLLM's importance-sampling correction (``importance_sampling_ratio``) multiplies the policy
  term, as in TRL;
* ``beta`` adds TRL's k3 KL to its reference model;
* normalisation uses the global token and sequence counts of one optimizer step over all
  processes (TRL's ``num_items_in_batch`` rescaled by ``gradient_accumulation_steps /
  steps_per_generation``), and the loss is multiplied by the number of processes because
  DDP averages gradients: the summed update is the full-batch gradient;
* A-HPO's α is computed once per generation batch from the advantages of all processes
  (by :func:`mhpo.prepare_rollout`).

Our metrics are logged as ``objective/<key>`` next to TRL's own ``entropy`` and ``kl``.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import torch

import mhpo

from .common import cispo_offset_from_cap, merge_hyperparameters

try:
    from trl import GRPOConfig, GRPOTrainer
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError("mhpo.integrations.trl needs TRL: pip install 'mhpo[trl]'.") from error

# TRL's own GRPOConfig defaults, to tell a value the user set from one they left alone.
_TRL_DEFAULTS = {f.name: f.default for f in dataclasses.fields(GRPOConfig) if f.default is not dataclasses.MISSING}
# Objectives whose TRL epsilon_high is an absolute weight cap rather than an offset from 1.
_ABSOLUTE_CAP_IN_TRL = frozenset({"cispo"})


def _accelerator_present() -> bool:
    mps = getattr(torch.backends, "mps", None)
    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or bool(mps and mps.is_available()) or bool(xpu and xpu.is_available())


@dataclasses.dataclass
class ObjectiveGRPOConfig(GRPOConfig):
    """TRL's GRPOConfig plus the choice of mhpo objective.

    TRL's own ``epsilon``, ``epsilon_high`` and ``sapo_temperature_*`` are translated into the
    objective's hyperparameters when you change them from TRL's defaults (CISPO's
    ``epsilon_high`` is an absolute cap in TRL and becomes ``eps_high = cap − 1``).
    ``loss_type`` and ``importance_sampling_level`` are not used: the objective decides.
    ``bf16`` left unset is off on a machine without an accelerator (TRL's default, on, fails
    there).
    """

    objective: str = dataclasses.field(default="mhpo", metadata={"help": "mhpo objective (mhpo.list_objectives())."})
    objective_hyperparameters: dict | str | None = dataclasses.field(
        default_factory=dict,
        metadata={"help": "Hyperparameters of the objective: a dict, or JSON on the command line ('{\"c\": 1.5}')."},
    )
    objective_aggregation: str | None = dataclasses.field(
        default=None, metadata={"help": "Aggregation mode; None = the objective's default."}
    )
    # Text on the command line ("0.6", "adaptive"): HfArgumentParser cannot parse a union type.
    objective_hysteresis: str | None = dataclasses.field(
        default=None, metadata={"help": "Weight of A<0 completions: a number in [0, 1], 'adaptive' or None (objective default)."}
    )
    objective_alpha_min: float | None = dataclasses.field(
        default=None, metadata={"help": "Lower bound of the adaptive hysteretic weight (A-HPO)."}
    )
    # TRL's own options whose default is the objective's recipe (None = the objective's).
    scale_rewards: str | None = dataclasses.field(
        default=None,
        metadata={"help": "Advantage scale: 'group', 'batch', 'none' or 'valid' (also True/False). Default: the objective's "
                          "(mhpo.get_objective(objective).advantage_scale; 'none' for dr_grpo)."},
    )  # fmt: skip
    mask_truncated_completions: bool | None = dataclasses.field(
        default=None,
        metadata={"help": "Give completions that hit max_completion_length no gradient. Default: the objective's "
                          "overlong filter (on for dapo)."},
    )  # fmt: skip

    def __post_init__(self) -> None:
        spec = mhpo.get_objective(self.objective)
        self._recipe_notes = _recipe_notes(spec, self.scale_rewards, self.mask_truncated_completions)
        if self.scale_rewards is None:
            self.scale_rewards = spec.advantage_scale
        if self.mask_truncated_completions is None:
            self.mask_truncated_completions = spec.rollout.overlong_filter
        if self.bf16 is None and not self.fp16 and (self.use_cpu or not _accelerator_present()):
            # TRL's default is bf16 whatever the machine, which transformers refuses on a CPU:
            # the same config then builds on a laptop and on a GPU node (an explicit bf16 wins).
            self.bf16 = False
        super().__post_init__()
        if self.multi_objective_aggregation != "sum_then_normalize":
            raise ValueError(
                f"multi_objective_aggregation='{self.multi_objective_aggregation}' normalises each reward before summing, "
                "which mhpo's advantage step does not do; use 'sum_then_normalize' (the default)."
            )
        if self.objective_hyperparameters is None:
            self.objective_hyperparameters = {}
        if isinstance(self.objective_hyperparameters, str):
            import json

            try:
                self.objective_hyperparameters = json.loads(self.objective_hyperparameters or "{}")
            except json.JSONDecodeError as error:
                raise ValueError(f"objective_hyperparameters must be a JSON object: {error}") from None
            if not isinstance(self.objective_hyperparameters, dict):
                raise ValueError("objective_hyperparameters must be a JSON object such as {\"c\": 1.5}.")
        if getattr(self, "use_liger_kernel", False):
            raise ValueError(
                "use_liger_kernel=True makes TRL compute the loss in Liger's fused kernel and would silently bypass "
                f"the '{self.objective}' objective; set use_liger_kernel=False."
            )
        if getattr(self, "importance_sampling_level", "token") != "token":
            raise ValueError(
                "importance_sampling_level='sequence' is TRL's switch for GSPO; with mhpo choose objective='gspo' "
                "(or 'gspo_token') and leave importance_sampling_level='token'."
            )
        for name, default in (("top_entropy_quantile", 1.0), ("off_policy_mask_threshold", None), ("delta", None)):
            if getattr(self, name, default) != default:
                raise ValueError(f"{name} is a TRL loss option the mhpo objectives do not implement; leave it at {default}.")
        if getattr(self, "entropy_coef", 0.0) or getattr(self, "use_adaptive_entropy", False):
            raise ValueError("TRL's entropy bonus is not supported with mhpo objectives yet; set entropy_coef=0.")
        self.objective_hyperparameters = merge_hyperparameters(
            self.objective, dict(self.objective_hyperparameters), self._translated(), "TRL's GRPOConfig fields"
        )
        # Validated and normalised here, at construction: a float, "adaptive" or None, and α_min.
        hysteresis, alpha_min = mhpo.hysteresis_setting(self.objective, self.objective_hysteresis, self.objective_alpha_min)
        if self.objective_hysteresis is not None:
            self.objective_hysteresis = hysteresis
        if self.objective_alpha_min is not None:
            self.objective_alpha_min = alpha_min
        if self.objective_aggregation is not None and self.objective_aggregation not in mhpo.AGGREGATIONS:
            raise ValueError(f"objective_aggregation must be one of {mhpo.AGGREGATIONS}; got '{self.objective_aggregation}'.")

    def _translated(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.epsilon != _TRL_DEFAULTS["epsilon"]:
            out["eps_low"] = self.epsilon
        if self.epsilon_high is not None:
            absolute = self.objective in _ABSOLUTE_CAP_IN_TRL
            out["eps_high"] = cispo_offset_from_cap(self.epsilon_high) if absolute else self.epsilon_high
        if self.sapo_temperature_pos != _TRL_DEFAULTS["sapo_temperature_pos"]:
            out["tau_pos"] = self.sapo_temperature_pos
        if self.sapo_temperature_neg != _TRL_DEFAULTS["sapo_temperature_neg"]:
            out["tau_neg"] = self.sapo_temperature_neg
        return out


def _recipe_notes(spec, scale_rewards, mask_truncated) -> list[str]:
    """What of the objective's recipe TRL runs differently, as warnings for the start of training."""
    notes = []
    scale = {True: "group", False: "none"}.get(scale_rewards, scale_rewards)
    if scale is not None and scale != spec.advantage_scale:
        notes.append(f"scale_rewards='{scale}' overrides {spec.name}'s advantage scale '{spec.advantage_scale}': "
                     f"advantages are scaled by '{scale}', not as {spec.name} defines them.")  # fmt: skip
    if mask_truncated is not None and bool(mask_truncated) != spec.rollout.overlong_filter:
        notes.append(f"mask_truncated_completions={mask_truncated} overrides {spec.name}'s overlong filter "
                     f"({'on' if spec.rollout.overlong_filter else 'off'}).")  # fmt: skip
    if spec.rollout.dynamic_sampling:
        notes.append(f"TRL cannot run {spec.name}'s dynamic sampling (drop groups whose rewards are all equal and sample "
                     "more prompts): every group is trained on, and groups with equal rewards carry zero advantage.")  # fmt: skip
    if spec.rollout.overlong_buffer_fraction:
        notes.append(f"TRL has no soft overlong punishment ({spec.name}'s reward falls to -1 over the last "
                     f"{spec.rollout.overlong_buffer_fraction:g} of the budget); add it as a reward function "
                     "(docs/trl.md shows one) or it is not applied.")  # fmt: skip
    return notes


def trl_rollout(
    objective: str,
    rewards_per_func: torch.Tensor,
    reward_weights: torch.Tensor,
    counted: torch.Tensor,
    *,
    num_generations: int,
    scale_rewards: str,
    hysteresis: Any = None,
    alpha_min: float | None = None,
) -> mhpo.RolloutBatch:
    """TRL's rewards of a whole generation batch (every process) -> mhpo's rollout step.

    ``rewards_per_func`` is TRL's (B, n_funcs) gathered rewards, summed with ``reward_weights``
    as TRL's ``sum_then_normalize`` does; ``counted`` (B,) flags completions with loss tokens.
    The advantages are the library's (TRL's own divide by std + 1e-4 where mhpo's, like verl's,
    use 1e-6), so the numbers are the same whichever host runs the objective."""
    unscorable = torch.isnan(rewards_per_func).all(dim=1)
    if bool(unscorable.any()):
        raise ValueError(f"{int(unscorable.sum())} completion(s) got None from every reward function; mhpo's objectives "
                         "need a reward for every completion.")  # fmt: skip
    rewards = (rewards_per_func * reward_weights.to(rewards_per_func).unsqueeze(0)).nansum(dim=1)
    mask = counted.reshape(-1, 1).to(rewards.dtype)
    return mhpo.prepare_rollout(objective, rewards, mask, group_size=num_generations, advantage_scale=scale_rewards,
                                hysteresis=hysteresis, alpha_min=alpha_min)  # fmt: skip


def trl_policy_loss(
    objective: str,
    logp: torch.Tensor,
    inputs: dict[str, Any],
    *,
    hyperparameters: dict[str, Any],
    aggregation: str | None,
    hysteresis: Any,
    alpha_min: float | None,
    beta: float,
    max_completion_length: int,
    training: bool,
    num_processes: int,
    gradient_accumulation_steps: int,
    steps_per_generation: int,
    is_correction: bool,
    entropies: torch.Tensor | None = None,
) -> mhpo.LossOutput:
    """TRL's batch dictionary and settings -> one :func:`mhpo.policy_loss` call.

    ``inputs`` holds TRL's keys (``completion_mask``, optional ``tool_mask``, ``advantages``,
    optional ``old_per_token_logps``, ``ref_per_token_logps``, ``importance_sampling_ratio``,
    ``num_items_in_batch``) plus ``mhpo_num_seqs`` and, for A-HPO, ``mhpo_alpha``.
    The returned loss is what TRL back-propagates (already scaled for DDP averaging).
    """
    mask = inputs["completion_mask"]
    if inputs.get("tool_mask") is not None:
        mask = mask * inputs["tool_mask"]
    old = inputs.get("old_per_token_logps")
    old = logp.detach() if old is None else old
    is_weights = inputs["importance_sampling_ratio"].expand_as(logp) if is_correction else None
    norms: dict[str, Any] = {"max_length": max_completion_length}
    scale = 1.0
    if training:
        # num_items_in_batch counts the loss tokens of the whole generation batch on all
        # processes; one optimizer step sees gradient_accumulation_steps / steps_per_generation of it.
        window = gradient_accumulation_steps / steps_per_generation
        tokens = max(float(inputs["num_items_in_batch"]) * window, 1.0)
        seqs = max(float(inputs["mhpo_num_seqs"]) * window, 1.0)
        norms.update(num_tokens=tokens, num_seqs=seqs, mean_length=tokens / seqs)
        scale = float(num_processes)  # DDP averages gradients over processes
    hysteresis = inputs.get("mhpo_alpha", hysteresis)
    out = mhpo.policy_loss(
        objective, logp, old, inputs["advantages"], mask,
        aggregation=aggregation,
        ref_logp=inputs.get("ref_per_token_logps") if beta != 0.0 else None,
        beta=beta, kl_estimator="k3",
        hysteresis=hysteresis,
        alpha_min=alpha_min if isinstance(hysteresis, str) and hysteresis == "adaptive" else None,
        is_weights=is_weights,
        entropy=entropies.detach() if entropies is not None else None,
        **norms, **hyperparameters,
    )  # fmt: skip
    out.loss = out.loss * scale
    return out


class ObjectiveGRPOTrainer(GRPOTrainer):
    """TRL's GRPOTrainer whose loss is ``mhpo.policy_loss(args.objective, ...)``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, ObjectiveGRPOConfig):
            raise ValueError("ObjectiveGRPOTrainer needs args=ObjectiveGRPOConfig(...) to know the objective.")
        for note in getattr(self.args, "_recipe_notes", []):
            warnings.warn(note, stacklevel=2)
        # The advantages are the library's (below); TRL still computes its own first, and knows
        # only 'group', 'batch' and 'none'. GPG's 'valid' is mean-centred like 'none' there.
        self.mhpo_scale = self.scale_rewards
        if self.scale_rewards not in ("group", "batch", "none"):
            self.scale_rewards = "none"

    # -- per generation batch: the library's rollout step --------------------------------------
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._mhpo_rewards_per_func = rewards_per_func  # every process's rows, as TRL gathers them
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        mask = output["completion_mask"]
        if output.get("tool_mask") is not None:
            mask = mask * output["tool_mask"]
        counted = (mask.sum(-1) > 0).long()
        output["mhpo_num_seqs"] = self.accelerator.gather(counted.sum().reshape(1)).sum()
        batch = trl_rollout(
            self.args.objective, self._mhpo_rewards_per_func, self.reward_weights, self.accelerator.gather(counted),
            num_generations=self.num_generations if self.model.training else self.num_generations_eval,
            scale_rewards=self.mhpo_scale, hysteresis=self.args.objective_hysteresis,
            alpha_min=self.args.objective_alpha_min,
        )  # fmt: skip
        local = slice(self.accelerator.process_index * len(counted), (self.accelerator.process_index + 1) * len(counted))
        output["advantages"] = batch.advantages[local].to(output["advantages"].dtype)
        if batch.hysteresis is not None:
            output["mhpo_alpha"] = batch.hysteresis
        return output

    # -- the loss ---------------------------------------------------------------------------
    def _compute_loss(self, model, inputs):
        prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
        multimodal = {
            key: inputs.get(key)
            for key in ("pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask", "spatial_shapes",
                        "num_tiles", "image_sizes", "token_type_ids", "mm_token_type_ids", "image_position_ids")
        }  # fmt: skip
        logp, entropies, aux_loss = self._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, completion_ids.size(1), compute_entropy=True,
            compute_aux_loss=self.aux_loss_enabled, **multimodal,
        )  # fmt: skip
        training = self.model.training
        out = trl_policy_loss(
            self.args.objective, logp, inputs,
            hyperparameters=self.args.objective_hyperparameters,
            aggregation=self.args.objective_aggregation,
            hysteresis=None,  # the generation batch's α arrives as inputs["mhpo_alpha"]
            alpha_min=None,
            beta=self.beta,
            max_completion_length=self.max_completion_length,
            training=training,
            num_processes=self.accelerator.num_processes,
            gradient_accumulation_steps=self.current_gradient_accumulation_steps,
            steps_per_generation=self.args.steps_per_generation,
            is_correction=self.use_vllm and self.vllm_importance_sampling_correction,
            entropies=entropies,
        )  # fmt: skip
        loss = out.loss
        if self.aux_loss_enabled:
            normalizer = self.current_gradient_accumulation_steps if training else 1.0
            loss = loss + self.router_aux_loss_coef * aux_loss / normalizer
        self._log_metrics("train" if training else "eval", out.metrics)
        return loss

    def _log_metrics(self, mode: str, metrics: dict[str, torch.Tensor]) -> None:
        for key, value in metrics.items():
            gathered = self.accelerator.gather(value.detach().float().reshape(1))
            if key.endswith("/max"):
                number = gathered.nan_to_num(nan=-float("inf")).max().item()
            elif key.endswith("/min"):
                number = gathered.nan_to_num(nan=float("inf")).min().item()
            else:
                number = gathered.nanmean().item()
            self._metrics[mode][f"objective/{key}"].append(number)
        # TRL's own dashboard keys keep working.
        if "entropy/mean" in metrics:
            self._metrics[mode]["entropy"].append(self._metrics[mode]["objective/entropy/mean"][-1])
        if "kl/k3" in metrics and self.beta != 0.0:
            self._metrics[mode]["kl"].append(self._metrics[mode]["objective/kl/k3"][-1])
