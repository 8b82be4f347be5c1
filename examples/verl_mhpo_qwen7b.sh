#!/usr/bin/env bash
# MHPO on Qwen2.5-7B-Instruct with verl: one node of 8 GPUs, FSDP actor, vLLM rollout,
# MHPO at the paper's defaults (c = 1.5, k+ = 1.5, lambda+ = 1.0, k- = 2.0, lambda- = 0.8).
#
#   pip install 'mhpo[verl]' vllm
#   TRAIN=~/data/math/train.parquet VAL=~/data/math/test.parquet bash examples/verl_mhpo_qwen7b.sh
#   OBJECTIVE=a_hpo bash examples/verl_mhpo_qwen7b.sh          # another objective, with its whole recipe
#   bash examples/verl_mhpo_qwen7b.sh --print-overrides           # show, do not run
#
# The data files are verl's parquet format (see verl's examples/data_preprocess).
set -euo pipefail

TRAIN=${TRAIN:-$HOME/data/math/train.parquet}
VAL=${VAL:-$HOME/data/math/test.parquet}
MODEL=${MODEL:-Qwen/Qwen2.5-7B-Instruct}
OBJECTIVE=${OBJECTIVE:-mhpo}

# The objective's recipe from mhpo's registry: its advantage step (its scale, and its alpha
# folded in for HPO/A-HPO), its loss and its aggregation; MHPO's hyperparameters at the
# paper's values, written out.
mapfile -t RECIPE < <(python3 -m mhpo.integrations.verl "$OBJECTIVE" 2>/dev/null || echo "error")
if [[ ${RECIPE[0]:-error} == error ]]; then
  python3 -m mhpo.integrations.verl "$OBJECTIVE"  # says why
  exit 2
fi
if [[ $OBJECTIVE == mhpo ]]; then
  RECIPE+=("+actor_rollout_ref.actor.policy_loss.objective_hyperparameters={c: 1.5, k_pos: 1.5, lam_pos: 1.0, k_neg: 2.0, lam_neg: 0.8}")
fi

OVERRIDES=(
  "${RECIPE[@]}"
  algorithm.use_kl_in_reward=False
  "data.train_files=$TRAIN"
  "data.val_files=$VAL"
  data.train_batch_size=128
  data.max_prompt_length=1024
  data.max_response_length=3072
  data.filter_overlong_prompts=True
  "actor_rollout_ref.model.path=$MODEL"
  actor_rollout_ref.model.use_remove_padding=True
  actor_rollout_ref.model.enable_gradient_checkpointing=True
  actor_rollout_ref.actor.strategy=fsdp
  actor_rollout_ref.actor.optim.lr=1e-6
  actor_rollout_ref.actor.ppo_mini_batch_size=32
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4
  actor_rollout_ref.actor.use_kl_loss=False
  actor_rollout_ref.actor.entropy_coeff=0
  actor_rollout_ref.rollout.name=vllm
  actor_rollout_ref.rollout.n=8
  actor_rollout_ref.rollout.tensor_model_parallel_size=2
  actor_rollout_ref.rollout.gpu_memory_utilization=0.6
  actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8
  actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=8
  trainer.n_gpus_per_node=8
  trainer.nnodes=1
  trainer.total_epochs=15
  trainer.save_freq=20
  trainer.test_freq=10
  trainer.project_name=mhpo
  "trainer.experiment_name=qwen2.5-7b-$OBJECTIVE"
  "trainer.logger=[console,tensorboard]"
)

if [[ ${1:-} == --print-overrides ]]; then
  printf '%s\n' "${OVERRIDES[@]}"
  exit 0
fi

# Installed with 'mhpo[verl]', the plug-in loads through verl's entry point in the driver and in
# every Ray worker: no environment variable is needed.
exec python3 -m verl.trainer.main_ppo "${OVERRIDES[@]}" "$@"
