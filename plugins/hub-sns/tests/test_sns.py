"""hub-sns against a real SNS API: moto in server mode on 127.0.0.1, driven by boto3 itself.

Sent SMS are read back from moto's state (``GET /moto-api/data.json`` -> ``sns.SMS``); the message
attributes, which moto does not keep, are read from the request boto3 put on the wire.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import hub_sns
import pytest
import requests

from hub.capabilities import Message, Recipient
from hub.errors import ConfigError, ConfigurationError, PermanentError, TransientError
from hub.testing import ProviderHarness
from hub.testing.contracts import check_provider_class, run_contract
from hub.testing.rest import RestHub, rest_hub
from hub.testing.servers import ServerProcess, moto_server
from hub.testing.transport import check_concurrent_use, check_transport_errors

KEYS = {"region": "us-east-1", "access_key_id": "testing", "secret_access_key": "testing"}


@pytest.fixture(scope="session")
def moto() -> Iterator[ServerProcess]:
    server = moto_server().start()
    yield server
    server.stop()


@pytest.fixture
def sns(moto: ServerProcess) -> ServerProcess:
    """The moto server with no SMS sent yet."""
    requests.post(f"{moto.url}/moto-api/reset", timeout=5).raise_for_status()
    return moto


def sent_sms(server: ServerProcess) -> list[dict[str, str]]:
    return requests.get(f"{server.url}/moto-api/data.json", timeout=5).json()["sns"]["SMS"]


@contextlib.contextmanager
def iam_checks(server: ServerProcess) -> Iterator[None]:
    """Make moto check every request's credentials against its IAM users (none exist: all refused)."""
    requests.post(f"{server.url}/moto-api/reset-auth", data=b"0", timeout=5).raise_for_status()
    try:
        yield
    finally:
        requests.post(f"{server.url}/moto-api/reset-auth", data=b"inf", timeout=5).raise_for_status()


def build(harness: ProviderHarness, server_url: str, **settings: Any) -> Any:
    harness.add_plugin(hub_sns, "sns")
    return harness.build("sns", {**KEYS, "endpoint_url": server_url, **settings})


def sms_message(
    *addresses: str, text: str = "Stock low: SKU-1 at WH1", priority: str = "normal", id: str = "msg-1"
) -> Message:
    return Message(
        id=id,
        tenant="demo",
        channel="sms",
        recipients=[Recipient(address) for address in addresses],
        text=text,
        priority=priority,
    )


def wire_publishes(provider: Any) -> list[dict[str, list[str]]]:
    """Every Publish request body boto3 sends from now on, parsed (SNS speaks the query protocol)."""
    bodies: list[dict[str, list[str]]] = []

    def record(request: Any, **_: Any) -> None:
        body = request.body.decode() if isinstance(request.body, bytes) else request.body
        bodies.append(parse_qs(body))

    provider.client.meta.events.register("before-send.sns.Publish", record)
    return bodies


def attributes_of(body: dict[str, list[str]]) -> dict[str, str]:
    names = {key.split(".")[2]: value[0] for key, value in body.items() if key.endswith(".Name")}
    return {name: body[f"MessageAttributes.entry.{n}.Value.StringValue"][0] for n, name in names.items()}


