"""compose.yaml, validated without a container engine (the build machines have none): it
parses; every service that runs ``planr`` runs a real verb with real options; every PLANR_
variable is a real setting (or the variable of a real option) with a valid value; every topic
it names is one the code provisions; every file it mounts is in the repository (secrets
excepted: they are never committed). Also: the shape the production deployment needs (three
KRaft nodes, two routers, replication 3 and min.insync.replicas 2) and the wiring of the
monitoring files."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import typer
import yaml

from cli import app
from cli.context import Context
from cli.settings import Settings
from planr.topics import Topics

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose.yaml"
PROMETHEUS_CONFIG = ROOT / "monitoring" / "prometheus.yml"
DASHBOARD_PROVIDER = ROOT / "monitoring" / "grafana" / "provisioning" / "dashboards" / "planr.yml"
DOCKERFILE = ROOT / "Dockerfile"
LONG_RUNNING = {("route",), ("aggregate",), ("inboxes",), ("ftf", "project"),
                ("jib", "consensus")}


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


# ---- reading a service's command -------------------------------------------------------------

_OPERATORS = re.compile(r"&&|\|\||[;|<>]")
_SUBSTITUTION = re.compile(r"\$\$?\([^)]*\)")
_ASSIGNMENT = re.compile(r"^([A-Za-z_]\w*)=")


def shell_commands(service: dict[str, Any]) -> Iterator[tuple[dict[str, str], list[str]]]:
    """(inline variables, argv) of each simple command the service runs: its ``command``
    itself, or each command of an ``sh -c`` script."""
    command = service.get("command")
    if command is None:
        return
    argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    if argv[:2] not in (["sh", "-c"], ["bash", "-c"]):
        yield {}, argv
        return
    script = _SUBSTITUTION.sub("SUBSTITUTED", argv[2])
    for segment in _OPERATORS.split(script):
        words = shlex.split(segment)
        assigned: dict[str, str] = {}
        while words and (found := _ASSIGNMENT.match(words[0])):
            assigned[found.group(1)] = words.pop(0)[found.end():]
        if words[:1] == ["exec"]:
            words.pop(0)
        if words:
            yield assigned, words


def planr_runs(service: dict[str, Any]) -> list[tuple[dict[str, str], list[str]]]:
    return [(env, argv[1:]) for env, argv in shell_commands(service) if argv[0] == "planr"]


def test_shell_commands_split_scripts_into_variables_and_commands():
    service = {"command": ["sh", "-c", "A=$$(cat /s) B=x exec planr ftf project --until-idle 1"
                                       " > /out; planr acls"]}
    assert list(shell_commands(service)) == [
        ({"A": "SUBSTITUTED", "B": "x"}, ["planr", "ftf", "project", "--until-idle", "1"]),
        ({}, ["/out"]),
        ({}, ["planr", "acls"]),
    ]


# ---- resolving a planr command against the Typer app ---------------------------------------


def _options(command: Any) -> dict[str, Any]:
    return {flag: p for p in command.params if p.param_type_name == "option"
            for flag in (*p.opts, *p.secondary_opts)}


@contextlib.contextmanager
def planr_environment(env: dict[str, str]) -> Iterator[None]:
    """os.environ with exactly the PLANR_ variables of ``env`` (restored afterwards)."""
    saved = dict(os.environ)
    try:
        for variable in [v for v in os.environ if v.startswith("PLANR_")]:
            del os.environ[variable]
        os.environ.update({k: v for k, v in env.items() if k.startswith("PLANR_")})
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def resolve(argv: list[str], env: dict[str, str]) -> tuple[str, ...]:
    """The verb path of ``planr ARGV``. Fails on an unknown verb or option; then the command
    parses its arguments as it would at run time (with the service's PLANR_ variables): a bad
    or missing value, or a missing required parameter, fails too."""
    command: Any = typer.main.get_command(app)
    path: list[str] = []
    args = list(argv)
    while getattr(command, "commands", None) is not None:
        verb = " ".join(["planr", *path])
        assert args, f"{verb} is a group, not a command"
        word = args.pop(0)
        if word.startswith("-"):  # an option of the group (planr --bootstrap-servers ...)
            flag, has_value, _ = word.partition("=")
            param = _options(command).get(flag)
            assert param is not None, f"{verb}: no option {flag}"
            if not param.is_flag and not has_value:
                assert args, f"{verb} {flag}: no value"
                args.pop(0)
            continue
        assert word in command.commands, f"{verb}: no command {word}"
        command = command.commands[word]
        path.append(word)
    verb = " ".join(["planr", *path])
    flags = _options(command)
    for word in args:
        if word.startswith("--"):
            assert word.partition("=")[0] in flags, f"{verb}: no option {word}"
    with planr_environment(env):
        try:
            command.make_context(verb, list(args))
        except Exception as exc:  # noqa: BLE001 - the CLI's own usage errors, reported as such
            raise AssertionError(f"{verb}: {type(exc).__name__}: {exc}") from None
    return tuple(path)


def test_resolve_rejects_unknown_verbs_options_and_values():
    assert resolve(["aggregate", "--interval", "60"], {}) == ("aggregate",)
    assert resolve(["ftf", "project"], {}) == ("ftf", "project")
    for argv, message in ((["rout"], "no command rout"),
                          (["route", "--groupp", "g"], "no option --groupp"),
                          (["acls", "--format", "yaml"], "BadParameter"),
                          (["route", "--until-idle", "0"], "BadParameter"),
                          (["aggregate", "--interval"], "requires an argument"),
                          (["ftf"], "is a group"),
                          (["publish", "-"], "Missing parameter: agency")):
        with pytest.raises(AssertionError, match=message):
            resolve(argv, {})
    assert resolve(["publish", "-"], {"PLANR_AGENCY": "vsse"}) == ("publish",)


def all_params(command: Any) -> Iterator[Any]:
    yield from command.params
    for sub in (getattr(command, "commands", None) or {}).values():
        yield from all_params(sub)


def known_variables() -> set[str]:
    prefix = str(Settings.model_config.get("env_prefix", ""))
    fields = {f"{prefix}{name}".upper() for name in Settings.model_fields}
    envvars: set[str] = set()
    for param in all_params(typer.main.get_command(app)):
        if isinstance(param.envvar, str):
            envvars.add(param.envvar)
        elif param.envvar:
            envvars.update(param.envvar)
    return fields | envvars


# ---- the services that run planr -------------------------------------------------------------


def planr_services() -> dict[str, list[tuple[dict[str, str], tuple[str, ...]]]]:
    """Service name -> (its PLANR_ variables, verb path) of each planr command it runs."""
    out = {}
    for name, service in services().items():
        runs = planr_runs(service)
        if runs:
            env = environment(service)
            out[name] = [({**env, **inline}, resolve(argv, {**env, **inline}))
                         for inline, argv in runs]
    return out


def test_compose_file_parses_with_services_and_top_level_sections():
    loaded = compose()
    assert {"services", "secrets", "volumes"} <= set(loaded)
    assert len(services()) >= 10


def test_every_planr_command_is_a_real_verb_with_real_options():
    runs = planr_services()
    verbs = {verb for found in runs.values() for _, verb in found}
    assert verbs >= LONG_RUNNING
    assert {("topics", "provision"), ("acls",)} <= verbs


def test_every_planr_variable_is_a_setting_or_an_option_variable():
    known = known_variables()
    for name, service in services().items():
        named = set(environment(service))
        for inline, _ in shell_commands(service):
            named |= set(inline)
        unknown = {v for v in named if v.startswith("PLANR_")} - known
        assert unknown == set(), f"{name}: {sorted(unknown)}"


def test_the_settings_of_every_planr_service_are_valid(monkeypatch):
    """Each planr service's variables load as settings, and the bus services' as a broker
    connection (their password comes from a secret at run time: a stand-in here)."""
    for name, runs in planr_services().items():
        for env, verb in runs:
            for variable in [v for v in os.environ if v.startswith("PLANR_")]:
                monkeypatch.delenv(variable)
            for variable, value in env.items():
                if variable.startswith("PLANR_") and value != "SUBSTITUTED":
                    monkeypatch.setenv(variable, value)
            settings = Settings()
            if verb != ("acls",):
                monkeypatch.setenv("PLANR_SASL_PASSWORD", "stand-in")
                connection = Context(Settings()).connection()
                assert connection.security_protocol.startswith("SASL"), name
            assert settings.bootstrap_servers is not None, name


def test_the_topics_service_provisions_three_replicas_and_two_in_sync():
    env = environment(services()["topics"])
    assert int(env["PLANR_REPLICATION_FACTOR"]) == 3
    assert int(env["PLANR_MIN_INSYNC_REPLICAS"]) == 2


def test_three_kafka_nodes_and_two_router_replicas_of_two_workers_each():
    nodes = {name: s for name, s in services().items()
             if str(s.get("image", "")).startswith("apache/kafka:") and "NODE_ID" in environment(s)}
    assert sorted(environment(s)["NODE_ID"] for s in nodes.values()) == ["1", "2", "3"]
    assert len({environment(s)["CLUSTER_ID"] for s in nodes.values()}) == 1
    router = services()["router"]
    assert [argv for _, argv in planr_runs(router)] == [["route", "--workers", "2"]]
    assert router["deploy"]["replicas"] == 2


# ---- topics ----------------------------------------------------------------------------------

_TOPIC = r"(?<![\w.-]){prefix}\.[a-z][\w.*-]*[\w*]"


def named_topics(text: str, prefix: str) -> set[str]:
    return set(re.findall(_TOPIC.format(prefix=re.escape(prefix)), text))


def unknown_topics(named: set[str], topics: Topics) -> set[str]:
    existing = set(topics.everything())
    return {t for t in named if t not in existing
            and not (t.endswith(".*") and any(e.startswith(t[:-1]) for e in existing))}


def test_topic_names_are_checked_against_the_topic_registry():
    topics = Topics("planr")
    named = named_topics("reads planr.ingress.* and planr.deliver.tfl.gent, planr_ftf", "planr")
    assert named == {"planr.ingress.*", "planr.deliver.tfl.gent"}
    assert unknown_topics(named, topics) == {"planr.deliver.tfl.gent"}


def test_every_topic_named_in_compose_and_its_scripts_is_provisioned():
    prefixes = {environment(s).get("PLANR_TOPIC_PREFIX", "planr") for s in services().values()}
    assert prefixes == {"planr"}
    text = "\n".join(p.read_text(encoding="utf-8")
                     for p in (COMPOSE, *sorted((ROOT / "deploy").glob("*"))))
    named = named_topics(text, "planr")
    assert named, "compose.yaml names no topic"
    assert unknown_topics(named, Topics("planr")) == set()


# ---- mounted files, secrets, volumes -----------------------------------------------------------


def mounts(service: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(type, source, target) of each volume of a service."""
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            yield volume["type"], str(volume["source"]), str(volume["target"])
        else:
            source, target = str(volume).split(":")[:2]
            kind = "bind" if source.startswith((".", "/", "~")) else "volume"
            yield kind, source, target


def test_every_mounted_file_exists_and_every_named_volume_is_declared():
    declared = set(compose().get("volumes") or {})
    for name, service in services().items():
        for kind, source, _ in mounts(service):
            if kind == "bind":
                assert source.startswith("./"), f"{name}: {source} is outside the repository"
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"


def test_secrets_are_declared_and_kept_out_of_the_repository():
    declared = compose()["secrets"]
    ignored = (ROOT / ".gitignore").read_text(encoding="utf-8").split()
    assert "secrets/" in ignored
    for secret in declared.values():
        assert str(secret["file"]).startswith("./secrets/"), secret
    for name, service in services().items():
        for entry in service.get("secrets") or []:
            source = entry["source"] if isinstance(entry, dict) else entry
            assert source in declared, f"{name}: secret {source} is not declared"


def test_depends_on_names_services():
    names = set(services())
    for name, service in services().items():
        depends = service.get("depends_on") or []
        assert set(depends) <= names, name


def test_the_deploy_scripts_are_valid_bash():
    bash = shutil.which("bash")
    assert bash is not None
    scripts = sorted((ROOT / "deploy").glob("*.sh"))
    assert scripts
    for script in scripts:
        done = subprocess.run([bash, "-n", str(script)], capture_output=True, text=True,
                              check=False)
        assert done.returncode == 0, f"{script.name}: {done.stderr}"


def test_the_image_copies_every_package_the_project_installs():
    include = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))[
        "tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in include}
    copied = set(re.findall(r"^COPY (\w+) \1$", DOCKERFILE.read_text(encoding="utf-8"), re.M))
    assert packages == copied


# ---- monitoring wiring --------------------------------------------------------------------------


def test_prometheus_scrapes_every_long_running_planr_service():
    jobs = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))["scrape_configs"]
    scraped = {name for job in jobs for sd in job.get("dns_sd_configs", [])
               for name in sd["names"] if sd.get("port") == 9400}
    for name, runs in planr_services().items():
        if any(verb in LONG_RUNNING for _, verb in runs):
            assert name in scraped, f"{name} is not scraped"
            assert environment(services()[name])["PLANR_METRICS_PORT"] == "9400"


