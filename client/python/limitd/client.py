"""The limitd client: acquire slots with long-polls, admin calls."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.client
import inspect
import json
import logging
import os
import random
import socket
import ssl
import time
import urllib.parse
import uuid
import weakref
from types import TracebackType
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Type, TypeVar, cast

from ._http import Transport
from .errors import (
    LimitdError,
    NoSlots,
    ServiceUnavailable,
    Timeout,
    Unreachable,
    error_from_response,
)
from .lease import Lease
from .types import LeaseInfo, Limit, Waiter

__all__ = ["Client", "DEFAULT_URL", "default_holder"]

log = logging.getLogger("limitd")

#: The server a Client talks to when given no url and LIMITD_URL is unset.
DEFAULT_URL = "http://127.0.0.1:7070"

# Seconds. A 423 that answers a longer poll sooner than this is a spin, not
# a long-poll: no server that waits answers so soon, only one that holds no
# long-polls (a maximum wait of about 0) or a proxy answering for it. Far
# below the maximum wait any server is run with, above a round trip on a
# local network; across a slower link the round trip itself bounds the rate.
_SPIN_THRESHOLD = 0.05

F = TypeVar("F", bound=Callable[..., Any])

_VERSION = "0.1.0"


def default_holder() -> str:
    """The holder name sent when none is given: ``host/pid-N`` of this process."""
    try:
        host = socket.gethostname() or "unknown-host"
    except OSError:
        host = "unknown-host"
    return f"{host}/pid-{os.getpid()}"


class Client:
    """A client of one limitd server, safe to share between threads.

    Args:
        url: the server's base URL, e.g. ``"http://127.0.0.1:7070"`` (a path
            prefix such as ``"https://gw/limitd"`` is kept). ``None`` reads
            ``LIMITD_URL`` and falls back to :data:`DEFAULT_URL`.
        token: a bearer token for servers with authentication enabled.
            ``None`` reads ``LIMITD_TOKEN``; an empty string sends none.
        holder: the holder name shown on leases and waiters. ``None`` means
            ``host/pid-N`` of the calling process.
        timeout: seconds to wait for the answer of an ordinary request (an
            acquire's long-poll gets its wait plus ``poll_grace`` instead).
        max_poll: the longest ``wait_seconds`` of one long-poll; a longer
            acquire is a loop of long-polls (the server clamps to its own
            maximum as well).
        poll_grace: how much longer than its ``wait_seconds`` a long-poll
            may take before the connection counts as dead. The server
            answers within ``wait_seconds`` plus a second.
        min_backoff, max_backoff: bounds of the randomized pause between
            retries of network errors and 503 answers.
        ssl_context: for ``https://`` URLs: an ``ssl.SSLContext`` (custom CA,
            client certificate for mutual TLS). ``None`` uses the system's
            default verification.
        max_idle: how many idle keep-alive connections to keep.

    Connections are pooled and reused (HTTP keep-alive). After ``os.fork``
    the child opens its own. :meth:`close` closes the idle ones; a closed
    client still works, reopening connections when needed.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        token: Optional[str] = None,
        holder: Optional[str] = None,
        timeout: float = 10.0,
        *,
        max_poll: float = 60.0,
        poll_grace: float = 10.0,
        min_backoff: float = 0.1,
        max_backoff: float = 5.0,
        ssl_context: Optional[ssl.SSLContext] = None,
        max_idle: int = 16,
    ) -> None:
        if url is None:
            url = os.environ.get("LIMITD_URL") or DEFAULT_URL
        if token is None:
            token = os.environ.get("LIMITD_TOKEN") or None
        if timeout <= 0 or max_poll <= 0 or poll_grace <= 0:
            raise ValueError("limitd: timeout, max_poll and poll_grace must be positive")
        if min_backoff <= 0 or max_backoff < min_backoff:
            raise ValueError("limitd: need 0 < min_backoff <= max_backoff")
        self.url: str = url.rstrip("/")
        self.holder: Optional[str] = holder
        self.timeout: float = float(timeout)
        self.max_poll: float = float(max_poll)
        self.poll_grace: float = float(poll_grace)
        self.min_backoff: float = float(min_backoff)
        self.max_backoff: float = float(max_backoff)
        self._token = token or None
        self._transport = Transport(url, connect_timeout=self.timeout, ssl_context=ssl_context, max_idle=max_idle)
        # A client dropped without close() should not leave sockets to the GC.
        weakref.finalize(self, self._transport.close)

    def __repr__(self) -> str:
        return f"<limitd.Client {self.url}>"

    def close(self) -> None:
        """Close the idle connections. Leases keep renewing over new ones."""
        self._transport.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        body: Optional[Mapping[str, Any]] = None,
        *,
        headers: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
    ) -> Any:
        """Send one request; return the decoded JSON answer (None for 204).

        Raises the LimitdError subclass of an error answer, or Unreachable
        when no answer arrived.
        """
        hdrs: Dict[str, str] = {
            "Accept": "application/json",
            "User-Agent": f"limitd-python/{_VERSION}",
        }
        data: Optional[bytes] = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode("utf-8")
            hdrs["Content-Type"] = "application/json"
        elif method in ("POST", "PUT"):
            data = b""
        if self._token:
            hdrs["Authorization"] = f"Bearer {self._token}"
        if headers:
            hdrs.update(headers)
        try:
            resp = self._transport.request(
                method, path, body=data, headers=hdrs, timeout=self.timeout if timeout is None else timeout
            )
        except (OSError, http.client.HTTPException) as e:
            raise Unreachable(f"{method} {self.url}{path}: {e.__class__.__name__}: {e}") from e
        if resp.status >= 400:
            raise error_from_response(resp.status, resp.body, resp.headers)
        if resp.status == 204 or not resp.body:
            return None
        try:
            return json.loads(resp.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise LimitdError(
                f"{method} {path}: answer {resp.status} is not JSON: {resp.body[:200]!r}",
                code="bad_response",
                status=resp.status,
            ) from e

    def _backoff(self, n: int, retry_after: Optional[float]) -> float:
        """The pause before retry number n (from 1).

        Retry-After plus "full jitter": a random part up to
        min(max_backoff, min_backoff * 2**(n-1)), which spreads out the
        clients that all lost the server at the same moment.
        """
        bound = self.max_backoff if n > 30 else min(self.max_backoff, self.min_backoff * (2 ** (n - 1)))
        return (retry_after or 0.0) + random.uniform(0.0, bound)

    @staticmethod
    def _pause(seconds: float, deadline: Optional[float]) -> None:
        """Sleep, but never past the acquire's deadline so the last poll still goes out."""
        if deadline is not None:
            seconds = min(seconds, deadline - time.monotonic())
        if seconds > 0:
            time.sleep(seconds)

    # -- leases ------------------------------------------------------------------

    def acquire(
        self,
        limit: str,
        slots: int = 1,
        ttl: Optional[float] = 60.0,
        wait: Optional[float] = None,
        *,
        holder: Optional[str] = None,
        idempotency_key: Optional[str] = None,
    ) -> Lease:
        """Take ``slots`` slots of ``limit``, waiting until they are free.

        Args:
            limit: the limit's name.
            slots: how many slots to take.
            ttl: the lease's time to live in seconds; it renews itself every
                third of it, so a worker that dies holds its slots at most
                this long. ``None`` uses the limit's default TTL.
            wait: seconds to wait for the slots in total, across long-polls
                and retries; :class:`Timeout` is raised after it. ``None``
                waits forever; ``0`` tries once.
            holder: the holder name for this lease (default: the client's).
            idempotency_key: the Idempotency-Key of the request. A random
                one is made by default; pass your own to make a retry from
                another process (a restarted job) idempotent too.

        Returns:
            A :class:`Lease` that renews itself until released; use it as a
            context manager.

        The wait is a loop of long-polls of at most ``max_poll`` seconds; a
        poll that ends without a slot (423) is followed by the next one at
        once, so the request keeps its turn in the server's FIFO queue as
        closely as a long-poll can. That holds also when the server's
        maximum wait is shorter than ``max_poll`` (its 423 then comes after
        that maximum). The one exception is a spin: a 423 that comes back
        within 50 ms of a longer poll, from a server that holds no
        long-polls. Then the client pauses for a jittered backoff that grows
        with each consecutive spin, up to ``max_backoff``, instead of asking
        again in a hot loop. Network errors and 503 answers (queue full,
        server restarting) are retried with capped exponential backoff and
        full jitter, honouring Retry-After. Every request of one acquire
        carries the same Idempotency-Key, so a grant whose answer was lost
        is returned by the retry instead of taking a second lease.

        Raises:
            Timeout: ``wait`` elapsed (the last other error is its cause).
            LimitNotFound, SlotsExceedCapacity, InvalidRequest, Forbidden, ...:
                answers that retrying cannot change.
        """
        if wait is not None and wait < 0:
            raise ValueError("limitd: wait must be None (forever) or a number of seconds >= 0")
        key = idempotency_key or uuid.uuid4().hex
        body: Dict[str, Any] = {"slots": slots, "holder": holder or self.holder or default_holder()}
        if ttl is not None:
            body["ttl_seconds"] = ttl
        path = "/v1/limits/" + urllib.parse.quote(limit, safe="") + "/acquire"
        hdrs = {"Idempotency-Key": key}
        deadline = None if wait is None else time.monotonic() + wait
        failures = 0
        spins = 0  # consecutive 423s that came back too soon to have waited
        while True:
            poll = self.max_poll
            if deadline is not None:
                poll = max(min(poll, deadline - time.monotonic()), 0.0)
            # Rounded down to milliseconds so the poll never outlasts the deadline.
            body["wait_seconds"] = int(poll * 1000) / 1000
            sent = time.monotonic()
            try:
                doc = self._call("POST", path, body, headers=hdrs, timeout=poll + self.poll_grace)
            except NoSlots as e:
                if deadline is not None and time.monotonic() >= deadline:
                    raise Timeout(f"no slot of {limit!r} within {wait} s", status=e.status) from e
                failures = 0
                pause = e.retry_after or 0.0
                # Only a true spin backs off. A 423 after the server's own
                # maximum wait, even one far shorter than the poll asked for
                # (--max-wait 10s, max_poll 60), was a real long-poll: a
                # pause would leave the queue, against "no polling
                # interval", so the next poll goes out at once. A poll no
                # longer than the threshold (the last one before the
                # deadline) is answered quickly by any server and says nothing.
                if poll > _SPIN_THRESHOLD:
                    if time.monotonic() - sent < _SPIN_THRESHOLD:
                        spins += 1
                        pause = self._backoff(spins, e.retry_after)
                    else:
                        spins = 0
                if pause > 0:
                    self._pause(pause, deadline)
                continue
            except (Unreachable, ServiceUnavailable) as e:
                if deadline is not None and time.monotonic() >= deadline:
                    raise Timeout(f"no slot of {limit!r} within {wait} s; last error: {e}", status=e.status) from e
                failures += 1
                d = self._backoff(failures, e.retry_after)
                log.warning("limitd: acquire of %r failed (attempt %d), retrying in %.3fs: %s", limit, failures, d, e)
                self._pause(d, deadline)
                continue
            # 201 is a new grant, 200 the replay of one whose answer an
            # earlier attempt lost: both are this acquire's lease.
            return Lease(self, LeaseInfo.from_json(doc), time.monotonic())

    @contextlib.contextmanager
    def slot(
        self,
        limit: str,
        slots: int = 1,
        ttl: Optional[float] = 60.0,
        wait: Optional[float] = None,
        *,
        holder: Optional[str] = None,
    ) -> Iterator[Lease]:
        """Hold slots of ``limit`` for the duration of a ``with`` block.

        ``with client.slot("api-x") as lease:`` acquires on entry (see
        :meth:`acquire`), releases on exit, and raises :class:`LeaseLost`
        at the end of the block if the lease was lost meanwhile.
        """
        with self.acquire(limit, slots=slots, ttl=ttl, wait=wait, holder=holder) as lease:
            yield lease

    def limit(
        self,
        limit: str,
        slots: int = 1,
        ttl: Optional[float] = 60.0,
        wait: Optional[float] = None,
        *,
        holder: Optional[str] = None,
    ) -> Callable[[F], F]:
        """Decorate a function so each call holds slots of ``limit``.

        ``@client.limit("api-x")`` acquires before every call and releases
        after it. If the lease is lost during the call, a warning is logged
        at once and :class:`LeaseLost` is raised when the call returns (a
        running thread cannot be stopped from outside). Coroutine functions
        are supported: the blocking acquire runs in a worker thread.
        """
        return _decorator(lambda: self, limit, slots, ttl, wait, holder)

    def _renew(self, lease_id: str, timeout: float) -> LeaseInfo:
        doc = self._call("POST", "/v1/leases/" + urllib.parse.quote(lease_id, safe="") + "/renew", timeout=timeout)
        return LeaseInfo.from_json(doc)

    def _release(self, lease_id: str, timeout: float) -> None:
        self._call("DELETE", "/v1/leases/" + urllib.parse.quote(lease_id, safe=""), timeout=timeout)

    def get_lease(self, lease_id: str) -> LeaseInfo:
        """The server's view of one live lease (LeaseNotFound when it is gone)."""
        return LeaseInfo.from_json(self._call("GET", "/v1/leases/" + urllib.parse.quote(lease_id, safe="")))

    # -- admin -------------------------------------------------------------------

    def put_limit(
        self,
        name: str,
        capacity: int,
        default_ttl: Optional[float] = None,
        description: Optional[str] = None,
    ) -> Limit:
        """Create or replace a limit; returns it as the server now has it.

        Lowering the capacity revokes no lease: new grants wait until they fit.
        """
        body: Dict[str, Any] = {"capacity": capacity}
        if default_ttl is not None:
            body["default_ttl_seconds"] = default_ttl
        if description is not None:
            body["description"] = description
        return Limit.from_json(self._call("PUT", _limit_path(name), body))

    def get_limit(self, name: str) -> Limit:
        """One limit (LimitNotFound when it does not exist)."""
        return Limit.from_json(self._call("GET", _limit_path(name)))

    def list_limits(self) -> List[Limit]:
        """All limits, sorted by name."""
        doc = self._call("GET", "/v1/limits")
        return [Limit.from_json(x) for x in (doc or {}).get("limits") or []]

    def delete_limit(self, name: str) -> None:
        """Delete a limit and its leases; its waiters are answered 404."""
        self._call("DELETE", _limit_path(name))

    def leases(self, name: str) -> List[LeaseInfo]:
        """The live leases of a limit, oldest first."""
        doc = self._call("GET", _limit_path(name) + "/leases")
        return [LeaseInfo.from_json(x) for x in (doc or {}).get("leases") or []]

    def waiters(self, name: str) -> List[Waiter]:
        """The queued acquires of a limit, head of the queue first."""
        doc = self._call("GET", _limit_path(name) + "/waiters")
        return [Waiter.from_json(x) for x in (doc or {}).get("waiters") or []]

    def ready(self) -> bool:
        """Whether the server answers ``/readyz`` with 200 (its body is not relied on)."""
        try:
            resp = self._transport.request("GET", "/readyz", body=None, headers={}, timeout=self.timeout)
        except (OSError, http.client.HTTPException):
            return False
        return resp.status == 200


def _limit_path(name: str) -> str:
    # safe="" so that a "/" in a name reaches the server (and is refused
    # there with the naming rule) instead of changing the route.
    return "/v1/limits/" + urllib.parse.quote(name, safe="")


def _decorator(
    get_client: Callable[[], Client],
    limit: str,
    slots: int,
    ttl: Optional[float],
    wait: Optional[float],
    holder: Optional[str],
) -> Callable[[F], F]:
    """The decorator behind Client.limit and limit_concurrency.

    ``get_client`` is called at each call, so limit_concurrency can make
    its client lazily (after the environment is set up, in the right process).
    """

    def decorate(fn: F) -> F:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                client = get_client()
                lease = await asyncio.to_thread(client.acquire, limit, slots, ttl, wait, holder=holder)
                try:
                    result = await fn(*args, **kwargs)
                except BaseException as e:
                    await asyncio.to_thread(lease.__exit__, type(e), e, e.__traceback__)
                    raise
                await asyncio.to_thread(lease.__exit__, None, None, None)
                return result

            return cast(F, async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with get_client().acquire(limit, slots, ttl, wait, holder=holder):
                return fn(*args, **kwargs)

        return cast(F, wrapper)

    return decorate
