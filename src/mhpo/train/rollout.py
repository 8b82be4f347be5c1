"""Sampling completions from the policy: left-padded prompts, KV cache, temperature, top-p,
stop at EOS."""

from __future__ import annotations

import dataclasses
import time

import torch

from .models import Policy
from .timing import wall_time

Tensor = torch.Tensor


@dataclasses.dataclass
class Rollout:
    """Sampled completions as token lists (tensors are built by :func:`pack` when needed).

    Attributes:
        prompts: prompt token ids, one list per completion.
        completions: completion token ids, EOS included when generated.
        texts: decoded completions (without EOS).
        truncated: True where no EOS came within the token budget.
        prefill_s, decode_s: seconds spent on the prompts' forward pass and on the token-by-token
            decoding that followed (for the step's time breakdown).
    """

    prompts: list[list[int]]
    completions: list[list[int]]
    texts: list[str]
    truncated: list[bool]
    prefill_s: float = 0.0
    decode_s: float = 0.0

    def __len__(self) -> int:
        return len(self.completions)

    def select(self, rows: list[int]) -> Rollout:
        return Rollout(
            [self.prompts[i] for i in rows],
            [self.completions[i] for i in rows],
            [self.texts[i] for i in rows],
            [self.truncated[i] for i in rows],
            self.prefill_s,
            self.decode_s,
        )

    @staticmethod
    def concat(parts: list[Rollout]) -> Rollout:
        return Rollout(
            [p for r in parts for p in r.prompts],
            [c for r in parts for c in r.completions],
            [t for r in parts for t in r.texts],
            [t for r in parts for t in r.truncated],
            sum(r.prefill_s for r in parts),
            sum(r.decode_s for r in parts),
        )


def pack(
    prompts: list[list[int]], completions: list[list[int]], pad_id: int, device: torch.device | str = "cpu"
) -> tuple[Tensor, Tensor, int, Tensor]:
    """Left-pad prompts, right-pad completions, and join them, on ``device``.

    Returns ``(sequences, attention_mask, prompt_width, completion_mask)`` with shapes
    (B, P + C), (B, P + C), P and (B, C).
    """
    ids, mask = left_pad(prompts, pad_id, device)
    width = max(1, max(len(c) for c in completions))
    tail, tail_mask = _padded(completions, width, pad_id, left=False)
    tail, tail_mask = tail.to(device), tail_mask.to(device)
    return torch.cat([ids, tail], 1), torch.cat([mask, tail_mask], 1), ids.shape[1], tail_mask


def left_pad(prompts: list[list[int]], pad_id: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    ids, mask = _padded(prompts, max(len(p) for p in prompts), pad_id, left=True)
    return ids.to(device), mask.to(device)


def _padded(rows: list[list[int]], width: int, pad_id: int, *, left: bool) -> tuple[Tensor, Tensor]:
    """Rows padded to ``width``, built in host memory (then moved in one copy per tensor)."""
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long, device="cpu")
    mask = torch.zeros((len(rows), width), dtype=torch.long, device="cpu")
    for index, row in enumerate(rows):
        if row:
            span = slice(width - len(row), width) if left else slice(0, len(row))
            ids[index, span] = torch.tensor(row, dtype=torch.long, device="cpu")
            mask[index, span] = 1
    return ids, mask


def _sample(logits: Tensor, temperature: float, top_p: float, generator: torch.Generator | None) -> Tensor:
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, -1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(-1, descending=True)
        # keep the smallest prefix whose mass reaches top_p (always at least one token)
        drop = sorted_probs.cumsum(-1) - sorted_probs >= top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    # Inverse-CDF sampling: one uniform number per row against the running sum of the
    # probabilities (in float64). The same distribution as torch.multinomial, which on CPU
    # draws an exponential variate for every vocabulary entry of every row (a tenth of a
    # SmolLM2 decode step). Searching with right=True never lands on a zero-probability token.
    cdf = probs.double().cumsum(-1)
    u = torch.rand((probs.shape[0], 1), generator=generator, dtype=torch.float64, device=probs.device)
    token = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(-1)
    return token.clamp_(max=probs.shape[-1] - 1)


def _elapsed(start: float, device: torch.device) -> float:
    return wall_time(device) - start


