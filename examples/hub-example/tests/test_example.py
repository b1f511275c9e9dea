"""hub-example against a real HTTP endpoint: a local server on 127.0.0.1 that records every request.

The conformance kit builds the provider exactly as the hub does and calls its own hooks: ``run_contract`` checks
the notify contract, ``check_transport_errors`` every failure the hub must map (server down, too slow, dropped
connection, 5xx, 429 with ``Retry-After``, 401/403) and ``check_concurrent_use`` calls from several threads. The
other tests pin down what the kit cannot know: the request the endpoint receives, the token from the environment,
the statuses this provider maps its own way, the template.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import hub_example
import pytest
from hub_example import WebhookNotifier
from werkzeug.wrappers import Request, Response

from hub.capabilities import Message, Recipient
from hub.delivery import TemplateLibrary
from hub.errors import ConfigError, ConfigurationError, PermanentError, TransientError
from hub.testing import ProviderHarness
from hub.testing.contracts import check_provider_class, run_contract
from hub.testing.servers import WsgiServer
from hub.testing.transport import check_concurrent_use, check_transport_errors

TOKEN = "example-token-5f2b"


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Endpoint:
    """What the local server received, and what it answers (a test may change it)."""

    url: str
    received: list[Received] = field(default_factory=list)
    status: int = 200
    answer: bytes = b'{"id": "rcv-1"}'
    answer_headers: dict[str, str] = field(default_factory=dict)

    def posts(self) -> list[Received]:
        return [request for request in self.received if request.method == "POST"]


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    """A real HTTP server (the kit's :class:`~hub.testing.servers.WsgiServer`) answering as ``Endpoint`` says."""
    state = Endpoint(url="")

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        query = request.query_string.decode()
        path = f"{request.path}?{query}" if query else request.path
        state.received.append(Received(request.method, path, dict(request.headers), request.get_data()))
        answer = Response(state.answer, status=state.status, headers=state.answer_headers, mimetype="application/json")
        return answer(environ, start_response)  # a HEAD request gets the headers only

    with WsgiServer(app) as server:
        state.url = f"{server.url}/hooks/messages?channel=all"
        yield state


@pytest.fixture
def harness(provider_harness: ProviderHarness) -> ProviderHarness:
    """The kit's ``provider_harness`` fixture with this plugin added, as if it were installed."""
    provider_harness.add_plugin(hub_example, "example")
    return provider_harness


def build(harness: ProviderHarness, endpoint_url: str, **settings: Any) -> WebhookNotifier:
    """A provider built as the hub builds ``providers.<name>`` from hub.yaml, POSTing to ``endpoint_url``."""
    return harness.build("webhook-notifier", {"url": endpoint_url, "token": TOKEN, "timeout": 5, **settings})


def builder(harness: ProviderHarness) -> Callable[[str, float], WebhookNotifier]:
    """``build(url, timeout)`` for the kit's transport checks, which start the servers and choose the timeout."""
    return lambda url, timeout: build(harness, f"{url}/hooks", timeout=timeout)


def message(channel: str = "email", *addresses: str) -> Message:
    return Message(
        id="ntf_123-email-0",
        tenant="demo",
        channel=channel,
        recipients=[Recipient(address) for address in addresses or ("ops@example.com", "buyer@example.com")],
        text="Stock is low",
        subject="Low stock" if channel == "email" else None,
        template="custom",
    )


def test_the_provider_class_passes_the_class_check() -> None:
    check_provider_class(WebhookNotifier)


def test_the_provider_meets_the_notify_contract(harness: ProviderHarness, endpoint: Endpoint) -> None:
    provider = build(harness, endpoint.url)
    results = run_contract(harness, provider)
    assert set(results) == {"notify:email", "notify:sms", "notify:chat", "health"}
    assert results["health"].ok, results["health"]
    assert [post.json()["channel"] for post in endpoint.posts()] == ["email", "sms", "chat"]


def test_transport_errors_map_to_the_hubs_errors(harness: ProviderHarness) -> None:
    check_transport_errors(harness, builder(harness))


def test_concurrent_sends_from_worker_threads(harness: ProviderHarness, endpoint: Endpoint) -> None:
    check_concurrent_use(harness, builder(harness), endpoint.url)
    assert len(endpoint.posts()) == 8 * 3


def test_each_message_is_one_authenticated_post_of_the_message_as_json(
    harness: ProviderHarness, endpoint: Endpoint
) -> None:
    provider = build(harness, endpoint.url)
    result = harness.call(provider, "notify", message=message())
    [post] = endpoint.posts()
    assert post.path == "/hooks/messages?channel=all"
    assert post.headers["Authorization"] == f"Bearer {TOKEN}"
    assert post.headers["Idempotency-Key"] == "ntf_123-email-0"
    body = post.json()
    assert body["id"] == "ntf_123-email-0" and body["tenant"] == "demo" and body["subject"] == "Low stock"
    assert [r["address"] for r in body["recipients"]] == ["ops@example.com", "buyer@example.com"]
    # The endpoint's id (``{"id": "rcv-1"}``) is the send's; each recipient's id comes from the message id.
    assert result.provider_message_id == "rcv-1"
    assert [(r.address, r.status, r.provider_message_id) for r in result.results] == [
        ("ops@example.com", "sent", "ntf_123-email-0:0"),
        ("buyer@example.com", "sent", "ntf_123-email-0:1"),
    ]


def test_recipient_ids_stay_unique_when_the_endpoint_repeats_its_id(
    harness: ProviderHarness, endpoint: Endpoint
) -> None:
    provider = build(harness, endpoint.url)
    first = harness.call(provider, "notify", message=message())
    second = harness.call(provider, "notify", message=Message(**{**vars(message()), "id": "ntf_456-email-0"}))
    assert first.provider_message_id == second.provider_message_id == "rcv-1"
    ids = [r.provider_message_id for r in first.results + second.results]
    assert len(set(ids)) == 4


@pytest.mark.parametrize("answer", [b"", b"OK", b"[1, 2]", b'{"id": ""}'])
def test_an_answer_without_an_id_is_still_a_send(harness: ProviderHarness, endpoint: Endpoint, answer: bytes) -> None:
    endpoint.status, endpoint.answer = (204 if not answer else 200), answer
    result = harness.call(build(harness, endpoint.url), "notify", message=message("sms", "+14155550100"))
    assert result.provider_message_id is None
    assert [(r.status, r.provider_message_id) for r in result.results] == [("sent", "ntf_123-email-0:0")]


def test_the_token_comes_from_the_environment_when_hub_yaml_has_none(
    harness: ProviderHarness, endpoint: Endpoint
) -> None:
    provider = harness.build("webhook-notifier", {"url": endpoint.url}, environ={"EXAMPLE_WEBHOOK_TOKEN": "from-env"})
    harness.call(provider, "notify", message=message())
    assert endpoint.posts()[0].headers["Authorization"] == "Bearer from-env"


def test_missing_or_bad_settings_fail_with_their_path(harness: ProviderHarness) -> None:
    with pytest.raises(ConfigError) as missing:
        harness.build("webhook-notifier", {"url": "http://127.0.0.1:9/"}, name="hook", environ={})
    assert missing.value.path == "providers.hook.token" and "EXAMPLE_WEBHOOK_TOKEN" in str(missing.value)
    with pytest.raises(ConfigError, match="providers.hook.url"):
        harness.build("webhook-notifier", {"url": "not a url", "token": TOKEN}, name="hook", environ={})
    with pytest.raises(ConfigError, match="providers.hook.timeout"):
        harness.build("webhook-notifier", {"url": "http://127.0.0.1:9/", "token": TOKEN, "timeout": 0}, name="hook")
    with pytest.raises(ConfigError, match="providers.hook.retries"):
        harness.build("webhook-notifier", {"url": "http://127.0.0.1:9/", "token": TOKEN, "retries": 3}, name="hook")


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (404, ConfigurationError),  # this provider's override: a wrong URL is a setting to fix
        (302, ConfigurationError),  # redirects are not followed: configure the final URL
        (408, TransientError),
        (400, PermanentError),
        (422, PermanentError),
    ],
)
def test_the_statuses_the_kit_does_not_check(
    harness: ProviderHarness, endpoint: Endpoint, status: int, error_class: type[Exception]
) -> None:
    endpoint.status, endpoint.answer = status, b'{"error": "nope"}'
    endpoint.answer_headers = {"Location": "/elsewhere"}
    with pytest.raises(error_class) as raised:
        harness.call(build(harness, endpoint.url), "notify", message=message())
    assert type(raised.value) is error_class  # NotFoundError (a PermanentError) would mean "no such object"
    assert raised.value.provider_code == str(status)
    assert TOKEN not in str(raised.value) and "/hooks/messages" not in str(raised.value)


