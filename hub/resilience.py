"""Retries (tenacity), circuit breakers (pybreaker) and rate limits (limits).

None of it is hand-written: this module only wires the libraries to the hub's error hierarchy and to
Redis when the hub runs as several processes.
"""

from __future__ import annotations

import contextlib
import logging
import smtplib
import socket
import threading
import time
import weakref
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pybreaker
import requests
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import MovingWindowRateLimiter
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from hub.config import DEFAULT_RATE_LIMITS, service_key
from hub.errors import HubError, PermanentError, ProviderError, ProviderThrottledError, RateLimitedError, TransientError

log = logging.getLogger("hub.resilience")

T = TypeVar("T")


def is_transport_failure(error: BaseException) -> bool:
    """The network between the hub and a provider failed (refused, reset, timed out, name not resolved,
    server hung up) -- something a plugin did not translate into a :class:`TransientError`."""
    if isinstance(error, ConnectionError | TimeoutError | socket.gaierror | smtplib.SMTPServerDisconnected):
        return True
    return isinstance(error, requests.ConnectionError | requests.Timeout)


def is_provider_failure(error: BaseException) -> bool:
    """Evidence that the provider is down, which a circuit breaker counts: a transient error or a transport
    failure. An unexpected exception (a plugin's bug, an input it did not expect: ``ENAMETOOLONG``, a lone
    surrogate) is not: counting it would let one tenant's request open the breaker for every tenant."""
    if isinstance(error, ProviderThrottledError):
        return False  # a quota says the provider is up
    return isinstance(error, TransientError) or is_transport_failure(error)


def is_retryable(error: BaseException) -> bool:
    """Transient provider errors and transport failures are worth another try; declines, bad requests,
    configuration errors, an open breaker and unexpected exceptions are not (a plugin's bug fails the same
    way again: trying once is enough, and the next provider may still take the call)."""
    if isinstance(error, pybreaker.CircuitBreakerError):
        return False
    if isinstance(error, ProviderError):
        return error.retryable
    return is_transport_failure(error)


def allows_failover(error: BaseException) -> bool:
    if isinstance(error, pybreaker.CircuitBreakerError):
        return True
    if isinstance(error, ProviderError):
        return error.failover
    return not isinstance(error, HubError)


