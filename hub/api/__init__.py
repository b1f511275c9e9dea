"""The REST API: ``create_app(config)`` with one blueprint per resource under ``/api/integrations``.

Every view is a thin layer over the capability services (:mod:`hub.services`, reached through
:class:`hub.manager.IntegrationManager`); authentication, request ids, idempotency, the envelope and the
error mapping live in :mod:`hub.api.middleware`.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, Response, current_app, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.exceptions import HTTPException

from hub.api import admin, alerts, credentials, events, files, notifications, payments, sync, templates
from hub.api.middleware import (
    API_PREFIX,
    error_response,
    finish_request,
    http_error,
    hub_error,
    start_request,
    teardown_request,
    unexpected_error,
)
from hub.errors import HubError
from hub.manager import IntegrationManager

__all__ = ["API_PREFIX", "BLUEPRINTS", "begin_shutdown", "create_app"]

BLUEPRINTS = (notifications.blueprint, templates.blueprint, payments.blueprint, files.blueprint, events.blueprint, sync.blueprint, admin.blueprint, alerts.blueprint, credentials.blueprint)


def create_app(config: dict[str, Any] | str | None = None, *, manager: IntegrationManager | None = None) -> Flask:
    """The Flask app. Pass a hub.yaml path or validated config dict, or an existing manager."""
    app = Flask("hub")
    hub = manager or IntegrationManager(config)
    app.extensions["hub"] = hub
    # Bodies over the file limit (plus room for multipart/base64 framing) are refused before reading.
    limits = hub.config["storage_limits"]
    largest = max([limits["max_file_size"], *(own.get("max_file_size") or 0 for own in limits["categories"].values())])
    app.config["MAX_CONTENT_LENGTH"] = int(largest * 1.4) + 64 * 1024
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint, url_prefix=API_PREFIX)
    app.register_blueprint(admin.probes)  # /livez, /readyz at the root, where load balancers look
    app.extensions[admin.DRAINING] = threading.Event()
    app.extensions["hub.readiness"] = admin.ReadinessChecks(app)
    app.add_url_rule("/metrics", "prometheus", _prometheus)
    from hub.console import init_console  # here: hub.console's pages import hub.api.middleware

    init_console(app)  # the web console under /console
    app.before_request(start_request)
    app.after_request(finish_request)
    app.teardown_request(teardown_request)
    app.register_error_handler(HubError, hub_error)
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(Exception, unexpected_error)
    app.wsgi_app = JsonErrorsOnly(app.wsgi_app)  # type: ignore[method-assign]
    return app


def begin_shutdown(app: Flask) -> None:
    """A graceful shutdown begins (SIGTERM): ``/readyz`` answers 503 from now on, so the load balancer stops
    sending new requests, and the embedded job workers take no new job. Requests already in flight and
    running jobs go on; the server stops them at ``server.graceful_timeout``. Safe in a signal handler."""
    app.extensions[admin.DRAINING].set()
    app.extensions["hub"].jobs.begin_drain()


class JsonErrorsOnly:
    """The last line: an exception that escapes Flask's own handling (one raised by an error handler or
    while the request is torn down) is the JSON envelope too, never the WSGI server's text/html page."""

    def __init__(self, wsgi_app: Callable[..., Iterable[bytes]]) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        # Flask starts the response before tearing the request down: the start is held back until the app
        # returned, so a failure after it can still become a clean 500 (no second start_response).
        started: list[tuple[Any, ...]] = []

        def hold(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], Any]:
            started[:] = [(status, headers, exc_info)]
            return lambda data: start_response(*started.pop())(data) if started else None

        try:
            body = self.wsgi_app(environ, hold)
        except Exception as error:
            logging.getLogger("hub.api").exception("unhandled error outside the request's handlers")
            payload = json.dumps({"success": False, "message": "Internal server error", "error": type(error).__name__}).encode()
            start_response("500 INTERNAL SERVER ERROR", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
            return [payload]
        if started:
            start_response(*started.pop())
        return body


def _prometheus() -> Response:
    """Prometheus text: counts of every tenant, so (unless ``metrics.prometheus.public``) only the scrape
    token or an admin API token reads them."""
    hub = current_app.extensions["hub"]
    settings = hub.config["metrics"]["prometheus"]
    if not settings["enabled"]:
        return error_response(404, "Not found", "Prometheus metrics are off (metrics.prometheus.enabled)")
    if not settings["public"]:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            response = error_response(401, "Authentication required", "Send Authorization: Bearer <metrics or admin token>")
            response.headers["WWW-Authenticate"] = 'Bearer realm="hub-metrics"'
            return response
        scrape_token = settings["token"]
        if not (scrape_token and hmac.compare_digest(token.encode(), scrape_token.encode())):
            row = hub.tokens.verify(token)
            if row is None:
                return error_response(401, "Invalid or expired token", "Not the scrape token nor a valid API token")
            if not row.admin:
                return error_response(403, "Admin token required", "A tenant's token does not read every tenant's metrics")
    return Response(generate_latest(hub.metrics.registry), mimetype=CONTENT_TYPE_LATEST)
