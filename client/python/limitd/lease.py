"""A held lease that renews itself on a daemon thread until it is released."""

from __future__ import annotations

import datetime
import logging
import threading
import time
import weakref
from types import TracebackType
from typing import TYPE_CHECKING, Optional, Type

from .errors import LeaseLost, LeaseNotFound, LimitdError, LimitNotFound, ServiceUnavailable, Unreachable
from .types import LeaseInfo

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client

__all__ = ["Lease"]

log = logging.getLogger("limitd")


class _State:
    """What the renewer thread shares with its Lease.

    The thread holds this and only a weak reference to the Lease, so a Lease
    that its owner dropped without releasing is noticed (see
    ``Lease.__init__``) instead of being renewed forever.
    """

    def __init__(self, client: "Client", info: LeaseInfo, received: float) -> None:
        self.client = client
        self.id = info.id
        self.limit = info.limit
        self.lock = threading.Lock()
        self.info = info  # the server's latest view; under lock
        # Our own clock decides when the lease is gone: comparing the
        # server's expires_at with local time would trust the clocks to
        # agree. The grant may come at any moment of a long-poll, so use
        # its arrival: late by the one-way latency only, and the first
        # renewal replaces it with the conservative "sent + TTL".
        self.deadline = received + _ttl(info)  # time.monotonic(); under lock
        self.stop = threading.Event()  # release() or abandonment: the renewer must end
        self.abandoned = False
        self.lost = threading.Event()
        self.lost_reason: Optional[LeaseLost] = None
        # Set when the renewer died of an unexpected error: the lease is
        # lost to us, but may still be live on the server, so release()
        # must still give it back.
        self.renewer_crashed = False

    def mark_lost(self, reason: LeaseLost, exc_info: Optional[BaseException] = None) -> None:
        self.lost_reason = reason
        self.lost.set()
        # Warn at once: the holder's code may still be running and cannot
        # be stopped from here; the decorators raise LeaseLost when it returns.
        log.warning("limitd: %s", reason, exc_info=exc_info)

    def abandon(self) -> None:
        """Called when the Lease was garbage-collected while still held."""
        self.abandoned = True
        self.stop.set()


def _ttl(info: LeaseInfo) -> float:
    ttl = info.ttl_seconds
    if ttl <= 0 and info.expires_at and info.acquired_at:
        ttl = (info.expires_at - info.acquired_at).total_seconds()
    # Leases have a TTL of at least a second; the floor only keeps a
    # malformed answer from making the renewer spin.
    return max(ttl, 1.0)


def _renewer(state: _State) -> None:
    """The renewer thread: _renew_loop, and a lost lease if it dies.

    Without this an unexpected exception (a bug, a malformed answer that is
    not a LimitdError) would end the thread with a traceback on stderr and
    leave ``lost`` unset: the holder would go on believing in a lease that
    nobody renews any more and that expires within one TTL.
    """
    try:
        _renew_loop(state)
    except BaseException as e:  # noqa: BLE001 - any end but a normal one loses the lease
        if state.stop.is_set() and not state.abandoned:
            # release() stopped us meanwhile and gives the lease back
            # itself; it is not lost. Still worth a word.
            log.warning("limitd: renewer of lease %s of %r failed while stopping: %r", state.id, state.limit, e)
            return
        state.renewer_crashed = True
        state.mark_lost(
            LeaseLost(
                f"lease {state.id} of {state.limit!r} is no longer renewed: its renewer failed "
                f"unexpectedly ({e.__class__.__name__}: {e}); it expires within its TTL"
            ),
            exc_info=e,
        )


