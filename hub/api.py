"""The REST API: ``create_app(config)``, one blueprint under ``/api/integrations``.

Every view is a thin layer over :class:`hub.manager.IntegrationManager`: it authenticates, reads the
request, calls the manager and wraps the answer in the seed's envelope (``{"success": true, "data": ...}``
or ``{"success": false, "message": ..., "error": ...}``).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import HTTPException

from hub.capabilities import WebhookRequest
from hub.errors import Conflict, HubError, ProviderError, RateLimitedError, ValidationError
from hub.manager import IntegrationManager
from hub.observability import request_id_var, tenant_var
from hub.records import IdempotentRequest, utcnow
from hub.schemas import TestFileSchema, TestPaymentSchema, TestSyncSchema, load

API_PREFIX = "/api/integrations"
TENANT_HEADER = "X-Tenant-ID"
IDEMPOTENCY_HEADER = "Idempotency-Key"
TEST_CARD = "4242424242424242"
#: An idempotency key whose first request never finished (its process died) may be used again after this.
ABANDONED_AFTER = timedelta(minutes=5)

api = Blueprint("integrations", __name__)

#: Views callable without a token: the OpenAPI document, and webhooks (authenticated by signature).
PUBLIC_ENDPOINTS = {"integrations.openapi", "integrations.webhook"}


def create_app(config: dict[str, Any] | str | None = None, *, manager: IntegrationManager | None = None) -> Flask:
    """The Flask app. Pass a hub.yaml path or validated config dict, or an existing manager."""
    app = Flask("hub")
    app.config["MAX_CONTENT_LENGTH"] = None
    hub = manager or IntegrationManager(config)
    app.extensions["hub"] = hub
    # Bodies over the file limit (plus room for multipart/base64 framing) are refused before reading.
    app.config["MAX_CONTENT_LENGTH"] = int(hub.config["storage_limits"]["max_file_size"] * 1.4) + 64 * 1024
    app.register_blueprint(api, url_prefix=API_PREFIX)
    app.add_url_rule("/metrics", "prometheus", _prometheus)
    app.before_request(_start_request)
    app.after_request(_finish_request)
    app.register_error_handler(HubError, _hub_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    return app


def manager() -> IntegrationManager:
    return current_app.extensions["hub"]


# --- envelope and errors ---------------------------------------------------------------------------


def ok(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> tuple[Response, int]:
    response = jsonify({"success": True, "data": data})
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response, status


def error_response(status: int, message: str, error: Any = None, **extra: Any) -> Response:
    body = {"success": False, "message": message, "error": error if error is not None else message, **extra}
    response = jsonify(body)
    response.status_code = status
    return response


def _hub_error(error: HubError) -> Response:
    extra: dict[str, Any] = {}
    detail: Any = error.detail or error.message
    if isinstance(error, ValidationError):
        extra["errors"] = error.errors
        detail = "; ".join(f"{path}: {reason}" for path, reason in _flatten(error.errors))
    code = getattr(error, "provider_code", None)
    if code:
        extra["code"] = code
    if getattr(error, "attempts", None):
        extra["attempts"] = error.attempts  # type: ignore[attr-defined]
    response = error_response(error.status_code, error.message, detail, **extra)
    if isinstance(error, RateLimitedError):
        response.headers["Retry-After"] = str(max(1, int(error.retry_after + 0.999)))
    return response


def _http_error(error: HTTPException) -> Response:
    status = error.code or 500
    if status == 413:
        # The documented codes stop at 4xx validation errors; an oversized body is one.
        return error_response(422, "Request body is too large", "file: over the configured max_file_size")
    return error_response(status, error.name, error.description)


def _unexpected_error(error: Exception) -> Response:
    current_app.logger.exception("unhandled error")
    return error_response(500, "Internal server error", f"{type(error).__name__} (request {request_id_var.get()})")


def _flatten(errors: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(errors, dict):
        pairs = []
        for key, value in errors.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            pairs.extend(_flatten(value, path))
        return pairs
    if isinstance(errors, list):
        if errors and all(isinstance(item, str) for item in errors):
            return [(prefix, " ".join(errors))]
        pairs = []
        for item in errors:
            pairs.extend(_flatten(item, prefix))
        return pairs
    return [(prefix, str(errors))]


# --- request lifecycle: ids, auth, metrics --------------------------------------------------------


def _start_request() -> None:
    g.started = time.perf_counter()
    g.request_id = request.headers.get("X-Request-ID") or uuid.uuid4().hex
    g.request_id_token = request_id_var.set(g.request_id)
    g.tenant = None


def _finish_request(response: Response) -> Response:
    response.headers["X-Request-ID"] = g.get("request_id", "")
    hub = current_app.extensions["hub"]
    endpoint = request.url_rule.rule if request.url_rule else "unmatched"
    hub.metrics.http_requests.labels(request.method, endpoint, str(response.status_code)).inc()
    elapsed = time.perf_counter() - g.get("started", time.perf_counter())
    hub.metrics.http_latency.labels(endpoint).observe(elapsed)
    if g.get("tenant") and (request.method != "GET" or response.status_code >= 400):
        # Every change and every refusal is in the audit trail, beside the provider calls it caused
        # (successful reads are not: they change nothing, and are counted in the metrics).
        outcome = "success" if response.status_code < 400 else ("rejected" if response.status_code < 500 else "error")
        hub.audit_api_call(g.tenant, f"{request.method} {endpoint}", outcome, elapsed * 1000, f"HTTP {response.status_code}")
    return response


@api.before_request
def _authenticate() -> Response | None:
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _with_auth_header(error_response(401, "Authentication required", "Send Authorization: Bearer <token>"))
    row = manager().tokens.verify(token.strip())
    if row is None:
        return _with_auth_header(error_response(401, "Invalid or expired token", "The bearer token is not valid"))
    tenant = request.headers.get(TENANT_HEADER, "").strip()
    if not tenant:
        return error_response(403, "Tenant access required", f"Send the {TENANT_HEADER} header")
    if tenant != row.tenant:
        return error_response(403, "Tenant access denied", "The token does not belong to this tenant")
    g.tenant = tenant
    g.token = row
    tenant_var.set(tenant)
    return None


def _with_auth_header(response: Response) -> Response:
    response.headers["WWW-Authenticate"] = 'Bearer realm="hub"'
    return response


def require_admin(view: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not g.token.admin:
            return error_response(403, "Admin token required", "Create one with: hub token create --tenant T --admin")
        return view(*args, **kwargs)

    return wrapper


def idempotent(view: Callable[..., Any]) -> Callable[..., Any]:
    """Same ``Idempotency-Key`` and body: the first response again, no second side effect. Same key
    with another body: 422. A key whose first request is still running: 409."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if not key:
            return view(*args, **kwargs)
        if len(key) > 255:
            raise ValidationError({IDEMPOTENCY_HEADER: ["at most 255 characters"]})
        hub = manager()
        fingerprint = hashlib.sha256(request.method.encode() + request.path.encode() + b"\0" + request.get_data()).hexdigest()
        with hub.db.session() as session:
            stored = session.get(IdempotentRequest, (g.tenant, key))
            if stored is not None:
                if stored.request_hash != fingerprint:
                    raise ValidationError(
                        {IDEMPOTENCY_HEADER: ["this key was already used with a different request"]},
                        "Idempotency-Key reused with a different request body or path",
                    )
                if stored.status_code is not None:
                    response = jsonify(stored.response)
                    response.status_code = stored.status_code
                    response.headers["Idempotent-Replayed"] = "true"
                    return response
                if utcnow() - stored.created_at < ABANDONED_AFTER:
                    raise Conflict("A request with this Idempotency-Key is still being processed")
                # Its process died mid-request: let this one through; the records keep the work exactly-once.
                session.delete(stored)
        try:
            with hub.db.session() as session:
                session.add(IdempotentRequest(tenant=g.tenant, key=key, method=request.method, path=request.path, request_hash=fingerprint, created_at=utcnow()))
        except IntegrityError:
            raise Conflict("A request with this Idempotency-Key is still being processed") from None
        g.idempotency_key = key
        try:
            response = current_app.make_response(view(*args, **kwargs))
        except HubError as error:
            response = _hub_error(error)
        except Exception:
            _forget_key(hub, key)
            raise
        if response.status_code >= 500 or response.status_code == 429:
            _forget_key(hub, key)  # nothing happened: the client may retry with the same key
        else:
            with hub.db.session() as session:
                stored = session.get(IdempotentRequest, (g.tenant, key))
                if stored is not None:
                    stored.status_code = response.status_code
                    stored.response = response.get_json()
        return response

    return wrapper


