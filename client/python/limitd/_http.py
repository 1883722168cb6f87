"""A small thread-safe HTTP/1.1 transport over a pool of keep-alive connections.

``http.client.HTTPConnection`` is not thread-safe, so each request borrows a
connection from an idle pool (or opens one) and gives it back once the
answer has been read completely. The pool belongs to one process: after a
``fork`` the child drops the parent's connections instead of sharing their
sockets.
"""

from __future__ import annotations

import http.client
import os
import ssl
import threading
import urllib.parse
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple, Union

_Conn = Union[http.client.HTTPConnection, http.client.HTTPSConnection]

# Errors that mean a pooled keep-alive connection had been closed by the
# server (its idle timeout) before we reused it: the request never reached a
# handler, so sending it again on a fresh connection is safe.
_STALE = (
    http.client.RemoteDisconnected,
    ConnectionResetError,
    BrokenPipeError,
    ConnectionAbortedError,
)


@dataclass
class Response:
    """A complete HTTP answer."""

    status: int
    headers: Dict[str, str]  # names in lower case
    body: bytes


class Transport:
    """Sends requests to one server over pooled keep-alive connections."""

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float,
        ssl_context: Optional[ssl.SSLContext] = None,
        max_idle: int = 16,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"limitd: url {url!r} is not an http:// or https:// URL with a host")
        if parts.query or parts.fragment:
            raise ValueError(f"limitd: url {url!r} must not have a query or fragment")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        # A path prefix lets the server sit behind a gateway at /limitd.
        self.prefix = parts.path.rstrip("/")
        self._ssl_context = ssl_context
        self._connect_timeout = connect_timeout
        self._max_idle = max_idle
        self._lock = threading.Lock()
        self._idle: List[_Conn] = []
        self._pid = os.getpid()

    def _take(self, timeout: float) -> Tuple[_Conn, bool]:
        """Borrow an idle connection (reused=True) or make a new one."""
        with self._lock:
            if self._pid != os.getpid():
                # Forked: those connections are the parent's. Using them
                # would mix two processes' requests on one socket; closing
                # our copies of the descriptors does not disturb the parent
                # (close without shutdown sends nothing).
                for stale in self._idle:
                    stale.close()
                self._idle = []
                self._pid = os.getpid()
            if self._idle:
                return self._idle.pop(), True
        ct = min(self._connect_timeout, timeout)
        conn: _Conn
        if self._https:
            conn = http.client.HTTPSConnection(
                self._host, self._port, timeout=ct, context=self._ssl_context
            )
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=ct)
        return conn, False

    def _give_back(self, conn: _Conn) -> None:
        with self._lock:
            if self._pid == os.getpid() and len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        """Close every idle connection; requests in flight finish normally."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Optional[bytes],
        headers: Mapping[str, str],
        timeout: float,
    ) -> Response:
        """Send one request and read the whole answer.

        ``timeout`` bounds connecting and every socket read. Raises
        ``OSError`` or ``http.client.HTTPException`` on transport failures;
        HTTP error statuses are returned, not raised.
        """
        for attempt in (0, 1):
            conn, reused = self._take(timeout)
            try:
                if conn.sock is None:
                    conn.connect()
                # The connect timeout stays on the socket otherwise; a
                # long-poll needs a read timeout longer than its wait.
                assert conn.sock is not None
                conn.sock.settimeout(timeout)
                conn.request(method, self.prefix + path, body=body, headers=dict(headers))
                resp = conn.getresponse()
                data = resp.read()
            except _STALE:
                conn.close()
                if reused and attempt == 0:
                    continue
                raise
            except BaseException:
                conn.close()
                raise
            hdrs = {k.lower(): v for k, v in resp.getheaders()}
            if resp.will_close:
                conn.close()
            else:
                self._give_back(conn)
            return Response(resp.status, hdrs, data)
        raise AssertionError("unreachable")  # pragma: no cover
