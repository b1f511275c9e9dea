"""Every hook has a docs section and a test, and a test fails when one is missing.

* ``docs/hooks.md`` has exactly one ``## `name(args)``` section per hookspec in :mod:`hub.hookspecs`, with
  the spec's own argument names, and no section for a hook that does not exist.
* :data:`HOOK_TESTS` names a test for every hookspec, and each named test exists.
* The tests below exercise, through the REST API, the hooks no other test module drives through the core:
  ``store_url``, ``consumer_groups``, ``handle_webhook``, ``close``, ``register_templates`` and ``health``.
  Their providers are registered in-process (``IntegrationManager(plugins=...)``), as a plugin would be.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import inspect
import io
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import pytest
from marshmallow import Schema, fields, validate

from hub import hookimpl, hookspecs
from hub.api import create_app
from hub.capabilities import (
    ConsumerGroup,
    Event,
    GroupMember,
    HealthResult,
    Message,
    NotifyResult,
    PartitionLag,
    Provider,
    PublishResult,
    RecipientResult,
    StoredFile,
    StoredObject,
    UploadStream,
    WebhookEvent,
    WebhookRequest,
)
from hub.errors import NotFoundError, SignatureError
from hub.manager import IntegrationManager
from tests.conftest import base_config

REPO = Path(__file__).resolve().parent.parent
HOOKS_DOC = REPO / "docs" / "hooks.md"
API = "/api/integrations"

#: hook name -> the test that exercises it through the core ("<file>::<test function>").
HOOK_TESTS: dict[str, str] = {
    "register_providers": "tests/test_plugins.py::test_an_installed_plugin_is_discovered_and_serves",
    "register_templates": "tests/test_hooks.py::test_register_templates_from_a_plugin_serves_notifications",
    "notify": "tests/test_notify.py::test_test_notification",
    "pay": "tests/test_pay.py::test_payment_refunds",
    "refund": "tests/test_pay.py::test_payment_refunds",
    "payment_status": "tests/test_pay.py::test_unknown_outcome_stays_processing_until_the_reconciliation_job_finds_it",
    "capture": "tests/test_pay.py::test_authorise_capture_part_refund_what_was_captured_and_cancel",
    "cancel": "tests/test_pay.py::test_authorise_capture_part_refund_what_was_captured_and_cancel",
    "store": "tests/test_store.py::test_file_upload_download_metadata_list_delete",
    "store_read": "tests/test_store.py::test_downloads_stream_with_byte_ranges",
    "store_head": "tests/test_store.py::test_head_and_verify_ask_the_provider_what_it_holds",
    "store_delete": "tests/test_store.py::test_file_upload_download_metadata_list_delete",
    "store_url": "tests/test_hooks.py::test_store_url_gives_file_metadata_its_download_url",
    "store_upload_url": "tests/test_store.py::test_direct_upload_through_a_presigned_url_is_confirmed_by_head",
    "publish": "tests/test_publish.py::test_events_and_consumer_groups",
    "publish_batch": "tests/test_publish.py::test_a_batch_is_published_in_one_round_trip_and_replayed_by_its_idempotency_key",
    "consume": "tests/test_publish.py::test_a_webhook_subscription_delivers_every_event_in_order_signed_and_commits",
    "commit": "tests/test_publish.py::test_two_hub_processes_run_each_subscription_once_and_take_over_within_seconds_of_a_sigkill",
    "unsubscribe": "tests/test_publish.py::test_pausing_stops_deliveries_in_every_process_and_resuming_continues",
    "consumer_groups": "tests/test_hooks.py::test_consumer_groups_lists_only_the_tenants_groups",
    "reset_offsets": "tests/test_publish.py::test_resetting_a_running_subscriptions_group_pauses_it_and_redelivers_from_the_new_offset",
    "list_topics": "tests/test_publish.py::test_topics_are_listed_and_created_and_a_group_deleted_through_the_api",
    "create_topic": "tests/test_publish.py::test_topics_are_listed_and_created_and_a_group_deleted_through_the_api",
    "delete_consumer_group": "tests/test_publish.py::test_topics_are_listed_and_created_and_a_group_deleted_through_the_api",
    "register_handlers": "tests/test_publish.py::test_a_registered_callable_handler_and_one_added_from_python_both_consume",
    "register_handler_types": "tests/test_publish.py::test_a_plugins_handler_type_is_configured_per_subscription_from_hub_yaml",
    "register_event_schemas": "tests/test_publish.py::test_a_plugins_event_schemas_are_checked_for_compatibility_and_validate_its_events",
    "sync": "tests/test_sync.py::test_sync_jobs_are_accepted_and_run_by_a_worker",
    "sync_push": "tests/test_sync.py::test_push_inventory_updates_through_the_api",
    "health": "tests/test_hooks.py::test_health_results_errors_and_missing_hooks_in_get_health",
    "handle_webhook": "tests/test_hooks.py::test_handle_webhook_verifies_deduplicates_and_updates_deliveries",
    "close": "tests/test_hooks.py::test_close_is_called_for_every_provider_instance_on_shutdown",
}


def hookspec_names() -> list[str]:
    marker = f"{hookspecs.PROJECT_NAME}_spec"
    return sorted(name for name, value in vars(hookspecs).items() if callable(value) and hasattr(value, marker))


def hookspec_arguments(name: str) -> list[str]:
    return list(inspect.signature(getattr(hookspecs, name)).parameters)


_HOOK_HEADING = re.compile(r"^## `(?P<name>\w+)\((?P<args>[^)]*)\)`[ \t]*$", re.MULTILINE)
_ANY_HEADING = re.compile(r"^## ", re.MULTILINE)


def doc_sections() -> list[tuple[str, list[str], str]]:
    """Each ``## `name(args)``` section of docs/hooks.md: (name, argument names, body up to the next
    ``## `` heading)."""
    text = HOOKS_DOC.read_text(encoding="utf-8")
    sections = []
    for match in _HOOK_HEADING.finditer(text):
        following = _ANY_HEADING.search(text, match.end())
        body = text[match.end() : following.start() if following else len(text)]
        arguments = [argument.strip() for argument in match["args"].split(",") if argument.strip()]
        sections.append((match["name"], arguments, body))
    return sections


