"""hub-textlocal against a local TextLocal: a werkzeug server on 127.0.0.1 that follows TextLocal's
published API reference for ``POST /send/`` and ``POST /balance/`` (form fields, numbered errors and
warnings, the success document), keeps the account's credits and records what it received.

TextLocal publishes no machine-readable API description, so the fake is the reference read as
documented (see the plugin README for what was assumed).
"""

from __future__ import annotations

import itertools
import json
import math
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import hub_textlocal
import pytest
from werkzeug.wrappers import Request, Response

from hub.capabilities import Message, Recipient, WebhookRequest
from hub.errors import ConfigError, ConfigurationError, PermanentError, SignatureError, TransientError
from hub.testing import ProviderHarness
from hub.testing.contracts import check_provider_class, run_contract
from hub.testing.rest import RestHub, rest_hub
from hub.testing.servers import WsgiServer
from hub.testing.transport import check_concurrent_use, check_transport_errors, check_webhook_signatures

API_KEY = "tl-test-0123456789abcdef"
RECEIPT_TOKEN = "receipt-token-0123456789"


class FakeTextLocal(WsgiServer):
    """TextLocal's send and balance commands, as documented."""

    #: The longest message the send command accepts (its reference: 765 characters).
    MAX_MESSAGE = 765
    #: Numbers one send accepts (more: error 33).
    MAX_NUMBERS = 1000

    def __init__(self, api_key: str = API_KEY, credits: int = 1000) -> None:
        super().__init__(name="fake-textlocal")
        self.api_key = api_key
        self.initial_credits = credits
        self._lock = threading.Lock()
        self._ids = itertools.count(1151346216)
        self._batches = itertools.count(123456789)
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.credits = self.initial_credits
            #: Every request's form fields, in order of arrival (path under "_path").
            self.requests: list[dict[str, str]] = []
            #: Every SMS the account really sent: number, message, sender, custom, receipt_url, id.
            self.sent: list[dict[str, Any]] = []
            #: Answers for the next requests, in order: (HTTP status, body, headers), or None to answer
            #: that request normally.
            self.faults: list[tuple[int, str, dict[str, str]] | None] = []

    # --- the API -----------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        with self._lock:
            self.requests.append({"_path": request.path, **request.form.to_dict()})
            fault = self.faults.pop(0) if self.faults else None
            if fault is not None:
                status, body, headers = fault
                response = Response(body, status=status, headers=headers)
            elif request.method != "POST":
                response = Response("Method not allowed", status=405)
            elif request.path == "/send/":
                response = self._json(self._send(request.form))
            elif request.path == "/balance/":
                response = self._json(self._balance(request.form))
            else:
                response = Response("Not found", status=404)
        return response(environ, start_response)

    @staticmethod
    def _json(document: dict[str, Any]) -> Response:
        # TextLocal answers 200 for failures too: the body's status decides.
        return Response(json.dumps(document), status=200, mimetype="application/json")

    @staticmethod
    def _failure(code: int, text: str, warnings: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        document: dict[str, Any] = {"errors": [{"code": code, "message": text}], "status": "failure"}
        if warnings:
            document["warnings"] = warnings
        return document

    def _balance(self, form: Any) -> dict[str, Any]:
        if form.get("apikey") != self.api_key:
            return self._failure(3, "Invalid login details")
        return {"balance": {"sms": self.credits, "mms": 0}, "status": "success"}

    def _send(self, form: Any) -> dict[str, Any]:
        if form.get("apikey") != self.api_key:
            return self._failure(3, "Invalid login details")
        numbers = [n.strip() for n in (form.get("numbers") or "").split(",") if n.strip()]
        if not numbers:
            return self._failure(4, "No recipients specified")
        if len(numbers) > self.MAX_NUMBERS:
            return self._failure(33, "You have supplied too many numbers")
        message = form.get("message") or ""
        if not message.strip():
            return self._failure(5, "No message content")
        if len(message) > self.MAX_MESSAGE:
            return self._failure(6, "Message too long")
        sender = form.get("sender")
        if sender is not None and not re.fullmatch(r"[A-Za-z0-9]{3,11}|[0-9]{3,13}", sender):
            return self._failure(43, "Invalid sender name")
        # International format without "+": country code and subscriber number, 10 to 15 digits.
        valid = [n for n in numbers if re.fullmatch(r"[1-9][0-9]{9,14}", n)]
        invalid = [n for n in numbers if n not in valid]
        warnings = [{"code": 3, "message": "Invalid number", "numbers": ",".join(invalid)}] if invalid else []
        if not valid:
            return self._failure(51, "No valid numbers specified", warnings)
        parts = 1 if len(message) <= 160 else math.ceil(len(message) / 153)
        cost = parts * len(valid)
        if cost > self.credits:
            return self._failure(7, "Insufficient credits", warnings)
        test = (form.get("test") or "").lower() in ("true", "1")
        batch_id = next(self._batches)
        messages = [{"id": str(next(self._ids)), "recipient": int(number)} for number in valid]
        if not test:
            self.credits -= cost
            for item in messages:
                self.sent.append(
                    {
                        "id": item["id"],
                        "number": str(item["recipient"]),
                        "message": message,
                        "sender": sender,
                        "custom": form.get("custom"),
                        "receipt_url": form.get("receipt_url"),
                        "batch_id": batch_id,
                    }
                )
        document: dict[str, Any] = {
            "balance": self.credits,
            "batch_id": batch_id,
            "cost": cost,
            "num_messages": len(valid),
            "message": {"num_parts": parts, "sender": sender or "TXTLCL", "content": message},
            "receipt_url": form.get("receipt_url") or "",
            "custom": form.get("custom") or "",
            "messages": messages,
            "status": "success",
        }
        if test:
            document["test_mode"] = True
        if warnings:
            document["warnings"] = warnings
        return document

    def send_requests(self) -> list[dict[str, str]]:
        return [request for request in self.requests if request["_path"] == "/send/"]


@pytest.fixture(scope="session")
def textlocal_server() -> Iterator[FakeTextLocal]:
    with FakeTextLocal() as server:
        yield server


@pytest.fixture
def textlocal(textlocal_server: FakeTextLocal) -> FakeTextLocal:
    textlocal_server.reset()
    return textlocal_server


def build(harness: ProviderHarness, server: FakeTextLocal, **settings: Any) -> Any:
    harness.add_plugin(hub_textlocal, "textlocal")
    return harness.build("textlocal", {"api_key": API_KEY, "base_url": server.url, **settings})


def sms(*addresses: str, text: str = "LOW STOCK SKU-1 @ WH1: 3 left", id: str = "msg-1") -> Message:
    return Message(id=id, tenant="demo", channel="sms", recipients=[Recipient(a) for a in addresses], text=text)


def receipt(number: str, status: str, custom: str, token: str | None = RECEIPT_TOKEN) -> WebhookRequest:
    form = {"number": number, "status": status, "customID": custom, "datetime": "2026-11-23 10:15:00"}
    query = {"token": token} if token is not None else {}
    return WebhookRequest(
        url="http://hub.test/api/integrations/webhooks/textlocal", headers={}, body=b"", form=form, query=query
    )


# --- the conformance kit -------------------------------------------------------------------------------


def test_textlocal_provider_class_meets_the_contract() -> None:
    check_provider_class(hub_textlocal.TextLocalSms)


def test_textlocal_meets_the_notify_contract(provider_harness: ProviderHarness, textlocal: FakeTextLocal) -> None:
    provider = build(provider_harness, textlocal, sender="HubAlerts")
    results = run_contract(provider_harness, provider, addresses=["+15005550006", "+14155550100"])
    assert results["health"].ok, results["health"].message
    assert sorted(item["number"] for item in textlocal.sent) == ["14155550100", "15005550006"]


def test_textlocal_with_receipts_meets_the_notify_contract(
    provider_harness: ProviderHarness, textlocal: FakeTextLocal
) -> None:
    provider = build(
        provider_harness,
        textlocal,
        receipt_url="https://hub.test/api/integrations/webhooks/tl",
        receipt_token=RECEIPT_TOKEN,
    )
    results = run_contract(provider_harness, provider, addresses=["+15005550006", "+14155550100"])
    assert {r.status for r in results["notify:sms"].results} == {"queued"}


# --- behaviour against the server ---------------------------------------------------------------------


def test_a_batch_is_one_call_with_every_number(provider_harness: ProviderHarness, textlocal: FakeTextLocal) -> None:
    provider = build(provider_harness, textlocal, sender="HubAlerts")
    message = sms("+14155552671", "+16502530000", "+447911123456")
    result = provider_harness.call(provider, "notify", message=message)

    [request] = textlocal.send_requests()
    assert request["numbers"] == "14155552671,16502530000,447911123456"
    assert request["message"] == "LOW STOCK SKU-1 @ WH1: 3 left" and request["sender"] == "HubAlerts"
    assert request["apikey"] == API_KEY and "test" not in request and "receipt_url" not in request
    custom = hub_textlocal.custom_reference("msg-1")
    assert request["custom"] == custom
    assert [r.status for r in result.results] == ["sent", "sent", "sent"]
    assert [r.provider_message_id for r in result.results] == [
        f"{custom}:14155552671",
        f"{custom}:16502530000",
        f"{custom}:447911123456",
    ]
    assert {item["number"]: item["message"] for item in textlocal.sent} == {
        "14155552671": "LOW STOCK SKU-1 @ WH1: 3 left",
        "16502530000": "LOW STOCK SKU-1 @ WH1: 3 left",
        "447911123456": "LOW STOCK SKU-1 @ WH1: 3 left",
    }
    assert textlocal.credits == 997


def test_large_batches_are_split_at_the_request_limit(
    provider_harness: ProviderHarness, textlocal: FakeTextLocal
) -> None:
    provider = build(provider_harness, textlocal, max_numbers_per_request=2)
    phones = [f"+1415555{2600 + i:04d}" for i in range(5)]
    result = provider_harness.call(provider, "notify", message=sms(*phones))
    assert [len(r["numbers"].split(",")) for r in textlocal.send_requests()] == [2, 2, 1]
    assert [r.status for r in result.results] == ["sent"] * 5
    assert sorted(item["number"] for item in textlocal.sent) == [p[1:] for p in phones]


def test_refused_numbers_fail_alone(provider_harness: ProviderHarness, textlocal: FakeTextLocal) -> None:
    provider = build(provider_harness, textlocal)
    result = provider_harness.call(
        provider, "notify", message=sms("+14155552671", "+1234567", "not-a-number", "+16502530000")
    )
    assert [r.status for r in result.results] == ["sent", "failed", "failed", "sent"]
    assert result.results[1].error == "TextLocal: Invalid number"
    assert result.results[2].error == "not an international phone number"
    assert textlocal.send_requests()[0]["numbers"] == "14155552671,1234567,16502530000"
    assert sorted(item["number"] for item in textlocal.sent) == ["14155552671", "16502530000"]

    only_bad = provider_harness.call(provider, "notify", message=sms("+1234567", "+7654321", id="msg-2"))
    assert [r.status for r in only_bad.results] == ["failed", "failed"]
    assert all(r.error == "TextLocal: Invalid number" for r in only_bad.results)


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ((502, "Bad Gateway", {}), "TextLocal answered HTTP 502"),
        (
            (200, json.dumps(FakeTextLocal._failure(7, "Insufficient credits")), {}),
            "TextLocal error 7: Insufficient credits",
        ),
    ],
)
def test_a_batch_cut_short_returns_the_unsent_recipients_as_retry(
    provider_harness: ProviderHarness, textlocal: FakeTextLocal, fault: Any, reason: str
) -> None:
    provider = build(provider_harness, textlocal, max_numbers_per_request=2)
    phones = ["+14155552671", "+16502530000", "+14155552672", "+14155552673", "+14155552674"]
    textlocal.faults.extend([None, fault])  # the second call fails
    result = provider_harness.call(provider, "notify", message=sms(*phones))
    # The first call was accepted, so no error (the whole batch would go again): the rest are handed back.
    assert [r.status for r in result.results] == ["sent", "sent", "retry", "retry", "retry"]
    assert all(r.error == reason and r.provider_message_id is None for r in result.results[2:])
    assert [item["number"] for item in textlocal.sent] == [p[1:] for p in phones[:2]]
    assert len(textlocal.send_requests()) == 2  # the third call was not tried

    # The core sends only the "retry" recipients again, in a message of their own.
    rest = provider_harness.call(provider, "notify", message=sms(*phones[2:], id="msg-1-2"))
    assert [r.status for r in rest.results] == ["sent"] * 3
    assert sorted(item["number"] for item in textlocal.sent) == sorted(p[1:] for p in phones)  # each once


