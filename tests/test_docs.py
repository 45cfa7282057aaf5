"""The README and docs/ say what the code does: every setting, verb, topic, schema and metric
they list exists, and everything that exists is listed. The oracle on each side is the code's
own registry (the settings class, the Typer app, Topics, the .avsc files, the metric classes),
the documents are parsed as a reader sees them (markdown tables whose first column is code)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from cli import app
from cli.settings import Settings
from consumers.metrics import StoreMetrics
from planr import territory
from planr.domain import Agency, WorkingGroup
from planr.telemetry import Metrics
from planr.topics import Topics

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
OPERATIONS = DOCS / "operations.md"
AVRO_DIR = ROOT / "schemas" / "avro"
README_MAX_LINES = 150

# ---- reading markdown ---------------------------------------------------------------------

_CELL_SPLIT = re.compile(r"(?<!\\)\|")
_FIRST_CODE = re.compile(r"^\s*`([^`]+)`")


def _cells(line: str) -> list[str]:
    inner = line.strip().removeprefix("|").removesuffix("|")
    return [c.strip().replace("\\|", "|") for c in _CELL_SPLIT.split(inner)]


def first_table(path: Path, heading: str) -> list[list[str]]:
    """The body rows of the first table after ``heading`` (and before the next heading)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    assert heading in lines, f"{path.name} has no heading {heading!r}"
    rows: list[list[str]] = []
    for line in lines[lines.index(heading) + 1 :]:
        if line.startswith("#"):
            break
        if line.startswith("|"):
            rows.append(_cells(line))
        elif rows:
            break
    assert len(rows) > 2, f"{path.name}: no table under {heading!r}"
    header, separator, *body = rows
    assert set("".join(separator)) <= set("-: "), f"{path.name}: {header} has no separator row"
    return body


def first_code(cell: str) -> str:
    """The code span a row starts with (the variable, verb, topic, file or metric)."""
    found = _FIRST_CODE.match(cell)
    assert found is not None, f"table row does not start with a `code` cell: {cell!r}"
    return found.group(1)


def keyed_rows(path: Path, heading: str) -> dict[str, list[str]]:
    rows = first_table(path, heading)
    keyed = {first_code(r[0]): r for r in rows}
    assert len(keyed) == len(rows), f"{path.name} {heading!r}: a row is listed twice"
    return keyed


# ---- (a) settings -------------------------------------------------------------------------


def settings_variables() -> dict[str, Any]:
    """``PLANR_<FIELD>`` of every settings field, with its default."""
    prefix = str(Settings.model_config.get("env_prefix", ""))
    return {f"{prefix}{name}".upper(): field.default
            for name, field in Settings.model_fields.items()}


def test_readme_settings_table_lists_exactly_the_settings_fields():
    documented = set(keyed_rows(README, "## Settings"))
    expected = set(settings_variables())
    assert documented - expected == set(), "documented, but not a setting"
    assert expected - documented == set(), "settings missing from the README"


def test_readme_settings_table_states_every_default():
    rows = keyed_rows(README, "## Settings")
    for variable, default in settings_variables().items():
        cell = rows[variable][-1]
        if default is None:
            want = "unset"
        elif isinstance(default, Path):
            want = default.name if default.is_absolute() else str(default)
        else:
            want = str(default)
        assert want in cell, f"{variable}: default {want!r} not in {cell!r}"


# ---- (b) command line ---------------------------------------------------------------------


def command_tree(command: Any, path: tuple[str, ...]) -> Iterator[tuple[str, Any]]:
    """Every leaf command of a click group, by its full name (``planr ftf show``)."""
    subcommands = getattr(command, "commands", None)
    if subcommands is None:
        yield " ".join(path), command
        return
    for name, sub in subcommands.items():
        yield from command_tree(sub, (*path, name))


def existing_verbs() -> dict[str, Any]:
    return dict(command_tree(typer.main.get_command(app), ("planr",)))


def documented_verb(code: str) -> str:
    words = []
    for word in code.split():
        if not re.fullmatch(r"[a-z][a-z-]*", word):
            break
        words.append(word)
    return " ".join(words)


