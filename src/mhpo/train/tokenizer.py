"""Tokenizers behind one small interface: a character-level one for the built-in tiny model,
and a wrapper around a Hugging Face tokenizer for pretrained models."""

from __future__ import annotations

from ..tasks.base import Problem

PAD, BOS, EOS = 0, 1, 2
_SPECIAL = 3
_CHARS = [chr(c) for c in range(32, 127)] + ["\n"]


class CharTokenizer:
    """Printable ASCII and newline, one token each, plus PAD, BOS and EOS.

    >>> tok = CharTokenizer()
    >>> tok.decode(tok.encode("3,5>8=")), tok.vocab_size
    ('3,5>8=', 99)
    """

    kind = "char"
    pad_id, bos_id, eos_id = PAD, BOS, EOS

    def __init__(self) -> None:
        self._index = {ch: i + _SPECIAL for i, ch in enumerate(_CHARS)}

    @property
    def vocab_size(self) -> int:
        return _SPECIAL + len(_CHARS)

    def encode(self, text: str) -> list[int]:
        # Characters outside the vocabulary map to "?" rather than failing mid-run.
        fallback = self._index["?"]
        return [self._index.get(ch, fallback) for ch in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(_CHARS[i - _SPECIAL] for i in ids if i >= _SPECIAL and i - _SPECIAL < len(_CHARS))

    def prompt_ids(self, problem: Problem) -> list[int]:
        if "messages" in problem.data:
            raise ValueError(
                "conversational prompts (lists of messages) need a chat model with a chat template; "
                "use --model with a pretrained chat model, or give prompts as text."
            )
        return [BOS] + self.encode(problem.prompt)

    def state(self) -> dict:
        return {"kind": self.kind}

    def to_hf(self):
        """The same tokenizer as a ``transformers`` fast tokenizer (same ids; BOS is added in
        front of a text, as :meth:`prompt_ids` does), for exported models."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
        from transformers import PreTrainedTokenizerFast

        vocab = {"<pad>": PAD, "<s>": BOS, "</s>": EOS, **self._index}
        core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="?"))
        core.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
        core.decoder = decoders.Fuse()
        core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", BOS)])
        return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


class HFTokenizer:
    """A Hugging Face tokenizer; instruct models get their chat template and the
    natural-language instruction, others the compact prompt."""

    kind = "hf"

    def __init__(self, tokenizer, system_prompt: str = "") -> None:
        self.tok = tokenizer
        self.system_prompt = system_prompt
        if system_prompt and not getattr(tokenizer, "chat_template", None):
            raise ValueError("--system-prompt needs a tokenizer with a chat template; this model's has none.")
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token; generation could not stop.")
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        self.bos_id = tokenizer.bos_token_id

    @property
    def vocab_size(self) -> int:
        return len(self.tok)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False)

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)

    def prompt_ids(self, problem: Problem) -> list[int]:
        messages = problem.data.get("messages")
        if getattr(self.tok, "chat_template", None):
            messages = messages or [{"role": "user", "content": problem.instruction}]
            if self.system_prompt and messages[0]["role"] != "system":
                messages = [{"role": "system", "content": self.system_prompt}, *messages]
            text = self.tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            return self.encode(text)
        if messages:
            raise ValueError(
                "conversational prompts (lists of messages) need a tokenizer with a chat template; "
                "this model's has none: give prompts as text or use a chat model."
            )
        prefix = [self.bos_id] if self.bos_id is not None else []
        return prefix + self.encode(problem.prompt)

    def state(self) -> dict:
        return {"kind": self.kind}
