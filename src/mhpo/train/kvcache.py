"""A key-value cache for decoding under bfloat16 autocast."""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache


class LowPrecisionCache(DynamicCache):
    """Keys and values stored in the dtype that autocast gives attention (bfloat16). A plain
    cache holds them in float32 (rotary embeddings promote them), and autocast then casts the
    whole cache of every layer at every decode step. Here each new key and value is cast once,
    as autocast would cast it, so attention sees the same values (tested)."""

    def __init__(self, dtype: torch.dtype, **kwargs) -> None:
        super().__init__(**kwargs)
        self.stored_dtype = dtype

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        return super().update(key_states.to(self.stored_dtype), value_states.to(self.stored_dtype), layer_idx,
                              *args, **kwargs)  # fmt: skip