def test_a_call_refused_after_one_was_accepted_fails_alone(
    provider_harness: ProviderHarness, textlocal: FakeTextLocal
) -> None:
    provider = build(provider_harness, textlocal, max_numbers_per_request=2)
    phones = ["+14155552671", "+16502530000", "+14155552672", "+14155552673", "+14155552674"]
    textlocal.faults.extend([None, (400, "Bad Request", {})])
    result = provider_harness.call(provider, "notify", message=sms(*phones))
    # A PermanentError would mark the first call's numbers failed too, though they were texted.
    assert [r.status for r in result.results] == ["sent", "sent", "failed", "failed", "sent"]
    assert result.results[2].error == "TextLocal answered HTTP 400"
    assert sorted(item["number"] for item in textlocal.sent) == sorted(p[1:] for p in [*phones[:2], phones[4]])


def test_an_error_before_anything_was_sent_still_raises(
    provider_harness: ProviderHarness, textlocal: FakeTextLocal
) -> None:
    provider = build(provider_harness, textlocal, max_numbers_per_request=2)
    textlocal.faults.extend([None, (502, "Bad Gateway", {})])  # only invalid numbers in the first call
    with pytest.raises(TransientError) as caught:
        provider_harness.call(provider, "notify", message=sms("+1234567", "+7654321", "+14155552671"))
    assert caught.value.provider_code == "502"
    assert textlocal.sent == []


