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


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: pathlib.Path) -> set[str]:
    return {_slug(line.lstrip("#")) for line in path.read_text().splitlines() if re.match(r"#{1,6} ", line)}


def test_every_documentation_reference_in_the_code_resolves():
    """Docstrings and tests cite docs/<file>.md, optionally #<heading>: each file and heading
    exists. A reference to a file outside the repository (such as a METHODS.md) fails too."""
    pattern = re.compile(r"\b((?:docs/)?[A-Za-z_]+\.md)(#[\w\-]+)?")
    checked = 0
    for source in sorted([*(ROOT / "src").rglob("*.py"), *(ROOT / "tests").rglob("*.py")]):
        for number, line in enumerate(source.read_text().splitlines(), 1):
            for name, anchor in pattern.findall(line):
                if name in ("report.md", "pairs.md", "pilot.md", "claims.md", "README.md") or source.name == "test_docs.py":
                    continue  # a study's output file; this test's own pattern
                target = ROOT / name if name.startswith("docs/") else ROOT / "docs" / name
                where = f"{source.relative_to(ROOT)}:{number}"
                assert target.is_file(), f"{where} cites {name}, which is not in the repository"
                if anchor:
                    assert anchor[1:] in _anchors(target), f"{where} cites {name}{anchor}: no such heading"
                checked += 1
    assert checked >= 15


def test_the_gpu_check_is_skipped_cleanly_without_cuda():
    """`make gpu-check` on a machine without CUDA: one line saying why, exit status 0."""
    import torch

    if torch.cuda.is_available():  # pragma: no cover - a GPU machine runs the check itself
        return
    assert re.search(r"^gpu-check:", (ROOT / "Makefile").read_text(), re.M)
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")], capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("gpu-check skipped: no CUDA device is visible"), result.stdout
