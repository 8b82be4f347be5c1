"""Run with `accelerate launch --cpu --num_processes N trl_worker.py OUT` (or plain python):
one ObjectiveGRPOTrainer micro-step on a fixed global batch, gradient written to OUT.

Generation is bypassed: every process takes its half of the same fixed completions, so the
check isolates the loss normalisation and DDP's gradient averaging.
"""

import sys

import torch
from datasets import Dataset

from mhpo.integrations.trl import ObjectiveGRPOConfig, ObjectiveGRPOTrainer
from trainer_helpers import save_local_hf_model


def build(tmp: str, objective: str, processes: int):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = f"{tmp}/model"
    torch.manual_seed(0)
    if not __import__("os").path.exists(f"{path}/config.json"):
        save_local_hf_model(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float64)
    tokenizer = AutoTokenizer.from_pretrained(path)
    args = ObjectiveGRPOConfig(
        output_dir=f"{tmp}/out", objective=objective, per_device_train_batch_size=8 // processes, num_generations=4,
        max_completion_length=6, use_cpu=True, report_to="none", save_strategy="no", logging_steps=1,
        gradient_accumulation_steps=1, num_iterations=1, seed=0,
    )  # fmt: skip
    data = Dataset.from_dict({"prompt": ["12+3=", "4*5="] * 8})
    trainer = ObjectiveGRPOTrainer(model=model, reward_funcs=lambda completions, **kw: [0.0] * len(completions),
                                   args=args, train_dataset=data, processing_class=tokenizer)  # fmt: skip
    return trainer


def fixed_batch():
    gen = torch.Generator().manual_seed(5)
    prompt_ids = torch.randint(3, 90, (8, 4), generator=gen)
    completion_ids = torch.randint(3, 90, (8, 6), generator=gen)
    lengths = torch.tensor([6, 3, 1, 6, 2, 5, 4, 6])
    completion_mask = (torch.arange(6) < lengths[:, None]).long()
    advantages = torch.tensor([1.0, -0.5, -0.5, 0.0, 0.8, -0.2, -0.3, -0.3], dtype=torch.float64)
    old = -torch.rand(8, 6, generator=gen, dtype=torch.float64) * 3 - 1
    return prompt_ids, completion_ids, completion_mask, advantages, old


def main(out: str, objective: str) -> None:
    import mhpo

    trainer = build(out.rsplit("/", 1)[0], objective, processes=int(__import__("os").environ.get("WORLD_SIZE", 1)))
    acc = trainer.accelerator
    prompt_ids, completion_ids, completion_mask, advantages, old = fixed_batch()
    rows = torch.arange(8).chunk(acc.num_processes)[acc.process_index]
    inputs = {
        "prompt_ids": prompt_ids[rows], "prompt_mask": torch.ones_like(prompt_ids[rows]),
        "completion_ids": completion_ids[rows], "completion_mask": completion_mask[rows],
        "advantages": advantages[rows], "old_per_token_logps": old[rows],
        "num_items_in_batch": completion_mask.sum(), "mhpo_num_seqs": torch.tensor(8),
    }  # fmt: skip
    if mhpo.get_objective(objective).hysteresis == "adaptive":
        inputs["mhpo_alpha"] = mhpo.adaptive_alpha(advantages)
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop, which is bypassed here
    model = acc.prepare(trainer.model)
    model.train()
    trainer.model.train()
    loss = trainer._compute_loss(model, inputs)
    acc.backward(loss)
    print(f"process {acc.process_index}/{acc.num_processes} {acc.distributed_type} rows {rows.tolist()} {type(model).__name__}", file=sys.stderr)
    grads = torch.cat([p.grad.flatten() for p in acc.unwrap_model(model).parameters() if p.grad is not None])
    if acc.is_main_process:
        torch.save(grads, out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
