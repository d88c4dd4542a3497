"""Toxics as Toxiproxy 2.x defines them: their types, attributes, defaults and JSON.

Pure data and validation; what a toxic does to a connection is in links.py. A toxic's JSON is
Toxiproxy's (`name`, `type`, `stream`, `toxicity`, `attributes`) plus two fields of ours that
Toxiproxy clients ignore: `stats` (how many connections the toxic met, hit and missed, the
proof that it was applied) and `duration` (ms; the toxic removes itself when it ends).

Two types are ours alone, for a proxy in front of an HTTP/1.1 service (Toxiproxy has none, and
answers 400 to them): `http_error` answers an error of its own, with the header
`X-Fault-Injected: <toxic name>` and `Connection: close`, on stream `upstream` instead of
forwarding the request (the service never sees it), on `downstream` in place of the service's
answer (the service acted; its answer is lost, and `X-Fault-Replaced` gives its status);
`slow_headers` holds back the first bytes of each request (`upstream`) or of each answer
(`downstream`) for `delay` ms.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from taskmon.faultproxy.errors import ApiError

# Every attribute is an integer, like Toxiproxy's; unknown attributes are ignored, as there.
TOXIC_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "latency": ("latency", "jitter"),  # ms added to each chunk, +/- jitter
    "bandwidth": ("rate",),  # KB/s; 0 lets nothing through
    "slow_close": ("delay",),  # ms between the peer's close and ours
    "timeout": ("timeout",),  # drop all data; close after timeout ms (0: never)
    "reset_peer": ("timeout",),  # TCP RST after timeout ms (0: at once)
    "limit_data": ("bytes",),  # close once this many bytes have passed
    "slicer": ("average_size", "size_variation", "delay"),  # split chunks; delay in us
    "http_error": ("status",),  # ours: an HTTP error answer (default 503), then close
    "slow_headers": ("delay",),  # ours: ms before each request's or answer's first bytes
}
HTTP_TOXICS = ("http_error", "slow_headers")
STREAMS = ("upstream", "downstream")


@dataclass
class ToxicStats:
    """How many connections met this toxic, and how many it applies to (its toxicity roll)."""

    met: int = 0
    hit: int = 0

    def as_json(self) -> dict[str, int]:
        return {
            "connections_met": self.met,
            "connections_hit": self.hit,
            "missed": self.met - self.hit,
        }


@dataclass
class Toxic:
    name: str
    type: str
    stream: str
    toxicity: float
    attributes: dict[str, int]
    duration_ms: int | None = None
    stats: ToxicStats = field(default_factory=ToxicStats)

    def roll(self, rng: random.Random) -> bool:
        """Whether this toxic applies to a connection it meets; toxicity 0 never does."""
        self.stats.met += 1
        hit = self.toxicity >= 1.0 or rng.random() < self.toxicity
        self.stats.hit += hit
        return hit

    def attr(self, name: str) -> int:
        return self.attributes.get(name, 0)

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "attributes": dict(self.attributes),
            "name": self.name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": self.toxicity,
            "stats": self.stats.as_json(),
        }
        if self.duration_ms is not None:
            body["duration"] = self.duration_ms
        return body


def bad_body(detail: str) -> ApiError:
    return ApiError(f"bad request body: {detail}", 400)


def parse_toxic(body: object) -> Toxic:
    """A new toxic from a create request, with Toxiproxy's defaults and errors."""
    if not isinstance(body, dict):
        raise bad_body("json: cannot unmarshal into a toxic")
    stream = body.get("stream", "downstream")
    if stream not in STREAMS:
        raise ApiError("stream was invalid, can be either upstream or downstream", 400)
    kind = body.get("type")
    if kind not in TOXIC_ATTRIBUTES:
        raise ApiError("invalid toxic type", 400)
    name = body.get("name") or f"{kind}_{stream}"
    if not isinstance(name, str):
        raise bad_body("name must be a string")
    duration = body.get("duration")
    if duration is not None and (not _is_int(duration) or duration <= 0):
        raise bad_body("duration must be a positive number of milliseconds")
    return Toxic(
        name=name,
        type=kind,
        stream=stream,
        toxicity=parse_toxicity(body.get("toxicity", 1.0)),
        attributes=parse_attributes(kind, body.get("attributes") or {}),
        duration_ms=duration,
    )


def update_toxic(toxic: Toxic, body: object) -> None:
    """Toxiproxy's update: attributes and toxicity change; name, type and stream do not."""
    if not isinstance(body, dict):
        raise bad_body("json: cannot unmarshal into a toxic")
    attributes = parse_attributes(toxic.type, body.get("attributes") or {})
    toxicity = parse_toxicity(body.get("toxicity", toxic.toxicity))
    toxic.attributes = {**toxic.attributes, **attributes}
    toxic.toxicity = toxicity


def parse_toxicity(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise bad_body("toxicity must be a number from 0.0 to 1.0")
    return float(value)


def parse_attributes(kind: str, attributes: object) -> dict[str, int]:
    if not isinstance(attributes, dict):
        raise bad_body("attributes must be an object")
    parsed: dict[str, int] = {}
    for name in TOXIC_ATTRIBUTES[kind]:
        if name in attributes:
            value = attributes[name]
            if not _is_int(value) or value < 0:
                raise bad_body(f"attribute {name} must be a non-negative integer")
            parsed[name] = value
    status = parsed.get("status")
    if kind == "http_error" and status is not None and not 400 <= status <= 599:
        raise bad_body("attribute status must be an HTTP error status, 400 to 599")
    return parsed


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
