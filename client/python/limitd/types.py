"""Wire types of the limitd API as read-only dataclasses.

Fields the server adds in later versions are ignored, and missing optional
fields get neutral defaults, so an older client keeps working with a newer
server.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional

__all__ = ["Limit", "LeaseInfo", "Waiter", "parse_time"]

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))$"
)


def parse_time(value: Optional[str]) -> Optional[datetime.datetime]:
    """Parse an RFC 3339 time as the server writes it (nanoseconds, ``Z``).

    ``datetime.fromisoformat`` of Python 3.9 accepts neither ``Z`` nor more
    than six fractional digits, hence the regular expression. Fractions
    beyond microseconds are truncated. Returns an aware datetime, or
    ``None`` for an empty or missing value.
    """
    if not value:
        return None
    m = _RFC3339.match(value)
    if m is None:
        raise ValueError(f"not an RFC 3339 time: {value!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    micro = int((m.group(7) or "0")[:6].ljust(6, "0"))
    if m.group(8):
        tz = datetime.timezone.utc
    else:
        offset = datetime.timedelta(hours=int(m.group(10)), minutes=int(m.group(11)))
        tz = datetime.timezone(offset if m.group(9) == "+" else -offset)
    # Leap seconds (":60") do not exist in datetime; the next instant is close enough.
    extra = datetime.timedelta(0)
    if second == 60:
        second, extra = 59, datetime.timedelta(seconds=1)
    return datetime.datetime(year, month, day, hour, minute, second, micro, tzinfo=tz) + extra


def _time(doc: Mapping[str, Any], key: str) -> Optional[datetime.datetime]:
    return parse_time(doc.get(key))


@dataclass(frozen=True)
class Limit:
    """A named concurrency limit as the server shows it.

    Attributes:
        name: the limit's name.
        capacity: how many slots may be held at once (0 pauses the limit).
        in_use: slots held by live leases right now.
        waiting: acquires queued right now.
        default_ttl_seconds: the TTL of leases that ask for none.
        description: free text set by whoever created the limit.
        created_at: when the limit was first created (UTC).
        updated_at: when it was last replaced (UTC).
    """

    name: str
    capacity: int
    in_use: int = 0
    waiting: int = 0
    default_ttl_seconds: float = 60.0
    description: str = ""
    created_at: Optional[datetime.datetime] = None
    updated_at: Optional[datetime.datetime] = None

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> "Limit":
        """Build a Limit from the server's JSON object."""
        return cls(
            name=str(doc["name"]),
            capacity=int(doc["capacity"]),
            in_use=int(doc.get("in_use", 0)),
            waiting=int(doc.get("waiting", 0)),
            default_ttl_seconds=float(doc.get("default_ttl_seconds", 60.0)),
            description=str(doc.get("description") or ""),
            created_at=_time(doc, "created_at"),
            updated_at=_time(doc, "updated_at"),
        )


@dataclass(frozen=True)
class LeaseInfo:
    """A lease as the server shows it (a snapshot, not a held lease).

    Attributes:
        id: the lease id (a 26-character ULID).
        limit: the name of the leased limit.
        slots: how many slots it holds.
        holder: who holds it (free text, ``host/pid-N`` by default).
        fence: the grant's fencing token, larger than every earlier grant's.
        acquired_at: when it was granted (server clock, UTC).
        expires_at: when it expires unless renewed (server clock, UTC).
        ttl_seconds: its time to live; a renewal moves ``expires_at`` to now plus this.
    """

    id: str
    limit: str
    slots: int = 1
    holder: str = ""
    fence: int = 0
    acquired_at: Optional[datetime.datetime] = None
    expires_at: Optional[datetime.datetime] = None
    ttl_seconds: float = 0.0

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> "LeaseInfo":
        """Build a LeaseInfo from the server's JSON object."""
        return cls(
            id=str(doc["id"]),
            limit=str(doc.get("limit", "")),
            slots=int(doc.get("slots", 1)),
            holder=str(doc.get("holder") or ""),
            fence=int(doc.get("fence", 0)),
            acquired_at=_time(doc, "acquired_at"),
            expires_at=_time(doc, "expires_at"),
            ttl_seconds=float(doc.get("ttl_seconds", 0.0)),
        )


@dataclass(frozen=True)
class Waiter:
    """An acquire queued on a limit.

    Attributes:
        position: its place in the queue, 1 at the head.
        slots: how many slots it asks for.
        holder: who asks.
        waiting_since: when it arrived (UTC).
        waiting_seconds: how long it had waited when the queue was read.
    """

    position: int
    slots: int = 1
    holder: str = ""
    waiting_since: Optional[datetime.datetime] = None
    waiting_seconds: float = 0.0

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> "Waiter":
        """Build a Waiter from the server's JSON object."""
        return cls(
            position=int(doc.get("position", 0)),
            slots=int(doc.get("slots", 1)),
            holder=str(doc.get("holder") or ""),
            waiting_since=_time(doc, "waiting_since"),
            waiting_seconds=float(doc.get("waiting_seconds", 0.0)),
        )