def _forget_key(hub: IntegrationManager, key: str) -> None:
    with hub.db.session() as session:
        stored = session.get(IdempotentRequest, (g.tenant, key))
        if stored is not None:
            session.delete(stored)


def _idempotency_key() -> str | None:
    return g.get("idempotency_key") or request.headers.get(IDEMPOTENCY_HEADER)


def _json_body() -> Any:
    if not request.data:
        return None
    try:
        return json.loads(request.data)
    except ValueError:
        raise ValidationError({"body": ["not valid JSON"]}, "Request body is not valid JSON") from None


def _paging() -> tuple[int, int]:
    try:
        limit = min(max(int(request.args.get("limit", 50)), 1), 500)
        offset = max(int(request.args.get("offset", 0)), 0)
    except ValueError:
        raise ValidationError({"limit": ["limit and offset must be integers"]}) from None
    return limit, offset


def _list_records(kind: str | None, view: Callable[[Any], dict[str, Any]]) -> Any:
    """A page of the tenant's records of one kind, newest first (``?status=&limit=&offset=``)."""
    limit, offset = _paging()
    records = manager().list_records(g.tenant, kind, request.args.get("status"), limit, offset)
    return ok({"items": [view(record) for record in records], "limit": limit, "offset": offset})


def _prometheus() -> Response:
    hub = current_app.extensions["hub"]
    return Response(generate_latest(hub.metrics.registry), mimetype=CONTENT_TYPE_LATEST)


