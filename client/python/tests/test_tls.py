"""HTTPS: the client verifies the server with a given SSLContext and sends its token."""

from __future__ import annotations

import hashlib
import os
import shutil
import ssl
import subprocess
import tempfile
import unittest

import limitdtest

import limitd


@unittest.skipUnless(shutil.which("openssl"), "needs the openssl command to make a certificate")
class TestTLS(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.tmp = tempfile.mkdtemp(prefix="limitd-pytest-tls-")
        cls.addClassCleanup(shutil.rmtree, cls.tmp, True)
        cert, key = os.path.join(cls.tmp, "cert.pem"), os.path.join(cls.tmp, "key.pem")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-days", "1", "-subj", "/CN=limitd-test", "-addext", "subjectAltName=IP:127.0.0.1",
             "-keyout", key, "-out", cert],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60,
        )
        tokens = os.path.join(cls.tmp, "tokens")
        with open(tokens, "w") as f:
            f.write(f"ops admin * {hashlib.sha256(b'ops-secret').hexdigest()}\n")
        cls.cert = cert
        cls.server = limitdtest.Server(
            "--tls-cert", cert, "--tls-key", key, "--tokens-file", tokens,
            ssl_context=ssl.create_default_context(cafile=cert),
        ).start()
        cls.addClassCleanup(cls.server.close)

    def test_https_with_custom_ca(self) -> None:
        c = limitd.Client(self.server.url, token="ops-secret", ssl_context=ssl.create_default_context(cafile=self.cert))
        self.addCleanup(c.close)
        c.put_limit("tls", 1)
        with c.slot("tls", ttl=5) as lease:
            self.assertEqual(c.leases("tls")[0].id, lease.id)

    def test_unknown_ca_is_refused(self) -> None:
        c = limitd.Client(f"https://127.0.0.1:{self.server.port}", token="ops-secret", timeout=5)
        self.addCleanup(c.close)
        with self.assertRaises(limitd.Unreachable) as cm:
            c.list_limits()
        self.assertIsInstance(cm.exception.__cause__, ssl.SSLError)


if __name__ == "__main__":
    unittest.main()
