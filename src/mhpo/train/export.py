"""`mhpo export`: a run's trained policy as a Hugging Face model directory, loadable with
``transformers.AutoModelForCausalLM.from_pretrained`` (LoRA merged), or its LoRA adapter alone
for ``peft.PeftModel.from_pretrained`` on top of the base model."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil

import yaml

from .checkpoint import load_latest
from .config import TrainConfig
from .models import load_policy
from .tokenizer import CharTokenizer


def export_run(run: str | pathlib.Path, out: str | pathlib.Path, *, adapter_only: bool = False, log=print) -> pathlib.Path:
    """Write the policy of ``run``'s latest checkpoint to ``out``. Everything is checked before
    anything is written; the directory appears whole or not at all, and an existing non-empty
    ``out`` is refused (nothing is overwritten)."""
    run, out = pathlib.Path(run), pathlib.Path(out)
    if not (run / "config.yaml").is_file():
        raise ValueError(f"{run} has no config.yaml; pass a run directory written by mhpo train.")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and is not empty; choose a new --out directory (nothing was overwritten).")
    cfg = TrainConfig.from_dict(yaml.safe_load((run / "config.yaml").read_text()))
    if adapter_only and not cfg.lora_rank:
        raise ValueError(f"{run} was trained without LoRA, so it has no adapter to export; drop --adapter-only.")
    state = load_latest(run / "checkpoints", log=log)
    if state is None:
        raise ValueError(f"no checkpoint in {run / 'checkpoints'}; a run writes one at its end and every --checkpoint-every steps.")
    from .trainer import lora_settings, model_config  # the trainer's own mapping of options to a model

    policy = load_policy(model_config(dataclasses.replace(cfg, device="cpu", dtype="float32")))
    if cfg.lora_rank:
        policy.add_lora(lora_settings(cfg), seed=cfg.seed)
    policy.model.load_state_dict(state["model"])

    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)  # this process's own leftover, never the user's directory
    try:
        if adapter_only:
            policy.peft.save_pretrained(tmp)
        else:
            model = policy.peft.merge_and_unload() if policy.peft is not None else policy.model
            model.save_pretrained(tmp)
        tokenizer = policy.tokenizer
        (tokenizer.to_hf() if isinstance(tokenizer, CharTokenizer) else tokenizer.tok).save_pretrained(tmp)
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    what = "LoRA adapter" if adapter_only else "model" + (" (LoRA merged)" if cfg.lora_rank else "")
    log(f"export: {what} of {run} at step {state['step']} written to {out}")
    return out
