"""Every emitted metric key is in the glossary, and the glossary lists nothing the code lacks."""

import pathlib
import re

import torch

import mhpo
from batches import make_batch

GLOSSARY = pathlib.Path(__file__).resolve().parents[1] / "docs" / "metrics.md"


def glossary_keys() -> set[str]:
    rows = [line for line in GLOSSARY.read_text().splitlines() if line.startswith("| `")]
    return {re.match(r"\| `([^`]+)`", row).group(1) for row in rows}


def emitted_keys() -> dict[str, set[str]]:
    b = make_batch(seed=51)
    entropy = torch.rand(b.mask.shape, dtype=torch.float64)
    seen: dict[str, set[str]] = {}
    for name in mhpo.list_objectives():
        configs = [{}, {"ref_logp": b.ref_logp, "entropy": entropy, "hysteresis": 0.5, "is_weights": entropy + 0.5}]
        configs += [{"ref_logp": b.ref_logp, "kl_estimator": e} for e in ("k1", "k2")]
        if "dual_clip" in [f for f in mhpo.get_objective(name).config.__dataclass_fields__]:
            configs.append({"dual_clip": 3.0})
        if name == "cispo":
            configs.append({"eps_low": 0.2})
        for kwargs in configs:
            seen.setdefault(name, set()).update(mhpo.policy_loss(name, *b.inputs(), **kwargs).metrics)
    return seen


def test_every_emitted_key_is_documented_and_every_documented_key_is_emitted():
    documented = glossary_keys()
    emitted = emitted_keys()
    all_emitted = set().union(*emitted.values())
    assert all_emitted - documented == set(), "document these keys in docs/metrics.md"
    assert documented - all_emitted == set(), "the glossary lists keys the code never emits"


def test_objectives_omit_metrics_they_do_not_define():
    emitted = emitted_keys()
    assert "mhpo/survival" not in emitted["grpo"]
    assert not any(k.startswith("clip/") for k in emitted["mhpo"] | emitted["sapo"] | emitted["reinforce"])
    assert "sapo/gate_mean" in emitted["sapo"] and "mhpo/survival" in emitted["mhpo"]
    assert "hpo/alpha" in mhpo.policy_loss("a_hpo", *make_batch().inputs()).metrics
    assert "hpo/alpha" not in mhpo.policy_loss("grpo", *make_batch().inputs()).metrics
