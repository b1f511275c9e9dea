"""hub-slack against a local Slack incoming-webhook endpoint: a werkzeug server on 127.0.0.1 that
answers like Slack's (``200 ok``; ``400 invalid_payload`` / ``no_text`` / ``invalid_blocks``;
``403 action_prohibited``; ``404 no_service`` / ``channel_not_found``; ``410 channel_is_archived``;
``429`` with ``Retry-After``; ``5xx``), checks Block Kit's basic structure and records every message.

Slack publishes no machine-readable description of incoming webhooks; the fake follows its
documentation (see the plugin README).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hub_slack
import pytest
from werkzeug.wrappers import Request, Response

from hub.capabilities import Message, Recipient
from hub.errors import ConfigError, ConfigurationError, PermanentError, TransientError
from hub.testing import ProviderHarness
from hub.testing.contracts import check_provider_class, run_contract
from hub.testing.rest import RestHub, rest_hub
from hub.testing.servers import WsgiServer
from hub.testing.transport import check_concurrent_use, check_transport_errors

#: Block types Slack's Block Kit knows (messages); anything else is invalid_blocks.
BLOCK_TYPES = {"section", "header", "context", "divider", "actions", "image", "input", "rich_text", "file", "video"}
TEXT_TYPES = {"plain_text", "mrkdwn"}


def blocks_problem(blocks: Any) -> str | None:
    """Why Slack would refuse these blocks (basic Block Kit rules), or None."""
    if not isinstance(blocks, list) or not 1 <= len(blocks) <= 50:
        return "blocks must be a list of 1 to 50 objects"
    for index, block in enumerate(blocks):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            return f"block {index} is not an object with a type"
        kind = block["type"]
        if kind not in BLOCK_TYPES:
            return f"block {index}: unknown type {kind}"
        if kind == "section":
            if "text" not in block and "fields" not in block:
                return f"block {index}: a section needs text or fields"
            if "text" in block and (problem := text_problem(block["text"], 3000)):
                return f"block {index}: {problem}"
            if "fields" in block:
                if not isinstance(block["fields"], list) or not 1 <= len(block["fields"]) <= 10:
                    return f"block {index}: fields must be a list of 1 to 10 text objects"
                for item in block["fields"]:
                    if problem := text_problem(item, 2000):
                        return f"block {index} field: {problem}"
        elif kind == "header":
            if problem := text_problem(block.get("text"), 150, types={"plain_text"}):
                return f"block {index}: {problem}"
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
                return f"block {index}: context elements must be a list of 1 to 10"
            for element in elements:
                if isinstance(element, dict) and element.get("type") == "image":
                    continue
                if problem := text_problem(element, 3000):
                    return f"block {index} element: {problem}"
    return None


def text_problem(value: Any, limit: int, types: set[str] = TEXT_TYPES) -> str | None:
    if not isinstance(value, dict) or value.get("type") not in types:
        return f"a text object of type {' or '.join(sorted(types))} is required"
    text = value.get("text")
    if not isinstance(text, str) or not 1 <= len(text) <= limit:
        return f"text must be 1 to {limit} characters"
    return None


class FakeSlack(WsgiServer):
    """Slack's incoming-webhook endpoint for a few webhooks of one workspace."""

    def __init__(self) -> None:
        super().__init__(name="fake-slack")
        #: webhook path -> (its channel, its state: ok, archived, deleted, prohibited)
        self.hooks: dict[str, tuple[str, str]] = {}
        self._lock = threading.Lock()
        self.reset()

    def hook(self, name: str, channel: str, state: str = "ok") -> str:
        path = f"/services/T0HUBTEST/B0{name.upper()}/{name}Secret0123456789"
        self.hooks[path] = (channel, state)
        return self.url + path

    def reset(self) -> None:
        with self._lock:
            #: Messages Slack posted: {"hook": path, "channel": where it landed, "payload": the JSON}.
            self.messages: list[dict[str, Any]] = []
            self.requests = 0
            #: Answers for the next requests: (status, body, headers), or None to answer normally.
            self.faults: list[tuple[int, str, dict[str, str]] | None] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        with self._lock:
            self.requests += 1
            fault = self.faults.pop(0) if self.faults else None
            if fault is not None:
                status, body, headers = fault
                response = Response(body, status=status, headers=headers)
            else:
                status, body = self._handle(request)
                response = Response(body, status=status, mimetype="text/html")
        return response(environ, start_response)

    def _handle(self, request: Request) -> tuple[int, str]:
        if request.method != "POST":
            return 405, "invalid_method"
        hook = self.hooks.get(request.path)
        if hook is None:
            return 404, "no_service"
        channel, state = hook
        if state == "prohibited":
            return 403, "action_prohibited"
        if state == "deleted":
            return 404, "channel_not_found"
        if state == "archived":
            return 410, "channel_is_archived"
        if not (request.mimetype or "").startswith("application/json"):
            return 400, "invalid_payload"
        try:
            payload = json.loads(request.get_data(as_text=True))
        except ValueError:
            return 400, "invalid_payload"
        if not isinstance(payload, dict):
            return 400, "invalid_payload"
        if not (isinstance(payload.get("text"), str) and payload["text"].strip()) and not payload.get("blocks"):
            return 400, "no_text"
        if "blocks" in payload and blocks_problem(payload["blocks"]):
            return 400, "invalid_blocks"
        # Legacy webhooks honour a "channel" override; this fake behaves like one.
        self.messages.append({"hook": request.path, "channel": payload.get("channel") or channel, "payload": payload})
        return 200, "ok"