# --- status, health, services, metrics -------------------------------------------------------------


@api.get("/status")
def status() -> Any:
    """Status of every service: counts and per-service status."""
    return ok(manager().status(g.tenant))


@api.get("/health")
def health_all() -> Any:
    """Health of every service, with per-provider details."""
    return ok(manager().health(g.tenant))


@api.get("/health/<service>")
def health_service(service: str) -> Any:
    """Health of one service: each provider's check."""
    return ok(manager().service_health(service, g.tenant))


@api.get("/services")
def services() -> Any:
    """Every service with its providers."""
    from hub.config import SERVICES

    return ok({key: manager().service_info(key, g.tenant) for key in SERVICES})


@api.get("/services/<service>")
def service(service: str) -> Any:
    """One service: name, type, status, dependencies (environment variables), providers."""
    return ok(manager().service_info(service, g.tenant))


@api.get("/metrics")
def metrics() -> Any:
    """Per service: providers, templates, status, and per-provider counts, error rate, latency."""
    return ok(manager().metrics_summary(g.tenant))


@api.post("/initialize")
@require_admin
def initialize() -> Any:
    """Start (or restart) every service. Needs an admin token."""
    return ok(manager().initialize())


@api.post("/shutdown")
@require_admin
def shutdown() -> Any:
    """Close every provider; capability calls answer 503 until initialize. Needs an admin token."""
    return ok(manager().shutdown())


@api.get("/plugins")
def plugins() -> Any:
    """Installed plugins: name, version, hooks, providers, templates, load status and error."""
    hub = manager()
    return ok({"plugins": hub.host.plugin_list(), "providerTypes": sorted(hub.host.provider_types)})


# --- test endpoints (seed) -------------------------------------------------------------------------


@api.post("/test/notification")
@idempotent
def test_notification() -> Any:
    """Send a test notification through the real delivery path."""
    view, queued = manager().accept_notification(g.tenant, _json_body(), _idempotency_key())
    return ok(view, 202 if queued else 200)


@api.post("/test/payment")
@idempotent
def test_payment() -> Any:
    """Charge a test payment (test card unless paymentMethod is given)."""
    body = _json_body()
    if isinstance(body, dict) and not body.get("paymentMethod"):
        body = {**body, "paymentMethod": TEST_CARD}
    return ok(manager().accept_payment(g.tenant, body, _idempotency_key(), schema=TestPaymentSchema()))


@api.post("/test/event")
@idempotent
def test_event() -> Any:
    """Publish a test event."""
    return ok(manager().accept_event(g.tenant, _json_body(), _idempotency_key()))


@api.post("/test/file")
@idempotent
def test_file() -> Any:
    """Upload a generated test file."""
    request_data = load(TestFileSchema(), _json_body() or {})
    content = _sample_file(request_data["file_name"])
    raw = {"fileName": request_data["file_name"], "category": request_data["category"], "fileType": request_data["file_type"]}
    return ok(manager().accept_upload(g.tenant, raw, content, _idempotency_key()))


@api.post("/test/sync")
@idempotent
def test_sync() -> Any:
    """Sync external data now and return the records."""
    view, queued = manager().accept_sync(g.tenant, _json_body(), _idempotency_key(), schema=TestSyncSchema())
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


# --- notifications -----------------------------------------------------------------------------------


@api.post("/notifications")
@idempotent
def create_notification() -> Any:
    """Send a notification (200) or, for bulk sends and ``async: true``, accept it (202)."""
    view, queued = manager().accept_notification(g.tenant, _json_body(), _idempotency_key())
    return ok(view, 202 if queued else 200)


