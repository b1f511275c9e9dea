"""hub-smtp against a real SMTP server (aiosmtpd with STARTTLS, AUTH and a self-signed certificate).

The server runs in this process (``hub.testing.servers.SmtpServer``); the subclass below adds what these
tests observe or provoke: which client connection delivered each message, a recipient refused at RCPT, a
server that closes the connection after a few messages, NOOPs, and an implicit-TLS (port 465 style) mode.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hub_smtp
import pytest

from hub.capabilities import Message, Recipient
from hub.errors import ConfigError, ConfigurationError, TransientError
from hub.testing import ProviderHarness
from hub.testing.contracts import DEFAULT_ADDRESSES, check_provider_class, run_contract
from hub.testing.rest import RestHub, rest_hub
from hub.testing.servers import SmtpServer, free_port, make_self_signed_certificate

PASSWORD = "s3cret-pa55"


class RecordingSmtpServer(SmtpServer):
    """:class:`SmtpServer` that also records the connection of every message and can misbehave on purpose."""

    def __init__(self, *, implicit_tls: bool = False, **options: Any) -> None:
        super().__init__(**options)
        self.implicit_tls = implicit_tls
        self.tls_dir = options.get("cert_dir")
        #: address -> the reply refusing it at RCPT ("550 ..." or "450 ...").
        self.refuse: dict[str, str] = {}
        #: Close a connection (421) at the next MAIL once it has delivered this many messages...
        self.drop_after: int | None = None
        #: ...or once the server as a whole has let this many through MAIL (counted there, so that
        #: concurrent connections cannot slip more through between MAIL and DATA).
        self.drop_all_after: int | None = None
        self.mail_accepted = 0
        #: Seconds to wait before answering each message's final dot (a remote relay's round trip)...
        self.data_delay = 0.0
        #: ...and the most messages waiting so at once: how many connections really sent in parallel.
        self.inflight = self.peak_inflight = 0
        #: Change the password when a connection is closed that way: the account's credentials were revoked.
        self.revoke_on_drop = False
        self.initial_password = self.password
        #: The client's (host, port) for each accepted message: one value per connection.
        self.peers: list[tuple[str, int]] = []
        self.noops = 0
        self._delivered: Counter[tuple[str, int]] = Counter()
        self._events = threading.Lock()

    @property
    def connections(self) -> int:
        return len(set(self.peers))

    def recipients(self) -> list[str]:
        return [address for received in self.messages for address in received.rcpt_tos]

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:  # noqa: N802
        if (self.drop_after is not None and self._delivered[session.peer] >= self.drop_after) or (
            self.drop_all_after is not None and self.mail_accepted >= self.drop_all_after
        ):
            server.loop.call_soon(server.transport.close)  # after the reply is written
            if self.revoke_on_drop:
                self.password = "revoked-" + self.initial_password
            return "421 4.7.0 Too many messages on this connection, closing"
        self.mail_accepted += 1
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:  # noqa: N802
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_NOOP(self, server: Any, session: Any, envelope: Any, arg: str) -> str:  # noqa: N802
        with self._events:
            self.noops += 1
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.data_delay:
            # asyncio.sleep: the event loop serves the other connections meanwhile, as a relay would.
            self.inflight += 1
            self.peak_inflight = max(self.peak_inflight, self.inflight)
            try:
                await asyncio.sleep(self.data_delay)
            finally:
                self.inflight -= 1
        with self._events:
            self.peers.append(session.peer)
            self._delivered[session.peer] += 1
        return await super().handle_DATA(server, session, envelope)

    def reset(self) -> None:
        super().reset()
        with self._events:
            self.refuse.clear()
            self.drop_after = self.drop_all_after = None
            self.mail_accepted = 0
            self.data_delay = 0.0
            self.inflight = self.peak_inflight = 0
            self.revoke_on_drop = False
            self.password = self.initial_password
            self.peers.clear()
            self.noops = 0
            self._delivered.clear()

    def start(self) -> RecordingSmtpServer:
        if not self.implicit_tls:
            super().start()
            return self
        # SmtpServer offers STARTTLS only; implicit TLS is aiosmtpd's ssl_context (TLS from the first byte).
        from aiosmtpd.controller import Controller

        if self.tls_dir is None:
            raise ValueError("implicit_tls needs cert_dir")
        self.cert_path, self.key_path = make_self_signed_certificate(self.tls_dir)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_path, self.key_path)
        self._controller = Controller(
            self,
            hostname=self.host,
            port=self.port,
            ssl_context=context,
            authenticator=self._authenticate,
            auth_required=True,
            # aiosmtpd counts only STARTTLS as TLS for this check; here every byte is encrypted anyway.
            auth_require_tls=False,
        )
        self._controller.start()
        return self


@pytest.fixture(scope="session")
def smtp_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecordingSmtpServer]:
    server = RecordingSmtpServer(password=PASSWORD, cert_dir=tmp_path_factory.mktemp("smtp-cert"))
    with server:
        yield server


@pytest.fixture
def smtp(smtp_session: RecordingSmtpServer) -> RecordingSmtpServer:
    smtp_session.reset()
    return smtp_session


@pytest.fixture
def harness(provider_harness: ProviderHarness) -> ProviderHarness:
    provider_harness.add_plugin(hub_smtp, "smtp")
    return provider_harness


def settings_for(server: SmtpServer, **overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "username": server.username,
        "password": server.password,
        "from_address": "alerts@hub.example.com",
        "from_name": "Inventory Hub",
        "ca_file": str(server.cert_path),
        "timeout": 5,
    }
    settings.update(overrides)
    return settings


def message(addresses: list[str], message_id: str = "rec-1-email-0", **fields: Any) -> Message:
    values: dict[str, Any] = {"text": "Stock is low.\n", "subject": "Low stock"}
    values.update(fields)
    return Message(
        id=message_id,
        tenant="demo",
        channel="email",
        recipients=[Recipient(address) if isinstance(address, str) else address for address in addresses],
        **values,
    )


def text_of(part: Any) -> str:
    # The wire form has CRLF line ends, which a decoded part keeps.
    return part.get_content().replace("\r\n", "\n")


def send(harness: ProviderHarness, provider: Any, msg: Message) -> Any:
    return harness.call(provider, "notify", message=msg)


# --- the conformance kit ---------------------------------------------------------------------------


def test_smtp_meets_the_notify_contract(harness: ProviderHarness, smtp: RecordingSmtpServer) -> None:
    check_provider_class(hub_smtp.SmtpProvider)
    provider = harness.build("smtp", settings_for(smtp))
    results = run_contract(harness, provider)
    assert results["health"].ok, results["health"].message
    assert sorted(smtp.recipients()) == sorted(DEFAULT_ADDRESSES["email"])
    assert all(received.login == smtp.username for received in smtp.messages)


# --- delivery --------------------------------------------------------------------------------------


def test_message_id_names_the_recipient_in_the_notification_so_a_resumed_batch_keeps_it(
    harness: ProviderHarness, smtp: RecordingSmtpServer
) -> None:
    provider = harness.build("smtp", settings_for(smtp))
    addresses = [f"r{n}@shop.example" for n in range(4)]

    def batch(first: int) -> Message:  # the core's batch: its id names the first recipient it carries
        recipients = [Recipient(address, index=index) for index, address in enumerate(addresses) if index >= first]
        return Message(
            id=f"ntf_7-email-{first}", tenant="demo", channel="email", recipients=recipients, text="t",
            notification_id="ntf_7", batch_index=0,
        )

    whole = send(harness, provider, batch(0))
    resumed = send(harness, provider, batch(2))  # after a crash, two of them went out already
    # By recipient: a batch spread over the pool delivers in no fixed order.
    received = [(m.rcpt_tos[0], m.message["Message-ID"]) for m in smtp.messages]
    first, again = dict(received[:4]), dict(received[4:])
    assert again == {address: first[address] for address in addresses[2:]}
    assert again == {addresses[n]: f"<ntf_7-email.{n}@hub.example.com>" for n in (2, 3)}
    assert [r.provider_message_id for r in resumed.results] == [r.provider_message_id for r in whole.results][2:]


def test_message_arrives_with_its_content_headers_and_html_alternative(
    harness: ProviderHarness, smtp: RecordingSmtpServer
) -> None:
    provider = harness.build("smtp", settings_for(smtp))
    subject = "Stock bas — Grüße ✓ 在庫"
    msg = message(
        [Recipient("buyer@shop.example", name="Zoë Buyer, Jr."), "ops@shop.example"],
        message_id="rec-42-email-0",
        subject=subject,
        text="Widget ünits left: 5\n",
        html="<p>Widget <b>ünits</b> left: 5</p>",
        priority="high",
    )
    result = send(harness, provider, msg)

    assert [r.status for r in result.results] == ["sent", "sent"]
    assert [r.provider_message_id for r in result.results] == [
        "<rec-42-email-0.0@hub.example.com>",
        "<rec-42-email-0.1@hub.example.com>",
    ]
    assert [received.rcpt_tos for received in smtp.messages] == [["buyer@shop.example"], ["ops@shop.example"]]
    first = smtp.messages[0]
    assert first.mail_from == "alerts@hub.example.com"
    parsed = first.message
    assert parsed["Subject"] == subject
    assert parsed["From"].addresses[0].display_name == "Inventory Hub"
    assert parsed["From"].addresses[0].addr_spec == "alerts@hub.example.com"
    to = parsed["To"].addresses
    assert len(to) == 1 and to[0].addr_spec == "buyer@shop.example" and to[0].display_name == "Zoë Buyer, Jr."
    assert parsed["Message-ID"] == "<rec-42-email-0.0@hub.example.com>"
    assert parsed["X-Hub-Message-Id"] == "rec-42-email-0"
    assert parsed["Date"].datetime is not None
    assert parsed["Importance"] == "high"
    assert parsed.get_content_type() == "multipart/alternative"
    assert text_of(parsed.get_body(("plain",))) == "Widget ünits left: 5\n"
    assert "<b>ünits</b>" in parsed.get_body(("html",)).get_content()
    # 7-bit clean on the wire: no 8BITMIME needed from the server.
    assert all(byte < 128 for byte in first.raw)
    second = smtp.messages[1].message
    assert second["To"].addresses[0].addr_spec == "ops@shop.example"
    assert second["Message-ID"] == "<rec-42-email-0.1@hub.example.com>"


def test_text_only_message_is_a_single_part(harness: ProviderHarness, smtp: RecordingSmtpServer) -> None:
    provider = harness.build("smtp", settings_for(smtp, from_name=None))
    send(harness, provider, message(["a@shop.example"], text="Plain only\n"))
    parsed = smtp.messages[0].message
    assert parsed.get_content_type() == "text/plain"
    assert text_of(parsed) == "Plain only\n"
    assert str(parsed["From"]) == "alerts@hub.example.com"


def test_dots_line_ends_and_international_addresses_survive(
    harness: ProviderHarness, smtp: RecordingSmtpServer
) -> None:
    provider = harness.build("smtp", settings_for(smtp))
    text = "First line\n.a line starting with a dot\n..two dots\n.\nend\n"
    html = "<p>bare\rCR and\nLF</p>\n.<p>dot</p>"
    addresses = ["jörg@shop.example", "info@bücher.example", "plain@shop.example"]
    result = send(harness, provider, message(addresses, text=text, html=html))
    assert [r.status for r in result.results] == ["sent"] * 3
    # A non-ASCII local part travels with SMTPUTF8; a non-ASCII domain as its IDNA (punycode) form.
    assert sorted(smtp.recipients()) == sorted(["jörg@shop.example", "info@xn--bcher-kva.example", "plain@shop.example"])
    parsed = next(m.message for m in smtp.messages if m.rcpt_tos == ["plain@shop.example"])  # in no fixed order
    assert text_of(parsed.get_body(("plain",))) == text
    assert text_of(parsed.get_body(("html",))) == "<p>bare\nCR and\nLF</p>\n.<p>dot</p>\n"


def test_a_retried_send_carries_the_same_message_ids(harness: ProviderHarness, smtp: RecordingSmtpServer) -> None:
    provider = harness.build("smtp", settings_for(smtp))
    msg = message(["a@shop.example", "b@shop.example"], message_id="rec-7-email-0")
    first = send(harness, provider, msg)
    again = send(harness, provider, msg)
    assert [r.provider_message_id for r in first.results] == [r.provider_message_id for r in again.results]
    ids = [received.message["Message-ID"] for received in smtp.messages]
    assert ids[:2] == ids[2:]
    # An id that is not dot-atom text still gives a valid, stable Message-ID.
    odd = send(harness, provider, message(["a@shop.example"], message_id="rec 7/email:0"))
    assert (
        odd.results[0].provider_message_id
        == send(harness, provider, message(["a@shop.example"], message_id="rec 7/email:0"))
        .results[0]
        .provider_message_id
    )
    assert " " not in odd.results[0].provider_message_id


def test_a_pool_of_one_sends_a_bulk_batch_over_one_connection_reused_across_calls(
    harness: ProviderHarness, smtp: RecordingSmtpServer
) -> None:
    provider = harness.build("smtp", settings_for(smtp, max_connections=1))
    addresses = [f"customer{n}@shop.example" for n in range(250)]
    result = send(harness, provider, message(addresses[:200], message_id="rec-bulk-email-0"))
    assert [r.status for r in result.results] == ["sent"] * 200
    assert [r.address for r in result.results] == addresses[:200]
    send(harness, provider, message(addresses[200:], message_id="rec-bulk-email-200"))

    assert sorted(smtp.recipients()) == sorted(addresses)  # every one, exactly once
    assert smtp.connections == 1
    assert len({received.message["Message-ID"] for received in smtp.messages}) == 250



def test_a_bulk_batch_is_spread_over_the_pool_with_exact_results(
    harness: ProviderHarness, smtp: RecordingSmtpServer
) -> None:
    smtp.data_delay = 0.05  # a remote relay: one connection alone would take 24 x 50 ms
    provider = harness.build("smtp", settings_for(smtp, max_connections=4))
    addresses = [f"customer{n}@shop.example" for n in range(24)]
    result = send(harness, provider, message(addresses, message_id="rec-bulk-email-0"))

    assert [(r.address, r.status) for r in result.results] == [(a, "sent") for a in addresses]
    assert sorted(smtp.recipients()) == sorted(addresses)  # every one, exactly once
    assert smtp.peak_inflight == 4 and smtp.connections == 4  # the whole pool sent at once
    # Each result carries the Message-ID its own recipient received, whichever connection sent it.
    received = {m.rcpt_tos[0]: m.message["Message-ID"] for m in smtp.messages}
    assert {r.address: r.provider_message_id for r in result.results} == received
    assert len(set(received.values())) == 24
    # The next batch reuses the pooled connections.
    send(harness, provider, message([f"more{n}@shop.example" for n in range(8)], message_id="rec-bulk-email-24"))
    assert smtp.connections == 4 and len(smtp.messages) == 32
    # close() ends the batch threads and quits the connections; the provider may be used again after it.
    harness.call(provider, "close")
    assert provider.pool._idle == [] and provider._executor is None
    again = send(harness, provider, message([f"late{n}@shop.example" for n in range(4)], message_id="rec-late-email-0"))
    assert [r.status for r in again.results] == ["sent"] * 4


def test_refusals_and_drops_on_one_connection_stay_with_their_recipient(
    harness: ProviderHarness, smtp: RecordingSmtpServer
) -> None:
    smtp.data_delay = 0.02
    smtp.drop_after = 3  # every connection is closed (421) after its third message, and reopened
    smtp.refuse["nobody@shop.example"] = "550 5.1.1 <nobody@shop.example>: User unknown"
    smtp.refuse["busy@shop.example"] = "450 4.2.1 Mailbox busy, try later"
    provider = harness.build("smtp", settings_for(smtp, max_connections=4))
    addresses = [f"r{n}@shop.example" for n in range(16)]
    addresses[5], addresses[11] = "nobody@shop.example", "busy@shop.example"
    result = send(harness, provider, message(addresses))

    expected = ["sent"] * 16
    expected[5], expected[11] = "failed", "retry"
    assert [r.address for r in result.results] == addresses
    assert [r.status for r in result.results] == expected
    assert result.results[5].error.startswith("550 5.1.1") and result.results[11].error.startswith("450 4.2.1")
    delivered = [a for a in addresses if a not in ("nobody@shop.example", "busy@shop.example")]
    assert sorted(smtp.recipients()) == sorted(delivered)  # each exactly once despite the reconnections
    assert smtp.connections >= 5  # 14 messages, at most 3 per connection


def test_a_batch_cut_short_on_every_connection_returns_exactly_the_unsent_as_retry(
    harness: ProviderHarness, smtp: RecordingSmtpServer
) -> None:
    smtp.data_delay = 0.02
    smtp.drop_all_after = 5  # five messages get through MAIL, then every connection is closed there
    provider = harness.build("smtp", settings_for(smtp, max_connections=4))
    addresses = [f"r{n}@shop.example" for n in range(12)]
    result = send(harness, provider, message(addresses))

    sent = {r.address for r in result.results if r.status == "sent"}
    assert sent == set(smtp.recipients()) and len(sent) == 5
    retry = [r for r in result.results if r.status != "sent"]
    assert len(retry) == 7 and all(r.status == "retry" and "421" in r.error for r in retry)
    assert [r.address for r in result.results] == addresses


def test_extra_connections_that_cannot_log_in_leave_the_batch_to_the_one_that_can(
    harness: ProviderHarness, smtp: RecordingSmtpServer
) -> None:
    provider = harness.build("smtp", settings_for(smtp, max_connections=4))
    send(harness, provider, message(["first@shop.example"]))  # one connection, logged in and pooled
    smtp.password = "changed-" + PASSWORD  # new logins fail from now on
    smtp.data_delay = 0.02
    addresses = [f"r{n}@shop.example" for n in range(10)]
    result = send(harness, provider, message(addresses, message_id="rec-2-email-0"))
    assert [r.status for r in result.results] == ["sent"] * 10
    assert smtp.recipients() == ["first@shop.example", *addresses] and smtp.connections == 1
    assert smtp.failed_logins >= 1  # the extra connections were tried


def test_extra_connections_give_way_to_a_send_waiting_for_the_pool(
    harness: ProviderHarness, smtp: RecordingSmtpServer
) -> None:
    smtp.data_delay = 0.05
    provider = harness.build("smtp", settings_for(smtp, max_connections=2))
    finished: dict[str, float] = {}

    def bulk() -> None:
        send(harness, provider, message([f"bulk{n}@shop.example" for n in range(40)], message_id="rec-bulk-email-0"))
        finished["bulk"] = time.monotonic()

    thread = threading.Thread(target=bulk)
    thread.start()
    deadline = time.monotonic() + 10
    while smtp.peak_inflight < 2 and time.monotonic() < deadline:  # both connections busy with the bulk batch
        time.sleep(0.01)
    assert smtp.peak_inflight == 2
    result = send(harness, provider, message(["urgent@shop.example"], message_id="rec-urgent-email-0"))
    finished["urgent"] = time.monotonic()
    thread.join(timeout=30)
    # The extra connection left the bulk batch after its current message: the urgent send did not wait for
    # the 40-message batch to end, and the batch still finished on its first connection.
    assert result.results[0].status == "sent" and finished["urgent"] < finished["bulk"]
    assert sorted(smtp.recipients()) == sorted(["urgent@shop.example", *(f"bulk{n}@shop.example" for n in range(40))])


def test_concurrent_sends_share_a_bounded_pool(harness: ProviderHarness, smtp: RecordingSmtpServer) -> None:
    provider = harness.build("smtp", settings_for(smtp, max_connections=2))
    calls = [
        {"message": message([f"t{number}-{n}@shop.example" for n in range(10)], message_id=f"rec-t{number}-email-0")}
        for number in range(6)
    ]
    results = harness.call_concurrently(provider, "notify", calls)
    assert all(r.status == "sent" for result in results for r in result.results)
    assert len(smtp.recipients()) == 60
    assert 1 <= smtp.connections <= 2


def test_an_idle_connection_is_checked_with_noop_and_reused(
    harness: ProviderHarness, smtp: RecordingSmtpServer
) -> None:
    provider = harness.build("smtp", settings_for(smtp, reuse_idle_seconds=0))
    send(harness, provider, message(["a@shop.example"]))
    send(harness, provider, message(["b@shop.example"]))
    assert smtp.noops >= 1
    assert smtp.connections == 1


# --- per-recipient outcomes ------------------------------------------------------------------------


def test_a_refused_recipient_fails_and_the_others_are_delivered(
    harness: ProviderHarness, smtp: RecordingSmtpServer
) -> None:
    smtp.refuse["nobody@shop.example"] = "550 5.1.1 <nobody@shop.example>: Recipient address rejected: User unknown"
    provider = harness.build("smtp", settings_for(smtp, max_connections=1))
    addresses = ["a@shop.example", "nobody@shop.example", "c@shop.example"]
    result = send(harness, provider, message(addresses))

    assert [r.status for r in result.results] == ["sent", "failed", "sent"]
    refused = result.results[1]
    assert refused.error.startswith("550 5.1.1") and "User unknown" in refused.error
    assert refused.provider_message_id is None
    assert smtp.recipients() == ["a@shop.example", "c@shop.example"]
    assert smtp.connections == 1  # the refusal did not cost a connection


def test_a_temporary_refusal_is_handed_back_as_retry(harness: ProviderHarness, smtp: RecordingSmtpServer) -> None:
    smtp.refuse["busy@shop.example"] = "450 4.2.1 Mailbox busy, try later"
    provider = harness.build("smtp", settings_for(smtp))
    addresses = ["a@shop.example", "busy@shop.example", "c@shop.example"]
    result = send(harness, provider, message(addresses))
    # Not delivered and "try again later": the core gives it to the next provider or a later attempt.
    assert [r.status for r in result.results] == ["sent", "retry", "sent"]
    assert result.results[1].error.startswith("450 4.2.1") and result.results[1].provider_message_id is None
    assert sorted(smtp.recipients()) == ["a@shop.example", "c@shop.example"]

    # Nothing delivered and a retry may help: the whole batch is a TransientError (retried, then failed over).
    with pytest.raises(TransientError, match="450"):
        send(harness, provider, message(["busy@shop.example"]))


# --- errors ----------------------------------------------------------------------------------------


def test_a_wrong_password_is_a_configuration_error(harness: ProviderHarness, smtp: RecordingSmtpServer) -> None:
    wrong = "not-the-password-42"
    provider = harness.build("smtp", settings_for(smtp, password=wrong))
    with pytest.raises(ConfigurationError) as raised:
        send(harness, provider, message(["a@shop.example"]))
    assert "535" in raised.value.message and wrong not in str(raised.value)
    assert raised.value.provider_code == "535"
    health = harness.call(provider, "health")
    assert health.status == "error" and "535" in health.message and wrong not in health.message
    assert smtp.messages == [] and smtp.failed_logins >= 1


def test_a_stopped_server_is_a_transient_error(harness: ProviderHarness, tmp_path: Path) -> None:
    server = RecordingSmtpServer(password=PASSWORD, cert_dir=tmp_path)
    with server:
        provider = harness.build("smtp", settings_for(server))
        assert send(harness, provider, message(["a@shop.example"])).results[0].status == "sent"
    # The pooled connection was closed by the server and nothing listens any more.
    with pytest.raises(TransientError, match=f"127.0.0.1:{server.port}"):
        send(harness, provider, message(["b@shop.example"]))
    health = harness.call(provider, "health")
    assert health.status == "error" and str(server.port) in health.message


def test_nothing_listening_is_a_transient_error(harness: ProviderHarness, smtp: RecordingSmtpServer) -> None:
    provider = harness.build("smtp", settings_for(smtp, port=free_port()))
    with pytest.raises(TransientError):
        send(harness, provider, message(["a@shop.example"]))


def test_a_dropped_connection_is_reopened_and_the_batch_continues(
    harness: ProviderHarness, smtp: RecordingSmtpServer
) -> None:
    smtp.drop_after = 4
    provider = harness.build("smtp", settings_for(smtp, max_connections=1))
    addresses = [f"r{n}@shop.example" for n in range(10)]
    result = send(harness, provider, message(addresses))
    assert [r.status for r in result.results] == ["sent"] * 10
    assert smtp.recipients() == addresses  # in order, each exactly once
    assert smtp.connections == 3  # 4 + 4 + 2


def test_a_connection_dropped_before_anything_was_sent_is_transient(
    harness: ProviderHarness, smtp: RecordingSmtpServer
) -> None:
    smtp.drop_after = 0  # every connection is closed at its first MAIL
    provider = harness.build("smtp", settings_for(smtp))
    with pytest.raises(TransientError, match="421"):
        send(harness, provider, message(["a@shop.example", "b@shop.example"]))
    assert smtp.messages == []


def test_a_batch_cut_short_after_some_were_sent_returns_the_rest_as_retry(
    harness: ProviderHarness, smtp: RecordingSmtpServer
) -> None:
    smtp.drop_all_after = 2  # two messages get through; then every connection is closed at MAIL
    provider = harness.build("smtp", settings_for(smtp, max_connections=1))
    addresses = [f"r{n}@shop.example" for n in range(5)]
    result = send(harness, provider, message(addresses))
    # Something was delivered, so no TransientError (a retry would send "r0" twice): after one reconnection
    # that got nowhere, the rest are handed back for the next provider.
    assert [r.status for r in result.results] == ["sent", "sent", "retry", "retry", "retry"]
    assert all("421" in r.error and r.provider_message_id is None for r in result.results[2:])
    assert smtp.recipients() == addresses[:2] and len(set(smtp.peers)) == 1

    # The core sends only the "retry" recipients again, in a message of their own.
    smtp.drop_all_after = None
    rest = send(harness, provider, message(addresses[2:], message_id="rec-1-email-2"))
    assert [r.status for r in rest.results] == ["sent"] * 3
    assert smtp.recipients() == addresses  # each exactly once


def test_a_login_refused_on_reconnecting_part_way_returns_the_rest_as_retry(
    harness: ProviderHarness, smtp: RecordingSmtpServer
) -> None:
    smtp.drop_after, smtp.revoke_on_drop = 2, True  # the connection closes and the password stops working
    provider = harness.build("smtp", settings_for(smtp, max_connections=1))
    addresses = [f"r{n}@shop.example" for n in range(4)]
    result = send(harness, provider, message(addresses))
    assert [r.status for r in result.results] == ["sent", "sent", "retry", "retry"]
    assert all("refused the login" in r.error and "535" in r.error for r in result.results[2:])
    assert PASSWORD not in result.results[2].error
    assert smtp.recipients() == addresses[:2]
    # The next batch finds nothing sent: the ConfigurationError itself, so the core fails over.
    with pytest.raises(ConfigurationError, match="535"):
        send(harness, provider, message(addresses[2:], message_id="rec-1-email-2"))


def test_an_untrusted_certificate_is_a_configuration_error(harness: ProviderHarness, smtp: RecordingSmtpServer) -> None:
    provider = harness.build("smtp", settings_for(smtp, ca_file=None))
    with pytest.raises(ConfigurationError, match="certificate"):
        send(harness, provider, message(["a@shop.example"]))
    relaxed = harness.build("smtp", settings_for(smtp, ca_file=None, verify_tls=False))
    assert send(harness, relaxed, message(["a@shop.example"])).results[0].status == "sent"


def test_starttls_required_but_not_offered_and_a_plain_relay(harness: ProviderHarness) -> None:
    with RecordingSmtpServer(starttls=False, require_auth=False) as relay:
        strict = harness.build("smtp", {"host": relay.host, "port": relay.port, "from_address": "hub@hub.example.com"})
        with pytest.raises(ConfigurationError, match="STARTTLS"):
            send(harness, strict, message(["a@shop.example"]))
        assert harness.call(strict, "health").status == "error"

        plain = harness.build(
            "smtp", {"host": relay.host, "port": relay.port, "security": "none", "from_address": "hub@hub.example.com"}
        )
        assert send(harness, plain, message(["a@shop.example"])).results[0].status == "sent"
        health = harness.call(plain, "health")
        assert health.ok and health.message == f"Connected to {relay.host}:{relay.port} (none) without login"
        assert relay.recipients() == ["a@shop.example"]


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
def test_ssl_mode_against_an_implicit_tls_server(harness: ProviderHarness, tmp_path: Path) -> None:
    with RecordingSmtpServer(implicit_tls=True, password=PASSWORD, cert_dir=tmp_path) as server:
        provider = harness.build("smtp", settings_for(server, security="ssl"))
        health = harness.call(provider, "health")
        assert health.ok, health.message
        result = send(harness, provider, message(["a@shop.example", "b@shop.example"]))
        assert [r.status for r in result.results] == ["sent", "sent"]
        assert server.recipients() == ["a@shop.example", "b@shop.example"] and server.connections == 1
        # Plain SMTP against an implicit-TLS port: each side waits for the other to speak, until the timeout
        # (which is why the schema refuses port 465 without security: ssl).
        wrong = harness.build("smtp", settings_for(server, security="starttls", timeout=0.3))
        with pytest.raises(TransientError, match="did not answer within 0.3 s"):
            send(harness, wrong, message(["c@shop.example"]))


# --- health and close ------------------------------------------------------------------------------


def test_health_reports_the_server_and_user_never_the_password(
    harness: ProviderHarness, smtp: RecordingSmtpServer
) -> None:
    provider = harness.build("smtp", settings_for(smtp))
    health = harness.call(provider, "health")
    assert health.ok
    assert health.message == f"Connected to 127.0.0.1:{smtp.port} (starttls) as {smtp.username}"
    assert PASSWORD not in health.message
    assert smtp.noops == 1


def test_an_empty_batch_opens_no_connection(harness: ProviderHarness, smtp: RecordingSmtpServer) -> None:
    provider = harness.build("smtp", settings_for(smtp, port=free_port()))  # nothing listens there
    assert send(harness, provider, message([])).results == []


def test_close_quits_the_pooled_connections(harness: ProviderHarness, smtp: RecordingSmtpServer) -> None:
    provider = harness.build("smtp", settings_for(smtp))
    send(harness, provider, message(["a@shop.example"]))
    assert provider.pool.close() == 1
    harness.call(provider, "close")  # nothing left: a no-op
    send(harness, provider, message(["b@shop.example"]))  # a closed provider may be used again
    assert smtp.connections == 2


# --- settings --------------------------------------------------------------------------------------


def test_the_gmail_preset_resolves_without_connecting(harness: ProviderHarness) -> None:
    provider = harness.build(
        "smtp",
        {
            "preset": "gmail",
            "username": "alerts@company.example",
            "password": "app-password",
            "from_address": "alerts@company.example",
        },
    )
    assert (provider.host, provider.port, provider.security) == ("smtp.gmail.com", 587, "starttls")
    assert provider.pool._idle == []  # built offline: nothing was opened

    explicit = harness.build(
        "smtp",
        {
            "preset": "gmail",
            "port": 465,
            "security": "ssl",
            "from_address": "alerts@company.example",
            "username": "u",
            "password": "p",
        },
    )
    assert (explicit.host, explicit.port, explicit.security) == ("smtp.gmail.com", 465, "ssl")


def test_settings_come_from_the_seed_environment_variables(harness: ProviderHarness) -> None:
    environ = {"SMTP_HOST": "mail.company.example", "SMTP_PORT": "2525", "SMTP_USER": "hub", "SMTP_PASS": "from-env"}
    provider = harness.build("smtp", {"from_address": "hub@company.example"}, environ=environ)
    assert (provider.host, provider.port, provider.username) == ("mail.company.example", 2525, "hub")
    assert provider.settings["password"] == "from-env" and "password" in hub_smtp.SmtpProvider.secret_settings


@pytest.mark.parametrize(
    ("settings", "path"),
    [
        ({"from_address": "hub@example.com"}, "host"),
        ({"host": "mail.example.com"}, "from_address"),
        ({"host": "mail.example.com", "from_address": "not an address"}, "from_address"),
        ({"host": "mail.example.com", "port": 70000, "from_address": "hub@example.com"}, "port"),
        (
            {"host": "mail.example.com", "port": 465, "security": "starttls", "from_address": "hub@example.com"},
            "security",
        ),
        ({"host": "mail.example.com", "port": 587, "security": "ssl", "from_address": "hub@example.com"}, "security"),
        ({"host": "mail.example.com", "security": "tls", "from_address": "hub@example.com"}, "security"),
        ({"host": "mail.example.com", "password": "x", "from_address": "hub@example.com"}, "username"),
        (
            {
                "host": "mail.example.com",
                "security": "none",
                "username": "u",
                "password": "x",
                "from_address": "h@example.com",
            },
            "security",
        ),
        ({"host": "mail.example.com", "ca_file": "/no/such/ca.pem", "from_address": "hub@example.com"}, "ca_file"),
        ({"preset": "hotmail", "from_address": "hub@example.com"}, "preset"),
        ({"preset": "gmail", "from_address": "hub@example.com"}, "username"),
        ({"host": "mail.example.com", "from_address": "hub@example.com", "pool": 3}, "pool"),
    ],
)
def test_invalid_settings_fail_at_start_up_with_the_key(
    harness: ProviderHarness, settings: dict[str, Any], path: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        harness.build("smtp", settings, name="mail")
    assert raised.value.path == f"providers.mail.{path}"


def test_gmail_preset_with_implicit_tls_picks_port_465(harness: ProviderHarness) -> None:
    gmail = {"preset": "gmail", "username": "u@gmail.com", "password": "app", "from_address": "u@gmail.com"}
    by_security = harness.build("smtp", {**gmail, "security": "ssl"})
    by_port = harness.build("smtp", {**gmail, "port": 465})
    assert (by_security.port, by_security.security) == (465, "ssl")
    assert (by_port.port, by_port.security) == (465, "ssl")


def test_defaults_follow_the_security_mode(harness: ProviderHarness) -> None:
    ports = {
        security: harness.build(
            "smtp", {"host": "localhost", "security": security, "from_address": "h@example.com"}
        ).port
        for security in ("starttls", "ssl", "none")
    }
    assert ports == {"starttls": 587, "ssl": 465, "none": 25}


# --- through the hub -------------------------------------------------------------------------------


def make_hub(tmp_path: Path, primary: SmtpServer, backup: SmtpServer) -> RestHub:
    """A hub with email on ``primary``, then ``backup``, driven through its REST API as tenant demo."""
    return rest_hub(
        tmp_path / "var",
        plugins=[(hub_smtp, "smtp")],
        providers={
            "primary": {"type": "smtp", **settings_for(primary, timeout=2)},
            "backup": {"type": "smtp", **settings_for(backup, from_address="backup@hub.example.com")},
        },
        services={"email": {"providers": ["primary", "backup"]}},
        rate_limits={"limits": {"email": "100000/minute"}},
    )


def notify(api: RestHub, recipients: list[dict[str, str]], subject: str) -> Any:
    return api.notify(
        {
            "type": "email",
            "recipients": recipients,
            "template": "custom",
            "data": {"subject": subject, "message": "Widget stock is at 5."},
        }
    )


@pytest.fixture
def primary_and_backup(tmp_path: Path) -> Iterator[tuple[RecordingSmtpServer, RecordingSmtpServer]]:
    """Two servers with their own accounts, for a hub's primary and backup email providers."""
    primary = RecordingSmtpServer(password=PASSWORD, cert_dir=tmp_path / "primary").start()
    backup = RecordingSmtpServer(username="backup", password="backup-pass", cert_dir=tmp_path / "backup").start()
    try:
        yield primary, backup
    finally:
        primary.stop()
        backup.stop()


