"""Errors map to the right exception classes, from the table and from a live server."""

from __future__ import annotations

import hashlib
import os
import signal
import tempfile
import threading
import unittest
from unittest import mock

import limitdtest
from limitdtest import ServerTestCase, run_in_thread, wait_until

import limitd
from limitd import errors

# Every code of the server's table (root package error.go) and its status.
SERVER_CODES = {
    "invalid_request": (400, limitd.InvalidRequest),
    "unauthorized": (401, limitd.Unauthorized),
    "forbidden": (403, limitd.Forbidden),
    "limit_not_found": (404, limitd.LimitNotFound),
    "lease_not_found": (404, limitd.LeaseNotFound),
    "not_found": (404, limitd.NotFound),
    "method_not_allowed": (405, limitd.MethodNotAllowed),
    "slots_exceed_capacity": (409, limitd.SlotsExceedCapacity),
    "superseded": (409, limitd.Superseded),
    "body_too_large": (413, limitd.BodyTooLarge),
    "no_slots": (423, limitd.NoSlots),
    "queue_full": (503, limitd.QueueFull),
    "shutting_down": (503, limitd.ShuttingDown),
    "starting": (503, limitd.Starting),
    "store_unavailable": (503, limitd.StoreUnavailable),
    "internal": (500, limitd.InternalError),
}

GHOST_LEASE = "01ARZ3NDEKTSV4RRFFQ69G5FAV"  # a well-formed ULID no server granted


def problem(code: str, status: int, detail: str = "d") -> bytes:
    return (
        '{"type":"https://limitd.dev/problems/%s","title":"t","status":%d,"detail":"%s","code":"%s"}'
        % (code, status, detail, code)
    ).encode()


class TestErrorTable(unittest.TestCase):
    """error_from_response, without a server."""

    def test_every_server_code_has_its_class(self) -> None:
        for code, (status, cls) in SERVER_CODES.items():
            with self.subTest(code=code):
                e = errors.error_from_response(status, problem(code, status, "why"), {"retry-after": "1"})
                self.assertIs(type(e), cls)
                self.assertIsInstance(e, limitd.LimitdError)
                self.assertEqual(e.code, code)
                self.assertEqual(e.status, status)
                self.assertEqual(e.detail, "why")
                self.assertEqual(e.retry_after, 1.0)

    def test_families(self) -> None:
        self.assertTrue(issubclass(limitd.LimitNotFound, limitd.NotFound))
        self.assertTrue(issubclass(limitd.LeaseNotFound, limitd.NotFound))
        self.assertTrue(issubclass(limitd.Superseded, limitd.Conflict))
        for cls in (limitd.QueueFull, limitd.ShuttingDown, limitd.Starting, limitd.StoreUnavailable):
            self.assertTrue(issubclass(cls, limitd.ServiceUnavailable))
        self.assertTrue(issubclass(limitd.Timeout, TimeoutError))
        self.assertTrue(issubclass(limitd.Unreachable, ConnectionError))
        for cls in (limitd.Timeout, limitd.LeaseLost, limitd.Unreachable):
            self.assertTrue(issubclass(cls, limitd.LimitdError))

    def test_unknown_code_falls_back_to_status_family(self) -> None:
        e = errors.error_from_response(503, problem("brand_new", 503), {})
        self.assertIs(type(e), limitd.ServiceUnavailable)
        self.assertEqual(e.code, "brand_new")
        e = errors.error_from_response(409, problem("another", 409), {})
        self.assertIs(type(e), limitd.Conflict)
        e = errors.error_from_response(418, problem("teapot", 418), {})
        self.assertIs(type(e), limitd.LimitdError)

    def test_proxy_pages_without_problem_body(self) -> None:
        for status in (502, 504):
            e = errors.error_from_response(status, b"<html>Bad Gateway</html>", {})
            self.assertIsInstance(e, limitd.ServiceUnavailable)  # acquire retries these
            self.assertEqual(e.code, f"http_{status}")
            self.assertIn("Bad Gateway", e.detail)

    def test_retry_after(self) -> None:
        self.assertEqual(errors.parse_retry_after("0"), 0.0)
        self.assertEqual(errors.parse_retry_after(" 7 "), 7.0)
        self.assertEqual(errors.parse_retry_after("999999"), 3600.0)
        self.assertIsNone(errors.parse_retry_after(None))
        self.assertIsNone(errors.parse_retry_after("soon"))
        self.assertEqual(errors.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), 0.0)  # past


