"""The kit's transport checks (hub.testing.transport) pass a provider built right and fail each kind of wrong one.

A small notify provider on :mod:`hub.http` passes every check; each deliberately broken copy below gets one thing
wrong (no timeout, unmapped errors, its own retries, a secret in a message, shared state between threads, a
session per call, a webhook check that accepts forgeries...) and the matching check must fail, naming it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest
import requests
from marshmallow import Schema, fields

from hub import hookimpl
from hub.capabilities import (
    HealthResult,
    Message,
    NotifyResult,
    Provider,
    ProviderContext,
    RecipientResult,
    WebhookEvent,
    WebhookRequest,
)
from hub.errors import PermanentError, ProviderError, SignatureError, TransientError
from hub.http import HttpClient, HttpSettings
from hub.testing import ProviderHarness
from hub.testing.transport import (
    ConnectionCountingProxy,
    Fault,
    FaultServer,
    check_concurrent_use,
    check_transport_errors,
    check_webhook_signatures,
)

SECRET = "kit-secret-token-0123456789"
SIGNING_KEY = "kit-signing-key-abcdef"
TOLERANCE = 300


class OutcomeUnknown(TransientError):
    """Stands in for a payment provider's "the request may have reached the gateway" error."""

    failover = False


class KitSettings(HttpSettings):
    url = fields.Url(required=True, require_tld=False)
    token = fields.String(required=True)
    signing_key = fields.String(load_default=SIGNING_KEY)


class GoodNotifier(Provider):
    """One POST per recipient through hub.http; a signed webhook with a timestamp."""

    type_name = "kit-good"
    capability = "notify"
    channels = ("sms",)
    settings_schema: ClassVar[type[Schema]] = KitSettings
    secret_settings = ("token", "signing_key")

    def __init__(self, name: str, settings: dict[str, Any], context: ProviderContext) -> None:
        super().__init__(name, settings, context)
        self.http = HttpClient.from_settings("the kit's endpoint", settings, headers={"X-Token": settings["token"]})

    def send(self, message: Message, index: int) -> None:
        address = message.recipients[index].address
        self.http.post(self.settings["url"], json={"id": message.id, "to": address, "text": message.text})

    @hookimpl
    def notify(self, message: Message) -> NotifyResult:
        results: list[RecipientResult] = []
        for index, recipient in enumerate(message.recipients):
            try:
                self.send(message, index)
            except ProviderError as error:
                return NotifyResult.cut_short(message, results, error)
            results.append(RecipientResult(recipient.address, "sent", f"{message.id}:{index}"))
        return NotifyResult(results)

    @hookimpl
    def health(self) -> HealthResult:
        return self.http.probe("GET", self.settings["url"])

    @hookimpl
    def handle_webhook(self, webhook: WebhookRequest) -> list[WebhookEvent]:
        self.verify(webhook)
        event = json.loads(webhook.body)
        return [WebhookEvent(event_id=event["event"], reference=event["ref"], status=event["status"])]

    def verify(self, webhook: WebhookRequest) -> None:
        timestamp = webhook.headers.get("X-Kit-Timestamp", "")
        expected = sign_body(self.settings["signing_key"], timestamp, webhook.body)
        if not hmac.compare_digest(expected, webhook.headers.get("X-Kit-Signature", "")):
            raise SignatureError("the signature does not verify")
        if abs(time.time() - float(timestamp)) > TOLERANCE:
            raise SignatureError("signed too long ago: a replay")

    @hookimpl
    def close(self) -> None:
        self.http.close()


