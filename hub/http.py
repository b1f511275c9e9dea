"""What every provider that speaks HTTP shares: pooled sessions with timeouts, and one mapping of HTTP
statuses and transport failures to the hub's errors (:mod:`hub.errors`).

A provider builds one :class:`HttpClient` (no network yet) in its constructor, calls through it in its hooks,
and closes it in ``close``; ``docs/writing-a-plugin.md`` walks through a whole provider built on it.

What the client does for you:

* **one ``requests.Session`` per worker thread**, made on first use (the constructor touches no network, and
  ``requests`` is imported only then), so concurrent hooks never share a session's state while each thread
  keeps its connections open for the next call; :meth:`HttpClient.close` closes them all, and the next call
  opens new ones (the hub reuses a provider after ``POST /initialize``). A forked worker process starts afresh.
* **timeouts on every request**: ``connect_timeout`` to open the connection, ``timeout`` for each read.
* **no retries of its own**: the core's pipeline retries with backoff (honouring ``retry_after``), opens the
  circuit breaker and fails over; a second retry layer here would multiply every wait during an outage.
* **no redirects followed** unless asked for (``requests`` would turn a redirected ``POST`` into a ``GET``).
* **errors mapped once**, as below, with messages that name the service, the status and the provider's own
  code and message -- never the URL (webhook URLs and query strings carry secrets) nor a credential.

=================================================== ===============================================
what happened                                        raised
=================================================== ===============================================
connection refused, host not found, TLS failure,    :class:`~hub.errors.TransientError`
connect timeout (nothing was sent)                  (``provider_code`` ``connection``/``connect-timeout``)
read timeout, connection dropped after the request  ``sent_error``: :class:`~hub.errors.TransientError` by
was sent (it may have reached the provider)         default (``timeout``/``connection-dropped``); see below
HTTP 408, 429, 5xx                                  :class:`~hub.errors.TransientError` with ``retry_after``
                                                    from ``Retry-After`` (seconds or an HTTP date)
HTTP 401, 403                                       :class:`~hub.errors.ConfigurationError`
HTTP 3xx (redirects are not followed)               :class:`~hub.errors.ConfigurationError`
HTTP 404                                            :class:`~hub.errors.NotFoundError`
any other 4xx                                       :class:`~hub.errors.PermanentError`
a URL or header the request cannot be built with    :class:`~hub.errors.ConfigurationError`
=================================================== ===============================================

``provider_code`` is the provider's own code when ``extract_error`` finds one in the body, else the status.
``status_errors`` changes the class for particular statuses: a notify provider that POSTs to a configured URL
can say ``{404: ConfigurationError}`` (a wrong URL is a setting to fix, and the next provider should be tried).

**Payments.** A read timeout or a dropped connection means the request may have been received: a charge may
exist. Pass ``sent_error=OutcomeUnknownError`` (from :mod:`hub.errors`) to the client or to one call, so the core
retries the same gateway with the same idempotency key and looks the payment up, never failing it over to
another gateway. A gateway's 5xx may also come after it processed the request: where its documentation says so,
add ``status_errors={500: OutcomeUnknownError, 502: OutcomeUnknownError, 504: OutcomeUnknownError}``.
:func:`may_have_reached_provider` answers the same question for an exception you caught.

For an SDK with its own HTTP stack, the same mapping is available piecemeal: :func:`status_error` (a status,
headers and the provider's code and message), :func:`transport_error` (a ``requests``, ``urllib3``,
``http.client`` or socket exception), :func:`parse_retry_after`.
"""

from __future__ import annotations

import email.utils
import http.client
import os
import re
import socket
import ssl
import threading
import time
import urllib.error
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlsplit

from marshmallow import Schema, fields, validate

from hub.capabilities import HealthResult
from hub.errors import (
    ConfigurationError,
    NotFoundError,
    PermanentError,
    ProviderError,
    TransientError,
)

if TYPE_CHECKING:
    import requests

__all__ = [
    "ErrorExtractor",
    "HttpClient",
    "HttpSettings",
    "ProviderReason",
    "describe_url",
    "json_error",
    "may_have_reached_provider",
    "parse_retry_after",
    "response_error",
    "status_error",
    "transport_error",
]