def readme_verbs() -> dict[str, list[str]]:
    rows = first_table(README, "## Command line")
    verbs = {documented_verb(first_code(r[0])): r for r in rows}
    assert len(verbs) == len(rows), "a verb is listed twice in the README"
    return verbs


def test_readme_cli_table_lists_every_verb_and_only_existing_ones():
    documented = set(readme_verbs())
    existing = set(existing_verbs())
    assert documented - existing == set(), "documented, but no such command"
    assert existing - documented == set(), "commands missing from the README"


def test_readme_cli_table_names_the_options_of_each_verb():
    commands = existing_verbs()
    for verb, row in readme_verbs().items():
        named = set(re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", " ".join(row[:-1])))
        options = [p for p in commands[verb].params
                   if getattr(p, "param_type_name", "") == "option"]
        flags = {flag for p in options for flag in (*p.opts, *p.secondary_opts)}
        assert named - flags == set(), f"{verb}: documented options it does not have"
        for p in options:
            assert named & {*p.opts, *p.secondary_opts}, f"{verb}: {p.opts[0]} not documented"


# ---- (c) topics ---------------------------------------------------------------------------

PREFIX = "docs-check"


def placeholder_patterns() -> dict[str, str]:
    def one_of(values: Any) -> str:
        return "(?:" + "|".join(re.escape(str(v)) for v in values) + ")"

    return {
        "<p>": re.escape(PREFIX),
        "<agency>": one_of(a.value for a in Agency),
        "<arrondissement>": one_of(territory.arrondissement_ids()),
        "<group>": one_of(w.value for w in WorkingGroup),
        "<REFNIS>": one_of(territory.municipality_ids()),
    }


def topic_regex(documented: str) -> re.Pattern[str]:
    patterns = placeholder_patterns()
    parts = re.split(r"(<[^>]+>)", documented)
    for part in parts:
        assert not part.startswith("<") or part in patterns, f"unknown placeholder {part}"
    return re.compile("".join(patterns[p] if p.startswith("<") else re.escape(p)
                              for p in parts))


def existing_topics() -> set[str]:
    topics = Topics(PREFIX)
    names = set(topics.everything())
    names |= {getattr(topics, name) for name, member in vars(Topics).items()
              if isinstance(member, property)}
    return names


def test_operations_topic_table_matches_the_topics_of_the_bus():
    documented = {t: topic_regex(t) for t in keyed_rows(OPERATIONS, "## Topics")}
    existing = existing_topics()
    for topic in sorted(existing):
        matches = [t for t, rx in documented.items() if rx.fullmatch(topic)]
        assert len(matches) == 1, f"{topic} is matched by {matches} in docs/operations.md"
    for documented_topic, rx in documented.items():
        assert any(rx.fullmatch(t) for t in existing), f"{documented_topic}: no such topic"


# ---- (d) schemas --------------------------------------------------------------------------


def schema_files() -> set[str]:
    return {p.relative_to(AVRO_DIR).as_posix() for p in AVRO_DIR.rglob("*.avsc")}


def test_operations_names_every_schema_file_and_only_existing_ones():
    text = OPERATIONS.read_text(encoding="utf-8")
    named = {n.removeprefix("schemas/avro/")
             for n in re.findall(r"`([^`\s<>]+\.avsc)`", text)}
    assert named - schema_files() == set(), "named in docs/operations.md, but no such file"
    assert schema_files() - named == set(), "schema files missing from docs/operations.md"


def test_operations_message_table_gives_each_file_its_record_name():
    rows = keyed_rows(OPERATIONS, "## Messages")
    assert set(rows) == schema_files()
    for name, row in rows.items():
        record = json.loads((AVRO_DIR / name).read_text(encoding="utf-8"))["name"]
        assert first_code(row[1]) == record, f"{name} holds {record}"


# ---- (e) metrics --------------------------------------------------------------------------


def registered_metrics() -> dict[str, tuple[str, set[str]]]:
    """Exposed name -> (type, label names) of every metric of the bus and the store."""
    out: dict[str, tuple[str, set[str]]] = {}
    for make in (Metrics, StoreMetrics):
        registry = CollectorRegistry()
        holder = make(registry)
        families = {f.name: f.type for f in registry.collect()}
        wrappers = [m for m in vars(holder).values() if isinstance(m, MetricWrapperBase)]
        assert {getattr(m, "_name") for m in wrappers} == set(families)  # noqa: B009
        for m in wrappers:
            name = getattr(m, "_name")  # noqa: B009 - prometheus_client keeps it private
            kind = families[name]
            exposed = f"{name}_total" if kind == "counter" else name
            out[exposed] = (kind, set(getattr(m, "_labelnames")))  # noqa: B009
    return out


def documented_metrics() -> dict[str, tuple[str, set[str]]]:
    return {name: (row[1].strip(), set(re.findall(r"`([a-z_]+)`", row[2])))
            for name, row in keyed_rows(OPERATIONS, "## Metrics").items()}


def test_operations_metric_table_lists_every_metric_and_only_existing_ones():
    documented, registered = set(documented_metrics()), set(registered_metrics())
    assert documented - registered == set(), "documented, but not registered"
    assert registered - documented == set(), "metrics missing from docs/operations.md"


def test_operations_metric_table_gives_the_type_and_labels_of_each_metric():
    registered = registered_metrics()
    for name, (kind, labels) in documented_metrics().items():
        assert (kind, labels) == registered[name], name


def test_metric_names_in_the_docs_are_registered_metrics():
    registered = set(registered_metrics())
    for path in (README, *sorted(DOCS.glob("*.md"))):
        for name in re.findall(r"`(planr_[a-z0-9_]+)`", path.read_text(encoding="utf-8")):
            assert name in registered, f"{path.name}: {name} is not a metric"


# ---- (f) the repository stands alone ------------------------------------------------------

_SKIPPED_DIRS = {".git", ".venv", "__pycache__", ".mypy_cache", ".pytest_cache",
                 ".ruff_cache", ".hypothesis", ".planr", "build", "dist"}


def repository_files() -> Iterator[Path]:
    for top, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in _SKIPPED_DIRS and not d.endswith(".egg-info")]
        for name in files:
            yield Path(top) / name