def test_rest_failover_from_a_stopped_primary_loses_nothing(
    tmp_path: Path, primary_and_backup: tuple[RecordingSmtpServer, RecordingSmtpServer]
) -> None:
    primary, backup = primary_and_backup
    with make_hub(tmp_path, primary, backup) as api:
        # The primary works while it runs.
        response = notify(api, [{"email": "first@shop.example", "name": "First"}], "Before")
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["data"]["transporter"] == "primary"
        assert primary.recipients() == ["first@shop.example"]

        primary.stop()
        few = [{"email": f"buyer{n}@shop.example"} for n in range(3)]
        response = notify(api, few, "Low stock")
        body = response.get_json()
        assert response.status_code == 200, body
        assert body["success"] is True and body["data"]["transporter"] == "backup"
        assert [r["status"] for r in body["data"]["recipients"]] == ["sent"] * 3
        assert sorted(backup.recipients()) == sorted(r["email"] for r in few)
        received = backup.messages[0].message
        assert received["Subject"] == "Low stock" and backup.messages[0].login == "backup"
        assert "Widget stock is at 5." in received.get_body(("plain",)).get_content()

        # A bulk send: accepted (202), delivered by a worker, every recipient exactly once.
        backup.reset()
        bulk = [{"email": f"customer{n}@shop.example"} for n in range(300)]
        response = notify(api, bulk, "Bulk notice")
        view = api.notification(api.run_queued(response))
        assert view["status"] == "succeeded", view
        assert view["sent"] == 300 and view["failed"] == 0
        delivered = Counter(backup.recipients())
        assert set(delivered) == {r["email"] for r in bulk} and set(delivered.values()) == {1}
        assert backup.connections <= 4  # batches of 200 over pooled connections, not one per message
        ids = [m.message["Message-ID"] for m in backup.messages]
        assert len(set(ids)) == 300


