"""Spec YAML: anchors and aliases are refused (no "billion laughs"), and error messages stay
short however big the offending value is."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.errors import MAX_MESSAGE, SpecError, brief
from orchestrator.spec import dump_spec, load_spec, load_yaml, parse_spec

from .helpers import SMALL_SPEC, small_spec, write_spec

ROOT = Path(__file__).resolve().parents[2]


def billion_laughs(levels: int = 9) -> str:
    """A spec of ~500 bytes whose ``model`` expands to 10**levels strings through aliases."""
    lines = ["study: lol", 'l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        refs = ",".join([f"*l{i - 1}"] * 10)
        lines.append(f"l{i}: &l{i} [{refs}]")
    lines.append(f"model: *l{levels - 1}")
    return "\n".join(lines) + "\n"


def _limit_memory() -> None:
    one_gib = 1 << 30
    resource.setrlimit(resource.RLIMIT_AS, (one_gib, one_gib))


def test_billion_laughs_is_refused_at_once_in_little_memory(tmp_path: Path) -> None:
    """Run in a child limited to 1 GiB of address space: expanding the aliases (as printing the
    bad ``model`` value did) needs gigabytes and would end in MemoryError or the timeout."""
    spec = tmp_path / "lol.yaml"
    spec.write_text(billion_laughs())
    assert len(spec.read_bytes()) < 700
    code = (
        "import sys\n"
        "from orchestrator.errors import SpecError\n"
        "from orchestrator.spec import load_spec\n"
        "try:\n"
        f"    load_spec({str(spec)!r})\n"
        "except SpecError as exc:\n"
        "    print(exc)\n"
        "    sys.exit(2)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_limit_memory,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert (
        done.stdout
        == "YAML anchors are not allowed in a spec, but got &l0 (line 2); write the value out\n"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: &x 1\nstudy: ok\n", "YAML anchors are not allowed in a spec, but got &x (line 1)"),
        ("study: ok\nmodel: *x\n", "YAML aliases are not allowed in a spec, but got *x (line 2)"),
        ("base: &b {name: fc}\nmodel:\n  <<: *b\n", "YAML anchors are not allowed"),
    ],
)
def test_anchors_and_aliases_are_refused_with_one_line(text: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        load_yaml(text)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_the_cli_refuses_an_aliased_spec_with_exit_2(tmp_path: Path) -> None:
    from orchestrator.cli import main

    spec = write_spec(tmp_path / "spec.yaml", billion_laughs(3))
    assert main(["study", "run", str(spec), "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


def test_a_saved_spec_has_no_aliases_even_for_shared_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``dump_spec`` must not write anchors for a value used twice: resume reloads the file."""
    import orchestrator.spec as spec_module

    spec = small_spec()
    path = tmp_path / "spec.yaml"
    path.write_text(dump_spec(spec))
    assert load_spec(path) == spec
    shared = {"low": 0.5, "high": 3.0}
    as_dict = spec_module.spec_to_dict(spec)
    as_dict["search"] = {"path_exponent": shared, "score_exponent": shared}
    monkeypatch.setattr(spec_module, "spec_to_dict", lambda _: as_dict)
    text = dump_spec(spec)
    assert "&" not in text and "*" not in text
    assert load_yaml(text)["search"]["score_exponent"] == shared


def _huge_list() -> list[int]:
    return list(range(100_000))


@pytest.mark.parametrize(
    "edit",
    [
        lambda raw: raw.update(data=_huge_list()),  # "data must be a mapping"
        lambda raw: raw.update(sampler={"name": "tpe", "n_startup_trials": _huge_list()}),
        lambda raw: raw.update(model={"name": "fc", "width": _huge_list(), "depth": 3}),
        lambda raw: raw.update(density="y" * 100_000),
    ],
    ids=["mapping", "sampler-option", "model-option", "density"],
)
def test_error_messages_stay_short_for_huge_values(edit: object) -> None:
    from orchestrator.spec import check_buildable

    raw = load_yaml(SMALL_SPEC)
    edit(raw)  # type: ignore[operator]
    with pytest.raises((SpecError, ValueError)) as caught:
        check_buildable(parse_spec(raw))
    message = str(caught.value)
    assert len(message) <= MAX_MESSAGE and "\n" not in message, message[:200]


def test_brief_is_bounded_for_deep_and_long_values() -> None:
    deep: list[object] = []
    for _ in range(1000):
        deep = [deep, "z" * 1000]
    assert len(brief(deep)) < 400
    assert len(brief("q" * 10**6)) < 100