# --- (a) docs ------------------------------------------------------------------------------------


def test_the_hookspecs_are_found() -> None:
    # Guards the checks below against passing vacuously.
    assert {"register_providers", "notify", "pay", "store", "publish", "sync", "close"} <= set(hookspec_names())


def test_every_hookspec_has_a_docs_section() -> None:
    documented = {name for name, _, _ in doc_sections()}
    missing = [name for name in hookspec_names() if name not in documented]
    assert not missing, f"docs/hooks.md has no '## `name(...)`' section for: {', '.join(missing)}"


def test_no_docs_section_documents_a_hook_that_does_not_exist() -> None:
    names = [name for name, _, _ in doc_sections()]
    unknown = sorted(set(names) - set(hookspec_names()))
    assert not unknown, f"docs/hooks.md documents hooks that hub/hookspecs.py does not define: {', '.join(unknown)}"
    duplicated = sorted({name for name in names if names.count(name) > 1})
    assert not duplicated, f"docs/hooks.md documents these hooks twice: {', '.join(duplicated)}"


def test_docs_sections_follow_the_hookspecs() -> None:
    problems = []
    for name, arguments, body in doc_sections():
        if name not in hookspec_names():
            continue
        expected = hookspec_arguments(name)
        if arguments != expected:
            problems.append(f"{name}: heading says ({', '.join(arguments)}), the hookspec takes ({', '.join(expected)})")
        problems += [f"{name}: argument `{argument}` is not described" for argument in expected if f"`{argument}`" not in body]
        if "firstresult" not in body and "historic" not in body:
            problems.append(f"{name}: does not say whether it is firstresult or historic")
        examples = re.findall(r"^```python\n(.*?)^```", body, re.MULTILINE | re.DOTALL)
        if not examples:
            problems.append(f"{name}: has no ```python example")
        for example in examples:
            try:
                compile(example, f"docs/hooks.md ({name} example)", "exec")
            except SyntaxError as error:
                problems.append(f"{name}: the example does not compile: {error}")
    assert not problems, "docs/hooks.md:\n" + "\n".join(problems)


