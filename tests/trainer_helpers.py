"""A very small trainer configuration for fast, offline tests."""

from mhpo.train.config import TrainConfig

TINY = dict(
    hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, warmstart_steps=0,
    batch_size=8, group_size=4, max_new_tokens=6, micro_batch_size=4, minibatches=2, mu=2,
    eval_size=4, eval_k=1, eval_every=0, checkpoint_every=0, progress=False, threads=1, lr=1e-3,
)  # fmt: skip


def tiny_config(tmp_path, **overrides) -> TrainConfig:
    values = dict(TINY, output_dir=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"))
    values.update(overrides)
    return TrainConfig(**values)


def save_local_hf_model(directory) -> str:
    """A tiny Llama and a character-level fast tokenizer saved as a Hugging Face model
    directory, built locally (no hub)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>"]
    chars = [chr(c) for c in range(32, 127)]
    vocab = {tok: i for i, tok in enumerate(specials + chars)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="?"))
    core.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=True)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)
