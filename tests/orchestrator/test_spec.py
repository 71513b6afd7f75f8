"""Study specs: valid ones parse into the right search space; every bad input is one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from orchestrator import space
from orchestrator.cli import main
from orchestrator.errors import SpecError
from orchestrator.spec import (
    STAT_METRICS,
    check_buildable,
    dump_spec,
    load_yaml,
    parse_spec,
    with_overrides,
)

from .helpers import SMALL_SPEC, small_spec, write_spec

DESIGN_SPEC = """\
study: synflow-variants-fc-digits
model: {name: fc, width: 100, depth: 6}
data: {name: digits}
density: 0.01
search:
  path_exponent: {low: 0.5, high: 3.0}
  score_exponent: {low: 0.0, high: 3.0}
  iterations: {low: 1, high: 200, log: true}
  schedule: [exponential, linear]
  input: [ones, data-mean]
objectives:
  - {metric: log_path_kernel_trace, direction: maximize}
sampler: tpe
trials: 200
workers: auto
train: {epochs: 0}
validate: {top_k: 5, random_k: 5, epochs: 20}
seed: 0
"""


def test_design_example_parses_into_optuna_distributions() -> None:
    spec = parse_spec(load_yaml(DESIGN_SPEC))
    dists = spec.search.distributions()
    assert dists["path_exponent"] == FloatDistribution(0.5, 3.0)
    assert dists["iterations"] == IntDistribution(1, 200, log=True)
    assert dists["schedule"] == CategoricalDistribution(["exponential", "linear"])
    assert "density" not in dists and spec.search.fixed() == {"density": 0.01}
    assert spec.workers is None and spec.trials == 200 and spec.validate.top_k == 5
    assert spec.directions == ["maximize"]


def test_every_pruner_knob_is_searchable_and_fixed_values_stay_out_of_optuna() -> None:
    raw = load_yaml(SMALL_SPEC)
    del raw["density"]
    raw["search"] = {
        "pruner": ["synflow", "synflow-l2", "snip"],
        "input": ["ones", "data-mean"],
        "scope": ["global", "layer"],
        "density": {"low": 0.01, "high": 0.5, "log": True},
        "iterations": 3,
        "schedule": "linear",
    }
    spec = parse_spec(raw)
    dists = spec.search.distributions()
    assert set(dists) == {"pruner", "input", "scope", "density"}
    assert dists["density"] == FloatDistribution(0.01, 0.5, log=True)
    assert spec.search.fixed() == {"iterations": 3, "schedule": "linear"}


def test_density_list_is_a_categorical_dimension() -> None:
    spec = small_spec(density=[0.01, 0.1, 1])
    assert spec.search.distributions()["density"] == CategoricalDistribution([0.01, 0.1, 1.0])


def test_dump_and_parse_round_trip() -> None:
    spec = parse_spec(load_yaml(DESIGN_SPEC))
    assert parse_spec(load_yaml(dump_spec(spec))) == spec


def test_yaml_exponent_floats_are_numbers() -> None:
    raw = load_yaml("study: x\nmodel: {name: fc}\ndensity: 1e-2\ntrain: {epochs: 1, lr: 1e-3}\n")
    spec = parse_spec(raw)
    assert spec.search.fixed()["density"] == pytest.approx(0.01)
    assert spec.train.options["lr"] == pytest.approx(1e-3)


def test_grid_sampler_gets_the_finite_grid() -> None:
    raw = load_yaml(SMALL_SPEC)
    raw["sampler"] = "grid"
    raw["search"] = {"iterations": {"low": 1, "high": 3}, "path_exponent": [1.0, 2.0]}
    raw["trials"] = 6
    spec = parse_spec(raw)
    assert spec.search.grid() == {"iterations": [1, 2, 3], "path_exponent": [1.0, 2.0]}
    with pytest.raises(SpecError, match=r"trials <= 6"):
        with_overrides(spec, 7, None)


@pytest.mark.parametrize("name", ["tpe", "nsga2", "random", "grid", "gp"])
def test_samplers_build_seeded(name: str) -> None:
    from orchestrator.samplers import make_sampler

    spec = small_spec(sampler=name, trials=2, search={"iterations": [1, 2], "schedule": ["linear"]})
    sampler = make_sampler(name, spec.sampler.options, 0, spec.search.grid())
    study = optuna.create_study(sampler=sampler, direction="maximize")
    trial = study.ask(spec.search.distributions())
    assert trial.params["iterations"] in (1, 2)


def test_every_objective_metric_is_a_stat() -> None:
    for metric in STAT_METRICS:
        spec = small_spec(objectives=[{"metric": metric, "direction": "minimize"}])
        assert spec.metrics == [metric]


def test_check_buildable_rejects_model_options_pruners_rejects() -> None:
    spec = small_spec(model={"name": "fc", "width": 0})
    with pytest.raises(SpecError, match=r"^model: .*width"):
        check_buildable(spec)
    check_buildable(small_spec())  # the valid one builds (on the meta device)


def test_space_parse_param_rules() -> None:
    assert space.parse_param("iterations", {"low": 2, "high": 8, "step": 2}, "x") == (
        space.IntRange(2, 8, False, 2)
    )
    with pytest.raises(SpecError, match="log and step"):
        space.parse_param("path_exponent", {"low": 1.0, "high": 2.0, "log": True, "step": 0.5}, "x")


BAD_SPECS: list[tuple[str, str, str]] = [
    ("empty", "", "the spec is empty"),
    ("broken", "study: [unclosed\n", "invalid YAML"),
    ("not a mapping", "- a\n- b\n", "must be a mapping"),
    ("unknown field", SMALL_SPEC + "colour: red\n", "unknown field 'colour'"),
    ("duplicate field", SMALL_SPEC + "trials: 3\n", "duplicate field 'trials'"),
    (
        "nested unknown",
        SMALL_SPEC.replace("seed: 0", "validate: {top: 3}"),
        "validate: unknown field 'top'",
    ),
    (
        "wrong type trials",
        SMALL_SPEC.replace("trials: 6", "trials: many"),
        "trials must be an integer",
    ),
    ("float trials", SMALL_SPEC.replace("trials: 6", "trials: 6.5"), "trials must be an integer"),
    ("trials < 1", SMALL_SPEC.replace("trials: 6", "trials: 0"), "trials >= 1 must hold"),
    ("workers < 1", SMALL_SPEC.replace("workers: 2", "workers: 0"), "workers >= 1 must hold"),
    (
        "workers text",
        SMALL_SPEC.replace("workers: 2", "workers: many"),
        "workers must be an integer",
    ),
    ("density 0", SMALL_SPEC.replace("density: 0.1", "density: 0"), "density in (0, 1] must hold"),
    (
        "density > 1",
        SMALL_SPEC.replace("density: 0.1", "density: 1.5"),
        "density in (0, 1] must hold",
    ),
    (
        "density range",
        SMALL_SPEC.replace("density: 0.1", "density: {low: 0.5, high: 2}"),
        "density.high in (0, 1]",
    ),
    ("train epochs < 0", SMALL_SPEC + "train: {epochs: -1}\n", "train.epochs >= 0 must hold"),
    (
        "validate epochs < 0",
        SMALL_SPEC + "validate: {top_k: 1, epochs: -2}\n",
        "validate.epochs >= 0",
    ),
    (
        "validate seeds not a list",
        SMALL_SPEC + "validate: {top_k: 1, seeds: 3}\n",
        "validate.seeds must be a non-empty list of integers >= 0",
    ),
    (
        "validate seeds empty",
        SMALL_SPEC + "validate: {top_k: 1, seeds: []}\n",
        "validate.seeds must be a non-empty list",
    ),
    (
        "validate seed negative",
        SMALL_SPEC + "validate: {top_k: 1, seeds: [0, -1]}\n",
        "validate.seeds[1] >= 0 must hold",
    ),
    (
        "validate seed not an integer",
        SMALL_SPEC + "validate: {top_k: 1, seeds: [0, 1.5]}\n",
        "validate.seeds[1] must be an integer",
    ),
    (
        "validate seed repeated",
        SMALL_SPEC + "validate: {top_k: 1, seeds: [0, 1, 0]}\n",
        "validate.seeds must not repeat a seed",
    ),
    (
        "low > high",
        SMALL_SPEC.replace("{low: 1, high: 4}", "{low: 5, high: 4}"),
        "low <= high must hold",
    ),
    (
        "missing high",
        SMALL_SPEC.replace("{low: 1, high: 4}", "{low: 1}"),
        "search.iterations.high is required",
    ),
    (
        "log low 0",
        SMALL_SPEC.replace("{low: 0.0, high: 2.0}", "{low: 0.0, high: 2.0, log: true}"),
        "log range needs low > 0",
    ),
    (
        "unknown search param",
        SMALL_SPEC.replace("  schedule:", "  temperature: [1, 2]\n  schedule:"),
        "unknown search parameter 'temperature'",
    ),
    (
        "unknown schedule",
        SMALL_SPEC.replace("[exponential, linear]", "[exponential, cubic]"),
        "search.schedule[1] must be one of",
    ),
    (
        "unknown pruner",
        SMALL_SPEC.replace("  schedule:", "  pruner: [synflow, magic]\n  schedule:"),
        "search.pruner[1] must be one of",
    ),
    (
        "unknown sampler",
        SMALL_SPEC.replace("sampler: random", "sampler: annealing"),
        "unknown sampler 'annealing'",
    ),
    (
        "unknown sampler option",
        SMALL_SPEC.replace("sampler: random", "sampler: {name: tpe, colour: 1}"),
        "unknown option 'colour' for sampler 'tpe'",
    ),
    (
        "unknown metric",
        SMALL_SPEC + "objectives: [{metric: accuracy_at_init}]\n",
        "objectives[0].metric must be one of",
    ),
    (
        "train metric untrained",
        SMALL_SPEC + "objectives: [{metric: test_accuracy}]\n",
        "needs training",
    ),
    (
        "unknown direction",
        SMALL_SPEC + "objectives: [{metric: num_params, direction: up}]\n",
        "objectives[0].direction must be one of",
    ),
    (
        "duplicate objective",
        SMALL_SPEC + "objectives: [{metric: macs}, {metric: macs}]\n",
        "each metric may appear once",
    ),
    (
        "objectives not a list",
        SMALL_SPEC + "objectives: {metric: macs}\n",
        "objectives must be a non-empty list",
    ),
    (
        "unknown model",
        SMALL_SPEC.replace("name: fc", "name: transformer"),
        "model.name must be one of",
    ),
    (
        "unknown model option",
        SMALL_SPEC.replace("width: 16", "heads: 16"),
        "unknown option 'heads' for model 'fc'",
    ),
    ("bad model option", SMALL_SPEC.replace("width: 16", "width: -3"), "model: "),
    (
        "unknown dataset",
        SMALL_SPEC.replace("name: digits", "name: imagenet"),
        "data.name must be one of",
    ),
    (
        "missing study",
        SMALL_SPEC.replace("study: test-small\n", ""),
        "study (the study's name) is required",
    ),
    (
        "bad study name",
        SMALL_SPEC.replace("study: test-small", "study: 'a b/c'"),
        "study must match",
    ),
    (
        "grid without step",
        SMALL_SPEC.replace("sampler: random", "sampler: grid"),
        "grid sampler needs a list or a step",
    ),
    ("bool as number", SMALL_SPEC.replace("seed: 0", "seed: true"), "seed must be an integer"),
    (
        "train option",
        SMALL_SPEC + "train: {epochs: 1, optimizer: lbfgs}\n",
        "train: optimizer must be one of",
    ),
    (
        "knobs without synflow",
        SMALL_SPEC.replace("  schedule:", "  pruner: [snip, grasp]\n  schedule:"),
        "search.path_exponent applies to the SynFlow family only",
    ),
    ("gpus per worker", SMALL_SPEC + "gpus_per_worker: -1\n", "gpus_per_worker must be 0"),
    ("max attempts", SMALL_SPEC + "max_attempts: 0\n", "max_attempts >= 1 must hold"),
    # Fail fast (issue 10): sane upper bounds, whole names, data and memory checked before Ray.
    (
        "huge trials",
        SMALL_SPEC.replace("trials: 6", "trials: " + "1" + "0" * 38),
        "trials <= 1,000,000 must hold",
    ),
    (
        "huge iterations",
        SMALL_SPEC.replace("iterations: {low: 1, high: 4}", "iterations: {low: 1, high: 1e20}"),
        "search.iterations",
    ),
    (
        "huge fixed iterations",
        SMALL_SPEC.replace("iterations: {low: 1, high: 4}", "iterations: 100000000"),
        "search.iterations <= 100,000 must hold",
    ),
    (
        "huge depth",
        SMALL_SPEC.replace("depth: 3", "depth: 1000000000"),
        "model.depth <= 1,000 must hold",
    ),
    ("name with newline", SMALL_SPEC.replace("study: test-small", 'study: "ok\\n"'), "study must"),
    ("long name", SMALL_SPEC.replace("test-small", "a" * 101), "at most 100 characters"),
    (
        "model over the memory budget",
        SMALL_SPEC.replace("width: 16", "width: 100000"),
        "trial_memory_gb: a trial needs an estimated",
    ),
    (
        "cifar10 without root",
        SMALL_SPEC.replace("name: digits", "name: cifar10"),
        "data: dataset 'cifar10' needs a data directory",
    ),
    ("huge prefetch", SMALL_SPEC + "prefetch: 1000000\n", "prefetch <= 64 must hold"),
    ("zero timeout", SMALL_SPEC + "trial_timeout_s: 0\n", "trial_timeout_s > 0 must hold"),
]


def _run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    err = capsys.readouterr().err
    return code, err


def test_cmaes_is_single_objective_and_needs_its_package() -> None:
    with pytest.raises(SpecError, match=r"^sampler: sampler 'cmaes' (needs|supports one)"):
        small_spec(sampler="cmaes", objectives=[{"metric": "macs"}, {"metric": "log_path_l1"}])


@pytest.mark.parametrize(("label", "text", "message"), BAD_SPECS, ids=[b[0] for b in BAD_SPECS])
def test_bad_spec_is_one_line_exit_2_nothing_written(
    label: str, text: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_spec(tmp_path / "spec.yaml", text)
    out = tmp_path / "out"
    code, err = _run_cli(["study", "run", str(spec), "--out", str(out)], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("pathsweep: error: "), err
    assert message in err, err
    assert "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--trials", "0"], "--trials: must be an integer >= 1"),
        (["--workers", "0"], "--workers: must be 'auto' or an integer >= 1"),
        (["--workers", "x"], "--workers: must be 'auto' or an integer >= 1"),
        (["--address", "http://127.0.0.1:8265"], "--address must be HOST:PORT"),
        (["--storage", "nosuchdb://x"], "--storage: cannot open"),
    ],
)
def test_bad_arguments_are_one_line_exit_2(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_spec(tmp_path / "spec.yaml")
    out = tmp_path / "out"
    code, err = _run_cli(["study", "run", str(spec), "--out", str(out), *args], capsys)
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not out.exists()


def test_missing_spec_file_and_missing_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _run_cli(["study", "run", str(tmp_path / "nope.yaml"), "--out", "x"], capsys)
    assert code == 2 and "cannot read spec" in err and err.count("\n") == 1
    code, err = _run_cli(["study", "run", str(tmp_path / "nope.yaml")], capsys)
    assert code == 2 and "required: --out" in err and err.count("\n") == 1


def test_non_empty_out_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(tmp_path / "spec.yaml")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, err = _run_cli(["study", "run", str(spec), "--out", str(out)], capsys)
    assert code == 2 and "is not empty and is not a study directory" in err
    assert "resume" not in err  # not a study: nothing to resume (issue 10)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_resume_and_status_need_a_study_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for action in ("resume", "status"):
        code, err = _run_cli(["study", action, str(tmp_path)], capsys)
        assert code == 2 and "is not a study directory" in err and err.count("\n") == 1


def test_console_entry_prints_one_line_without_traceback(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec.yaml", SMALL_SPEC.replace("density: 0.1", "density: 2"))
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "study", "run", str(spec), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "pathsweep: error: density in (0, 1] must hold, but got density=2"
    ]
    assert proc.stdout.startswith("pathsweep: starting study")  # the first line comes at once
    assert proc.stdout.count("\n") == 1 and not out.exists()


def test_cifar_without_files_or_torchvision_fails_before_ray(tmp_path: Path) -> None:
    """A root that holds no data fails validation (torchvision missing, or files absent)."""
    spec = small_spec(data={"name": "cifar10", "root": str(tmp_path)})
    with pytest.raises(SpecError, match=r"^data: dataset 'cifar10' (needs torchvision|not found)"):
        check_buildable(spec)


def test_memory_budget_is_overridable_and_the_estimate_grows_with_width() -> None:
    import torch

    import pruners
    from orchestrator.spec import estimate_trial_bytes

    def need(width: int, device: str = "meta") -> int:
        with torch.device(device):
            model = pruners.build_model("fc", (1, 8, 8), 10, width=width, depth=3)
        return estimate_trial_bytes(model, (1, 8, 8), 100)

    # fc width 1000, depth 3 on 8x8 inputs: 64*1000 + 1000*1000 + 1000*10 weights, 2010 biases;
    # per example the outputs of flatten (64), fc1, relu1, fc2, relu2 (1000 each), classifier (10).
    params, activations = 64 * 1000 + 1000 * 1000 + 1000 * 10 + 2010, 64 + 4 * 1000 + 10
    assert need(1000) == need(1000, "cpu") == 4 * (6 * params + 2 * 100 * activations)
    assert need(2000) > 3 * need(1000)
    big = {"name": "fc", "width": 30000, "depth": 3}  # ~22 GiB
    with pytest.raises(SpecError, match=r"trial_memory_gb=16"):
        check_buildable(small_spec(model=big))
    check_buildable(small_spec(model=big, trial_memory_gb=64))


def test_trial_timeout_has_a_default_and_round_trips() -> None:
    from orchestrator.spec import DEFAULT_TRIAL_TIMEOUT_S

    spec = small_spec()
    assert spec.trial_timeout_s == DEFAULT_TRIAL_TIMEOUT_S == 3600.0
    assert parse_spec(load_yaml(dump_spec(spec))) == spec
    assert small_spec(trial_timeout_s=5).trial_timeout_s == 5.0


def test_study_name_is_matched_whole() -> None:
    for bad in ("ok\n", "a" * 101, "ok\nmore", "-x"):
        with pytest.raises(SpecError, match=r"^study must"):
            small_spec(study=bad)
    assert small_spec(study="a" * 100).study == "a" * 100


def test_validate_seeds_parse_count_runs_and_round_trip() -> None:
    spec = small_spec(validate={"top_k": 2, "random_k": 1, "epochs": 3, "seeds": [4, 0, 7]})
    assert spec.validate.seeds == (4, 0, 7)  # in the spec's order
    assert spec.validate.runs_per_config() == 3
    assert parse_spec(load_yaml(dump_spec(spec))) == spec
    plain = small_spec(validate={"top_k": 2})
    assert plain.validate.seeds is None and plain.validate.runs_per_config() == 1
    assert "seeds" not in load_yaml(dump_spec(plain))["validate"]
    with pytest.raises(SpecError, match="at most 1,000 seeds"):
        small_spec(validate={"top_k": 1, "seeds": list(range(1001))})
