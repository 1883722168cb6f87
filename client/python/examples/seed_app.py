"""The seed's script, with one line changed to use limitd.

Before, the limit held only inside one process (a threading.Semaphore):

    from utilities.concurrency import limit_concurrency

    @limit_concurrency(max_workers=3)
    def call_api(i): ...

After, the limit "api" (capacity 3, created once by an admin) holds across
every process and machine that talks to the same limitd:

    from limitd import limit_concurrency

    @limit_concurrency("api")
    def call_api(i): ...

Run several copies at once, e.g. three in parallel:

    limitd limits set api --capacity 3     # or: curl -X PUT -d '{"capacity":3}' $LIMITD_URL/v1/limits/api
    for i in 1 2 3; do python3 seed_app.py 10 & done; wait

The server comes from LIMITD_URL (default http://127.0.0.1:7070) and the
token, if any, from LIMITD_TOKEN. When SEED_LOG names a file, each call
appends "pid start end" to it (the tests check the intervals).
"""

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from limitd import limit_concurrency


@limit_concurrency("api")
def call_api(i: int) -> int:
    """One "API call" that takes 0.2 s; at most 3 run at once, everywhere."""
    start = time.time()
    time.sleep(0.2)
    record(start, time.time())
    return i


def record(start: float, end: float) -> None:
    path = os.environ.get("SEED_LOG")
    if path:
        # One short write in append mode: lines of concurrent writers do not interleave.
        with open(path, "a") as f:
            f.write(f"{os.getpid()} {start:.6f} {end:.6f}\n")


if __name__ == "__main__":
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(call_api, range(calls)))
    print(f"{len(results)} calls done in process {os.getpid()}")
