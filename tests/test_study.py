"""`mhpo compare` / `mhpo report` / `mhpo eval` on tiny runs, and the trainer's metric docs."""

import dataclasses
import json
import pathlib
import re
import subprocess
import sys

import pytest

from mhpo.study.compare import compare, machine, parse_variant
from mhpo.study.report import build_report
from mhpo.study.runs import export_csv, find_runs, load_csv
from mhpo.study.stats import first_reaching, mean_ci, spikes
from mhpo.train.config import TrainConfig
from mhpo.train.runlog import read_metrics
from mhpo.train.trainer import Trainer
from trainer_helpers import TINY, tiny_config

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"


def documented_keys() -> set[str]:
    keys = set()
    for name in ("metrics.md", "training.md"):
        for row in (DOCS / name).read_text().splitlines():
            if row.startswith("| `"):
                keys |= set(re.findall(r"`([a-z_]+(?:/[a-z_@0-9]+)?)`", row.split("|")[1]))
    return keys


def test_every_trainer_metric_is_documented(tmp_path):
    records = Trainer(tiny_config(tmp_path, steps=1, objective="a_hpo"), log=lambda *a: None).train()
    emitted = set().union(*records)
    assert emitted - documented_keys() == set()


HOST_OBJECTIVES = ["dppo_tv", "dppo_kl", "clip_cov", "kl_cov", "gpg", "dro", "vespo", "luspo", "topr", "m2po"]


def test_compare_accepts_every_host_objective(tmp_path):
    """The stability comparison runs the objectives the hosts ship, one row each."""
    from mhpo.train.config import TrainConfig

    base = TrainConfig(**{**TINY, "steps": 1, "eval_every": 0, "cache_dir": str(tmp_path / "cache"),
                          "warmstart_steps": 2, "task": "countdown"})  # fmt: skip
    text = compare(base, HOST_OBJECTIVES, seeds=1, out=tmp_path / "cmp", jobs=1, log=lambda *a: None).read_text()
    for name in HOST_OBJECTIVES:
        assert f"| `{name}` | 1 |" in text, name


def test_compare_then_report(tmp_path):
    from mhpo.train.config import TrainConfig

    base = TrainConfig(**{**TINY, "steps": 3, "eval_every": 0, "cache_dir": str(tmp_path / "cache"),
                          "warmstart_steps": 5, "task": "countdown"})  # fmt: skip
    report = compare(base, ["grpo", "mhpo@use_dhp=false"], seeds=2, out=tmp_path / "cmp", jobs=1, log=lambda *a: None)
    text = report.read_text()
    assert "| `grpo` | 2 |" in text and "| `mhpo@use_dhp=False` | 2 |" in text
    assert "Paired differences against `grpo`" in text
    for image in ("curves.png", "stability.png"):
        assert (tmp_path / "cmp" / image).read_bytes()[:4] == b"\x89PNG"
    runs = sorted((tmp_path / "cmp" / "runs").iterdir())
    assert len(runs) == 4 and all((r / "done").exists() for r in runs)
    # Rerunning skips finished runs; a rebuilt report from the saved runs is the same table.
    compare(base, ["grpo", "mhpo@use_dhp=false"], seeds=2, out=tmp_path / "cmp", jobs=1, log=lambda *a: None)
    rebuilt = build_report([tmp_path / "cmp" / "runs"], tmp_path / "again", order=["grpo", "mhpo@use_dhp=False"])
    table = lambda t: [l for l in t.splitlines() if l.startswith("| `")][:2]  # noqa: E731
    assert table(rebuilt.read_text()) == table(text)
    # The compact CSV holds what the report reads: the report rebuilt from it has the same table.
    csv_path = export_csv(find_runs([tmp_path / "cmp" / "runs"]), tmp_path / "runs.csv")
    from_csv = build_report([csv_path], tmp_path / "csv", order=["grpo", "mhpo@use_dhp=False"])
    assert table(from_csv.read_text()) == table(text)
    header, first = csv_path.read_text().splitlines()[:2]
    assert header.startswith("run,seed,step,reward/mean") and first.startswith("grpo,0,0,")
    # Asking for more steps extends the finished runs from their last checkpoint.
    compare(dataclasses.replace(base, steps=4), ["grpo"], seeds=1, out=tmp_path / "cmp", jobs=1, log=lambda *a: None)
    extended = tmp_path / "cmp" / "runs" / "grpo-seed0"
    assert (extended / "done").read_text().strip() == "4"
    assert [r["step"] for r in read_metrics(extended / "metrics.jsonl") if "reward/mean" in r] == [1, 2, 3, 4]