@api.get("/notifications")
def list_notifications() -> Any:
    return _list_records("notification", manager().notification_view)


@api.get("/notifications/<record_id>")
def get_notification(record_id: str) -> Any:
    hub = manager()
    return ok(hub.notification_view(hub.get_record(record_id, g.tenant, "notification")))


# --- templates -----------------------------------------------------------------------------------------


@api.get("/templates")
def list_templates() -> Any:
    """Every template the tenant can use (built-in, plugin, hub.yaml or its own), per channel."""
    return ok({"items": manager().templates.describe(g.tenant)})


@api.put("/templates/<name>")
def save_template(name: str) -> Any:
    """Add or replace the tenant's own template ``name`` for one channel."""
    return ok(manager().save_template(g.tenant, name, _json_body()))


@api.delete("/templates/<name>/<channel>")
def delete_template(name: str, channel: str) -> Any:
    """Remove the tenant's own template; the built-in or configured one applies again."""
    return ok(manager().delete_template(g.tenant, name, channel))


@api.post("/templates/<name>/preview")
def preview_template(name: str) -> Any:
    """Render a template with ``data`` for ``channel`` without sending anything."""
    body = _json_body() or {}
    channel = body.get("channel", "email")
    if channel not in ("email", "sms", "chat"):
        raise ValidationError({"channel": ["one of email, sms, chat"]})
    if not isinstance(body.get("data", {}), dict):
        raise ValidationError({"data": ["must be an object"]})
    rendered = manager().templates.render(name, channel, body.get("data", {}), g.tenant)
    return ok({"subject": rendered.subject, "text": rendered.text, "html": rendered.html, "blocks": rendered.blocks})


# --- payments ------------------------------------------------------------------------------------------


@api.post("/payments")
@idempotent
def create_payment() -> Any:
    """Charge a payment through the configured gateway(s)."""
    return ok(manager().accept_payment(g.tenant, _json_body(), _idempotency_key()), 201)


@api.get("/payments")
def list_payments() -> Any:
    return _list_records("payment", manager().payment_view)


@api.get("/payments/<record_id>")
def get_payment(record_id: str) -> Any:
    hub = manager()
    return ok(hub.payment_view(hub.get_record(record_id, g.tenant, "payment")))


@api.post("/payments/<record_id>/refunds")
@idempotent
def refund_payment(record_id: str) -> Any:
    """Refund all (no amount) or part of a payment, at the gateway that took it."""
    return ok(manager().accept_refund(g.tenant, record_id, _json_body() or {}, _idempotency_key()), 201)


@api.post("/refunds")
@idempotent
def create_refund() -> Any:
    """Refund by the gateway's transaction id (``transactionId``)."""
    return ok(manager().accept_refund(g.tenant, None, _json_body() or {}, _idempotency_key()), 201)


@api.get("/refunds/<record_id>")
def get_refund(record_id: str) -> Any:
    hub = manager()
    return ok(hub.refund_view(hub.get_record(record_id, g.tenant, "refund")))


# --- files -----------------------------------------------------------------------------------------------


@api.post("/files")
@idempotent
def upload_file() -> Any:
    """Upload a file: multipart (``file`` plus form fields) or JSON with base64 ``content``."""
    if request.files:
        upload = request.files.get("file")
        if upload is None:
            raise ValidationError({"file": ["multipart field 'file' is required"]})
        raw = {key: value for key, value in request.form.items()}
        if "metadata" in raw:
            try:
                raw["metadata"] = json.loads(raw["metadata"])
            except ValueError:
                raise ValidationError({"metadata": ["must be a JSON object"]}) from None
        raw.setdefault("fileName", upload.filename or "file")
        raw.setdefault("contentType", upload.mimetype if upload.mimetype != "application/octet-stream" else None)
        return ok(manager().accept_upload(g.tenant, raw, upload.read(), _idempotency_key()), 201)
    return ok(manager().accept_upload(g.tenant, _json_body(), None, _idempotency_key()), 201)


@api.get("/files")
def list_files() -> Any:
    limit, offset = _paging()
    hub = manager()
    rows, total = hub.list_files(g.tenant, request.args.get("category"), limit, offset)
    return ok({"items": [hub.file_view(row) for row in rows], "total": total, "limit": limit, "offset": offset})


@api.get("/files/<file_id>")
def file_metadata(file_id: str) -> Any:
    hub = manager()
    view = hub.file_view(hub.get_file(file_id, g.tenant))
    try:
        signed = hub.file_download_url(file_id, g.tenant)
    except (HubError, ProviderError) as error:
        # The metadata is still worth answering; the file stays downloadable through /content.
        current_app.logger.warning("no download URL for %s: %s", file_id, error)
        signed = None
    if signed:
        view["downloadUrl"] = signed
    return ok(view)


