"""The fault proxy's API errors, with Toxiproxy 2.x's messages and status codes."""

from __future__ import annotations

import json


class ApiError(Exception):
    """An answer of the control API that is not a success: Toxiproxy's {"error", "status"}."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def body(self) -> bytes:
        # Toxiproxy writes these through Go's http.Error: the JSON, then a newline.
        return (json.dumps({"error": self.message, "status": self.status}) + "\n").encode()


PROXY_NOT_FOUND = ApiError("proxy not found", 404)
PROXY_EXISTS = ApiError("proxy already exists", 409)
TOXIC_NOT_FOUND = ApiError("toxic not found", 404)
TOXIC_EXISTS = ApiError("toxic already exists", 409)


def missing_field(name: str) -> ApiError:
    return ApiError(f"missing required field: {name}", 400)