class _Raw:
    """A raw HTTP body for a botocore response made up in a test."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


def fail_publish_number(provider: Any, calls: set[int], status: int, code: str) -> None:
    """Fault injection a server cannot produce on demand: answer the given Publish calls (1-based)
    with an AWS error instead of sending them."""
    from botocore.awsrequest import AWSResponse

    seen = {"count": 0}

    def answer(request: Any, **_: Any) -> AWSResponse | None:
        seen["count"] += 1
        if seen["count"] not in calls:
            return None
        body = (
            f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>injected</Message></Error>"
            "<RequestId>test</RequestId></ErrorResponse>"
        ).encode()
        return AWSResponse(request.url, status, {"Content-Type": "text/xml"}, _Raw(body))

    provider.client.meta.events.register("before-send.sns.Publish", answer)


# --- the conformance kit -------------------------------------------------------------------------------


def test_sns_provider_class_meets_the_contract() -> None:
    check_provider_class(hub_sns.SnsSms)


def test_sns_meets_the_notify_contract(provider_harness: ProviderHarness, sns: ServerProcess) -> None:
    provider = build(provider_harness, sns.url)
    results = run_contract(provider_harness, provider, addresses=["+15005550006", "+14155550100"])
    assert results["health"].ok, results["health"].message
    assert sorted(sms["phone_number"] for sms in sent_sms(sns)) == ["+14155550100", "+15005550006"]


# --- behaviour against the server ---------------------------------------------------------------------


def test_sms_arrive_with_text_recipients_and_attributes(provider_harness: ProviderHarness, sns: ServerProcess) -> None:
    provider = build(provider_harness, sns.url, sender_id="HubAlerts", max_price="0.25")
    wire = wire_publishes(provider)
    result = provider_harness.call(provider, "notify", message=sms_message("+14155552671", "+16502530000"))

    assert [r.status for r in result.results] == ["sent", "sent"]
    stored = {sms["message_id"]: sms for sms in sent_sms(sns)}
    for outcome in result.results:
        assert stored[outcome.provider_message_id]["phone_number"] == outcome.address
        assert stored[outcome.provider_message_id]["message"] == "Stock low: SKU-1 at WH1"
    assert attributes_of(wire[0]) == {
        "AWS.SNS.SMS.SMSType": "Promotional",
        "AWS.SNS.SMS.SenderID": "HubAlerts",
        "AWS.SNS.SMS.MaxPrice": "0.25",
    }


def test_high_priority_is_sent_transactional(provider_harness: ProviderHarness, sns: ServerProcess) -> None:
    provider = build(provider_harness, sns.url)
    wire = wire_publishes(provider)
    provider_harness.call(provider, "notify", message=sms_message("+14155552671", priority="high"))
    provider_harness.call(provider, "notify", message=sms_message("+14155552671", id="msg-2"))
    assert [attributes_of(body)["AWS.SNS.SMS.SMSType"] for body in wire] == ["Transactional", "Promotional"]
    assert "AWS.SNS.SMS.SenderID" not in attributes_of(wire[0])


def test_a_refused_number_fails_alone(provider_harness: ProviderHarness, sns: ServerProcess) -> None:
    provider = build(provider_harness, sns.url)
    result = provider_harness.call(provider, "notify", message=sms_message("+14155552671", "+0123", "+16502530000"))
    assert [r.status for r in result.results] == ["sent", "failed", "sent"]
    assert "InvalidParameter" in result.results[1].error and "E164" in result.results[1].error
    assert sorted(sms["phone_number"] for sms in sent_sms(sns)) == ["+14155552671", "+16502530000"]


@pytest.mark.parametrize(
    ("status", "code", "problem"), [(400, "Throttling", "throttled"), (403, "AccessDenied", "permissions")]
)
def test_a_batch_cut_short_returns_the_unsent_recipients_as_retry(
    provider_harness: ProviderHarness, sns: ServerProcess, status: int, code: str, problem: str
) -> None:
    provider = build(provider_harness, sns.url)
    phones = ["+14155552671", "+0123", "+16502530000", "+14155552672"]
    fail_publish_number(provider, {3}, status, code)
    result = provider_harness.call(provider, "notify", message=sms_message(*phones))
    # One SMS went out, so no error (the whole batch would go again): the rest are handed back.
    assert [r.status for r in result.results] == ["sent", "failed", "retry", "retry"]
    assert all(code in r.error and problem in r.error and r.provider_message_id is None for r in result.results[2:])
    assert [sms["phone_number"] for sms in sent_sms(sns)] == ["+14155552671"]

    # The core sends only the "retry" recipients again, in a message of their own.
    rest = provider_harness.call(provider, "notify", message=sms_message(*phones[2:], id="msg-1-2"))
    assert [r.status for r in rest.results] == ["sent", "sent"]
    assert sorted(sms["phone_number"] for sms in sent_sms(sns)) == ["+14155552671", "+14155552672", "+16502530000"]


def test_an_error_before_anything_was_sent_still_raises(provider_harness: ProviderHarness, sns: ServerProcess) -> None:
    provider = build(provider_harness, sns.url)
    fail_publish_number(provider, {2}, 400, "Throttling")  # the refused number, then throttled
    with pytest.raises(TransientError) as caught:
        provider_harness.call(provider, "notify", message=sms_message("+0123", "+16502530000"))
    assert caught.value.provider_code == "Throttling"
    assert sent_sms(sns) == []


def builder(harness: ProviderHarness) -> Any:
    """``build(url, timeout)`` for the kit's transport checks (keys no message may quote)."""
    if "sns" not in harness.host.provider_types:
        harness.add_plugin(hub_sns, "sns")
    keys = {"access_key_id": "AKIAKITCHECK0000", "secret_access_key": "kit-secret-value-0000"}
    return lambda url, timeout: harness.build(
        "sns", {"region": "us-east-1", **keys, "endpoint_url": url, "timeout": timeout}
    )