class Hooks:
    """The fake's webhook URLs used by the tests."""

    def __init__(self, server: FakeSlack) -> None:
        self.default = server.hook("default", "#general")
        self.ops = server.hook("ops", "#ops")
        self.archived = server.hook("archived", "#old-project", "archived")
        self.deleted = server.hook("deleted", "#gone", "deleted")
        self.prohibited = server.hook("prohibited", "#locked", "prohibited")


@pytest.fixture(scope="session")
def slack_server() -> Iterator[FakeSlack]:
    with FakeSlack() as server:
        yield server


@pytest.fixture
def slack(slack_server: FakeSlack) -> FakeSlack:
    slack_server.reset()
    return slack_server


@pytest.fixture
def hooks(slack: FakeSlack) -> Hooks:
    return Hooks(slack)


def build(harness: ProviderHarness, **settings: Any) -> Any:
    if "slack-webhook" not in harness.host.provider_types:
        harness.add_plugin(hub_slack, "slack")
    return harness.build("slack-webhook", settings)


BLOCKS = [
    {"type": "header", "text": {"type": "plain_text", "text": "Low stock: SKU-1"}},
    {"type": "section", "text": {"type": "mrkdwn", "text": "*3* left at WH1"}},
]


def chat(*addresses: str, text: str = "*Low stock*\nSKU-1", blocks: Any = BLOCKS, id: str = "msg-1") -> Message:
    return Message(
        id=id, tenant="demo", channel="chat", recipients=[Recipient(a) for a in addresses], text=text, blocks=blocks
    )


# --- the conformance kit -------------------------------------------------------------------------------


def test_slack_provider_class_meets_the_contract() -> None:
    check_provider_class(hub_slack.SlackWebhook)


def test_slack_meets_the_notify_contract(provider_harness: ProviderHarness, slack: FakeSlack, hooks: Hooks) -> None:
    provider = build(provider_harness, webhook_url=hooks.default, channels={"#contract-tests": hooks.ops})
    results = run_contract(provider_harness, provider)
    assert results["health"].ok, results["health"].message
    assert [(m["hook"], m["channel"]) for m in slack.messages] == [
        (hooks.ops.removeprefix(slack.url), "#ops"),
        (hooks.default.removeprefix(slack.url), "#contract-tests-2"),
    ]


# --- behaviour against the server ---------------------------------------------------------------------


def test_one_post_per_destination_with_text_and_blocks(
    provider_harness: ProviderHarness, slack: FakeSlack, hooks: Hooks
) -> None:
    provider = build(
        provider_harness,
        webhook_url=hooks.default,
        channels={"ops": hooks.ops},
        username="Inventory",
        icon_emoji=":package:",
    )
    result = provider_harness.call(provider, "notify", message=chat("#ops", "default", "#OPS", "#sales"))
    assert [(r.address, r.status) for r in result.results] == [
        ("#ops", "sent"),
        ("default", "sent"),
        ("#OPS", "sent"),
        ("#sales", "sent"),
    ]
    assert [m["channel"] for m in slack.messages] == ["#ops", "#general", "#sales"]
    ops, general, sales = (m["payload"] for m in slack.messages)
    assert ops == {"text": "*Low stock*\nSKU-1", "blocks": BLOCKS, "username": "Inventory", "icon_emoji": ":package:"}
    assert "channel" not in general and sales["channel"] == "#sales"


