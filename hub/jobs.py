"""Background work on huey: SQLite by default, Redis when scaled out.

The queue carries only record ids; the record in the database is the source of truth. A worker claims a
record atomically before running it, so a job queued twice (by the recovery sweep after a crash) still
runs once, and the sweep re-queues anything accepted but unfinished, so a killed process loses nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from huey import Huey, MemoryHuey, RedisHuey, SqliteHuey, crontab
from huey.consumer import Consumer

log = logging.getLogger("hub.jobs")


class EmbeddedConsumer(Consumer):
    """A huey consumer that runs inside another server (``hub serve``): it must leave that server's
    signal handlers alone."""

    def _set_signal_handlers(self) -> None:
        pass


def make_huey(config: dict[str, Any]) -> Huey:
    queue = config["queue"]
    backend = queue["backend"]
    name = f"hub-{config.get('queue_namespace', 'jobs')}"
    if backend == "redis" or (backend == "sqlite" and queue.get("url", "") and queue["url"].startswith("redis")):
        url = queue.get("url") or config.get("redis_url")
        if not url:
            raise ValueError("queue.backend redis needs queue.url or REDIS_URL")
        return RedisHuey(name, url=url, utc=True, results=False)
    if backend == "memory":
        return MemoryHuey(name, utc=True, results=False)
    path = queue.get("url") or os.path.join(config["data_dir"], "queue.db")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    return SqliteHuey(name, filename=path, utc=True, results=False)


class JobQueue:
    def __init__(
        self,
        config: dict[str, Any],
        run_record: Callable[[str], None],
        every_minute: Callable[[], None],
    ) -> None:
        self.config = config
        self.huey = make_huey(config)
        self._run_record = self.huey.task(name="hub.run_record")(run_record)
        self.huey.periodic_task(crontab(minute="*"), name="hub.every_minute")(every_minute)
        self._consumer: Consumer | None = None

    def enqueue(self, record_id: str, delay: float | None = None) -> None:
        if delay:
            self._run_record.schedule(args=(record_id,), delay=delay)
        else:
            self._run_record(record_id)

    def start_workers(self, workers: int) -> None:
        if workers <= 0 or self._consumer is not None:
            return
        self._consumer = EmbeddedConsumer(self.huey, workers=workers, worker_type="thread", periodic=True, initial_delay=0.05, max_delay=0.5, backoff=1.2)
        self._consumer.start()
        log.info("started %d background worker thread(s)", workers)

    def run_worker_forever(self, workers: int) -> None:
        """``hub worker``: a standalone consumer with huey's own signal handling."""
        consumer = Consumer(self.huey, workers=workers, worker_type="thread", periodic=True, initial_delay=0.05, max_delay=0.5, backoff=1.2)
        consumer.run()

    def stop_workers(self) -> None:
        if self._consumer is not None:
            self._consumer.stop(graceful=True)
            self._consumer = None
