"""The outcome catalogue is the one home of outcome categories (issue 14): every wire enum value
has its entry, every entry its guide entry, and no code defines a category or its text elsewhere.

Pure: reads the catalogue, docs/user-guide.md and the source with ``ast``; starts nothing.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.errors import ExitCode
from sevvo.runtime import outcomes
from sevvo.runtime.outcomes import CATALOGUE, WIRES, Kind, Outcome

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "user-guide.md"
# Where outcomes are used: both sides, the command line, the dev stack and the shared runtime
# (generated protobuf code and the catalogue itself aside).
SCANNED = ("agent", "services", "cli", "devstack", "sevvo/runtime")
CATALOGUE_FILE = ROOT / "sevvo" / "runtime" / "outcomes.py"

_LOWER_SNAKE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
_KIND_WORDS = {
    Kind.CREDENTIAL_TEST: "credential test",
    Kind.PREVIEW: "preview",
    Kind.ROOT_ROTATION: "root rotation",
    Kind.SYNC: "sync",
    Kind.RUN: "any run",
}


# --- the catalogue and the wire enums ------------------------------------------------------


@pytest.mark.parametrize("wire", WIRES, ids=lambda w: w.kind.value)
def test_every_enum_value_has_exactly_one_catalogue_entry(wire: outcomes.Wire[int]) -> None:
    """Each value but UNSPECIFIED is the entry of its lower_snake name, for its kind, and back."""
    for enum_name, number in wire.enum_type.items():
        if number == 0:
            continue
        name = enum_name.removeprefix(wire.prefix).lower()
        entries = [o for o in CATALOGUE.values() if o.name == name and wire.kind in o.kinds]
        assert len(entries) == 1, f"{enum_name} has {len(entries)} catalogue entries"
        assert wire.outcome(number) is entries[0]
        assert wire.value(entries[0]) == number


@pytest.mark.parametrize("outcome", CATALOGUE.values(), ids=lambda o: o.name)
def test_every_entry_maps_to_an_enum_value_or_is_a_run_level_outcome(outcome: Outcome) -> None:
    """An entry's kinds are wire kinds whose enum names it, or the orchestrator's own endings."""
    wires = {wire.kind: wire for wire in WIRES}
    assert outcome.kinds
    for kind in outcome.kinds:
        if kind is Kind.RUN:
            assert outcome.kinds == {Kind.RUN}, "a run-level outcome is no agent's answer too"
            continue
        wire = wires[kind]
        enum_name = wire.prefix + outcome.name.upper()
        assert enum_name in wire.enum_type.keys(), f"{outcome.name} has no {enum_name}"  # noqa: SIM118


@pytest.mark.parametrize("outcome", CATALOGUE.values(), ids=lambda o: o.name)
def test_every_entry_says_what_happened_and_what_to_do(outcome: Outcome) -> None:
    """A lower_snake name; a message for every kind; a hint for every failure; a state and an
    exit code of the command line that agree with each other."""
    assert _LOWER_SNAKE.fullmatch(outcome.name)
    assert outcome.state in ("succeeded", "failed", "timed_out")
    assert outcome.exit_code in set(ExitCode)
    assert (outcome.exit_code == ExitCode.OK) == outcome.succeeded
    assert not (outcome.succeeded and outcome.retryable)
    for kind, wording in outcome.wordings.items():
        assert wording.message.strip(), (outcome.name, kind)
        assert bool(wording.hint) != outcome.succeeded, (outcome.name, kind)


def test_an_unknown_wire_value_reads_as_other() -> None:
    """A number from a newer agent, or UNSPECIFIED, is recorded as other, never dropped."""
    for wire in WIRES:
        assert wire.outcome(0) is outcomes.OTHER
        assert wire.name(9999) == "other"


# --- the guide -------------------------------------------------------------------------------


def _troubleshooting() -> str:
    text = GUIDE.read_text()
    start = text.index("## 3. Troubleshooting")
    return text[start : text.index("\n## ", start + 1)]


def _sections() -> dict[str, str]:
    """The troubleshooting section's ``### name`` subsections, by name."""
    parts = re.split(r"^### (.+)$", _troubleshooting(), flags=re.MULTILINE)
    return {name.strip(): body for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def _flat(markdown: str) -> str:
    """Quoted lines joined: a quote's line breaks and ``>`` marks are not part of its text."""
    return re.sub(r"\s+", " ", re.sub(r"\n> ", " ", markdown))


def table_row(outcome: Outcome) -> str:
    """The guide's table row for an entry: failures link to their section."""
    kinds = ", ".join(_KIND_WORDS[kind] for kind in Kind if kind in outcome.kinds)
    name = f"`{outcome.name}`" if outcome.succeeded else f"[`{outcome.name}`](#{outcome.name})"
    retry = "yes" if outcome.retryable else "no"
    return f"| {name} | {kinds} | {outcome.state} | {retry} | {outcome.exit_code} |"


def test_the_guide_table_lists_every_category_as_the_catalogue_has_it() -> None:
    """Row for row, in order: what each category ends, its state, retry and exit code."""
    rows = [line for line in _troubleshooting().splitlines() if line.startswith("| ")][1:]
    expected = [table_row(outcome) for outcome in CATALOGUE.values()]
    assert rows == expected, "the guide's table should read:\n" + "\n".join(expected)


@pytest.mark.parametrize(
    "outcome", [o for o in CATALOGUE.values() if not o.succeeded], ids=lambda o: o.name
)
def test_every_failure_has_a_guide_entry_quoting_its_message_and_hint(outcome: Outcome) -> None:
    """A ``### name`` section quotes ``message — hint`` for each kind the category ends."""
    sections = _sections()
    assert outcome.name in sections, f"docs/user-guide.md has no '### {outcome.name}'"
    flat = _flat(sections[outcome.name])
    for kind, wording in outcome.wordings.items():
        assert wording.sentence in flat, (outcome.name, kind, wording.sentence)


def test_the_guide_names_no_category_the_catalogue_does_not_know() -> None:
    """Every troubleshooting heading and table row is a catalogue entry."""
    named = set(_sections())
    named |= set(re.findall(r"^\| \[?`([a-z_0-9]+)`", _troubleshooting(), flags=re.MULTILINE))
    assert named, "no categories found in the guide"
    assert named <= set(CATALOGUE), sorted(named - set(CATALOGUE))


# --- no outcome defined outside the catalogue -------------------------------------------------


def _texts() -> list[str]:
    """Every message and hint of the catalogue long enough not to be a common phrase."""
    return sorted(
        {
            text
            for outcome in CATALOGUE.values()
            for wording in outcome.wordings.values()
            for text in (wording.message, wording.hint)
            if len(text) >= 20
        }
    )


def _named(node: ast.AST) -> str:
    """The last name of a callee or target (``a.b.c`` → ``c``), lower-cased."""
    if isinstance(node, ast.Name):
        return node.id.lower()
    if isinstance(node, ast.Attribute):
        return node.attr.lower()
    return ""


def _is_lookup_key(node: ast.Constant, parent: ast.AST) -> bool:
    """``x["category"]`` or ``x.get("category")``: a field's name, not a category."""
    if isinstance(parent, ast.Subscript):
        return True
    return (
        isinstance(parent, ast.Call)
        and _named(parent.func) in ("get", "pop", "setdefault")
        and bool(parent.args)
        and parent.args[0] is node
    )


def _category_context(chain: list[ast.AST]) -> bool:
    """Whether the innermost node of ``chain`` (root first) sits where a category goes: a
    ``category`` argument, a call of a category or outcome function, a comparison with a
    category, an assignment to one, or the return of a function named for categories."""
    for index in range(len(chain) - 2, -1, -1):
        ancestor, child = chain[index], chain[index + 1]
        if isinstance(ancestor, ast.keyword) and "category" in (ancestor.arg or ""):
            return True
        if isinstance(ancestor, ast.Call) and child is not ancestor.func:
            callee = _named(ancestor.func)
            if "category" in callee or "outcome" in callee:
                return True
        if isinstance(ancestor, ast.Compare):
            operands = [ancestor.left, *ancestor.comparators]
            others = [op for op in operands if op is not child]
            if any("category" in ast.unparse(op) for op in others):
                return True
        if isinstance(ancestor, (ast.Assign, ast.AnnAssign)):
            targets = ancestor.targets if isinstance(ancestor, ast.Assign) else [ancestor.target]
            if any("categor" in ast.unparse(t).lower() for t in targets):
                return True
        if isinstance(ancestor, ast.Return):
            functions = [n for n in chain[:index] if isinstance(n, ast.FunctionDef)]
            if functions and "category" in functions[-1].name:
                return True
        if isinstance(ancestor, ast.stmt):
            return False
    return False


def _table_name(chain: list[ast.AST]) -> str:
    """The name a dict literal is assigned to, if it is assigned at all."""
    for ancestor in reversed(chain):
        if isinstance(ancestor, ast.Assign):
            return " ".join(ast.unparse(t) for t in ancestor.targets)
        if isinstance(ancestor, ast.AnnAssign):
            return ast.unparse(ancestor.target)
        if isinstance(ancestor, ast.stmt):
            break
    return ""


def _walk(node: ast.AST, chain: list[ast.AST]) -> Iterator[list[ast.AST]]:
    chain = [*chain, node]
    yield chain
    for child in ast.iter_child_nodes(node):
        yield from _walk(child, chain)


_ENUM_MEMBER = re.compile(r"(?:TEST|PREVIEW|ROOT_ROTATION)_CATEGORY_[A-Z_]+")
_ENUM_PREFIX = re.compile(r"(?:TEST|PREVIEW|ROOT_ROTATION)_CATEGORY_")
_TABLE_NAME = re.compile(r"hint|message|categor", re.IGNORECASE)


def stray_outcomes(source: str, where: str = "<source>") -> list[str]:
    """What in ``source`` defines an outcome outside the catalogue, one line per finding.

    - a category name written as a string where a category goes (``category="agent_lost"``,
      ``run.outcome_category != "rotated"``, ``Outcome("timed_out", "agent_lost", …)``);
    - a table keyed by category (a dict keyed by a ``*_CATEGORY_*`` enum member, or one named
      for hints, messages or categories keyed by lower_snake names);
    - a category's name derived from an enum by hand (``removeprefix("TEST_CATEGORY_")``);
    - a catalogue message or hint copied into a string.
    """
    texts = _texts()
    found: list[str] = []
    for chain in _walk(ast.parse(source), []):
        node = chain[-1]
        line = f"{where}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Dict):
            keys = [k for k in node.keys if k is not None]
            if any(_ENUM_MEMBER.fullmatch(_named(k).upper()) for k in keys):
                found.append(f"{line}: a table keyed by category enum values")
            else:
                names = [
                    k.value
                    for k in keys
                    if isinstance(k, ast.Constant)
                    and isinstance(k.value, str)
                    and _LOWER_SNAKE.fullmatch(k.value)
                ]
                if any(name in CATALOGUE for name in names) or (
                    names and _TABLE_NAME.search(_table_name(chain))
                ):
                    found.append(f"{line}: a table keyed by category names")
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
            continue
        value = node.value
        if _ENUM_PREFIX.fullmatch(value):
            found.append(f"{line}: a category name derived from {value!r} by hand")
        elif (
            _LOWER_SNAKE.fullmatch(value)
            # An f-string's pieces and format specs are text, not names.
            and not isinstance(chain[-2], (ast.JoinedStr, ast.FormattedValue))
            and not _is_lookup_key(node, chain[-2])
            and _category_context(chain)
        ):
            found.append(f"{line}: {value!r} written where an outcome goes, not from the catalogue")
        for text in texts:
            if text in value or (len(value) >= 30 and value in text):
                found.append(f"{line}: catalogue text copied: {text[:50]!r}…")
                break
    return found


def _sources() -> Iterator[Path]:
    for folder in SCANNED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path != CATALOGUE_FILE:
                yield path


def test_no_code_defines_an_outcome_outside_the_catalogue() -> None:
    """Agent, services, command line, dev stack and runtime take categories and their texts
    from sevvo/runtime/outcomes.py; nothing else names, tabulates or words one."""
    paths = list(_sources())
    assert len(paths) > 50, "the scan found too few files to mean anything"
    found = [
        finding
        for path in paths
        for finding in stray_outcomes(path.read_text(), str(path.relative_to(ROOT)))
    ]
    assert found == [], "\n".join(found)


@pytest.mark.parametrize(
    "source",
    [
        'AGENT_LOST = Outcome("timed_out", "agent_lost", "the agent was lost")',
        'AGENT_LOST = run_outcome("agent_lost")',
        'raise CliError("failed", category="agent_lost")',
        'if run.outcome_category != "rotated":\n    pass',
        'if category in ("ok", "rotated"):\n    pass',
        'category = row.category or "other"',
        'def category_name(value):\n    return NAMES.get(value, "other")',
        'HINTS = {wpb.TEST_CATEGORY_OK: "connected"}',
        'RUN_HINTS = {"agent_lost": "the agent went away"}',
        'name = enum_name.removeprefix("PREVIEW_CATEGORY_").lower()',
        'message = "agent unavailable: no agent of this org is polling for work"',
        'HINT = "check that the org\'s agent is running and can reach the control plane"',
    ],
    ids=[
        "outcome-literals",
        "run-outcome-literal",
        "category-keyword",
        "compared-category",
        "category-in-tuple",
        "defaulted-category",
        "category-function-return",
        "enum-keyed-table",
        "name-keyed-table",
        "enum-prefix",
        "copied-message",
        "copied-hint-part",
    ],
)
def test_the_scan_finds_a_stray_outcome(source: str) -> None:
    """Each way of defining an outcome outside the catalogue is found (the scan can fail)."""
    assert stray_outcomes(source)


@pytest.mark.parametrize(
    "source",
    [
        'log.info("rotated", kid="k1")',
        'category = (details.metadata or {}).get("category") or None',
        'COLUMNS = [("last test", key("last_test_category"))]',
        'audit.record(conn, outcome="failure", reason="PREVIEW_RECEIPT_MISSING")',
        'if row.state == "timed_out":\n    pass',
        "name = outcomes.AGENT_BUSY.name",
    ],
    ids=["log-event", "metadata-key", "column-key", "audit-outcome", "run-state", "catalogue-use"],
)
def test_the_scan_leaves_other_strings_alone(source: str) -> None:
    """Log events, field names, audit outcomes and run states are not categories."""
    assert stray_outcomes(source) == []
