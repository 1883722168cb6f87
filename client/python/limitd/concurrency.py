"""``limit_concurrency``: the one-line replacement of a per-process semaphore."""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any, Callable, List, Optional, Type, TypeVar

from .client import Client, _decorator
from .lease import Lease

__all__ = ["limit_concurrency"]

F = TypeVar("F", bound=Callable[..., Any])


class limit_concurrency:  # noqa: N801 - used like a function, as the decorator it replaces
    """Limit how many calls run at once, across processes and machines.

    A decorator (and a ``with`` block) backed by the limitd server: every
    call holds ``slots`` slots of the limit ``name`` while it runs::

        from limitd import limit_concurrency

        @limit_concurrency("api")
        def call_api(i): ...

    Args:
        name: the limit's name; the limit must exist on the server (an
            admin creates it with its capacity, e.g. ``limitd limits set NAME --capacity N``
            or ``Client.put_limit``).
        url: the server; ``None`` reads ``LIMITD_URL`` (default
            ``http://127.0.0.1:7070``).
        slots: slots each call holds.
        ttl: the lease TTL in seconds; a crashed worker holds its slots at
            most this long. The lease renews itself every ttl/3 while the
            call runs, so calls may take much longer than the TTL.
        wait: seconds a call waits for its slots before raising
            :class:`limitd.Timeout`; ``None`` waits as long as it takes.
        token: bearer token; ``None`` reads ``LIMITD_TOKEN``.
        holder: holder name shown on leases (default ``host/pid-N``).
        client: an existing :class:`Client` to use instead of ``url`` and
            ``token``.

    The client is made at the first call, not at decoration time, so the
    environment may be set after import, and it is shared by all calls of
    the decorated function (connections are pooled; a forked child opens
    its own).

    If the lease is lost while a call runs (an admin deleted the limit, or
    the server was unreachable until the lease expired), a warning is logged
    on the ``"limitd"`` logger at once and :class:`limitd.LeaseLost` is
    raised when the call returns: the running call cannot be interrupted.
    """

    def __init__(
        self,
        name: str,
        url: Optional[str] = None,
        slots: int = 1,
        ttl: Optional[float] = 60.0,
        wait: Optional[float] = None,
        token: Optional[str] = None,
        *,
        holder: Optional[str] = None,
        client: Optional[Client] = None,
    ) -> None:
        self.name = name
        self.url = url
        self.slots = slots
        self.ttl = ttl
        self.wait = wait
        self.token = token
        self.holder = holder
        self._client = client
        self._lock = threading.Lock()
        # Leases of the with-blocks in progress, per thread (blocks may nest).
        self._held = threading.local()

    @property
    def client(self) -> Client:
        """The client, made on first use."""
        with self._lock:
            if self._client is None:
                self._client = Client(self.url, self.token, self.holder)
            return self._client

    def __call__(self, fn: F) -> F:
        """Decorate ``fn``: each call holds the slots while it runs."""
        return _decorator(lambda: self.client, self.name, self.slots, self.ttl, self.wait, self.holder)(fn)

    def __enter__(self) -> Lease:
        lease = self.client.acquire(self.name, self.slots, self.ttl, self.wait, holder=self.holder)
        stack: List[Lease] = self._held.__dict__.setdefault("stack", [])
        stack.append(lease)
        return lease

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        lease: Lease = self._held.stack.pop()
        lease.__exit__(exc_type, exc, tb)

    def __repr__(self) -> str:
        return f"limit_concurrency({self.name!r}, slots={self.slots}, ttl={self.ttl}, wait={self.wait})"