#: An error answer in SNS's shape (the query protocol's XML), which botocore insists on reading.
SNS_ERROR = (
    b"<ErrorResponse><Error><Type>Sender</Type><Code>KitFault</Code><Message>injected fault</Message></Error>"
    b"<RequestId>kit</RequestId></ErrorResponse>"
)


def test_transport_errors_map_to_the_hubs_errors(provider_harness: ProviderHarness) -> None:
    """Down, too slow, dropped, 5xx, 429 with Retry-After, 401/403: the kit's servers, the kit's checks."""
    check_transport_errors(
        provider_harness, builder(provider_harness), error_body=SNS_ERROR, error_content_type="text/xml"
    )


def test_worker_threads_share_one_client(provider_harness: ProviderHarness, sns: ServerProcess) -> None:
    check_concurrent_use(provider_harness, builder(provider_harness), sns.url)
    assert len(sent_sms(sns)) == 8 * 3 * 2


def test_server_errors_are_transient(provider_harness: ProviderHarness, sns: ServerProcess) -> None:
    provider = build(provider_harness, sns.url)
    fail_publish_number(provider, {1}, 503, "ServiceUnavailable")
    with pytest.raises(TransientError) as caught:
        provider_harness.call(provider, "notify", message=sms_message("+14155552671"))
    assert caught.value.provider_code == "ServiceUnavailable"
    assert sent_sms(sns) == []


def test_rejected_credentials_are_a_configuration_error(provider_harness: ProviderHarness, sns: ServerProcess) -> None:
    provider = build(provider_harness, sns.url, access_key_id="AKIAEXAMPLEKEY", secret_access_key="wrong-secret-value")
    with iam_checks(sns):
        with pytest.raises(ConfigurationError) as caught:
            provider_harness.call(provider, "notify", message=sms_message("+14155552671"))
        health = provider_harness.call(provider, "health")
    assert caught.value.provider_code == "InvalidClientTokenId"
    assert health.status == "error" and "InvalidClientTokenId" in health.message
    for text in (caught.value.message, health.message):
        assert "wrong-secret-value" not in text and "AKIAEXAMPLEKEY" not in text
    assert sent_sms(sns) == []


def test_health_ok(provider_harness: ProviderHarness, sns: ServerProcess) -> None:
    health = provider_harness.call(build(provider_harness, sns.url), "health")
    assert health.status == "success" and "us-east-1" in health.message


def test_text_sns_cannot_send_is_refused_before_sending(provider_harness: ProviderHarness, sns: ServerProcess) -> None:
    provider = build(provider_harness, sns.url)
    with pytest.raises(PermanentError, match="1600"):
        provider_harness.call(provider, "notify", message=sms_message("+14155552671", text="x" * 1601))
    with pytest.raises(PermanentError, match="empty"):
        provider_harness.call(provider, "notify", message=sms_message("+14155552671", text="  "))
    assert sent_sms(sns) == []


