"""Markdown tables generated from the registry, so the docs cannot drift from the code.

    python -m mhpo.docs_tables    # prints the objective table of README.md

A test checks that README.md contains exactly this table.
"""

from __future__ import annotations

import dataclasses

from .objectives import get_objective, list_objectives


def _defaults(config: type) -> str:
    fields = dataclasses.fields(config)
    return ", ".join(f"{f.name}={f.default!r}" for f in fields) or "none"


def _hysteresis(spec) -> str:
    if spec.hysteresis is None:
        return "off"
    return f"adaptive, α_min={spec.alpha_min:g}" if spec.hysteresis == "adaptive" else f"α={spec.hysteresis:g}"


def _rollout(rules) -> str:
    parts = [label for label, on in (("dynamic sampling", rules.dynamic_sampling),
                                     ("overlong filter", rules.overlong_filter)) if on]  # fmt: skip
    if rules.overlong_buffer_fraction:
        parts.append(f"overlong punishment over the last {rules.overlong_buffer_fraction:g} of the budget")
    return ", ".join(parts) or "none"


def objective_rows() -> dict[str, dict]:
    """Each registered objective's whole recipe as plain values (`mhpo objectives` prints it)."""
    rows = {}
    for name in list_objectives():
        spec = get_objective(name)
        rows[name] = {
            "summary": spec.summary,
            "defaults": {f.name: f.default for f in dataclasses.fields(spec.config)},
            "aggregation": spec.aggregation,
            "advantages": spec.advantage_scale,
            "hysteresis": _hysteresis(spec),
            "rollout": _rollout(spec.rollout),
            "paper": spec.paper,
        }
    return rows


def objectives_markdown() -> str:
    rows = [
        "| objective | what it does | default hyperparameters | aggregation | advantages | A<0 weight | rollout rules | source |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in objective_rows().items():
        if not row["paper"]:
            source = "reference point"
        elif "arxiv.org/search" in row["paper"]:  # no stable identifier known to us: link a title search
            source = f"[title search]({row['paper']})"
        else:
            source = f"[paper]({row['paper']})"
        defaults = ", ".join(f"{k}={v!r}" for k, v in row["defaults"].items()) or "none"
        rows.append(
            f"| `{name}` | {row['summary']} | {defaults} | `{row['aggregation']}` "
            f"| {row['advantages']} | {row['hysteresis']} | {row['rollout']} | {source} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    print(objectives_markdown())
