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

import os
import threading
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self

from marshmallow import Schema, fields, validate

from hub.capabilities import HealthResult
from hub.errors import ConfigurationError, ProviderError, TransientError

if TYPE_CHECKING:
    import requests

from hub.http.errors import (
    _ABSOLUTE,
    ErrorExtractor,
    ProviderReason,
    _is_transport_failure,
    describe_url,
    json_error,
    may_have_reached_provider,
    parse_retry_after,
    response_error,
    status_error,
    transport_error,
)

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
