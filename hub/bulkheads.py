"""Bulkheads: per-provider limits on concurrent calls in one process, so a slow provider cannot hold every
thread (see :class:`Bulkheads`)."""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterator
from typing import Any

from hub.errors import TransientError

#: Whether the provider calls of this thread come from a background job (set by the job registry around a
#: handler): a job never waits for a busy provider, it is queued again.
_background_call: contextvars.ContextVar[bool] = contextvars.ContextVar("hub_background_call", default=False)
#: The :class:`ProviderBusyError` the last provider call of this job ended with (every provider was busy),
#: or None: the record ledger re-queues such a job after a short pause, without counting an attempt.
_busy_outcome: contextvars.ContextVar[ProviderBusyError | None] = contextvars.ContextVar("hub_busy_outcome", default=None)
#: The slots a background job holds, by provider: kept from its first call to a provider to the job's end.
_held_slots: contextvars.ContextVar[dict[str, _Pool] | None] = contextvars.ContextVar("hub_held_slots", default=None)


class ProviderBusyError(TransientError):
    """A provider's bulkhead is full: this process already has as many calls in flight to it as
    ``bulkhead`` allows (a slow provider holding its share of the threads). Nothing was sent. Not retried
    on the same provider (it is still busy a moment later), failed over to the next one; when every provider
    is busy, the API answers 503 ``provider_busy`` with ``Retry-After``, and a job is queued again."""

    retryable = False
    failover = True
    status_code = 503
    code = "provider_busy"

    def __init__(self, provider: str, limit: int, retry_after: float) -> None:
        super().__init__(
            f"Provider {provider} is busy: {limit} call(s) to it are in progress, the most this process allows at once",
            provider_code=self.code,
            retry_after=retry_after,
        )
        self.provider = provider
        self.limit = limit


class _Pool:
    """One provider's slots for one kind of thread: a bounded semaphore, and the number held (for views)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.semaphore = threading.BoundedSemaphore(limit)
        self.in_use = 0
        self.refused = 0
        self._lock = threading.Lock()

    def acquire(self, wait: float) -> bool:
        taken = self.semaphore.acquire(timeout=wait) if wait > 0 else self.semaphore.acquire(blocking=False)
        if not taken:
            with self._lock:
                self.refused += 1
            return False
        with self._lock:
            self.in_use += 1
        return True

    def release(self) -> None:
        with self._lock:
            self.in_use -= 1
        self.semaphore.release()


class Bulkheads:
    """Per-provider limits on concurrent calls in this process (the bulkhead pattern), so one slow provider
    cannot hold every thread and starve the calls to the others.

    Two pools per provider, one per kind of thread: background jobs (``background``, default: the job
    threads less one, at least one) and API requests (``requests``, default: the request threads less one).
    A job holds its slot from its first call to the provider to its end (a bulk send's later batches need no
    new slot: it is never turned away halfway, and its thread is the provider's until it ends). A job finding
    its provider's pool full does not wait: the pipeline fails over to the next provider, and
    when all are busy the job is queued again after ``retry_after`` seconds (no attempt counted). A request
    waits up to ``max_wait`` seconds for a slot, then fails over, or answers 503 ``provider_busy``.

    Per process on purpose (the standard bulkhead): it protects this process's threads, which is what a slow
    provider exhausts; a global cap across processes would be a distributed semaphore with leases, and would
    not free a single thread more. 0 means no limit."""

    DEFAULT_REQUEST_THREADS = 8  # gunicorn threads per ``hub serve`` process, unless ``--threads`` says otherwise

    def __init__(self, settings: dict[str, Any], background_threads: int) -> None:
        self.settings = settings
        self.max_wait = float(settings.get("max_wait", 0.5))
        self.retry_after = float(settings.get("retry_after", 1.0))
        self._threads = {"background": max(1, background_threads), "requests": self.DEFAULT_REQUEST_THREADS}
        self._pools: dict[tuple[str, str], _Pool | None] = {}
        self._lock = threading.Lock()

    def size_for(self, kind: str, threads: int) -> None:
        """This process runs ``threads`` threads of ``kind``: default limits follow (pools rebuilt; a call in
        flight releases the slot it took from the old pool)."""
        with self._lock:
            self._threads[kind] = max(1, threads)
            self._pools = {}

    def limit(self, provider: str, kind: str) -> int:
        """The most concurrent calls to ``provider`` from threads of ``kind`` (0: no limit)."""
        configured = (self.settings.get("providers") or {}).get(provider, {}).get(kind)
        if configured is None:
            configured = self.settings.get(kind)
        if configured is None:
            # Leave a thread to the other providers; with fewer than 3 threads a limit would halve what a
            # one-provider hub does (2 threads -> 1), so none by default there.
            threads = self._threads[kind]
            configured = threads - 1 if threads >= 3 else 0
        return int(configured)

    def _pool(self, provider: str, kind: str) -> _Pool | None:
        key = (provider, kind)
        if key in self._pools:
            return self._pools[key]
        with self._lock:
            if key not in self._pools:
                limit = self.limit(provider, kind)
                self._pools[key] = _Pool(limit) if limit > 0 else None
            return self._pools[key]

    @contextlib.contextmanager
    def slot(self, provider: str) -> Iterator[None]:
        """Hold one of ``provider``'s slots for the block; raise :class:`ProviderBusyError` when none is free
        (a job at once, a request after ``max_wait`` seconds)."""
        background = _background_call.get()
        held = _held_slots.get() if background else None
        if held is not None and provider in held:
            yield  # this job took the slot at its first call to the provider
            return
        pool = self._pool(provider, "background" if background else "requests")
        if pool is None:
            yield
            return
        if not pool.acquire(0.0 if background else self.max_wait):
            raise ProviderBusyError(provider, pool.limit, self.retry_after)
        if held is not None:
            held[provider] = pool  # released when the job ends (background_calls)
            yield
            return
        try:
            yield
        finally:
            pool.release()

    def view(self) -> dict[str, Any]:
        """Each provider's pools that were used: limit, calls in flight, calls refused so far."""
        providers: dict[str, Any] = {}
        with self._lock:  # a copy: other threads add pools meanwhile
            pools = sorted(self._pools.items())
        for (provider, kind), pool in pools:
            if pool is not None:
                providers.setdefault(provider, {})[kind] = {"limit": pool.limit, "inUse": pool.in_use, "refused": pool.refused}
        return {"maxWait": self.max_wait, "providers": providers}


@contextlib.contextmanager
def background_calls() -> Iterator[None]:
    """Provider calls in the block come from a background job (see :class:`Bulkheads`); the busy outcome
    noted by :func:`note_call_outcome` starts empty."""
    held: dict[str, _Pool] = {}
    background, busy, slots = _background_call.set(True), _busy_outcome.set(None), _held_slots.set(held)
    try:
        yield
    finally:
        for pool in held.values():
            pool.release()
        _held_slots.reset(slots)
        _busy_outcome.reset(busy)
        _background_call.reset(background)


def note_call_outcome(busy: ProviderBusyError | None) -> None:
    """The pipeline's last call ended with every provider busy (``busy``) or not (None)."""
    _busy_outcome.set(busy)


def busy_outcome() -> ProviderBusyError | None:
    """Whether this job's last provider call found every provider busy (see :func:`note_call_outcome`)."""
    return _busy_outcome.get()
