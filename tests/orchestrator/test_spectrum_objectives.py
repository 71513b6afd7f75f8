"""The Path Kernel spectrum as study objectives and Parquet columns (no Ray needed)."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest

import pruners
from orchestrator.errors import SpecError
from orchestrator.rows import SPECTRUM_TYPES, declared_schema
from orchestrator.spec import SPECTRUM_METRICS, SpectrumSpec, dump_spec, load_yaml, parse_spec
from orchestrator.trial import make_config, resolve_params, run_trial

from .helpers import small_spec


def test_names_match_pruners() -> None:
    assert SPECTRUM_METRICS == pruners.SPECTRUM_METRICS
    assert set(SPECTRUM_TYPES) == set(SPECTRUM_METRICS)


def test_spectrum_objectives_validate_and_imply_the_section() -> None:
    spec = small_spec(
        objectives=[
            {"metric": "log_lambda_max", "direction": "maximize"},
            {"metric": "effective_rank", "direction": "maximize"},
        ],
        sampler="nsga2",
    )
    assert spec.metrics == ["log_lambda_max", "effective_rank"]
    assert spec.spectrum == SpectrumSpec(k=10, probes=10)
    assert small_spec().spectrum is None
    explicit = small_spec(spectrum={"k": 3, "probes": 4})
    assert explicit.spectrum == SpectrumSpec(k=3, probes=4)
    assert parse_spec(load_yaml(dump_spec(explicit))) == explicit  # survives a resume
    schema = declared_schema(explicit)
    assert schema.field("log_lambda_max").type == pa.float64()
    assert schema.field("spectrum_converged").type == pa.int64()
    assert "log_lambda_max" not in declared_schema(small_spec()).names


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"spectrum": {"k": 0}}, r"^spectrum\.k >= 1 must hold"),
        ({"spectrum": {"k": 2, "probes": 1}}, r"^spectrum\.probes must be 0 or >= 2"),
        ({"spectrum": {"depth": 2}}, r"^spectrum: unknown field 'depth'"),
        ({"spectrum": [10]}, r"^spectrum must be a mapping"),
        (
            {
                "spectrum": {"k": 2, "probes": 0},
                "objectives": [{"metric": "effective_rank"}],
            },
            r"need spectrum\.probes >= 2",
        ),
    ],
)
def test_bad_spectrum_sections_are_one_line_errors(changes: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        small_spec(**changes)


def test_run_trial_returns_the_spectrum_columns() -> None:
    spec = small_spec(objectives=[{"metric": "log_lambda_max"}], spectrum={"k": 3, "probes": 4})
    config = make_config(spec, 1, 0, resolve_params({"iterations": 1}, spec.search.fixed()))
    result = run_trial(config)
    metrics = result.metrics
    assert set(SPECTRUM_METRICS) <= set(metrics)
    assert metrics["spectrum_k"] == 3 and metrics["spectrum_converged"] == 1
    assert math.isfinite(metrics["log_lambda_max"])
    # λ_max ≤ Tr(Π), and the top-3 share of the trace is a fraction
    assert metrics["log_lambda_max"] <= metrics["log_path_kernel_trace"] + 1e-9
    assert 0 < metrics["topk_trace_share"] <= 1 + 1e-9
    assert metrics["effective_rank"] >= 1 - 1e-9 and metrics["effective_rank_se"] > 0
    plain = run_trial(make_config(small_spec(), 1, 0, dict(config.params)))
    assert not set(SPECTRUM_METRICS) & set(plain.metrics)
    assert plain.metrics["log_path_kernel_trace"] == metrics["log_path_kernel_trace"]
