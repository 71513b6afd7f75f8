"""``pathsweep demo``: the embedded default study, end to end, on the bundled digits data.

A few dozen fast data-free trials of the SynFlow family (Gebhart, Saxena, Schrater 2021, "A
Unified Paths Perspective for Pruning at Initialization") on a small MLP, a short validation
pass that trains the best and some random configurations, then the analysis report.
"""

from __future__ import annotations

import sys
from pathlib import Path

from orchestrator.spec import StudySpec, load_yaml, parse_spec

DEMO_SPEC = """\
study: demo-synflow-fc-digits
model: {name: fc, width: 64, depth: 4}
data: {name: digits}
density: 0.05
search:
  path_exponent: {low: 0.5, high: 3.0}
  score_exponent: {low: 0.0, high: 3.0}
  iterations: {low: 1, high: 30, log: true}
  schedule: [exponential, linear]
  input: [ones, data-mean]
objectives:
  - {metric: log_path_kernel_trace, direction: maximize}
sampler: tpe
trials: 40
workers: auto
validate: {top_k: 4, random_k: 4, epochs: 20}
seed: 0
"""


def demo_spec() -> StudySpec:
    """The demo's spec."""
    return parse_spec(load_yaml(DEMO_SPEC))


def run_report(out: Path) -> Path | None:
    """Build the analysis report of ``out`` when the analysis package is importable."""
    try:
        from analysis.cli import main as analyze
    except ImportError:
        print("the analysis package is not available: no report", file=sys.stderr)
        return None
    report = out / "report"
    code = analyze([str(out), "--report", str(report)])
    if code != 0:
        print(f"the analysis report failed (exit code {code})", file=sys.stderr)
        return None
    return report
