"""The console's pages: each view calls the service methods the REST API's views call (hub/api/*.py), for the
signed-in tenant, and renders a template. Nothing here queries the database by itself."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import swagger_ui_bundle
from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    g,
    redirect,
    render_template,
    request,
    send_from_directory,
    session,
    url_for,
)
from flask_wtf.csrf import CSRFError, generate_csrf, validate_csrf
from werkzeug.exceptions import HTTPException
from wtforms import ValidationError as CsrfInvalid

from hub.api.middleware import API_PREFIX, manager
from hub.auth import hash_token
from hub.config import SERVICES
from hub.console.chart import provider_charts
from hub.errors import HubError
from hub.observability import tenant_var

CONSOLE_PREFIX = "/console"
#: Rows per list page (the API's default page size is 50; a console page shows a little more).
PAGE_SIZE = 100
#: Provider calls (newest first) the chart is drawn from.
CHART_CALLS = 5000
#: The record kinds with a page of their own: path, kind, title.
RECORD_PAGES = {
    "notifications": ("notification", "Notifications"),
    "payments": ("payment", "Payments"),
    "events": ("event", "Events"),
    "sync-runs": ("sync", "Sync runs"),
}
#: Pages reachable without a session.
OPEN_ENDPOINTS = {"console.signin", "console.static"}

blueprint = Blueprint("console", __name__, template_folder="templates", static_folder="static", static_url_path="/static")


# --- session, CSRF, headers -------------------------------------------------------------------------


@blueprint.before_request
def signed_in() -> Any:
    """Every POST carries the session's CSRF token; every page but sign-in needs a valid session. The token is
    checked again on each page (cached a few seconds by the token store), so revoking it signs the console out."""
    if request.method == "POST":
        try:
            validate_csrf(request.form.get("csrf_token"))
        except CsrfInvalid as error:
            raise CSRFError(str(error)) from None
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    token_hash, tenant = session.get("token_hash"), session.get("tenant")
    row = manager().tokens.verify_hash(token_hash) if token_hash else None
    if row is None or row.tenant != tenant:
        session.clear()
        return redirect(url_for("console.signin"))
    # The same request state the API's authentication sets: the request's audit row names the tenant.
    g.tenant, g.token = tenant, row
    tenant_var.set(tenant)
    return None


@blueprint.after_request
def page_headers(response: Response) -> Response:
    # Scripts and styles from this origin only (Swagger UI sets inline styles on its elements); not framed.
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    )
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if request.endpoint not in ("console.static", "console.swagger_asset"):
        response.headers["Cache-Control"] = "no-store"  # tenant data: not kept by the browser or a proxy
    return response


@blueprint.app_template_global()
def csrf_token() -> str:
    return generate_csrf()


@blueprint.context_processor
def page_context() -> dict[str, Any]:
    token = g.get("token")
    return {
        "tenant": g.get("tenant"),
        "admin": bool(token and token.admin),
        "token_label": (token.name or token.prefix) if token else None,
        "record_pages": RECORD_PAGES,
    }


@blueprint.app_template_filter("pretty")
def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


@blueprint.app_template_filter("urlencode_offset")
def with_offset(args: Any, offset: int) -> str:
    """The page's query string with another ``offset`` (the pager's links)."""
    return urlencode({**args.to_dict(), "offset": max(offset, 0)})


@blueprint.errorhandler(CSRFError)
def csrf_refused(error: CSRFError) -> tuple[str, int]:
    return render_template("console/error.html", title="Form expired", message=f"{error.description} Reload the page and try again."), 400


@blueprint.errorhandler(HubError)
def hub_refused(error: HubError) -> tuple[str, int]:
    return render_template("console/error.html", title=error.message, message=error.detail or ""), error.status_code


@blueprint.errorhandler(HTTPException)
def http_refused(error: HTTPException) -> tuple[str, int]:
    return render_template("console/error.html", title=error.name, message=error.description or ""), error.code or 500


# --- sign-in -------------------------------------------------------------------------------------------


@blueprint.route("/signin", methods=["GET", "POST"])
def signin() -> Any:
    """The token and tenant checked as the API checks ``Authorization`` and ``X-Tenant-ID``. A refused token is
    a 401 like the API's, so the request hooks count it for the refused-tokens alert."""
    if request.method == "GET":
        return render_template("console/signin.html", error=None, tenant_value="")
    token = request.form.get("token", "").strip()
    tenant = request.form.get("tenant", "").strip()
    row = manager().tokens.verify(token) if token else None
    if row is None:
        return render_template("console/signin.html", error="Invalid or expired token.", tenant_value=tenant), 401
    if row.tenant != tenant:
        return render_template("console/signin.html", error="The token does not belong to this tenant.", tenant_value=tenant), 403
    session.clear()  # a fresh session (and CSRF token) per sign-in
    session.permanent = True
    session["token_hash"] = hash_token(token)
    session["tenant"] = tenant
    return redirect(url_for("console.overview"))