# --- (b) tests -----------------------------------------------------------------------------------


def test_every_hookspec_has_a_named_test() -> None:
    missing = [name for name in hookspec_names() if name not in HOOK_TESTS]
    assert not missing, f"HOOK_TESTS in tests/test_hooks.py names no test for: {', '.join(missing)}"
    unknown = sorted(set(HOOK_TESTS) - set(hookspec_names()))
    assert not unknown, f"HOOK_TESTS names hooks that do not exist: {', '.join(unknown)}"


@pytest.mark.parametrize("hook", sorted(HOOK_TESTS))
def test_the_named_test_exists(hook: str) -> None:
    path, _, function = HOOK_TESTS[hook].partition("::")
    module = REPO / path
    assert module.is_file(), f"{hook}: {path} does not exist"
    assert re.search(rf"^def {re.escape(function)}\(", module.read_text(encoding="utf-8"), re.MULTILINE), (
        f"{hook}: {path} has no test function {function}()"
    )


# --- providers for the hook tests -----------------------------------------------------------------


class MemoryStoreSettings(Schema):
    #: Whether store_url hands out a URL (a presigning store) or None (a store without such a thing).
    presign = fields.Boolean(load_default=True)


class MemoryStore(Provider):
    type_name = "memory-store"
    capability = "store"
    settings_schema = MemoryStoreSettings

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.files: dict[str, bytes] = {}
        self.url_requests: list[tuple[str, int]] = []

    @hookimpl
    def store(self, file: StoredFile, stream: UploadStream) -> StoredFile:
        self.files[file.key] = b"".join(iter(lambda: stream.read(65536), b""))
        return file

    @hookimpl
    def store_read(self, key: str, byte_range: tuple[int, int | None] | None) -> io.BytesIO:
        if key not in self.files:
            raise NotFoundError(f"no file {key}")
        first, last = byte_range or (0, None)
        return io.BytesIO(self.files[key][first : None if last is None else last + 1])

    @hookimpl
    def store_head(self, key: str) -> StoredObject:
        if key not in self.files:
            raise NotFoundError(f"no file {key}")
        return StoredObject(key, len(self.files[key]))

    @hookimpl
    def store_delete(self, key: str) -> bool:
        return self.files.pop(key, None) is not None

    @hookimpl
    def store_url(self, key: str, expires_in: int) -> str | None:
        self.url_requests.append((key, expires_in))
        if not self.settings["presign"]:
            return None
        return f"https://files.example.test/{quote(key)}?expires_in={expires_in}&signature=sig-{len(key)}"


#: What the broker reports: groups of two tenants, a look-alike prefix, a bare tenant name, no id.
BROKER_GROUPS: list[ConsumerGroup] = [
    ConsumerGroup("demo.orders", "Stable", [GroupMember("m-1", "hub", "10.0.0.5", {"orders": [0, 1]}), GroupMember("m-2")], ["orders"], [PartitionLag("orders", 0, 10, 10), PartitionLag("orders", 1, 3, 4)]),
    ConsumerGroup("demo-billing", "Empty", [], ["invoices"], [PartitionLag("invoices", 0, 0, 5)]),
    ConsumerGroup("demonstration.audit", "Stable", [GroupMember("m-3")]),
    ConsumerGroup("acme.orders", "Stable", [GroupMember("m-4")]),
    ConsumerGroup("demo", "Stable"),
    ConsumerGroup("", "Dead"),
]


class GroupBroker(Provider):
    type_name = "group-broker"
    capability = "publish"

    @hookimpl
    def publish(self, event: Event) -> PublishResult:
        return PublishResult(0, "0", event.topic)

    @hookimpl
    def consumer_groups(self) -> list[ConsumerGroup]:
        return copy.deepcopy(BROKER_GROUPS)


class PlainBroker(Provider):
    """A publish provider without the optional consumer_groups hook."""

    type_name = "plain-broker"
    capability = "publish"

    @hookimpl
    def publish(self, event: Event) -> PublishResult:
        return PublishResult(0, "0", event.topic)