def test_health_sends_a_head_request_and_nothing_is_delivered(harness: ProviderHarness, endpoint: Endpoint) -> None:
    endpoint.status = 405  # an endpoint that takes POST only: still reachable, the token still accepted
    health = harness.call(build(harness, endpoint.url), "health")
    assert health.status == "success", health
    endpoint.status = 401
    health = harness.call(build(harness, endpoint.url), "health")
    assert health.status == "error" and "refused the credentials" in health.message
    assert [request.method for request in endpoint.received] == ["HEAD", "HEAD"]


def test_close_drops_the_sessions_and_the_next_call_opens_one(harness: ProviderHarness, endpoint: Endpoint) -> None:
    provider = build(harness, endpoint.url)
    harness.call(provider, "notify", message=message())
    harness.call(provider, "close")
    harness.call(provider, "notify", message=message())
    assert len(endpoint.posts()) == 2


def test_the_example_digest_template(harness: ProviderHarness) -> None:
    templates = TemplateLibrary(harness.host.templates, {})
    rendered = templates.render("example_digest", "email", {"title": "Nightly stock", "items": ["A <b>", "B"]}, None)
    assert rendered.subject == "Nightly stock: 2 updates"
    assert rendered.text == "Nightly stock\n\n- A <b>\n- B"
    assert "<li>A &lt;b&gt;</li>" in (rendered.html or "")
    with pytest.raises(Exception, match="data.items"):
        templates.render("example_digest", "email", {"title": "Nightly stock"}, None)