def test_report_and_eval_commands(tmp_path):
    Trainer(tiny_config(tmp_path, steps=2, checkpoint_every=1), log=lambda *a: None).train()
    run = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "mhpo.cli", "report", str(run)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (run / "report.md").exists()
    ev = subprocess.run([sys.executable, "-m", "mhpo.cli", "eval", "--run", str(run), "--size", "3", "--k", "2", "--json"],
                        capture_output=True, text=True)  # fmt: skip
    assert ev.returncode == 0, ev.stderr
    result = json.loads(ev.stdout)
    assert result["problems"] == 3 and 0 <= result["eval/accuracy"] <= 1 and "step 2" in result["source"]
    assert "greedy_samples" not in result
    ev = subprocess.run([sys.executable, "-m", "mhpo.cli", "eval", "--run", str(run), "--size", "3", "--k", "1", "--show", "3", "--json"],
                        capture_output=True, text=True)  # fmt: skip
    assert ev.returncode == 0, ev.stderr
    shown = json.loads(ev.stdout)["greedy_samples"]
    assert len(shown) == 3 and all(set(s) == {"prompt", "answer", "completion", "reward"} for s in shown)
    # the listed greedy completions are the ones behind the accuracy: same problems, same decoding
    assert sum(s["reward"] for s in shown) / 3 == pytest.approx(result["eval/reward"])
    (tmp_path / "empty").mkdir()
    for path, message in ((tmp_path / "empty", "no finished runs"), (tmp_path / "nothing", "does not exist")):
        bad = subprocess.run([sys.executable, "-m", "mhpo.cli", "report", str(path)], capture_output=True, text=True)
        assert bad.returncode != 0 and message in bad.stderr


