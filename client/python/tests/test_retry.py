"""Retries: a dropped connection never costs a second lease; 503s honour Retry-After."""

from __future__ import annotations

import http.server
import json
import re
import socket
import threading
import time
import unittest
from typing import List, Optional, Tuple

from limitdtest import ServerTestCase, run_in_thread, wait_until

import limitd


def _read_request(sock: socket.socket) -> bytes:
    """Read one HTTP request (head and Content-Length body) from sock."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    want = int(m.group(1)) if m else 0
    while len(body) < want:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def _idempotency_key(request: bytes) -> Optional[str]:
    m = re.search(rb"(?im)^idempotency-key:\s*(\S+)", request)
    return m.group(1).decode() if m else None


class DropProxy:
    """A TCP proxy to a server that breaks the first connection.

    mode "answer": the request reaches the server, then the client side is
    closed as soon as the answer starts, so the answer is lost.
    mode "request": the client side is closed right after the request was
    forwarded, while the server side stays open: the server does not notice
    the client is gone (a NAT or proxy that dropped the connection), and
    what it answers later is recorded in ``stale_answers``.
    """

    def __init__(self, upstream_port: int, mode: str) -> None:
        assert mode in ("answer", "request")
        self.upstream_port = upstream_port
        self.mode = mode
        self.requests: List[bytes] = []
        self.stale_answers: List[bytes] = []
        self.dropped = threading.Event()
        self.stale_done = threading.Event()
        self._lock = threading.Lock()
        self._socks: List[socket.socket] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        self._connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            try:
                s.close()
            except OSError:
                pass

    def _track(self, s: socket.socket) -> socket.socket:
        with self._lock:
            self._socks.append(s)
        return s

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                index = self._connections
                self._connections += 1
            threading.Thread(target=self._handle, args=(self._track(client), index), daemon=True).start()

    def _handle(self, client: socket.socket, index: int) -> None:
        try:
            up = self._track(socket.create_connection(("127.0.0.1", self.upstream_port)))
            request = _read_request(client)
            with self._lock:
                self.requests.append(request)
            up.sendall(request)
            if index > 0:
                self._pump(client, up)
                return
            if self.mode == "answer":
                answer = up.recv(65536)
                client.close()
                up.close()
                self.stale_answers.append(answer)
                self.dropped.set()
                self.stale_done.set()
                return
            client.close()
            self.dropped.set()
            answer = b""
            up.settimeout(20)
            while True:
                chunk = up.recv(65536)
                if not chunk:
                    break
                answer += chunk
                if b"\r\n\r\n" in answer:
                    break
            self.stale_answers.append(answer)
            self.stale_done.set()
            up.close()
        except OSError:
            pass

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        def one_way(src: socket.socket, dst: socket.socket) -> None:
            try:
                while True:
                    chunk = src.recv(65536)
                    if not chunk:
                        break
                    dst.sendall(chunk)
            except OSError:
                pass
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        t = threading.Thread(target=one_way, args=(b, a), daemon=True)
        t.start()
        one_way(a, b)
        t.join(30)


class TestDroppedConnections(ServerTestCase):
    def test_lost_grant_is_replayed_not_granted_twice(self) -> None:
        admin = self.client()
        name = self.limit_name()
        admin.put_limit(name, 3)
        proxy = DropProxy(self.server.port, "answer")
        self.addCleanup(proxy.close)
        c = limitd.Client(proxy.url, token="", min_backoff=0.05, max_backoff=0.2)
        self.addCleanup(c.close)
        with self.assertLogs("limitd", "WARNING") as logs:
            lease = c.acquire(name, wait=10)
        self.assertTrue(proxy.dropped.is_set())
        self.assertIn(b"201", proxy.stale_answers[0].split(b"\r\n")[0], "the first attempt was granted")
        self.assertIn("unreachable", logs.output[0])
        # One lease on the server, and it is the one the retry returned.
        self.assertEqual([x.id for x in admin.leases(name)], [lease.id])
        self.assertEqual(admin.get_limit(name).in_use, 1)
        self.assertIn(lease.id.encode(), proxy.stale_answers[0])
        keys = [_idempotency_key(r) for r in proxy.requests if b"/acquire" in r]
        self.assertGreaterEqual(len(keys), 2)
        self.assertEqual(len(set(keys)), 1, "every retry of one acquire carries the same Idempotency-Key")
        self.assertRegex(keys[0], r"^[0-9a-f]{32}$")
        lease.release()
        self.assertEqual(admin.get_limit(name).in_use, 0)

    def test_dropped_waiter_is_superseded_not_duplicated(self) -> None:
        admin = self.client()
        name = self.limit_name()
        admin.put_limit(name, 1)
        holder = admin.acquire(name)
        proxy = DropProxy(self.server.port, "request")
        self.addCleanup(proxy.close)
        c = limitd.Client(proxy.url, token="", min_backoff=0.05, max_backoff=0.2)
        self.addCleanup(c.close)
        with self.assertLogs("limitd", "WARNING"):
            t, res = run_in_thread(c.acquire, name, wait=20)
            self.assertTrue(proxy.dropped.wait(5))
            # The retry with the same key takes the stale waiter's place.
            self.assertTrue(proxy.stale_done.wait(10))
        self.assertIn(b"409", proxy.stale_answers[0].split(b"\r\n")[0])
        self.assertIn(b"superseded", proxy.stale_answers[0])
        self.assertEqual(len(admin.waiters(name)), 1)
        holder.release()
        t.join(10)
        lease = res["value"]
        self.assertEqual([x.id for x in admin.leases(name)], [lease.id])
        lease.release()
        self.assertEqual(admin.get_limit(name).in_use, 0)


class TestStaleKeepAlive(ServerTestCase):
    server_flags = ("--idle-timeout", "200ms")

    def test_connection_closed_by_server_is_reopened(self) -> None:
        c = self.client()
        name = self.limit_name()
        c.put_limit(name, 1)
        idle = c._transport._idle
        self.assertEqual(len(idle), 1)
        sock = idle[0].sock
        # Wait until the server has closed the idle connection (EOF readable).
        self.assertTrue(wait_until(lambda: sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"", 5))
        self.assertEqual(c.get_limit(name).capacity, 1)


class _Scripted(http.server.BaseHTTPRequestHandler):
    """A fake limitd: acquire answers come from server.script, in order."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: Optional[dict] = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        srv = self.server
        if self.path.endswith("/renew"):
            self._send(200, json.dumps(srv.lease).encode(), {"Content-Type": "application/json"})
            return
        request = json.loads(body)
        srv.seen.append((time.monotonic(), self.headers.get("Idempotency-Key"), request))
        if not srv.script:
            self._send(500, _problem("internal", 500), {"Content-Type": "application/problem+json"})
            return
        status, headers, payload = srv.script.pop(0)
        if status == 423 and srv.hold_polls:
            time.sleep(request.get("wait_seconds", 0))  # a real long-poll
        self._send(status, payload, headers)

    def do_DELETE(self) -> None:
        self._send(204, b"")