@blueprint.post("/signout")
def signout() -> Any:
    session.clear()
    return redirect(url_for("console.signin"))


# --- pages -----------------------------------------------------------------------------------------------


@blueprint.get("/")
def overview() -> str:
    """Services and providers with health and circuit state (``GET /health``), the hub's state and shared state
    (``GET /status``)."""
    hub = manager()
    health = hub.health(g.tenant)
    return render_template(
        "console/overview.html",
        health=health,
        services=SERVICES,
        state=hub.runtime.state,
        shared=hub.runtime.shared_state.view(),
    )


def _record_list(path: str) -> Callable[[], str]:
    kind, title = RECORD_PAGES[path]

    def view() -> str:
        status = request.args.get("status") or None
        offset = _offset()
        # GET /notifications etc.: the ledger's page of the tenant's records, one query.
        records = manager().list_records(g.tenant, kind, status, PAGE_SIZE, offset)
        return render_template("console/records.html", title=title, kind=kind, records=records, status=status, offset=offset, page_size=PAGE_SIZE, path=path)

    view.__name__ = f"{kind}_list"
    view.__doc__ = f"The tenant's {title.lower()}, newest first, with status and attempts."
    return view


for _path in RECORD_PAGES:
    blueprint.add_url_rule(f"/{_path}", endpoint=RECORD_PAGES[_path][0] + "s", view_func=_record_list(_path), methods=["GET"])


@blueprint.get("/files")
def files() -> str:
    """The tenant's uploads (``GET /files``)."""
    offset = _offset()
    rows, total = manager().store.list(g.tenant, request.args.get("category") or None, PAGE_SIZE, offset)
    return render_template("console/files.html", files=rows, total=total, offset=offset, page_size=PAGE_SIZE)


@blueprint.get("/records/<record_id>")
def record(record_id: str) -> str:
    """One record (``GET /deliveries/<id>``) with its attempt log and its service's view."""
    hub = manager()
    found = hub.get_record(record_id, g.tenant)
    views: dict[str, Callable[[Any], Any]] = {
        "notification": hub.notify.view,
        "payment": hub.pay.view,
        "refund": hub.pay.refund_view,
        "event": hub.publish.view,
        "event_batch": hub.publish.batch_view,
        "sync": hub.sync.view,
        "inventory_push": hub.sync.push_view,
    }
    service_view = views.get(found.kind, lambda item: item.to_dict())(found)
    return render_template("console/record.html", record=found, service_view=service_view)


@blueprint.get("/dead-letters")
def dead_letters() -> str:
    """Dead records of every capability (``GET /deliveries?status=dead``) and subscriptions' dead letters
    (``GET /events/dead-letters``), each with a Replay button."""
    hub = manager()
    records = hub.list_records(g.tenant, None, "dead", PAGE_SIZE, 0)
    letters = hub.publish.dead_letters(g.tenant, None, PAGE_SIZE)
    return render_template("console/dead_letters.html", records=records, letters=letters)


