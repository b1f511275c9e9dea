"""Conformance checks for how a provider talks to its service: transport failures, threads, webhook signatures.

Every HTTP provider must turn the same failures into the same errors, be safe to call from several threads, and
(for providers that receive webhooks) refuse forged, tampered and stale requests. These checks test that for
real, against servers the kit starts on 127.0.0.1, so a plugin's tests do not repeat them by hand:

* :func:`check_transport_errors` -- the service is down; too slow (past the provider's timeout); drops the
  connection after the request was sent; answers 500, 502, 503, 429 with ``Retry-After`` (in seconds and as an
  HTTP date), 401 and 403. Each must raise the right :mod:`hub.errors` class without a secret or the URL in its
  message, the provider must not retry by itself (the core does), and ``health`` must report, not raise.
* :func:`check_concurrent_use` -- calls from several threads at once, each thread several times in a row,
  through a connection-counting proxy in front of the plugin's own fake: every call gets its own results, and
  connections are pooled rather than opened per call.
* :func:`check_webhook_signatures` -- a validly signed request is accepted and gives stable event ids (a
  replay is then deduplicated by the core), a forged one and every tampered copy are refused with
  ``SignatureError``, and one signed outside the provider's tolerance is refused as stale.

Each check takes a ``build(url, timeout)`` callable that builds the provider (with ``harness.build``) pointed at
the URL the kit gives, with that read timeout; how the URL maps to settings is the plugin's business::

    from hub.testing.transport import check_concurrent_use, check_transport_errors

    def build_at(harness):
        return lambda url, timeout: harness.build("pager", {"api_key": "k", "base_url": url, "timeout": timeout})

    def test_transport_errors(provider_harness):
        provider_harness.add_plugin(hub_pager, "pager")
        check_transport_errors(provider_harness, build_at(provider_harness))

    def test_concurrent_use(provider_harness, pager_fake):
        provider_harness.add_plugin(hub_pager, "pager")
        check_concurrent_use(provider_harness, build_at(provider_harness), pager_fake.url)

The servers are here too, for a plugin's own tests: :class:`FaultServer` answers every request with the
:class:`Fault` a test sets, and :class:`ConnectionCountingProxy` counts the TCP connections clients open.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import math
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlencode, urlsplit, urlunsplit

from hub.capabilities import (
    HealthResult,
    Message,
    NotifyResult,
    Recipient,
    WebhookEvent,
    WebhookRequest,
)
from hub.errors import ConfigurationError, ProviderError, SignatureError, TransientError
from hub.testing.contracts import DEFAULT_ADDRESSES
from hub.testing.servers import ThreadedServer, refused_url

if TYPE_CHECKING:
    from hub.testing import ProviderHarness

__all__ = [
    "ConnectionCountingProxy",
    "Fault",
    "FaultServer",
    "ReceivedRequest",
    "check_concurrent_use",
    "check_transport_errors",
    "check_webhook_signatures",
    "notify_message",
]

#: ``build(url, timeout)``: the provider under test, built with ``harness.build`` to talk to ``url`` and to give
#: up reading an answer after ``timeout`` seconds.
ProviderBuilder = Callable[[str, float], Any]

_KIT_TENANT = "transport-checks"


# ---------------------------------------------------------------------------------------------------------------
# Servers


@dataclass
class Fault:
    """How :class:`FaultServer` answers: a status, headers and body, after ``delay`` seconds; or, with
    ``drop``, no answer at all (the connection is closed once the request was read)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b'{"kit": "injected fault"}'
    content_type: str = "application/json"
    delay: float = 0.0
    drop: bool = False
    #: Keep the connection open for the client's next request (a healthy upstream), instead of closing it.
    keep_alive: bool = False


