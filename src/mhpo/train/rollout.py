"""Sampling completions from the policy: left-padded prompts, KV cache, temperature, top-p,
stop at EOS."""

from __future__ import annotations

import dataclasses

import torch

from .models import Policy

Tensor = torch.Tensor


@dataclasses.dataclass
class Rollout:
    """A batch of prompts with their sampled completions.

    Attributes:
        sequences: (B, P + C) left-padded prompts then right-padded completions.
        attention_mask: (B, P + C), 1 for real prompt tokens and counted completion tokens.
        prompt_width: P.
        completion_mask: (B, C), 1 for completion tokens up to and including EOS.
        truncated: (B,) True where no EOS came within the token budget.
        completions: decoded completion texts (without EOS).
    """

    sequences: Tensor
    attention_mask: Tensor
    prompt_width: int
    completion_mask: Tensor
    truncated: Tensor
    completions: list[str]

    def select(self, rows: Tensor | list[int]) -> Rollout:
        rows = torch.as_tensor(rows, dtype=torch.long)
        return Rollout(
            self.sequences[rows],
            self.attention_mask[rows],
            self.prompt_width,
            self.completion_mask[rows],
            self.truncated[rows],
            [self.completions[i] for i in rows.tolist()],
        )

    @property
    def lengths(self) -> Tensor:
        return self.completion_mask.sum(-1)


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
    step_ids, step_mask, step_pos = ids, mask, position
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

    used = int(completion_mask.sum(0).nonzero().max()) + 1 if completion_mask.any() else 1
    new_tokens, completion_mask = new_tokens[:, :used], completion_mask[:, :used]
    texts = []
    for row in range(batch):
        counted = new_tokens[row][completion_mask[row].bool()].tolist()
        texts.append(tok.decode([i for i in counted if i != tok.eos_id]))
    return Rollout(
        sequences=torch.cat([ids, new_tokens], dim=1),
        attention_mask=torch.cat([mask, completion_mask], dim=1),
        prompt_width=width,
        completion_mask=completion_mask,
        truncated=~finished,
        completions=texts,
    )
