"""A very small trainer configuration for fast, offline tests."""

from mhpo.train.config import TINY_OPTIONS, TrainConfig

TINY = dict(
    hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, warmstart_steps=0,
    batch_size=8, group_size=4, max_new_tokens=6, micro_batch_size=4, minibatches=2, mu=2,
    eval_size=4, eval_k=1, eval_every=0, checkpoint_every=0, progress=False, threads=1, lr=1e-3,
)  # fmt: skip


def tiny_config(tmp_path, **overrides) -> TrainConfig:
    values = dict(TINY, output_dir=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"))
    if overrides.get("model", "tiny") != "tiny":  # a loaded model keeps its own shape
        values = {k: v for k, v in values.items() if k not in TINY_OPTIONS}
    values.update(overrides)
    return TrainConfig(**values)



def save_local_hf_model(directory) -> str:
    from mhpo.train.models import save_tiny_hf_model

    return save_tiny_hf_model(directory)


def greedy_reference(model, prompt: list[int], steps: int, eos: int) -> list[int]:
    """Greedy decoding by recomputing the whole sequence at every step: no cache, no batch."""
    import torch

    sequence = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            token = int(model(input_ids=torch.tensor([sequence])).logits[0, -1].argmax())
            sequence.append(token)
            if token == eos:
                break
    return sequence[len(prompt):]
