"""Exceptions of the limitd client.

Every error the server answers is an ``application/problem+json`` body with a
stable ``code``; the client raises the subclass of :class:`LimitdError` named
after that code, so callers branch on classes (``except limitd.NoSlots``)
rather than on HTTP statuses. Codes the client does not know yet (a newer
server) raise the class of their HTTP status family, or :class:`LimitdError`.

Three errors do not come from a problem body: :class:`Timeout` (an acquire's
``wait`` elapsed without a slot), :class:`LeaseLost` (a held lease was taken
away) and :class:`Unreachable` (the server could not be reached).
"""

from __future__ import annotations

import datetime
import json
from email.utils import parsedate_to_datetime
from typing import Dict, Mapping, Optional, Type

__all__ = [
    "LimitdError",
    "InvalidRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "LimitNotFound",
    "LeaseNotFound",
    "MethodNotAllowed",
    "Conflict",
    "SlotsExceedCapacity",
    "Superseded",
    "BodyTooLarge",
    "NoSlots",
    "ServiceUnavailable",
    "QueueFull",
    "ShuttingDown",
    "Starting",
    "StoreUnavailable",
    "InternalError",
    "Timeout",
    "LeaseLost",
    "Unreachable",
    "error_from_response",
]


class LimitdError(Exception):
    """Base class of every error the client raises.

    Attributes:
        code: the stable problem code (``"limit_not_found"``, ...), or a
            client-side code (``"timeout"``, ``"lease_lost"``,
            ``"unreachable"``).
        status: the HTTP status of the answer, or ``None`` when there was no
            answer.
        detail: the human-readable explanation (the problem's ``detail``).
        retry_after: seconds from the answer's ``Retry-After`` header, or
            ``None`` when it had none.
    """

    #: The code that instances of this class carry unless told otherwise.
    default_code = "error"

    def __init__(
        self,
        detail: str,
        *,
        code: Optional[str] = None,
        status: Optional[int] = None,
        retry_after: Optional[float] = None,
    ) -> None:
        super().__init__(detail)
        self.code: str = code or self.default_code
        self.status: Optional[int] = status
        self.detail: str = detail
        self.retry_after: Optional[float] = retry_after

    def __str__(self) -> str:
        if self.status is not None:
            return f"{self.code} ({self.status}): {self.detail}"
        return f"{self.code}: {self.detail}"


class InvalidRequest(LimitdError):
    """400: malformed JSON, an unknown field, a bad name or a value out of range."""

    default_code = "invalid_request"


class Unauthorized(LimitdError):
    """401: no token or an unknown token while authentication is enabled."""

    default_code = "unauthorized"


class Forbidden(LimitdError):
    """403: the token's scope or pattern does not allow the request."""

    default_code = "forbidden"


class NotFound(LimitdError):
    """404: the base of the not-found errors; as itself, a path the API lacks."""

    default_code = "not_found"


class LimitNotFound(NotFound):
    """404: the limit does not exist (or was deleted)."""

    default_code = "limit_not_found"


class LeaseNotFound(NotFound):
    """404: the lease does not exist: released, expired or deleted with its limit."""

    default_code = "lease_not_found"


class MethodNotAllowed(LimitdError):
    """405: the path exists but not with this method."""

    default_code = "method_not_allowed"


class Conflict(LimitdError):
    """409: the base of the conflict errors."""

    default_code = "conflict"


class SlotsExceedCapacity(Conflict):
    """409: more slots were asked for than the limit's capacity; it could never be granted."""

    default_code = "slots_exceed_capacity"


class Superseded(Conflict):
    """409: a newer acquire with the same Idempotency-Key took this waiter's place."""

    default_code = "superseded"


class BodyTooLarge(LimitdError):
    """413: the request body is over the server's limit."""

    default_code = "body_too_large"


class NoSlots(LimitdError):
    """423: no slot became free within the request's ``wait_seconds``.

    :meth:`limitd.Client.acquire` never raises it: it asks again, and raises
    :class:`Timeout` when its own ``wait`` is over.
    """

    default_code = "no_slots"