#: Statuses that may pass if the request is sent again later.
TRANSIENT_STATUSES = frozenset({408, 429})
#: How much of a provider's own error message goes into the hub's (whitespace collapsed).
MESSAGE_LIMIT = 300


# --- settings --------------------------------------------------------------------------------------


class HttpSettings(Schema):
    """Base for a provider's settings schema: the two timeouts every HTTP provider should let users set.

    Subclass it and add your own fields; :meth:`HttpClient.from_settings` reads these two.
    """

    #: Seconds to wait for each read of the answer (``requests``' read timeout).
    timeout = fields.Float(load_default=10.0, validate=validate.Range(min=0, min_inclusive=False, max=300))
    #: Seconds to wait for the connection to open; absent: the same as ``timeout``.
    connect_timeout = fields.Float(
        load_default=None, allow_none=True, validate=validate.Range(min=0, min_inclusive=False, max=300)
    )


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


class HttpClient:
    """Pooled ``requests`` sessions, one per thread, for one provider; every request is bounded by timeouts
    and its failures are raised as the hub's errors (see the module's table).

    :param service: how error messages name the other side (``"Acme SMS"``); never put a URL here.
    :param base_url: joined with the relative paths given to :meth:`request` (``"/v1/messages"``).
    :param timeout: seconds for each read of the answer. :param connect_timeout: seconds to connect
        (default: ``timeout``).
    :param headers: sent with every request (``User-Agent``, ``Accept``, an API key header).
    :param auth: ``(user, password)`` for HTTP Basic authentication, or any ``requests`` auth object.
    :param extract_error: finds the provider's code and message in error answers (see :func:`json_error`).
    :param status_errors: status -> error class overrides (``{404: ConfigurationError}``).
    :param sent_error: the class for failures after the request was sent (see :func:`transport_error`).
    """

    def __init__(
        self,
        service: str,
        *,
        base_url: str | None = None,
        timeout: float = 10.0,
        connect_timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        auth: Any = None,
        extract_error: ErrorExtractor | None = None,
        status_errors: Mapping[int, type[ProviderError]] | None = None,
        sent_error: type[ProviderError] = TransientError,
    ) -> None:
        self.service = service
        self.base_url = base_url.rstrip("/") if base_url else None
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout) if connect_timeout else self.timeout
        self.headers = dict(headers or {})
        self.auth = auth
        self.extract_error = extract_error
        self.status_errors = dict(status_errors or {})
        self.sent_error = sent_error
        self._local = threading.local()
        # Weak: a finished worker thread's session goes with it; close() reaches the live ones.
        self._sessions: weakref.WeakSet[requests.Session] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._generation = 0

    @classmethod
    def from_settings(cls, service: str, settings: Mapping[str, Any], **options: Any) -> Self:
        """A client with the ``timeout`` and ``connect_timeout`` of settings loaded by :class:`HttpSettings`."""
        options.setdefault("timeout", settings.get("timeout") or 10.0)
        options.setdefault("connect_timeout", settings.get("connect_timeout"))
        return cls(service, **options)

    def __repr__(self) -> str:
        return f"<HttpClient {self.service!r}>"

    # --- sessions ------------------------------------------------------------------------------------

    def session(self) -> requests.Session:
        """This thread's session, made on first use (and again after :meth:`close`, or in a forked child)."""
        local = self._local
        session: requests.Session | None = getattr(local, "session", None)
        if session is None or local.generation != self._generation or local.pid != os.getpid():
            import requests

            session = requests.Session()
            session.headers.update(self.headers)
            if self.auth is not None:
                session.auth = self.auth
            local.session, local.generation, local.pid = session, self._generation, os.getpid()
            with self._lock:
                self._sessions.add(session)
        return session

    def close(self) -> None:
        """Close every thread's session; the next request opens a new one."""
        with self._lock:
            sessions = list(self._sessions)
            self._sessions = weakref.WeakSet()
            self._generation += 1
        for session in sessions:
            session.close()

    # --- requests ------------------------------------------------------------------------------------

    def url(self, url_or_path: str) -> str:
        """``url_or_path`` joined to ``base_url`` unless it is absolute already."""
        if _ABSOLUTE.match(url_or_path) or self.base_url is None:
            return url_or_path
        return f"{self.base_url}/{url_or_path.lstrip('/')}"

    def request(
        self,
        method: str,
        url: str,
        *,
        check: bool = True,
        timeout: float | None = None,
        sent_error: type[ProviderError] | None = None,
        service: str | None = None,
        **options: Any,
    ) -> requests.Response:
        """Send one request and return the response.

        :param url: an absolute URL, or a path joined to ``base_url``.
        :param check: raise the hub's error for a status other than 2xx (``False``: return every response;
            :meth:`error_for` then maps it when you need to look at the body first).
        :param timeout: this request's read timeout, e.g. a shorter one for a health check.
        :param sent_error: this request's class for failures after sending (a payment's
            ``OutcomeUnknownError``).
        :param service: how this request's errors name the other side, when not as the client's do
            (``"the webhook for #ops"``).
        :param options: passed to ``requests`` (``params``, ``data``, ``json``, ``headers``, ``auth``,
            ``allow_redirects`` -- ``False`` unless given).
        :raises ProviderError: the failure, mapped as the module's table says.
        """
        read_timeout = self.timeout if timeout is None else float(timeout)
        options.setdefault("allow_redirects", False)
        try:
            response = self.session().request(
                method, self.url(url), timeout=(min(self.connect_timeout, read_timeout), read_timeout), **options
            )
        except Exception as error:  # mapped below; re-raised as it is if it is no transport failure
            if not _is_transport_failure(error):
                raise
            mapped = transport_error(
                error, service=service or self.service, timeout=read_timeout, sent_error=sent_error or self.sent_error
            )
            # Not chained: the requests/urllib3 exception's text quotes the URL, which may hold a secret.
            raise mapped from None
        if check:
            error = self.error_for(response, service=service)
            if error is not None:
                raise error
        return response

    def error_for(self, response: requests.Response, *, service: str | None = None) -> ProviderError | None:
        """The hub error for ``response`` with this client's extractor and overrides, or ``None`` for 2xx."""
        return response_error(
            response,
            service=service or self.service,
            extract_error=self.extract_error,
            status_errors=self.status_errors,
        )

    def probe(self, method: str = "GET", url: str = "", *, timeout: float = 3.0, **options: Any) -> HealthResult:
        """One cheap request for a ``health`` hook, as a :class:`~hub.capabilities.HealthResult` (never raises).

        ``error`` when the request fails the way a real call would fail over: no connection, a timeout, a
        401/403, a 5xx or 429, or a status ``status_errors`` maps to ``ConfigurationError`` or
        ``TransientError``. Any other answer -- even a 405 to a ``HEAD`` -- shows the service reachable and the
        credentials accepted: ``success``. ``url`` defaults to ``base_url``. The read timeout is ``timeout`` or
        the client's own, whichever is shorter: ``GET /health`` waits for every provider.
        """
        try:
            timeout = min(timeout, self.timeout)
            response = self.request(method, url or self.base_url or "", check=False, timeout=timeout, **options)
        except ProviderError as error:
            return HealthResult("error", error.message)
        error = self.error_for(response)
        if isinstance(error, TransientError | ConfigurationError):
            return HealthResult("error", error.message)
        return HealthResult("success", f"{self.service} reachable (HTTP {response.status_code})")

    def get(self, url: str, **options: Any) -> requests.Response:
        return self.request("GET", url, **options)

    def post(self, url: str, **options: Any) -> requests.Response:
        return self.request("POST", url, **options)

    def put(self, url: str, **options: Any) -> requests.Response:
        return self.request("PUT", url, **options)

    def delete(self, url: str, **options: Any) -> requests.Response:
        return self.request("DELETE", url, **options)

    def head(self, url: str, **options: Any) -> requests.Response:
        return self.request("HEAD", url, **options)


def _is_transport_failure(error: BaseException) -> bool:
    import requests

    return isinstance(error, requests.RequestException | OSError | http.client.HTTPException)