class RetryPolicy:
    """Exponential backoff with jitter on transient errors, honouring a provider's ``retry_after``."""

    def __init__(
        self, attempts: int = 3, initial_delay: float = 0.2, max_delay: float = 5.0, jitter: float = 0.2, max_retry_after: float = 60.0
    ) -> None:
        self.attempts = attempts
        self.max_delay = max_delay
        self.max_retry_after = max_retry_after
        self._backoff = wait_exponential_jitter(multiplier=initial_delay, max=max_delay, jitter=jitter)

    def _wait(self, state: RetryCallState) -> float:
        delay = self._backoff(state)
        error = state.outcome.exception() if state.outcome else None
        retry_after = getattr(error, "retry_after", None)
        if retry_after:
            # The provider knows when it will take the call (Shopify's bucket refill, a Retry-After): waiting
            # less burns an attempt, waiting more wastes time. Capped so one answer cannot park a thread.
            return min(float(retry_after), self.max_retry_after)
        return delay

    def call(self, function: Callable[[], T], on_retry: Callable[[BaseException, int], None] | None = None) -> T:
        def before_sleep(state: RetryCallState) -> None:
            if on_retry and state.outcome is not None:
                on_retry(state.outcome.exception(), state.attempt_number)

        retrying = Retrying(
            stop=stop_after_attempt(self.attempts),
            wait=self._wait,
            retry=retry_if_exception(is_retryable),
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(function)


def _store_errors() -> tuple[type[BaseException], ...]:
    """What a Redis outage raises (the client's errors, and the socket's under them)."""
    try:
        from redis.exceptions import RedisError
    except ImportError:  # no Redis client installed: nothing shared to lose
        return (ConnectionError, TimeoutError)
    return (RedisError, ConnectionError, TimeoutError)


class SharedState:
    """Whether the store the processes share limits and breakers in (Redis) answers. While it does not, each
    process counts on its own -- one warning, and a flag in ``GET /status`` -- rather than failing calls;
    Redis is tried again every :attr:`RETRY_SECONDS`, and its state is used again as soon as it answers."""

    RETRY_SECONDS = 5.0

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.errors = _store_errors()
        self.degraded_since: datetime | None = None
        self.last_error: str | None = None
        #: Failed calls so far (a caller compares it before and after a call).
        self.failures = 0
        self._next_try = 0.0
        self._lock = threading.Lock()

    @property
    def degraded(self) -> bool:
        return self.degraded_since is not None

    def failed(self, error: BaseException) -> None:
        with self._lock:
            self.failures += 1
            self._next_try = time.monotonic() + self.RETRY_SECONDS
            self.last_error = f"{type(error).__name__}: {error}"[:300]
            if self.degraded_since is None:
                self.degraded_since = datetime.now(UTC)
                log.warning(
                    "Redis (shared rate limits and circuit breakers) does not answer: %s; each process limits and "
                    "breaks on its own until it is back (tried again every %g s)", self.last_error, self.RETRY_SECONDS,
                )

    def recovered(self) -> None:
        if self.degraded_since is None:
            return
        with self._lock:
            if self.degraded_since is not None:
                log.warning("Redis answers again: rate limits and circuit breakers are shared again")
                self.degraded_since = None

    def should_try(self) -> bool:
        """Use the shared store now? Yes while it answers; when it did not, once per retry period."""
        if self.degraded_since is None:
            return True
        with self._lock:
            if time.monotonic() < self._next_try:
                return False
            self._next_try = time.monotonic() + self.RETRY_SECONDS
            return True

    def view(self) -> dict[str, Any]:
        if self.url is None:
            return {"shared": False, "status": "local"}
        if self.degraded_since is None:
            return {"shared": True, "status": "ok"}
        return {"shared": True, "status": "degraded", "since": self.degraded_since.isoformat(), "error": self.last_error}


class _WatchedRedis:
    """A Redis client that reports its failures to :class:`SharedState` (pybreaker's storage swallows them)."""

    def __init__(self, client: Any, shared: SharedState) -> None:
        self._client = client
        self._shared = shared

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def watched(*args: Any, **kwargs: Any) -> Any:
            try:
                return attribute(*args, **kwargs)
            except self._shared.errors as error:
                self._shared.failed(error)
                raise

        return watched


#: pybreaker logs a traceback for every Redis call that fails: :class:`SharedState` says it once instead.
_QUIET = logging.getLogger("hub.resilience.pybreaker-redis")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


class FallbackCircuitStorage(pybreaker.CircuitBreakerStorage):
    """A breaker's state in Redis, or in this process while Redis does not answer (see :class:`SharedState`)."""

    def __init__(self, client: Any, shared: SharedState, namespace: str) -> None:
        super().__init__("redis-with-fallback")
        self._client = _WatchedRedis(client, shared)
        self._shared = shared
        self._namespace = namespace
        self._redis: pybreaker.CircuitRedisStorage | None = None
        self.local = pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)

    def _store(self) -> pybreaker.CircuitBreakerStorage:
        if not self._shared.should_try():
            return self.local
        if self._redis is None:
            try:
                storage = pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, self._client, namespace=self._namespace)
            except self._shared.errors:
                return self.local
            storage.logger = _QUIET  # type: ignore[misc]
            self._redis = storage
        return self._redis

    def _do(self, action: Callable[[pybreaker.CircuitBreakerStorage], T]) -> T:
        store = self._store()
        if store is self.local:
            return action(store)
        failures = self._shared.failures
        result = action(store)
        if self._shared.failures != failures:
            return action(self.local)  # Redis failed during the call: pybreaker answered its fallback
        self._shared.recovered()
        return result

    @property
    def state(self) -> str:
        return self._do(lambda store: store.state)

    @state.setter
    def state(self, state: str) -> None:
        def assign(store: pybreaker.CircuitBreakerStorage) -> None:
            store.state = state

        self._do(assign)
        self.local.state = state  # the local copy starts from the last state known if Redis goes

    def increment_counter(self) -> None:
        self._do(lambda store: store.increment_counter())

    def reset_counter(self) -> None:
        self._do(lambda store: store.reset_counter())

    def increment_success_counter(self) -> None:
        self._do(lambda store: store.increment_success_counter())

    def reset_success_counter(self) -> None:
        self._do(lambda store: store.reset_success_counter())

    @property
    def counter(self) -> int:
        return self._do(lambda store: store.counter)

    @property
    def success_counter(self) -> int:
        return self._do(lambda store: store.success_counter)

    @property
    def opened_at(self) -> datetime | None:
        return self._do(lambda store: store.opened_at)

    @opened_at.setter
    def opened_at(self, now: datetime) -> None:
        def assign(store: pybreaker.CircuitBreakerStorage) -> None:
            store.opened_at = now

        self._do(assign)


