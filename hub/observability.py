"""Structured JSON logs with request ids, redaction of personal data and secrets, Prometheus metrics."""

from __future__ import annotations

import contextvars
import logging
import re
import sys
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from pythonjsonlogger.json import JsonFormatter

#: The id of the API request (or background job) being handled, added to every log line.
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("hub_request_id", default=None)
tenant_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("hub_tenant", default=None)

_EMAIL = re.compile(r"\b([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})\b")
# Card numbers: 13-19 digits, optionally grouped by spaces or dashes.
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
# Phone numbers: a + and 8-15 digits, or 10+ digit runs that are not card-length groups.
_PHONE = re.compile(r"\+\d[\d ()-]{6,18}\d")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")
_HUB_TOKEN = re.compile(r"\bhub_[A-Za-z0-9_-]{20,}")
_PROVIDER_KEY = re.compile(r"\b(sk|rk|pk)_(live|test)_[A-Za-z0-9]{6,}|\bSG\.[A-Za-z0-9_.-]{10,}|\bAKIA[A-Z0-9]{12,}")
# A secret-named key (also as the tail of a longer name: api_secret, x-auth-token) and its value, in
# JSON, query strings, headers or Python reprs.
_SECRET_ASSIGNMENT = re.compile(
    r"(?i)\b([\w-]*(?:password|passwd|secret|api[_-]?key|token|authorization))(['\"]?\s*[:=]\s*['\"]?)([^\s'\",;&]+)"
)

SECRET_KEY_NAMES = re.compile(r"(?i)(password|secret|token|api_?key|authorization|credential|private)")


def mask_email(value: str) -> str:
    return _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", value)


def mask_phone(value: str) -> str:
    digits = re.sub(r"\D", "", value)
    return f"+{'*' * max(0, len(digits) - 4)}{digits[-4:]}" if digits else value


def _mask_card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return f"****{digits[-4:]}"


def redact_text(text: str) -> str:
    """Mask secrets, card numbers, email addresses and phone numbers in free text."""
    if not text:
        return text
    text = _BEARER.sub(lambda m: f"{m.group(1)} [REDACTED]", text)
    text = _HUB_TOKEN.sub("hub_[REDACTED]", text)
    text = _PROVIDER_KEY.sub("[REDACTED]", text)
    text = _SECRET_ASSIGNMENT.sub(lambda m: f"{m.group(1)}{m.group(2)}[REDACTED]", text)
    text = _CARD.sub(_mask_card, text)
    text = _PHONE.sub(lambda m: mask_phone(m.group(0)), text)
    return mask_email(text)


def redact(value: Any, key: str | None = None) -> Any:
    """Redacted copy of a JSON-like value: secret-named keys blanked, text masked."""
    if key is not None and SECRET_KEY_NAMES.search(key) and value not in (None, ""):
        return "[REDACTED]"
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


class RedactingFilter(logging.Filter):
    """Applied to every handler: what reaches a log file has been through :func:`redact_text`."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        record.msg = redact_text(message)
        record.args = None
        for name, value in list(record.__dict__.items()):
            if name in _STANDARD_ATTRS:
                continue
            record.__dict__[name] = redact(value, name)
        record.request_id = request_id_var.get()
        record.tenant = getattr(record, "tenant", None) or tenant_var.get()
        return True


_STANDARD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def configure_logging(level: str = "INFO", stream: Any = None, json_format: bool = True) -> logging.Handler:
    """JSON lines on stderr (or ``stream``); idempotent so tests and the CLI can call it freely."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_hub_handler", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    if json_format:
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(tenant)s",
                rename_fields={"levelname": "level", "asctime": "time", "name": "logger"},
            )
        )
    handler.addFilter(RedactingFilter())
    handler._hub_handler = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    return handler


class Metrics:
    """Prometheus counters and histograms, one registry per hub so tests do not collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.provider_calls = Counter(
            "hub_provider_calls",
            "Provider hook calls by outcome",
            ["service", "provider", "operation", "outcome"],
            registry=self.registry,
        )
        self.provider_latency = Histogram(
            "hub_provider_latency_seconds",
            "Provider hook latency",
            ["service", "provider", "operation"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.http_requests = Counter(
            "hub_http_requests", "API requests", ["method", "endpoint", "status"], registry=self.registry
        )
        self.http_latency = Histogram(
            "hub_http_request_seconds", "API request latency", ["endpoint"], registry=self.registry
        )
        self.rate_limited = Counter("hub_rate_limited", "Calls refused by rate limits", ["service"], registry=self.registry)
        self.jobs = Counter("hub_jobs", "Background jobs finished", ["kind", "status"], registry=self.registry)
