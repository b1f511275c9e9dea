"""The provider-call pipeline, written once for every capability.

For one call: the service's providers in priority order; for each, its circuit breaker (an open circuit is
skipped at once, noted "circuit open"), the retry policy (tenacity, transient errors only), and failover to
the next provider when the error allows it (the error class carries the rule: see :mod:`hub.errors`).
Every try is measured (Prometheus) and audited; audit rows are buffered while a request or job runs and
written in the same transaction as the record they belong to.
"""

from __future__ import annotations

import contextvars
import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pybreaker
from sqlalchemy import select

from hub.bulkheads import Bulkheads, ProviderBusyError, note_call_outcome
from hub.errors import ConfigurationError, HubError, NoProviderError, PermanentError, ProviderError
from hub.observability import Metrics, redact_text, request_id_var
from hub.records import AuditEntry, Database, utcnow
from hub.resilience import Breakers, RetryPolicy, allows_failover, guarded_call

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from hub.plugins import PluginHost
    from hub.registry import ProviderRegistry

log = logging.getLogger("hub.pipeline")

CIRCUIT_OPEN = "circuit open"


#: An absolute file-system path (not the path of a URL: no word character, ':' or '/' right before it).
_SERVER_PATH = re.compile(r"(?<![\w:/.])/(?:[\w.@+~-]+/)+[\w.@+~-]*")


def describe(error: BaseException) -> str:
    """An error as one safe line: its message (and provider code), with secrets, personal data and server
    paths masked (an ``OSError`` names the file it failed on); an unexpected exception's text is cut short,
    its traceback being in the log."""
    if isinstance(error, pybreaker.CircuitBreakerError):
        return CIRCUIT_OPEN
    if isinstance(error, HubError):
        code = getattr(error, "provider_code", None)
        text = f"{error.message} ({code})" if code else error.message
    else:
        text = f"{type(error).__name__}: {str(error)[:300]}"
    return redact_text(_SERVER_PATH.sub("<path>", text))


@dataclass
class CallResult:
    """What a provider call answered: which provider, its return value, and every try made."""

    provider: str
    result: Any
    attempts: list[dict[str, Any]] = field(default_factory=list)


_audit_buffer: contextvars.ContextVar[list[dict[str, Any]] | None] = contextvars.ContextVar("hub_audit_buffer", default=None)


class AuditTrail:
    """Audit rows of provider and API calls (column -> value, as :class:`~hub.records.AuditEntry` has them).

    Inside :meth:`buffered` (a request or a job) rows wait to be written by :meth:`drain` in the caller's
    own transaction, as one multi-row insert; outside, each is written at once.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._insert = AuditEntry.__table__.insert()

    def add(self, **row: Any) -> None:
        row.setdefault("at", utcnow())
        row.setdefault("request_id", request_id_var.get())
        for column in ("tenant", "capability", "service", "provider", "latency_ms", "record_id", "detail"):
            row.setdefault(column, None)
        buffer = _audit_buffer.get()
        if buffer is not None:
            buffer.append(row)
            return
        with self.db.session() as session:
            self.write(session, [row])

    def query(self, tenant: str, *, provider: str | None = None, outcome: str | None = None, service: str | None = None, limit: int = 100) -> list[AuditEntry]:
        """The tenant's audit rows, newest first, optionally of one provider, outcome or service."""
        with self.db.session() as session:
            query = select(AuditEntry).where(AuditEntry.tenant == tenant)
            if provider:
                query = query.where(AuditEntry.provider == provider)
            if outcome:
                query = query.where(AuditEntry.outcome == outcome)
            if service:
                query = query.where(AuditEntry.service == service)
            return list(session.scalars(query.order_by(AuditEntry.id.desc()).limit(limit)))

    def write(self, session: Session, rows: list[dict[str, Any]]) -> None:
        if rows:
            session.execute(self._insert, rows)  # Core executemany: no ORM unit of work for audit rows

    @contextmanager
    def buffered(self) -> Iterator[None]:
        token = _audit_buffer.set([])
        try:
            yield
        finally:
            leftover = _audit_buffer.get() or []
            _audit_buffer.reset(token)
            if leftover:
                with self.db.session() as session:
                    self.write(session, leftover)

    def take(self) -> list[dict[str, Any]]:
        """The buffered rows, removed from the buffer (the caller writes them with :meth:`write`)."""
        buffer = _audit_buffer.get()
        if not buffer:
            return []
        rows = list(buffer)
        buffer.clear()
        return rows

    def drain(self, session: Session) -> None:
        """Write the buffered rows in ``session`` (committed with it)."""
        self.write(session, self.take())


