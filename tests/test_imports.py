"""`import mhpo` pulls in torch only: no transformers, trl, verl, ray, matplotlib or rich."""

import subprocess
import sys


def test_import_is_torch_only():
    code = (
        "import sys, mhpo; heavy = ['transformers', 'trl', 'verl', 'ray', 'matplotlib', 'rich', 'datasets'];"
        "print(','.join(m for m in heavy if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
