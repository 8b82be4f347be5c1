"""MHPO (or any mhpo objective) with TRL's GRPOTrainer, on a CPU, one GPU or many.

    pip install 'mhpo[trl]'
    # offline on a CPU: a local model directory and a local JSONL (docs/trl.md, about a minute)
    python examples/trl_mhpo.py --model_name_or_path models/smollm2-135m --dataset train.jsonl \
        --prompt_column prompt --output_dir runs/trl-cpu --max_steps 4 ...
    # one GPU, GSM8K from the hub
    python examples/trl_mhpo.py --model_name_or_path Qwen/Qwen2.5-1.5B-Instruct --output_dir runs/trl-mhpo
    # 8 GPUs, DDP
    accelerate launch --config_file examples/accelerate_ddp.yaml examples/trl_mhpo.py --output_dir runs/trl-mhpo
    # 8 GPUs, DeepSpeed ZeRO-2 (pip install deepspeed)
    accelerate launch --config_file examples/accelerate_zero2.yaml examples/trl_mhpo.py --output_dir runs/trl-mhpo
    # another objective
    ... examples/trl_mhpo.py --objective a_hpo --objective_hysteresis adaptive

Every TRL GRPOConfig option is a flag (``--help``). ``--dataset`` is a hub dataset or a local
.jsonl/.json/.csv/.parquet file; it has a prompt column and an answer column (named by
``--prompt_column`` and ``--answer_column``); the reward is math-verify equivalence of the
completion with the answer (after GSM8K's '####', where there is one).
"""

from __future__ import annotations

import dataclasses
import sys

from transformers import HfArgumentParser

from mhpo.integrations.trl import ObjectiveGRPOConfig


@dataclasses.dataclass
class ScriptArguments:
    model_name_or_path: str = "Qwen/Qwen2.5-1.5B-Instruct"
    dataset: str = "openai/gsm8k"
    dataset_config: str = "main"
    prompt_column: str = "question"
    answer_column: str = "answer"


# Defaults for this recipe; any flag overrides them.
RECIPE = [
    "--objective", "mhpo",
    "--num_generations", "8",
    "--per_device_train_batch_size", "8",
    "--gradient_accumulation_steps", "4",
    "--max_completion_length", "1024",
    "--learning_rate", "1e-6",
    "--num_iterations", "2",
    "--beta", "0.0",
    "--bf16", "true",
    "--logging_steps", "1",
    "--report_to", "tensorboard",
]  # fmt: skip


def build_config(argv: list[str]) -> tuple[ScriptArguments, ObjectiveGRPOConfig]:
    parser = HfArgumentParser((ScriptArguments, ObjectiveGRPOConfig))
    script, config = parser.parse_args_into_dataclasses(RECIPE + argv)
    return script, config


LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def dataset_source(script: ScriptArguments) -> dict:
    """``load_dataset``'s arguments: a local file by its format, else a hub name and config."""
    import pathlib

    path = pathlib.Path(script.dataset)
    if path.suffix in LOCAL_FORMATS:
        if not path.is_file():
            raise SystemExit(f"--dataset {path}: no such file.")
        return {"path": LOCAL_FORMATS[path.suffix], "data_files": [str(path)]}
    return {"path": script.dataset, "name": script.dataset_config or None}


def reward(completions, answer, **kwargs):
    from mhpo.tasks.userdata import math_verify_reward

    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    golds = [a.split("####")[-1].strip() for a in answer]  # GSM8K's final answer follows '####'
    return [math_verify_reward(text, gold) for text, gold in zip(texts, golds)]


def main(argv: list[str]) -> None:
    from datasets import load_dataset

    from mhpo.integrations.trl import ObjectiveGRPOTrainer

    script, config = build_config(argv)
    data = load_dataset(**dataset_source(script), split="train")
    data = data.map(lambda row: {"prompt": [{"role": "user", "content": row[script.prompt_column]}],
                                 "answer": row[script.answer_column]})  # fmt: skip
    trainer = ObjectiveGRPOTrainer(model=script.model_name_or_path, reward_funcs=reward, args=config, train_dataset=data)
    trainer.train()
    trainer.save_model(config.output_dir)


if __name__ == "__main__":
    main(sys.argv[1:])