def test_unknown_destinations_can_be_refused(provider_harness: ProviderHarness, slack: FakeSlack, hooks: Hooks) -> None:
    provider = build(
        provider_harness, webhook_url=hooks.default, channels={"#ops": hooks.ops}, unknown_destinations="fail"
    )
    result = provider_harness.call(provider, "notify", message=chat("#sales", "#ops"))
    assert [r.status for r in result.results] == ["failed", "sent"]
    assert "no Slack webhook" in result.results[0].error
    assert [m["channel"] for m in slack.messages] == ["#ops"]


def test_text_only_messages(provider_harness: ProviderHarness, slack: FakeSlack, hooks: Hooks) -> None:
    provider = build(provider_harness, webhook_url=hooks.default)
    provider_harness.call(provider, "notify", message=chat("default", blocks=None))
    assert slack.messages[0]["payload"] == {"text": "*Low stock*\nSKU-1"}


def test_refused_payloads_are_permanent(provider_harness: ProviderHarness, slack: FakeSlack, hooks: Hooks) -> None:
    provider = build(provider_harness, webhook_url=hooks.default)
    bad_blocks = [{"type": "section", "text": {"type": "plain_text", "text": "x" * 3001}}]
    with pytest.raises(PermanentError) as blocks:
        provider_harness.call(provider, "notify", message=chat("default", blocks=bad_blocks))
    with pytest.raises(PermanentError) as empty:
        provider_harness.call(provider, "notify", message=chat("default", text=" ", blocks=None))
    assert (blocks.value.provider_code, empty.value.provider_code) == ("invalid_blocks", "no_text")
    assert slack.messages == []


def test_unusable_webhooks_are_configuration_errors(
    provider_harness: ProviderHarness, slack: FakeSlack, hooks: Hooks
) -> None:
    for url, word in (
        (hooks.archived, "channel_is_archived"),
        (hooks.deleted, "channel_not_found"),
        (hooks.prohibited, "action_prohibited"),
        (hooks.default.replace("defaultSecret", "revokedSecret"), "no_service"),
    ):
        provider = build(provider_harness, webhook_url=url)
        with pytest.raises(ConfigurationError) as caught:
            provider_harness.call(provider, "notify", message=chat("default"))
        assert caught.value.provider_code == word
        assert "Secret0123456789" not in caught.value.message  # the URL is the credential
    assert slack.messages == []


def test_rate_limits_and_server_errors_are_transient(
    provider_harness: ProviderHarness, slack: FakeSlack, hooks: Hooks
) -> None:
    provider = build(provider_harness, webhook_url=hooks.default)
    slack.faults.extend([(429, "rate_limited", {"Retry-After": "30"}), (500, "rollup_error", {})])
    with pytest.raises(TransientError) as limited:
        provider_harness.call(provider, "notify", message=chat("default"))
    with pytest.raises(TransientError) as failed:
        provider_harness.call(provider, "notify", message=chat("default"))
    assert (limited.value.provider_code, limited.value.retry_after) == ("rate_limited", 30.0)
    assert failed.value.provider_code == "rollup_error"
    assert slack.messages == []


def test_a_batch_cut_short_returns_the_unposted_destinations_as_retry(
    provider_harness: ProviderHarness, slack: FakeSlack, hooks: Hooks
) -> None:
    provider = build(provider_harness, webhook_url=hooks.default, channels={"#ops": hooks.ops})
    slack.faults.extend([None, (503, "service_unavailable", {})])  # the second destination's POST fails
    result = provider_harness.call(provider, "notify", message=chat("#ops", "default", "#sales", "#OPS"))
    # #ops was posted, so no TransientError (it would be posted again): the rest are handed back untried.
    assert [r.status for r in result.results] == ["sent", "retry", "retry", "sent"]
    assert all("service_unavailable" in r.error for r in result.results[1:3])
    assert [m["channel"] for m in slack.messages] == ["#ops"] and slack.requests == 2

    # The core sends only the "retry" recipients again, in a message of their own.
    rest = provider_harness.call(provider, "notify", message=chat("default", "#sales", id="msg-1-1"))
    assert [r.status for r in rest.results] == ["sent", "sent"]
    assert [m["channel"] for m in slack.messages] == ["#ops", "#general", "#sales"]  # each posted once