def builder(harness: ProviderHarness) -> Callable[[str, float], Any]:
    """``build(url, timeout)`` for the kit's transport checks."""
    if "textlocal" not in harness.host.provider_types:
        harness.add_plugin(hub_textlocal, "textlocal")
    return lambda url, timeout: harness.build("textlocal", {"api_key": API_KEY, "base_url": url, "timeout": timeout})


def test_transport_errors_map_to_the_hubs_errors(provider_harness: ProviderHarness) -> None:
    """Down, too slow, dropped, 5xx, 429 with Retry-After, 401/403: the kit's servers, the kit's checks."""
    check_transport_errors(provider_harness, builder(provider_harness))


def test_worker_threads_send_concurrently(provider_harness: ProviderHarness, textlocal: FakeTextLocal) -> None:
    check_concurrent_use(provider_harness, builder(provider_harness), textlocal.url)
    assert len(textlocal.sent) == 8 * 3 * 2


def test_rejected_api_key_is_a_configuration_error(provider_harness: ProviderHarness, textlocal: FakeTextLocal) -> None:
    provider = build(provider_harness, textlocal, api_key="wrong-key-value")
    with pytest.raises(ConfigurationError) as caught:
        provider_harness.call(provider, "notify", message=sms("+14155552671"))
    assert caught.value.provider_code == "3" and "Invalid login details" in caught.value.message
    health = provider_harness.call(provider, "health")
    assert health.status == "error" and "Invalid login details" in health.message
    assert "wrong-key-value" not in caught.value.message + health.message
    assert textlocal.sent == []