class Breakers:
    """One pybreaker circuit breaker per provider; state in Redis when configured so that several hub
    processes agree on which providers are down (each on its own while Redis is down: :class:`SharedState`)."""

    def __init__(
        self, fail_max: int = 5, reset_timeout: float = 30.0, redis_url: str | None = None, namespace: str = "hub", shared: SharedState | None = None
    ) -> None:
        self.fail_max = fail_max
        self.reset_timeout = reset_timeout
        self.namespace = namespace
        self.shared = shared or SharedState(redis_url)
        self._redis = None
        if redis_url:
            import redis

            # pybreaker's Redis storage compares raw bytes, so no decode_responses here; short timeouts, so a
            # Redis that hangs degrades calls by a fraction of a second, not a socket timeout.
            self._redis = redis.Redis.from_url(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._breakers: dict[str, pybreaker.CircuitBreaker] = {}
        self._lock = threading.Lock()

    def get(self, provider_name: str) -> pybreaker.CircuitBreaker:
        breaker = self._breakers.get(provider_name)
        if breaker is not None:
            return breaker
        with self._lock:
            breaker = self._breakers.get(provider_name)
            if breaker is None:
                storage = None
                if self._redis is not None:
                    storage = FallbackCircuitStorage(self._redis, self.shared, f"{self.namespace}:breaker:{provider_name}")
                breaker = pybreaker.CircuitBreaker(
                    fail_max=self.fail_max,
                    reset_timeout=self.reset_timeout,
                    # A declined card or an invalid recipient says nothing about the provider's health.
                    exclude=[PermanentError],
                    state_storage=storage,
                    name=provider_name,
                    throw_new_error_on_trip=False,
                )
                self._breakers[provider_name] = breaker
            return breaker

    def state(self, provider_name: str) -> str:
        return str(self.get(provider_name).current_state)

    def call(self, provider_name: str, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return guarded_call(self.get(provider_name), function, *args, **kwargs)


def guarded_call(breaker: pybreaker.CircuitBreaker, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``function`` under ``breaker``'s rules without holding its lock during the call.

    ``CircuitBreaker.call`` keeps the breaker's lock for the whole call, so every call to one provider waits
    for the one before it: a pool of SMTP connections, or a server's threads, would send one at a time. Here
    the lock is held only to decide (closed: go; open: refuse until the reset timeout has passed; half-open:
    one trial at a time, the others refused as if open) and to count the outcome; pybreaker's states keep
    their own rules (failures counted to ``fail_max``, excluded errors count as successes, a failed trial
    opens again, a successful one closes). Only :func:`is_provider_failure` errors are counted as failures;
    an unexpected exception neither counts nor resets the count (a trial that hit one stays half-open)."""
    with breaker._lock:
        state = breaker.current_state
        if state == pybreaker.STATE_OPEN:
            opened_at = breaker._state_storage.opened_at
            if opened_at and datetime.now(UTC) < opened_at + timedelta(seconds=breaker.reset_timeout):
                raise pybreaker.CircuitBreakerError("circuit open")
            breaker.half_open()
            state = pybreaker.STATE_HALF_OPEN
        if state == pybreaker.STATE_HALF_OPEN:
            if getattr(breaker, "_hub_trial", False):
                raise pybreaker.CircuitBreakerError("circuit half-open: a trial call is under way")
            breaker._hub_trial = True  # type: ignore[attr-defined]
    try:
        result = function(*args, **kwargs)
    except BaseException as error:
        with breaker._lock:
            breaker._hub_trial = False  # type: ignore[attr-defined]
            if is_provider_failure(error) or isinstance(error, PermanentError):  # permanent: excluded, a success
                with contextlib.suppress(BaseException):  # a tripping breaker re-raises the error itself
                    breaker.state._handle_error(error, reraise=False)
        raise
    with breaker._lock:
        breaker._hub_trial = False  # type: ignore[attr-defined]
        breaker.state._handle_success()
    return result


class SweptMemoryStorage(MemoryStorage):
    """limits' in-memory storage, expiring old entries from one long-lived sweeper thread.

    The stock storage starts a new 10 ms ``threading.Timer`` after almost every hit: under load that is a
    thread created per request. Expiry here only frees memory (limits checks windows by their timestamps),
    so sweeping once a second changes no decision."""

    SWEEP_SECONDS = 1.0

    def __init__(self) -> None:
        super().__init__()
        self._sweeper: threading.Thread | None = None
        self._sweeper_lock = threading.Lock()

    def _MemoryStorage__schedule_expiry(self) -> None:  # replaces the stock per-hit timer (name-mangled)
        if self._sweeper is not None:
            return
        with self._sweeper_lock:
            if self._sweeper is None:
                # The thread holds the storage weakly: it ends once the hub that owned the storage is gone.
                self._sweeper = threading.Thread(target=self._sweep, args=(weakref.ref(self),), name="hub-rate-limit-sweeper", daemon=True)
                self._sweeper.start()

    @staticmethod
    def _sweep(storage_ref: weakref.ref[SweptMemoryStorage]) -> None:
        while True:
            time.sleep(SweptMemoryStorage.SWEEP_SECONDS)
            storage = storage_ref()
            if storage is None:
                return
            try:
                storage._MemoryStorage__expire_events()  # type: ignore[attr-defined]
            except Exception:  # never let the sweeper die: memory would only grow
                log.exception("rate-limit expiry sweep failed")
            del storage


if not hasattr(MemoryStorage, "_MemoryStorage__schedule_expiry"):  # a limits release changed its internals
    SweptMemoryStorage = MemoryStorage  # type: ignore[misc,assignment]


#: ``capacity``/``available`` of a service without limits.
_UNLIMITED = 1 << 30


class RateLimits:
    """Per-tenant, per-service limits with the seed's defaults (email 100/min, SMS 50/min, payment
    200/min); memory storage by default, Redis when configured."""

    def __init__(self, config: dict[str, Any], redis_url: str | None = None, shared: SharedState | None = None) -> None:
        rate_config = config["rate_limits"]
        storage_uri = rate_config["storage"]
        if storage_uri.startswith("memory") and redis_url:
            storage_uri = redis_url
        options: dict[str, Any] = {}
        if storage_uri.startswith("redis"):
            options["key_prefix"] = f"hub-limits-{config.get('rate_limit_namespace', 'hub')}"
            # A Redis that hangs must cost a fraction of a second, then the process limits on its own.
            options.update(socket_timeout=0.5, socket_connect_timeout=0.5)
        self.storage_uri = storage_uri
        self.storage = SweptMemoryStorage() if storage_uri.startswith("memory") else storage_from_string(storage_uri, **options)
        self.limiter = MovingWindowRateLimiter(self.storage)
        #: Counts in this process while the shared storage does not answer (``None``: limits are local anyway).
        self.local: MovingWindowRateLimiter | None = None
        self.shared = shared or SharedState(redis_url)
        if not storage_uri.startswith("memory"):
            self.local = MovingWindowRateLimiter(SweptMemoryStorage())
            self.shared.url = self.shared.url or storage_uri
        self._defaults = {**DEFAULT_RATE_LIMITS, **{service_key(k): v for k, v in rate_config["limits"].items()}}
        self._tenants = {tenant: t.get("rate_limits", {}) for tenant, t in config["tenants"].items()}
        self._parsed: dict[str, list[RateLimitItem]] = {}

    def limits_for(self, tenant: str, service: str) -> list[RateLimitItem]:
        tenant_limits = {service_key(k): v for k, v in self._tenants.get(tenant, {}).items()}
        text = tenant_limits.get(service) or self._defaults.get(service)
        if not text:
            return []
        if text not in self._parsed:
            self._parsed[text] = parse_many(text)
        return self._parsed[text]

    def describe(self, tenant: str, service: str) -> str | None:
        items = self.limits_for(tenant, service)
        return ", ".join(str(item) for item in items) or None

    def hit(self, tenant: str, service: str, cost: int = 1) -> None:
        """Count ``cost`` calls; raise :class:`RateLimitedError` (429) if that would exceed a limit."""
        for item in self.limits_for(tenant, service):
            if cost > item.amount:
                raise RateLimitedError(service, str(item), float(item.get_expiry()))
            if not self._limiter("hit", item, tenant, service, cost=cost):
                raise RateLimitedError(service, str(item), self.retry_after(item, tenant, service))

    def wait(self, tenant: str, service: str, cost: int = 1, deadline: float | None = None) -> None:
        """Block until ``cost`` calls fit (bulk sends queue instead of failing); raise at ``deadline``, or at
        once when ``cost`` exceeds what a window admits (it would never fit: use :meth:`take`)."""
        while True:
            try:
                self.hit(tenant, service, cost)
                return
            except RateLimitedError as error:
                pause = max(0.05, min(error.retry_after, 5.0))
                if cost > self.capacity(tenant, service) or (deadline is not None and time.monotonic() + pause > deadline):
                    raise
                time.sleep(pause)

    def capacity(self, tenant: str, service: str) -> int:
        """The most calls one window admits (the smallest limit's amount); a very large number when unlimited."""
        return min((item.amount for item in self.limits_for(tenant, service)), default=_UNLIMITED)

    def available(self, tenant: str, service: str) -> tuple[int, float]:
        """How many calls fit now, and (when none does) the seconds until the fullest window frees one."""
        fits, pause = _UNLIMITED, 0.0
        for item in self.limits_for(tenant, service):
            stats = self._limiter("get_window_stats", item, tenant, service)
            fits = min(fits, stats.remaining)
            if stats.remaining <= 0:
                pause = max(pause, stats.reset_time - time.time())
        return max(fits, 0), pause

    def take(self, tenant: str, service: str, wanted: int, deadline: float | None = None) -> int:
        """Count and return up to ``wanted`` calls, as many as the windows admit now (at least one: this
        blocks until one fits). A bulk send takes its batches this way, so it flows at the limit's pace
        whatever its size; raise :class:`RateLimitedError` when nothing fits before ``deadline``."""
        while True:
            fits, pause = self.available(tenant, service)
            count = min(wanted, fits)
            if count >= 1:
                try:
                    self.hit(tenant, service, count)
                    return count
                except RateLimitedError:  # another process took the room between the look and the hit
                    pause = 0.05
            pause = max(0.05, min(pause, 5.0))
            if deadline is not None and time.monotonic() + pause > deadline:
                items = self.limits_for(tenant, service)
                raise RateLimitedError(service, ", ".join(str(item) for item in items), pause)
            time.sleep(pause)

    def _limiter(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Ask the shared limiter, or this process's while the shared storage does not answer."""
        if self.local is None:
            return getattr(self.limiter, method)(*args, **kwargs)
        if self.shared.should_try():
            try:
                answer = getattr(self.limiter, method)(*args, **kwargs)
            except self.shared.errors as error:
                self.shared.failed(error)
            else:
                self.shared.recovered()
                return answer
        return getattr(self.local, method)(*args, **kwargs)

    def retry_after(self, item: RateLimitItem, tenant: str, service: str) -> float:
        stats = self._limiter("get_window_stats", item, tenant, service)
        return max(1.0, stats.reset_time - time.time())


# --- the database going away ------------------------------------------------------------------------


def is_database_outage(error: BaseException) -> bool:
    """The database did not answer or cut the connection (a restart, a failover, a network cut, SQLite's
    disk full or locked): the request may succeed in a moment, so the API answers 503 and a job is queued
    again, not 500 / lost. A statement the database refused (a constraint, bad SQL) is not an outage."""
    from sqlalchemy import exc

    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, exc.OperationalError | exc.InterfaceError)


def database_outage_reason(error: BaseException) -> str:
    """What to tell a caller about an outage, without the driver's text (it names hosts and ports)."""
    text = str(getattr(error, "orig", error)).lower()
    if "disk is full" in text or "no space left" in text:
        return "the database's disk is full"
    return "the database does not answer (restarting, or out of reach)"
