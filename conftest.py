"""The documentation is a test suite: every ```bash and ```python block of README.md and
docs/*.md runs, in order, as a user would run it from a checkout (sybil collects them).

How a block runs:

* Each document gets its own empty working directory, shared by its blocks in order, so a
  later block uses what an earlier one wrote (runs/, models/, train.jsonl). ``.venv/bin/mhpo``
  and ``.venv/bin/python`` there are this environment's, and ``examples/`` is the checkout's.
* Sizes: an HTML comment right before a block, ``<!-- docs-test train: --steps 1 | eval: --size 2 -->``,
  names flags appended to every ``mhpo SUBCOMMAND`` of the block (argparse keeps an option's
  last value, so ``--steps 100 ... --steps 1`` trains one step). The block is otherwise run
  as written; the comment is invisible on a rendered page.
* ``<!-- docs-test compose: verl -->``: a block of verl overrides that needs a cluster is
  composed onto verl's own ``ppo_trainer`` config instead, its actor config instantiated and
  its loss called once.
* ``<!-- docs-test skip: REASON -->``: not run, for the reason given (the main job itself,
  a hub download, a GPU).
* A ```python block runs in the document's directory in one namespace per document; a
  ```bash block runs with ``bash -euo pipefail`` and fails the test on a non-zero exit.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent
# The SkyRL plug-in runs in its own environment (`make test-skyrl`); elsewhere its module,
# page and tests are not collected.
collect_ignore = [] if importlib.util.find_spec("skyrl") else [
    "src/mhpo/integrations/skyrl.py", "docs/skyrl.md", "tests/test_skyrl.py"]  # fmt: skip
MARKER = re.compile(r"<!--\s*docs-test\s+(?P<body>.*?)\s*-->\s*$", re.S)


def _marker(example) -> str | None:
    """The body of the ``<!-- docs-test ... -->`` comment right before the block, if any."""
    before = example.document.text[: example.start].rstrip()
    found = MARKER.match(before[before.rfind("<!--") :]) if before.endswith("-->") else None
    return found.group("body") if found else None


def _flags(body: str) -> dict[str, str]:
    """``train,eval: --seed 1 | eval: --size 2`` -> {"TRAIN": "--seed 1", "EVAL": "--seed 1 --size 2"}."""
    flags = {}
    for part in body.split("|"):
        names, _, value = part.partition(":")
        for name in names.split(","):
            key = name.strip().upper().replace("-", "_")
            flags[key] = f"{flags.get(key, '')} {value.strip()}".strip()
    return flags


def _setup(namespace) -> None:
    work = pathlib.Path(tempfile.mkdtemp(prefix="mhpo-docs-"))
    bin_dir = work / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    real = pathlib.Path(sys.executable).parent
    # `mhpo SUB ...` gets the block's flags for SUB appended (MHPO_DOCS_FLAGS_SUB).
    (bin_dir / "mhpo").write_text(
        "#!/usr/bin/env bash\n"
        'var="MHPO_DOCS_FLAGS_$(printf %s "${1:-}" | tr a-z- A-Z_)"\n'
        f'exec "{real / "mhpo"}" "$@" ${{!var:-}}\n'
    )
    (bin_dir / "mhpo").chmod(0o755)
    # a script, not a link: a venv's python finds its packages from where it is invoked
    (bin_dir / "python").write_text(f'#!/usr/bin/env bash\nexec "{sys.executable}" "$@"\n')
    (bin_dir / "python").chmod(0o755)
    for tool in ("torchrun", "accelerate"):
        if (real / tool).exists():
            (bin_dir / tool).symlink_to(real / tool)
    (work / "examples").symlink_to(ROOT / "examples")
    namespace["work"] = work
    namespace["cwd"] = os.getcwd()
    os.chdir(work)


def _teardown(namespace) -> None:
    os.chdir(namespace["cwd"])
    shutil.rmtree(namespace["work"], ignore_errors=True)


def _evaluate_bash(example) -> None:
    body = _marker(example) or ""
    if body.startswith("skip:"):
        pytest.skip(body[len("skip:") :].strip())
    if body.startswith("compose:"):
        return _compose(body[len("compose:") :].strip(), example.parsed)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MHPO_DOCS_FLAGS_")}
    env.update({f"MHPO_DOCS_FLAGS_{name}": value for name, value in _flags(body).items()} if body else {})
    env["PATH"] = f"{example.namespace['work'] / '.venv' / 'bin'}{os.pathsep}{env['PATH']}"
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", example.parsed], cwd=example.namespace["work"],
                            env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
    example.namespace["last_output"] = result.stdout
    assert result.returncode == 0, f"exit {result.returncode}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"


def _compose(host: str, block: str) -> None:
    """A verl launch line: its overrides composed onto verl's config, as verl would at start."""
    assert host == "verl", f"unknown host to compose for: {host}"
    from hydra import compose, initialize_config_dir
    from verl.trainer.ppo.core_algos import get_adv_estimator_fn, get_policy_loss_fn
    from verl.utils.config import omega_conf_to_dataclass

    import verl

    # The line as the shell would pass it to verl (quotes, $(...) expanded), verl replaced by printf.
    assert "python3 -m verl.trainer.main_ppo" in block, "a verl block launches verl.trainer.main_ppo"
    printing = block.replace("python3 -m verl.trainer.main_ppo", "printf '%s\\n'")
    env = {**os.environ, "PATH": f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    words = subprocess.run(["bash", "-euo", "pipefail", "-c", printing], capture_output=True, text=True, check=True,
                           env=env).stdout.splitlines()  # fmt: skip
    overrides = [w for w in words if "=" in w and not w.startswith("-")]
    assert overrides, "a verl block with no overrides"
    # `...` in a launch line stands for the user's own options; verl requires one of them
    # when the actor config is built.
    overrides = ["actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1", *overrides]
    config_dir = str(pathlib.Path(verl.__file__).parent / "trainer" / "config")
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        cfg = compose(config_name="ppo_trainer", overrides=overrides)
    actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    get_adv_estimator_fn(cfg.algorithm.adv_estimator)
    fn = get_policy_loss_fn(actor.policy_loss.loss_mode)
    import torch

    generator = torch.Generator().manual_seed(0)
    old = -torch.rand(4, 6, generator=generator, dtype=torch.float64)
    new = old + 0.1 * torch.randn(4, 6, generator=generator, dtype=torch.float64)
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5], dtype=torch.float64).unsqueeze(-1).expand(4, 6)
    loss, _ = fn(old, new, advantages, torch.ones(4, 6), loss_agg_mode=actor.loss_agg_mode, config=actor)
    assert torch.isfinite(loss)


def _sybil():
    from sybil import Sybil
    from sybil.evaluators.python import PythonEvaluator
    from sybil.parsers.markdown import CodeBlockParser

    class BashParser(CodeBlockParser):
        language = "bash"

        def evaluate(self, example):
            return _evaluate_bash(example)

    class PythonParser(CodeBlockParser):
        language = "python"

        def evaluate(self, example):
            body = _marker(example) or ""
            if body.startswith("skip:"):
                pytest.skip(body[len("skip:") :].strip())
            return PythonEvaluator()(example)

    return Sybil(parsers=[BashParser(), PythonParser()], patterns=["README.md", "docs/*.md"], setup=_setup,
                 teardown=_teardown, path=str(ROOT))  # fmt: skip


try:
    pytest_collect_file = _sybil().pytest()
except ImportError:  # sybil is a dev dependency: without it the docs are not collected
    pass
