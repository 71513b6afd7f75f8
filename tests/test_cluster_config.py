"""The cluster launcher configs (``cluster.yaml``, ``examples/cluster-local.yaml``) pass Ray's own
validator offline, reject typos with Ray's message, install pinned versions of pathsweep and its
dependencies without piping a download into a shell, turn on Ray's token authentication, and
expose nothing but SSH.

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
LOCK = ROOT / "requirements-cluster.txt"
LOCK_INPUT = ROOT / "requirements-cluster.in"
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


ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def ray_start(commands: list[str], head: bool) -> tuple[dict[str, str], dict[str, str]]:
    """The environment assignments before, and the ``--flag=value`` options of, the
    ``ray start`` command among ``commands``."""
    for command in commands:
        for part in command.split(";"):
            words = shlex.split(part)
            env = {}
            while words and ENV_ASSIGNMENT.match(words[0]):
                key, _, value = words.pop(0).partition("=")
                env[key] = value
            if words[:2] == ["ray", "start"] and ("--head" in words) == head:
                flags = dict(w[2:].split("=", 1) for w in words if w.startswith("--") and "=" in w)
                return env, flags
    raise AssertionError(f"no `ray start` ({head=}) in {commands}")


def ray_start_flags(commands: list[str], head: bool) -> dict[str, str]:
    """``--flag=value`` options of the ``ray start`` command among ``commands``."""
    return ray_start(commands, head)[1]


COMMAND_KEYS = (
    "initialization_commands",
    "setup_commands",
    "head_setup_commands",
    "worker_setup_commands",
    "head_start_ray_commands",
    "worker_start_ray_commands",
)
PIPE_TO_SHELL = re.compile(r"\b(curl|wget)\b[^;&|]*\|\s*(sudo\s+)?(\S*/)?(ba|z|da)?sh\b")
PIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._,-]+\])?==[A-Za-z0-9.+!]+$")


def all_commands(config: dict[str, Any]) -> list[str]:
    return [cmd for key in COMMAND_KEYS for cmd in config.get(key, [])]


def pip_installs(command: str) -> list[list[str]]:
    """The argument lists of every ``pip install`` in a shell command."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words = list(lexer)
    found = []
    for i, word in enumerate(words):
        if word.endswith("pip") and words[i + 1 : i + 2] == ["install"]:
            args = []
            for arg in words[i + 2 :]:
                if arg in ("&&", "||", ";", "|", "(", ")", "{", "}", ">", "2>", "&"):
                    break
                args.append(arg)
            found.append(args)
    return found


def requirement_lines(path: Path) -> list[str]:
    lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line]


def unpinned(config: dict[str, Any], mounted: dict[str, Path]) -> list[str]:
    """What a ``pip install`` of ``config`` installs without an exact ``==`` version: each
    requirement given inline or in a ``-r`` file (``mounted`` maps node paths to repository
    files), and any ``-e`` install that resolves dependencies (no ``--no-deps``)."""
    problems = []
    for command in all_commands(config):
        for args in pip_installs(command):
            i = 0
            while i < len(args):
                arg = args[i]
                if arg in ("-r", "--requirement"):
                    file = mounted[args[i + 1]]
                    problems += [f"{file.name}: {r}" for r in requirement_lines(file)
                                 if not PIN.match(r)]
                    i += 2
                    continue
                if arg in ("-e", "--editable"):
                    if "--no-deps" not in args:
                        problems.append(f"-e {args[i + 1]} without --no-deps")
                    i += 2
                    continue
                if not arg.startswith("-") and not PIN.match(arg):
                    problems.append(arg)
                i += 1
    return problems


def node_paths(path: Path) -> dict[str, Path]:
    """Where the repository's requirement files are on a node of ``path``'s config."""
    root = ROOT / load(path)["file_mounts"]["~/pathsweep"]
    return {f"~/pathsweep/{p.name}": p for p in root.glob("requirements*.txt")}


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
        installs = [a for cmd in prepared[role] for a in pip_installs(cmd)]
        assert any(a[-2:] == ["-e", "~/pathsweep"] for a in installs), role
        assert any(a[-2:] == ["-r", "~/pathsweep/requirements-cluster.txt"] for a in installs)
    assert ".gitignore" in prepared["rsync_filter"]


