"""How a provider's HTTP answers and transport failures become the hub's errors (:mod:`hub.errors`):
one mapping for every plugin, used by :class:`hub.http.HttpClient` and usable on its own by SDK-based plugins."""

from __future__ import annotations

import email.utils
import http.client
import re
import socket
import ssl
import time
import urllib.error
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from hub.errors import (
    ConfigurationError,
    NotFoundError,
    PermanentError,
    ProviderError,
    ProviderThrottledError,
    TransientError,
)

if TYPE_CHECKING:
    import requests

#: Statuses that may pass if the request is sent again later.
TRANSIENT_STATUSES = frozenset({408, 429})
#: How much of a provider's own error message goes into the hub's (whitespace collapsed).
MESSAGE_LIMIT = 300


# --- the provider's own reason for an error ----------------------------------------------------------


@dataclass(frozen=True)
class ProviderReason:
    """The provider's own error code and message, found in an error answer's body."""

    code: str | None = None
    message: str | None = None


#: Finds the provider's code and message in an error answer (``None`` when the body has neither).
ErrorExtractor = Callable[["requests.Response"], "ProviderReason | None"]


def json_error(code: str | None = "code", message: str | None = "message") -> ErrorExtractor:
    """An :data:`ErrorExtractor` for a JSON error body: ``code`` and ``message`` are dotted paths into it,
    with list indexes as numbers (``"errors.0.message"``). A body that is not JSON, or lacks both, gives
    ``None``, and the error then carries the HTTP status alone.

    ``{"code": 21211, "message": "..."}`` is ``json_error()``; ``{"errors": [{"message": "...", "field": "..."}]}``
    is ``json_error(code="errors.0.field", message="errors.0.message")``.
    """

    def extract(response: requests.Response) -> ProviderReason | None:
        try:
            body = response.json()
        except ValueError:
            return None
        found_code = _lookup(body, code) if code else None
        found_message = _lookup(body, message) if message else None
        if found_code is None and found_message is None:
            return None
        return ProviderReason(
            code=str(found_code) if found_code is not None else None,
            message=str(found_message) if found_message is not None else None,
        )

    return extract


