"""The web console: server-rendered pages (Jinja2) over the same services the REST API calls, served by the hub
itself under ``/console``, with the API reference (Swagger UI from the ``swagger-ui-bundle`` package) beside it.

Signing in takes an API token and its tenant, checked exactly as the API checks a bearer token; the signed
session cookie (HttpOnly, SameSite=Lax) keeps the token's hash and the tenant, never the token itself, so a
revoked or expired token ends the session at the next page. Every form carries a CSRF token (Flask-WTF).
"""

from __future__ import annotations

import os
import secrets
import time
from datetime import timedelta
from pathlib import Path

from flask import Flask

from hub.console.pages import CONSOLE_PREFIX, blueprint

__all__ = ["CONSOLE_PATHS", "CONSOLE_PREFIX", "SECRET_ENV", "blueprint", "console_paths", "init_console"]

#: The environment variable holding the session-signing key; unset, a random key kept in ``data_dir``.
SECRET_ENV = "HUB_CONSOLE_SECRET_KEY"
#: ``1``: the session cookie is sent over HTTPS only (set it behind a TLS-terminating proxy).
SECURE_COOKIE_ENV = "HUB_CONSOLE_SECURE_COOKIE"
#: A console session lasts this long after sign-in (the token's own expiry or revocation ends it sooner).
SESSION_LIFETIME = timedelta(hours=8)

#: Every console page and form, as Flask rules (for the cross-tenant probe and the tests).
CONSOLE_PATHS: tuple[str, ...] = tuple(
    CONSOLE_PREFIX + path
    for path in (
        "/",
        "/signin",
        "/signout",
        "/notifications",
        "/payments",
        "/files",
        "/events",
        "/sync-runs",
        "/records/<record_id>",
        "/dead-letters",
        "/dead-letters/<item_id>/replay",
        "/subscriptions",
        "/sync",
        "/inventory",
        "/providers",
        "/alerts",
        "/api",
        "/api/assets/<path:filename>",
        "/static/<path:filename>",
    )
)


def console_paths(app: Flask) -> list[tuple[str, list[str]]]:
    """The console's rules registered on ``app`` with their methods (what a probe walks)."""
    return sorted(
        (rule.rule, sorted(rule.methods - {"HEAD", "OPTIONS"}))
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith(f"{blueprint.name}.")
    )


def init_console(app: Flask) -> None:
    """Register the console on the hub's app: the blueprint and the session settings it needs."""
    hub = app.extensions["hub"]
    app.secret_key = hub.environ.get(SECRET_ENV) or _kept_secret(Path(hub.config["data_dir"]) / "console-secret.key")
    app.config.update(
        SESSION_COOKIE_NAME="hub_console",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=hub.environ.get(SECURE_COOKIE_ENV, "") in ("1", "true", "yes"),
        SESSION_COOKIE_PATH=CONSOLE_PREFIX,
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session (which expires by itself)
    )
    app.register_blueprint(blueprint, url_prefix=CONSOLE_PREFIX)


def _kept_secret(path: Path) -> str:
    """A random key written once into the data folder (as the hub keeps its URL-signing key): every process
    sharing the folder signs sessions alike; processes on separate machines need ``HUB_CONSOLE_SECRET_KEY``."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # the first process to get here writes it; the others read what it wrote
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        time.sleep(0.05)
        return path.read_text().strip()
    key = secrets.token_urlsafe(48)
    with os.fdopen(descriptor, "w") as out:
        out.write(key)
    return key