@torch.no_grad()
def generate(
    policy: Policy,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> Rollout:
    """Sample one completion per prompt (repeat prompts for groups).

    Each distinct prompt is run through the model once, and its keys and values are shared by
    every row that repeats it (the G completions of a group). Rows that have produced EOS
    leave the batch, so decoding computes only the rows still running."""
    tok, device = policy.tokenizer, policy.device
    ids, mask = left_pad(prompts, tok.pad_id, device)
    position = (mask.cumsum(-1) - 1).clamp(min=0)
    model = policy.model
    was_training = model.training
    model.eval()
    start = time.perf_counter()  # the prefill's time includes folding LoRA adapters into the weights
    try:
        with policy.sampling() as (forward, weights):
            cache, logits = _prefill(policy, forward, prompts, ids, mask, position)
            decoder = make_decoder(policy, forward, weights, cache, mask.shape[1] + max_new_tokens)
            prefill_s = _elapsed(start, device)
            tokens, counted, finished = _decode(policy, decoder, logits, mask, position, max_new_tokens, temperature,
                                                top_p, generator)  # fmt: skip
    finally:
        model.train(was_training)
    tokens, counted = tokens.cpu(), counted.cpu()  # waits for the device
    decode_s = _elapsed(start, device) - prefill_s
    completions = [tokens[row][counted[row].bool()].tolist() for row in range(len(prompts))]
    texts = [tok.decode([i for i in completion if i != tok.eos_id]) for completion in completions]
    return Rollout(prompts=[list(p) for p in prompts], completions=completions, texts=texts,
                   truncated=(~finished).cpu().tolist(), prefill_s=prefill_s, decode_s=decode_s)  # fmt: skip


def _prefill(policy: Policy, forward, prompts: list[list[int]], ids: Tensor, mask: Tensor, position: Tensor):
    """The KV cache of every row and the logits of its first completion token, computing each
    distinct prompt once."""
    first: dict[tuple[int, ...], int] = {}
    owner, distinct = [], []  # each row's distinct prompt, and the first row of each
    for row, prompt in enumerate(prompts):
        owner.append(first.setdefault(tuple(prompt), len(first)))
        if owner[-1] == len(distinct):
            distinct.append(row)
    rows = torch.tensor(distinct, dtype=torch.long, device=ids.device)
    cache = None
    if policy.config.dtype == "bfloat16":
        from .kvcache import LowPrecisionCache

        cache = LowPrecisionCache(torch.bfloat16, config=policy.model.config)
    with policy.autocast():
        out = forward(input_ids=ids[rows], attention_mask=mask[rows], position_ids=position[rows], use_cache=True,
                      past_key_values=cache, logits_to_keep=1)  # fmt: skip
    cache = out.past_key_values
    inverse = torch.tensor(owner, dtype=torch.long, device=ids.device)
    if len(first) < len(prompts):
        cache.batch_select_indices(inverse)
    return cache, out.logits[inverse, -1]


class HFDecoder:
    """Decoding through the model's own forward and its growing cache (any causal LM)."""

    def __init__(self, forward, cache) -> None:
        self.forward, self.cache = forward, cache

    def step(self, tokens: Tensor, positions: Tensor, mask: Tensor) -> Tensor:
        out = self.forward(input_ids=tokens[:, None], attention_mask=mask, position_ids=positions,
                           past_key_values=self.cache, use_cache=True, logits_to_keep=1)  # fmt: skip
        return out.logits[:, -1]

    def select(self, rows: Tensor) -> None:
        self.cache.batch_select_indices(rows)


def make_decoder(policy: Policy, forward, weights: dict[str, Tensor], cache, total: int):
    """The static-cache decoder where the model supports it, else the model's own forward."""
    from .decoder import StaticCacheDecoder, unsupported

    # a cache of per-layer keys and values (transformers >= 4.56); older caches decode as before
    if unsupported(policy.model) is None and hasattr(cache, "layers"):
        return StaticCacheDecoder(policy.model, weights, cache, total)
    return HFDecoder(forward, cache)


def _decode(policy: Policy, decoder, logits: Tensor, mask: Tensor, position: Tensor, max_new_tokens: int,
            temperature: float, top_p: float, generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """Token by token until every row has produced EOS or the budget is spent. Returns the
    (B, max_new_tokens) tokens and counted-token mask, and the (B,) rows that produced EOS."""
    batch, device, eos = mask.shape[0], mask.device, policy.tokenizer.eos_id
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    tokens = torch.full((batch, max_new_tokens), policy.tokenizer.pad_id, dtype=torch.long, device=device)
    counted = torch.zeros((batch, max_new_tokens), dtype=torch.long, device=device)
    active = torch.arange(batch, device=device)  # the rows still decoding, in the cache's row order
    full_mask = mask
    for t in range(max_new_tokens):
        token = _sample(logits, temperature, top_p, generator)
        tokens[active, t] = token
        counted[active, t] = 1
        done = token == eos
        finished[active[done]] = True
        running = ~done
        if t == max_new_tokens - 1 or not bool(running.any()):
            break
        if not bool(running.all()):  # drop finished rows from the batch and from the cache
            keep = running.nonzero().squeeze(-1)
            active, token, full_mask = active[keep], token[keep], full_mask[keep]
            decoder.select(keep)
        full_mask = torch.cat([full_mask, torch.ones((len(active), 1), dtype=torch.long, device=device)], dim=1)
        with policy.autocast():
            logits = decoder.step(token, position[active, -1:] + t + 1, full_mask)
    return tokens, counted, finished
