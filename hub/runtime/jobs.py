"""Background work on huey: SQLite by default, Redis when scaled out.

The queue carries only record ids; the record in the database is the source of truth. A worker claims a
record atomically before running it, so a job queued twice (by the recovery sweep after a crash) still
runs once, and the sweep re-queues anything accepted but unfinished, so a killed process loses nothing.

:class:`JobRegistry` maps a record kind to the service handler that runs it, and holds the periodic jobs
(every minute) and the long-running workers the services register.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from huey import Huey, MemoryHuey, RedisHuey, SqliteHuey, crontab
from huey.consumer import Consumer

from hub.bulkheads import Bulkheads, background_calls
from hub.resilience import is_database_outage

log = logging.getLogger("hub.jobs")

#: A record handler: given the claimed record, does its work and settles its status.
RecordHandler = Callable[[Any], None]


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


class JobRegistry:
    """Record kind -> handler, periodic jobs, long-running workers; the huey queue under them."""

    def __init__(self, config: dict[str, Any], run_record: Callable[[str], None]) -> None:
        self.config = config
        self.huey = make_huey(config)
        #: Per-provider concurrency limits of this process; job threads' defaults follow the worker count.
        self.bulkheads = Bulkheads(config["bulkhead"], max(1, config["queue"]["workers"]))
        self.handlers: dict[str, RecordHandler] = {}
        self.periodic: list[Callable[[], None]] = []
        self.workers: dict[str, Callable[[threading.Event], None]] = {}
        #: ``lease_keeper(record)``: a context that renews the claimed record's lease while its handler runs
        #: (set by the record ledger), so every kind of job may hold a short lease.
        self.lease_keeper: Callable[[Any], AbstractContextManager[Any]] = lambda _record: nullcontext()
        self._run_record = self.huey.task(name="hub.run_record")(self._surviving_database_outages(run_record))
        self.huey.periodic_task(crontab(minute="*"), name="hub.every_minute")(self.run_periodic)
        self._consumer: Consumer | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        #: When a graceful stop began (SIGTERM): running jobs may finish until then + graceful_timeout.
        self._drain_deadline: float | None = None

    def _surviving_database_outages(self, run_record: Callable[[str], None]) -> Callable[[str], None]:
        """``run_record``, queued again when the database goes away under it: huey does not redeliver a task
        that raised, and the minute's sweep would find the record only a minute later. The retry comes once a
        lease has passed: a record claimed before the outage is running under its lease, and the claim of a
        retry is refused until the lease ends (the queue lives outside the database, so it still takes it)."""

        def run(record_id: str) -> None:
            try:
                run_record(record_id)
            except Exception as error:
                if not is_database_outage(error):
                    raise
                delay = float(self.config["queue"]["lease_seconds"]) + 0.5
                log.warning("job %s: the database is unavailable (%s); trying again in %.1f s", record_id, type(error).__name__, delay)
                self.enqueue(record_id, delay=delay)

        return run

    def register_handler(self, kind: str, handler: RecordHandler) -> None:
        """``handler(record)`` runs a claimed record of ``kind`` in a worker, its lease renewed meanwhile."""

        def kept(record: Any) -> None:
            # background_calls: a busy provider makes the job come back later instead of holding this thread.
            with self.lease_keeper(record), background_calls():
                handler(record)

        self.handlers[kind] = kept

    def register_periodic(self, job: Callable[[], None]) -> None:
        """``job()`` runs once a minute in one worker (huey fires each periodic task once per tick)."""
        self.periodic.append(job)

    def register_worker(self, name: str, target: Callable[[threading.Event], None]) -> None:
        """A long-running worker: ``target(stop_event)`` runs in its own thread while workers run; it must
        hold a lease for anything that must run in one process only, and return when ``stop_event`` is set."""
        self.workers[name] = target

    def run_periodic(self) -> None:
        for job in self.periodic:
            try:
                job()
            except Exception:
                log.exception("periodic job %s failed", getattr(job, "__qualname__", job))

    def enqueue(self, record_id: str, delay: float | None = None) -> None:
        if delay:
            self._run_record.schedule(args=(record_id,), delay=delay)
        else:
            self._run_record(record_id)

    def _start_long_running(self) -> None:
        self._stop.clear()
        for name, target in self.workers.items():
            thread = threading.Thread(target=target, args=(self._stop,), name=f"hub-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def start_workers(self, workers: int) -> None:
        if workers <= 0 or self._consumer is not None:
            return
        self._drain_deadline = None
        self.bulkheads.size_for("background", workers)
        self._consumer = EmbeddedConsumer(self.huey, workers=workers, worker_type="thread", periodic=True, initial_delay=0.05, max_delay=0.5, backoff=1.2)
        self._consumer.start()
        self._start_long_running()
        log.info("started %d background worker thread(s)", workers)

    @property
    def graceful_timeout(self) -> float:
        return float(self.config.get("server", {}).get("graceful_timeout", 30.0))

    def check_queue(self) -> int:
        """The queue's length, read from its storage (SQLite file, Redis): raises when it cannot be reached."""
        return int(self.huey.storage.queue_size())

    def begin_drain(self) -> None:
        """A graceful stop begins (SIGTERM): take no new job and stop the long-running workers now; running
        jobs may finish until :meth:`stop_workers`, at most ``server.graceful_timeout`` from now."""
        if self._drain_deadline is None:
            self._drain_deadline = time.monotonic() + self.graceful_timeout
        self._stop.set()
        if self._consumer is not None:
            self._consumer.stop_flag.set()  # each huey worker ends after its current task; nothing new is taken

    def _time_left(self) -> float:
        deadline = self._drain_deadline if self._drain_deadline is not None else time.monotonic() + self.graceful_timeout
        return max(0.0, deadline - time.monotonic())

    def run_worker_forever(self, workers: int) -> bool:
        """``hub worker``: a standalone consumer with huey's own signal handling. SIGTERM is the graceful stop:
        no new job is taken, running ones get up to ``server.graceful_timeout`` to finish (a second SIGTERM or
        SIGINT stops at once). Returns whether every job finished; one that did not stays leased, and the
        lease sweep (``recover_unfinished``) queues it again once its lease ends."""
        self.bulkheads.size_for("background", workers)
        consumer = Consumer(
            self.huey,
            workers=workers,
            worker_type="thread",
            periodic=True,
            initial_delay=0.05,
            max_delay=0.5,
            backoff=1.2,
            graceful_signal="TERM",
            shutdown_timeout=self.graceful_timeout,
        )
        self._start_long_running()
        try:
            consumer.run()
        finally:
            self._stop.set()
            for thread in self._threads:  # daemon threads: let them release what they hold (leases) first
                thread.join(timeout=5)
        running = sum(1 for _worker, thread in consumer.worker_threads if thread.is_alive())
        if running:
            log.warning("%d job(s) still running after %.0f s: left leased, taken over when the lease ends", running, self.graceful_timeout)
        return running == 0

    def stop_workers(self) -> bool:
        """Stop the embedded workers: running jobs finish, bounded by what is left of the graceful timeout.
        Returns whether every job finished (one that did not stays leased)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=min(5.0, self._time_left()))
        self._threads.clear()
        finished = True
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            consumer.shutdown_timeout = self._time_left()
            consumer.stop(graceful=True)
            finished = not any(thread.is_alive() for _worker, thread in consumer.worker_threads)
            if not finished:
                log.warning("background jobs still running at the graceful timeout: left leased, taken over when the lease ends")
        return finished