def test_prometheus_gets_its_configuration_and_every_rule_file():
    prometheus = services()["prometheus"]
    targets = {target: source for kind, source, target in mounts(prometheus) if kind == "bind"}
    config = targets["/etc/prometheus/prometheus.yml"]
    assert (ROOT / config).resolve() == PROMETHEUS_CONFIG
    for rule_file in yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))["rule_files"]:
        target = str(PurePosixPath("/etc/prometheus") / rule_file)
        assert target in targets, f"{rule_file} is not mounted"
        assert (ROOT / targets[target]).resolve() == (PROMETHEUS_CONFIG.parent / rule_file)


def test_grafana_gets_its_provisioning_and_the_dashboard_where_the_provider_looks():
    grafana = services()["grafana"]
    targets = {target: source for kind, source, target in mounts(grafana) if kind == "bind"}
    assert targets["/etc/grafana/provisioning"] == "./monitoring/grafana/provisioning"
    provider = yaml.safe_load(DASHBOARD_PROVIDER.read_text(encoding="utf-8"))["providers"][0]
    dashboards = [t for t, s in targets.items() if s == "./monitoring/grafana/dashboard.json"]
    assert len(dashboards) == 1
    assert str(PurePosixPath(dashboards[0]).parent) == provider["options"]["path"]