def test_settings_are_validated_and_read_from_the_environment(
    provider_harness: ProviderHarness, sns: ServerProcess
) -> None:
    provider_harness.add_plugin(hub_sns, "sns")
    with pytest.raises(ConfigError, match="sender_id"):
        provider_harness.build("sns", {**KEYS, "sender_id": "TwelveLetters"})
    with pytest.raises(ConfigError, match="secret_access_key"):
        provider_harness.build("sns", {"region": "us-east-1", "access_key_id": "AKIAONLY"})
    with pytest.raises(ConfigError, match="sms_type"):
        provider_harness.build("sns", {**KEYS, "sms_type": "Urgent"})
    environ = {"AWS_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    provider = provider_harness.build("sns", {"endpoint_url": sns.url}, environ=environ)
    assert provider.settings["region"] == "eu-west-1"
    result = provider_harness.call(provider, "notify", message=sms_message("+14155552671"))
    assert result.results[0].status == "sent" and provider.client.meta.region_name == "eu-west-1"


# --- the hub: REST, failover to a working account ---------------------------------------------------------


def make_hub(tmp_path: Path, *, primary_url: str, backup_url: str, queue: dict[str, Any] | None = None) -> RestHub:
    """A hub with SMS on SNS ``primary`` (timing out after 1 s), then ``backup``."""
    return rest_hub(
        tmp_path,
        plugins=[(hub_sns, "sns")],
        providers={
            "primary": {"type": "sns", **KEYS, "endpoint_url": primary_url, "timeout": 1},
            "backup": {"type": "sns", **KEYS, "endpoint_url": backup_url},
        },
        services={"sms": {"providers": ["primary", "backup"]}},
        queue=queue,
    )


def test_rest_gives_the_backup_only_what_a_primary_failing_part_way_did_not_send(
    tmp_path: Path, sns: ServerProcess
) -> None:
    with make_hub(tmp_path, primary_url=sns.url, backup_url=sns.url) as api:
        fail_publish_number(api.hub.registry.instance("primary", "demo"), {3}, 503, "ServiceUnavailable")

        phones = [f"+1415555{2800 + i:04d}" for i in range(6)]
        response = api.notify(
            {"type": "sms", "recipients": [{"phone": p} for p in phones], "data": {"message": "Restocked"}}
        )
        assert response.status_code == 200, response.get_json()
        data = response.get_json()["data"]
        assert data["status"] == "succeeded"
        assert [r["status"] for r in data["recipients"]] == ["sent"] * 6
        assert [r["provider"] for r in data["recipients"]] == ["primary"] * 2 + ["backup"] * 4

        stored = {sms["message_id"]: sms["phone_number"] for sms in sent_sms(sns)}
        assert sorted(stored.values()) == phones  # every number texted exactly once
        assert [stored[r["providerMessageId"]] for r in data["recipients"]] == phones


def test_rest_failover_from_a_stopped_endpoint_loses_nothing(tmp_path: Path, sns: ServerProcess, dead_url: str) -> None:
    with make_hub(tmp_path, primary_url=dead_url, backup_url=sns.url, queue={"batch_size": 10}) as api:
        data = {"subject": "Low stock", "message": "SKU-1 below threshold"}

        single = api.notify(
            {"type": "sms", "recipients": [{"phone": "+14155552671"}], "template": "custom", "data": data}
        )
        assert single.status_code == 200, single.get_json()
        body = single.get_json()["data"]
        assert body["status"] == "succeeded" and body["transporter"] == "backup"

        phones = [f"+1415555{2600 + i:04d}" for i in range(25)]
        bulk = api.notify(
            {"type": "sms", "recipients": [{"phone": p} for p in phones], "template": "custom", "data": data}
        )
        view = api.notification(api.run_queued(bulk))  # as a worker would
        assert view["status"] == "succeeded" and view["sent"] == 25 and view["failed"] == 0
        outcomes = [(a["provider"], a["outcome"]) for a in view["attempts"]]
        assert outcomes[:2] == [("primary", "failed"), ("backup", "succeeded")]
        # Once the primary's circuit breaker opens, later batches skip it at once ("circuit open").
        assert {outcome for provider, outcome in outcomes if provider == "primary"} <= {"failed", "skipped"}
        assert {outcome for provider, outcome in outcomes if provider == "backup"} == {"succeeded"}

        stored = sent_sms(sns)
        assert sorted(sms["phone_number"] for sms in stored) == sorted(["+14155552671", *phones])
        assert {sms["message"] for sms in stored} == {"Low stock: SKU-1 below threshold"}