class SignedNotifierSettings(Schema):
    secret = fields.String(required=True)


class SignedNotifier(Provider):
    """Queues every message and reports delivery later through signed webhooks: X-Signature is the
    hex HMAC-SHA256 of the body with the shared secret."""

    type_name = "signed-notifier"
    capability = "notify"
    channels = ("email",)
    settings_schema = SignedNotifierSettings
    secret_settings = ("secret",)

    @hookimpl
    def notify(self, message: Message) -> NotifyResult:
        return NotifyResult(
            [RecipientResult(r.address, "queued", f"sn-{message.id}-{i}") for i, r in enumerate(message.recipients)]
        )

    @hookimpl
    def handle_webhook(self, webhook: WebhookRequest) -> list[WebhookEvent]:
        headers = {name.lower(): value for name, value in webhook.headers.items()}
        expected = hmac.new(self.settings["secret"].encode(), webhook.body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(headers.get("x-signature", ""), expected):
            raise SignatureError("webhook signature does not verify")
        return [
            WebhookEvent(
                event_id=item["id"],
                reference=item["messageId"],
                status=item["status"],
                type=item.get("type", ""),
                details={"reason": item.get("reason", "")},
            )
            for item in json.loads(webhook.body)["events"]
        ]


class ClosableSettings(Schema):
    label = fields.String(load_default="")
    fail_close = fields.Boolean(load_default=False)


class ClosableNotifier(Provider):
    type_name = "closable-notifier"
    capability = "notify"
    channels = ("email",)
    settings_schema = ClosableSettings
    #: (provider name, tenant of the instance, label) of every close() call.
    closed: ClassVar[list[tuple[str, str | None, str]]] = []

    @hookimpl
    def notify(self, message: Message) -> NotifyResult:
        return NotifyResult([RecipientResult(r.address, "sent", f"{self.name}-{message.id}") for r in message.recipients])

    @hookimpl
    def close(self) -> None:
        ClosableNotifier.closed.append((self.name, self.context.tenant, self.settings["label"]))
        if self.settings["fail_close"]:
            raise RuntimeError("socket already gone")


class CaptureNotifier(Provider):
    """Keeps every message it is given, so a test can see what the template rendered."""

    type_name = "capture-notifier"
    capability = "notify"
    channels = ("email", "sms")
    messages: ClassVar[list[Message]] = []

    @hookimpl
    def notify(self, message: Message) -> NotifyResult:
        CaptureNotifier.messages.append(message)
        return NotifyResult([RecipientResult(r.address, "sent", f"cap-{message.id}") for r in message.recipients])


class HealthProbeSettings(Schema):
    behaviour = fields.String(load_default="ok", validate=validate.OneOf(["ok", "error", "raise", "wrong-type"]))


class HealthProbe(Provider):
    type_name = "health-probe"
    capability = "notify"
    channels = ("sms", "chat")
    settings_schema = HealthProbeSettings

    @hookimpl
    def notify(self, message: Message) -> NotifyResult:
        return NotifyResult([RecipientResult(r.address, "sent") for r in message.recipients])

    @hookimpl
    def health(self) -> HealthResult:
        behaviour = self.settings["behaviour"]
        if behaviour == "raise":
            raise RuntimeError("probe exploded")
        if behaviour == "wrong-type":
            return "fine"  # type: ignore[return-value]  # the mistake under test
        if behaviour == "error":
            return HealthResult("error", "quota exhausted")
        return HealthResult("success", "all good")


class NoHealthNotifier(Provider):
    """A provider without the optional health hook."""

    type_name = "no-health"
    capability = "notify"
    channels = ("sms",)

    @hookimpl
    def notify(self, message: Message) -> NotifyResult:
        return NotifyResult([RecipientResult(r.address, "sent") for r in message.recipients])


RESTOCK_EMAIL = {
    "subject": "Restocked: {{ sku }}",
    "text": "{{ sku }} is back in stock ({{ quantity }} units).",
    "html": "<p>{{ sku }} is back in stock</p>",
}


class HookTestsPlugin:
    """The plugin object: its set-up hooks register the providers above and one template."""

    @hookimpl
    def register_providers(self, register: Callable[[type], None]) -> None:
        for provider_class in (
            MemoryStore,
            GroupBroker,
            PlainBroker,
            SignedNotifier,
            ClosableNotifier,
            CaptureNotifier,
            HealthProbe,
            NoHealthNotifier,
        ):
            register(provider_class)

    @hookimpl
    def register_templates(self, register: Callable[..., None]) -> None:
        register("restock_notice", "email", required=("sku", "quantity"), **RESTOCK_EMAIL)
        register("restock_notice", "sms", text="{{ sku }} back: {{ quantity }}", required=("sku", "quantity"))


class LaterTemplatesPlugin:
    """Registered after HookTestsPlugin: its restock_notice email replaces the earlier one."""

    @hookimpl
    def register_templates(self, register: Callable[..., None]) -> None:
        register("restock_notice", "email", subject="Back: {{ sku }}", text="Back in stock: {{ sku }}", required=("sku",))


# --- helpers ---------------------------------------------------------------------------------------


class Hub:
    """A hub with the hook-test plugin, its Flask client, and a token per tenant."""

    def __init__(self, manager: IntegrationManager) -> None:
        self.manager = manager
        self.client = create_app(manager=manager).test_client()

    def headers(self, tenant: str = "demo", admin: bool = False) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.manager.tokens.create(tenant, 'hook-tests', admin=admin)[1]}", "X-Tenant-ID": tenant}

    def data(self, response: Any, status: int = 200) -> Any:
        body = response.get_json()
        assert response.status_code == status, body
        assert body["success"] is True, body
        return body["data"]

    def error(self, response: Any, status: int) -> dict[str, Any]:
        body = response.get_json()
        assert response.status_code == status, body
        assert body["success"] is False and body["message"] and body["error"], body
        return body