@dataclass(frozen=True)
class ReceivedRequest:
    """One request :class:`FaultServer` read: as sent by the client."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class FaultServer(ThreadedServer):
    """An HTTP server on ``127.0.0.1`` answering every request (any method, any path) with :attr:`fault`.

    ``with FaultServer() as server:`` starts it on a free port; point the provider at :attr:`url`, set
    ``server.fault = Fault(status=503, headers={"Retry-After": "7"})``, and read what arrived in
    :attr:`requests`. Each connection is closed after one answer (unless the fault says ``keep_alive``), so a
    provider's pooled connection never carries a fault into the next scenario. Stopping wakes up answers still waiting out a ``delay``.
    """

    def __init__(self, fault: Fault | None = None) -> None:
        self.fault = fault or Fault()
        self.requests: list[ReceivedRequest] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        if self._server is None:
            raise RuntimeError("the FaultServer is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def reset(self, fault: Fault | None = None) -> None:
        """Forget the requests received and answer with ``fault`` (a plain 200 by default) from now on."""
        with self._lock:
            self.requests.clear()
            self.fault = fault or Fault()

    def received(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self.requests)

    def start(self) -> Self:
        if self._server is not None:
            return self
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                body = owner._read_body(self)
                with owner._lock:
                    owner.requests.append(ReceivedRequest(self.command, self.path, dict(self.headers.items()), body))
                    fault = owner.fault
                if fault.delay and owner._stopping.wait(fault.delay):
                    return
                if fault.drop:
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                with contextlib.suppress(OSError):  # the client gave up already (a timeout): nobody to answer
                    self.send_response(fault.status)
                    for name, value in fault.headers.items():
                        self.send_header(name, value)
                    if "content-type" not in {name.lower() for name in fault.headers}:
                        self.send_header("Content-Type", fault.content_type)
                    self.send_header("Content-Length", str(len(fault.body)))
                    if not fault.keep_alive:
                        self.send_header("Connection", "close")
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(fault.body)
                if not fault.keep_alive:
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
                return None

        self._stopping.clear()
        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self.serve(server, "fault-server")
        return self

    @staticmethod
    def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
        if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    handler.rfile.readline()
                    return b"".join(chunks)
                chunks.append(handler.rfile.read(size))
                handler.rfile.readline()
        length = int(handler.headers.get("Content-Length") or 0)
        return handler.rfile.read(length) if length else b""

    def stop(self) -> None:
        if self._server is not None:
            self._stopping.set()  # wakes answers still waiting out a delay
        super().stop()


class ConnectionCountingProxy(ThreadedServer):
    """An HTTP relay on ``127.0.0.1`` in front of ``upstream`` (``http://host:port/...``) that counts the
    connections clients open to it: how a test sees whether a provider pools its connections.

    It keeps each client connection open for the client's next request (HTTP/1.1 keep-alive) whatever the
    upstream does -- the kit's werkzeug-based fakes close theirs after every answer -- and forwards every
    request to the upstream on a connection of its own. :meth:`url` turns an upstream URL into the same URL
    through the relay (path and query kept).
    """

    #: Headers that belong to one connection, not to the message: never relayed as they are.
    HOP_BY_HOP = frozenset(
        {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}
    )

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"the upstream needs a host and a port: {upstream!r}")
        self.upstream = upstream
        self._target = (parts.hostname, parts.port)
        #: Client connections accepted so far.
        self.connections = 0
        #: Requests relayed so far.
        self.requests = 0
        self._lock = threading.Lock()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the proxy is not started")
        return int(self._server.server_address[1])

    def url(self, upstream_url: str | None = None) -> str:
        """``upstream_url`` (the upstream itself by default) with its host and port replaced by the relay's."""
        parts = urlsplit(upstream_url or self.upstream)
        return urlunsplit(parts._replace(netloc=f"127.0.0.1:{self.port}"))

    def start(self) -> Self:
        if self._server is not None:
            return self
        owner = self
        host, port = self._target

        class Relay(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with owner._lock:
                    owner.connections += 1

            def _relay(self) -> None:
                import http.client

                body = FaultServer._read_body(self)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in owner.HOP_BY_HOP}
                headers["Host"] = f"{host}:{port}"
                upstream = http.client.HTTPConnection(host, port, timeout=60)
                try:
                    upstream.request(self.command, self.path, body=body or None, headers=headers)
                    answer = upstream.getresponse()
                    content = answer.read()
                    answer_headers = answer.getheaders()
                    status, reason = answer.status, answer.reason
                except OSError:
                    self.send_error(502, "upstream unreachable")
                    return
                finally:
                    upstream.close()
                with owner._lock:
                    owner.requests += 1
                self.send_response(status, reason)
                for name, value in answer_headers:
                    if name.lower() not in owner.HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                if self.command == "HEAD":
                    # A HEAD answer has no body; its Content-Length is the resource's, not ours.
                    length = dict((name.lower(), value) for name, value in answer_headers).get("content-length")
                    if length is not None:
                        self.send_header("Content-Length", length)
                else:
                    self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(content)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _relay  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
                return None

        server = ThreadingHTTPServer(("127.0.0.1", 0), Relay)
        server.daemon_threads = True
        self.serve(server, "connection-counter")
        return self


# ---------------------------------------------------------------------------------------------------------------
# Shared helpers


def _label(provider: object) -> str:
    type_name = getattr(provider, "type_name", "") or type(provider).__name__
    return f"{type_name} provider {getattr(provider, 'name', '?')!r}"


def _fail(provider: object, problem: str) -> AssertionError:
    return AssertionError(f"{_label(provider)}: {problem}")


def notify_message(
    provider: Any, addresses: Sequence[str] | None = None, *, channel: str | None = None, tenant: str = _KIT_TENANT
) -> Message:
    """A message for ``provider``'s first channel (or ``channel``) to ``addresses`` (the kit's defaults), with
    a subject for email and blocks for chat; a fresh id each time."""
    channel = channel or tuple(getattr(provider, "channels", ()) or ("email",))[0]
    addresses = list(addresses) if addresses is not None else list(DEFAULT_ADDRESSES[channel])
    return Message(
        id=f"kit-{uuid.uuid4().hex[:12]}",
        tenant=tenant,
        channel=channel,
        recipients=[Recipient(address) for address in addresses],
        text="Transport check from the integration hub's conformance kit.",
        subject="Hub transport check" if channel == "email" else None,
        blocks=(
            [{"type": "section", "text": {"type": "plain_text", "text": "Hub transport check"}}]
            if channel == "chat"
            else None
        ),
        template="custom",
    )


def _secret_values(provider: Any) -> list[str]:
    """The values of the provider's ``secret_settings`` (nested strings too: a mapping of webhook URLs)."""
    settings = getattr(provider, "settings", {}) or {}
    found: list[str] = []

    def collect(value: Any) -> None:
        if isinstance(value, str) and len(value) >= 4:
            found.append(value)
        elif isinstance(value, Mapping):
            for item in value.values():
                collect(item)
        elif isinstance(value, list | tuple):
            for item in value:
                collect(item)

    for name in getattr(provider, "secret_settings", ()) or ():
        collect(settings.get(name))
    return found


def _texts(error: BaseException | HealthResult) -> list[str]:
    if isinstance(error, HealthResult):
        return [error.message or ""]
    return [str(error), str(getattr(error, "message", "") or ""), str(getattr(error, "detail", "") or "")]


def _check_no_secret(provider: Any, what: str, error: BaseException | HealthResult, urls: Sequence[str]) -> None:
    for text in _texts(error):
        for secret in _secret_values(provider):
            if secret in text:
                raise _fail(provider, f"{what}: the message quotes a secret setting's value: {text!r}")
        for url in urls:
            if url and url in text:
                raise _fail(provider, f"{what}: the message quotes the URL {url!r} (URLs can carry secrets): {text!r}")


def _expect_raise(
    provider: Any, what: str, expected: type[BaseException], run: Callable[[], Any]
) -> tuple[BaseException, float]:
    """Run ``run``, which must raise ``expected``; returns the error and the seconds it took."""
    started = time.monotonic()
    try:
        outcome = run()
    except expected as error:
        return error, time.monotonic() - started
    except AssertionError:
        raise
    except Exception as error:
        raise _fail(
            provider,
            f"{what}: raised {type(error).__name__}({error}); it must raise {expected.__name__} (from hub.errors) -- "
            "hub.http maps transport failures and statuses for you",
        ) from error
    if isinstance(outcome, NotifyResult):
        statuses = [result.status for result in outcome.results]
        raise _fail(
            provider,
            f"{what}: returned {statuses} instead of raising {expected.__name__}; when nothing was sent, raise "
            "(the core retries, then fails over)",
        )
    raise _fail(provider, f"{what}: returned {outcome!r} instead of raising {expected.__name__}")


# ---------------------------------------------------------------------------------------------------------------
# Transport errors


@dataclass(frozen=True)
class _Scenario:
    name: str
    fault: Fault
    expected: type[ProviderError]
    retry_after: tuple[float, float] | None = None  # the accepted range of retry_after
    #: Whether ``health`` is checked in this scenario too (a few suffice; each costs a request).
    check_health: bool = False


def _scenarios(
    timeout: float, sent_error: type[ProviderError], body: Fault, server_error: type[ProviderError] = TransientError
) -> list[_Scenario]:
    # Written when the scenarios are built: the ones before it take seconds (more on a loaded machine), so the
    # accepted range starts well below 30 -- still far from what a misread date (0, None) would give.
    in_30_seconds = email.utils.formatdate(time.time() + 30, usegmt=True)
    slow = timeout * 2 + 2.0
    scenarios = [
        # Answers 503 in the end: a provider without a timeout then fails the time limit, not the error class.
        _Scenario("a server slower than the timeout", Fault(status=503, delay=slow), sent_error, check_health=True),
        _Scenario("a connection dropped after the request was sent", Fault(drop=True), sent_error),
        _Scenario("HTTP 500", Fault(status=500), server_error),
        _Scenario("HTTP 502", Fault(status=502), server_error),
        _Scenario(
            "HTTP 503 with Retry-After: 5",
            Fault(status=503, headers={"Retry-After": "5"}),
            TransientError,
            (5, 5),
            check_health=True,
        ),
        _Scenario(
            "HTTP 429 with Retry-After: 7", Fault(status=429, headers={"Retry-After": "7"}), TransientError, (7, 7)
        ),
        _Scenario(
            "HTTP 429 with Retry-After as an HTTP date 30 s ahead",
            Fault(status=429, headers={"Retry-After": in_30_seconds}),
            TransientError,
            (10, 31),
        ),
        _Scenario("HTTP 401", Fault(status=401), ConfigurationError, check_health=True),
        _Scenario("HTTP 403", Fault(status=403), ConfigurationError),
    ]
    # Every error answer carries the body the provider's client can parse.
    return [replace(s, fault=replace(s.fault, body=body.body, content_type=body.content_type)) for s in scenarios]


def check_transport_errors(
    harness: ProviderHarness,
    build: ProviderBuilder,
    *,
    call: Callable[[Any], Any] | None = None,
    timeout: float = 0.5,
    health_contacts_server: bool = True,
    sent_error: type[ProviderError] = TransientError,
    server_error: type[ProviderError] = TransientError,
    error_body: bytes | None = None,
    error_content_type: str = "application/json",
) -> dict[str, BaseException]:
    """The provider maps every transport failure and error status the way the core expects.

    Against a server that is down, then a :class:`FaultServer` that is too slow, drops the connection, and
    answers 500, 502, 503 (``Retry-After: 5``), 429 (``Retry-After: 7``, and as an HTTP date), 401 and 403,
    ``call(provider)`` must raise:

    * :class:`~hub.errors.TransientError` for the server down, the 5xx and the 429s -- with ``retry_after``
      as the header said (5, 7, about 30 seconds);
    * ``sent_error`` when the request may have reached the service (too slow, dropped): ``TransientError``
      for notify; a payment provider passes ``OutcomeUnknownError``, and the server-down case must then *not*
      raise it (nothing was sent, so the core may fail over);
    * :class:`~hub.errors.ConfigurationError` for 401 and 403.

    ``server_error`` is what HTTP 500 and 502 must raise: ``TransientError`` by default; a payment gateway whose
    documentation calls such an answer indeterminate (Stripe: "treat the result of a 500 as indeterminate")
    passes ``OutcomeUnknownError``, so the core retries it on that gateway and never fails over.

    Every error's message must be free of the provider's secret settings and of the server's URL; the slow
    server must be given up on within ``2 * timeout + 1`` seconds; the provider must not send the same request
    twice (the core retries, not the plugin); and the server must have received the provider's requests (so
    ``build`` really pointed it there). When the provider implements ``health`` it must return a
    ``HealthResult`` in every case, ``error`` ones where the service failed unless ``health_contacts_server``
    is ``False`` (a health check that works offline).

    :param build: ``build(url, timeout)`` -- the provider, built with ``harness.build`` to talk to ``url``
        (``http://127.0.0.1:PORT``: add the path your settings need) with that read timeout.
    :param call: one call of the provider's main hook (``lambda p: harness.call(p, "pay", payment=...)``);
        for notify providers it defaults to :func:`notify_message` sent with ``notify``.
    :param error_body: the body of the error answers (a small JSON document by default), for an SDK that
        refuses to read anything but its service's error shape (an XML error document, say);
        ``error_content_type`` its type.
    :returns: each scenario's name -> the error raised.
    """
    call = call or _default_call(harness)
    raised: dict[str, BaseException] = {}

    down_url = refused_url()
    provider = build(down_url, timeout)
    error, _ = _expect_raise(
        provider, "with the service down (connection refused)", TransientError, lambda: call(provider)
    )
    if sent_error is not TransientError and isinstance(error, sent_error):
        raise _fail(
            provider,
            f"with the service down it raised {type(error).__name__}, but the connection was refused: nothing was "
            "sent, so raise TransientError (the core may fail over)",
        )
    _check_no_secret(provider, "with the service down", error, [down_url])
    _check_health(harness, provider, "with the service down", expect_error=health_contacts_server, urls=[down_url])
    raised["the service down"] = error

    with FaultServer() as server:
        body = Fault(body=error_body, content_type=error_content_type) if error_body is not None else Fault()
        for scenario in _scenarios(timeout, sent_error, body, server_error):
            server.reset(scenario.fault)
            provider = build(server.url, timeout)
            what = f"against {scenario.name}"
            error, elapsed = _expect_raise(provider, what, scenario.expected, lambda p=provider: call(p))
            requests = server.received()
            deadline = time.monotonic() + 2.0
            while not requests and time.monotonic() < deadline:
                # A client that timed out may be ahead of the server's thread on a loaded machine.
                time.sleep(0.05)
                requests = server.received()
            if not requests:
                raise _fail(
                    provider,
                    f"{what}: the server at the URL build() was given received no request; build the provider "
                    f"so that it talks to that URL ({server.url})",
                )
            if scenario.fault.delay:
                limit = timeout * 2 + 1.0
                if elapsed > limit:
                    raise _fail(
                        provider,
                        f"{what}: took {elapsed:.1f} s with a {timeout:g} s timeout; give every request a read "
                        "timeout (hub.http.HttpClient does) and do not wait out a slow service",
                    )
            repeated = _repeated(requests)
            if repeated is not None:
                raise _fail(
                    provider,
                    f"{what}: sent {repeated.method} {urlsplit(repeated.path).path} more than once; do not retry "
                    "inside the provider: the core retries with backoff and fails over",
                )
            if scenario.retry_after is not None:
                low, high = scenario.retry_after
                retry_after = getattr(error, "retry_after", None)
                if retry_after is None or not (low - 0.01 <= float(retry_after) <= high + 0.01):
                    raise _fail(
                        provider,
                        f"{what}: retry_after is {retry_after!r}, expected {low:g}..{high:g} s from the Retry-After "
                        "header (hub.http.parse_retry_after reads seconds and HTTP dates)",
                    )
            _check_no_secret(provider, what, error, [server.url])
            if scenario.check_health:
                server.reset(scenario.fault)
                _check_health(
                    harness,
                    provider,
                    what,
                    expect_error=health_contacts_server,
                    urls=[server.url],
                    limit=timeout * 2 + 1,
                )
            raised[scenario.name] = error
    return raised


def _default_call(harness: ProviderHarness) -> Callable[[Any], Any]:
    def notify(provider: Any) -> Any:
        if getattr(provider, "capability", None) != "notify":
            raise TypeError(
                f"{_label(provider)} is a {getattr(provider, 'capability', '?')} provider: pass call= (one call "
                "of its main hook, e.g. lambda p: harness.call(p, 'pay', payment=...))"
            )
        return harness.call(provider, "notify", message=notify_message(provider))

    return notify


def _repeated(requests: Sequence[ReceivedRequest]) -> ReceivedRequest | None:
    seen: set[tuple[str, str, bytes]] = set()
    for request in requests:
        key = (request.method, request.path, request.body)
        if key in seen:
            return request
        seen.add(key)
    return None


def _check_health(
    harness: ProviderHarness,
    provider: Any,
    what: str,
    *,
    expect_error: bool,
    urls: Sequence[str],
    limit: float | None = None,
) -> None:
    if not harness.implements(provider, "health"):
        return
    started = time.monotonic()
    try:
        health = harness.call(provider, "health")
    except Exception as error:
        raise _fail(
            provider, f"health() {what} raised {type(error).__name__}({error}); return HealthResult('error', reason)"
        ) from error
    elapsed = time.monotonic() - started
    if not isinstance(health, HealthResult):
        raise _fail(provider, f"health() {what} returned {health!r}, not a HealthResult")
    if expect_error and health.status != "error":
        raise _fail(
            provider,
            f"health() {what} reported {health.status!r} ({health.message}); report 'error' when the service "
            "fails (or pass health_contacts_server=False if health never contacts it)",
        )
    if limit is not None and elapsed > limit:
        raise _fail(provider, f"health() {what} took {elapsed:.1f} s: give its request a timeout")
    _check_no_secret(provider, f"health() {what}", health, urls)


# ---------------------------------------------------------------------------------------------------------------
# Threads


def _default_addresses(channel: str, number: int) -> list[str]:
    """Two addresses per call, unique across calls, valid for the channel."""
    if channel == "sms":
        return [f"+1415555{(1000 + 2 * number + offset) % 10000:04d}" for offset in (0, 1)]
    if channel == "chat":
        return [f"#kit-{number}-a", f"#kit-{number}-b"]
    return [f"kit-{number}-a@example.com", f"kit-{number}-b@example.org"]


def check_concurrent_use(
    harness: ProviderHarness,
    build: ProviderBuilder,
    upstream_url: str,
    *,
    threads: int = 8,
    rounds: int = 3,
    addresses: Callable[[int], list[str]] | None = None,
    call: Callable[[Any, int], Any] | None = None,
    pools_connections: bool = True,
    timeout: float = 60.0,
) -> list[Any]:
    """The provider serves calls from several threads at once, as the hub's workers make them.

    ``threads`` threads each make ``rounds`` calls one after the other (``threads * rounds`` in all), through a
    :class:`ConnectionCountingProxy` in front of ``upstream_url`` (the plugin's own fake of the service, which
    answers successfully). Every call must succeed and return its own results: for notify, one
    ``RecipientResult`` per recipient of *its* message, in order, ``sent`` or ``queued``, and provider message
    ids unique across all calls (results crossing between threads show as wrong addresses or repeated ids). With
    ``pools_connections`` the provider must reuse connections: at most ``2 * threads`` for all the calls (a
    provider opening one per call would need at least ``threads * rounds``).

    :param build: ``build(url, timeout)``, as for :func:`check_transport_errors`; the URL is ``upstream_url``
        with the proxy's host and port.
    :param addresses: call number -> the recipients of that call's message (default: two per call, unique).
    :param call: ``call(provider, number)`` for a provider that is not a notify provider; the check then
        verifies only that every call returned.
    :returns: the results, by call number.
    """
    if pools_connections and rounds < 3:
        raise ValueError("check_concurrent_use needs rounds >= 3 to tell pooled connections from one per call")
    total = threads * rounds
    with ConnectionCountingProxy(upstream_url) as proxy:
        provider = build(proxy.url(), 10.0)
        notify = call is None
        if notify and getattr(provider, "capability", None) != "notify":
            raise TypeError(f"{_label(provider)} is not a notify provider: pass call=(provider, number) -> result")
        channel = tuple(getattr(provider, "channels", ()) or ("email",))[0]
        recipients = [
            (addresses(number) if addresses else _default_addresses(channel, number)) for number in range(total)
        ]
        results: list[Any] = [None] * total
        errors: list[tuple[int, BaseException]] = []
        lock = threading.Lock()

        def worker(thread_number: int) -> None:
            for round_number in range(rounds):
                number = thread_number * rounds + round_number
                try:
                    if call is not None:
                        results[number] = call(provider, number)
                    else:
                        message = notify_message(provider, recipients[number], channel=channel)
                        results[number] = harness.call(provider, "notify", message=message)
                except BaseException as error:  # reported below, by the calling thread
                    with lock:
                        errors.append((number, error))

        workers = [threading.Thread(target=worker, args=(n,), name=f"kit-worker-{n}") for n in range(threads)]
        for thread in workers:
            thread.start()
        deadline = time.monotonic() + timeout
        for thread in workers:
            thread.join(max(0.0, deadline - time.monotonic()))
        running = [thread.name for thread in workers if thread.is_alive()]
        if running:
            raise _fail(provider, f"concurrent calls still running after {timeout:.0f} s: {running}")
        if errors:
            errors.sort(key=lambda item: item[0])
            listed = "; ".join(f"call {number}: {error!r}" for number, error in errors[:5])
            raise _fail(provider, f"{len(errors)} of {total} concurrent calls raised: {listed}") from errors[0][1]
        connections = proxy.connections

    if notify:
        seen_ids: dict[str, int] = {}
        for number, result in enumerate(results):
            if not isinstance(result, NotifyResult):
                raise _fail(provider, f"concurrent call {number} returned {result!r}, not a NotifyResult")
            got = [outcome.address for outcome in result.results]
            if got != recipients[number]:
                raise _fail(
                    provider,
                    f"concurrent call {number} sent to {recipients[number]} but its results are for {got}: results "
                    "crossed between threads (state shared by concurrent calls?)",
                )
            for outcome in result.results:
                if outcome.status not in ("sent", "queued"):
                    raise _fail(
                        provider, f"concurrent call {number}: {outcome.address} is {outcome.status!r} ({outcome.error})"
                    )
                if outcome.provider_message_id:
                    if outcome.provider_message_id in seen_ids:
                        raise _fail(
                            provider,
                            f"calls {seen_ids[outcome.provider_message_id]} and {number} returned the same "
                            f"provider_message_id {outcome.provider_message_id!r}: state shared between threads?",
                        )
                    seen_ids[outcome.provider_message_id] = number
    if pools_connections and connections > 2 * threads:
        raise _fail(
            provider,
            f"{total} calls from {threads} threads opened {connections} connections: reuse them (one pooled "
            "session per thread, as hub.http.HttpClient keeps) instead of opening one per call",
        )
    return results


# ---------------------------------------------------------------------------------------------------------------
# Webhook signatures

#: ``sign(timestamp=..., forged=...)``: a webhook request as the service sends it, signed at ``timestamp`` (Unix
#: seconds) with the provider's configured secret, or with another one when ``forged``.
WebhookSigner = Callable[..., WebhookRequest]


def _tampered(request: WebhookRequest) -> Iterator[tuple[str, WebhookRequest]]:
    """Copies of ``request`` with one field of its payload changed each: the signature must cover them all."""
    content_type = next((v for k, v in request.headers.items() if k.lower() == "content-type"), "") or ""
    if request.form:
        for key in sorted(request.form):
            form = {**request.form, key: _changed(request.form[key])}
            body = urlencode(form).encode() if "form" in content_type.lower() or not request.body else request.body
            yield f"form field {key!r} changed", replace(request, form=form, body=body)
        return
    try:
        document = json.loads(request.body) if request.body else None
    except ValueError:
        document = None
    target = document[0] if isinstance(document, list) and document and isinstance(document[0], dict) else document
    if isinstance(target, dict) and target:
        for key in sorted(target):
            changed = {**target, key: _changed(target[key])}
            new_document = [changed, *document[1:]] if isinstance(document, list) else changed
            yield f"JSON field {key!r} changed", replace(request, body=json.dumps(new_document).encode())
        return
    if request.body:
        body = bytearray(request.body)
        body[len(body) // 2] ^= 0x01
        yield "one byte of the body changed", replace(request, body=bytes(body))


def _changed(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value + "x" if value else "x"
    return "kit-tampered"


def check_webhook_signatures(
    harness: ProviderHarness,
    provider: Any,
    sign: WebhookSigner,
    *,
    tolerance: float | None = None,
    tamper: bool = True,
) -> list[WebhookEvent]:
    """``handle_webhook`` accepts what the service signed and refuses everything else.

    * **valid**: ``sign(timestamp=now, forged=False)`` gives at least one ``WebhookEvent`` (string
      ``event_id``, ``reference`` and ``status``);
    * **replayed**: the same request again gives the same event ids, so the core, which deduplicates by
      ``event_id``, records it once;
    * **forged**: ``sign(timestamp=now, forged=True)`` (signed with another secret or key) raises
      :class:`~hub.errors.SignatureError`;
    * **tampered** (``tamper=True``): each copy with one form or JSON field changed after signing raises
      ``SignatureError`` -- the signature covers the whole payload. Pass ``False`` for a scheme that does not
      sign the payload (a shared token in the URL);
    * **stale** (when ``tolerance`` is given, in seconds): signed ``tolerance + 120`` s in the past or the
      future raises ``SignatureError`` (a captured request cannot be replayed later), while one signed
      ``tolerance / 2`` s ago is accepted.

    No ``SignatureError`` message may quote a secret setting.

    :param sign: ``sign(timestamp: float, forged: bool) -> WebhookRequest``, a request as the service sends it
        to ``POST /webhooks/<provider>``. A scheme without timestamps ignores ``timestamp``.
    :returns: the events of the valid request.
    """
    if not harness.implements(provider, "handle_webhook"):
        raise _fail(provider, "check_webhook_signatures needs a handle_webhook() hook")

    def handle(request: WebhookRequest) -> Any:
        return harness.call(provider, "handle_webhook", webhook=request)

    def accepted(what: str, request: WebhookRequest) -> list[WebhookEvent]:
        try:
            events = handle(request)
        except AssertionError:
            raise
        except Exception as error:
            raise _fail(
                provider,
                f"a webhook {what} was refused with {type(error).__name__}({error}); it must be accepted (does "
                "sign= use the secret the provider was built with?)",
            ) from error
        return _accepted(provider, what, events)

    def refused(what: str, request: WebhookRequest) -> None:
        error, _ = _expect_raise(provider, f"a webhook {what}", SignatureError, lambda: handle(request))
        _check_no_secret(provider, f"a webhook {what}", error, [])

    now = time.time()
    valid = sign(timestamp=now, forged=False)
    events = accepted("signed with the configured secret", valid)
    replayed = accepted("replayed (the same request again)", valid)
    if [event.event_id for event in replayed] != [event.event_id for event in events]:
        raise _fail(
            provider,
            "the same webhook request gave other event ids the second time "
            f"({[e.event_id for e in events]} then {[e.event_id for e in replayed]}): derive event_id from the "
            "request, so the core's deduplication drops a replay",
        )
    refused("signed with another secret (forged)", sign(timestamp=now, forged=True))
    if tamper:
        copies = list(_tampered(valid))
        if not copies:
            raise _fail(provider, "check_webhook_signatures: the signed request has no payload to tamper with")
        for what, copy in copies:
            refused(f"with its {what} after signing", copy)
    if tolerance is not None:
        if not (isinstance(tolerance, int | float) and math.isfinite(tolerance) and tolerance > 0):
            raise ValueError(f"tolerance must be a positive number of seconds, got {tolerance!r}")
        refused(f"signed {tolerance + 120:g} s ago (stale)", sign(timestamp=now - tolerance - 120, forged=False))
        refused(f"signed {tolerance + 120:g} s in the future", sign(timestamp=now + tolerance + 120, forged=False))
        accepted(
            f"signed {tolerance / 2:g} s ago (within the {tolerance:g} s tolerance)",
            sign(timestamp=now - tolerance / 2, forged=False),
        )
    return events


def _accepted(provider: Any, what: str, events: Any) -> list[WebhookEvent]:
    if not isinstance(events, list) or not events:
        raise _fail(provider, f"a webhook {what} gave {events!r}: sign= must produce a request carrying an event")
    for event in events:
        if not isinstance(event, WebhookEvent):
            raise _fail(provider, f"a webhook {what} gave {event!r}, not a WebhookEvent")
        for name in ("event_id", "reference", "status"):
            value = getattr(event, name)
            if not isinstance(value, str) or not value:
                raise _fail(provider, f"a webhook {what}: WebhookEvent.{name} is {value!r}; it must be a non-empty str")
    ids = [event.event_id for event in events]
    if len(set(ids)) != len(ids):
        raise _fail(provider, f"a webhook {what} gave repeated event ids {ids}: each event needs its own")
    return events
