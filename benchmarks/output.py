"""What every suite does with its result: print its table, and write it as JSON (NaN as null)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def json_safe(value: Any) -> Any:
    """`value` with every NaN as None, so the document is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def write_json(path: Path, document: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_safe(document), indent=2) + "\n")


def report(text: str, result: Any, out: Path | None) -> int:
    """Print a suite's table; write its result to `out` when asked. The suite's exit code."""
    print(text)
    if out is not None:
        write_json(out, result)
    return 0
