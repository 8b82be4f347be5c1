"""The static-cache decoder (mhpo/train/decoder.py) against the model's own Hugging Face forward
with its growing cache, which is how every rollout decoded before and how models the decoder
does not support still decode."""

import pytest
import torch

from mhpo.train import rollout
from mhpo.train.decoder import StaticCacheDecoder, unsupported
from mhpo.train.models import LoraSettings, ModelConfig, Policy
from mhpo.train.tokenizer import CharTokenizer

RAGGED = [[1, 5, 6, 7]] * 3 + [[1, 20]] * 2 + [[1, 9, 9, 9, 9, 9], [1, 20, 20], [1, 30, 40]]
EVEN = [[1, 5, 6, 7], [1, 8, 8, 8], [1, 20, 21, 22]] * 2  # no padding: attention without a mask


def llama(kv_heads: int, dtype: str = "float32", attention: str = "sdpa", lora: bool = False, **options) -> Policy:
    """A random four-head Llama whose query heads share ``kv_heads`` key-value heads."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = CharTokenizer()
    config = LlamaConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=128, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.pad_id,
        attn_implementation=attention, **options,
    )  # fmt: skip
    torch.manual_seed(kv_heads)
    policy = Policy(LlamaForCausalLM(config), tokenizer, ModelConfig(dtype=dtype))
    if lora:
        policy.add_lora(LoraSettings(4, 8.0, 0.0, "q_proj,v_proj,down_proj"), seed=0)
        with torch.no_grad():  # adapters start at zero: make folding them matter
            for name, parameter in policy.model.named_parameters():
                if "lora_B" in name:
                    parameter.normal_(0, 0.1)
    return policy


def decode(policy: Policy, prompts, temperature: float, static: bool, monkeypatch) -> tuple[list, list]:
    """The completions and the logits of every decode step, from one decoder."""
    logits, make = [], rollout.make_decoder

    def recording(policy, forward, weights, cache, total):
        decoder = make(policy, forward, weights, cache, total) if static else rollout.HFDecoder(forward, cache)
        assert isinstance(decoder, StaticCacheDecoder if static else rollout.HFDecoder)
        step = decoder.step
        decoder.step = lambda *args: logits.append(step(*args)) or logits[-1]
        return decoder

    with monkeypatch.context() as patch:
        patch.setattr(rollout, "make_decoder", recording)
        result = rollout.generate(policy, prompts, max_new_tokens=16, temperature=temperature,
                                  generator=torch.Generator().manual_seed(5))  # fmt: skip
    return result.completions, logits


def ending_token(policy: Policy, prompts, temperature: float) -> int:
    """A random model seldom says EOS: call "end" a token its completions produce at several
    different steps, so that rows finish at different steps and leave the batch."""
    policy.tokenizer.eos_id = -1
    completions = rollout.generate(policy, prompts, max_new_tokens=16, temperature=temperature,
                                   generator=torch.Generator().manual_seed(5)).completions  # fmt: skip
    return max({t for c in completions for t in c}, key=lambda t: len({c.index(t) for c in completions if t in c}))


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("lora", [False, True])
@pytest.mark.parametrize("prompts", [RAGGED, EVEN], ids=["padded", "unpadded"])
def test_static_cache_decoder_gives_the_hugging_face_tokens_and_logits(kv_heads, dtype, lora, prompts, monkeypatch):
    """Greedy and sampled tokens are the same; the logits are the same bit for bit when every
    query head has its own key-value head, and within float rounding when heads share one (the
    decoder attends with the shared head's queries as rows instead of copying the cache per
    query head, which changes the order of the attention kernel's sums)."""
    policy = llama(kv_heads, dtype, lora=lora)
    for temperature in (0.0, 1.0):
        policy.tokenizer.eos_id = ending_token(policy, prompts, temperature)
        before, before_logits = decode(policy, prompts, temperature, False, monkeypatch)
        after, after_logits = decode(policy, prompts, temperature, True, monkeypatch)
        assert after == before
        assert len({len(c) for c in after}) > 1 and min(len(c) for c in after) < 16  # rows left the batch
        assert len(after_logits) == len(before_logits) > 1
        for new, old in zip(after_logits, before_logits):
            assert new.dtype == old.dtype and new.shape == old.shape
            if kv_heads == 4:
                assert torch.equal(new, old)
            else:
                tolerance = 1e-6 if dtype == "float32" else 1e-2  # a few float32 ulps; a bfloat16 ulp at |logit| < 2
                torch.testing.assert_close(new.float(), old.float(), rtol=0, atol=tolerance)


@pytest.mark.parametrize("options, reason", [
    ({"attention": "eager"}, "attention is not sdpa"),
    ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "rope scaling"),
    ({"hidden_act": "gelu"}, "activation is not silu"),
])  # fmt: skip
def test_models_the_decoder_does_not_support_decode_through_their_own_forward(options, reason, monkeypatch):
    policy = llama(2, **options)
    assert unsupported(policy.model) == reason
    assert unsupported(llama(2).model) is None
    made = []
    make = rollout.make_decoder
    monkeypatch.setattr(rollout, "make_decoder", lambda *args: made.append(make(*args)) or made[-1])
    completions = rollout.generate(policy, RAGGED, max_new_tokens=6, temperature=0.0).completions
    assert isinstance(made[0], rollout.HFDecoder) and all(len(c) == 6 for c in completions)


def test_smollm2_decodes_the_same_greedy_tokens(monkeypatch):
    """SmolLM2-135M (9 query heads over 3 key-value heads, 30 layers): the same greedy tokens
    as its Hugging Face forward, and logits within float32 rounding of it."""
    from mhpo.tasks import Arithmetic, ArithmeticConfig
    from mhpo.train.models import load_policy

    policy = load_policy(ModelConfig("smollm2-135m"))
    assert unsupported(policy.model) is None
    problems = Arithmetic(ArithmeticConfig(num_operands=3, max_operand=20)).problems("train", 4, seed=0)
    prompts = [policy.tokenizer.prompt_ids(p) for p in problems]
    before, before_logits = decode(policy, prompts, 0.0, False, monkeypatch)
    after, after_logits = decode(policy, prompts, 0.0, True, monkeypatch)
    assert after == before and len(after_logits) == len(before_logits)
    for new, old in zip(after_logits, before_logits):
        torch.testing.assert_close(new, old, rtol=0, atol=2e-4)  # logits of magnitude ~20