def sign_body(key: str, timestamp: str, body: bytes) -> str:
    return hmac.new(key.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def signer(key: str = SIGNING_KEY) -> Callable[..., WebhookRequest]:
    """The service's side: a delivery event signed over the timestamp and the body."""
    body = json.dumps({"event": "evt-1", "ref": "msg-1:0", "status": "delivered", "to": "+14155550100"}).encode()

    def sign(*, timestamp: float, forged: bool) -> WebhookRequest:
        stamp = str(int(timestamp))
        signature = sign_body("some-other-key" if forged else key, stamp, body)
        headers = {"Content-Type": "application/json", "X-Kit-Timestamp": stamp, "X-Kit-Signature": signature}
        return WebhookRequest(url="https://hub.example.com/webhooks/kit", headers=headers, body=body, form={}, query={})

    return sign


@pytest.fixture
def harness(provider_harness: ProviderHarness) -> ProviderHarness:
    return provider_harness


def builder(harness: ProviderHarness, provider_class: type) -> Callable[[str, float], Any]:
    if provider_class.type_name not in harness.host.provider_types:
        harness.add_provider_classes(provider_class)
    return lambda url, timeout: harness.build(
        provider_class.type_name, {"url": f"{url}/send", "token": SECRET, "timeout": timeout}
    )


@pytest.fixture
def upstream() -> Iterator[FaultServer]:
    """A healthy service: answers 200 and keeps connections open."""
    with FaultServer(Fault(keep_alive=True)) as server:
        yield server


# ---------------------------------------------------------------------------------------------------------------
# A provider built right passes


def test_a_provider_on_hub_http_passes_every_check(harness: ProviderHarness, upstream: FaultServer) -> None:
    raised = check_transport_errors(harness, builder(harness, GoodNotifier))
    assert raised["HTTP 429 with Retry-After: 7"].retry_after == 7
    assert raised["the service down"].provider_code == "connection"
    assert raised["a server slower than the timeout"].provider_code == "timeout"
    assert raised["a connection dropped after the request was sent"].provider_code == "connection-dropped"

    results = check_concurrent_use(harness, builder(harness, GoodNotifier), upstream.url)
    assert len(results) == 24 and len(upstream.received()) == 48  # two recipients per call

    provider = builder(harness, GoodNotifier)(upstream.url, 1.0)
    events = check_webhook_signatures(harness, provider, signer(), tolerance=TOLERANCE)
    assert [event.event_id for event in events] == ["evt-1"]


def test_a_payment_provider_raising_outcome_unknown_after_sending_passes(harness: ProviderHarness) -> None:
    class Payments(GoodNotifier):
        type_name = "kit-outcome-unknown"

        def __init__(self, name: str, settings: dict[str, Any], context: ProviderContext) -> None:
            super().__init__(name, settings, context)
            self.http.sent_error = OutcomeUnknown

    raised = check_transport_errors(harness, builder(harness, Payments), sent_error=OutcomeUnknown)
    assert type(raised["a server slower than the timeout"]) is OutcomeUnknown
    assert type(raised["the service down"]) is TransientError


# ---------------------------------------------------------------------------------------------------------------
# check_transport_errors fails...


def fails(match: str) -> Any:
    return pytest.raises(AssertionError, match=match)


def test_without_a_timeout(harness: ProviderHarness) -> None:
    class NoTimeout(GoodNotifier):
        type_name = "kit-no-timeout"

        def send(self, message: Message, index: int) -> None:
            try:
                response = requests.post(self.settings["url"], json={"to": message.recipients[index].address})
            except requests.RequestException as error:
                raise TransientError(f"cannot reach the endpoint: {type(error).__name__}") from None
            error = self.http.error_for(response)
            if error:
                raise error

    with fails("slower than the timeout: took .* give every request a read timeout"):
        check_transport_errors(harness, builder(harness, NoTimeout))


def test_with_transport_errors_left_unmapped(harness: ProviderHarness) -> None:
    class Unmapped(GoodNotifier):
        type_name = "kit-unmapped"

        def send(self, message: Message, index: int) -> None:
            requests.post(self.settings["url"], json={}, timeout=self.settings["timeout"]).raise_for_status()

    with fails(r"service down .* raised ConnectionError.* must raise TransientError"):
        check_transport_errors(harness, builder(harness, Unmapped))


def test_with_5xx_mapped_to_a_permanent_error(harness: ProviderHarness) -> None:
    class FiveHundredIsPermanent(GoodNotifier):
        type_name = "kit-5xx-permanent"

        def __init__(self, name: str, settings: dict[str, Any], context: ProviderContext) -> None:
            super().__init__(name, settings, context)
            self.http.status_errors = {500: PermanentError}

    with fails("against HTTP 500: raised PermanentError"):
        check_transport_errors(harness, builder(harness, FiveHundredIsPermanent))


def test_with_retry_after_ignored(harness: ProviderHarness) -> None:
    class IgnoresRetryAfter(GoodNotifier):
        type_name = "kit-no-retry-after"

        def send(self, message: Message, index: int) -> None:
            try:
                super().send(message, index)
            except TransientError as error:
                error.retry_after = None
                raise

    with fails("HTTP 503 with Retry-After: 5: retry_after is None, expected 5"):
        check_transport_errors(harness, builder(harness, IgnoresRetryAfter))


def test_with_retry_after_read_only_as_seconds(harness: ProviderHarness) -> None:
    class SecondsOnly(GoodNotifier):
        type_name = "kit-retry-after-seconds-only"

        def send(self, message: Message, index: int) -> None:
            response = self.http.post(self.settings["url"], json={}, check=False)
            if response.status_code in (429, 503):
                value = response.headers.get("Retry-After", "")
                raise TransientError("busy", retry_after=float(value) if value.isdigit() else None)
            error = self.http.error_for(response)
            if error:
                raise error

    with fails("HTTP date 30 s ahead: retry_after is None, expected 10..31"):
        check_transport_errors(harness, builder(harness, SecondsOnly))


def test_with_its_own_retries(harness: ProviderHarness) -> None:
    class RetriesItself(GoodNotifier):
        type_name = "kit-own-retries"

        def send(self, message: Message, index: int) -> None:
            for attempt in range(3):
                try:
                    return super().send(message, index)
                except TransientError:
                    if attempt == 2:
                        raise

    with fails("more than once; do not retry inside the provider"):
        check_transport_errors(harness, builder(harness, RetriesItself))


def test_with_a_secret_in_the_message(harness: ProviderHarness) -> None:
    class Leaky(GoodNotifier):
        type_name = "kit-leaky"

        def send(self, message: Message, index: int) -> None:
            try:
                super().send(message, index)
            except ProviderError as error:
                raise TransientError(f"{error.message} (token {self.settings['token']})") from None

    with fails("the message quotes a secret setting's value"):
        check_transport_errors(harness, builder(harness, Leaky))


def test_with_the_url_in_the_message(harness: ProviderHarness) -> None:
    class QuotesUrl(GoodNotifier):
        type_name = "kit-quotes-url"

        def send(self, message: Message, index: int) -> None:
            try:
                super().send(message, index)
            except ProviderError as error:
                raise TransientError(f"{self.settings['url']}: {error.message}") from None

    with fails("the message quotes the URL"):
        check_transport_errors(harness, builder(harness, QuotesUrl))


def test_with_a_health_check_that_raises(harness: ProviderHarness) -> None:
    class HealthRaises(GoodNotifier):
        type_name = "kit-health-raises"

        @hookimpl
        def health(self) -> HealthResult:
            self.http.get(self.settings["url"])
            return HealthResult("success", "fine")

    with fails(r"health\(\) with the service down raised TransientError"):
        check_transport_errors(harness, builder(harness, HealthRaises))


def test_with_a_health_check_that_always_says_success(harness: ProviderHarness) -> None:
    class AlwaysHealthy(GoodNotifier):
        type_name = "kit-always-healthy"

        @hookimpl
        def health(self) -> HealthResult:
            return HealthResult("success", "configured")

    with fails(r"health\(\) with the service down reported 'success'"):
        check_transport_errors(harness, builder(harness, AlwaysHealthy))
    # The same provider passes when it says its health check works offline.
    check_transport_errors(harness, builder(harness, AlwaysHealthy), health_contacts_server=False)


def test_when_build_ignores_the_url(harness: ProviderHarness) -> None:
    from hub.testing.servers import refused_url

    elsewhere = refused_url()
    harness.add_provider_classes(GoodNotifier)

    def build(url: str, timeout: float) -> Any:
        return harness.build("kit-good", {"url": elsewhere, "token": SECRET, "timeout": timeout})

    with fails("received no request; build the provider so that it talks to that URL"):
        check_transport_errors(harness, build)


def test_for_a_payment_provider_that_fails_over_after_sending(harness: ProviderHarness) -> None:
    with fails("slower than the timeout: raised TransientError.* must raise OutcomeUnknown"):
        check_transport_errors(harness, builder(harness, GoodNotifier), sent_error=OutcomeUnknown)


def test_for_a_payment_provider_that_says_unknown_when_nothing_was_sent(harness: ProviderHarness) -> None:
    class AlwaysUnknown(GoodNotifier):
        type_name = "kit-always-unknown"

        def send(self, message: Message, index: int) -> None:
            try:
                super().send(message, index)
            except TransientError as error:
                raise OutcomeUnknown(error.message) from None

    with fails("the connection was refused: nothing was sent, so raise TransientError"):
        check_transport_errors(harness, builder(harness, AlwaysUnknown), sent_error=OutcomeUnknown)


def test_for_a_provider_that_hides_failures_as_retry(harness: ProviderHarness) -> None:
    class ReturnsRetry(GoodNotifier):
        type_name = "kit-returns-retry"

        @hookimpl
        def notify(self, message: Message) -> NotifyResult:
            try:
                return super().notify(message)
            except TransientError as error:
                return NotifyResult(
                    [RecipientResult(r.address, "retry", error=error.message) for r in message.recipients]
                )

    with fails(r"returned \['retry', 'retry'\] instead of raising TransientError"):
        check_transport_errors(harness, builder(harness, ReturnsRetry))


# ---------------------------------------------------------------------------------------------------------------
# check_concurrent_use fails...


def test_with_state_shared_between_threads(harness: ProviderHarness, upstream: FaultServer) -> None:
    class SharedState(GoodNotifier):
        type_name = "kit-shared-state"

        @hookimpl
        def notify(self, message: Message) -> NotifyResult:
            self.current = message  # one attribute for every thread: results cross between calls
            super().notify(message)
            time.sleep(0.01)
            current = self.current
            return NotifyResult(
                [RecipientResult(r.address, "sent", f"{current.id}:{i}") for i, r in enumerate(current.recipients)]
            )

    with fails("results crossed between threads|returned the same provider_message_id"):
        check_concurrent_use(harness, builder(harness, SharedState), upstream.url)


def test_with_a_connection_per_call(harness: ProviderHarness, upstream: FaultServer) -> None:
    class NoPool(GoodNotifier):
        type_name = "kit-no-pool"

        def send(self, message: Message, index: int) -> None:
            with requests.Session() as session:
                session.post(self.settings["url"], json={"id": message.id, "i": index}, timeout=5).raise_for_status()

    with fails(r"24 calls from 8 threads opened \d+ connections: reuse them"):
        check_concurrent_use(harness, builder(harness, NoPool), upstream.url)
    # Told that the provider does not pool, the check still verifies the results.
    check_concurrent_use(harness, builder(harness, NoPool), upstream.url, pools_connections=False)


def test_with_a_provider_that_is_not_thread_safe(harness: ProviderHarness, upstream: FaultServer) -> None:
    class OneAtATime(GoodNotifier):
        type_name = "kit-one-at-a-time"
        busy = threading.Lock()

        @hookimpl
        def notify(self, message: Message) -> NotifyResult:
            if not self.busy.acquire(blocking=False):
                raise RuntimeError("already sending")
            try:
                time.sleep(0.02)
                return super().notify(message)
            finally:
                self.busy.release()

    with fails(r"of 24 concurrent calls raised: call \d+: RuntimeError\('already sending'\)"):
        check_concurrent_use(harness, builder(harness, OneAtATime), upstream.url)


def test_with_recipients_refused(harness: ProviderHarness) -> None:
    with FaultServer(Fault(status=400, keep_alive=True)) as refusing, fails("concurrent calls raised"):
        check_concurrent_use(harness, builder(harness, GoodNotifier), refusing.url)


# ---------------------------------------------------------------------------------------------------------------
# check_webhook_signatures fails...


def webhook_provider(harness: ProviderHarness, provider_class: type) -> Any:
    return builder(harness, provider_class)("http://127.0.0.1:9", 1.0)


def test_when_forgeries_are_accepted(harness: ProviderHarness) -> None:
    class TrustsEveryone(GoodNotifier):
        type_name = "kit-trusts-everyone"

        def verify(self, webhook: WebhookRequest) -> None:
            return None

    with fails("signed with another secret .* returned"):
        check_webhook_signatures(harness, webhook_provider(harness, TrustsEveryone), signer(), tolerance=TOLERANCE)


def test_when_the_timestamp_is_not_checked(harness: ProviderHarness) -> None:
    class NoReplayWindow(GoodNotifier):
        type_name = "kit-no-replay-window"

        def verify(self, webhook: WebhookRequest) -> None:
            timestamp = webhook.headers["X-Kit-Timestamp"]
            if sign_body(self.settings["signing_key"], timestamp, webhook.body) != webhook.headers["X-Kit-Signature"]:
                raise SignatureError("bad signature")

    with fails(r"signed 420 s ago \(stale\).* returned"):
        check_webhook_signatures(harness, webhook_provider(harness, NoReplayWindow), signer(), tolerance=TOLERANCE)


def test_when_the_tolerance_is_too_strict(harness: ProviderHarness) -> None:
    class TooStrict(GoodNotifier):
        type_name = "kit-too-strict"

        def verify(self, webhook: WebhookRequest) -> None:
            super().verify(webhook)
            if time.time() - float(webhook.headers["X-Kit-Timestamp"]) > 60:
                raise SignatureError("older than a minute")

    with fails(r"signed 150 s ago \(within the 300 s tolerance\) was refused"):
        check_webhook_signatures(harness, webhook_provider(harness, TooStrict), signer(), tolerance=TOLERANCE)


def test_when_only_part_of_the_payload_is_signed(harness: ProviderHarness) -> None:
    class SignsTheEventIdOnly(GoodNotifier):
        type_name = "kit-partial-signature"

        def verify(self, webhook: WebhookRequest) -> None:
            event_id = json.loads(webhook.body)["event"].encode()
            given = webhook.headers["X-Kit-Signature"]
            if not hmac.compare_digest(given, hmac.new(SIGNING_KEY.encode(), event_id, "sha256").hexdigest()):
                raise SignatureError("bad signature")

    def sign(*, timestamp: float, forged: bool) -> WebhookRequest:
        request = signer()(timestamp=timestamp, forged=forged)
        key = "other" if forged else SIGNING_KEY
        request.headers["X-Kit-Signature"] = hmac.new(key.encode(), b"evt-1", "sha256").hexdigest()
        return request

    with fails(r"with its JSON field 'ref' changed after signing: returned"):
        check_webhook_signatures(harness, webhook_provider(harness, SignsTheEventIdOnly), sign)


def test_when_event_ids_change_on_a_replay(harness: ProviderHarness) -> None:
    class FreshIds(GoodNotifier):
        type_name = "kit-fresh-ids"

        @hookimpl
        def handle_webhook(self, webhook: WebhookRequest) -> list[WebhookEvent]:
            self.verify(webhook)
            return [WebhookEvent(event_id=uuid.uuid4().hex, reference="msg-1:0", status="delivered")]

    with fails("gave other event ids the second time"):
        check_webhook_signatures(harness, webhook_provider(harness, FreshIds), signer(), tolerance=TOLERANCE)


def test_when_the_refusal_quotes_the_secret(harness: ProviderHarness) -> None:
    class ExplainsTooMuch(GoodNotifier):
        type_name = "kit-explains-too-much"

        def verify(self, webhook: WebhookRequest) -> None:
            try:
                super().verify(webhook)
            except SignatureError:
                raise SignatureError(f"expected a signature made with {self.settings['signing_key']}") from None

    with fails("the message quotes a secret setting's value"):
        check_webhook_signatures(harness, webhook_provider(harness, ExplainsTooMuch), signer(), tolerance=TOLERANCE)


def test_when_the_signer_produces_nothing_to_accept(harness: ProviderHarness) -> None:
    with fails("signed with the configured secret was refused with SignatureError"):
        check_webhook_signatures(
            harness, webhook_provider(harness, GoodNotifier), signer(key="not-the-configured-key"), tolerance=TOLERANCE
        )


# ---------------------------------------------------------------------------------------------------------------
# The servers


def test_the_fault_server_answers_as_told_and_records_requests() -> None:
    with FaultServer(
        Fault(status=503, headers={"Retry-After": "3"}, body=b"busy", content_type="text/plain")
    ) as server:
        response = requests.post(f"{server.url}/a/b?c=d", data=b"payload", timeout=5)
        assert (response.status_code, response.headers["Retry-After"], response.text) == (503, "3", "busy")
        [received] = server.received()
        assert (received.method, received.path, received.body) == ("POST", "/a/b?c=d", b"payload")
        server.reset(Fault(drop=True))
        with pytest.raises(requests.ConnectionError):
            requests.get(server.url, timeout=5)
        server.reset(Fault(delay=5))
        started = time.monotonic()
        with pytest.raises(requests.ReadTimeout):
            requests.get(server.url, timeout=0.2)
    assert time.monotonic() - started < 2  # stopping woke the delayed answer up


def test_the_proxy_counts_connections_and_keeps_them_open() -> None:
    with FaultServer() as upstream, ConnectionCountingProxy(f"{upstream.url}/base") as proxy:
        assert proxy.url().endswith("/base") and str(proxy.port) in proxy.url()
        with requests.Session() as session:
            for _ in range(3):
                assert session.get(proxy.url(), timeout=5).status_code == 200
        requests.get(proxy.url(), timeout=5)
        assert (proxy.connections, proxy.requests) == (2, 4)  # the upstream closed every one of its own
        assert len(upstream.received()) == 4