def test_readme_is_at_most_150_lines():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES


def test_no_file_mentions_the_design_brief_outside_the_repository():
    brief = ("DESIGN" + ".md").encode()  # spelled in two parts so that this file passes
    offenders = []
    for path in repository_files():
        for number, line in enumerate(path.read_bytes().splitlines(), start=1):
            if brief in line:
                offenders.append(f"{path.relative_to(ROOT)}:{number}")
    assert not offenders, "mentioned in: " + ", ".join(offenders)


def _slug(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_slug(line.lstrip("#")) for line in path.read_text(encoding="utf-8").splitlines()
            if line.startswith("#")}


def test_links_in_the_readme_and_docs_point_to_files_and_headings_in_the_repository():
    for path in (README, *sorted(DOCS.glob("*.md"))):
        text = path.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+://", target):
                continue
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            assert linked.is_relative_to(ROOT), f"{path.name}: {target} leaves the repository"
            assert linked.exists(), f"{path.name}: {target} does not exist"
            if anchor:
                assert anchor in _anchors(linked), f"{path.name}: no heading for {target}"


def test_every_test_the_docs_cite_as_proof_exists():
    """A claim's proof (``tests/test_x.py::test_name``) names a test function that exists."""
    cited = 0
    for path in (README, *sorted(DOCS.glob("*.md"))):
        for file, name in re.findall(r"(tests/test_\w+\.py)::(test_\w+)", path.read_text("utf-8")):
            cited += 1
            source = (ROOT / file).read_text(encoding="utf-8")
            assert re.search(rf"^(async )?def {name}\(", source, re.MULTILINE), (
                f"{path.name} cites {file}::{name}, which does not exist")
    assert cited >= 20  # the trust model cites its proofs
