"""Sampling completions from the policy: left-padded prompts, KV cache, temperature, top-p,
stop at EOS."""

from __future__ import annotations

import dataclasses

import torch

from .models import Policy

Tensor = torch.Tensor


@dataclasses.dataclass
class Rollout:
    """Sampled completions as token lists (tensors are built by :func:`pack` when needed).

    Attributes:
        prompts: prompt token ids, one list per completion.
        completions: completion token ids, EOS included when generated.
        texts: decoded completions (without EOS).
        truncated: True where no EOS came within the token budget.
    """

    prompts: list[list[int]]
    completions: list[list[int]]
    texts: list[str]
    truncated: list[bool]

    def __len__(self) -> int:
        return len(self.completions)

    def select(self, rows: list[int]) -> Rollout:
        return Rollout(
            [self.prompts[i] for i in rows],
            [self.completions[i] for i in rows],
            [self.texts[i] for i in rows],
            [self.truncated[i] for i in rows],
        )

    @staticmethod
    def concat(parts: list[Rollout]) -> Rollout:
        return Rollout(
            [p for r in parts for p in r.prompts],
            [c for r in parts for c in r.completions],
            [t for r in parts for t in r.texts],
            [t for r in parts for t in r.truncated],
        )


def pack(
    prompts: list[list[int]], completions: list[list[int]], pad_id: int
) -> tuple[Tensor, Tensor, int, Tensor]:
    """Left-pad prompts, right-pad completions, and join them.

    Returns ``(sequences, attention_mask, prompt_width, completion_mask)`` with shapes
    (B, P + C), (B, P + C), P and (B, C).
    """
    ids, mask = left_pad(prompts, pad_id)
    width = max(1, max(len(c) for c in completions))
    tail = torch.full((len(completions), width), pad_id, dtype=torch.long)
    tail_mask = torch.zeros((len(completions), width), dtype=torch.long)
    for row, completion in enumerate(completions):
        if completion:
            tail[row, : len(completion)] = torch.tensor(completion, dtype=torch.long)
            tail_mask[row, : len(completion)] = 1
    return torch.cat([ids, tail], 1), torch.cat([mask, tail_mask], 1), ids.shape[1], tail_mask


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt) :] = 1
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
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


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
    """Sample one completion per prompt (repeat prompts for groups)."""
    tok = policy.tokenizer
    ids, mask = left_pad(prompts, tok.pad_id)
    batch, width = ids.shape
    position = (mask.cumsum(-1) - 1).clamp(min=0)
    finished = torch.zeros(batch, dtype=torch.bool)
    new_tokens = torch.full((batch, max_new_tokens), tok.pad_id, dtype=torch.long)
    completion_mask = torch.zeros((batch, max_new_tokens), dtype=torch.long)
    model = policy.model
    was_training = model.training
    model.eval()
    cache = None
    step_ids, step_pos = ids, position
    full_mask = mask
    for t in range(max_new_tokens):
        with policy.autocast():
            out = model(
                input_ids=step_ids,
                attention_mask=full_mask,
                position_ids=step_pos,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
        cache = out.past_key_values
        token = _sample(out.logits[:, -1], temperature, top_p, generator)
        token = torch.where(finished, torch.full_like(token, tok.pad_id), token)
        new_tokens[:, t] = token
        completion_mask[:, t] = (~finished).long()
        finished |= token == tok.eos_id
        if bool(finished.all()):
            break
        step_ids = token[:, None]
        step_pos = position[:, -1:] + t + 1
        full_mask = torch.cat([full_mask, torch.ones((batch, 1), dtype=torch.long)], dim=1)
    model.train(was_training)

    completions, texts = [], []
    for row in range(batch):
        counted = new_tokens[row][completion_mask[row].bool()].tolist()
        completions.append(counted)
        texts.append(tok.decode([i for i in counted if i != tok.eos_id]))
    return Rollout(prompts=[list(p) for p in prompts], completions=completions, texts=texts,
                   truncated=(~finished).tolist())  # fmt: skip
