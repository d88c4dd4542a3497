"""The project as its users get it: one version number, docs that stand alone, a module map
that lists every module, and every invariant label the code cites defined in the docs."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version
from pathlib import Path

import taskmon

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "taskmon"
SHIPPED = ["src", "tests", "docs", "benchmarks", ".ci", "README.md", "noxfile.py", "pyproject.toml"]


def shipped_files() -> list[Path]:
    found: list[Path] = []
    for entry in SHIPPED:
        path = ROOT / entry
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        found += [f for f in files if "__pycache__" not in f.parts and f.suffix != ".pyc"]
    return found


def test_one_version_number_read_from_the_package_metadata() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert taskmon.__version__ == version("taskmon") == declared
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"__version__\s*=\s*['\"]\d+\.\d+", text), f"{path} sets it again"


def test_the_project_refers_to_nothing_outside_its_repository() -> None:
    # Built from pieces so this file does not find itself.
    outside = [re.escape("../" + "shared"), "BRIEF" + r"\.md", r"\bthe " + "brief" + r"\b"]
    for path in shipped_files():
        text = path.read_text(errors="replace")
        for pattern in outside:
            match = re.search(pattern, text, re.IGNORECASE)
            assert match is None, f"{path.relative_to(ROOT)} mentions {match[0]!r}"


def module_table() -> set[str]:
    """The first column of 'Every module' in docs/architecture.md (each `path` in it)."""
    doc = (ROOT / "docs" / "architecture.md").read_text()
    table = doc.split("### Every module", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    return {path for row in rows for path in re.findall(r"`([^`]+)`", row)}


def test_the_module_table_lists_every_module() -> None:
    listed = module_table()
    modules = sorted(p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py"))
    missing = [m for m in modules if m not in listed]
    assert not missing, f"docs/architecture.md, 'Every module', lacks {missing}"


def test_every_row_of_the_module_table_names_what_exists() -> None:
    stale = [entry for entry in module_table() if not list(SRC.glob(entry.rstrip("/")))]
    assert not stale, f"docs/architecture.md, 'Every module', names what is gone: {stale}"


def test_every_invariant_label_cited_is_defined() -> None:
    defined = set(re.findall(r"^## (I\d)\b", (ROOT / "docs" / "invariants.md").read_text(), re.M))
    assert defined == {f"I{n}" for n in range(1, 8)}
    cited: dict[str, set[str]] = {}
    for path in shipped_files():
        if path.suffix in {".py", ".md"}:
            for label in re.findall(r"\bI(\d+)\b", path.read_text()):
                cited.setdefault(f"I{label}", set()).add(str(path.relative_to(ROOT)))
    unknown = {label: files for label, files in cited.items() if label not in defined}
    assert not unknown, f"labels cited but not defined in docs/invariants.md: {unknown}"
