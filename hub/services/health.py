"""Health, status, service descriptions and metrics: what ``/status``, ``/health``, ``/services`` and
``/metrics`` show, computed from the providers' ``health`` hooks, the breakers and the audit trail."""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from sqlalchemy import func, select

from hub.capabilities import HealthResult
from hub.config import SERVICES, service_key
from hub.errors import NotFound, ProviderError
from hub.observability import redact, redact_text
from hub.records import AuditEntry
from hub.runtime import Runtime, describe
from hub.services.retention import RecipientRetention
from hub.services.templates import TemplateService

HEALTH_TIMEOUT = 5.0


class HealthService:
    def __init__(self, runtime: Runtime, templates: TemplateService) -> None:
        self.runtime = runtime
        self.templates = templates
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="hub-health")
        #: Operating the hub includes forgetting what it must not keep: the retention job.
        self.retention = RecipientRetention(runtime)

    def provider_health(self, names: list[str], tenant: str | None = None) -> dict[str, dict[str, Any]]:
        """Run the providers' health hooks concurrently (each bounded by HEALTH_TIMEOUT)."""
        details: dict[str, dict[str, Any]] = {}
        pending: dict[str, tuple[Any, str]] = {}
        for name in dict.fromkeys(names):
            slot = self.runtime.registry.slots.get(name)
            if slot is None:
                details[name] = {"status": "error", "message": "not configured"}
                continue
            try:
                instance = self.runtime.registry.instance(name, tenant)
            except ProviderError as error:
                details[name] = {"status": "error", "message": describe(error), "type": slot.type_name, "circuit": "closed"}
                continue
            breaker_state = self.runtime.breakers.state(name)
            function = self.runtime.host.hook_for(instance, "health")
            if function is None:
                details[name] = {"status": "success", "message": "Configuration valid", "type": slot.type_name, "circuit": breaker_state}
            else:
                pending[name] = (self.pool.submit(function), breaker_state)
        deadline = time.monotonic() + HEALTH_TIMEOUT
        for name, (future, breaker_state) in pending.items():
            try:
                outcome = future.result(timeout=max(0.0, deadline - time.monotonic()))
                if not isinstance(outcome, HealthResult):
                    outcome = HealthResult("error", f"health() returned {type(outcome).__name__}, not HealthResult")
            except FutureTimeout:
                outcome = HealthResult("error", f"health check took longer than {HEALTH_TIMEOUT:.0f}s")
            except Exception as error:
                outcome = HealthResult("error", describe(error))
            details[name] = {"status": outcome.status, "message": redact_text(outcome.message), "type": self.runtime.registry.slots[name].type_name, "circuit": breaker_state}
        for detail in details.values():
            if detail.get("circuit") == "open":
                detail.update(status="error", message=f"circuit open ({detail['message']})")
        return details

    def service_health(self, service: str, tenant: str | None = None, checks: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
        key = service_key(service)
        if key is None:
            raise NotFound(f"No service named {service}; services: {', '.join(SERVICES)}")
        names = self.runtime.registry.service_providers(key, tenant)
        if self.runtime.state != "running":
            return {"serviceName": key, "status": "shutdown", "details": {}}
        if not names:
            return {"serviceName": key, "status": "unhealthy", "error": f"no provider configured for {key}", "details": {}}
        checks = checks if checks is not None else self.provider_health(names, tenant)
        details = {name: checks[name] for name in names}
        healthy = any(detail["status"] == "success" for detail in details.values())
        view = {"serviceName": key, "status": "healthy" if healthy else "unhealthy", "details": details}
        if not healthy:
            view["error"] = "; ".join(f"{name}: {detail['message']}" for name, detail in details.items())
        return view

    def health(self, tenant: str | None = None) -> dict[str, Any]:
        every_provider = [name for key in SERVICES for name in self.runtime.registry.service_providers(key, tenant)]
        checks = self.provider_health(every_provider, tenant)
        reports = {key: self.service_health(key, tenant, checks) for key in SERVICES}
        return {key: {k: v for k, v in report.items() if k != "serviceName"} for key, report in reports.items()}

    def status(self, tenant: str | None = None) -> dict[str, Any]:
        health = self.health(tenant)
        services = {}
        counts = {"healthy": 0, "unhealthy": 0, "error": 0}
        for key, report in health.items():
            info = SERVICES[key]
            status = report["status"]
            counts[status if status in counts else "error"] += 1
            services[key] = {"status": report["status"], "name": info.name, "type": info.type}
        # Redis down: limits and breakers are per process until it is back (a flag, not a failure).
        return {"total": len(services), **counts, "state": self.runtime.state, "sharedState": self.runtime.shared_state.view(), "bulkheads": self.runtime.jobs.bulkheads.view(), "services": services}

    def service_info(self, service: str, tenant: str | None = None) -> dict[str, Any]:
        key = service_key(service)
        if key is None:
            raise NotFound(f"No service named {service}; services: {', '.join(SERVICES)}")
        info = SERVICES[key]
        names = self.runtime.registry.service_providers(key, tenant)
        providers = []
        dependencies: list[str] = []
        for name in names:
            slot = self.runtime.registry.slots.get(name)
            if slot is None:
                continue
            env_settings = getattr(slot.provider_class, "env_settings", {}) if slot.provider_class else {}
            dependencies.extend(variable for variable in env_settings.values() if variable not in dependencies)
            providers.append(
                {
                    "name": name,
                    "type": slot.type_name,
                    "priority": len(providers) + 1,
                    "available": slot.instance is not None,
                    "error": slot.error,
                    "settings": {k: ("[REDACTED]" if k in slot.secret_settings else redact(v, k)) for k, v in slot.resolved.items()},
                    "circuit": self.runtime.breakers.state(name),
                }
            )
        configured = self.runtime.config["services"].get(key, {})
        status = "shutdown" if self.runtime.state != "running" else ("disabled" if not configured.get("enabled", True) else ("active" if any(p["available"] for p in providers) else "inactive"))
        view = {
            "name": info.name,
            "key": key,
            "type": info.type,
            "capability": info.capability,
            "status": status,
            "dependencies": dependencies,
            "providers": providers,
            "rateLimit": self.runtime.rate_limits.describe(tenant or self.runtime.config["default_tenant"], key),
        }
        if info.channel:
            view["templates"] = self.templates.names(info.channel, tenant)
        return view

    def metrics_summary(self, tenant: str | None = None, window: int = 1000) -> dict[str, Any]:
        """Per service: providers, templates and status, as in the seed; plus per-provider call counts,
        error rate and latency percentiles over the tenant's last ``window`` audited calls."""
        # Only the tenant's own calls: another tenant's traffic through a shared provider is not its business.
        tenant_id = self.runtime.tenant(tenant)
        summary: dict[str, Any] = {}
        for key, info in SERVICES.items():
            names = self.runtime.registry.service_providers(key, tenant)
            entry: dict[str, Any] = {
                "providers": names,
                "status": "active" if self.runtime.state == "running" and names else "inactive",
                "stats": {name: self._provider_stats(tenant_id, key, name, window) for name in names},
            }
            if info.channel:
                entry["transporters" if key == "email" else "channels"] = names
                entry["templates"] = self.templates.names(info.channel, tenant)
            summary[key] = entry
        return summary

    def _provider_stats(self, tenant: str, service: str, provider: str, window: int) -> dict[str, Any]:
        with self.runtime.db.session() as session:
            # Newest first along the (tenant, at) index: the tenant's rows only. The provider is compared as an
            # expression, so that no planner (SQLite has no statistics) walks the (provider, at) index through
            # every tenant's calls to a shared provider instead.
            rows = session.execute(
                select(AuditEntry.outcome, AuditEntry.latency_ms)
                .where(AuditEntry.tenant == tenant, AuditEntry.service == service, func.coalesce(AuditEntry.provider, "") == provider)
                .order_by(AuditEntry.at.desc())
                .limit(window)
            ).all()
        calls = len(rows)
        errors = sum(1 for outcome, _ in rows if outcome != "success")
        latencies = sorted(latency for _, latency in rows if latency is not None)
        stats: dict[str, Any] = {"calls": calls, "errors": errors, "errorRate": round(errors / calls, 4) if calls else 0.0}
        if len(latencies) >= 2:
            cuts = statistics.quantiles(latencies, n=100, method="inclusive")
            stats.update(p50Ms=round(cuts[49], 2), p95Ms=round(cuts[94], 2), p99Ms=round(cuts[98], 2))
        elif latencies:
            stats.update(p50Ms=latencies[0], p95Ms=latencies[0], p99Ms=latencies[0])
        return stats

    # --- lifecycle (the seed's initialize / shutdown) ------------------------------------------

    def initialize(self) -> dict[str, Any]:
        """(Re)start every service: ``POST /initialize``."""
        runtime = self.runtime
        runtime.state = "running"
        report: dict[str, Any] = {}
        for service in SERVICES:
            names = runtime.registry.service_providers(service)
            available = [name for name in names if runtime.registry.slots.get(name) and runtime.registry.slots[name].instance]
            if not names:
                report[service] = {"status": "not_configured"}
            elif available:
                report[service] = {"status": "initialized", "providers": available}
            else:
                report[service] = {"status": "error", "error": "no provider could be started"}
        return report

    def shutdown(self) -> dict[str, Any]:
        """Close every provider and refuse new work until :meth:`initialize`: ``POST /shutdown``."""
        self.runtime.state = "shutdown"
        self.runtime.close_providers()
        return {service: {"status": "shutdown"} for service in SERVICES}