class TestServerErrors(ServerTestCase):
    """The server's answers raise the class named after their code."""

    server_flags = ("--max-waiters", "1")

    def test_invalid_request(self) -> None:
        c = self.client()
        for bad in ("-starts-with-dash", "a/b", "x" * 129, "sp ace"):
            with self.subTest(name=bad):
                with self.assertRaises(limitd.InvalidRequest) as cm:
                    c.get_limit(bad)
                self.assertEqual(cm.exception.status, 400)
                self.assertIn("letter or digit", cm.exception.detail)
        with self.assertRaises(limitd.InvalidRequest) as cm:
            c.put_limit(self.limit_name(), -1)
        self.assertIn("capacity", cm.exception.detail)
        name = self.limit_name()
        c.put_limit(name, 1)
        with self.assertRaises(limitd.InvalidRequest) as cm:
            c.acquire(name, ttl=0.5, wait=0)
        self.assertIn("ttl_seconds", cm.exception.detail)

    def test_limit_not_found(self) -> None:
        c = self.client()
        name = self.limit_name()
        for call in (c.get_limit, c.delete_limit, c.leases, lambda n: c.acquire(n, wait=0)):
            with self.assertRaises(limitd.LimitNotFound) as cm:
                call(name)
            self.assertEqual(cm.exception.code, "limit_not_found")
            self.assertEqual(cm.exception.status, 404)

    def test_lease_not_found(self) -> None:
        c = self.client()
        with self.assertRaises(limitd.LeaseNotFound):
            c.get_lease(GHOST_LEASE)
        name = self.limit_name()
        c.put_limit(name, 1)
        lease = c.acquire(name)
        info = c.get_lease(lease.id)
        self.assertEqual(info.id, lease.id)
        lease.release()
        with self.assertRaises(limitd.LeaseNotFound):
            c.get_lease(lease.id)

    def test_not_found_and_method_not_allowed(self) -> None:
        c = self.client()
        with self.assertRaises(limitd.NotFound) as cm:
            c._call("GET", "/v1/nothing-here")
        self.assertEqual(cm.exception.code, "not_found")
        with self.assertRaises(limitd.MethodNotAllowed):
            c._call("PATCH", "/v1/limits")

    def test_slots_exceed_capacity(self) -> None:
        c = self.client()
        name = self.limit_name()
        c.put_limit(name, 3)
        with self.assertRaises(limitd.SlotsExceedCapacity) as cm:
            c.acquire(name, slots=4)
        self.assertEqual(cm.exception.status, 409)

    def test_body_too_large(self) -> None:
        c = self.client()
        with self.assertRaises(limitd.BodyTooLarge) as cm:
            c.put_limit(self.limit_name(), 1, description="x" * 70000)
        self.assertEqual(cm.exception.status, 413)

    def test_no_slots_is_a_timeout_of_acquire(self) -> None:
        c = self.client()
        name = self.limit_name()
        c.put_limit(name, 1)
        with c.acquire(name):
            with self.assertRaises(limitd.Timeout) as cm:
                c.acquire(name, wait=0)
        self.assertIsInstance(cm.exception.__cause__, limitd.NoSlots)
        self.assertEqual(cm.exception.__cause__.retry_after, 0.0)
        self.assertEqual(cm.exception.status, 423)

    def test_queue_full_is_retried_then_times_out(self) -> None:
        c = self.client(min_backoff=0.05, max_backoff=0.2)
        name = self.limit_name()
        c.put_limit(name, 0)  # paused: everyone waits
        t, res = run_in_thread(c.acquire, name, wait=5)  # the one waiter --max-waiters allows
        self.assertTrue(wait_until(lambda: c.get_limit(name).waiting == 1))
        with self.assertLogs("limitd", "WARNING") as logs:
            with self.assertRaises(limitd.Timeout):
                c.acquire(name, wait=1.5)
        # Retried (queue_full says Retry-After: 1); the last try at the
        # deadline asks with wait 0, which does not queue and gets 423.
        self.assertIn("queue_full", "\n".join(logs.output))
        with self.assertRaises(limitd.QueueFull) as cm:
            c._call("POST", f"/v1/limits/{name}/acquire", {"wait_seconds": 1})
        self.assertEqual(cm.exception.retry_after, 1.0)
        c.delete_limit(name)  # answers the waiter 404
        t.join(10)
        self.assertIsInstance(res.get("error"), limitd.LimitNotFound)

    def test_superseded(self) -> None:
        """A second acquire with the same Idempotency-Key takes the first one's place."""
        c = self.client()
        name = self.limit_name()
        c.put_limit(name, 0)
        t, res = run_in_thread(c.acquire, name, wait=10, idempotency_key="same-key")
        self.assertTrue(wait_until(lambda: c.get_limit(name).waiting == 1))
        t2, res2 = run_in_thread(c.acquire, name, wait=10, idempotency_key="same-key")
        t.join(5)
        self.assertFalse(t.is_alive())
        self.assertIsInstance(res.get("error"), limitd.Superseded)
        self.assertEqual(res["error"].status, 409)
        c.put_limit(name, 1)  # the newer request gets the slot
        t2.join(5)
        lease = res2["value"]
        self.assertEqual([x.id for x in c.leases(name)], [lease.id])
        lease.release()

    def test_unreachable(self) -> None:
        c = limitd.Client(f"http://127.0.0.1:{limitdtest.free_port()}", token="", timeout=2)
        with self.assertRaises(limitd.Unreachable) as cm:
            c.list_limits()
        self.assertIsInstance(cm.exception, ConnectionError)
        self.assertIsInstance(cm.exception.__cause__, OSError)
        self.assertIsNone(cm.exception.status)