def test_no_credit_fails_over_and_shows_in_health(provider_harness: ProviderHarness, textlocal: FakeTextLocal) -> None:
    provider = build(provider_harness, textlocal)
    textlocal.credits = 0
    with pytest.raises(ConfigurationError) as caught:
        provider_harness.call(provider, "notify", message=sms("+14155552671"))
    assert caught.value.provider_code == "7"
    health = provider_harness.call(provider, "health")
    assert health.status == "error" and "no SMS credits" in health.message


def test_a_refused_message_is_permanent(provider_harness: ProviderHarness, textlocal: FakeTextLocal) -> None:
    provider = build(provider_harness, textlocal)
    with pytest.raises(PermanentError) as too_long:
        provider_harness.call(provider, "notify", message=sms("+14155552671", text="x" * 766))
    with pytest.raises(PermanentError) as empty:
        provider_harness.call(provider, "notify", message=sms("+14155552671", text=" "))
    assert (too_long.value.provider_code, empty.value.provider_code) == ("6", "5")
    assert textlocal.sent == []


def test_health_reports_the_credits(provider_harness: ProviderHarness, textlocal: FakeTextLocal) -> None:
    health = provider_harness.call(build(provider_harness, textlocal), "health")
    assert health.status == "success" and "1000 SMS credits" in health.message
    assert textlocal.requests[-1] == {"_path": "/balance/", "apikey": API_KEY}


def test_test_mode_sends_nothing(provider_harness: ProviderHarness, textlocal: FakeTextLocal) -> None:
    provider = build(provider_harness, textlocal, test_mode=True)
    result = provider_harness.call(provider, "notify", message=sms("+14155552671"))
    assert result.results[0].status == "sent"
    assert textlocal.send_requests()[0]["test"] == "true" and textlocal.sent == []
    assert "test mode" in provider_harness.call(provider, "health").message