@blueprint.post("/dead-letters/<item_id>/replay")
def replay(item_id: str) -> Any:
    """Replay a dead record (``POST /deliveries/<id>/replay``: queued again under its idempotency key) or a
    subscription's dead letter (``POST /events/dead-letters/<id>/replay``: handed to its handler now)."""
    hub = manager()
    kind = request.form.get("kind")
    try:
        if kind == "subscription":
            outcome = hub.publish.replay_dead_letter(g.tenant, item_id)
            message = f"Replayed {item_id}: {outcome['status']}" + (f" ({outcome['error']})" if outcome.get("error") else "")
            flash(message, "ok" if outcome["status"] == "delivered" else "error")
        else:
            replayed = hub.runtime.ledger.replay_dead(item_id, g.tenant)
            flash(f"Replayed {item_id}: {replayed.status}", "ok")
    except HubError as error:
        if error.status_code == 404:
            raise
        flash(f"Could not replay {item_id}: {error.message}", "error")
    target = url_for("console.dead_letters") if kind == "subscription" else url_for("console.record", record_id=item_id)
    return redirect(target, 303)


@blueprint.get("/subscriptions")
def subscriptions() -> str:
    """Consumer groups with lag (``GET /events/consumer-groups``) and subscriptions (``GET /events/subscriptions``)."""
    hub = manager()
    groups_error = None
    try:
        groups = hub.publish.consumer_groups(g.tenant)
    except HubError as error:  # the broker is down: the subscriptions are still worth showing
        groups, groups_error = [], error.message
    return render_template("console/subscriptions.html", groups=groups, groups_error=groups_error, subscriptions=hub.publish.subscriptions(g.tenant))


@blueprint.get("/sync")
def sync() -> str:
    """Sync streams with their cursors (``GET /sync/checkpoints``), per-stream metrics (``GET /sync/metrics``)
    and the tenant's schedules (``sync_schedules`` in hub.yaml)."""
    hub = manager()
    default = hub.config["default_tenant"]
    schedules = [schedule for schedule in hub.config["sync_schedules"] if (schedule["tenant"] or default) == g.tenant]
    return render_template(
        "console/sync.html",
        checkpoints=hub.sync.store.checkpoints(g.tenant),
        metrics=hub.sync.metrics(g.tenant),
        schedules=schedules,
    )


@blueprint.get("/inventory")
def inventory() -> str:
    """Levels (``GET /inventory/levels``), low stock (``GET /inventory/low-stock``) and open discrepancies
    (``GET /inventory/discrepancies``)."""
    sync_service = manager().sync
    levels = sync_service.store.levels(g.tenant, limit=PAGE_SIZE * 5, offset=0)
    return render_template(
        "console/inventory.html",
        levels=sync_service.inventory.level_views(g.tenant, levels),
        low=sync_service.inventory.low_stock(g.tenant, PAGE_SIZE, 0),
        discrepancies=sync_service.inventory.discrepancies(g.tenant, status="open", limit=PAGE_SIZE),
    )


@blueprint.get("/providers")
def providers() -> str:
    """Calls, errors and latency per provider over time, from the tenant's audited provider calls (``GET /audit``),
    beside the per-provider summary (``GET /metrics``)."""
    hub = manager()
    calls = [entry for entry in hub.audit_log(g.tenant, limit=CHART_CALLS) if entry.provider]
    return render_template("console/providers.html", charts=provider_charts(calls), summary=hub.metrics_summary(g.tenant))


@blueprint.get("/alerts")
def alerts() -> str:
    """Alert incidents (``GET /alerts``): hub-wide, so for admin tokens only, as in the API."""
    if not g.token.admin:
        abort(403, "Admin token required: alert incidents are hub-wide.")
    return render_template("console/alerts.html", incidents=manager().alerts.incidents(None, PAGE_SIZE))


@blueprint.get("/api")
def api_reference() -> str:
    """Swagger UI over the hub's own OpenAPI document, its assets served from the swagger-ui-bundle package."""
    return render_template("console/api.html", spec_url=f"{API_PREFIX}/openapi.json")


@blueprint.get("/api/assets/<path:filename>")
def swagger_asset(filename: str) -> Response:
    return send_from_directory(swagger_ui_bundle.swagger_ui_path, filename, max_age=3600)


def _offset() -> int:
    try:
        return max(int(request.args.get("offset", 0)), 0)
    except ValueError:
        abort(400, "offset must be a whole number")
