"""Test helpers: build the real limitd binary and run servers of it.

LIMITD_BIN may name a prebuilt binary; otherwise the first test that needs
one runs ``go build ./cmd/limitd`` from the repository root into a
temporary folder (once per test run). Each server listens on a free port of
127.0.0.1 with its own temporary database and is stopped by its PID.
"""

from __future__ import annotations

import atexit
import functools
import http.client
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid
from typing import List, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
PKG_ROOT = os.path.dirname(HERE)  # client/python
REPO = os.path.dirname(os.path.dirname(PKG_ROOT))

# The tests run from a checkout, not an installed package.
if PKG_ROOT not in sys.path:
    sys.path.insert(0, PKG_ROOT)


@functools.lru_cache(maxsize=None)
def binary() -> str:
    """Path of the limitd binary, built on first use unless LIMITD_BIN is set."""
    prebuilt = os.environ.get("LIMITD_BIN")
    if prebuilt:
        if not os.access(prebuilt, os.X_OK):
            raise RuntimeError(f"LIMITD_BIN={prebuilt!r} is not an executable file")
        return prebuilt
    go = shutil.which("go") or "/usr/local/go/bin/go"
    out_dir = tempfile.mkdtemp(prefix="limitd-pytest-bin-")
    atexit.register(shutil.rmtree, out_dir, True)
    path = os.path.join(out_dir, "limitd")
    proc = subprocess.run(
        [go, "build", "-o", path, "./cmd/limitd"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=900,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"go build ./cmd/limitd failed:\n{proc.stdout.decode(errors='replace')}")
    return path


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One limitd process with a temporary database.

    ``port`` pins the port (to restart a server where clients expect it);
    ``db_dir`` reuses the database folder of an earlier server.
    """

    def __init__(
        self,
        *flags: str,
        port: Optional[int] = None,
        db_dir: Optional[str] = None,
        env: Optional[dict] = None,
        ssl_context: Optional[ssl.SSLContext] = None,
    ) -> None:
        self.ssl_context = ssl_context  # set for a server started with --tls-cert
        self.flags: List[str] = list(flags)
        self._own_dir = db_dir is None
        self.dir = db_dir or tempfile.mkdtemp(prefix="limitd-pytest-")
        self.db = os.path.join(self.dir, "limitd.db")
        self._fixed_port = port
        self.port = port or 0
        self._env = env
        self.proc: Optional[subprocess.Popen] = None
        self._log_path = os.path.join(self.dir, f"server-{uuid.uuid4().hex[:8]}.log")

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> "Server":
        """Start the process and wait until /readyz answers 200."""
        for _ in range(5):
            if not self._fixed_port:
                self.port = free_port()
            env = dict(os.environ)
            # The tests must not inherit a developer's server settings.
            for k in list(env):
                if k.startswith("LIMITD_"):
                    del env[k]
            env.update(self._env or {})
            log = open(self._log_path, "ab")
            try:
                self.proc = subprocess.Popen(
                    [binary(), "serve", "--addr", f"127.0.0.1:{self.port}", "--db", self.db, *self.flags],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                )
            finally:
                log.close()
            if self._wait_ready(timeout):
                return self
            if self._fixed_port:
                break
            # Most likely someone took the port between free_port and bind.
        raise RuntimeError(f"limitd did not become ready; log:\n{self.log()}")

    def _wait_ready(self, timeout: float) -> bool:
        """Poll /readyz (bounded): there is no event to wait on across processes."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                conn: http.client.HTTPConnection
                if self.ssl_context is not None:
                    conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=1, context=self.ssl_context)
                else:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                conn.request("GET", "/readyz")
                status = conn.getresponse().status
                conn.close()
                if status == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.02)
        self.kill()
        return False

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM (a graceful stop) and wait; SIGKILL if it takes too long."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL the process (a crash) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def close(self) -> None:
        """Stop the process and remove the temporary folder."""
        try:
            self.stop()
        finally:
            if self._own_dir:
                shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        try:
            with open(self._log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""


class ServerTestCase(unittest.TestCase):
    """A test case class with one server for all of its tests.

    Tests use limit names of their own (:meth:`limit_name`), so they do not
    disturb one another.
    """

    server_flags: Sequence[str] = ()
    server: Server

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.server = Server(*cls.server_flags).start()
        cls.addClassCleanup(cls.server.close)

    def limit_name(self, suffix: str = "") -> str:
        """A limit name unique to this test."""
        base = re.sub(r"[^A-Za-z0-9._:-]", "-", self._testMethodName)
        return f"{base[:80]}{suffix}-{uuid.uuid4().hex[:8]}"

    def client(self, **kwargs: object):  # -> limitd.Client
        import limitd

        c = limitd.Client(self.server.url, token="", **kwargs)  # type: ignore[arg-type]
        self.addCleanup(c.close)
        return c


def wait_until(pred, timeout: float = 5.0, interval: float = 0.02) -> bool:
    """Poll ``pred`` until true or ``timeout``: for state only visible over HTTP."""
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def max_overlap(intervals: Sequence[tuple]) -> int:
    """The largest number of (start, end) intervals open at one instant.

    At equal times an end counts before a start: back-to-back calls do not overlap.
    """
    events = []
    for start, end in intervals:
        events.append((start, 1))
        events.append((end, -1))
    events.sort(key=lambda e: (e[0], e[1]))
    cur = best = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


def run_in_thread(fn, *args, **kwargs):
    """Start fn in a daemon thread; return (thread, result dict with 'value' or 'error')."""
    result: dict = {}

    def target() -> None:
        try:
            result["value"] = fn(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            result["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, result