def _fake_server(script: List[Tuple[int, dict, bytes]], hold_polls: bool = True) -> http.server.ThreadingHTTPServer:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    srv.daemon_threads = True
    srv.script = script
    srv.hold_polls = hold_polls
    srv.seen = []
    srv.lease = {
        "id": "01ARZ3NDEKTSV4RRFFQ69G5FAV",
        "limit": "api",
        "slots": 1,
        "holder": "h",
        "fence": 9,
        "acquired_at": "2026-01-02T03:04:05.123456789Z",
        "expires_at": "2026-01-02T03:05:05.123456789Z",
        "ttl_seconds": 60,
    }
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def _problem(code: str, status: int) -> bytes:
    return json.dumps({"type": "t", "title": "t", "status": status, "detail": code, "code": code}).encode()


class TestBackoff(unittest.TestCase):
    def test_503_waits_retry_after_and_keeps_the_key(self) -> None:
        srv = _fake_server([], hold_polls=False)
        srv.script += [
            (503, {"Retry-After": "1", "Content-Type": "application/problem+json"}, _problem("shutting_down", 503)),
            (502, {"Content-Type": "text/html"}, b"<html>bad gateway</html>"),
            (423, {"Retry-After": "0", "Content-Type": "application/problem+json"}, _problem("no_slots", 423)),
            (201, {"Content-Type": "application/json"}, json.dumps(srv.lease).encode()),
        ]
        self.addCleanup(srv.server_close)
        self.addCleanup(srv.shutdown)
        c = limitd.Client(f"http://127.0.0.1:{srv.server_port}", token="", min_backoff=0.05, max_backoff=0.1)
        self.addCleanup(c.close)
        with self.assertLogs("limitd", "WARNING"):
            lease = c.acquire("api", ttl=60, wait=30)
        lease.release()
        self.assertEqual(lease.fence, 9)
        times = [t for t, _, _ in srv.seen]
        self.assertEqual(len(times), 4)
        self.assertGreaterEqual(times[1] - times[0], 1.0, "Retry-After: 1 was honoured")
        self.assertLess(times[2] - times[1], 0.5, "a 502 is retried after a short backoff")
        self.assertLess(times[3] - times[2], 0.2, "after a 423 the client asks again at once")
        self.assertEqual(len({k for _, k, _ in srv.seen}), 1)
        for _, _, body in srv.seen:
            self.assertLessEqual(body["wait_seconds"], 30)
            self.assertEqual(body["ttl_seconds"], 60)

    def test_each_poll_asks_for_the_remaining_wait_at_most_max_poll(self) -> None:
        srv = _fake_server([(423, {"Retry-After": "0"}, _problem("no_slots", 423))] * 5)
        self.addCleanup(srv.server_close)
        self.addCleanup(srv.shutdown)
        c = limitd.Client(f"http://127.0.0.1:{srv.server_port}", token="", max_poll=0.2)
        self.addCleanup(c.close)
        start = time.monotonic()
        with self.assertRaises(limitd.Timeout):
            c.acquire("api", wait=0.3)
        self.assertLess(time.monotonic() - start, 1.0)
        polls = [body["wait_seconds"] for _, _, body in srv.seen]
        self.assertEqual(len(polls), 2)
        self.assertEqual(polls[0], 0.2)
        self.assertLessEqual(polls[1], 0.1)

    def test_instant_423s_do_not_spin(self) -> None:
        # Something in between that answers long-polls at once must not
        # turn the loop into a busy one.
        srv = _fake_server([(423, {"Retry-After": "0"}, _problem("no_slots", 423))] * 100, hold_polls=False)
        self.addCleanup(srv.server_close)
        self.addCleanup(srv.shutdown)
        c = limitd.Client(f"http://127.0.0.1:{srv.server_port}", token="", max_poll=5)
        self.addCleanup(c.close)
        with self.assertRaises(limitd.Timeout):
            c.acquire("api", wait=1.5)
        self.assertLess(len(srv.seen), 20)

    def test_forever_wait_polls_max_poll(self) -> None:
        srv = _fake_server([])
        srv.script += [(201, {}, json.dumps(srv.lease).encode())]
        self.addCleanup(srv.server_close)
        self.addCleanup(srv.shutdown)
        c = limitd.Client(f"http://127.0.0.1:{srv.server_port}", token="")
        self.addCleanup(c.close)
        c.acquire("api").release()
        self.assertEqual(srv.seen[0][2]["wait_seconds"], 60)


if __name__ == "__main__":
    unittest.main()
