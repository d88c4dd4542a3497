"""The operator guides say what the code does: every log line they quote is one the code can
write, and every TASKMON_ variable the code reads is in docs/deployment.md (and nothing there
is a variable no code reads).

A guide quotes a log line in a fenced block whose info string is `log`, one message per line,
the variable parts written as `…` and an optional `LEVEL logger.name: ` prefix. A quoted line
matches a string the code holds when its fixed parts appear in that string, in order, each
inside one literal stretch (between two placeholders: `%s`, `%d`, `{...}` of an f-string).
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

from taskmon.config import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "taskmon"
GUIDES = sorted((ROOT / "docs").glob("*.md"))
DEPLOYMENT = ROOT / "docs" / "deployment.md"
# The code that reads TASKMON_ variables: the service, and the harness users run.
READERS = [SRC, ROOT / "loadtests", ROOT / "chaos", ROOT / "benchmarks"]

HOLE = "\0"
_PERCENT = re.compile(r"%(\([^)]*\))?[-#0 +]*\d*(\.\d+)?[sdrifgxa]")
_LOG_BLOCK = re.compile(r"^```log\n(.*?)^```", re.MULTILINE | re.DOTALL)
_PREFIX = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")
_VARIABLE = re.compile(r"\bTASKMON_[A-Z0-9_]*[A-Z0-9]\b")


def _template(node: ast.AST) -> str | None:
    """A string literal with its placeholders as HOLE, or None for any other node."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return _PERCENT.sub(HOLE, node.value)
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            literal = _template(value) if isinstance(value, ast.Constant) else HOLE
            parts.append(literal or "")
        return "".join(parts)
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def code_templates(logger: str | None = None) -> tuple[str, ...]:
    """The string literals of src/taskmon, or of the module a `taskmon.` logger names."""
    found: list[str] = []
    for path in sorted(SRC.rglob("*.py")):
        if logger is not None and logger.startswith("taskmon") and module_name(path) != logger:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            template = _template(node)
            if template and len(template.replace(HOLE, "")) >= 4:
                found.append(template)
    return tuple(found)


def quoted_log_lines() -> list[tuple[str, str | None, str]]:
    """(guide, logger or None, line) for every line of every ```log block in docs/."""
    quoted = []
    for guide in GUIDES:
        for block in _LOG_BLOCK.findall(guide.read_text()):
            for line in block.splitlines():
                if line.strip():
                    prefix = _PREFIX.match(line.strip())
                    logger = prefix.group(0).split()[1].rstrip(":") if prefix else None
                    quoted.append((guide.name, logger, _PREFIX.sub("", line.strip())))
    return quoted


def matches(quoted: str, template: str) -> bool:
    fragments = [part.strip() for part in quoted.split("…") if part.strip()]
    segments = template.split(HOLE)
    index, offset = 0, 0
    for fragment in fragments:
        while index < len(segments):
            found = segments[index].find(fragment, offset)
            if found >= 0:
                offset = found + len(fragment)
                break
            index, offset = index + 1, 0
        else:
            return False
    return bool(fragments)


def test_the_matcher_takes_fixed_parts_in_order_each_inside_one_literal_stretch() -> None:
    template = _PERCENT.sub(HOLE, "Redis at %s stopped answering (%s): this worker runs degraded")
    assert matches("Redis at … stopped answering (…): this worker runs degraded", template)
    assert matches("stopped answering", template)
    assert not matches("this worker runs degraded … stopped answering", template)
    assert not matches("Redis at redis://x stopped answering", template)  # a value, not …
    assert not matches("", template)


def test_the_guides_quote_log_lines() -> None:
    # Without any, the test below would pass by finding nothing to check.
    guides = {guide for guide, _, _ in quoted_log_lines()}
    assert {"troubleshooting.md", "deployment.md"} <= guides
    assert any(logger for _, logger, _ in quoted_log_lines())


@pytest.mark.parametrize(("guide", "logger", "line"), quoted_log_lines())
def test_every_log_line_a_guide_quotes_is_one_the_code_writes(
    guide: str, logger: str | None, line: str
) -> None:
    # A `taskmon.` logger named before the line must be the module that holds its text.
    assert any(matches(line, template) for template in code_templates(logger)), (
        f"docs/{guide} quotes a log line no string in {logger or 'src/taskmon'} can produce: "
        f"{line!r}"
    )


def variables_read() -> set[str]:
    names = {ENV_PREFIX + field.upper() for field in Settings.model_fields}
    for root in READERS:
        for path in root.rglob("*.py"):
            names |= set(_VARIABLE.findall(path.read_text()))
    # The tests name many variables as test data; only their own TASKMON_TEST_ ones are read.
    for path in (ROOT / "tests").rglob("*.py"):
        names |= {n for n in _VARIABLE.findall(path.read_text()) if n.startswith("TASKMON_TEST_")}
    return names


def test_every_variable_the_code_reads_is_in_the_deployment_guide() -> None:
    documented = set(re.findall(r"`(TASKMON_[A-Z0-9_]+)`", DEPLOYMENT.read_text()))
    missing = sorted(variables_read() - documented)
    assert not missing, f"docs/deployment.md does not describe {missing}"


def test_the_deployment_guide_names_no_variable_that_no_code_reads() -> None:
    named = set(_VARIABLE.findall(DEPLOYMENT.read_text()))
    unknown = sorted(named - variables_read())
    assert not unknown, f"docs/deployment.md names variables no code reads: {unknown}"


def test_every_link_between_the_docs_reaches_a_file() -> None:
    broken = []
    for page in [ROOT / "README.md", *GUIDES]:
        for target in re.findall(r"\]\(([^)#:\s]+\.(?:md|png))(?:#[^)]*)?\)", page.read_text()):
            if not (page.parent / target).is_file():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, f"links to files that do not exist: {broken}"