def test_train_command_reads_yaml_and_flags(tmp_path):
    config = tmp_path / "c.yaml"
    values = {**TINY, "steps": 1, "output_dir": str(tmp_path / "run"), "cache_dir": str(tmp_path / "cache")}
    config.write_text("\n".join(f"{k}: {json.dumps(v)}" for k, v in values.items()))
    out = subprocess.run([sys.executable, "-m", "mhpo.cli", "train", "--config", str(config), "--objective", "sapo",
                          "--hp", "tau_pos=2.0"], capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stderr
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "objective: sapo" in saved and "tau_pos: 2.0" in saved
    bad = subprocess.run([sys.executable, "-m", "mhpo.cli", "train", "--config", str(config), "--mu", "0"],
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode != 0 and "mu must be >= 1" in bad.stderr


def test_variants_and_statistics():
    assert parse_variant("mhpo@use_dhp=false@c=2") == ("mhpo", {"use_dhp": False, "c": 2})
    with pytest.raises(ValueError, match="no hyperparameter 'cc'"):
        parse_variant("mhpo@cc=1")
    # trainer loss options ride along: HPO with alpha = 0 is hpo@hysteresis=0
    from mhpo.study.compare import split_options
    from mhpo.study.runs import run_label
    from mhpo.train.config import TrainConfig

    name, hp = parse_variant("hpo@hysteresis=0@eps_low=0.1")
    objective_hp, options = split_options(hp)
    assert (name, objective_hp, options) == ("hpo", {"eps_low": 0.1}, {"hysteresis": "0"})
    cfg = TrainConfig(objective=name, hp=objective_hp, **options)
    assert cfg.hysteresis_value() == 0.0
    assert run_label(cfg.to_dict()) == "hpo@eps_low=0.1@hysteresis=0"
    mean, half = mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.303 / 3**0.5, rel=1e-4)
    assert mean_ci([5.0]) == (5.0, 0.0)
    assert spikes([1, 1, 1, 1, 1, 6, 1, 4.9]) == 1
    # running means: 0, .25, .33, .375, .4, .5 -> the window first reaches 0.45 at step 6
    assert first_reaching([1, 2, 3, 4, 5, 6], [0, 0.5, 0.5, 0.5, 0.5, 0.5], 0.45) == 6
    assert first_reaching([1, 2], [0.0, 0.1], 0.5) is None
    # a single high first batch is not a 5-step mean: windows end at steps 5..9 with means
    # .18, .1, .2, .3, .4 -> 0.35 is first reached at step 9
    assert first_reaching(list(range(1, 10)), [0.9, 0, 0, 0, 0, 0.5, 0.5, 0.5, 0.5], 0.35) == 9


def test_csv_round_trip_and_errors(tmp_path):
    from mhpo.study.runs import Run

    records = [{"step": 0, "eval/accuracy": 0.25}, {"step": 1, "reward/mean": 0.125, "ratio/max": 1.5},
               {"step": 2, "reward/mean": 0.375, "ratio/max": 2.0}, {"step": 2, "eval/accuracy": 0.5}]  # fmt: skip
    run = Run("mhpo@c=2", 3, tmp_path, {}, records)
    path = export_csv([run], tmp_path / "r.csv")
    (back,) = load_csv(path)
    assert (back.label, back.seed) == ("mhpo@c=2", 3)
    assert back.series("reward/mean") == ([1, 2], [0.125, 0.375])
    assert back.eval_series("eval/accuracy") == ([0, 2], [0.25, 0.5])  # step 2's two records merged
    out = subprocess.run([sys.executable, "-m", "mhpo.cli", "report", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "| `mhpo@c=2` | 1 | 0.500 |" in (tmp_path / "report.md").read_text()
    (tmp_path / "bad.csv").write_text("objective,step\ngrpo,1\n")
    with pytest.raises(ValueError, match="no column.*run"):
        load_csv(tmp_path / "bad.csv")
    (tmp_path / "bad2.csv").write_text("run,seed,step,reward/mean\ngrpo,0,1,abc\n")
    with pytest.raises(ValueError, match="bad2.csv:2"):
        load_csv(tmp_path / "bad2.csv")
    with pytest.raises(ValueError, match="does not exist"):
        find_runs([tmp_path / "missing"])


def test_stability_study_cells():
    study = _load_study("stability")
    script = study.__file__
    required = {"grpo", "dr_grpo", "dapo", "gspo", "sapo", "cispo", "hpo", "a_hpo", "mhpo", "mhpo@use_dhp=false",
                "mhpo@use_lfm=false"}  # fmt: skip
    assert required <= set(study.OBJECTIVES) and "hpo@hysteresis=0" in study.OBJECTIVES
    for variant in study.OBJECTIVES:
        parse_variant(variant)
    standard, stress = study.cell_config("countdown4", "standard", {}), study.cell_config("countdown4", "stress", {})
    standard.validate(), stress.validate()
    assert standard.num_numbers == 4 and stress.mu == 2 * standard.mu and stress.lr == 4 * standard.lr
    bad = subprocess.run([sys.executable, str(script), "--cells", "countdown5-standard"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown cell(s) countdown5-standard" in bad.stderr


def test_controls_study_design():
    study = _load_study("controls")
    stability = _load_study("stability")
    for variant in study.OBJECTIVES:
        parse_variant(variant)
    assert {"grpo", "dapo", "sapo", "cispo", "a_hpo", "mhpo", "mhpo@normalize_on_policy=true"} <= set(study.OBJECTIVES)
    pieces = {name: (options, seeds) for name, _, options, seeds in study.pieces("all")}
    controls = [n for n in pieces if not n.startswith("sweep")]
    assert len(controls) == 12 and all(pieces[n][1] >= 5 for n in controls)
    assert [name for name, *_ in study.pieces("controls", ["countdown4"])] == [n for n in controls if "countdown4" in n]
    # the stability study's regimes, with the clipping rule as the only change
    for task in ("countdown3", "countdown4"):
        for regime, values in stability.REGIMES.items():
            assert {k: pieces[f"clip1-{task}-{regime}"][0][k] for k in values} == values
    assert pieces["noclip-countdown3-stress"][0]["max_grad_norm"] == float("inf")
    relative = pieces["relative-countdown3-stress"][0]
    assert relative["max_grad_norm"] == float("inf") and relative["relative_clip"] == 3.0
    rates = sorted(options["lr"] for name, (options, _) in pieces.items() if name.startswith("sweep"))
    assert len(rates) >= 4 and 1e-4 in rates and rates[0] <= 1e-4 and rates[-1] >= 4 * 4e-4
    assert all(options["mu"] == 4 and seeds >= 3 for name, (options, seeds) in pieces.items() if name.startswith("sweep"))
    for name, (options, _) in pieces.items():
        TrainConfig.from_dict({**stability.BASE, **options}).validate()


def _load_study(name):
    import importlib.util

    script = pathlib.Path(__file__).resolve().parents[1] / "studies" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"study_{name}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_publish_rebuilds_reports_and_cross_cell_tables_from_csv(tmp_path):
    from mhpo.study.runs import Run

    publish = _load_study("publish")

    def run(label, seed, accuracy):
        records = [{"step": 0, "eval/accuracy": 0.25}] + [{"step": s, "reward/mean": 0.1} for s in range(1, 6)]
        return Run(label, seed, tmp_path, {}, records + [{"step": 5, "eval/accuracy": accuracy}])

    runs = [run("grpo", 0, 0.30), run("grpo", 1, 0.40), run("mhpo", 0, 0.35), run("mhpo", 1, 0.41)]
    (tmp_path / "source").mkdir()
    export_csv(runs, tmp_path / "source" / "runs.csv")
    target = tmp_path / "docs" / "cell"
    assert publish.publish_cell(tmp_path / "source", target, threshold=0.5, order=["grpo", "mhpo"], title="T")
    assert (target / "runs.csv").read_text() == (tmp_path / "source" / "runs.csv").read_text()
    assert (target / "curves.png").exists() and "| `mhpo` | 2 | 0.380 ± 0.381 |" in (target / "report.md").read_text()
    table = publish.cross_cell_tables({"cell": (load_csv(target / "runs.csv"), 0.5)}, ["grpo", "mhpo"])
    # mhpo 0.35, 0.41 -> 0.380 ± 12.706 * 0.0424 / √2 = ± 0.381; mhpo - grpo per seed: +0.05, +0.01
    # -> mean 0.030, sd 0.0283 -> ± 0.254
    assert "| `mhpo` | 0.380 ± 0.381<br>Δ 0.030 ± 0.254 |" in table



def test_publish_controls_rebuilds_the_sweep_from_its_csv(tmp_path, capsys):
    from mhpo.study.runs import Run

    publish = _load_study("publish")

    def run(label, seed, accuracy, clipped):
        records = [{"step": 0, "eval/accuracy": 0.25}]
        records += [{"step": s, "reward/mean": 0.1, "grad_norm/max": 2.0, "grad_norm/clipped_frac": clipped} for s in (1, 2)]
        return Run(label, seed, tmp_path, {}, records + [{"step": 2, "eval/accuracy": accuracy}])

    docs = tmp_path / "docs"
    (docs / "noclip-countdown3-standard").mkdir(parents=True)
    export_csv([run("grpo", 0, 0.30, 0.0), run("grpo", 1, 0.40, 0.0), run("dapo", 0, 0.20, 0.0), run("dapo", 1, 0.26, 0.0)],
               docs / "noclip-countdown3-standard" / "runs.csv")  # fmt: skip
    (docs / "sweep").mkdir()
    export_csv([run("grpo (lr=0.0001)", 0, 0.30, 0.5), run("grpo (lr=0.0001)", 1, 0.34, 0.5),
                run("grpo (lr=0.0008)", 0, 0.10, 1.0), run("grpo (lr=0.0008)", 1, 0.20, 1.0)], docs / "sweep" / "runs.csv")  # fmt: skip
    publish.publish_controls(tmp_path / "unused", docs, from_docs=True)
    printed = capsys.readouterr().out
    # dapo - grpo per seed: -0.10, -0.14 -> -0.120 ± 12.706 * 0.0283 / √2 = ± 0.254
    assert "| `dapo` | 0.230 ± 0.381<br>Δ -0.120 ± 0.254 |" in printed
    assert "Share of optimizer steps whose gradient was clipped" in printed
    assert "| noclip-countdown3-standard | `grpo` > `dapo` |" in printed  # 0.35 against 0.23
    report = (docs / "sweep" / "report.md").read_text()
    # grpo gains: 1e-4: +0.05, +0.09 -> 0.070 ± 0.254; 8e-4: -0.15, -0.05 -> -0.100 ± 0.635
    assert "| `grpo` | 0.070 ± 0.254 | -0.100 ± 0.635 | 0.0001 |" in report
    assert (docs / "sweep" / "sweep.png").read_bytes()[:4] == b"\x89PNG"

@pytest.mark.skipif(sys.platform != "linux", reason="signals and process trees as on Linux")
def test_sigterm_to_a_study_stops_its_workers():
    # `kill <pid>` of a study (the parent alone, not its process group) must not leave its
    # spawned runs training on in the background.
    import signal
    import time

    psutil = pytest.importorskip("psutil")
    script = "import time\nfrom mhpo.study.compare import run_parallel\nfor _ in run_parallel(time.sleep, [300, 300, 300], 2):\n    pass\n"
    proc = subprocess.Popen([sys.executable, "-c", script])
    parent = psutil.Process(proc.pid)
    workers = []
    try:
        deadline = time.monotonic() + 120
        while len(workers) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
            workers = [p for p in parent.children() if "spawn_main" in " ".join(p.cmdline())]
        assert len(workers) == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        gone, alive = psutil.wait_procs(workers, timeout=30)
        assert alive == []
    finally:  # never leave sleepers behind, whatever failed
        for p in [*workers, parent]:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass


def test_record_invocation_appends_wall_times(tmp_path):
    from mhpo.study.compare import record_invocation

    record_invocation(tmp_path, 12.34, cell="c3", jobs=2)
    record_invocation(tmp_path, 5.0, steps=60)
    entries = json.loads((tmp_path / "timing.json").read_text())["invocations"]
    assert [(e["wall_s"], e.get("cell"), e.get("steps")) for e in entries] == [(12.3, "c3", None), (5.0, None, 60)]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", e["finished"]) for e in entries)
    assert [p.name for p in tmp_path.iterdir()] == ["timing.json"]  # no temporary file left


def test_sweep_table_finds_where_each_objective_breaks(tmp_path):
    from mhpo.study.runs import Run
    from mhpo.study.sweep import plot_sweep, sweep_table

    def run(label, lr, seed, final, norm):
        records = [{"step": 0, "eval/accuracy": 0.30}, {"step": 1, "reward/mean": 0.2, "grad_norm/max": norm},
                   {"step": 2, "reward/mean": 0.2, "grad_norm/max": norm}, {"step": 2, "eval/accuracy": final}]  # fmt: skip
        return Run(f"{label} (lr={lr})", seed, tmp_path, {"lr": lr}, records)

    runs = [
        run("grpo", 1e-4, 0, 0.40, 1.0), run("grpo", 1e-4, 1, 0.36, 1.0),
        run("grpo", 4e-4, 0, 0.34, 2.0), run("grpo", 4e-4, 1, 0.28, 2.0),  # mean gain +0.01: still above
        run("grpo", 1.6e-3, 0, 0.10, 9.0), run("grpo", 1.6e-3, 1, 0.20, 9.0),  # broken
        run("mhpo", 1e-4, 0, 0.29, 0.3), run("mhpo", 1e-4, 1, 0.30, 0.3),  # never above
    ]
    table, grid = sweep_table(runs, order=["grpo", "mhpo"])
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    # grpo gains per seed: 1e-4: 0.10, 0.06 -> 0.080 ± 12.706 * 0.0283 / √2 = ± 0.254;
    # 4e-4: 0.04, -0.02 -> 0.010 ± 12.706 * 0.0424 / √2 = ± 0.381; 1.6e-3: -0.20, -0.10 -> ± 0.635
    assert rows[0] == "| `grpo` | 0.080 ± 0.254 | 0.010 ± 0.381 | -0.150 ± 0.635 | 0.0004 |"
    assert rows[1] == "| `mhpo` | -0.005 ± 0.064 | n/a | n/a | none |"
    assert sorted(grid["grpo"]) == [1e-4, 4e-4, 1.6e-3]
    path = plot_sweep(grid, tmp_path / "sweep.png", order=["grpo", "mhpo"])
    assert path.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("part", ["tiny", "smollm2"])
def test_the_bfloat16_studys_paired_differences_rebuild_from_its_committed_csv(part, tmp_path):
    """docs/results/bfloat16/<part>/pairs.md is what the committed runs.csv gives (the CSV's
    labels carry the dtype): the published table can be checked without the run directories."""
    import importlib.util

    root = pathlib.Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("study_bfloat16", root / "studies" / "bfloat16.py")
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    published = root / "docs" / "results" / "bfloat16" / part
    (tmp_path / part).mkdir()
    (tmp_path / part / "runs.csv").write_text((published / "runs.csv").read_text())
    study.rebuild(part, tmp_path / part)
    assert (tmp_path / part / "pairs.md").read_text() == (published / "pairs.md").read_text()
    assert "| `grpo` |" in (tmp_path / part / "pairs.md").read_text()


def test_the_smollm2_claims_study_runs_at_one_code_version(tmp_path, monkeypatch):
    """The first invocation records the source's fingerprint in the study directory and beside
    the published runs; a later one with other code is refused before any run starts, naming
    both versions and what to do, also on a machine that has only the published record."""
    claims = _load_study("smollm2_claims")
    out, target = tmp_path / "study" / "main", tmp_path / "docs" / "main"
    claims.check_code_version(out, target)
    recorded = json.loads((out / "code.json").read_text())
    assert recorded["fingerprint"] == claims.code_fingerprint()
    assert (target / "code.json").read_text() == (out / "code.json").read_text()
    claims.check_code_version(out, target)  # the same code continues
    claims.check_code_version(tmp_path / "elsewhere", target)  # another machine: the published record
    assert (tmp_path / "elsewhere" / "code.json").read_text() == (target / "code.json").read_text()
    monkeypatch.setattr(claims, "code_fingerprint", lambda: "0123456789abcdef")
    for study in (out, tmp_path / "third-machine"):
        with pytest.raises(SystemExit, match=f"fingerprint {recorded['fingerprint']}.*this one is 0123456789abcdef.*new --out"):
            claims.check_code_version(study, target)


def test_the_smollm2_claims_pilot_is_controlled():
    """Every pilot piece is SmolLM2 with relative clipping and the same held-out problems; the
    LoRA pieces pair with full fine-tuning on its seeds; every configuration validates."""
    claims = _load_study("smollm2_claims")
    assert claims.BASE["max_grad_norm"] == float("inf") and claims.BASE["relative_clip"] == 3.0
    assert {"full", "lora-5e-5", "lora-2e-4"} <= set(claims.PILOT)
    full_seeds = claims.PILOT["full"][2]
    for name, (options, objectives, seeds) in claims.PILOT.items():
        assert objectives == ["grpo"] and not {"eval_size", "task", "seed", "max_grad_norm"} & set(options)
        assert options.get("lora_rank", 0) > 0 if name.startswith("lora") else "lora_rank" not in options
        if name.startswith("lora"):
            assert seeds == full_seeds
        TrainConfig.from_dict({**claims.BASE, **options}).validate()
    assert all(claims.PILOT[name][0]["mu"] == 4 for name in claims.PILOT if name.startswith("stress"))
    for options in claims.CANDIDATES.values():
        TrainConfig.from_dict({**claims.BASE, **options}).validate()


def test_the_smollm2_claims_pilot_tables_rebuild_from_its_csvs(tmp_path):
    """The pilot's tables come from the published CSVs alone: per-piece means and the paired
    LoRA - full differences, checked against values worked out by hand."""
    from mhpo.study.runs import Run

    claims = _load_study("smollm2_claims")

    def run(seed, accuracy, seconds):
        records = [{"step": 0, "eval/accuracy": 0.3}]
        records += [{"step": s, "reward/mean": 0.2, "time/step": seconds + (100.0 if s == 3 else 0.0)} for s in range(1, 6)]
        return Run("grpo", seed, tmp_path, {}, records + [{"step": 5, "eval/accuracy": accuracy}])

    accuracies = {"full": (0.40, 0.50), "lora-5e-5": (0.45, 0.51), "lora-2e-4": (0.30, 0.44)}
    for name in claims.PILOT:
        (tmp_path / name).mkdir()
        first, second = accuracies.get(name, (0.2, 0.2))
        export_csv([run(0, first, 10.0), run(1, second, 12.0)], tmp_path / name / "runs.csv")
    rates = {name: {"eval/accuracy": 0.07, "eval/avg@k": 0.03} for name in claims.CANDIDATES}
    (tmp_path / "base_rates.json").write_text(json.dumps(rates))
    text = claims.rebuild_pilot(tmp_path)
    assert text == (tmp_path / "pilot.md").read_text()
    assert "| `mix3-20` | num_operands=3, max_operand=20, operators=+-* | 0.070 | 0.030 |" in text
    # full: 0.40, 0.50 -> 0.450 ± 12.706 * 0.0707 / √2 = ± 0.635; the step paused for 100 s is
    # not the median: 10 and 12 s -> 11.0 ± 12.7
    assert "| `full` | 2 | 0.300 ± 0.000 | 0.450 ± 0.635 |" in text and "| 11.0 ± 12.7 |" in text
    # lora-5e-5 - full per seed: +0.05, +0.01 -> 0.030 ± 0.254; lora-2e-4: -0.10, -0.06 -> -0.080 ± 0.254
    assert "| `lora-5e-5` - `full` | 2 | 0.030 ± 0.254 |" in text
    assert "| `lora-2e-4` - `full` | 2 | -0.080 ± 0.254 |" in text
    assert "`stress-2e-5` - `full`" not in text and (tmp_path / "full" / "report.md").exists()
    # paired sd: pooled over (+0.05, +0.01) and (-0.10, -0.06), each variance 0.0008 -> 0.0283 with
    # 2 degrees of freedom; 5 seeds: 2.776 * 0.0283 / √5 = 0.035, (2.776 + 0.941) * 0.0283 / √5 = 0.047
    assert ("- held-out accuracy at the end: paired sd 0.028 (2 degrees of freedom): separated above **0.035**, "
            "detected 80% of the time at 0.047;") in text  # fmt: skip


def test_the_smollm2_claims_pieces_run_from_one_queue_and_resume(tmp_path, monkeypatch):
    """Pieces of one run each still go two at a time; a second invocation skips finished runs;
    the queue takes seeds two at a time so a stopped study holds complete pairs."""
    import yaml

    claims = _load_study("smollm2_claims")
    monkeypatch.setattr(claims, "BASE", {**TINY, "steps": 2, "max_grad_norm": float("inf"), "relative_clip": 3.0,
                                         "cache_dir": str(tmp_path / "cache")})  # fmt: skip
    pieces = {"a": ({}, ["grpo"], 1), "b": ({"lr": 1e-4}, ["mhpo"], 1)}
    claims.run_pieces(tmp_path / "study", tmp_path / "docs", pieces, jobs=2)
    for name, objective in (("a", "grpo"), ("b", "mhpo")):
        (run,) = load_csv(tmp_path / "docs" / name / "runs.csv")
        assert run.label == objective and run.series("reward/mean")[0] == [1, 2]
        assert (tmp_path / "study" / name / "report.md").exists()
    assert {r["lr"] for r in (yaml.safe_load((tmp_path / "study" / n / "runs" / f"{o}-seed0" / "config.yaml").read_text())
            for n, o in (("a", "grpo"), ("b", "mhpo")))} == {TINY["lr"], 1e-4}  # fmt: skip
    # finished runs keep their metrics, not their checkpoints (the disk holds only so many)
    assert not list((tmp_path / "study").rglob("checkpoints")) and (tmp_path / "study" / "a" / "runs" / "grpo-seed0" / "done").exists()
    before = (tmp_path / "study" / "a" / "runs" / "grpo-seed0" / "metrics.jsonl").read_text()
    claims.run_pieces(tmp_path / "study", tmp_path / "docs", pieces, jobs=2)  # finished: nothing reruns
    assert (tmp_path / "study" / "a" / "runs" / "grpo-seed0" / "metrics.jsonl").read_text() == before
    timing = json.loads((tmp_path / "study" / "timing.json").read_text())["invocations"]
    assert len(timing) == 2 and timing[0]["runs"] == 2
    order = claims.run_order(claims.piece_configs(tmp_path, "x", {}, ["grpo", "mhpo"], 5))
    assert [(c.objective, c.seed) for c in order[:4]] == [("grpo", 0), ("grpo", 1), ("mhpo", 0), ("mhpo", 1)]
    assert [c.seed for c in order] == [0, 1, 0, 1, 2, 3, 2, 3, 4, 4]


def test_the_smollm2_claims_verdicts_and_tables_from_csvs(tmp_path, monkeypatch):
    """The claims tables rebuild from the published CSVs: paired differences, the verdict rule
    and the stability indicators, against values worked out by hand; a pair with fewer seeds
    than planned (a study under way) shows its numbers but no verdict."""
    from mhpo.study.runs import Run

    claims = _load_study("smollm2_claims")
    # 3 values, t(2) = 4.303: sd 0.01 -> half-width 4.303 * 0.01 / √3 = 0.0248
    assert claims.verdict([0.10, 0.12, 0.11], 0.05) == "**held**"
    assert claims.verdict([-0.10, -0.12, -0.11], 0.05) == "**reversed**"
    assert claims.verdict([-0.01, 0.0, 0.01], 0.05).startswith("did not hold")
    assert claims.verdict([-0.2, 0.0, 0.2], 0.05) == "cannot tell at this scale"
    assert claims.verdict([0.3], 0.05) == "cannot tell"
    # steadier: an interval below 0 and none above; both directions at once are mixed
    assert claims.stability_verdict({"r": [-0.10, -0.12, -0.11], "s": [0.0, 0.0, 0.0]}) == "**held**"
    assert claims.stability_verdict({"r": [0.10, 0.12, 0.11], "s": [-1.0, 1.0, 0.0]}) == "**reversed**"
    assert claims.stability_verdict({"r": [-0.10, -0.12, -0.11], "s": [1.0, 1.0, 1.0]}) == "mixed"
    assert claims.stability_verdict({"r": [-0.2, 0.0, 0.2], "s": [-1.0]}) == "cannot tell"

    def run(label, seed, final, reward, extra, ratio=2.0):
        records = [{"step": 0, "eval/accuracy": 0.30}]
        records += [{"step": s, "reward/mean": reward, "ratio/max": ratio, **extra} for s in range(1, 5)]
        return Run(label, seed, tmp_path, {}, records + [{"step": 4, "eval/accuracy": final}])

    clip = {"clip/low_frac": 0.01, "clip/high_frac": 0.02}
    runs = [run("grpo", s, a, 0.2, clip) for s, a in enumerate((0.40, 0.10, 0.42))]
    runs += [run("mhpo", s, a, 0.3, {"mhpo/survival": 0.2}, r) for s, (a, r) in enumerate(((0.45, 1.0), (0.16, 0.2), (0.46, 2.0)))]
    (tmp_path / "main" / "standard").mkdir(parents=True)
    export_csv(runs, tmp_path / "main" / "standard" / "runs.csv")
    export_csv(runs[:3], tmp_path / "main" / "standard" / "runs.csv")  # GRPO alone: no pair, no empty table
    assert "### `standard`\n\nNo pair yet: only `grpo` has runs.\n\n| objective |" in claims.rebuild_main(tmp_path / "main")
    export_csv(runs, tmp_path / "main" / "standard" / "runs.csv")
    under_way = claims.rebuild_main(tmp_path / "main")  # 3 of the 5 planned seeds
    assert "| `mhpo` - `grpo` | 3 | 0.050 ± 0.025 | not judged (3 of 5 seeds) | 0.100 ± 0.000 |" in under_way
    assert "| n/a | not judged (3 of 5 seeds) |" in under_way and "**held**" not in under_way.split("### ")[1]
    monkeypatch.setitem(claims.MAIN, "standard", (claims.MAIN["standard"][0], claims.MAIN["standard"][1], 3))
    text = claims.rebuild_main(tmp_path / "main")
    assert text == (tmp_path / "main" / "claims.md").read_text()
    # mhpo - grpo per seed: +0.05, +0.06, +0.04 -> 0.050 ± 0.025, held; reward +0.1 on every step
    assert "| `mhpo` - `grpo` | 3 | 0.050 ± 0.025 | **held** | 0.100 ± 0.000 | 0.100 ± 0.000 | **held** |" in text
    # the noise each verdict faced: sd of the per-seed differences +0.05, +0.06, +0.04 -> 0.010; +0.1 every seed -> 0
    assert "| `mhpo` - `grpo` | 3 | 0.010 | 0.000 |" in text
    # largest ratio: grpo 2.0 on every seed, mhpo 1.0, 0.2, 2.0 -> log10 differences -0.301, -1,
    # 0: mean -0.4337, sd 0.5131, half-width 4.303 * 0.51303 / √3 = 1.2745; no spikes; steadier not shown
    assert "| `mhpo` - `grpo` | 3 | -0.434 ± 1.275 | 0.0 ± 0.0 | n/a | cannot tell |" in text
    # grpo seed 1 and mhpo seed 1 ended more than 0.10 below their start (collapsed); cut share
    # 0.01 + 0.02 for grpo; for mhpo its damping beyond r = 1's survival exp(-((ln 2)^1.5 + (ln 2 /
    # 0.8)^2)) = 0.26506: 1 - 0.2 / 0.26506 = 0.245; no gradient clipping logged (n/a)
    grpo_row, mhpo_row = (text.split(f"| `{label}` | 3 | ")[-1].split("\n")[0] for label in ("grpo", "mhpo"))
    assert grpo_row.startswith("0.300 ± 0.000 | 0.307 ± 0.445 | 0.200 ± 0.000 |")  # 0.40, 0.10, 0.42: sd 0.179
    assert grpo_row.endswith("| 0.030 ± 0.000 | n/a | 1/3 |") and mhpo_row.endswith("| 0.245 ± 0.000 | n/a | 1/3 |")
    assert (tmp_path / "main" / "standard" / "report.md").exists()


def test_the_smollm2_claims_answers_are_what_the_committed_csvs_give(tmp_path):
    """docs/results/smollm2_claims/main/claims.md is what the committed CSVs give, and every
    paired difference in results.md's table of answers (with its verdict) is one of its rows: the
    page's verdicts can be checked without the run directories."""
    claims = _load_study("smollm2_claims")
    root = pathlib.Path(__file__).resolve().parents[1]
    published = root / "docs" / "results" / "smollm2_claims" / "main"
    for name in claims.MAIN:
        (tmp_path / name).mkdir()
        (tmp_path / name / "runs.csv").write_text((published / name / "runs.csv").read_text())
    text = claims.rebuild_main(tmp_path)
    assert text == (published / "claims.md").read_text()
    assert "not judged" not in text  # every cell has its 5 seeds
    page = (root / "docs" / "results.md").read_text()
    table = page.split("### The answers")[1].split("\n\n**")[0]
    rows = [[cell.strip() for cell in line[1:-1].split("|")] for line in table.splitlines() if " − " in line]
    assert len(rows) == 12
    names = {"MHPO": "mhpo", "GRPO": "grpo", "DAPO": "dapo", "M2PO": "m2po", "A-HPO": "a_hpo", "HPO": "hpo"}
    regime = None
    for _claim, shown_regime, pair, delta, answer in rows:
        regime = shown_regime or regime  # a blank cell continues the regime above
        first, second = pair.split(" − ")
        pair = f"`{names[first]}` - `{names[second]}`"
        value = delta.split(";")[0].replace("−", "-").lstrip("+")  # the first indicator's difference
        verdict = answer.split(":")[0].split(" (")[0]  # "**reversed**: ..." / "cannot tell (no spike ...)"
        section = text.split(f"### `{regime}`")[1].split("### ")[0]
        found = [row for row in section.splitlines() if row.startswith(f"| {pair} | 5 | ") and f"| {value} |" in row]
        assert found and verdict in found[0], (regime, pair, value, verdict)


def test_the_smollm2_claims_published_runs_outlive_the_study_directory(tmp_path, monkeypatch, capsys):
    """Every finished run is published at once (CSV rows and configuration); a study whose
    directory is gone (another machine, a new session) skips the published runs and runs only
    the rest, and the CSV then holds both; a published run made with other options is refused;
    --hours starts no run after its limit."""
    claims = _load_study("smollm2_claims")
    monkeypatch.setattr(claims, "BASE", {**TINY, "steps": 2, "max_grad_norm": float("inf"), "relative_clip": 3.0,
                                         "cache_dir": str(tmp_path / "cache")})  # fmt: skip
    docs = tmp_path / "docs"
    claims.run_pieces(tmp_path / "first", docs, {"p": ({}, ["grpo"], 1)}, jobs=1)
    first = (docs / "p" / "runs.csv").read_text()
    recorded = json.loads((docs / "p" / "runs.json").read_text())["grpo-seed0"]
    assert recorded["config"]["lr"] == TINY["lr"] and recorded["machine"] == machine()
    timing = json.loads((docs / "timing.json").read_text())["invocations"]
    assert [(t["runs"], t["finished_runs"]) for t in timing] == [(1, 1)]
    # a new machine: no study directory, the published piece now asks for a second seed and objective
    claims.run_pieces(tmp_path / "second", docs, {"p": ({}, ["grpo", "mhpo"], 2)}, jobs=2)
    assert not (tmp_path / "second" / "p" / "runs" / "grpo-seed0").exists()  # published: not rerun
    assert {(r.label, r.seed) for r in load_csv(docs / "p" / "runs.csv")} == {(o, s) for o in ("grpo", "mhpo") for s in (0, 1)}
    assert first in (docs / "p" / "runs.csv").read_text()  # the first machine's rows, unchanged
    timing = json.loads((docs / "timing.json").read_text())["invocations"]
    assert [(t["runs"], t["finished_runs"]) for t in timing] == [(1, 1), (3, 3)]
    # past --hours nothing starts, and the invocation says so
    claims.run_pieces(tmp_path / "third", docs, {"p": ({}, ["grpo", "mhpo"], 3)}, jobs=1, hours=1e-9)
    assert not (tmp_path / "third" / "p" / "runs").exists()
    assert "--hours 1e-09 reached: 0 of the 2 runs left finished; the same command continues" in capsys.readouterr().out
    assert json.loads((docs / "timing.json").read_text())["invocations"][-1]["finished_runs"] == 0
    # a published run with other options is not taken for this one
    with pytest.raises(SystemExit, match="grpo-seed0: lr: saved"):
        claims.run_pieces(tmp_path / "fourth", docs, {"p": ({"lr": 5e-4}, ["grpo"], 1)}, jobs=1)




def test_a_report_cites_its_csv_relative_to_itself(tmp_path, monkeypatch):
    """A published report names its CSV as a link from the report's own directory, not by the
    path of the machine that built it (which no reader of the committed docs has)."""
    from mhpo.study.runs import Run

    records = [{"step": 0, "eval/accuracy": 0.3}] + [{"step": s, "reward/mean": 0.2} for s in (1, 2)]
    (tmp_path / "docs" / "cell").mkdir(parents=True)
    export_csv([Run("grpo", 0, tmp_path, {}, records)], tmp_path / "docs" / "cell" / "runs.csv")
    monkeypatch.chdir(tmp_path)
    for csv_path, out, shown in ((tmp_path / "docs" / "cell" / "runs.csv", tmp_path / "docs" / "cell", "runs.csv"),
                                 ("docs/cell/runs.csv", "reports/cell", "../../docs/cell/runs.csv")):  # fmt: skip
        build_report([csv_path], out)
        text = (tmp_path / out / "report.md").read_text()
        assert f"Per-step metrics of every run: [`{shown}`]({shown})." in text and str(tmp_path) not in text
        assert (tmp_path / out / shown).resolve() == (tmp_path / "docs" / "cell" / "runs.csv").resolve()