def _lookup(document: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(document, Mapping):
            document = document.get(part)
        elif isinstance(document, list) and part.isdigit() and int(part) < len(document):
            document = document[int(part)]
        else:
            return None
        if document is None:
            return None
    return document if isinstance(document, str | int | float) and document != "" else None


def _clean(text: str | None) -> str | None:
    if not text:
        return None
    text = " ".join(str(text).split())
    return text[:MESSAGE_LIMIT] + ("…" if len(text) > MESSAGE_LIMIT else "") if text else None


# --- HTTP statuses ------------------------------------------------------------------------------------


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: ``"120"``, or an HTTP date (``"Wed, 21 Oct 2026
    07:28:00 GMT"``) counted from ``now`` (``time.time()``). ``None`` when absent or unreadable; a date in
    the past gives ``0.0``."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if seconds >= 0 and seconds == seconds and seconds != float("inf") else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None  # RFC 9110 dates are always GMT; a date without a zone is not one
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    if not headers:
        return None
    value = headers.get(name)  # requests' and http.client's headers are case-insensitive already
    if value is None:
        wanted = name.lower()
        value = next((item for key, item in headers.items() if str(key).lower() == wanted), None)
    return None if value is None else str(value)


def status_error(
    status: int,
    *,
    service: str,
    headers: Mapping[str, str] | None = None,
    code: str | None = None,
    message: str | None = None,
    status_errors: Mapping[int, type[ProviderError]] | None = None,
) -> ProviderError | None:
    """The hub error for an HTTP answer with ``status``, or ``None`` for 2xx.

    :param service: how messages name the other side (``"Acme SMS"``, ``"the webhook for #ops"``).
    :param headers: the answer's headers; ``Retry-After`` becomes ``retry_after`` on transient errors.
    :param code: the provider's own error code (``provider_code``; the status when absent).
    :param message: the provider's own message, appended to the hub's (collapsed, at most 300 characters).
    :param status_errors: status -> error class, replacing the default class for those statuses.
    """
    if 200 <= status < 300:
        return None
    provider_code = str(code) if code not in (None, "") else str(status)
    label = f"{service} answered HTTP {status}"
    if code not in (None, "") and str(code) != str(status):
        label += f" ({code})"
    detail = _clean(message)
    error_class: type[ProviderError]
    if status_errors and status in status_errors:
        error_class = status_errors[status]
    elif status in (401, 403):
        error_class, label = ConfigurationError, f"{service} refused the credentials (HTTP {status})"
        if code not in (None, "") and str(code) != str(status):
            label = f"{service} refused the credentials (HTTP {status}, {code})"
    elif 300 <= status < 400:
        error_class, label = ConfigurationError, f"{label}, a redirect: configure the final URL"
    elif status == 404:
        error_class = NotFoundError
    elif status == 429:
        error_class = ProviderThrottledError
    elif status in TRANSIENT_STATUSES or status >= 500 or status < 200:
        error_class = TransientError
    else:
        error_class = PermanentError
    text = f"{label}: {detail}" if detail else label
    retry_after = parse_retry_after(_header(headers, "Retry-After")) if error_class.retryable else None
    return error_class(text, provider_code=provider_code, retry_after=retry_after)


def response_error(
    response: requests.Response,
    *,
    service: str,
    extract_error: ErrorExtractor | None = None,
    status_errors: Mapping[int, type[ProviderError]] | None = None,
) -> ProviderError | None:
    """:func:`status_error` for a ``requests`` response, with the provider's code and message taken from
    its body by ``extract_error`` (see :func:`json_error`). ``None`` for 2xx."""
    if 200 <= response.status_code < 300:
        return None
    reason = extract_error(response) if extract_error is not None else None
    return status_error(
        response.status_code,
        service=service,
        headers=response.headers,
        code=reason.code if reason else None,
        message=reason.message if reason else None,
        status_errors=status_errors,
    )


# --- transport failures -----------------------------------------------------------------------------


def _causes(error: BaseException) -> Iterator[BaseException]:
    """``error`` and what it wraps: ``requests`` keeps urllib3's error in ``args``, urllib3 its cause in
    ``reason``, and Python in ``__cause__``/``__context__``."""
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        wrapped = [getattr(current, "reason", None), current.__cause__, current.__context__]
        wrapped += [item for item in getattr(current, "args", ()) if isinstance(item, BaseException)]
        pending.extend(item for item in wrapped if isinstance(item, BaseException))


def _names(error: BaseException) -> set[str]:
    return {type(cause).__name__ for cause in _causes(error)}


# urllib3's names, matched by name so that this module works with whatever version requests brought.
_NOT_SENT = {"NewConnectionError", "NameResolutionError", "ConnectTimeoutError", "ConnectTimeout", "ProxyError"}


def may_have_reached_provider(error: BaseException) -> bool:
    """Whether the request that failed with ``error`` may have been received by the provider.

    ``False`` only when it provably was not: the connection was refused, the host name did not resolve, the
    TLS handshake or the connect timed out or failed, the URL was invalid. ``True`` for a read timeout, a
    connection dropped or reset after the request went out, a truncated answer, and anything unrecognised --
    for a payment that means "the outcome is unknown: look it up, never charge elsewhere".
    """
    names = _names(error)
    if names & _NOT_SENT:
        return False
    try:
        import requests
    except ImportError:  # pragma: no cover - requests is a core dependency
        requests = None  # type: ignore[assignment]
    if requests is not None:
        if isinstance(error, requests.exceptions.SSLError | requests.exceptions.ConnectTimeout):
            return False
        if isinstance(error, _invalid_request_errors()):
            return False
    for cause in _causes(error):
        if isinstance(cause, ConnectionRefusedError | socket.gaierror | ssl.SSLError):
            return False
        if isinstance(cause, urllib.error.URLError) and cause is error:
            # urllib raises URLError for failures while connecting and sending; the answer's are raised bare.
            reason = cause.reason
            return not isinstance(reason, ConnectionRefusedError | socket.gaierror | ssl.SSLError | TimeoutError)
    return True


def _invalid_request_errors() -> tuple[type[BaseException], ...]:
    import requests

    exceptions = requests.exceptions
    return (
        exceptions.InvalidURL,
        exceptions.MissingSchema,
        exceptions.InvalidSchema,
        exceptions.InvalidHeader,
        exceptions.URLRequired,
        exceptions.InvalidJSONError,
    )


def _what_failed(error: BaseException) -> str:
    """A short, secret-free description (exception texts quote URLs: only types are looked at)."""
    for cause in _causes(error):
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror) or type(cause).__name__ == "NameResolutionError":
            return "host name not found"
        if isinstance(cause, ssl.SSLCertVerificationError):
            return "TLS certificate not trusted"
        if isinstance(cause, ssl.SSLError):
            return "TLS handshake failed"
        if isinstance(cause, ConnectionResetError):
            return "connection reset"
        if isinstance(cause, http.client.RemoteDisconnected):
            return "connection closed without an answer"
        if isinstance(cause, http.client.IncompleteRead) or type(cause).__name__ == "ChunkedEncodingError":
            return "answer cut short"
    return type(error).__name__


def transport_error(
    error: BaseException,
    *,
    service: str,
    timeout: float | None = None,
    sent_error: type[ProviderError] = TransientError,
) -> ProviderError:
    """The hub error for an exception raised while talking to ``service`` (``requests``, urllib3,
    ``http.client``, ``urllib`` or a socket error). The message names the service and the kind of failure,
    never the URL; ``provider_code`` is ``connection``, ``connect-timeout``, ``timeout`` or
    ``connection-dropped``.

    :param timeout: the read timeout, quoted in the message of a timeout.
    :param sent_error: the class raised when the request may have reached the provider (a read timeout, a
        dropped connection): :class:`~hub.errors.TransientError` for notify; a payment provider passes
        ``OutcomeUnknownError`` so the core looks the payment up instead of failing over.
    """
    if isinstance(error, ProviderError):
        return error
    names = _names(error)
    if _is_invalid_request(error):
        return ConfigurationError(
            f"the request to {service} cannot be sent ({type(error).__name__}): check the configured URL",
            provider_code="invalid-request",
        )
    timed_out = any(isinstance(cause, TimeoutError | socket.timeout) for cause in _causes(error)) or bool(
        names & {"Timeout", "ReadTimeout", "ConnectTimeout", "ReadTimeoutError", "ConnectTimeoutError"}
    )
    within = f" within {timeout:g} s" if timeout else ""
    if not may_have_reached_provider(error):
        if timed_out:
            return TransientError(f"cannot reach {service}: no connection{within}", provider_code="connect-timeout")
        return TransientError(f"cannot reach {service}: {_what_failed(error)}", provider_code="connection")
    if timed_out:
        return sent_error(f"{service} did not answer{within}", provider_code="timeout")
    return sent_error(
        f"the connection to {service} failed after the request was sent: {_what_failed(error)}",
        provider_code="connection-dropped",
    )


def _is_invalid_request(error: BaseException) -> bool:
    try:
        return isinstance(error, _invalid_request_errors())
    except ImportError:  # pragma: no cover
        return False


def describe_url(url: str) -> str:
    """``host`` or ``host:port`` of ``url``: how a message may name an endpoint without quoting the
    credentials, path or query a URL can carry."""
    parts = urlsplit(url)
    host = parts.hostname or "the endpoint"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{host}:{port}" if port else host


# --- the client -------------------------------------------------------------------------------------

_ABSOLUTE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def _is_transport_failure(error: BaseException) -> bool:
    import requests

    return isinstance(error, requests.RequestException | OSError | http.client.HTTPException)
