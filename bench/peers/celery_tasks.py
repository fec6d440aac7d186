"""The Celery side of the peer workloads: a 10 ms sleep (chain of 40) and a no-op (3 in a chain).

Broker and result backend are the local Redis (BENCH_REDIS_URL, default redis://127.0.0.1:6379/15). Celery's
defaults are kept (early ack, prefetch multiplier 4, JSON), as a user would start with.
"""

from __future__ import annotations

import os
import time

from celery import Celery

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")

app = Celery("bench_peers", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)


@app.task
def sleep10(_previous: object = None) -> None:
    time.sleep(0.010)


@app.task
def noop(_previous: object = None) -> float:
    """Returns when it finished (epoch seconds), so the driver reads trigger -> finish per run."""
    return time.time()
