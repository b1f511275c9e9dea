"""The runtime every capability service shares: plugins and providers, the database, the provider-call
pipeline, records and idempotency, jobs, rate limits and audit.

Services (:mod:`hub.services`) hold a reference to one :class:`Runtime` and never build these themselves.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from os import PathLike
from typing import Any

from hub.auth import TokenStore
from hub.config import SERVICES, load_config
from hub.errors import HubError
from hub.http.targets import TenantUrlPolicy
from hub.observability import Metrics, redact_text, request_id_var, tenant_var
from hub.plugins import PluginHost, PluginPolicy
from hub.records import Database, Record, normalise_database_url
from hub.registry import ProviderRegistry
from hub.resilience import Breakers, RateLimits, RetryPolicy, SharedState
from hub.runtime.callers import ProviderCalls
from hub.runtime.invalidation import Invalidations
from hub.runtime.jobs import JobRegistry
from hub.runtime.ledger import RecordLedger
from hub.runtime.pipeline import AuditTrail, CallResult, ProviderPipeline, describe
from hub.services.credentials import CredentialVault

__all__ = ["CallResult", "Runtime", "ServicesShutDown", "describe"]

log = logging.getLogger("hub.runtime")


class ServicesShutDown(HubError):
    status_code = 503

    def __init__(self) -> None:
        super().__init__("Integration services are shut down; POST /api/integrations/initialize to start them")


class Runtime:
    """Everything built once per hub from ``hub.yaml``."""

    def __init__(
        self,
        config: dict[str, Any] | str | PathLike[str] | None = None,
        *,
        environ: dict[str, str] | None = None,
        plugins: Iterable[tuple[object, str]] = (),
        entry_points: bool = True,
    ) -> None:
        if config is None or isinstance(config, str | PathLike):
            config = load_config(config, environ)
        self.config: dict[str, Any] = config
        self.environ = dict(os.environ) if environ is None else environ
        os.makedirs(config["data_dir"], exist_ok=True)
        self.metrics = Metrics()
        self.host = PluginHost(PluginPolicy.from_settings(config["plugins"], self.environ))
        self.host.load(entry_points=entry_points)
        for plugin, name in plugins:
            self.host.add_plugin(plugin, name)
        self.registry = ProviderRegistry(self.host, config, self.environ)
        self.registry.build_all()
        self.db = Database(normalise_database_url(config["database_url"], config["data_dir"]))
        self.db.create_all()
        #: Clears a cache in every process when it changes (Redis pub/sub; expiry alone without Redis).
        self.invalidations = Invalidations(config["redis_url"])
        self.tokens = TokenStore(self.db, self.invalidations)
        #: Where tenants may point the hub (URLs set through the API): hub/http/targets.py.
        self.tenant_urls = TenantUrlPolicy.from_config(config)
        breaker = config["circuit_breaker"]
        #: Whether Redis (shared limits and breakers) answers: both degrade to this process's counts together.
        self.shared_state = SharedState(config["redis_url"])
        self.breakers = Breakers(breaker["fail_max"], breaker["reset_timeout"], redis_url=config["redis_url"], shared=self.shared_state)
        retry = config["retry"]
        self.retry = RetryPolicy(retry["attempts"], retry["initial_delay"], retry["max_delay"], retry["jitter"], retry["max_retry_after"])
        self.rate_limits = RateLimits(config, redis_url=config["redis_url"], shared=self.shared_state)
        self.audit = AuditTrail(self.db)
        #: Tenants' provider credentials stored through the API, encrypted; the registry merges them in.
        self.credentials = CredentialVault(self)
        self.registry.stored_settings = self.credentials.settings_for
        self.jobs = JobRegistry(config, self.run_record)
        self.ledger = RecordLedger(self.db, config, self.metrics, self.audit, self.jobs)
        self.pipeline = ProviderPipeline(self.host, self.registry, self.breakers, self.retry, self.metrics, self.audit, lambda service: SERVICES[service].capability, bulkheads=self.jobs.bulkheads)
        self.calls = ProviderCalls(self.pipeline)
        self.jobs.register_periodic(self.ledger.recover_unfinished)
        self.state = "running"
        self.lock = threading.Lock()

    # --- helpers every service uses ----------------------------------------------------------------

    def require_running(self) -> None:
        if self.state != "running":
            raise ServicesShutDown()

    def tenant(self, tenant_id: str | None) -> str:
        return tenant_id or tenant_var.get() or self.config["default_tenant"]

    def region(self, tenant: str) -> str:
        return (self.config["tenants"].get(tenant, {}).get("default_region") or self.config["default_region"]).upper()

    def bypasses_rate_limit(self, service: str, priority: str) -> bool:
        return priority == "high" and self.config["services"].get(service, {}).get("high_priority_bypasses_rate_limit", False)

    def hit_rate_limit(self, tenant: str, service: str, cost: int = 1) -> None:
        try:
            self.rate_limits.hit(tenant, service, cost)
        except HubError:
            self.metrics.rate_limited.labels(service).inc()
            raise

    def hook_for(self, provider_name: str, tenant: str | None, hook: str) -> Callable[..., Any] | None:
        """The provider's implementation of ``hook``, or None when it offers no such (optional) hook."""
        return self.host.hook_for(self.registry.instance(provider_name, tenant), hook)

    def audit_api_call(self, tenant: str | None, operation: str, outcome: str, latency_ms: float, detail: str | None = None) -> None:
        self.audit.add(
            tenant=tenant,
            capability="api",
            operation=operation[:60],
            outcome=outcome,
            latency_ms=round(latency_ms, 3),
            detail=redact_text(detail) if detail else None,
        )

    def register_integration(self, name: str, provider: object) -> None:
        """Add an already-built provider at the end of its capability's services' provider lists."""
        with self.lock:
            slot = self.registry.add(name, provider)
            for key, info in SERVICES.items():
                if info.capability == slot.capability and (info.channel is None or info.channel in slot.channels):
                    service = self.config["services"].setdefault(key, {"providers": self.registry.service_providers(key), "enabled": True})
                    if name not in service["providers"]:
                        service["providers"].append(name)

    # --- background work ------------------------------------------------------------------------

    def run_record(self, record_id: str) -> None:
        """Worker entry point: claim the record, hand it to its kind's handler, settle its status."""
        record = self.ledger.claim(record_id)
        if record is None:
            return  # finished already, or another worker holds it
        token = request_id_var.set(record.request_id or record.id)
        try:
            with self.audit.buffered():
                self._run_claimed(record)
        finally:
            request_id_var.reset(token)

    def _run_claimed(self, record: Record) -> None:
        handler = self.jobs.handlers.get(record.kind)
        try:
            if handler is None:
                self.ledger.save(record.id, status="failed", error=f"no background handler for {record.kind}")
            else:
                handler(record)
        except Exception as error:  # the record must never stay "running" because of a bug
            log.exception("job %s failed unexpectedly", record.id)
            self.ledger.requeue_or_dead(record, describe(error))

    def start_workers(self, workers: int | None = None) -> None:
        """Start background workers in this process and re-queue anything a previous run left."""
        self.ledger.recover_unfinished(older_than=0)
        self.jobs.start_workers(self.config["queue"]["workers"] if workers is None else workers)

    def close_providers(self) -> None:
        for slot, instance in self.registry.all_instances():
            close = self.host.hook_for(instance, "close")
            if close is not None:
                try:
                    close()
                except Exception as error:
                    log.warning("provider %s failed to close: %s", slot.name, error)

    def close(self) -> None:
        self.jobs.stop_workers()
        self.invalidations.close()
        self.state = "shutdown"
        self.close_providers()
        self.db.engine.dispose()