def _renew_loop(state: _State) -> None:
    """Renew every third of the TTL until stopped, lost or abandoned.

    One ``Event.wait`` per step, so release() wakes the thread at once.
    """
    with state.lock:
        delay = _ttl(state.info) / 3
    failures = 0
    last_error: Optional[BaseException] = None
    client = state.client
    while not state.stop.wait(delay):
        with state.lock:
            deadline = state.deadline
        now = time.monotonic()
        if now >= deadline:
            state.mark_lost(
                LeaseLost(
                    f"lease {state.id} of {state.limit!r} expired before the server could be "
                    f"reached to renew it (last error: {last_error})"
                )
            )
            return
        sent = now
        try:
            # An answer after the deadline cannot save the lease any more.
            info = client._renew(state.id, timeout=max(min(client.timeout, deadline - now), 0.05))
        except (LeaseNotFound, LimitNotFound) as e:
            state.mark_lost(LeaseLost(f"lease {state.id} of {state.limit!r} is gone: {e}", status=e.status))
            return
        except LimitdError as e:
            # Network errors, 503s, even a 401 while tokens are rotated may
            # pass before the deadline: keep trying, faster than ttl/3.
            last_error = e
            failures += 1
            retry_after = e.retry_after if isinstance(e, ServiceUnavailable) else None
            delay = min(client._backoff(failures, retry_after), max(deadline - time.monotonic(), 0.0))
            log.warning(
                "limitd: renewing lease %s of %r failed (attempt %d, retry in %.3fs, expires in %.3fs): %s",
                state.id, state.limit, failures, delay, deadline - time.monotonic(), e,
            )
            continue
        failures = 0
        with state.lock:
            state.info = info
            state.deadline = sent + _ttl(info)
            delay = _ttl(info) / 3
    if state.abandoned:
        log.warning(
            "limitd: lease %s of %r was garbage-collected without release(); releasing it",
            state.id, state.limit,
        )
        try:
            client._release(state.id, timeout=client.timeout)
        except LimitdError as e:
            log.warning("limitd: releasing abandoned lease %s failed: %s", state.id, e)