class ProviderPipeline:
    def __init__(
        self,
        host: PluginHost,
        registry: ProviderRegistry,
        breakers: Breakers,
        retry: RetryPolicy,
        metrics: Metrics,
        audit: AuditTrail,
        capability_of: Any,
        bulkheads: Bulkheads | None = None,
    ) -> None:
        #: Per-provider concurrency limits (none when not given).
        self.bulkheads = bulkheads or Bulkheads({"background": 0, "requests": 0}, 1)
        self.host = host
        self.registry = registry
        self.breakers = breakers
        self.retry = retry
        self.metrics = metrics
        self.audit = audit
        self._capability_of = capability_of

    def call(
        self,
        service: str,
        tenant: str,
        hook: str,
        kwargs: dict[str, Any],
        *,
        providers: list[str] | None = None,
        record_id: str | None = None,
        before_retry: Callable[[], None] | None = None,
    ) -> CallResult:
        """Call ``hook`` on the service's providers in priority order until one succeeds.

        ``before_retry`` runs before every try after the first, on this provider or the next (an upload's
        stream is rewound there); an error it raises ends the call.

        A permanent error is raised at once; when every provider failed, :class:`NoProviderError`
        carries the attempts. An error whose class forbids failover (a payment whose outcome is unknown)
        is raised after its retries on the same provider, never handed to the next one.
        """
        names = providers if providers is not None else self.registry.service_providers(service, tenant)
        if not names:
            raise NoProviderError(f"No provider is configured for {service}")
        capability = self._capability_of(service)
        attempts: list[dict[str, Any]] = []
        last_error: BaseException | None = None
        tries: list[str] = []  # every try made, on any provider
        busy_error: ProviderBusyError | None = None
        note_call_outcome(None)
        for name in names:
            started = time.perf_counter()
            retries: list[str] = []
            #: Errors of earlier tries that forbid failover (the request may have done something).
            unsafe: list[BaseException] = []
            try:
                instance = self.registry.instance(name, tenant)
                function = self.host.hook_for(instance, hook)
                if function is None:
                    raise ConfigurationError(f"provider {name!r} does not implement {hook}")
                breaker = self.breakers.get(name if instance is self.registry.slots[name].instance else f"{name}@{tenant}")

                def once(function: Any = function, breaker: pybreaker.CircuitBreaker = breaker, name: str = name) -> Any:
                    # The bulkhead's slot first: a busy provider is refused before anything is read or sent.
                    with self.bulkheads.slot(name):
                        if before_retry is not None and tries:
                            before_retry()
                        tries.append(name)
                        return guarded_call(breaker, function, **kwargs)

                def note_retry(error: BaseException, _attempt: int, retries: list[str] = retries, unsafe: list[BaseException] = unsafe) -> None:
                    retries.append(describe(error))
                    if not allows_failover(error):
                        unsafe.append(error)

                result = self.retry.call(once, on_retry=note_retry)
            except Exception as caught:
                # A circuit that opened during the retries must not turn an outcome-unknown call into a failover.
                error = unsafe[0] if unsafe and allows_failover(caught) else caught
                latency = (time.perf_counter() - started) * 1000
                description = describe(error)
                busy = isinstance(error, ProviderBusyError)
                attempts.append(
                    {"provider": name, "outcome": "skipped" if busy or description == CIRCUIT_OPEN else "failed", "error": description, "retries": len(retries), "latencyMs": round(latency, 2), "at": utcnow().isoformat()}
                )
                if isinstance(error, ProviderBusyError):
                    busy_error = error
                    # Not a call to the provider: counted, not audited (a queued job meets it every second).
                    self.metrics.provider_calls.labels(service, name, hook, "busy").inc()
                else:
                    self.observe(service, capability, name, hook, "error", latency, tenant, record_id, description)
                if not isinstance(error, HubError | pybreaker.CircuitBreakerError):
                    # Not counted by the breaker (see guarded_call): the traceback is what tells a bug from an input.
                    log.error("provider %s raised %s", name, description, exc_info=error)
                last_error = error
                if isinstance(error, HubError) and not isinstance(error, ProviderError):
                    raise
                if not allows_failover(error):
                    if isinstance(error, ProviderError):
                        error.attempts = attempts  # type: ignore[attr-defined]
                    if error is caught:
                        raise
                    raise error from caught
                continue
            latency = (time.perf_counter() - started) * 1000
            attempts.append({"provider": name, "outcome": "succeeded", "retries": len(retries), "latencyMs": round(latency, 2), "at": utcnow().isoformat()})
            self.observe(service, capability, name, hook, "success", latency, tenant, record_id, None)
            note_call_outcome(None)
            return CallResult(name, result, attempts)
        if busy_error is not None and all(attempt["outcome"] == "skipped" for attempt in attempts):
            # Every provider was busy (or its circuit open): nothing failed, come back in a moment.
            note_call_outcome(busy_error)
            busy_error.attempts = attempts  # type: ignore[attr-defined]
            raise busy_error
        if isinstance(last_error, PermanentError):
            raise last_error  # every provider refused (none offers it): trying later will not help
        raise NoProviderError(
            f"All providers for {service} failed: " + "; ".join(f"{a['provider']}: {a['error']}" for a in attempts),
            attempts=attempts,
            cause=last_error,
        )

    def observe(
        self,
        service: str,
        capability: str,
        provider: str,
        operation: str,
        outcome: str,
        latency_ms: float,
        tenant: str | None,
        record_id: str | None,
        detail: str | None,
    ) -> None:
        self.metrics.provider_calls.labels(service, provider, operation, outcome).inc()
        self.metrics.provider_latency.labels(service, provider, operation).observe(latency_ms / 1000)
        self.audit.add(
            tenant=tenant,
            capability=capability,
            service=service,
            provider=provider,
            operation=operation,
            outcome=outcome,
            latency_ms=round(latency_ms, 3),
            record_id=record_id,
            detail=redact_text(detail) if detail else None,
        )
        if log.isEnabledFor(logging.INFO):
            log.info(
                "%s %s via %s: %s in %.1f ms",
                service,
                operation,
                provider,
                outcome,
                latency_ms,
                extra={"provider": provider, "service": service, "outcome": outcome, "latency_ms": round(latency_ms, 2), "record_id": record_id, "tenant": tenant},
            )