def test_receipts_carry_the_token_and_are_verified(provider_harness: ProviderHarness, textlocal: FakeTextLocal) -> None:
    provider = build(
        provider_harness,
        textlocal,
        receipt_url="https://hub.test/api/integrations/webhooks/tl?tenant=demo",
        receipt_token=RECEIPT_TOKEN,
    )
    result = provider_harness.call(provider, "notify", message=sms("+14155552671", "+16502530000"))
    assert [r.status for r in result.results] == ["queued", "queued"]
    sent_url = urlsplit(textlocal.send_requests()[0]["receipt_url"])
    assert parse_qs(sent_url.query) == {"tenant": ["demo"], "token": [RECEIPT_TOKEN]}
    custom = textlocal.sent[0]["custom"]

    events = provider_harness.call(provider, "handle_webhook", webhook=receipt("14155552671", "D", custom))
    [event] = events
    assert event.reference == result.results[0].provider_message_id
    assert (event.status, event.recipient, event.details["textlocalStatus"]) == ("delivered", "+14155552671", "D")
    statuses = {
        letter: provider_harness.call(provider, "handle_webhook", webhook=receipt("16502530000", letter, custom))[
            0
        ].status
        for letter in "DUPIE?"
    }
    assert statuses == {
        "D": "delivered",
        "U": "undelivered",
        "P": "pending",
        "I": "failed",
        "E": "undelivered",
        "?": "unknown",
    }

    def sign(*, timestamp: float, forged: bool) -> WebhookRequest:  # a token in the URL: no timestamp, no payload
        return receipt("14155552671", "D", custom, token="wrong-token-0123456789" if forged else RECEIPT_TOKEN)

    check_webhook_signatures(provider_harness, provider, sign, tamper=False)  # forged and replayed receipts
    for token in (None, ""):
        with pytest.raises(SignatureError):
            provider_harness.call(provider, "handle_webhook", webhook=receipt("14155552671", "D", custom, token=token))


def test_receipts_are_refused_when_not_enabled(provider_harness: ProviderHarness, textlocal: FakeTextLocal) -> None:
    provider = build(provider_harness, textlocal)
    with pytest.raises(SignatureError, match="not enabled"):
        provider_harness.call(provider, "handle_webhook", webhook=receipt("14155552671", "D", "abc"))


def test_settings_are_validated_and_read_from_the_environment(
    provider_harness: ProviderHarness, textlocal: FakeTextLocal
) -> None:
    provider_harness.add_plugin(hub_textlocal, "textlocal")
    with pytest.raises(ConfigError, match="sender"):
        provider_harness.build("textlocal", {"api_key": API_KEY, "sender": "TwelveLetter"})
    with pytest.raises(ConfigError, match="receipt_token"):
        provider_harness.build("textlocal", {"api_key": API_KEY, "receipt_url": "https://hub.test/webhooks/tl"})
    with pytest.raises(ConfigError, match="TEXTLOCAL_API_KEY"):
        provider_harness.build("textlocal", {}, environ={})
    provider = provider_harness.build("textlocal", {"base_url": textlocal.url}, environ={"TEXTLOCAL_API_KEY": API_KEY})
    assert provider_harness.call(provider, "health").ok


# --- the hub: REST, failover, receipts ----------------------------------------------------------------


def make_hub(tmp_path: Path, providers: dict[str, Any], plugins: list[tuple[Any, str]]) -> RestHub:
    return rest_hub(
        tmp_path,
        plugins=plugins,
        providers=providers,
        services={"sms": {"providers": ["primary", "backup"]}},
        queue={"batch_size": 10},
    )


def send_sms(api: RestHub, phones: list[str]) -> Any:
    data = {"subject": "Low stock", "message": "SKU-1 below threshold"}
    return api.notify({"type": "sms", "recipients": [{"phone": p} for p in phones], "template": "custom", "data": data})


