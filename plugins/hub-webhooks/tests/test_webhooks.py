"""hub-webhooks against a real receiver: a werkzeug server on 127.0.0.1 (``Receiver``) that keeps every POST and
can be told to answer an event with 503, 500, 422, 410... first, or slowly.

The hub tests run a whole hub in this process (``rest_hub``: the built-in event log, the plugin registered
in-process) with a ``webhook`` subscription, publish through ``POST /api/integrations/events`` and watch what the
receiver gets, the consumer group's committed offsets and ``GET /events/dead-letters``. No mocks.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hub_webhooks
import pytest
from hub_webhooks import TYPE_NAME, InvalidSignature, WebhookSender, generate_secret, verify, verify_request
from standardwebhooks import Webhook, WebhookVerificationError
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request, Response

from hub.capabilities import ConsumedRecord, Subscription
from hub.errors import ConfigError, ConfigurationError, PermanentError, ProviderThrottledError, TransientError
from hub.testing.rest import RestHub, rest_hub
from hub.testing.servers import WsgiServer, refused_url

API = "/api/integrations"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the Standard Webhooks spec's example secret
OTHER = generate_secret()


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def number(self) -> Any:
        """``data["n"]`` of the event: in the envelope, or in the record document's ``value``."""
        try:
            document = self.json
        except ValueError:
            return None
        inner = document.get("data") if "data" in document else (document.get("value") or {}).get("data")
        return (inner or {}).get("n") if isinstance(inner, dict) else None


class Receiver(WsgiServer):
    """Keeps every POST it answered 2xx in ``deliveries`` (and every attempt in ``attempts``). ``fail`` maps an
    event's ``data["n"]`` to ``(times, status)``: answer it with ``status`` that many times first (``-1``: always);
    ``retry_after`` is sent with those answers when set; ``delay`` slows every answer down."""

    def __init__(self) -> None:
        super().__init__(name="webhook-receiver")
        self.lock = threading.Lock()
        self.deliveries: list[Delivery] = []
        self.attempts: list[Delivery] = []
        self.fail: dict[int, tuple[int, int]] = {}
        self.retry_after: str | None = None
        self.delay = 0.0

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        delivery = Delivery(request.path, dict(request.headers), request.get_data())
        if self.delay:
            time.sleep(self.delay)
        number = delivery.number
        with self.lock:
            self.attempts.append(delivery)
            times, status = self.fail.get(number, (0, 200))
            if times:
                self.fail[number] = (times - 1 if times > 0 else times, status)
                headers = {"Retry-After": self.retry_after} if self.retry_after else {}
                return Response("refused", status=status, headers=headers)(environ, start_response)
            self.deliveries.append(delivery)
        return Response("ok")(environ, start_response)

    def numbers(self) -> list[int]:
        with self.lock:
            return [delivery.number for delivery in self.deliveries]

    def wait_for(self, count: int, timeout: float = 15.0) -> list[int]:
        deadline = time.monotonic() + timeout
        while len(numbers := self.numbers()) < count:
            assert time.monotonic() < deadline, f"{len(numbers)} of {count} deliveries after {timeout} s: {numbers}"
            time.sleep(0.02)
        return numbers


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as server:
        yield server


def subscription(url: str, **options: Any) -> dict[str, Any]:
    handler = {"type": TYPE_NAME, "url": url, "secret": SECRET, **options.pop("handler", {})}
    return {
        "tenant": "demo",
        "topics": ["orders"],
        "handler": handler,
        "lease_seconds": 2,
        "backoff": {"initial": 0.05, "max": 0.2},
        **options,
    }


def build_hub(data_dir: Path, subscriptions: dict[str, Any]) -> RestHub:
    return rest_hub(
        data_dir,
        plugins=[(hub_webhooks, "webhooks")],
        providers={"eventlog": {"type": "event-log", "directory": "events", "partitions": 3}},
        services={"kafka": {"providers": ["eventlog"]}},
        subscriptions=subscriptions,
    )


@pytest.fixture
def make_hub(tmp_path: Path) -> Iterator[Callable[..., RestHub]]:
    made: list[RestHub] = []

    def make(subscriptions: dict[str, Any], *, workers: int = 1) -> RestHub:
        api = build_hub(tmp_path / f"hub-{len(made)}", subscriptions)
        made.append(api)
        if workers:
            api.hub.start_workers(workers)
        return api

    yield make
    for api in made:
        api.close()