# --- pinned installs, no download piped into a shell ------------------------------------


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_nothing_is_piped_from_the_internet_into_a_shell(path: Path) -> None:
    text = uncomment_block(path.read_text(), "docker")  # comments and the docker block too
    assert PIPE_TO_SHELL.search(text) is None, PIPE_TO_SHELL.search(text)
    for command in all_commands(load(path)):
        assert "curl" not in command and "wget" not in command, command


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_pip_install_is_pinned(path: Path) -> None:
    config = load(path)
    installs = [a for cmd in all_commands(config) for a in pip_installs(cmd)]
    assert len(installs) >= 3, installs  # uv, the lock, pathsweep
    assert unpinned(config, node_paths(path)) == []
    enabled = yaml.safe_load(uncomment_block(path.read_text(), "docker"))
    assert unpinned(enabled, node_paths(path)) == []


def test_the_pin_check_catches_unpinned_installs_and_pipes() -> None:
    config = load(AWS)
    for bad in ('pip install "ray[default]>=2.9"', "pip install boto3", "pip install -e .",
                "~/venv/bin/pip install -U torch && echo ok"):
        config["head_setup_commands"] = [bad]
        assert unpinned(config, node_paths(AWS)) != [], bad
    config["head_setup_commands"] = ['pip install "boto3==1.43.11" "ray[default]==2.60.0"']
    assert unpinned(config, node_paths(AWS)) == []
    for pipe in ("curl -LsSf https://astral.sh/uv/install.sh | sh",
                 "wget -qO- https://x.example/i.sh | sudo bash", "curl -s https://x | /bin/sh"):
        assert PIPE_TO_SHELL.search(pipe), pipe


def test_the_lock_pins_every_dependency_of_pyproject_at_an_allowed_version() -> None:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = {}
    for line in requirement_lines(LOCK):
        assert PIN.match(line), line
        name, _, version = line.partition("==")
        pins[canonicalize_name(Requirement(name).name)] = version
    pyproject = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"^dependencies = \[(.*?)^\]", pyproject, re.MULTILINE | re.DOTALL)
    assert block
    needed = [Requirement(r) for r in re.findall(r'"([^"]+)"', block.group(1))]
    assert needed
    for requirement in needed:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not pinned in {LOCK.name}"
        assert requirement.specifier.contains(pins[name], prereleases=True), (name, pins[name])
    # the lock holds the versions its input names (the tested ones)
    for line in requirement_lines(LOCK_INPUT):
        requirement = Requirement(line)
        (spec,) = requirement.specifier
        assert spec.operator == "==" and pins[canonicalize_name(requirement.name)] == spec.version
    assert "boto3" in pins  # the AWS head's autoscaler


# --- Ray's token authentication ---------------------------------------------------------


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_ray_runs_with_token_authentication(path: Path, offline: None) -> None:
    config = load(path)
    head_env, _ = ray_start(config["head_start_ray_commands"], head=True)
    worker_env, _ = ray_start(config["worker_start_ray_commands"], head=False)
    assert head_env.get("RAY_AUTH_MODE") == "token"
    assert worker_env.get("RAY_AUTH_MODE") == "token"
    # the head makes the token before Ray starts (setup runs before start commands) ...
    generate = [c for c in config["head_setup_commands"] if "get-auth-token --generate" in c]
    assert generate and ">/dev/null" in generate[0].replace(" ", ""), "never print the token"
    assert "chmod 600 ~/.ray/auth_token" in generate[0]
    # ... and every worker gets a copy from the head before its Ray starts
    assert "~/.ray/auth_token" in validate(config)["cluster_synced_files"]
    # shells on the nodes (ray attach/exec, `--address auto`) use the token too
    assert any("export RAY_AUTH_MODE=token" in c for c in config["setup_commands"])


def test_no_token_is_in_the_repository() -> None:
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.split()
    assert not [f for f in tracked if "auth_token" in Path(f).name]
    for path in CONFIGS:
        assert not re.search(r"RAY_AUTH_TOKEN=\S", path.read_text()), path


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_commands_are_valid_bash(path: Path) -> None:
    script = "\n".join(all_commands(load(path)))
    subprocess.run(["bash", "-n"], input=script, text=True, check=True, timeout=10)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_cluster_ray_matches_the_tested_ray(path: Path) -> None:
    import ray

    tags = set(re.findall(r"rayproject/ray:([\d.]+)-", path.read_text()))
    locked = {r.partition("==")[2] for r in requirement_lines(LOCK) if r.startswith("ray==")}
    wanted = set(re.findall(r"^ray\[default\]==([\w.]+)$", LOCK_INPUT.read_text(), re.M))
    assert tags == locked == wanted == {ray.__version__}


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