@pytest.fixture
def make_hub(tmp_path: Path) -> Iterator[Callable[..., Hub]]:
    made: list[IntegrationManager] = []

    def make(
        providers: dict[str, Any], services: dict[str, Any], *, plugins: tuple[tuple[object, str], ...] = (), **overrides: Any
    ) -> Hub:
        config = base_config(tmp_path / f"var-{len(made)}", providers, services, **overrides)
        plugin_list = [(HookTestsPlugin(), "hook-tests"), *plugins]
        manager = IntegrationManager(config, environ={}, entry_points=False, plugins=plugin_list)
        made.append(manager)
        return Hub(manager)

    yield make
    for manager in made:
        manager.close()


def email_to(*addresses: str, template: str = "custom", data: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "type": "email",
        "recipients": [{"email": address} for address in addresses],
        "template": template,
        "data": data if data is not None else {"subject": "Stock", "message": "Low"},
    }


# --- store_url -------------------------------------------------------------------------------------


def test_store_url_gives_file_metadata_its_download_url(make_hub: Callable[..., Hub]) -> None:
    hub = make_hub(
        {"presigned": {"type": "memory-store"}, "no-urls": {"type": "memory-store", "presign": False}},
        {"fileStorage": {"providers": ["presigned"]}},
        storage_limits={"url_expiry": 900},
        tenants={"acme": {"services": {"fileStorage": {"providers": ["no-urls"]}}}},
    )
    demo = hub.headers("demo")
    content = base64.b64encode(b"pallet report").decode()
    uploaded = hub.data(hub.client.post(f"{API}/files", json={"fileName": "report.txt", "content": content}, headers=demo), 201)
    key = uploaded["fileKey"]
    metadata = hub.data(hub.client.get(f"{API}/files/{uploaded['fileId']}", headers=demo))
    assert metadata["downloadUrl"] == f"https://files.example.test/{quote(key)}?expires_in=900&signature=sig-{len(key)}"
    presigned = hub.manager.registry.slots["presigned"].instance
    assert presigned.url_requests == [(key, 900)]  # the key as stored, valid for storage_limits.url_expiry
    assert hub.client.get(f"{API}/files/{uploaded['fileId']}/content", headers=demo).data == b"pallet report"

    # A store whose store_url returns None: the downloadUrl is the hub's own signed one; the hub serves the file.
    acme = hub.headers("acme")
    other = hub.data(hub.client.post(f"{API}/files", json={"fileName": "a.txt", "content": content}, headers=acme), 201)
    metadata = hub.data(hub.client.get(f"{API}/files/{other['fileId']}", headers=acme))
    assert metadata["downloadUrl"].startswith(f"http://localhost{API}/files/{other['fileId']}/download?token=")
    assert metadata["url"] == f"{API}/files/{other['fileId']}/content"
    assert hub.client.get(metadata["downloadUrl"].removeprefix("http://localhost")).data == b"pallet report"
    assert hub.manager.registry.slots["no-urls"].instance.url_requests == [(other["fileKey"], 900)]