def test_rest_gives_the_backup_only_what_a_primary_failing_part_way_did_not_send(
    tmp_path: Path, primary_and_backup: tuple[RecordingSmtpServer, RecordingSmtpServer]
) -> None:
    primary, backup = primary_and_backup
    with make_hub(tmp_path, primary, backup) as api:
        # A send answered at once: the primary closes every connection after its second message.
        primary.drop_all_after = 2
        few = [f"buyer{n}@shop.example" for n in range(6)]
        response = notify(api, [{"email": a} for a in few], "Low stock")
        assert response.status_code == 200, response.get_json()
        data = response.get_json()["data"]
        assert data["status"] == "succeeded"
        assert [r["status"] for r in data["recipients"]] == ["sent"] * 6
        # The batch is spread over the primary's pool: which two it delivered depends on its connections'
        # timing; each outcome names the server that really has the message.
        assert len(primary.recipients()) == 2 and sorted(primary.recipients() + backup.recipients()) == sorted(few)
        assert {r["address"]: r["provider"] for r in data["recipients"]} == {
            **dict.fromkeys(primary.recipients(), "primary"),
            **dict.fromkeys(backup.recipients(), "backup"),
        }

        # A bulk send in batches of 200: the primary fails part-way through the first and from the start
        # of the second. Across both servers, every recipient gets the message exactly once.
        primary.reset()
        backup.reset()
        primary.drop_all_after = 150
        bulk = [f"customer{n}@shop.example" for n in range(300)]
        response = notify(api, [{"email": a} for a in bulk], "Bulk notice")
        view = api.notification(api.run_queued(response))
        assert view["status"] == "succeeded" and view["sent"] == 300 and view["failed"] == 0, view
        delivered = Counter(primary.recipients()) + Counter(backup.recipients())
        assert set(delivered) == set(bulk) and set(delivered.values()) == {1}
        assert len(primary.recipients()) == 150
        assert {r["address"]: r["provider"] for r in view["recipients"]} == {
            **dict.fromkeys(primary.recipients(), "primary"),
            **dict.fromkeys(backup.recipients(), "backup"),
        }