class Lease:
    """A grant of slots of one limit, held until :meth:`release`.

    A daemon thread renews the lease every third of its TTL. If a renewal
    answers 404 (an admin deleted the lease or its limit, or it expired) or
    the server cannot be reached until the lease expires, :attr:`lost` is
    set and a warning is logged on the ``"limitd"`` logger.

    Use it as a context manager: the lease is released when the block ends,
    and :class:`LeaseLost` is raised then if it was lost meanwhile (and the
    block did not raise anything else). The client cannot interrupt the
    block when the lease is lost; code that must stop early checks
    ``lease.lost.is_set()`` or calls :meth:`check`.

    A Lease dropped without being released is released by its renewer once
    it is garbage-collected (with a warning), so it never holds a slot
    forever. Its methods are safe to call from several threads.
    """

    def __init__(self, client: "Client", info: LeaseInfo, received: float) -> None:
        self._state = _State(client, info, received)
        self._release_lock = threading.Lock()
        self._released = False
        self._thread = threading.Thread(
            target=_renewer,
            args=(self._state,),
            name=f"limitd-renew-{info.id}",
            daemon=True,
        )
        # Not at interpreter exit: the daemon thread could not finish a
        # release then, and the lease expires after its TTL anyway.
        weakref.finalize(self, self._state.abandon).atexit = False
        self._thread.start()

    # -- what the server granted -------------------------------------------------

    @property
    def id(self) -> str:
        """The lease id (a ULID)."""
        return self._state.id

    @property
    def limit(self) -> str:
        """The name of the leased limit."""
        return self._state.limit

    @property
    def slots(self) -> int:
        """How many slots are held."""
        return self._state.info.slots

    @property
    def fence(self) -> int:
        """The fencing token: larger than that of every earlier grant of the limit.

        Pass it to a protected resource so it can refuse the writes of a
        holder whose lease has since expired.
        """
        return self._state.info.fence

    @property
    def holder(self) -> str:
        """The holder name the lease was granted to."""
        return self._state.info.holder

    @property
    def ttl(self) -> float:
        """The lease's time to live in seconds."""
        with self._state.lock:
            return _ttl(self._state.info)

    @property
    def expires_at(self) -> Optional[datetime.datetime]:
        """The expiry the server gave at the latest renewal (server clock, UTC)."""
        with self._state.lock:
            return self._state.info.expires_at

    @property
    def info(self) -> LeaseInfo:
        """The server's view of the lease at its latest renewal."""
        with self._state.lock:
            return self._state.info

    # -- loss --------------------------------------------------------------------

    @property
    def lost(self) -> threading.Event:
        """Set when the lease was lost (not when it was released)."""
        return self._state.lost

    @property
    def lost_reason(self) -> Optional[LeaseLost]:
        """Why the lease was lost, or ``None`` while it was not."""
        return self._state.lost_reason

    @property
    def released(self) -> bool:
        """Whether :meth:`release` has completed."""
        return self._released

    def check(self) -> None:
        """Raise :class:`LeaseLost` if the lease was lost."""
        reason = self._state.lost_reason
        if self._state.lost.is_set() and reason is not None:
            raise LeaseLost(reason.detail, status=reason.status)

    # -- release -----------------------------------------------------------------

    def release(self, timeout: float = 30.0) -> None:
        """Stop renewing and give the slots back.

        Returns once the slots are no longer held: released, already gone
        (lost, expired or deleted), or expired while the server could not be
        reached. Network errors and 503 answers are retried with backoff for
        up to ``timeout`` seconds, after which the last error is raised (the
        server still frees the slots when the lease expires). Calling it
        again after it returned does nothing.

        If the server says the lease was already gone (revoked or expired
        before the renewer noticed), :attr:`lost` is set as well, so that a
        ``with`` block raises :class:`LeaseLost` at its end.
        """
        with self._release_lock:
            if self._released:
                return
            st = self._state
            st.stop.set()
            if self._thread is not threading.current_thread():
                self._thread.join()
            if st.lost.is_set() and not st.renewer_crashed:
                self._released = True
                return
            client = st.client
            give_up = time.monotonic() + timeout
            failures = 0
            while True:
                with st.lock:
                    deadline = st.deadline
                limit = min(deadline, give_up)
                try:
                    client._release(st.id, timeout=max(min(client.timeout, limit - time.monotonic()), 0.05))
                    self._released = True
                    return
                except LeaseNotFound as e:
                    self._released = True
                    if failures == 0 and not st.lost.is_set():
                        # Gone before we let go: the slot was not held for
                        # the whole time (expired while this process was
                        # stalled, or revoked before the renewer noticed).
                        # After a failed attempt, our own earlier DELETE may
                        # have done it, so say nothing then.
                        st.mark_lost(LeaseLost(f"lease {st.id} of {st.limit!r} was gone when released: {e}", status=e.status))
                    return
                except (Unreachable, ServiceUnavailable) as e:
                    now = time.monotonic()
                    if now >= deadline:
                        # The server expires it by itself; nothing is held.
                        self._released = True
                        return
                    if now >= give_up:
                        raise
                    failures += 1
                    d = min(client._backoff(failures, e.retry_after), limit - now)
                    log.warning(
                        "limitd: releasing lease %s of %r failed (attempt %d, retry in %.3fs): %s",
                        st.id, st.limit, failures, d, e,
                    )
                    if d > 0:
                        time.sleep(d)

    def __enter__(self) -> "Lease":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        try:
            self.release()
        except LimitdError as e:
            # The block's own outcome matters more than a failed release,
            # and the server frees the slots at expiry anyway.
            log.warning("limitd: releasing lease %s of %r failed: %s", self.id, self.limit, e)
        # Read after release(): it joins the renewer, which may have just
        # found the lease gone.
        if exc_type is None:
            self.check()

    def __repr__(self) -> str:
        state = "lost" if self.lost.is_set() else "released" if self._released else "held"
        return f"<limitd.Lease {self.id} limit={self.limit!r} slots={self.slots} fence={self.fence} {state}>"
