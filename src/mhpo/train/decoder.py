"""Token-by-token decoding of Llama-architecture models over a preallocated key-value cache.

The Hugging Face forward grows its cache by concatenation, so every decoded token copies the
keys and values of every layer, and it runs a few dozen module calls, mask builders and
cache updates around each layer's matmuls. For the models mhpo trains on a CPU (the tiny
Llama of the main job, SmolLM2), this decoder runs the same operations on the same weights,
writing each new key and value into its slot of a cache allocated once per rollout, and lets
the query heads that share a key-value head attend as that head's rows of queries instead of
copying the cache once per query head. Its greedy tokens are the Hugging Face forward's (and
so were the sampled ones in every test); its logits are bit for bit the same where no heads
share keys and values and within float rounding where they do (tested, in float32 and
bfloat16, with and without LoRA). Models it does not support decode through the Hugging Face
forward, as before (:func:`unsupported` says why).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def unsupported(model: torch.nn.Module) -> str | None:
    """Why ``model`` cannot use this decoder, or None when it can."""
    config = model.config
    checks = {
        "model_type is not llama": config.model_type != "llama",
        "attention is not sdpa": getattr(config, "_attn_implementation", None) != "sdpa",
        # rope_parameters (transformers 5) or rope_scaling (4.x) name any scaling of the rotary embedding
        "rope scaling": any((getattr(config, attr, None) or {}).get("rope_type", "default") != "default"
                            for attr in ("rope_parameters", "rope_scaling")),
        "activation is not silu": config.hidden_act != "silu",
        "pretraining_tp > 1": getattr(config, "pretraining_tp", 1) != 1,
    }
    reasons = [name for name, failed in checks.items() if failed]
    return ", ".join(reasons) or None


class StaticCacheDecoder:
    """Decodes one token per running row per call, from the prompts' cache of a prefill (the
    same calls as ``rollout.HFDecoder``).

    Args:
        model: the causal LM (a ``LlamaForCausalLM``, LoRA layers allowed: their base weights
            are read through ``weights``).
        weights: the weights sampling runs with, by parameter name (LoRA adapters folded in,
            bfloat16 copies); a parameter not in it is the model's own.
        cache: the prefill's ``DynamicCache``, rows in the batch's order.
        total: the positions the cache must hold (prompt width plus the token budget).
    """

    def __init__(self, model: torch.nn.Module, weights: dict[str, Tensor], cache, total: int) -> None:
        config, parameters = model.config, dict(model.named_parameters(remove_duplicate=False))

        def weight(module: str, name: str = "weight") -> Tensor | None:
            for key in (f"{module}.base_layer.{name}", f"{module}.{name}"):
                if key in weights or key in parameters:
                    return weights.get(key, parameters.get(key))
            return None

        self.layers = []
        for index in range(config.num_hidden_layers):
            prefix = f"model.layers.{index}"
            projections = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")  # fmt: skip
            self.layers.append({
                "input_norm": weight(f"{prefix}.input_layernorm"),
                "post_norm": weight(f"{prefix}.post_attention_layernorm"),
                **{p: (weight(f"{prefix}.{p}"), weight(f"{prefix}.{p}", "bias")) for p in projections},
            })  # fmt: skip
        self.embedding = weight("model.embed_tokens")
        self.final_norm = weight("model.norm")
        self.head = weight("lm_head")
        self.eps = config.rms_norm_eps
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        rotary = model.model.rotary_emb
        self.inv_freq, self.rotary_scaling = rotary.inv_freq, rotary.attention_scaling
        # the prefill's keys and values, copied once into buffers that hold every position
        self.keys, self.values = [], []
        for layer in cache.layers:
            keys = layer.keys.new_empty((*layer.keys.shape[:2], total, layer.keys.shape[-1]))
            values = layer.values.new_empty((*layer.values.shape[:2], total, layer.values.shape[-1]))
            keys[:, :, : layer.keys.shape[2]] = layer.keys
            values[:, :, : layer.values.shape[2]] = layer.values
            self.keys.append(keys)
            self.values.append(values)
        self.length = cache.layers[0].keys.shape[2]

    def select(self, rows: Tensor) -> None:
        """Keep only ``rows`` of the cache (the rows still decoding)."""
        length = self.length
        for store in (self.keys, self.values):
            for index, buffer in enumerate(store):
                kept = buffer.new_empty((len(rows), *buffer.shape[1:]))
                kept[:, :, :length] = buffer[rows, :, :length]
                store[index] = kept

    def _norm(self, hidden: Tensor, weight: Tensor) -> Tensor:
        dtype = hidden.dtype
        hidden = hidden.to(torch.float32)
        variance = hidden.pow(2).mean(-1, keepdim=True)
        hidden = hidden * torch.rsqrt(variance + self.eps)
        return weight * hidden.to(dtype)

    def _rotary(self, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        with torch.autocast(positions.device.type, enabled=False):
            inv_freq = self.inv_freq[None, :, None].float().expand(positions.shape[0], -1, 1)
            freqs = (inv_freq @ positions[:, None, :].float()).transpose(1, 2)
            emb = torch.cat((freqs, freqs), dim=-1)
            cos, sin = emb.cos() * self.rotary_scaling, emb.sin() * self.rotary_scaling
        return cos.to(dtype)[:, None], sin.to(dtype)[:, None]

    @staticmethod
    def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        half = x.shape[-1] // 2
        return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin

    def step(self, tokens: Tensor, positions: Tensor, mask: Tensor) -> Tensor:
        """Logits (B, V) of the next token after ``tokens`` (B,) at ``positions`` (B, 1);
        ``mask`` (B, L + 1) marks the positions each row attends to (1) and its padding (0)."""
        slot, batch = self.length, tokens.shape[0]
        # as the Hugging Face forward: no mask at all when no position is padding
        mask = None if bool(mask.all()) else mask[:, None, None, :].bool()
        hidden = F.embedding(tokens[:, None], self.embedding)
        cos, sin = self._rotary(positions, hidden.dtype)
        groups = self.heads // self.kv_heads
        for layer, keys, values in zip(self.layers, self.keys, self.values):
            residual = hidden
            hidden = self._norm(hidden, layer["input_norm"])
            q = F.linear(hidden, *layer["self_attn.q_proj"]).view(batch, 1, -1, self.head_dim).transpose(1, 2)
            k = F.linear(hidden, *layer["self_attn.k_proj"]).view(batch, 1, -1, self.head_dim).transpose(1, 2)
            v = F.linear(hidden, *layer["self_attn.v_proj"]).view(batch, 1, -1, self.head_dim).transpose(1, 2)
            q, k = self._rotate(q, cos, sin), self._rotate(k, cos, sin)
            keys[:, :, slot : slot + 1] = k
            values[:, :, slot : slot + 1] = v
            # The query heads that share a key-value head attend as that head's rows of queries:
            # no copy of the cache per query head (the Hugging Face forward repeats it).
            q = q.reshape(batch, self.kv_heads, groups, self.head_dim)
            attention = F.scaled_dot_product_attention(q, keys[:, :, : slot + 1], values[:, :, : slot + 1],
                                                       attn_mask=mask, scale=self.scaling)  # fmt: skip
            attention = attention.reshape(batch, 1, -1)
            hidden = residual + F.linear(attention, *layer["self_attn.o_proj"])
            residual = hidden
            hidden = self._norm(hidden, layer["post_norm"])
            gate = F.silu(F.linear(hidden, *layer["mlp.gate_proj"]))
            hidden = residual + F.linear(gate * F.linear(hidden, *layer["mlp.up_proj"]), *layer["mlp.down_proj"])
        self.length += 1
        hidden = self._norm(hidden, self.final_norm)
        return F.linear(hidden, self.head)[:, -1]
