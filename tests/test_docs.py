"""The README's promises: the objective table is the registry's, and the example runs."""

import pathlib
import re
import subprocess
import sys

from mhpo.docs_tables import objectives_markdown

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_objective_table_is_generated_from_the_registry():
    assert objectives_markdown() in README, "regenerate it: python -m mhpo.docs_tables"


def test_readme_example_runs():
    code = re.search(r"## Ten lines\n\n```python\n(.*?)```", README, re.S).group(1)
    assert len([line for line in code.splitlines() if line.strip()]) <= 11
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "grad_weight/mean" in result.stdout


def test_readme_commands_exist_in_makefile():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("run", "test"):
        assert f"make {target}" in README and re.search(rf"^{target}:", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()
