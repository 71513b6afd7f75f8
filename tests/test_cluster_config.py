"""The cluster launcher configs (``cluster.yaml``, ``examples/cluster-local.yaml``) pass Ray's own
validator offline, reject typos with Ray's message, install pathsweep, and expose nothing but SSH.

What runs offline: ``prepare_config`` only merges the provider's ``defaults.yaml`` (a file shipped
with Ray), the setup commands and the per-node-type worker bounds; ``validate_config`` checks the
result against ``ray-schema.json`` with jsonschema. Neither imports boto3 nor opens a socket (the
``offline`` fixture makes any connection attempt fail the test). What needs AWS and is not
exercised here is ``ray up``'s bootstrap step (``bootstrap_aws``: IAM role, key pair, subnets,
security group, AMI lookup), which calls the EC2/IAM APIs with your credentials.
"""

from __future__ import annotations

import copy
import ipaddress
import re
import shlex
import socket
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ray_util = pytest.importorskip("ray.autoscaler._private.util")

ROOT = Path(__file__).resolve().parents[1]
AWS = ROOT / "cluster.yaml"
LOCAL = ROOT / "examples" / "cluster-local.yaml"
CONFIGS = [AWS, LOCAL]
RAY_PORTS = (6379, 8076, 8265, 10001)  # GCS, object manager, dashboard + Jobs API, Ray Client
INTERNET = ("0.0.0.0/0", "::/0")


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a network connection fails the test."""

    def refuse(self: socket.socket, address: object) -> None:
        raise AssertionError(f"network access during config validation: {address!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def validate(config: dict[str, Any]) -> dict[str, Any]:
    """Ray's own validation, as ``ray up`` runs it before touching any cloud API."""
    prepared = ray_util.prepare_config(copy.deepcopy(config))
    ray_util.validate_config(prepared)
    return prepared


def uncomment_block(text: str, name: str) -> str:
    """The file with the commented-out block between ``# BEGIN name`` and ``# END name`` enabled.

    Removes one leading ``# `` per line, as an editor's "uncomment" does; ``## `` lines inside
    the block stay comments.
    """
    lines = text.splitlines()
    begin, end = lines.index(f"# BEGIN {name}"), lines.index(f"# END {name}")
    for i in range(begin + 1, end):
        if not lines[i].startswith("# "):
            raise ValueError(f"line {i + 1} of the {name} block does not start with '# '")
        lines[i] = lines[i][2:]
    return "\n".join(lines) + "\n"


def ray_start_flags(commands: list[str], head: bool) -> dict[str, str]:
    """``--flag=value`` options of the ``ray start`` command among ``commands``."""
    for command in commands:
        for part in command.split(";"):
            words = shlex.split(part)
            if words[:2] == ["ray", "start"] and ("--head" in words) == head:
                return dict(w[2:].split("=", 1) for w in words if w.startswith("--") and "=" in w)
    raise AssertionError(f"no `ray start` ({head=}) in {commands}")


def internet_ingress_to(rules: list[dict[str, Any]], port: int) -> list[dict[str, Any]]:
    """The security-group rules that let anyone on the internet reach TCP ``port``."""

    def covers(rule: dict[str, Any]) -> bool:
        if rule.get("IpProtocol") in ("-1", -1):
            return True
        return rule.get("IpProtocol") == "tcp" and rule["FromPort"] <= port <= rule["ToPort"]

    def from_anywhere(rule: dict[str, Any]) -> bool:
        cidrs = [r.get("CidrIp") for r in rule.get("IpRanges", [])]
        cidrs += [r.get("CidrIpv6") for r in rule.get("Ipv6Ranges", [])]
        return any(c in INTERNET for c in cidrs)

    return [r for r in rules if covers(r) and from_anywhere(r)]