def data(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.get_json()
    return response.get_json()["data"]


def publish(api: RestHub, n: int, key: str = "SO-1") -> dict[str, Any]:
    event = {"topic": "orders", "eventType": "order.created", "data": {"n": n}, "key": key}
    return data(api.post(f"{API}/events", event), 201)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not reached in {timeout} s"
        time.sleep(0.05)


def lag(api: RestHub) -> int | None:
    groups = data(api.get(f"{API}/events/consumer-groups"))["groups"]
    return groups[0]["lag"] if groups else None


def signed(body: bytes, secrets: list[str], *, message_id: str = "msg_1", at: float | None = None) -> dict[str, str]:
    """Headers as a Standard Webhooks sender makes them, signed with each of ``secrets`` by the reference library."""
    moment = datetime.fromtimestamp(int(time.time() if at is None else at), UTC)
    signature = " ".join(Webhook(secret).sign(message_id, moment, body.decode()) for secret in secrets)
    return {"webhook-id": message_id, "webhook-timestamp": str(int(moment.timestamp())), "webhook-signature": signature}


def record(value: Any, offset: int = 7) -> ConsumedRecord:
    return ConsumedRecord("orders", 1, offset, value, key="SO-1", headers={"source": "erp"})


SUBSCRIPTION = Subscription("orders-to-erp", "demo", "demo.orders-to-erp", ("orders",))


# --- through the hub -------------------------------------------------------------------------------------------


def test_every_event_is_delivered_in_order_signed_and_a_receiver_verifies_it(
    make_hub: Callable[..., RestHub], receiver: Receiver
) -> None:
    # The core's subscription filter wraps the plugin's handler like any other: order.cancelled is skipped.
    only_created = {"event_types": ["order.created"]}
    api = make_hub({"orders-to-erp": subscription(f"{receiver.url}/erp?token=abc", filter=only_created)})
    published = []
    for n in range(6):
        published.append(publish(api, n))
        if n == 2:
            cancelled = {"topic": "orders", "eventType": "order.cancelled", "data": {"n": 99}, "key": "SO-1"}
            data(api.post(f"{API}/events", cancelled), 201)
    assert receiver.wait_for(6) == list(range(6))
    for n, (event, delivery) in enumerate(zip(published, receiver.deliveries, strict=True)):
        headers = delivery.headers
        assert delivery.path == "/erp" and headers["Content-Type"] == "application/cloudevents+json"
        assert headers["Webhook-Id"] == event["eventId"]
        assert abs(int(headers["Webhook-Timestamp"]) - time.time()) < 30
        assert headers["Webhook-Signature"].startswith("v1,") and " " not in headers["Webhook-Signature"]
        # The receiver's side: this package's verifier, and the reference library on its own.
        envelope = verify(delivery.body, headers, SECRET)
        assert envelope == Webhook(SECRET).verify(delivery.body, headers)
        assert (envelope["specversion"], envelope["id"], envelope["type"]) == ("1.0", event["eventId"], "order.created")
        assert envelope["tenant"] == "demo" and envelope["subject"] == "SO-1" and envelope["data"] == {"n": n}
    wait_until(lambda: lag(api) == 0, "every offset committed")
    view = data(api.get(f"{API}/events/subscriptions/orders-to-erp"))
    assert view["handler"] == f"webhook http://127.0.0.1:{receiver.port}/…" and view["deadLetters"] == 0
    assert "abc" not in json.dumps(view)
    plugins = {plugin["name"]: plugin for plugin in data(api.get(f"{API}/plugins"))["plugins"]}
    assert plugins["webhooks"]["status"] == "loaded" and plugins["webhooks"]["hooks"] == ["register_handler_types"]


def test_a_503_is_retried_and_delivered_once_failures_become_dead_letters_and_the_subscription_moves_on(
    make_hub: Callable[..., RestHub], receiver: Receiver
) -> None:
    # 0 recovers after one 503; 1 never does (500); 2 is refused (422) and 3 is gone (410): dead letters at once.
    receiver.fail = {0: (1, 503), 1: (-1, 500), 2: (-1, 422), 3: (-1, 410)}
    api = make_hub({"orders-to-erp": subscription(f"{receiver.url}/erp", max_attempts=3)})
    published = [publish(api, n) for n in range(5)]
    assert receiver.wait_for(2) == [0, 4]
    letters_of = f"{API}/events/dead-letters?subscription=orders-to-erp"
    wait_until(lambda: len(data(api.get(letters_of))["items"]) == 3, "three dead letters")
    wait_until(lambda: lag(api) == 0, "committed past the dead letters")

    tries = {n: [a for a in receiver.attempts if a.number == n] for n in range(5)}
    assert [len(tries[n]) for n in range(5)] == [2, 3, 1, 1, 1]
    # A redelivery keeps its webhook-id (the receiver deduplicates by it) and is signed afresh.
    assert {attempt.headers["Webhook-Id"] for attempt in tries[0]} == {published[0]["eventId"]}
    assert all(verify(attempt.body, attempt.headers, SECRET) for attempt in tries[0])
    assert [delivery.json["id"] for delivery in receiver.deliveries] == [
        published[0]["eventId"],
        published[4]["eventId"],
    ]

    letters = {item["value"]["data"]["n"]: item for item in data(api.get(letters_of))["items"]}
    assert letters[1]["attempts"] == 3 and "HTTP 500" in letters[1]["error"]
    assert letters[2]["attempts"] == 1 and "HTTP 422" in letters[2]["error"]
    assert letters[3]["attempts"] == 1 and "410 Gone: the endpoint was removed" in letters[3]["error"]
    assert all(SECRET not in item["error"] and "/erp" not in item["error"] for item in letters.values())
    assert data(api.get(f"{API}/events/subscriptions/orders-to-erp"))["deadLetters"] == 3


def test_events_are_replayed_from_the_api_with_the_same_webhook_ids_signed_afresh(
    make_hub: Callable[..., RestHub], receiver: Receiver
) -> None:
    api = make_hub({"orders-to-erp": subscription(f"{receiver.url}/erp")})
    published = [publish(api, n) for n in range(3)]
    assert receiver.wait_for(3) == [0, 1, 2]
    wait_until(lambda: lag(api) == 0, "every offset committed")
    # The receiver lost its data: the consumer group goes back to the start and every event is POSTed again.
    reset = {"topic": "orders", "to": "earliest"}
    assert data(api.post(f"{API}/events/consumer-groups/demo.orders-to-erp/reset", reset))["subscriptions"] == [
        "orders-to-erp"
    ]
    assert receiver.wait_for(6, timeout=20) == [0, 1, 2, 0, 1, 2]
    first, again = receiver.deliveries[:3], receiver.deliveries[3:]
    ids = [event["eventId"] for event in published]
    assert [d.headers["Webhook-Id"] for d in first] == ids == [d.headers["Webhook-Id"] for d in again]
    assert [d.body for d in first] == [d.body for d in again]  # the same envelope: a receiver may deduplicate
    assert all(verify(d.body, d.headers, SECRET)["id"] == d.headers["Webhook-Id"] for d in again)


def test_a_slow_receiver_times_out_and_is_retried(make_hub: Callable[..., RestHub], receiver: Receiver) -> None:
    receiver.delay = 0.6
    api = make_hub(
        {"slow": subscription(f"{receiver.url}/erp", max_attempts=2, handler={"timeout": 0.2})},
    )
    publish(api, 0)
    letters_of = f"{API}/events/dead-letters?subscription=slow"
    wait_until(lambda: len(data(api.get(letters_of))["items"]) == 1, "a dead letter after two timeouts")
    (letter,) = data(api.get(letters_of))["items"]
    assert letter["attempts"] == 2 and "did not answer within 0.2 s" in letter["error"]


def test_a_sender_subscribed_from_python_delivers_too(make_hub: Callable[..., RestHub], receiver: Receiver) -> None:
    api = make_hub({})
    sender = WebhookSender(f"{receiver.url}/py", secrets=[SECRET])
    added = api.hub.subscribe("orders", "py-hook", sender, tenant_id="demo", lease_seconds=2)
    published = publish(api, 0)
    assert receiver.wait_for(1) == [0]
    (delivery,) = receiver.deliveries
    assert delivery.path == "/py" and verify(delivery.body, delivery.headers, SECRET)["id"] == published["eventId"]
    assert api.hub.unsubscribe(added.name)


def test_settings_are_checked_at_start_up_naming_the_key_and_never_quoting_a_secret(tmp_path: Path) -> None:
    short = "whsec_" + base64.b64encode(b"tiny").decode()
    cases = {
        "secret": {"secret": short},
        "secrets": {"secrets": [SECRET, "not-a-secret"]},
        "headers": {"headers": {"webhook-signature": "v1,xyz"}},
        "body": {"body": "xml"},
        "colour": {"colour": "blue"},
    }
    for key, settings in cases.items():
        url = "http://127.0.0.1:9/erp"
        with pytest.raises(ConfigError) as raised:
            build_hub(tmp_path / key, {"bad": subscription(url, handler=settings)}).close()
        # A bad item of a list is named by its index (secrets.1).
        expected = f"subscriptions.bad.handler.{key}" + (".1" if key == "secrets" else "")
        assert raised.value.field == expected, raised.value
        assert short not in str(raised.value) and "not-a-secret" not in str(raised.value)


# --- the handler on its own -------------------------------------------------------------------------------------


def test_a_record_that_is_no_event_gets_the_record_document_keyed_by_its_position(receiver: Receiver) -> None:
    sender = WebhookSender(f"{receiver.url}/raw", secrets=[SECRET], headers={"Authorization": "Bearer erp"})
    sender(record({"data": {"n": 5}, "sku": "A-1"}), SUBSCRIPTION)
    (delivery,) = receiver.deliveries
    assert delivery.headers["Webhook-Id"] == "orders:1:7" and delivery.headers["Content-Type"] == "application/json"
    assert delivery.headers["Authorization"] == "Bearer erp"
    document = verify(delivery.body, delivery.headers, SECRET)
    assert document["topic"] == "orders" and document["partition"] == 1 and document["offset"] == 7
    assert document["key"] == "SO-1" and document["headers"] == {"source": "erp"}
    assert document["value"] == {"data": {"n": 5}, "sku": "A-1"} and document["subscription"] == "orders-to-erp"
    # body: cloudevents sends hub events only; anything else is refused for good (a dead letter).
    strict = WebhookSender(f"{receiver.url}/raw", body="cloudevents")
    with pytest.raises(PermanentError, match="no hub event"):
        strict(record({"sku": "A-1"}), SUBSCRIPTION)
    unsigned = WebhookSender(f"{receiver.url}/raw", body="record")
    unsigned(record({"sku": "A-2"}), SUBSCRIPTION)
    assert "Webhook-Signature" not in receiver.deliveries[-1].headers
    assert receiver.deliveries[-1].headers["Webhook-Id"] == "orders:1:7"


def test_statuses_and_transport_failures_map_to_retried_or_permanent_errors(receiver: Receiver) -> None:
    sender = WebhookSender(f"{receiver.url}/erp?key=s3cr3t", secrets=[SECRET], timeout=0.3)
    expected = {
        503: TransientError,
        500: TransientError,
        429: ProviderThrottledError,
        408: TransientError,
        404: ConfigurationError,  # a wrong URL: retried (the subscription retries anything not permanent)
        401: ConfigurationError,
        400: PermanentError,
        422: PermanentError,
        410: PermanentError,
    }
    receiver.retry_after = "7"
    for n, (status, error_class) in enumerate(expected.items()):
        receiver.fail = {n: (1, status)}
        with pytest.raises(error_class) as raised:
            sender(record({"data": {"n": n}}), SUBSCRIPTION)
        assert f"HTTP {status}" in raised.value.message and "s3cr3t" not in raised.value.message
        assert SECRET not in raised.value.message and "/erp" not in raised.value.message
        assert type(raised.value) is error_class or status == 404
        if status in (503, 429):
            assert raised.value.retry_after == 7.0
    receiver.delay = 0.6
    with pytest.raises(TransientError, match="did not answer"):
        sender(record({"data": {"n": 99}}), SUBSCRIPTION)
    with pytest.raises(TransientError, match="cannot reach"):
        WebhookSender(refused_url("/erp?key=s3cr3t"), secrets=[SECRET])(record({}), SUBSCRIPTION)


def test_labels_name_the_endpoint_without_credentials_path_or_query() -> None:
    assert WebhookSender("https://user:pw@erp.example/hooks/T0K3N?sig=1").label == "webhook https://erp.example/…"
    assert WebhookSender("http://erp.example:8080").label == "webhook http://erp.example:8080/"
    assert WebhookSender("http://[::1]:8080/x").label == "webhook http://[::1]:8080/…"
    assert "whsec" not in repr(WebhookSender("https://erp.example/", secrets=[SECRET]))


# --- verifying --------------------------------------------------------------------------------------------------


def test_the_spec_example_verifies_and_forged_tampered_stale_and_future_ones_do_not() -> None:
    body = b'{"type":"order.created","data":{"n":1}}'
    headers = signed(body, [SECRET])
    assert verify(body, headers, SECRET) == {"type": "order.created", "data": {"n": 1}}
    assert verify(body.decode(), {k.upper(): v for k, v in headers.items()}, [OTHER, SECRET]) == json.loads(body)
    # The library's own signature for the spec's example, checked by hand: HMAC-SHA256 over id.timestamp.body.
    moment = datetime.fromtimestamp(1614265330, UTC)
    assert Webhook(SECRET).sign("msg_p5jXN8AQM9LWM0D4loKWxJek", moment, '{"test": 2432232314}') == (
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )

    refusals = {
        "forged": (body, signed(body, [OTHER])),
        "tampered": (body.replace(b'"n":1', b'"n":9'), headers),
        "other id": (body, {**headers, "webhook-id": "msg_2"}),
        "restamped": (body, {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) + 1)}),
        "stale": (body, signed(body, [SECRET], at=time.time() - 310)),
        "future": (body, signed(body, [SECRET], at=time.time() + 310)),
        "unsigned": (body, {k: v for k, v in headers.items() if k != "webhook-signature"}),
        "no timestamp": (body, {k: v for k, v in headers.items() if k != "webhook-timestamp"}),
        "not seconds": (body, {**headers, "webhook-timestamp": "1e9"}),
        "malformed": (body, {**headers, "webhook-signature": "v1 garbage"}),
        "v2 only": (body, {**headers, "webhook-signature": headers["webhook-signature"].replace("v1,", "v2,")}),
        "not utf-8": (b"\xff" + body, headers),
    }
    for case, (candidate, candidate_headers) in refusals.items():
        with pytest.raises(InvalidSignature) as raised:
            verify(candidate, candidate_headers, SECRET)
        assert SECRET not in str(raised.value) and headers["webhook-signature"][3:] not in str(raised.value), case
        assert raised.value.status_code == 401
    # A malformed entry next to a good one does not hide the good one.
    mixed = {**headers, "webhook-signature": "v1,!!! v1a,abc " + headers["webhook-signature"]}
    assert verify(body, mixed, SECRET)["data"] == {"n": 1}
    # The tolerance is the receiver's: tighter, or wider than the library's fixed five minutes.
    old = signed(body, [SECRET], at=time.time() - 120)
    with pytest.raises(InvalidSignature, match="more than 60 s old"):
        verify(body, old, SECRET, tolerance=60)
    older = signed(body, [SECRET], at=time.time() - 900)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body, older)
    assert verify(body, older, SECRET, tolerance=1000)["data"] == {"n": 1}
    with pytest.raises(InvalidSignature):
        verify(body, signed(body, [OTHER], at=time.time() - 900), SECRET, tolerance=1000)
    # A bad secret is the receiver's own mistake, not a forgery.
    with pytest.raises(ValueError, match="whsec_"):
        verify(body, headers, "hunter2")
    with pytest.raises(ValueError, match="not JSON"):
        verify(b"plain", signed(b"plain", [SECRET]), SECRET)


