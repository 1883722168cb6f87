"""The seed's scenario: 30 calls of 0.2 s, limit 3, from 3 processes of 10 threads."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import limitdtest
from limitdtest import ServerTestCase, max_overlap

import limitd

SEED_APP = os.path.join(limitdtest.PKG_ROOT, "examples", "seed_app.py")


def read_intervals(path: str):
    out = []
    with open(path) as f:
        for line in f:
            pid, start, end = line.split()
            out.append((int(pid), float(start), float(end)))
    return out


class TestSeedScenario(ServerTestCase):
    def test_seed_code_with_limitd_import_across_processes(self) -> None:
        """examples/seed_app.py is the seed's code with `from limitd import limit_concurrency`."""
        admin = self.client()
        admin.put_limit("api", 3)
        self.addCleanup(admin.delete_limit, "api")
        with open(SEED_APP) as f:
            source = f.read()
        self.assertIn("from limitd import limit_concurrency", source)
        self.assertIn('@limit_concurrency("api")', source)

        tmp = tempfile.mkdtemp(prefix="limitd-pytest-seed-")
        self.addCleanup(shutil.rmtree, tmp, True)
        log = os.path.join(tmp, "intervals")
        env = dict(os.environ)
        env.update(
            LIMITD_URL=self.server.url,
            LIMITD_TOKEN="",
            SEED_LOG=log,
            PYTHONPATH=os.pathsep.join(p for p in (limitdtest.PKG_ROOT, env.get("PYTHONPATH")) if p),
        )
        procs = [
            subprocess.Popen(
                [sys.executable, SEED_APP, "10"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            for _ in range(3)
        ]
        outputs = []
        for p in procs:
            try:
                out, _ = p.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                for q in procs:
                    if q.poll() is None:
                        os.kill(q.pid, 9)
                raise
            outputs.append(out.decode(errors="replace"))
            self.assertEqual(p.returncode, 0, out)
        for out in outputs:
            self.assertIn("10 calls done", out)

        records = read_intervals(log)
        self.assertEqual(len(records), 30)
        self.assertEqual(len({pid for pid, _, _ in records}), 3, "calls came from 3 processes")
        intervals = [(s, e) for _, s, e in records]
        peak = max_overlap(intervals)
        self.assertLessEqual(peak, 3, "never more than 3 calls in flight")
        self.assertEqual(peak, 3, "the limit's 3 slots were used in parallel")
        span = max(e for _, e in intervals) - min(s for s, _ in intervals)
        # 30 calls x 0.2 s / 3 slots = 2 s; a semaphore per process would let
        # 9 run at once (~0.8 s), a 30 s poll would take minutes.
        print(f"\nseed scenario: 30 calls, peak {peak} in flight, {span:.2f} s", file=sys.stderr)
        self.assertGreaterEqual(span, 1.9)
        self.assertLess(span, 6.0)
        self.assertEqual(admin.get_limit("api").in_use, 0)


@unittest.skipUnless("fork" in multiprocessing.get_all_start_methods(), "needs fork")
class TestForkedWorkers(ServerTestCase):
    def test_forked_children_share_the_limit(self) -> None:
        admin = self.client()
        name = self.limit_name()
        admin.put_limit(name, 2)
        tmp = tempfile.mkdtemp(prefix="limitd-pytest-fork-")
        self.addCleanup(shutil.rmtree, tmp, True)
        log = os.path.join(tmp, "intervals")

        @limitd.limit_concurrency(name, url=self.server.url, token="")
        def work(i: int) -> None:
            start = time.time()
            time.sleep(0.05)
            with open(log, "a") as f:
                f.write(f"{os.getpid()} {start:.6f} {time.time():.6f}\n")

        work(-1)  # the parent's client now has a pooled connection the children must not share

        def child() -> None:
            threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        ctx = multiprocessing.get_context("fork")
        procs = [ctx.Process(target=child) for _ in range(3)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
            self.assertEqual(p.exitcode, 0)
        work(-2)  # the parent's pooled connection still works after the children closed their copies
        records = read_intervals(log)
        self.assertEqual(len(records), 14)
        self.assertLessEqual(max_overlap([(s, e) for _, s, e in records]), 2)
        self.assertEqual(admin.get_limit(name).in_use, 0)


if __name__ == "__main__":
    unittest.main()
