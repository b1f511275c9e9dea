"""hub.http against real servers on 127.0.0.1: sessions per thread, timeouts, and the one status/transport mapping."""

from __future__ import annotations

import email.utils
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
import requests

from hub.errors import ConfigurationError, NotFoundError, PermanentError, ProviderThrottledError, TransientError
from hub.http import (
    HttpClient,
    HttpSettings,
    describe_url,
    json_error,
    may_have_reached_provider,
    parse_retry_after,
    status_error,
    transport_error,
)
from hub.testing.servers import refused_url
from hub.testing.transport import ConnectionCountingProxy, Fault, FaultServer

SECRET_PATH = "/services/T000/B000/very-secret-token"


class OutcomeUnknown(TransientError):
    failover = False


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer(Fault(keep_alive=True)) as fault_server:
        yield fault_server


def client(**options: object) -> HttpClient:
    return HttpClient("Acme", **{"timeout": 2.0, **options})  # type: ignore[arg-type]


# --- statuses --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (500, TransientError),
        (503, TransientError),
        (429, ProviderThrottledError),
        (408, TransientError),
        (401, ConfigurationError),
        (403, ConfigurationError),
        (301, ConfigurationError),
        (404, NotFoundError),
        (400, PermanentError),
        (422, PermanentError),
    ],
)
def test_each_status_maps_to_one_error_class(server: FaultServer, status: int, error_class: type) -> None:
    server.reset(Fault(status=status, headers={"Retry-After": "4", "Location": "/x"}))
    with pytest.raises(error_class) as raised:
        client().get(f"{server.url}{SECRET_PATH}?api_key=k")
    assert type(raised.value) is error_class
    assert raised.value.provider_code == str(status)
    assert f"HTTP {status}" in raised.value.message
    assert "very-secret-token" not in raised.value.message and "api_key" not in raised.value.message
    assert raised.value.retry_after == (4.0 if issubclass(error_class, TransientError) else None)
    assert raised.value.__cause__ is None


def test_2xx_passes_and_check_false_returns_the_error_for_later(server: FaultServer) -> None:
    assert client().post(server.url, json={"a": 1}).status_code == 200
    server.reset(Fault(status=502))
    response = client().get(server.url, check=False)
    assert response.status_code == 502
    assert isinstance(client().error_for(response), TransientError)


def test_the_providers_code_and_message_come_from_the_body(server: FaultServer) -> None:
    body = b'{"errors": [{"field": "to", "message": "not a\\n   valid   number", "code": 21211}]}'
    server.reset(Fault(status=400, body=body))
    extract = json_error(code="errors.0.code", message="errors.0.message")
    with pytest.raises(PermanentError) as raised:
        client(extract_error=extract).post(server.url)
    assert raised.value.provider_code == "21211"
    assert raised.value.message == "Acme answered HTTP 400 (21211): not a valid number"
    server.reset(Fault(status=400, body=b"<html>not json</html>"))
    with pytest.raises(PermanentError) as plain:
        client(extract_error=extract).post(server.url)
    assert (plain.value.provider_code, plain.value.message) == ("400", "Acme answered HTTP 400")


def test_status_errors_override_the_class_for_a_status(server: FaultServer) -> None:
    server.reset(Fault(status=404))
    with pytest.raises(ConfigurationError):
        client(status_errors={404: ConfigurationError}).post(server.url)


def test_status_error_serves_sdks_with_their_own_http_stack() -> None:
    error = status_error(429, service="Twilio", headers={"retry-after": "12"}, code="20429", message="Too Many")
    assert isinstance(error, TransientError)
    assert (error.provider_code, error.retry_after, error.message) == (
        "20429",
        12.0,
        "Twilio answered HTTP 429 (20429): Too Many",
    )
    assert status_error(204, service="Twilio") is None
    refused = status_error(401, service="Twilio", code="20003", message="Authenticate")
    assert isinstance(refused, ConfigurationError)
    assert refused.message == "Twilio refused the credentials (HTTP 401, 20003): Authenticate"


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = time.time()
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after(email.utils.formatdate(now + 60, usegmt=True), now=now) == pytest.approx(60, abs=1)
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: go ahead
    for unreadable in (None, "", "soon", "-5", "nan", "inf", "Wed, 21 Oct 2015 07:28:00"):
        assert parse_retry_after(unreadable) is None, unreadable


# --- transport failures ----------------------------------------------------------------------------


def test_a_refused_connection_is_transient_and_was_not_sent() -> None:
    url = refused_url(SECRET_PATH)
    with pytest.raises(TransientError) as raised:
        client(sent_error=OutcomeUnknown).post(url, json={})
    assert type(raised.value) is TransientError  # nothing was sent: a payment may fail over
    assert (raised.value.provider_code, raised.value.message) == ("connection", "cannot reach Acme: connection refused")
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_an_unknown_host_is_transient_and_was_not_sent() -> None:
    with pytest.raises(TransientError) as raised:
        client(sent_error=OutcomeUnknown).get("http://no-such-host.invalid/x")
    assert type(raised.value) is TransientError
    assert raised.value.message == "cannot reach Acme: host name not found"


def test_a_read_timeout_may_have_reached_the_provider(server: FaultServer) -> None:
    server.reset(Fault(delay=5))
    started = time.monotonic()
    with pytest.raises(TransientError) as notify:
        client(timeout=0.3).post(server.url, json={})
    assert time.monotonic() - started < 2
    assert (notify.value.provider_code, notify.value.message) == ("timeout", "Acme did not answer within 0.3 s")
    with pytest.raises(OutcomeUnknown):
        client(timeout=0.3).post(server.url, json={}, sent_error=OutcomeUnknown)  # per call
    with pytest.raises(OutcomeUnknown):
        client(timeout=0.3, sent_error=OutcomeUnknown).post(server.url, json={})  # per client


