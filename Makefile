# The two commands of the README: `make run` (the main job) and `make test`.
# Both create or reuse .venv through scripts/bootstrap.sh.

.PHONY: run test test-skyrl bench studies env gpu-check

env:
	@bash scripts/bootstrap.sh

# The kernels are pinned to AVX2 (ATen's and MKL's): AVX-512 kernels round differently, and over
# 60 steps that moves the runs. Pinned, the README's table came out digit for digit on the AVX2
# machine that made it and on an AVX-512 AMD EPYC.
run: env
	.venv/bin/mhpo plot-weights --out results/weights.png
	ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2 .venv/bin/mhpo compare --out results/compare

test: env
	@bash scripts/test.sh

# The SkyRL plug-in in an environment of its own (SkyRL pins transformers and peft).
test-skyrl:
	@MHPO_VENV=.venv-skyrl MHPO_EXTRAS=skyrl,dev bash scripts/bootstrap.sh
	.venv-skyrl/bin/python -m pytest -q tests/test_skyrl.py docs/skyrl.md src/mhpo/integrations/skyrl.py

bench: env
	.venv/bin/python benchmarks/objectives.py
	.venv/bin/python benchmarks/logprobs.py
	.venv/bin/python benchmarks/trainer_speed.py
	.venv/bin/python benchmarks/trainer_vs_trl.py
	.venv/bin/python benchmarks/decode.py

# On a CUDA machine: the trainer, the TRL plug-in and the objectives on the GPU (skipped without one).
gpu-check: env
	.venv/bin/python benchmarks/gpu_check.py

# The evidence in docs/results.md: a few hours on 2 cores, resumable (rerun to continue).
studies: env
	.venv/bin/python studies/stability.py
	.venv/bin/python studies/smollm2.py
	.venv/bin/python studies/controls.py
	.venv/bin/python studies/publish.py