def test_an_unusable_webhook_hands_its_recipients_on_and_the_others_are_posted(
    provider_harness: ProviderHarness, slack: FakeSlack, hooks: Hooks
) -> None:
    provider = build(provider_harness, webhook_url=hooks.deleted, channels={"#ops": hooks.ops, "#old": hooks.archived})
    result = provider_harness.call(provider, "notify", message=chat("#old", "#ops", "#a", "#b"))
    assert [r.status for r in result.results] == ["retry", "sent", "retry", "retry"]
    assert "channel_is_archived" in result.results[0].error
    assert all("channel_not_found" in r.error for r in result.results[2:])
    assert [m["channel"] for m in slack.messages] == ["#ops"]
    assert slack.requests == 3  # the deleted default webhook was tried once, not once per destination


def test_nothing_posted_raises_the_most_hopeful_error(
    provider_harness: ProviderHarness, slack: FakeSlack, hooks: Hooks
) -> None:
    provider = build(provider_harness, webhook_url=hooks.default, channels={"#old": hooks.archived})
    slack.faults.extend([None, (429, "rate_limited", {"Retry-After": "5"})])
    with pytest.raises(TransientError) as caught:  # trying again may post #sales; the next provider gets #old
        provider_harness.call(provider, "notify", message=chat("#old", "#sales"))
    assert caught.value.provider_code == "rate_limited"
    with pytest.raises(ConfigurationError):
        provider_harness.call(provider, "notify", message=chat("#old", "#sales", text=" ", blocks=None))
    assert slack.messages == []


def builder(harness: ProviderHarness, path: str = "/services/T0KIT/B0KIT/kitSecret0123456789") -> Any:
    """``build(url, timeout)`` for the kit's transport checks: the webhook URL under the kit's server."""
    return lambda url, timeout: build(harness, webhook_url=f"{url}{path}", timeout=timeout)


def test_transport_errors_map_to_the_hubs_errors(provider_harness: ProviderHarness) -> None:
    """Down, too slow, dropped, 5xx, 429 with Retry-After, 401/403 -- and the URL, the credential, never quoted."""
    check_transport_errors(provider_harness, builder(provider_harness), health_contacts_server=False)


def test_concurrent_posts_from_worker_threads(
    provider_harness: ProviderHarness, slack: FakeSlack, hooks: Hooks
) -> None:
    # The proxy keeps the webhook's path: build() is given the whole URL already.
    check_concurrent_use(provider_harness, builder(provider_harness, path=""), hooks.default)
    assert len(slack.messages) == 8 * 3 * 2


def test_health_checks_the_url_shapes_without_posting(
    provider_harness: ProviderHarness, slack: FakeSlack, hooks: Hooks
) -> None:
    healthy = provider_harness.call(
        build(provider_harness, webhook_url=hooks.default, channels={"#ops": hooks.ops}), "health"
    )
    assert healthy.status == "success" and "not contacted" in healthy.message
    assert slack.requests == 0
    for url, problem in (
        ("http://hooks.slack.com/services/T0/B0/abc", "https"),
        ("https://hooks.slack.com/api/chat.postMessage", "not an incoming-webhook URL"),
        ("https://example.com/services/T0/B0/abc", "not a Slack webhook host"),
    ):
        unhealthy = provider_harness.call(build(provider_harness, webhook_url=url), "health")
        assert unhealthy.status == "error" and problem in unhealthy.message
        assert url not in unhealthy.message
    real = provider_harness.call(
        build(provider_harness, webhook_url="https://hooks.slack.com/services/T0/B0/abc"), "health"
    )
    assert real.ok


def test_settings_are_validated_and_read_from_the_environment(provider_harness: ProviderHarness, hooks: Hooks) -> None:
    provider_harness.add_plugin(hub_slack, "slack")
    with pytest.raises(ConfigError, match="SLACK_WEBHOOK_URL"):
        provider_harness.build("slack-webhook", {}, environ={})
    with pytest.raises(ConfigError, match="webhook_url"):
        provider_harness.build("slack-webhook", {"webhook_url": "not a url"})
    with pytest.raises(ConfigError, match="icon_emoji"):
        provider_harness.build("slack-webhook", {"webhook_url": hooks.default, "icon_emoji": "package"})
    provider = provider_harness.build("slack-webhook", {}, environ={"SLACK_WEBHOOK_URL": hooks.default})
    assert provider.route("anything") == ("anything", hooks.default, "#anything")