# --- consumer_groups -----------------------------------------------------------------------------


def test_consumer_groups_lists_only_the_tenants_groups(make_hub: Callable[..., Hub]) -> None:
    hub = make_hub(
        {"plain": {"type": "plain-broker"}, "broker": {"type": "group-broker"}},
        {"kafka": {"providers": ["plain", "broker"]}},  # plain lacks the optional hook: skipped, not an error
    )
    demo = hub.data(hub.client.get(f"{API}/events/consumer-groups", headers=hub.headers("demo")))["groups"]
    assert [(group["groupId"], group["provider"]) for group in demo] == [("demo.orders", "broker"), ("demo-billing", "broker")]
    assert demo[0] == {
        "groupId": "demo.orders",
        "state": "Stable",
        "members": [
            {"memberId": "m-1", "clientId": "hub", "host": "10.0.0.5", "assignment": {"orders": [0, 1]}},
            {"memberId": "m-2", "clientId": None, "host": None, "assignment": {}},
        ],
        "memberCount": 2,
        "topics": ["orders"],
        "partitions": [
            {"topic": "orders", "partition": 0, "committed": 10, "end": 10, "lag": 0},
            {"topic": "orders", "partition": 1, "committed": 3, "end": 4, "lag": 1},
        ],
        "lag": 1,
        "provider": "broker",
        "subscription": None,
    }
    assert (demo[1]["state"], demo[1]["lag"], demo[1]["memberCount"]) == ("Empty", 5, 0)
    acme = hub.data(hub.client.get(f"{API}/events/consumer-groups", headers=hub.headers("acme")))["groups"]
    assert [group["groupId"] for group in acme] == ["acme.orders"]
    nobody = hub.data(hub.client.get(f"{API}/events/consumer-groups", headers=hub.headers("zeta")))["groups"]
    assert nobody == []


# --- handle_webhook ----------------------------------------------------------------------------------

WEBHOOK_SECRET = "whsec-hook-tests"


def signed(events: list[dict[str, Any]], secret: str = WEBHOOK_SECRET) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"events": events}).encode()
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return body, {"X-Signature": signature, "Content-Type": "application/json"}


