"""The REST API: ``create_app(config)`` with one blueprint per resource under ``/api/integrations``.

Every view is a thin layer over the capability services (:mod:`hub.services`, reached through
:class:`hub.manager.IntegrationManager`); authentication, request ids, idempotency, the envelope and the
error mapping live in :mod:`hub.api.middleware`.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.exceptions import HTTPException

from hub.api import admin, events, files, notifications, payments, sync, templates
from hub.api.middleware import (
    API_PREFIX,
    finish_request,
    http_error,
    hub_error,
    start_request,
    teardown_request,
    unexpected_error,
)
from hub.errors import HubError
from hub.manager import IntegrationManager

__all__ = ["API_PREFIX", "BLUEPRINTS", "create_app"]

BLUEPRINTS = (notifications.blueprint, templates.blueprint, payments.blueprint, files.blueprint, events.blueprint, sync.blueprint, admin.blueprint)


def create_app(config: dict[str, Any] | str | None = None, *, manager: IntegrationManager | None = None) -> Flask:
    """The Flask app. Pass a hub.yaml path or validated config dict, or an existing manager."""
    app = Flask("hub")
    hub = manager or IntegrationManager(config)
    app.extensions["hub"] = hub
    # Bodies over the file limit (plus room for multipart/base64 framing) are refused before reading.
    app.config["MAX_CONTENT_LENGTH"] = int(hub.config["storage_limits"]["max_file_size"] * 1.4) + 64 * 1024
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint, url_prefix=API_PREFIX)
    app.add_url_rule("/metrics", "prometheus", _prometheus)
    app.before_request(start_request)
    app.after_request(finish_request)
    app.teardown_request(teardown_request)
    app.register_error_handler(HubError, hub_error)
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(Exception, unexpected_error)
    return app


def _prometheus() -> Response:
    hub = current_app.extensions["hub"]
    return Response(generate_latest(hub.metrics.registry), mimetype=CONTENT_TYPE_LATEST)