@api.get("/files/<file_id>/content")
def download_file(file_id: str) -> Any:
    file_record, data = manager().download_file(file_id, g.tenant)
    response = Response(data, mimetype=file_record.content_type)
    response.headers["Content-Disposition"] = f'attachment; filename="{file_record.filename.replace(chr(34), "")}"'
    response.headers["ETag"] = file_record.checksum
    return response


@api.delete("/files/<file_id>")
def delete_file(file_id: str) -> Any:
    return ok(manager().delete_file(file_id, g.tenant))


# --- events ----------------------------------------------------------------------------------------------


@api.post("/events")
@idempotent
def publish_event() -> Any:
    """Publish an event; the tenant is added to its envelope and headers."""
    return ok(manager().accept_event(g.tenant, _json_body(), _idempotency_key()), 201)


@api.get("/events/consumer-groups")
def consumer_groups() -> Any:
    """The tenant's consumer groups (ids starting with ``<tenant>.`` or ``<tenant>-``)."""
    return ok({"groups": manager().consumer_groups(g.tenant)})


@api.get("/events/<record_id>")
def get_event(record_id: str) -> Any:
    hub = manager()
    return ok(hub.event_view(hub.get_record(record_id, g.tenant, "event")))


# --- sync ----------------------------------------------------------------------------------------------


@api.post("/sync")
@idempotent
def create_sync_job() -> Any:
    """Start a sync job (202; ``async: false`` runs it now and answers 200)."""
    view, queued = manager().accept_sync(g.tenant, _json_body(), _idempotency_key())
    return ok(view, 202 if queued else 200)


@api.get("/sync")
def list_sync_jobs() -> Any:
    return _list_records("sync", manager().sync_view)


@api.get("/sync/<record_id>")
def get_sync_job(record_id: str) -> Any:
    hub = manager()
    return ok(hub.sync_view(hub.get_record(record_id, g.tenant, "sync")))


@api.post("/inventory/sync")
@idempotent
def sync_inventory() -> Any:
    """Snapshot inventory from every sync provider."""
    return ok(manager().sync_all_inventory(g.tenant))


@api.get("/inventory/snapshots")
def list_snapshots() -> Any:
    limit, _ = _paging()
    snapshots = manager().inventory_snapshots(g.tenant, request.args.get("provider"), limit)
    return ok({"items": [snapshot.to_dict(with_items=False) for snapshot in snapshots]})


@api.get("/inventory/snapshots/<snapshot_id>")
def get_snapshot(snapshot_id: str) -> Any:
    return ok(manager().get_snapshot(snapshot_id, g.tenant).to_dict())


# --- webhooks, records, audit, openapi ---------------------------------------------------------------


@api.post("/webhooks/<provider>")
def webhook(provider: str) -> Any:
    """A provider's status callback; authenticated by the provider's signature, not a token."""
    incoming = WebhookRequest(
        url=request.url,
        headers={key: value for key, value in request.headers.items()},
        body=request.get_data(),
        form={key: value for key, value in request.form.items()},
        query={key: value for key, value in request.args.items()},
    )
    return ok(manager().handle_webhook(provider, incoming, request.args.get("tenant")))


@api.get("/deliveries/<record_id>")
def get_delivery(record_id: str) -> Any:
    """Any delivery record (notification, payment, refund, file, event, sync) by id; a notification's
    record includes each recipient's outcome and delivery status."""
    hub = manager()
    record = hub.get_record(record_id, g.tenant)
    view = record.to_dict()
    if record.kind == "notification":
        view["recipients"] = hub.notification_view(record)["recipients"]
    return ok(view)


@api.get("/deliveries")
def list_deliveries() -> Any:
    return _list_records(request.args.get("kind"), lambda record: record.to_dict())


@api.get("/audit")
def audit() -> Any:
    """The tenant's audit trail, newest first; filter by provider, service, outcome."""
    limit, _ = _paging()
    entries = manager().audit_log(
        g.tenant,
        provider=request.args.get("provider"),
        outcome=request.args.get("outcome"),
        service=request.args.get("service"),
        limit=limit,
    )
    return ok({"items": [entry.to_dict() for entry in entries]})


@api.get("/openapi.json")
def openapi() -> Any:
    """This API's OpenAPI 3 document, generated from the marshmallow schemas."""
    from hub.openapi import build_spec

    return jsonify(build_spec(current_app))
