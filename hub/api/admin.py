"""Operating the hub: status, health, services, metrics, lifecycle, plugins, the seed's test endpoints,
provider webhooks, delivery records, the audit trail and the OpenAPI document."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Flask, current_app, g, jsonify, request
from sqlalchemy import text

from hub.api.middleware import (
    error_response,
    idempotency_key,
    idempotent,
    json_body,
    list_records,
    manager,
    ok,
    paging,
    public,
    require_admin,
)
from hub.capabilities import WebhookRequest
from hub.config import SERVICES
from hub.records import utcnow
from hub.schemas import TestFileSchema, TestPaymentSchema, TestSyncSchema, load

blueprint = Blueprint("admin", __name__)
#: The load balancer's probes, at the root (``/livez``, ``/readyz``): no token, no tenant, no secrets.
probes = Blueprint("probes", __name__)
#: ``app.extensions`` key of the event set when a graceful shutdown begins (see :func:`hub.api.begin_shutdown`).
DRAINING = "hub.draining"

log = logging.getLogger("hub.api")

TEST_CARD = "4242424242424242"


@blueprint.get("/status")
def status() -> Any:
    """Status of every service: counts and per-service status."""
    return ok(manager().status(g.tenant))


@blueprint.get("/health")
def health_all() -> Any:
    """Health of every service, with per-provider details."""
    return ok(manager().health(g.tenant))


@blueprint.get("/health/<service>")
def health_service(service: str) -> Any:
    """Health of one service: each provider's check."""
    return ok(manager().service_health(service, g.tenant))


@blueprint.get("/services")
def services() -> Any:
    """Every service with its providers."""
    return ok({key: manager().service_info(key, g.tenant) for key in SERVICES})


@blueprint.get("/services/<service>")
def service(service: str) -> Any:
    """One service: name, type, status, dependencies (environment variables), providers."""
    return ok(manager().service_info(service, g.tenant))


@blueprint.get("/metrics")
def metrics() -> Any:
    """Per service: providers, templates, status, and per-provider counts, error rate, latency."""
    return ok(manager().metrics_summary(g.tenant))


@blueprint.post("/initialize")
@require_admin
def initialize() -> Any:
    """Start (or restart) every service. Needs an admin token."""
    return ok(manager().initialize())


@blueprint.post("/shutdown")
@require_admin
def shutdown() -> Any:
    """Close every provider; capability calls answer 503 until initialize. Needs an admin token."""
    return ok(manager().shutdown())


@blueprint.get("/plugins")
def plugins() -> Any:
    """Installed plugins: name, version, hooks, providers, templates, load status and error."""
    hub = manager()
    return ok({"plugins": hub.host.plugin_list(), "providerTypes": sorted(hub.host.provider_types)})


# --- test endpoints (seed) -------------------------------------------------------------------------


@blueprint.post("/test/notification")
@idempotent
def test_notification() -> Any:
    """Send a test notification through the real delivery path."""
    view, queued = manager().notify.accept(g.tenant, json_body(), idempotency_key())
    return ok(view, 202 if queued else 200)


@blueprint.post("/test/payment")
@idempotent
def test_payment() -> Any:
    """Charge a test payment (test card unless paymentMethod is given)."""
    body = json_body()
    if isinstance(body, dict) and not body.get("paymentMethod"):
        body = {**body, "paymentMethod": TEST_CARD}
    return ok(manager().pay.accept(g.tenant, body, idempotency_key(), schema=TestPaymentSchema()))


@blueprint.post("/test/event")
@idempotent
def test_event() -> Any:
    """Publish a test event."""
    return ok(manager().publish.accept(g.tenant, json_body(), idempotency_key()))


@blueprint.post("/test/file")
@idempotent
def test_file() -> Any:
    """Upload a generated test file."""
    body = json_body()
    request_data = load(TestFileSchema(), {} if body is None else body)  # [] or 0 are refused, not read as {}
    content = _sample_file(request_data["file_name"])
    raw = {"fileName": request_data["file_name"], "category": request_data["category"], "fileType": request_data["file_type"]}
    return ok(manager().store.accept_upload(g.tenant, raw, content, idempotency_key()))


@blueprint.post("/test/sync")
@idempotent
def test_sync() -> Any:
    """Sync external data now and return the records."""
    view, queued = manager().sync.accept(g.tenant, json_body(), idempotency_key(), schema=TestSyncSchema())
    return ok(view, 202 if queued else 200)


def _sample_file(name: str) -> bytes:
    stamp = utcnow().isoformat()
    if name.lower().endswith(".pdf"):
        text = f"Integration hub test file {stamp}"
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
        objects = [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
            b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        ]
        out = bytearray(b"%PDF-1.4\n")
        offsets = []
        for number, body in enumerate(objects, start=1):
            offsets.append(len(out))
            out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
        xref = len(out)
        out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
        out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
        out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
        return bytes(out)
    return f"Integration hub test file\ncreated: {stamp}\n".encode()


# --- webhooks, records, audit, openapi ---------------------------------------------------------------


