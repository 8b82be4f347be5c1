"""`mhpo plot-weights` as a user runs it: a PNG on disk and a table on stdout."""

import subprocess
import sys

import pytest

from mhpo.cli import main


def test_plot_weights_writes_png_and_table(tmp_path):
    out = tmp_path / "nested" / "weights.png"
    result = subprocess.run(
        [sys.executable, "-m", "mhpo.cli", "plot-weights", "--out", str(out)], capture_output=True, text=True, check=True
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 50_000  # a 13-panel figure, not an empty canvas
    assert "0.265" in result.stdout  # MHPO's on-policy weight in the table
    assert "mhpo" in result.stdout and "unclipped" in result.stdout
    assert not list(out.parent.glob("*.tmp"))


def test_plot_weights_rejects_unknown_objective(capsys):
    with pytest.raises(SystemExit):
        main(["plot-weights", "--objectives", "grpo,mhp"])
    assert "unknown objective(s) mhp" in capsys.readouterr().err


def test_plot_weights_rejects_bad_range(tmp_path):
    with pytest.raises(SystemExit, match="--r-min"):
        main(["plot-weights", "--out", str(tmp_path / "w.png"), "--r-min", "2"])