def test_a_connection_dropped_after_sending_may_have_reached_the_provider(server: FaultServer) -> None:
    server.reset(Fault(drop=True))
    with pytest.raises(OutcomeUnknown) as raised:
        client(sent_error=OutcomeUnknown).post(server.url, json={"amount": "10.00"})
    assert raised.value.provider_code == "connection-dropped"
    assert len(server.received()) == 1  # it did arrive


def _raw_server(answer: bytes | None, *, reset: bool = False) -> tuple[str, socket.socket]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            connection.recv(65536)
            if reset:
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif answer:
                connection.sendall(answer)
            connection.close()

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}", listener


@pytest.mark.parametrize(
    ("answer", "reset", "what"),
    [
        (None, True, "connection reset"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial", False, "answer cut short"),
    ],
)
def test_a_reset_or_truncated_answer_may_have_reached_the_provider(
    answer: bytes | None, reset: bool, what: str
) -> None:
    url, listener = _raw_server(answer, reset=reset)
    try:
        with pytest.raises(TransientError) as raised:
            client().post(url, json={})
    finally:
        listener.close()
    assert raised.value.provider_code == "connection-dropped" and what in raised.value.message


def test_a_url_that_cannot_be_requested_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as raised:
        client().get("htp:/nowhere")
    assert raised.value.provider_code == "invalid-request"


def test_other_exceptions_are_not_swallowed(server: FaultServer) -> None:
    with pytest.raises(TypeError):
        client().post(server.url, json={"not": {1, 2}})  # a bug in the caller stays a bug


def test_transport_error_maps_exceptions_from_other_http_stacks() -> None:
    url = refused_url()
    with pytest.raises(urllib.error.URLError) as refused:
        urllib.request.urlopen(url, timeout=2)
    assert not may_have_reached_provider(refused.value)
    assert transport_error(refused.value, service="SendGrid").provider_code == "connection"
    assert may_have_reached_provider(TimeoutError("read timed out"))
    assert transport_error(TimeoutError(), service="X", timeout=2).message == "X did not answer within 2 s"
    assert not may_have_reached_provider(ConnectionRefusedError())


def test_connect_timeout_is_its_own_setting() -> None:
    settings = HttpSettings().load({"timeout": 7, "connect_timeout": 2})
    http = HttpClient.from_settings("Acme", settings)
    assert (http.connect_timeout, http.timeout) == (2.0, 7.0)
    assert HttpClient.from_settings("Acme", HttpSettings().load({})).connect_timeout == 10.0
    assert HttpSettings().validate({"timeout": 0}) == {
        "timeout": ["Must be greater than 0 and less than or equal to 300."]
    }


# --- sessions -------------------------------------------------------------------------------------


def test_one_session_per_thread_reused_across_calls(server: FaultServer) -> None:
    http = client(headers={"X-Api-Key": "k"}, auth=("user", "pass"))
    sessions: list[requests.Session] = []

    def work() -> None:
        for _ in range(3):
            http.get("/x")
        sessions.append(http.session())

    with ConnectionCountingProxy(server.url) as proxy:
        http.base_url = proxy.url()
        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert (proxy.connections, proxy.requests) == (4, 12)  # each thread reused its connection
    assert len({id(session) for session in sessions}) == 4
    assert http.session() is http.session()  # the same thread keeps its session
    first = server.received()[0]
    assert first.headers["X-Api-Key"] == "k" and first.headers["Authorization"].startswith("Basic ")


def test_close_closes_every_session_and_the_next_call_opens_a_new_one(server: FaultServer) -> None:
    http = client()
    before = http.session()
    http.get(server.url)
    http.close()
    after = http.session()
    assert after is not before
    assert http.get(server.url).status_code == 200


def test_paths_join_the_base_url_and_redirects_are_not_followed(server: FaultServer) -> None:
    http = client(base_url=f"{server.url}/v1/")
    http.post("/messages", json={})
    http.get("accounts/me")
    assert [r.path for r in server.received()] == ["/v1/messages", "/v1/accounts/me"]
    assert http.url("https://elsewhere.example/x") == "https://elsewhere.example/x"
    server.reset(Fault(status=302, headers={"Location": f"{server.url}/elsewhere"}))
    with pytest.raises(ConfigurationError, match="redirect"):
        http.post("/messages", json={})
    assert [r.path for r in server.received()] == ["/v1/messages"]


def test_probe_reports_health_without_raising(server: FaultServer) -> None:
    http = client(base_url=server.url)
    assert http.probe().status == "success"
    server.reset(Fault(status=405))
    assert http.probe("HEAD").status == "success"  # reachable, credentials accepted
    server.reset(Fault(status=401))
    assert http.probe().message == "Acme refused the credentials (HTTP 401)"
    server.reset(Fault(delay=5))
    started = time.monotonic()
    assert HttpClient("Acme", base_url=server.url, timeout=0.2).probe().status == "error"
    assert time.monotonic() - started < 2
    assert HttpClient("Acme", base_url=refused_url()).probe().message == "cannot reach Acme: connection refused"


def test_describe_url_keeps_host_and_port_only() -> None:
    assert (
        describe_url("https://user:pw@hooks.example.com:8443/services/T/B/secret?token=x") == "hooks.example.com:8443"
    )
    assert describe_url("https://hooks.example.com/x") == "hooks.example.com"
