"""How a view reaches the wired services: the one object create_app stored on the app."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import current_app

if TYPE_CHECKING:
    from taskmon.app import Runtime


def runtime() -> Runtime:
    return current_app.extensions["taskmon"]  # type: ignore[no-any-return]