def test_rest_failover_from_a_stopped_textlocal_loses_nothing_and_receipts_arrive(
    tmp_path: Path, textlocal: FakeTextLocal
) -> None:
    stopped = FakeTextLocal().start()
    stopped.stop()  # the primary's server is down
    with make_hub(
        tmp_path,
        {
            "primary": {"type": "textlocal", "api_key": API_KEY, "base_url": stopped.url, "timeout": 1},
            "backup": {
                "type": "textlocal",
                "api_key": API_KEY,
                "base_url": textlocal.url,
                "receipt_url": "https://hub.test/api/integrations/webhooks/backup",
                "receipt_token": RECEIPT_TOKEN,
            },
        },
        [(hub_textlocal, "textlocal")],
    ) as api:
        single = send_sms(api, ["+14155552671"])
        assert single.status_code == 200, single.get_json()
        assert single.get_json()["data"]["transporter"] == "backup"

        phones = [f"+1415555{2600 + i:04d}" for i in range(25)]
        bulk = send_sms(api, phones)
        message_id = api.run_queued(bulk)  # as a worker would
        view = api.notification(message_id)
        assert view["status"] == "succeeded" and view["sent"] == 25 and view["failed"] == 0
        assert {a["provider"] for a in view["attempts"] if a["outcome"] == "failed"} == {"primary"}

        assert sorted(item["number"] for item in textlocal.sent) == sorted(p[1:] for p in ["+14155552671", *phones])
        assert {item["message"] for item in textlocal.sent} == {"Low stock: SKU-1 below threshold"}
        assert [len(r["numbers"].split(",")) for r in textlocal.send_requests()] == [1, 10, 10, 5]

        # TextLocal posts a receipt to the receipt_url it was given, for the first bulk recipient.
        first = next(item for item in textlocal.sent if item["number"] == phones[0][1:])
        url = urlsplit(first["receipt_url"])
        form = {
            "number": first["number"],
            "status": "D",
            "customID": first["custom"],
            "datetime": "2026-11-23 10:15:00",
        }
        answer = api.client.post(f"{url.path}?{url.query}", data=form)
        assert answer.status_code == 200 and answer.get_json()["data"] == {"received": 1, "duplicates": 0, "updated": 1}
        assert api.client.post(f"{url.path}?{url.query}", data=form).get_json()["data"]["duplicates"] == 1
        forged = api.client.post(f"{url.path}?token=forged-token-0123456789", data={**form, "status": "U"})
        assert forged.status_code == 401

        view = api.notification(message_id)
        delivered = [r for r in view["recipients"] if r.get("deliveryStatus") == "delivered"]
        assert [r["address"] for r in delivered] == [phones[0]]


def test_rest_gives_the_backup_only_what_a_primary_failing_part_way_did_not_send(
    tmp_path: Path, textlocal: FakeTextLocal
) -> None:
    with (
        FakeTextLocal() as backup_server,
        make_hub(
            tmp_path,
            {
                "primary": {
                    "type": "textlocal",
                    "api_key": API_KEY,
                    "base_url": textlocal.url,
                    "max_numbers_per_request": 2,
                },
                "backup": {"type": "textlocal", "api_key": API_KEY, "base_url": backup_server.url},
            },
            [(hub_textlocal, "textlocal")],
        ) as api,
    ):
        textlocal.faults.extend([None, (503, "Service Unavailable", {})])  # the primary's second call fails
        phones = [f"+1415555{2900 + i:04d}" for i in range(6)]
        response = send_sms(api, phones)
        assert response.status_code == 200, response.get_json()
        body = response.get_json()["data"]
        assert body["status"] == "succeeded"
        assert [r["status"] for r in body["recipients"]] == ["sent"] * 6
        assert [r["provider"] for r in body["recipients"]] == ["primary"] * 2 + ["backup"] * 4
        assert [item["number"] for item in textlocal.sent] == [p[1:] for p in phones[:2]]
        assert [item["number"] for item in backup_server.sent] == [p[1:] for p in phones[2:]]  # each texted once


def test_rest_failover_from_a_stopped_sns_endpoint_to_textlocal(
    tmp_path: Path, textlocal: FakeTextLocal, dead_url: str
) -> None:
    hub_sns = pytest.importorskip("hub_sns")
    with make_hub(
        tmp_path,
        {
            "primary": {
                "type": "sns",
                "region": "us-east-1",
                "access_key_id": "testing",
                "secret_access_key": "testing",
                "endpoint_url": dead_url,
                "timeout": 1,
            },
            "backup": {"type": "textlocal", "api_key": API_KEY, "base_url": textlocal.url},
        },
        [(hub_sns, "sns"), (hub_textlocal, "textlocal")],
    ) as api:
        phones = [f"+1650253{1000 + i:04d}" for i in range(5)]
        response = send_sms(api, phones)
        assert response.status_code == 200, response.get_json()
        body = response.get_json()["data"]
        assert body["status"] == "succeeded" and body["transporter"] == "backup"
        assert sorted(item["number"] for item in textlocal.sent) == sorted(p[1:] for p in phones)