def test_during_a_rotation_every_secret_signs_and_a_receiver_holding_either_verifies(receiver: Receiver) -> None:
    old, new = SECRET, generate_secret()
    sender = WebhookSender.from_settings({"url": f"{receiver.url}/erp", "secret": old, "secrets": [new, old]})
    sender(record({"data": {"n": 1}}), SUBSCRIPTION)
    (delivery,) = receiver.deliveries
    signatures = delivery.headers["Webhook-Signature"].split(" ")
    assert len(signatures) == 2 and all(signature.startswith("v1,") for signature in signatures)
    for secret in (old, new, [generate_secret(), new]):
        assert verify(delivery.body, delivery.headers, secret)["offset"] == 7
    assert Webhook(new).verify(delivery.body, delivery.headers)["offset"] == 7
    with pytest.raises(InvalidSignature):
        verify(delivery.body, delivery.headers, generate_secret())
    # After the rotation the sender signs with the new secret only; the receiver still holding both accepts it.
    WebhookSender(f"{receiver.url}/erp", secrets=[new])(record({"data": {"n": 2}}, offset=8), SUBSCRIPTION)
    latest = receiver.deliveries[-1]
    assert " " not in latest.headers["Webhook-Signature"]
    assert verify(latest.body, latest.headers, [old, new])["offset"] == 8
    with pytest.raises(InvalidSignature):
        verify(latest.body, latest.headers, old)


def test_verify_request_reads_a_wsgi_request_and_leaves_the_body_readable() -> None:
    body = json.dumps({"data": {"n": 3}}).encode()
    environ = EnvironBuilder(method="POST", path="/hooks", data=body, headers=signed(body, [SECRET])).get_environ()
    assert verify_request(environ, SECRET) == {"data": {"n": 3}}
    assert Request(environ).get_data() == body
    forged = EnvironBuilder(method="POST", data=body, headers=signed(body, [OTHER])).get_environ()
    with pytest.raises(InvalidSignature):
        verify_request(forged, SECRET)
    huge = EnvironBuilder(method="POST", data=body, headers=signed(body, [SECRET])).get_environ()
    with pytest.raises(InvalidSignature, match="larger"):
        verify_request(huge, SECRET, max_body=10)


def test_generate_secret_makes_standard_secrets() -> None:
    secret = generate_secret()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    assert generate_secret() != secret
    with pytest.raises(ValueError):
        generate_secret(8)