class ServiceUnavailable(LimitdError):
    """503: the base of the "not now" errors; acquire and release retry them."""

    default_code = "unavailable"


class QueueFull(ServiceUnavailable):
    """503: the limit's waiter queue is at its bound."""

    default_code = "queue_full"


class ShuttingDown(ServiceUnavailable):
    """503: the server is draining before it stops."""

    default_code = "shutting_down"


class Starting(ServiceUnavailable):
    """503: the server has not loaded its state yet."""

    default_code = "starting"


class StoreUnavailable(ServiceUnavailable):
    """503: the server could not commit to its database."""

    default_code = "store_unavailable"


class InternalError(LimitdError):
    """500: the server failed; its log has the details."""

    default_code = "internal"


class Timeout(LimitdError, TimeoutError):
    """An acquire's ``wait`` elapsed without a slot.

    When the last attempt failed for another reason (the server was
    unreachable, or answered 503), that error is the ``__cause__``.
    """

    default_code = "timeout"


class LeaseLost(LimitdError):
    """A held lease was taken away before it was released.

    The server answered 404 to a renewal (an admin deleted the lease or its
    limit, or it expired), or the server could not be reached to renew it
    before it expired. Raised by a lease's ``with`` block and by the
    decorators once the protected code has returned.
    """

    default_code = "lease_lost"


class Unreachable(LimitdError, ConnectionError):
    """The server could not be reached, or the connection broke mid-answer.

    The underlying ``OSError`` or ``http.client.HTTPException`` is the
    ``__cause__``.
    """

    default_code = "unreachable"


_BY_CODE: Mapping[str, Type[LimitdError]] = {
    cls.default_code: cls
    for cls in (
        InvalidRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        LimitNotFound,
        LeaseNotFound,
        MethodNotAllowed,
        SlotsExceedCapacity,
        Superseded,
        BodyTooLarge,
        NoSlots,
        QueueFull,
        ShuttingDown,
        Starting,
        StoreUnavailable,
        InternalError,
    )
}

# Codes a newer server may add still land in the right family.
_BY_STATUS: Mapping[int, Type[LimitdError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    413: BodyTooLarge,
    423: NoSlots,
    500: InternalError,
    503: ServiceUnavailable,
}


def error_from_response(
    status: int, body: bytes, headers: Optional[Mapping[str, str]] = None
) -> LimitdError:
    """Build the exception for an error answer.

    ``body`` is expected to be a problem+json document; anything else (a
    proxy's HTML page) still gives an exception of the status's family with
    the start of the body as its detail. ``headers`` are the answer's
    headers with lower-case names.
    """
    headers = headers or {}
    code: Optional[str] = None
    detail = ""
    try:
        doc = json.loads(body.decode("utf-8")) if body else None
    except (UnicodeDecodeError, ValueError):
        doc = None
    if isinstance(doc, dict):
        if isinstance(doc.get("code"), str):
            code = doc["code"]
        detail = str(doc.get("detail") or doc.get("title") or "")
    if not detail:
        detail = body[:200].decode("utf-8", "replace").strip() or f"HTTP {status}"
    cls = _BY_CODE.get(code or "") or _BY_STATUS.get(status)
    if cls is None:
        cls = ServiceUnavailable if status in (502, 504) else LimitdError
    return cls(
        detail,
        code=code or f"http_{status}",
        status=status,
        retry_after=parse_retry_after(headers.get("retry-after")),
    )


def parse_retry_after(value: Optional[str]) -> Optional[float]:
    """Parse a Retry-After header: delta-seconds or an HTTP date, capped at an hour."""
    if value is None:
        return None
    value = value.strip()
    try:
        return float(min(max(int(value), 0), 3600))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    delta = (when - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
    return min(max(delta, 0.0), 3600.0)


def _classes() -> Dict[str, Type[LimitdError]]:
    """The code → class table (for tests and documentation)."""
    return dict(_BY_CODE)
