"""The optional extras, and one clear error when a command needs one that is not installed."""

from __future__ import annotations

import importlib.util

# The modules each extra of pyproject.toml brings (import names), checked before any work.
EXTRAS: dict[str, tuple[str, ...]] = {
    "train": ("transformers", "accelerate", "datasets", "math_verify", "yaml"),
    "lora": ("peft",),
    "tracking": ("trackio", "wandb"),
    "trl": ("trl",),
    "verl": ("verl",),
}


def missing(extra: str, modules: tuple[str, ...] | None = None) -> list[str]:
    """The modules of ``extra`` (or ``modules`` of it) that cannot be imported here."""
    gone = []
    for name in modules or EXTRAS[extra]:
        try:
            if importlib.util.find_spec(name) is None:
                gone.append(name)
        except (ImportError, ValueError):  # a parent package missing, or a module set to None
            gone.append(name)
    return gone


def require(extra: str, what: str, modules: tuple[str, ...] | None = None) -> None:
    """Raise ValueError naming the install command when ``extra`` is not installed.

    >>> require("train", "mhpo train", modules=("json",))  # importable: nothing happens
    """
    gone = missing(extra, modules)
    if gone:
        raise ValueError(f"{what} needs the '{extra}' extra: pip install 'mhpo[{extra}]' (missing: {', '.join(gone)}).")
