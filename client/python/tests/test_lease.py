"""Leases: renewal keeps them past their TTL; loss is noticed and raised."""

from __future__ import annotations

import gc
import logging
import threading
import time
import unittest

import limitdtest
from limitdtest import ServerTestCase, wait_until

import limitd


class _Recorder(logging.Handler):
    """Records when each warning of the "limitd" logger was emitted."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((time.monotonic(), record.getMessage()))


class TestRenewal(ServerTestCase):
    def test_renewal_keeps_a_lease_past_its_ttl(self) -> None:
        c = self.client()
        name = self.limit_name()
        c.put_limit(name, 1)
        lease = c.acquire(name, ttl=1)
        first_expiry = lease.expires_at
        # Hold 2.5 TTLs: without renewal the server expires it after 1 s.
        self.assertFalse(lease.lost.wait(2.5))
        info = c.get_lease(lease.id)
        self.assertEqual(info.id, lease.id)
        self.assertGreater(info.expires_at, first_expiry)
        self.assertGreater(lease.expires_at, first_expiry)
        self.assertEqual([x.id for x in c.leases(name)], [lease.id])
        with self.assertRaises(limitd.Timeout):
            c.acquire(name, wait=0)  # the slot is still held
        lease.release()
        self.assertFalse(lease.lost.is_set())
        with self.assertRaises(limitd.LeaseNotFound):
            c.get_lease(lease.id)

    def test_release_stops_the_renewer_at_once(self) -> None:
        c = self.client()
        name = self.limit_name()
        c.put_limit(name, 1)
        lease = c.acquire(name, ttl=60)  # renews every 20 s
        start = time.monotonic()
        lease.release()
        self.assertLess(time.monotonic() - start, 1.0)
        self.assertFalse(lease._thread.is_alive())

    def test_abandoned_lease_is_released(self) -> None:
        c = self.client()
        name = self.limit_name()
        c.put_limit(name, 1)
        with self.assertLogs("limitd", "WARNING") as logs:
            lease = c.acquire(name, ttl=60)
            thread = lease._thread
            del lease
            gc.collect()
            thread.join(5)
        self.assertFalse(thread.is_alive())
        self.assertIn("garbage-collected", logs.output[0])
        self.assertEqual(c.get_limit(name).in_use, 0)


class TestLeaseLoss(ServerTestCase):
    def test_deleting_the_limit_sets_lost(self) -> None:
        c = self.client()
        name = self.limit_name()
        c.put_limit(name, 1)
        with self.assertLogs("limitd", "WARNING") as logs:
            lease = c.acquire(name, ttl=1)
            c.delete_limit(name)
            # The renewer runs every ttl/3 and must notice on its next try.
            self.assertTrue(lease.lost.wait(2))
        self.assertIsInstance(lease.lost_reason, limitd.LeaseLost)
        self.assertIn(lease.id, logs.output[0])
        with self.assertRaises(limitd.LeaseLost):
            lease.check()
        lease.release()  # nothing to give back; must not raise
        self.assertTrue(lease.released)

    def test_with_block_raises_lease_lost(self) -> None:
        c = self.client()
        name = self.limit_name()
        c.put_limit(name, 1)
        with self.assertLogs("limitd", "WARNING"):
            with self.assertRaises(limitd.LeaseLost):
                with c.slot(name, ttl=1) as lease:
                    c.delete_limit(name)
                    self.assertTrue(lease.lost.wait(2))

    def test_block_exception_wins_over_lease_lost(self) -> None:
        c = self.client()
        name = self.limit_name()
        c.put_limit(name, 1)
        with self.assertLogs("limitd", "WARNING"):
            with self.assertRaises(KeyError):
                with c.slot(name, ttl=1) as lease:
                    c.delete_limit(name)
                    self.assertTrue(lease.lost.wait(2))
                    raise KeyError("the block's own error")

    def test_decorator_warns_at_once_and_raises_after_the_call(self) -> None:
        c = self.client()
        name = self.limit_name()
        c.put_limit(name, 1)
        admin = self.client()
        recorder = _Recorder()
        logger = logging.getLogger("limitd")
        logger.addHandler(recorder)
        self.addCleanup(logger.removeHandler, recorder)
        finished = threading.Event()
        call_end = []

        @limitd.limit_concurrency(name, url=self.server.url, token="", ttl=1)
        def work() -> str:
            admin.delete_limit(name)
            # The call goes on (it cannot be stopped) well past the renewal.
            self.assertTrue(wait_until(lambda: bool(recorder.records), timeout=3))
            time.sleep(0.2)
            call_end.append(time.monotonic())
            finished.set()
            return "result is discarded"

        with self.assertRaises(limitd.LeaseLost):
            work()
        self.assertTrue(finished.is_set(), "the call ran to its end")
        warned_at, message = recorder.records[0]
        self.assertLess(warned_at, call_end[0], "the warning came while the call ran")
        self.assertIn("is gone", message)

    def test_lease_revoked_between_renewals_is_lost_at_release(self) -> None:
        c = self.client()
        name = self.limit_name()
        c.put_limit(name, 1)
        with self.assertLogs("limitd", "WARNING") as logs:
            with self.assertRaises(limitd.LeaseLost):
                with c.slot(name, ttl=60) as lease:  # next renewal in 20 s
                    self.client()._release(lease.id, timeout=5)  # an admin revokes it
        self.assertIn("gone when released", logs.output[0])
        self.assertTrue(lease.lost.is_set())

    def test_unexpected_renewer_error_sets_lost_and_release_still_frees(self) -> None:
        c = self.client()
        name = self.limit_name()
        c.put_limit(name, 1)

        def broken_renew(lease_id: str, timeout: float) -> limitd.LeaseInfo:
            # Not a LimitdError: a bug, or an answer the client cannot parse.
            raise ValueError("renewal answer without an id")

        c._renew = broken_renew  # type: ignore[method-assign]
        with self.assertLogs("limitd", "WARNING") as logs:
            lease = c.acquire(name, ttl=3)  # first renewal after 1 s, expiry after 3 s
            self.assertTrue(lease.lost.wait(5), "the renewer died without setting lost")
            lease._thread.join(5)
        self.assertFalse(lease._thread.is_alive())
        self.assertIsInstance(lease.lost_reason, limitd.LeaseLost)
        self.assertIn("ValueError", str(lease.lost_reason))
        self.assertIn(lease.id, logs.output[0])
        self.assertIn("renewal answer without an id", logs.output[0])
        with self.assertRaises(limitd.LeaseLost):
            lease.check()
        # Nobody renews it, but it is still live on the server until it
        # expires: release() must still give the slot back.
        self.assertEqual([x.id for x in c.leases(name)], [lease.id])
        lease.release()
        self.assertTrue(lease.released)
        self.assertEqual(c.leases(name), [])

    def test_unreachable_past_expiry_sets_lost(self) -> None:
        server = limitdtest.Server().start()
        self.addCleanup(server.close)
        c = limitd.Client(server.url, token="", min_backoff=0.05, max_backoff=0.2)
        self.addCleanup(c.close)
        c.put_limit("fragile", 1)
        with self.assertLogs("limitd", "WARNING") as logs:
            lease = c.acquire("fragile", ttl=1)
            server.kill()  # a crash: nobody answers renewals any more
            killed = time.monotonic()
            self.assertTrue(lease.lost.wait(3))
            lost_after = time.monotonic() - killed
        self.assertLess(lost_after, 1.5, "lost at the lease's expiry, not later")
        self.assertIn("expired before the server could be reached", str(lease.lost_reason))
        self.assertTrue(any("renewing lease" in m for m in logs.output))
        lease.release()  # returns: nothing is held any more


if __name__ == "__main__":
    unittest.main()