def test_handle_webhook_verifies_deduplicates_and_updates_deliveries(make_hub: Callable[..., Hub]) -> None:
    hub = make_hub({"signed": {"type": "signed-notifier", "secret": WEBHOOK_SECRET}}, {"email": {"providers": ["signed"]}})
    headers = hub.headers("demo")
    sent = hub.data(hub.client.post(f"{API}/notifications", json=email_to("a@example.com", "b@example.com"), headers=headers))
    assert [r["status"] for r in sent["recipients"]] == ["queued", "queued"]
    first, second = (r["providerMessageId"] for r in sent["recipients"])
    events = [
        {"id": "ev-1", "messageId": first, "status": "delivered", "type": "delivery"},
        {"id": "ev-2", "messageId": second, "status": "bounced", "type": "bounce", "reason": "mailbox full"},
    ]
    body, signature = signed(events)
    url = f"{API}/webhooks/signed"

    # No bearer token: a webhook is authenticated by the provider's signature alone.
    bad = hub.error(hub.client.post(url, data=body, headers={**signature, "X-Signature": "0" * 64}), 401)
    assert "signature" in bad["message"]
    hub.error(hub.client.post(url, data=body, headers={"Content-Type": "application/json"}), 401)
    hub.error(hub.client.post(url, data=body, headers=signed(events, secret="someone-else")[1]), 401)

    assert hub.data(hub.client.post(url, data=body, headers=signature)) == {"received": 2, "duplicates": 0, "updated": 2}
    assert hub.data(hub.client.post(url, data=body, headers=signature)) == {"received": 2, "duplicates": 2, "updated": 0}
    stray, stray_signature = signed([{"id": "ev-3", "messageId": "sn-unknown", "status": "delivered"}])
    assert hub.data(hub.client.post(url, data=stray, headers=stray_signature)) == {"received": 1, "duplicates": 0, "updated": 0}

    view = hub.data(hub.client.get(f"{API}/notifications/{sent['messageId']}", headers=headers))
    delivered, bounced = view["recipients"]
    assert (delivered["deliveryStatus"], delivered["status"]) == ("delivered", "queued")
    assert (bounced["deliveryStatus"], bounced["status"]) == ("bounced", "failed")
    assert bounced["deliveryDetail"] == {"event": "bounce", "eventId": "ev-2", "reason": "mailbox full"}
    assert bounced["deliveryUpdatedAt"] and "bounced" in bounced["error"]
    assert view["failed"] == 1 and view["status"] == "succeeded"  # the record itself stays as sent

    hub.error(hub.client.post(f"{API}/webhooks/outbox", data=body, headers=signature), 404)  # no handle_webhook
    hub.error(hub.client.post(f"{API}/webhooks/nobody", data=body, headers=signature), 404)


# --- close -------------------------------------------------------------------------------------------


def test_close_is_called_for_every_provider_instance_on_shutdown(make_hub: Callable[..., Hub]) -> None:
    ClosableNotifier.closed.clear()
    hub = make_hub(
        {
            "first": {"type": "closable-notifier", "label": "shared"},
            "second": {"type": "closable-notifier", "fail_close": True},
        },
        {"email": {"providers": ["first", "second"]}},
        tenants={"demo": {"providers": {"first": {"label": "demo's own"}}}},
    )
    demo = hub.headers("demo")
    hub.data(hub.client.post(f"{API}/notifications", json=email_to("a@example.com"), headers=demo))  # builds first@demo

    hub.error(hub.client.post(f"{API}/shutdown", headers=demo), 403)
    assert ClosableNotifier.closed == []
    down = hub.data(hub.client.post(f"{API}/shutdown", headers=hub.headers("ops", admin=True)))
    assert down["email"] == {"status": "shutdown"}
    # Every instance, the tenant's own included; second's failing close() does not stop the others.
    assert ClosableNotifier.closed == [("first", None, "shared"), ("first", "demo", "demo's own"), ("second", None, "")]
    hub.error(hub.client.post(f"{API}/notifications", json=email_to("a@example.com"), headers=demo), 503)

    # After initialize the same (closed) instances serve again: a provider must reopen what close() released.
    hub.data(hub.client.post(f"{API}/initialize", headers=hub.headers("ops", admin=True)))
    again = hub.data(hub.client.post(f"{API}/notifications", json=email_to("a@example.com"), headers=demo))
    assert again["status"] == "succeeded" and again["transporter"] == "first"


# --- register_templates ------------------------------------------------------------------------------