class TestShuttingDown(unittest.TestCase):
    def test_waiters_get_shutting_down(self) -> None:
        server = limitdtest.Server().start()
        self.addCleanup(server.close)
        c = limitd.Client(server.url, token="")
        c.put_limit("paused", 0)
        body = {"wait_seconds": 30}
        t, res = run_in_thread(c._call, "POST", "/v1/limits/paused/acquire", body, timeout=40)
        self.assertTrue(wait_until(lambda: c.get_limit("paused").waiting == 1))
        os.kill(server.proc.pid, signal.SIGTERM)
        t.join(10)
        err = res.get("error")
        self.assertIsInstance(err, limitd.ShuttingDown)
        self.assertEqual(err.status, 503)
        self.assertIsNotNone(err.retry_after)
        self.assertEqual(server.proc.wait(10), 0)


def _write_tokens(path: str, lines) -> None:
    with open(path, "w") as f:
        for name, scope, pattern, token in lines:
            f.write(f"{name} {scope} {pattern} {hashlib.sha256(token.encode()).hexdigest()}\n")


class TestAuth(unittest.TestCase):
    """401 and 403 with authentication on; the token comes from LIMITD_TOKEN."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.tmp = tempfile.mkdtemp(prefix="limitd-pytest-tokens-")
        tokens = os.path.join(cls.tmp, "tokens")
        _write_tokens(
            tokens,
            [
                ("admin", "admin", "*", "admin-secret"),
                ("reader", "read", "*", "read-secret"),
                ("team-a", "worker", "team-a:*", "team-a-secret"),
            ],
        )
        cls.server = limitdtest.Server("--tokens-file", tokens).start()
        cls.addClassCleanup(cls.server.close)
        admin = limitd.Client(cls.server.url, token="admin-secret")
        admin.put_limit("team-a:api", 2)
        admin.put_limit("team-b:api", 2)

    @classmethod
    def tearDownClass(cls) -> None:
        import shutil

        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_unauthorized(self) -> None:
        for token in ("", "wrong"):
            with self.subTest(token=token):
                with self.assertRaises(limitd.Unauthorized) as cm:
                    limitd.Client(self.server.url, token=token).list_limits()
                self.assertEqual(cm.exception.status, 401)

    def test_forbidden(self) -> None:
        reader = limitd.Client(self.server.url, token="read-secret")
        self.assertEqual([x.name for x in reader.list_limits()], ["team-a:api", "team-b:api"])
        with self.assertRaises(limitd.Forbidden):
            reader.put_limit("team-a:new", 1)
        with self.assertRaises(limitd.Forbidden):
            reader.acquire("team-a:api", wait=0)
        worker = limitd.Client(self.server.url, token="team-a-secret")
        with self.assertRaises(limitd.Forbidden) as cm:
            worker.acquire("team-b:api", wait=0)
        self.assertEqual(cm.exception.status, 403)
        with worker.acquire("team-a:api", ttl=5) as lease:
            self.assertEqual(lease.limit, "team-a:api")

    def test_limit_concurrency_reads_token_and_url_from_env(self) -> None:
        ran = threading.Event()

        with mock.patch.dict(os.environ, {"LIMITD_URL": self.server.url, "LIMITD_TOKEN": "team-a-secret"}):

            @limitd.limit_concurrency("team-a:api")
            def work() -> str:
                ran.set()
                return "done"

            self.assertEqual(work(), "done")
        self.assertTrue(ran.is_set())
        with mock.patch.dict(os.environ, {"LIMITD_URL": self.server.url, "LIMITD_TOKEN": ""}):

            @limitd.limit_concurrency("team-a:api")
            def anonymous() -> None:
                self.fail("ran without a slot")

            with self.assertRaises(limitd.Unauthorized):
                anonymous()


if __name__ == "__main__":
    unittest.main()
