"""Acquire: long-polls, prompt wake-up, wait bounds, retries, slot() and limit()."""

from __future__ import annotations

import asyncio
import threading
import time
import unittest

import limitdtest
from limitdtest import ServerTestCase, max_overlap, run_in_thread, wait_until

import limitd


class TestAcquire(ServerTestCase):
    def test_grant_and_release(self) -> None:
        c = self.client()
        name = self.limit_name()
        c.put_limit(name, 2)
        a = c.acquire(name, ttl=30)
        b = c.acquire(name, slots=1)
        self.assertEqual(len(a.id), 26)
        self.assertEqual(a.limit, name)
        self.assertEqual(a.slots, 1)
        self.assertEqual(a.ttl, 30.0)
        self.assertEqual(a.holder, limitd.default_holder())
        self.assertGreater(b.fence, a.fence)
        self.assertEqual(c.get_limit(name).in_use, 2)
        self.assertEqual({x.id for x in c.leases(name)}, {a.id, b.id})
        a.release()
        a.release()  # a second release does nothing
        self.assertTrue(a.released)
        self.assertFalse(a.lost.is_set())
        self.assertEqual([x.id for x in c.leases(name)], [b.id])
        b.release()
        self.assertEqual(c.get_limit(name).in_use, 0)

    def test_holder_and_multiple_slots(self) -> None:
        c = self.client(holder="batch-7")
        name = self.limit_name()
        c.put_limit(name, 5)
        with c.acquire(name, slots=3) as lease:
            self.assertEqual(lease.slots, 3)
            self.assertEqual(lease.holder, "batch-7")
            self.assertEqual(c.get_limit(name).in_use, 3)
        with c.acquire(name, holder="one-off") as lease:
            self.assertEqual(c.leases(name)[0].holder, "one-off")
        self.assertEqual(c.get_limit(name).in_use, 0)

    def test_ttl_none_uses_limit_default(self) -> None:
        c = self.client()
        name = self.limit_name()
        c.put_limit(name, 1, default_ttl=7)
        with c.acquire(name, ttl=None) as lease:
            self.assertEqual(lease.ttl, 7.0)

    def test_waiter_wakes_promptly_on_release(self) -> None:
        c = self.client()
        name = self.limit_name()
        c.put_limit(name, 1)
        holder = c.acquire(name)
        t, res = run_in_thread(c.acquire, name, wait=10)
        self.assertTrue(wait_until(lambda: c.get_limit(name).waiting == 1))
        released = time.monotonic()
        holder.release()
        t.join(5)
        took = time.monotonic() - released
        lease = res["value"]
        self.assertLess(took, 0.5, "a release must wake the long-poll at once, not at a poll interval")
        lease.release()

    def test_wait_zero_tries_once(self) -> None:
        c = self.client()
        name = self.limit_name()
        c.put_limit(name, 1)
        with c.acquire(name):
            start = time.monotonic()
            with self.assertRaises(limitd.Timeout):
                c.acquire(name, wait=0)
            self.assertLess(time.monotonic() - start, 1.0)
        with c.acquire(name, wait=0):
            pass

    def test_wait_bounds_the_whole_acquire(self) -> None:
        c = self.client(max_poll=0.4)  # several long-polls within the wait
        name = self.limit_name()
        c.put_limit(name, 1)
        with c.acquire(name):
            start = time.monotonic()
            with self.assertRaises(limitd.Timeout):
                c.acquire(name, wait=1.2)
            took = time.monotonic() - start
        self.assertGreaterEqual(took, 1.2)
        self.assertLess(took, 2.5)

    def test_socket_timeout_outlasts_the_long_poll(self) -> None:
        # timeout is for ordinary calls; a long-poll of 1.5 s must not be cut at 0.3 s.
        c = self.client(timeout=0.3)
        name = self.limit_name()
        c.put_limit(name, 1)
        with c.acquire(name):
            with self.assertRaises(limitd.Timeout) as cm:
                c.acquire(name, wait=1.5)
        self.assertIsInstance(cm.exception.__cause__, limitd.NoSlots)

    def test_successive_long_polls_keep_one_waiter_and_one_lease(self) -> None:
        c = self.client(max_poll=0.25)
        name = self.limit_name()
        c.put_limit(name, 1)
        holder = c.acquire(name)
        t, res = run_in_thread(c.acquire, name)  # wait=None: forever, in polls of 0.25 s
        self.assertTrue(wait_until(lambda: c.get_limit(name).waiting == 1))
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:  # across several polls
            self.assertLessEqual(len(c.waiters(name)), 1)
            time.sleep(0.05)
        holder.release()
        t.join(5)
        lease = res["value"]
        self.assertEqual([x.id for x in c.leases(name)], [lease.id])
        lease.release()

    def test_network_errors_are_retried_until_the_server_is_back(self) -> None:
        port = limitdtest.free_port()
        first = limitdtest.Server(port=port).start()
        self.addCleanup(first.close)
        c = limitd.Client(first.url, token="", min_backoff=0.05, max_backoff=0.3)
        self.addCleanup(c.close)
        c.put_limit("durable", 1)
        first.stop()
        with self.assertLogs("limitd", "WARNING") as logs:
            t, res = run_in_thread(c.acquire, "durable", wait=20)
            # Restart only once the client has failed at least twice.
            self.assertTrue(wait_until(lambda: len(logs.output) >= 2, timeout=10))
            second = limitdtest.Server(port=port, db_dir=first.dir).start()
            self.addCleanup(second.close)
            t.join(20)
        self.assertIn("unreachable", logs.output[0])
        lease = res["value"]
        self.assertEqual([x.id for x in c.leases("durable")], [lease.id])
        lease.release()

    def test_many_threads_share_one_client(self) -> None:
        c = self.client()
        name = self.limit_name()
        c.put_limit(name, 2)
        intervals = []
        lock = threading.Lock()

        def work() -> None:
            with c.acquire(name, wait=30):
                start = time.monotonic()
                time.sleep(0.02)
                end = time.monotonic()
            with lock:
                intervals.append((start, end))

        threads = [threading.Thread(target=work) for _ in range(20)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
        self.assertEqual(len(intervals), 20)
        self.assertLessEqual(max_overlap(intervals), 2)
        self.assertEqual(c.get_limit(name).in_use, 0)


class _Paused(Exception):
    """Raised by a client's pause hook in place of sleeping."""


def _count_polls(c: limitd.Client, on_poll=None) -> list:
    """Wrap c's requests so that each acquire POST is counted (and seen by on_poll(n) before it goes out)."""
    polls: list = []
    call = c._call

    def counting(method: str, path: str, *args, **kwargs):
        if method == "POST" and path.endswith("/acquire"):
            polls.append(time.monotonic())
            if on_poll is not None:
                on_poll(len(polls))
        return call(method, path, *args, **kwargs)

    c._call = counting  # type: ignore[method-assign]
    return polls


def _forbid_pauses(c: limitd.Client) -> list:
    """Make any pause of c's acquire loop fail the acquire at once, recording its length."""
    pauses: list = []

    def pause(seconds: float, deadline) -> None:
        if seconds > 0:
            pauses.append(seconds)
            raise _Paused(f"the acquire paused {seconds:.3f} s between polls")

    c._pause = pause  # type: ignore[method-assign]
    return pauses


class TestServerMaxWaitBelowPoll(ServerTestCase):
    # Every long-poll is answered 423 after 0.2 s, far sooner than the
    # client's 60 s poll asks for: a real long-poll all the same.
    server_flags = ("--max-wait", "200ms", "--default-wait", "200ms")

    def test_asks_again_at_once_after_each_423(self) -> None:
        admin = self.client()
        name = self.limit_name()
        admin.put_limit(name, 1)
        holder = admin.acquire(name)
        self.addCleanup(holder.release)
        c = self.client()  # max_poll 60
        pauses = _forbid_pauses(c)

        def on_poll(n: int) -> None:
            if n == 6:  # five polls have ended with a 423; free the slot for the sixth
                threading.Thread(target=holder.release, daemon=True).start()

        polls = _count_polls(c, on_poll)
        t, res = run_in_thread(c.acquire, name)  # wait=None: forever
        t.join(30)
        self.assertFalse(t.is_alive(), "the acquire did not end")
        self.assertNotIn("error", res, f"pauses {pauses}: a 423 after the server's max wait must be followed by the next poll at once")
        self.assertEqual(pauses, [])
        self.assertEqual(len(polls), 6)
        lease = res["value"]
        self.assertEqual([x.id for x in admin.leases(name)], [lease.id])
        lease.release()


class TestServerWithoutLongPolls(ServerTestCase):
    # A server that holds no long-polls: every 423 comes at once.
    server_flags = ("--max-wait", "1ms", "--default-wait", "1ms")

    def test_instant_423s_back_off_instead_of_a_hot_loop(self) -> None:
        admin = self.client()
        name = self.limit_name()
        admin.put_limit(name, 1)
        holder = admin.acquire(name)
        self.addCleanup(holder.release)
        c = self.client()  # default backoff: 0.1 s growing to 5 s
        polls = _count_polls(c)
        with self.assertRaises(limitd.Timeout):
            c.acquire(name, wait=1.5)
        # A hot loop makes hundreds of requests in 1.5 s; the backoff a handful.
        self.assertGreaterEqual(len(polls), 2)
        self.assertLessEqual(len(polls), 30, f"{len(polls)} polls in 1.5 s against a server that answers at once")

        # The backoff is bounded and the acquire goes on asking: it gets
        # the slot within a few polls of its release.
        fast = self.client(min_backoff=0.01, max_backoff=0.02)

        def on_poll(n: int) -> None:
            if n == 3:
                threading.Thread(target=holder.release, daemon=True).start()

        fast_polls = _count_polls(fast, on_poll)
        t, res = run_in_thread(fast.acquire, name)
        t.join(30)
        self.assertIn("value", res, res.get("error"))
        self.assertGreaterEqual(len(fast_polls), 3)
        res["value"].release()


class TestSlotAndDecorators(ServerTestCase):
    def test_slot(self) -> None:
        c = self.client()
        name = self.limit_name()
        c.put_limit(name, 1)
        with c.slot(name, ttl=10) as lease:
            self.assertIsInstance(lease, limitd.Lease)
            self.assertEqual(c.get_limit(name).in_use, 1)
        self.assertEqual(c.get_limit(name).in_use, 0)
        with self.assertRaises(ZeroDivisionError):
            with c.slot(name):
                1 / 0
        self.assertEqual(c.get_limit(name).in_use, 0, "an exception in the block releases too")

    def test_client_limit_decorator(self) -> None:
        c = self.client()
        name = self.limit_name()
        c.put_limit(name, 1)

        @c.limit(name)
        def inside(x: int) -> int:
            """Doc kept."""
            self.assertEqual(c.get_limit(name).in_use, 1)
            return x * 2

        self.assertEqual(inside(21), 42)
        self.assertEqual(inside.__doc__, "Doc kept.")
        self.assertEqual(c.get_limit(name).in_use, 0)

    def test_async_decorator(self) -> None:
        c = self.client()
        name = self.limit_name()
        c.put_limit(name, 2)
        running = 0
        peak = 0

        @c.limit(name)
        async def job() -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.05)
            running -= 1

        async def main() -> None:
            await asyncio.gather(*(job() for _ in range(6)))

        asyncio.run(main())
        self.assertEqual(peak, 2)
        self.assertEqual(c.get_limit(name).in_use, 0)

    def test_limit_concurrency_with_url_and_as_context_manager(self) -> None:
        c = self.client()
        name = self.limit_name()
        c.put_limit(name, 1)
        guard = limitd.limit_concurrency(name, url=self.server.url, token="", wait=5)
        with guard as lease:
            self.assertEqual(c.leases(name)[0].id, lease.id)
            with self.assertRaises(limitd.Timeout):
                with limitd.limit_concurrency(name, url=self.server.url, token="", wait=0):
                    pass
        self.assertEqual(c.get_limit(name).in_use, 0)

        @guard
        def f() -> str:
            return "ok"

        self.assertEqual(f(), "ok")

    def test_unknown_limit_is_not_retried(self) -> None:
        @limitd.limit_concurrency(self.limit_name(), url=self.server.url, token="")
        def f() -> None:
            self.fail("ran without a slot")

        with self.assertRaises(limitd.LimitNotFound):
            f()


if __name__ == "__main__":
    unittest.main()