def test_register_templates_from_a_plugin_serves_notifications(make_hub: Callable[..., Hub]) -> None:
    CaptureNotifier.messages.clear()
    capture_everything = {"email": {"providers": ["capture"]}, "sms": {"providers": ["capture"]}}
    acme_template = {"channel": "email", "subject": "ACME: {{ sku }}", "text": "ACME restocked {{ sku }}"}
    hub = make_hub(
        {"capture": {"type": "capture-notifier"}},
        capture_everything,
        tenants={"acme": {"templates": {"restock_notice": [acme_template]}}},
    )
    demo = hub.headers("demo")
    restock = {"sku": "W-1 <b>", "quantity": 40}
    email = email_to("a@example.com", template="restock_notice", data=restock)
    sms = {"type": "sms", "recipients": [{"phone": "+14155552671"}], "template": "restock_notice", "data": restock}

    hub.data(hub.client.post(f"{API}/notifications", json=email, headers=demo))
    sent = CaptureNotifier.messages[-1]
    assert (sent.template, sent.subject) == ("restock_notice", "Restocked: W-1 <b>")
    assert sent.text == "W-1 <b> is back in stock (40 units)."
    assert sent.html == "<p>W-1 &lt;b&gt; is back in stock</p>"  # html is autoescaped, text is not
    hub.data(hub.client.post(f"{API}/notifications", json=sms, headers=demo))
    assert CaptureNotifier.messages[-1].text == "W-1 <b> back: 40"

    # A required variable missing is a 422 naming it, before anything is sent.
    count = len(CaptureNotifier.messages)
    incomplete = {**email, "data": {"sku": "W-1"}}
    missing = hub.error(hub.client.post(f"{API}/notifications", json=incomplete, headers=demo), 422)
    assert "quantity" in missing["errors"]["data"] and len(CaptureNotifier.messages) == count

    listed = {p["name"]: p for p in hub.data(hub.client.get(f"{API}/plugins", headers=demo))["plugins"]}
    assert listed["hook-tests"]["templates"] == ["restock_notice"]
    assert "register_templates" in listed["hook-tests"]["hooks"]
    assert "restock_notice" in hub.data(hub.client.get(f"{API}/services/email", headers=demo))["templates"]

    # A tenant's own template in hub.yaml replaces the plugin's, for that tenant only.
    hub.data(hub.client.post(f"{API}/notifications", json=email, headers=hub.headers("acme")))
    sent = CaptureNotifier.messages[-1]
    assert (sent.subject, sent.text) == ("ACME: W-1 <b>", "ACME restocked W-1 <b>")

    # A plugin registered later replaces an earlier plugin's (name, channel), and only that one.
    later = make_hub(
        {"capture": {"type": "capture-notifier"}}, capture_everything, plugins=((LaterTemplatesPlugin(), "later-templates"),)
    )
    later_demo = later.headers("demo")
    later.data(later.client.post(f"{API}/notifications", json={**email, "data": {"sku": "W-2"}}, headers=later_demo))
    sent = CaptureNotifier.messages[-1]
    assert (sent.subject, sent.text) == ("Back: W-2", "Back in stock: W-2")
    later.data(later.client.post(f"{API}/notifications", json={**sms, "data": {"sku": "W-2", "quantity": 1}}, headers=later_demo))
    assert CaptureNotifier.messages[-1].text == "W-2 back: 1"


# --- health ------------------------------------------------------------------------------------------


def test_health_results_errors_and_missing_hooks_in_get_health(make_hub: Callable[..., Hub]) -> None:
    hub = make_hub(
        {
            "ok": {"type": "health-probe"},
            "sick": {"type": "health-probe", "behaviour": "error"},
            "panicky": {"type": "health-probe", "behaviour": "raise"},
            "confused": {"type": "health-probe", "behaviour": "wrong-type"},
            "silent": {"type": "no-health"},
        },
        {"sms": {"providers": ["ok", "sick", "panicky", "confused", "silent"]}, "chat": {"providers": ["sick"]}},
    )
    headers = hub.headers("demo")
    sms = hub.data(hub.client.get(f"{API}/health/sms", headers=headers))
    assert sms["status"] == "healthy"  # one healthy provider is enough to serve
    details = {name: (detail["status"], detail["message"]) for name, detail in sms["details"].items()}
    assert details == {
        "ok": ("success", "all good"),
        "sick": ("error", "quota exhausted"),
        "panicky": ("error", "RuntimeError: probe exploded"),  # a health() that raises is an error, not a 500
        "confused": ("error", "health() returned str, not HealthResult"),
        "silent": ("success", "Configuration valid"),  # no health hook: healthy once built
    }
    chat = hub.data(hub.client.get(f"{API}/health/chat", headers=headers))
    assert chat["status"] == "unhealthy" and chat["error"] == "sick: quota exhausted"
    everything = hub.data(hub.client.get(f"{API}/health", headers=headers))
    assert everything["sms"]["status"] == "healthy" and everything["chat"]["status"] == "unhealthy"