@blueprint.post("/webhooks/<provider>")
@public
def webhook(provider: str) -> Any:
    """A provider's status callback; authenticated by the provider's signature, not a token."""
    incoming = WebhookRequest(
        url=request.url,
        headers={key: value for key, value in request.headers.items()},
        body=request.get_data(),
        form={key: value for key, value in request.form.items()},
        query={key: value for key, value in request.args.items()},
    )
    return ok(manager().webhooks.handle(provider, incoming, request.args.get("tenant")))


@blueprint.get("/deliveries/<record_id>")
def get_delivery(record_id: str) -> Any:
    """Any delivery record (notification, payment, refund, file, event, sync) by id; a notification's
    record includes each recipient's outcome and delivery status."""
    hub = manager()
    record = hub.get_record(record_id, g.tenant)
    view = record.to_dict()
    if record.kind == "notification":
        view["recipients"] = hub.notify.recipient_views(record)
    return ok(view)


@blueprint.post("/deliveries/<record_id>/replay")
def replay_delivery(record_id: str) -> Any:
    """Queue a dead record again (the tenant's own): only its unfinished work is redone, e.g. a notification's
    recipients without an outcome; 409 when the record is not dead."""
    hub = manager()
    record = hub.runtime.ledger.replay_dead(record_id, g.tenant)
    return ok(record.to_dict(), 202)


@blueprint.get("/deliveries")
def list_deliveries() -> Any:
    return list_records(request.args.get("kind"), lambda record: record.to_dict())


@blueprint.get("/audit")
def audit() -> Any:
    """The tenant's audit trail, newest first; filter by provider, service, outcome."""
    limit, _ = paging()
    entries = manager().audit_log(
        g.tenant,
        provider=request.args.get("provider"),
        outcome=request.args.get("outcome"),
        service=request.args.get("service"),
        limit=limit,
    )
    return ok({"items": [entry.to_dict() for entry in entries]})


@blueprint.get("/openapi.json")
@public
def openapi() -> Any:
    """This API's OpenAPI 3 document, generated from the marshmallow schemas."""
    from hub.openapi import build_spec

    return jsonify(build_spec(current_app))


# --- probes for a load balancer ------------------------------------------------------------------------


@probes.get("/livez")
@public
def livez() -> Any:
    """Liveness: the process answers (no database call). Restart the process only when this fails."""
    return ok({"status": "alive"})


@probes.get("/readyz")
@public
def readyz() -> Any:
    """Readiness: the hub is running and not shutting down, its database and job queue answer in time.
    503 naming the reason otherwise: take the process out of the pool, do not restart it."""
    hub = manager()
    checks: dict[str, str] = {}
    if current_app.extensions[DRAINING].is_set():
        checks["shutdown"] = "draining in-flight work"
    elif hub.runtime.state != "running":
        checks["services"] = f"{hub.runtime.state} (POST /api/integrations/initialize)"
    else:
        checks.update(_readiness(current_app).run(hub.config["server"]["readiness_timeout"]))
    failed = {name: reason for name, reason in checks.items() if reason != "ok"}
    if failed:
        reason = "; ".join(f"{name}: {why}" for name, why in failed.items())
        return error_response(503, "Not ready", reason, checks=checks)
    return ok({"status": "ready", "checks": checks})


class ReadinessChecks:
    """The database and queue checks, each in a thread of its own so that the probe answers within its timeout
    even when a connection hangs, naming the one that did not answer. One run of each check at a time: probes
    that arrive while one hangs wait for that one instead of piling up threads. Daemon threads (not an
    executor's, which the interpreter joins at exit): a hanging check never holds a shutting-down process."""

    def __init__(self, app: Flask) -> None:
        hub = app.extensions["hub"]
        self.checks: dict[str, Callable[[], Any]] = {"database": lambda: self._database(hub), "queue": hub.jobs.check_queue}
        self.lock = threading.Lock()
        self.running: dict[str, _CheckRun] = {}

    def run(self, timeout: float) -> dict[str, str]:
        with self.lock:
            for name, check in self.checks.items():
                if name not in self.running or self.running[name].done.is_set():
                    self.running[name] = _CheckRun(name, check)
            running = dict(self.running)
        deadline = time.monotonic() + timeout
        results: dict[str, str] = {}
        for name, check_run in running.items():
            answered = check_run.done.wait(max(0.0, deadline - time.monotonic()))
            results[name] = check_run.outcome if answered else f"no answer within {timeout:g} s"
        return results

    @staticmethod
    def _database(hub: Any) -> None:
        with hub.db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))


class _CheckRun:
    """One run of one readiness check: ``outcome`` is ``ok`` or ``unreachable (<error type>)`` once ``done``."""

    def __init__(self, name: str, check: Callable[[], Any]) -> None:
        self.done = threading.Event()
        self.outcome = ""
        threading.Thread(target=self._run, args=(name, check), name=f"hub-readiness-{name}", daemon=True).start()

    def _run(self, name: str, check: Callable[[], Any]) -> None:
        try:
            check()
            self.outcome = "ok"
        except Exception as error:
            # The driver's message may name hosts and paths: the log has it, the unauthenticated answer does not.
            log.warning("readiness check %s failed: %s", name, error)
            self.outcome = f"unreachable ({type(error).__name__})"
        finally:
            self.done.set()


def _readiness(app: Flask) -> ReadinessChecks:
    return app.extensions["hub.readiness"]