# --- the hub: REST, templates, failover to the outbox ---------------------------------------------------


def make_hub(tmp_path: Path, slack_url: str, **slack_settings: Any) -> RestHub:
    return rest_hub(
        tmp_path,
        plugins=[(hub_slack, "slack")],
        providers={
            "slack": {"type": "slack-webhook", "webhook_url": slack_url, "timeout": 1, **slack_settings},
            "outbox": {"type": "outbox", "directory": "outbox"},
        },
        services={"chat": {"providers": ["slack", "outbox"]}},
    )


def post_chat(api: RestHub, recipients: list[dict[str, str]]) -> Any:
    return api.notify(
        {
            "type": "chat",
            "recipients": recipients,
            "template": "custom",
            "data": {"subject": "Sync failed", "message": "ERP unreachable"},
        }
    )


def test_rest_chat_with_the_builtin_templates(tmp_path: Path, slack: FakeSlack, hooks: Hooks) -> None:
    with make_hub(tmp_path, hooks.default) as api:
        sends = [
            (
                "low_stock_alert",
                {"sku": "SKU-1", "location": "WH1", "current_stock": 3, "threshold": 10, "item_name": "Widget"},
            ),
            ("critical_alert", {"title": "Sync failed", "message": "ERP unreachable", "severity": "high"}),
            ("custom", {"subject": "Hello", "message": "x" * 5000}),
        ]
        for template, data in sends:
            body = {"type": "chat", "recipients": [{"channel": "#inventory"}], "template": template, "data": data}
            response = api.notify(body)
            assert response.status_code == 200, response.get_json()
            assert response.get_json()["data"]["transporter"] == "slack"
        assert [m["channel"] for m in slack.messages] == ["#inventory"] * 3
        assert all(blocks_problem(m["payload"]["blocks"]) is None for m in slack.messages)
        assert slack.messages[0]["payload"]["blocks"][0]["text"]["text"] == "Low stock: SKU-1"


def test_rest_failover_from_a_stopped_slack_to_the_outbox_loses_nothing(tmp_path: Path) -> None:
    stopped = FakeSlack()
    url = stopped.hook("default", "#general")
    stopped.start()
    stopped.stop()  # the primary's server is down
    with make_hub(tmp_path, url) as api:
        response = post_chat(api, [{"channel": "#ops"}, {"channel": "#alerts"}, {"name": "no channel"}])
        assert response.status_code == 200, response.get_json()
        view = response.get_json()["data"]
        assert view["status"] == "succeeded" and view["transporter"] == "outbox" and view["sent"] == 3
        assert {a["provider"]: a["outcome"] for a in view["attempts"]} == {"slack": "failed", "outbox": "succeeded"}

        [written] = (tmp_path / "outbox" / "demo" / "chat").glob("*.json")
        document = json.loads(written.read_text())
        assert [r["address"] for r in document["recipients"]] == ["#ops", "#alerts", "default"]
        assert document["blocks"][0]["text"]["text"] == "Sync failed"


def test_rest_gives_the_outbox_only_what_slack_failing_part_way_did_not_post(
    tmp_path: Path, slack: FakeSlack, hooks: Hooks
) -> None:
    with make_hub(tmp_path, hooks.default, channels={"#ops": hooks.ops}) as api:
        slack.faults.extend([None, (503, "service_unavailable", {})])  # Slack fails after the first POST
        response = post_chat(api, [{"channel": "#ops"}, {"channel": "#alerts"}, {"channel": "#sales"}])
        assert response.status_code == 200, response.get_json()
        view = response.get_json()["data"]
        assert view["status"] == "succeeded" and view["sent"] == 3
        assert [r["provider"] for r in view["recipients"]] == ["slack", "outbox", "outbox"]

        assert [m["channel"] for m in slack.messages] == ["#ops"]
        [written] = (tmp_path / "outbox" / "demo" / "chat").glob("*.json")
        document = json.loads(written.read_text())
        assert [r["address"] for r in document["recipients"]] == ["#alerts", "#sales"]  # each destination once
