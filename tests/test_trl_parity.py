"""Parity with TRL's own GRPOTrainer._compute_loss: the same tiny model, the same
crafted batch, TRL's loss_type against ObjectiveGRPOTrainer with the matching objective; the
loss and every parameter's gradient must agree. A TRL release that changes one of its losses
fails here instead of drifting.

TRL's fused LM head returns float32 log-probs whatever the model's dtype, so the batch is
float32 too (with float64 advantages TRL would promote and mhpo would not, a float32
round-off difference); both then compute in float32 and agree to a few ulps.

Named differences: TRL's CISPO cap ``epsilon_high`` is absolute (5.0 = mhpo's eps_high 4.0);
TRL's ``bnpo`` is GRPO with ``token_mean`` (no objective of its own here); GSPO in TRL is
``importance_sampling_level="sequence"`` on the grpo loss; TRL's LUSPO defaults to its
``epsilon`` of 0.2, compared here at GSPO's (3e-4, 4e-4), mhpo's defaults.
"""

from __future__ import annotations

import pytest
import torch

from trainer_helpers import save_local_hf_model

pytest.importorskip("trl", reason="the TRL parity tests need mhpo[trl]")

from datasets import Dataset  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from mhpo.integrations.trl import ObjectiveGRPOConfig, ObjectiveGRPOTrainer  # noqa: E402

# TRL's settings, mhpo's objective and its settings
CASES = [
    ({"loss_type": "grpo"}, "grpo", {}),
    ({"loss_type": "dr_grpo"}, "dr_grpo", {}),
    ({"loss_type": "dapo", "epsilon_high": 0.28}, "dapo", {}),
    ({"loss_type": "bnpo"}, "grpo", {"objective_aggregation": "token_mean"}),
    ({"loss_type": "cispo", "epsilon_high": 5.0}, "cispo", {}),
    ({"loss_type": "sapo"}, "sapo", {}),
    ({"loss_type": "grpo", "importance_sampling_level": "sequence", "epsilon": 3e-4, "epsilon_high": 4e-4}, "gspo", {}),
    ({"loss_type": "luspo", "importance_sampling_level": "sequence", "epsilon": 3e-4, "epsilon_high": 4e-4}, "luspo", {}),
    ({"loss_type": "vespo"}, "vespo", {}),
]  # fmt: skip


@pytest.fixture(scope="module")
def local_model(tmp_path_factory):
    return save_local_hf_model(tmp_path_factory.mktemp("hf") / "model")


def _batch(model, vocab: int) -> dict:
    gen = torch.Generator().manual_seed(5)
    batch, prompt, completion = 4, 3, 5
    prompt_ids = torch.randint(3, vocab, (batch, prompt), generator=gen)
    completion_ids = torch.randint(3, vocab, (batch, completion), generator=gen)
    lengths = torch.tensor([5, 3, 1, 4])
    completion_mask = (torch.arange(completion) < lengths.unsqueeze(1)).long()
    with torch.no_grad():  # an old policy a little away from the model: log-probs shifted by noise
        logits = model(input_ids=torch.cat([prompt_ids, completion_ids], 1)).logits[:, prompt - 1 : -1]
        old = torch.log_softmax(logits.double(), -1).gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)
    old = old + 0.4 * (torch.rand(old.shape, generator=gen, dtype=torch.float64) - 0.5)
    return {
        "prompt_ids": prompt_ids, "prompt_mask": torch.ones_like(prompt_ids),
        "completion_ids": completion_ids, "completion_mask": completion_mask,
        "advantages": torch.tensor([1.2, -0.4, 0.7, -1.5]),
        "old_per_token_logps": old.float(), "num_items_in_batch": completion_mask.sum(),
        "mhpo_num_seqs": torch.tensor(batch),
    }  # fmt: skip


def _loss_and_grads(trainer, model, inputs):
    trainer.current_gradient_accumulation_steps = 1  # what Trainer.training_step sets before the loss
    model.zero_grad()
    model.train()
    loss = trainer._compute_loss(model, dict(inputs))
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("trl_args, objective, ours", CASES, ids=[c[1] + "-" + c[0]["loss_type"] for c in CASES])
def test_trl_own_loss_equals_the_objective(trl_args, objective, ours, local_model, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(local_model).double()
    tokenizer = AutoTokenizer.from_pretrained(local_model)
    data = Dataset.from_dict({"prompt": ["1+1="] * 4})
    common = dict(per_device_train_batch_size=4, num_generations=2, max_completion_length=5, use_cpu=True,
                  report_to="none", save_strategy="no", beta=0.0, bf16=False, fp16=False)  # fmt: skip
    theirs = GRPOTrainer(model=model, reward_funcs=lambda completions, **kw: [0.0] * len(completions),
                         args=GRPOConfig(output_dir=str(tmp_path / "trl"), **common, **trl_args),
                         train_dataset=data, processing_class=tokenizer)  # fmt: skip
    mine = ObjectiveGRPOTrainer(model=model, reward_funcs=lambda completions, **kw: [0.0] * len(completions),
                                args=ObjectiveGRPOConfig(output_dir=str(tmp_path / "mhpo"), objective=objective, **common, **ours),
                                train_dataset=data, processing_class=tokenizer)  # fmt: skip
    inputs = _batch(model, tokenizer.vocab_size if hasattr(tokenizer, "vocab_size") else 50)
    loss_theirs, grads_theirs = _loss_and_grads(theirs, model, inputs)
    loss_mine, grads_mine = _loss_and_grads(mine, model, inputs)
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    # float32 sums in another order: a few ulps (2^-23 ≈ 1.2e-7 each)
    torch.testing.assert_close(loss_mine, loss_theirs, rtol=5e-6, atol=1e-8)
    for a, b in zip(grads_mine, grads_theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)
    assert max(g.abs().max() for g in grads_theirs) > 1e-4  # not vacuous
