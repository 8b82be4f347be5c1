"""A real two-process gloo run: data-parallel gradients with global normalisers equal the
single-process full-batch gradient, for every objective."""

import json
import os
import pathlib
import subprocess
import sys

import mhpo
from batches import free_port

WORKER = pathlib.Path(__file__).with_name("dp_worker.py")


def test_two_rank_gloo_gradients_equal_single_process(tmp_path):
    out = tmp_path / "diffs.json"
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE="2")
    procs = [
        subprocess.Popen([sys.executable, str(WORKER), str(out)], env=dict(env, RANK=str(rank)),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        for rank in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    diffs = json.loads(out.read_text())
    assert set(diffs) == set(mhpo.list_objectives())
    for name, d in diffs.items():
        assert d["grad_scale"] > 1e-3, name  # a real gradient, not a trivially equal zero
        assert d["max_abs_diff"] <= 1e-13 * max(1.0, d["grad_scale"]), (name, d)