def effective_ingress(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The inbound rules ``ray up`` gives the security group it creates for ``config``."""
    from ray.autoscaler._private.aws.config import _create_default_inbound_rules

    extra = config["provider"].get("security_group", {}).get("IpPermissions", [])
    return _create_default_inbound_rules({"sg-cluster"}, extra)


# --- Ray's validator --------------------------------------------------------------------


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_passes_ray_validator_offline(path: Path, offline: None) -> None:
    prepared = validate(load(path))
    assert prepared["max_workers"] >= 1
    assert prepared["head_node_type"] in prepared["available_node_types"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_docker_block_when_enabled_passes_ray_validator(path: Path, offline: None) -> None:
    plain = load(path)
    assert "docker" not in plain, "the docker block is documented as off by default"
    enabled = yaml.safe_load(uncomment_block(path.read_text(), "docker"))
    docker = validate(enabled)["docker"]
    assert docker["image"].startswith("rayproject/ray:") and docker["image"].endswith("-gpu")
    assert docker["container_name"]


# (file, section, key, typo): an unknown key is reported by name ("... ('max_worker' was
# unexpected)"); a typo in a key a node type requires is reported as that key missing.
NODE = ("available_node_types", "gpu")
TYPOS = [
    (AWS, (), "max_workers", "max_worker"),
    (AWS, (), "idle_timeout_minutes", "idle_timeout_minute"),
    (AWS, NODE, "min_workers", "min_worker"),
    (AWS, NODE, "resources", "resource"),
    (LOCAL, (), "idle_timeout_minutes", "idle_timeout_minute"),
    (LOCAL, (), "setup_commands", "setup_command"),
]
REQUIRED_IN_NODE_TYPE = {"resources", "node_config"}


@pytest.mark.parametrize(
    ("path", "where", "key", "typo"), TYPOS, ids=[f"{t[0].name}-{t[3]}" for t in TYPOS]
)
def test_typo_key_fails_with_rays_message(
    path: Path, where: tuple[str, ...], key: str, typo: str, offline: None
) -> None:
    config = load(path)
    section = config
    for name in where:
        section = section[name]
    section[typo] = section.pop(key)
    with pytest.raises(jsonschema.ValidationError) as caught:
        validate(config)
    if key in REQUIRED_IN_NODE_TYPE:
        assert caught.value.message == f"'{key}' is a required property"
    else:
        assert f"('{typo}' was unexpected)" in caught.value.message


def test_missing_head_type_fails_with_rays_message(offline: None) -> None:
    config = load(AWS)
    config["head_node_type"] = "hed"
    with pytest.raises(ValueError, match="head_node_type"):
        validate(config)


# --- what the nodes get -----------------------------------------------------------------


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_node_installs_pathsweep_from_the_working_copy(path: Path) -> None:
    prepared = validate(load(path))
    mounted = prepared["file_mounts"]["~/pathsweep"]
    pyproject = (ROOT / mounted / "pyproject.toml").read_text()
    assert re.search(r'^name = "pathsweep"$', pyproject, re.MULTILINE)
    for role in ("head_setup_commands", "worker_setup_commands"):
        assert "pip install -e ~/pathsweep" in prepared[role], role
    assert ".gitignore" in prepared["rsync_filter"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_commands_are_valid_bash(path: Path) -> None:
    config = load(path)
    keys = (
        "initialization_commands",
        "setup_commands",
        "head_setup_commands",
        "worker_setup_commands",
        "head_start_ray_commands",
        "worker_start_ray_commands",
    )
    script = "\n".join(cmd for key in keys for cmd in config[key])
    subprocess.run(["bash", "-n"], input=script, text=True, check=True, timeout=10)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_cluster_ray_matches_the_tested_ray(path: Path) -> None:
    import ray

    text = path.read_text()
    pins = set(re.findall(r'ray\[default\]==([\w.]+)"', text))
    tags = set(re.findall(r"rayproject/ray:([\d.]+)-", text))
    assert pins == tags == {ray.__version__}


def test_aws_gpu_workers_have_one_gpu_and_the_head_none() -> None:
    prepared = validate(load(AWS))
    types = prepared["available_node_types"]
    head = types[prepared["head_node_type"]]
    workers = [t for name, t in types.items() if name != prepared["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["resources"]["CPU"] == 0
    assert [t["resources"]["GPU"] for t in workers] == [1]
    assert all(
        0 <= t["min_workers"] <= t["max_workers"] <= prepared["max_workers"] for t in workers
    )
    assert prepared["idle_timeout_minutes"] > 0


# --- nothing but SSH from the internet --------------------------------------------------


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_dashboard_listens_on_loopback_only(path: Path) -> None:
    flags = ray_start_flags(load(path)["head_start_ray_commands"], head=True)
    assert ipaddress.ip_address(flags["dashboard-host"]).is_loopback
    worker = ray_start_flags(load(path)["worker_start_ray_commands"], head=False)
    assert "dashboard-host" not in worker


def test_aws_security_group_opens_only_ssh_to_the_internet() -> None:
    config = load(AWS)
    for node_type in config["available_node_types"].values():
        assert "SecurityGroupIds" not in node_type["node_config"], "Ray's default group applies"
    rules = effective_ingress(config)
    for port in RAY_PORTS:
        assert internet_ingress_to(rules, port) == [], port
    assert internet_ingress_to(rules, 22) != []


def test_ingress_check_catches_an_open_dashboard() -> None:
    config = load(AWS)
    opened: dict[str, Any] = {"IpProtocol": "tcp", "FromPort": 8265, "ToPort": 8265}
    opened["IpRanges"] = [{"CidrIp": "0.0.0.0/0"}]
    config["provider"]["security_group"] = {"IpPermissions": [opened]}
    validate(config)  # Ray accepts it; our check must not
    assert internet_ingress_to(effective_ingress(config), 8265) == [opened]
    assert internet_ingress_to(effective_ingress(config), 6379) == []
