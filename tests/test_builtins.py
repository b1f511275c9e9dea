"""The built-in plugins against the conformance kit, their own behaviour, and the kit itself.

No mocks: every provider is built through :class:`hub.testing.ProviderHarness` exactly as the core
builds it, and talks to real files and SQLite databases in a temporary data directory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import sqlite3
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from marshmallow import Schema, fields

import hub
from hub import hookimpl
from hub.builtins.templates import BUILTIN_TEMPLATES
from hub.capabilities import (
    CHANNELS,
    Event,
    HealthResult,
    Message,
    NotifyResult,
    PaymentLookup,
    PaymentRequest,
    Provider,
    Recipient,
    RecipientResult,
    RefundRequest,
    StoredFile,
    StoredObject,
    SyncRequest,
    UploadStream,
)
from hub.delivery import TemplateLibrary
from hub.errors import (
    ConfigError,
    ConfigurationError,
    NotFoundError,
    PermanentError,
    TransientError,
    UnsupportedError,
    ValidationError,
)
from hub.plugins import BUILTIN_PLUGINS
from hub.testing import ProviderHarness
from hub.testing.contracts import (
    check_health,
    check_notify,
    check_pay,
    check_provider_class,
    check_store,
    check_sync,
    run_contract,
)

# The fixture under test is the one plugin authors get: hub.testing loaded as a pytest plugin.

TENANT = "acme"

#: Settings and contract inputs for every built-in provider type.
BUILTIN_CONTRACTS: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {
    "outbox": [({}, {})],
    "local-disk": [({}, {}), ({"root": "uploads", "public_base_url": "http://localhost:8000/files"}, {})],
    "event-log": [
        ({}, {"topic": "inventory.events", "settle": 0.2}),
        ({"partitions": 4, "fsync": False}, {"topic": "orders", "settle": 0.2}),
    ],
    "file-source": [
        ({}, {"data_type": data_type}) for data_type in ("suppliers", "customers", "inventory", "shipments")
    ],
    "sandbox": [
        ({}, {"succeeding_method": "4242424242424242", "declined_method": "4000000000000002"}),
        ({"database": "payments/test.db"}, {"succeeding_method": None, "declined_method": "4000000000009995"}),
        ({}, {"succeeding_method": "pm_card_visa", "amount": Decimal("0.10"), "currency": "eur"}),
    ],
}


def _contract_cases() -> list[Any]:
    return [
        pytest.param(type_name, settings, inputs, id=f"{type_name}-{index}")
        for type_name, cases in BUILTIN_CONTRACTS.items()
        for index, (settings, inputs) in enumerate(cases)
    ]


# --- the conformance kit on every built-in ------------------------------------------------------


def test_every_builtin_plugin_loads_and_every_provider_type_has_a_contract_case(
    provider_harness: ProviderHarness,
) -> None:
    records = {record["name"]: record for record in provider_harness.host.plugin_list()}
    for module_name in BUILTIN_PLUGINS:
        record = records[module_name.rsplit(".", 1)[-1]]
        assert record["status"] == "loaded", record
    assert set(provider_harness.host.provider_types) == set(BUILTIN_CONTRACTS)


@pytest.mark.parametrize("type_name", sorted(BUILTIN_CONTRACTS))
def test_builtin_provider_class_passes_the_class_check(provider_harness: ProviderHarness, type_name: str) -> None:
    check_provider_class(provider_harness.provider_class(type_name))


@pytest.mark.parametrize(("type_name", "settings", "inputs"), _contract_cases())
def test_builtin_provider_meets_its_contract(
    provider_harness: ProviderHarness, type_name: str, settings: dict[str, Any], inputs: dict[str, Any]
) -> None:
    provider = provider_harness.build(type_name, settings, tenant=None)
    results = run_contract(provider_harness, provider, **inputs)
    assert results["health"] is not None and results["health"].ok, results["health"]


def test_builtin_providers_resolve_relative_paths_in_the_data_dir(provider_harness: ProviderHarness) -> None:
    data_dir = Path(provider_harness.data_dir)
    assert provider_harness.build("outbox").directory == data_dir / "outbox"
    assert provider_harness.build("local-disk").root == data_dir / "files"
    assert provider_harness.build("event-log", {"directory": "log"}).directory == data_dir / "log"
    assert provider_harness.build("sandbox").database == data_dir / "sandbox-payments.db"
    assert not data_dir.exists(), "providers must not touch the disk when they are built"


def test_unknown_settings_are_refused_with_their_path(provider_harness: ProviderHarness) -> None:
    with pytest.raises(ConfigError) as raised:
        provider_harness.build("outbox", {"folder": "x"}, name="mail-log")
    assert raised.value.path == "providers.mail-log.folder"


# --- sandbox ----------------------------------------------------------------------------------


def _payment(
    method: str | None = None, amount: str = "10.00", key: str | None = None, tenant: str = TENANT
) -> PaymentRequest:
    return PaymentRequest(
        id=uuid.uuid4().hex,
        tenant=tenant,
        amount=Decimal(amount),
        currency="USD",
        payment_method=method,
        idempotency_key=key,
    )


def _refund(transaction_id: str, amount: str | None, tenant: str = TENANT) -> RefundRequest:
    return RefundRequest(
        id=uuid.uuid4().hex,
        tenant=tenant,
        transaction_id=transaction_id,
        amount=None if amount is None else Decimal(amount),
        currency="USD",
    )


@pytest.mark.parametrize(
    ("card", "code", "message"),
    [
        ("4000000000000002", "card_declined", "Your card was declined."),
        ("4000 0000 0000 0002", "card_declined", "Your card was declined."),
        ("4000000000009995", "insufficient_funds", "Your card has insufficient funds."),
        ("4000000000000069", "expired_card", "Your card has expired."),
        ("pm_card_chargeDeclined", "card_declined", "Your card was declined."),
        ("4111111111111111", "card_declined", "non test card"),
    ],
)
def test_sandbox_declines_with_stripe_codes(
    provider_harness: ProviderHarness, card: str, code: str, message: str
) -> None:
    sandbox = provider_harness.build("sandbox")
    with pytest.raises(PermanentError) as raised:
        provider_harness.call(sandbox, "pay", payment=_payment(card))
    assert raised.value.provider_code == code
    assert message in str(raised.value)


def test_sandbox_processing_error_is_transient_and_charges_nothing(provider_harness: ProviderHarness) -> None:
    sandbox = provider_harness.build("sandbox")
    with pytest.raises(TransientError) as raised:
        provider_harness.call(sandbox, "pay", payment=_payment("4000000000000119", key="retry-me"))
    assert raised.value.provider_code == "processing_error"
    # The retry with a good card is a new charge, not a replay of the failed one.
    result = provider_harness.call(sandbox, "pay", payment=_payment("4242424242424242", key="retry-me"))
    assert result.status == "succeeded"


def test_sandbox_requires_action_card_cannot_be_refunded(provider_harness: ProviderHarness) -> None:
    sandbox = provider_harness.build("sandbox")
    result = provider_harness.call(sandbox, "pay", payment=_payment("4000002500003155"))
    assert result.status == "requires_action"
    assert result.transaction_id.startswith("sbx_pi_")
    with pytest.raises(PermanentError) as raised:
        provider_harness.call(sandbox, "refund", refund=_refund(result.transaction_id, None))
    assert raised.value.provider_code == "payment_intent_unexpected_state"


def test_sandbox_idempotency_key_returns_the_first_payment(provider_harness: ProviderHarness) -> None:
    sandbox = provider_harness.build("sandbox")
    first = provider_harness.call(sandbox, "pay", payment=_payment(key="order-42"))
    again = provider_harness.call(sandbox, "pay", payment=_payment(key="order-42"))
    other_tenant = provider_harness.call(sandbox, "pay", payment=_payment(key="order-42", tenant="globex"))
    assert again == first
    assert other_tenant.transaction_id != first.transaction_id
    with sqlite3.connect(sandbox.database) as connection:
        assert connection.execute("SELECT COUNT(*) FROM payments WHERE tenant = ?", (TENANT,)).fetchone() == (1,)
        # Amounts are decimal strings in the database, never floats.
        assert connection.execute("SELECT DISTINCT typeof(amount) FROM payments").fetchall() == [("text",)]
    with pytest.raises(PermanentError) as raised:
        provider_harness.call(sandbox, "pay", payment=_payment(amount="99.00", key="order-42"))
    assert raised.value.provider_code == "idempotency_error"


def test_sandbox_refunds_partially_then_refuses_an_over_refund(provider_harness: ProviderHarness) -> None:
    sandbox = provider_harness.build("sandbox")
    payment = provider_harness.call(sandbox, "pay", payment=_payment(amount="30.00"))
    refund = provider_harness.call(sandbox, "refund", refund=_refund(payment.transaction_id, "10.50"))
    assert refund.refund_id.startswith("sbx_re_")
    assert refund.amount == Decimal("10.50")
    assert refund.details["remaining"] == "19.50"
    with pytest.raises(PermanentError) as raised:
        provider_harness.call(sandbox, "refund", refund=_refund(payment.transaction_id, "19.51"))
    assert raised.value.provider_code == "amount_too_large"
    rest = provider_harness.call(sandbox, "refund", refund=_refund(payment.transaction_id, None))
    assert rest.amount == Decimal("19.50")
    with pytest.raises(PermanentError) as raised:
        provider_harness.call(sandbox, "refund", refund=_refund(payment.transaction_id, None))
    assert raised.value.provider_code == "charge_already_refunded"


def test_sandbox_concurrent_refunds_never_exceed_the_payment(provider_harness: ProviderHarness) -> None:
    sandbox = provider_harness.build("sandbox")
    payment = provider_harness.call(sandbox, "pay", payment=_payment(amount="10.00"))

    def refund_one() -> str:
        try:
            return str(provider_harness.call(sandbox, "refund", refund=_refund(payment.transaction_id, "1.00")).amount)
        except PermanentError as error:
            return error.provider_code or ""

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(lambda _: refund_one(), range(16)))
    assert sorted(outcomes) == ["1.00"] * 10 + ["charge_already_refunded"] * 6


def test_call_concurrently_returns_results_in_order_and_reports_every_failure(
    provider_harness: ProviderHarness,
) -> None:
    sandbox = provider_harness.build("sandbox")
    payment = provider_harness.call(sandbox, "pay", payment=_payment(amount="3.00"))
    calls = [{"refund": _refund(payment.transaction_id, amount)} for amount in ("1.00", "2.00")]
    refunds = provider_harness.call_concurrently(sandbox, "refund", calls)
    assert [str(refund.amount) for refund in refunds] == ["1.00", "2.00"]
    failed = r"2 of 2 concurrent refund\(\) calls raised: call 0: .*; call 1: "
    with pytest.raises(AssertionError, match=failed) as raised:
        provider_harness.call_concurrently(sandbox, "refund", calls)  # nothing is left to refund
    assert isinstance(raised.value.__cause__, PermanentError)

def test_sandbox_refund_of_unknown_or_foreign_transaction_is_not_found(provider_harness: ProviderHarness) -> None:
    sandbox = provider_harness.build("sandbox")
    with pytest.raises(NotFoundError):
        provider_harness.call(sandbox, "refund", refund=_refund("sbx_pi_doesnotexist", None))
    payment = provider_harness.call(sandbox, "pay", payment=_payment())
    with pytest.raises(NotFoundError):
        provider_harness.call(sandbox, "refund", refund=_refund(payment.transaction_id, None, tenant="globex"))


def test_sandbox_refunds_work_after_a_restart(provider_harness: ProviderHarness) -> None:
    payment = provider_harness.call(provider_harness.build("sandbox"), "pay", payment=_payment(amount="12.00"))
    restarted = provider_harness.build("sandbox")
    refund = provider_harness.call(restarted, "refund", refund=_refund(payment.transaction_id, None))
    assert refund.amount == Decimal("12.00")


def test_sandbox_refuses_production_mode(provider_harness: ProviderHarness) -> None:
    with pytest.raises(ConfigurationError, match="disabled in production mode"):
        provider_harness.build("sandbox", mode="production")


@pytest.mark.parametrize("amount", ["0", "-5.00"])
def test_sandbox_refuses_non_positive_amounts(provider_harness: ProviderHarness, amount: str) -> None:
    with pytest.raises(PermanentError):
        provider_harness.call(provider_harness.build("sandbox"), "pay", payment=_payment(amount=amount))


# --- file-source ------------------------------------------------------------------------------


def _sync(harness: ProviderHarness, provider: Any, data_type: str, **options: Any) -> list[dict[str, Any]]:
    request = SyncRequest(id=uuid.uuid4().hex, tenant=TENANT, data_type=data_type, options=options)
    return harness.call(provider, "sync", request=request).records


def test_file_source_supplier_id_filter_finds_exactly_that_supplier(provider_harness: ProviderHarness) -> None:
    source = provider_harness.build("file-source")
    records = _sync(provider_harness, source, "suppliers", supplierId="supplier_123")
    assert records == [
        {
            "id": "supplier_123",
            "name": "Test Supplier",
            "email": "supplier@example.com",
            "phone": "+1234567890",
            "address": "1 Supply Street, Springfield",
            "leadTimeDays": 7,
            "updated_at": "2024-01-10T09:00:00+00:00",
        }
    ]
    assert _sync(provider_harness, source, "suppliers", supplierId="supplier_999") == []
    # A record's own supplierId field wins over its id: shipments of a supplier.
    assert [s["id"] for s in _sync(provider_harness, source, "shipments", supplierId="supplier_123")] == [
        "shipment_001"
    ]


def test_file_source_parses_csv_inventory_with_numeric_quantities(provider_harness: ProviderHarness) -> None:
    source = provider_harness.build("file-source")
    records = _sync(provider_harness, source, "inventory")
    assert len(records) == 6
    assert {record["location"] for record in records} == {"WAREHOUSE-A", "WAREHOUSE-B"}
    widget = next(r for r in records if r["sku"] == "WIDGET-001" and r["location"] == "WAREHOUSE-A")
    assert widget == {
        "sku": "WIDGET-001",
        "location": "WAREHOUSE-A",
        "quantity": 5,
        "updated_at": "2024-03-01T08:00:00+00:00",
    }
    assert all(isinstance(record["quantity"], int) for record in records)
    in_b = _sync(provider_harness, source, "inventory", location="WAREHOUSE-B", limit=2)
    # Timestamped records come in (updated_at, sku, location) order: the order the cursor follows.
    assert [(r["sku"], r["location"]) for r in in_b] == [("BOLT-M8", "WAREHOUSE-B"), ("GADGET-100", "WAREHOUSE-B")]


def test_file_source_reads_a_custom_directory_relative_to_the_data_dir(provider_harness: ProviderHarness) -> None:
    folder = Path(provider_harness.data_dir) / "erp-export"
    folder.mkdir(parents=True)
    # A BOM, as spreadsheet exports write it, and fractional and blank quantities.
    (folder / "stock.csv").write_text(
        "\ufeffsku,location,quantity,reorder_level,price\nFLOUR,SHOP,2.5,10,3.10\nSALT,SHOP,,4,0.99\n", encoding="utf-8"
    )
    (folder / "orders.json").write_text(json.dumps([{"id": "o1", "since": "x"}, {"id": "o2"}]))
    source = provider_harness.build("file-source", {"directory": "erp-export"})
    stock = _sync(provider_harness, source, "stock")
    assert stock[0] == {"sku": "FLOUR", "location": "SHOP", "quantity": 2.5, "reorder_level": 10, "price": "3.10"}
    assert stock[1]["quantity"] is None
    assert _sync(provider_harness, source, "orders", orderId="o2") == [{"id": "o2"}]
    assert check_health(provider_harness, source).message == "file-source: 2 data types (orders, stock)"


def test_file_source_since_option_keeps_recently_updated_records(provider_harness: ProviderHarness) -> None:
    source = provider_harness.build("file-source")
    recent = _sync(provider_harness, source, "suppliers", since="2024-02-01T00:00:00+00:00")
    assert [supplier["id"] for supplier in recent] == ["supplier_456", "supplier_789"]


@pytest.mark.parametrize("data_type", ["orders", "../suppliers", "suppliers.json", ""])
def test_file_source_unknown_data_type_names_the_available_ones(
    provider_harness: ProviderHarness, data_type: str
) -> None:
    source = provider_harness.build("file-source")
    with pytest.raises(UnsupportedError, match="available data types: customers, inventory, shipments, suppliers"):
        _sync(provider_harness, source, data_type)


def test_file_source_reports_a_broken_file_as_configuration(provider_harness: ProviderHarness) -> None:
    folder = Path(provider_harness.data_dir) / "broken"
    folder.mkdir(parents=True)
    (folder / "items.json").write_text('{"not": "a list"}')
    source = provider_harness.build("file-source", {"directory": str(folder)})
    with pytest.raises(ConfigurationError, match="must hold a JSON list of objects"):
        _sync(provider_harness, source, "items")
    with pytest.raises(PermanentError, match="limit"):
        _sync(provider_harness, provider_harness.build("file-source"), "suppliers", limit="many")


# --- local-disk -------------------------------------------------------------------------------


def _file(key: str, data: bytes = b"data", content_type: str = "application/pdf") -> StoredFile:
    return StoredFile(
        key=key,
        tenant=TENANT,
        filename=key.rsplit("/", 1)[-1],
        content_type=content_type,
        size=len(data),
        category="invoices",
        metadata={"orderId": "42"},
    )


def _stream(data: bytes = b"x") -> UploadStream:
    return UploadStream(io.BytesIO(data))


@pytest.mark.parametrize(
    "key",
    [
        "../escape.txt",
        "acme/../../escape.txt",
        "/etc/passwd",
        "acme/./invoice.pdf",
        "acme//invoice.pdf",
        "acme\\..\\..\\escape.txt",
        ".meta/acme/x.json",
        "acme/.hidden",
        "",
    ],
)
def test_local_disk_refuses_keys_that_escape_the_root(provider_harness: ProviderHarness, key: str) -> None:
    disk = provider_harness.build("local-disk")
    for hook_name, arguments in (
        ("store", {"file": _file(key), "stream": _stream()}),
        ("store_read", {"key": key, "byte_range": None}),
        ("store_head", {"key": key}),
        ("store_delete", {"key": key}),
    ):
        with pytest.raises(PermanentError, match="refusing key"):
            provider_harness.call(disk, hook_name, **arguments)
    assert not (Path(provider_harness.data_dir).parent / "escape.txt").exists()


def test_local_disk_refuses_a_symlink_out_of_the_root(provider_harness: ProviderHarness, tmp_path: Path) -> None:
    disk = provider_harness.build("local-disk")
    outside = tmp_path / "outside"
    outside.mkdir()
    (disk.root / "acme").mkdir(parents=True)
    (disk.root / "acme" / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(PermanentError, match="outside the storage root"):
        provider_harness.call(disk, "store", file=_file("acme/link/evil.txt"), stream=_stream())
    assert list(outside.iterdir()) == []


def test_local_disk_keeps_content_type_and_metadata_in_a_sidecar(provider_harness: ProviderHarness) -> None:
    disk = provider_harness.build("local-disk", {"public_base_url": "https://files.example.com/hub/"})
    key = "acme/invoices/1700000000-ab12-invoice 7.pdf"
    stored = provider_harness.call(disk, "store", file=_file(key, b"%PDF-1.7"), stream=_stream(b"%PDF-1.7"))
    assert stored.url == "https://files.example.com/hub/acme/invoices/1700000000-ab12-invoice%207.pdf"
    sidecar = json.loads(disk.metadata_path(key).read_text())
    assert (sidecar["content_type"], sidecar["metadata"], sidecar["size"]) == ("application/pdf", {"orderId": "42"}, 8)
    assert sidecar["checksum"] == hashlib.sha256(b"%PDF-1.7").hexdigest()
    assert provider_harness.call(disk, "store_url", key=key, expires_in=60) is None
    assert provider_harness.call(disk, "store_delete", key=key) is True
    assert not disk.metadata_path(key).exists()
    assert [path.name for path in disk.root.rglob("*") if path.is_file()] == []


def test_local_disk_health_reports_an_unwritable_root(provider_harness: ProviderHarness) -> None:
    blocker = Path(provider_harness.data_dir) / "not-a-folder"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where the root should be")
    result = check_health(provider_harness, provider_harness.build("local-disk", {"root": str(blocker)}))
    assert result is not None and result.status == "error" and "not writable" in result.message


# --- event-log --------------------------------------------------------------------------------


def _event(topic: str = "inventory.events", key: str | None = "WIDGET-001", **data: Any) -> Event:
    return Event(id=uuid.uuid4().hex, tenant=TENANT, topic=topic, event_type="stock.updated", data=data, key=key)


def _publish(harness: ProviderHarness, provider: Any, event: Event) -> tuple[int, str]:
    result = harness.call(provider, "publish", event=event)
    return result.partition, result.offset


def test_event_log_offsets_survive_a_new_provider_instance(provider_harness: ProviderHarness) -> None:
    first = provider_harness.build("event-log")
    assert [_publish(provider_harness, first, _event(n=n)) for n in range(3)] == [(0, "0"), (0, "1"), (0, "2")]
    restarted = provider_harness.build("event-log")
    assert _publish(provider_harness, restarted, _event(n=3)) == (0, "3")
    # The first instance sees what the second appended (as another process would have).
    assert _publish(provider_harness, first, _event(n=4)) == (0, "4")
    lines = (first.directory / "inventory.events-0.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [record["offset"] for record in records] == [0, 1, 2, 3, 4]
    assert records[3]["value"]["data"] == {"n": 3}
    assert records[3]["value"]["tenant"] == TENANT and records[3]["key"] == "WIDGET-001"


def test_event_log_offsets_survive_another_process(provider_harness: ProviderHarness) -> None:
    provider = provider_harness.build("event-log", {"directory": "events"})
    assert _publish(provider_harness, provider, _event()) == (0, "0")
    script = (
        "import sys, uuid\n"
        "from hub.builtins.event_log import EventLog\n"
        "from hub.capabilities import Event, ProviderContext\n"
        "log = EventLog('other', {'directory': 'events', 'partitions': 1, 'fsync': True},"
        " ProviderContext(None, 'development', sys.argv[1]))\n"
        "print(log.publish(Event(uuid.uuid4().hex, 'acme', 'inventory.events', 'stock.updated', {})).offset)\n"
    )
    package_root = str(Path(hub.__file__).resolve().parent.parent)
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
    }
    completed = subprocess.run(
        [sys.executable, "-c", script, provider_harness.data_dir],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=True,
    )
    assert completed.stdout.strip() == "1"
    assert _publish(provider_harness, provider, _event()) == (0, "2")


def test_event_log_cuts_off_a_torn_last_line(provider_harness: ProviderHarness) -> None:
    provider = provider_harness.build("event-log")
    _publish(provider_harness, provider, _event())
    path = provider.directory / "inventory.events-0.jsonl"
    with path.open("ab") as handle:
        handle.write(b'{"offset": 1, "value": {"trunc')  # a writer that crashed mid-line
    assert _publish(provider_harness, provider_harness.build("event-log"), _event()) == (0, "1")
    assert [json.loads(line)["offset"] for line in path.read_text().splitlines()] == [0, 1]


def test_event_log_partitions_by_key_stably_and_round_robins_without_key(provider_harness: ProviderHarness) -> None:
    first = provider_harness.build("event-log", {"partitions": 3})
    second = provider_harness.build("event-log", {"partitions": 3})
    keys = [f"SKU-{n}" for n in range(12)]
    partitions = [_publish(provider_harness, first, _event(key=key))[0] for key in keys]
    assert partitions == [_publish(provider_harness, second, _event(key=key))[0] for key in keys]
    assert set(partitions) == {0, 1, 2}
    unkeyed = [_publish(provider_harness, first, _event(key=None))[0] for _ in range(6)]
    assert sorted(unkeyed) == [0, 0, 1, 1, 2, 2]


def test_event_log_gives_unique_contiguous_offsets_to_concurrent_publishers(provider_harness: ProviderHarness) -> None:
    first = provider_harness.build("event-log", {"fsync": False})
    second = provider_harness.build("event-log", {"fsync": False})  # same files, separate in-memory counts
    with ThreadPoolExecutor(max_workers=8) as pool:
        offsets = list(
            pool.map(lambda n: _publish(provider_harness, (first, second)[n % 2], _event(n=n))[1], range(200))
        )
    assert sorted(int(offset) for offset in offsets) == list(range(200))


@pytest.mark.parametrize("topic", ["", "has space", "slash/topic", "..", "x" * 250, "émoji"])
def test_event_log_refuses_invalid_topic_names(provider_harness: ProviderHarness, topic: str) -> None:
    provider = provider_harness.build("event-log")
    with pytest.raises(PermanentError, match="invalid topic name"):
        provider_harness.call(provider, "publish", event=_event(topic=topic))
    assert provider_harness.call(provider, "consumer_groups") == []


# --- outbox -----------------------------------------------------------------------------------


def _message(message_id: str = "msg-1", channel: str = "email", text: str = "Hello") -> Message:
    return Message(
        id=message_id,
        tenant=TENANT,
        channel=channel,
        recipients=[Recipient("ops@example.com"), Recipient("buyer@example.com", name="Buyer")],
        text=text,
        subject="Low stock",
    )


def test_outbox_writes_one_file_per_message_id(provider_harness: ProviderHarness) -> None:
    outbox = provider_harness.build("outbox")
    first = provider_harness.call(outbox, "notify", message=_message(text="first attempt"))
    retried = provider_harness.call(outbox, "notify", message=_message(text="retried"))
    assert [r.provider_message_id for r in first.results] == ["msg-1:0", "msg-1:1"]
    assert first == retried
    files = list(outbox.directory.rglob("*.json"))
    assert files == [outbox.directory / TENANT / "email" / "msg-1.json"]
    document = json.loads(files[0].read_text())
    assert document["text"] == "retried"
    assert [r["address"] for r in document["recipients"]] == ["ops@example.com", "buyer@example.com"]
    assert document["written_at"] and document["subject"] == "Low stock"


def test_outbox_logs_counts_not_addresses(provider_harness: ProviderHarness, caplog: pytest.LogCaptureFixture) -> None:
    outbox = provider_harness.build("outbox")
    with caplog.at_level(logging.INFO, logger="hub.provider"):
        provider_harness.call(outbox, "notify", message=_message())
    assert len(caplog.records) == 1
    line = caplog.records[0].getMessage()
    assert "2 recipient(s)" in line and "@example.com" not in line


@pytest.mark.parametrize("message_id", ["../../escape", "a/b", ".hidden", ""])
def test_outbox_refuses_ids_that_are_not_file_names(provider_harness: ProviderHarness, message_id: str) -> None:
    with pytest.raises(PermanentError, match="cannot be used as a file name"):
        provider_harness.call(provider_harness.build("outbox"), "notify", message=_message(message_id))


# --- templates --------------------------------------------------------------------------------

TEMPLATE_VARIABLES: dict[str, dict[str, Any]] = {
    "low_stock_alert": {
        "sku": "WIDGET-001",
        "location": "WAREHOUSE-A",
        "current_stock": 5,
        "threshold": 10,
        "item_name": 'Widget <script>alert("x")</script>',
    },
    "expiry_alert": {
        "sku": "MILK-1L",
        "expiry_date": "2024-03-10",
        "quantity": 24,
        "location": "COLD-1",
        "batch": "B7",
    },
    "daily_report": {
        "date": "2024-03-01",
        "summary": {"low_stock_items": 3, "orders_created": 2, "total_value": "1200.50"},
        "lines": ["Two suppliers are late", 'A "quoted"\nline'],
    },
    "purchase_order_created": {
        "po_number": "PO-2024-0042",
        "supplier": "Test Supplier",
        "total": "250.00",
        "currency": "USD",
        "expected_date": "2024-03-12",
        "items": [{"sku": "WIDGET-001", "quantity": 200, "name": "Widget", "unit_price": "1.25"}, "Freight"],
    },
    "critical_alert": {
        "title": "ERP sync failing",
        "message": "Three attempts failed\nsince 10:00",
        "severity": "high",
    },
    "custom": {"subject": "Stocktake on Friday", "message": "Please count aisle 4 & 5."},
}


def _render(definition: Any, variables: dict[str, Any]) -> dict[str, Any]:
    # The strictest sandbox (no mutating lists or dicts) and StrictUndefined, as the core renders them.
    text = ImmutableSandboxedEnvironment(undefined=StrictUndefined)
    html = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=True)
    rendered: dict[str, Any] = {"text": text.from_string(definition.text).render(variables)}
    if definition.subject is not None:
        rendered["subject"] = text.from_string(definition.subject).render(variables)
    if definition.html is not None:
        rendered["html"] = html.from_string(definition.html).render(variables)
    if definition.blocks is not None:
        rendered["blocks"] = json.loads(text.from_string(definition.blocks).render(variables))
    return rendered


def test_builtin_templates_cover_every_name_and_channel(provider_harness: ProviderHarness) -> None:
    names = {"low_stock_alert", "expiry_alert", "daily_report", "purchase_order_created", "critical_alert", "custom"}
    assert set(provider_harness.host.templates) == {(name, channel) for name in names for channel in CHANNELS}
    assert set(TEMPLATE_VARIABLES) == names


@pytest.mark.parametrize("variables_used", ["required", "all"])
@pytest.mark.parametrize(("name", "channel"), sorted((t.name, t.channel) for t in BUILTIN_TEMPLATES))
def test_builtin_template_renders(
    provider_harness: ProviderHarness, name: str, channel: str, variables_used: str
) -> None:
    definition = provider_harness.host.templates[(name, channel)]
    variables = TEMPLATE_VARIABLES[name]
    if variables_used == "required":
        variables = {key: variables[key] for key in definition.required}
    rendered = _render(definition, variables)
    assert rendered["text"].strip()
    if channel == "email":
        assert rendered["subject"].strip() and "\n" not in rendered["subject"]
        assert rendered["html"].startswith("<!DOCTYPE html>")
        assert "<script>" not in rendered["html"]
    if channel == "sms":
        assert len(rendered["text"]) < 160, rendered["text"]
        assert set(rendered) == {"text"}
    if channel == "chat":
        blocks = rendered["blocks"]
        assert isinstance(blocks, list) and blocks
        assert all(isinstance(block, dict) and block.get("type") for block in blocks)
        assert blocks[0]["type"] == "header" and len(blocks[0]["text"]["text"]) <= 150


@pytest.mark.parametrize("channel", CHANNELS)
def test_builtin_template_required_variables_are_really_required(provider_harness: ProviderHarness, channel: str) -> None:
    """Every variable a built-in template declares required is used by it: rendered through the hub's own
    TemplateLibrary (its environment, StrictUndefined) with the declared list emptied, so that only the
    template's text can notice the variable missing, leaving one out is a ValidationError naming it."""
    checked = 0
    for name, variables in TEMPLATE_VARIABLES.items():
        definition = provider_harness.host.templates[(name, channel)]
        undeclared = dataclasses.replace(definition, required=())
        library = TemplateLibrary({(name, channel): undeclared}, {})
        for missing in definition.required:
            given = {key: value for key, value in variables.items() if key != missing}
            with pytest.raises(ValidationError, match=f"needs data.{missing}$") as raised:
                library.render(name, channel, given, None)
            assert raised.value.errors == {"data": {missing: [f"used by template {name!r} ({channel}) but not given"]}}
            checked += 1
    assert checked >= len(TEMPLATE_VARIABLES)


def test_chat_blocks_escape_values_as_json(provider_harness: ProviderHarness) -> None:
    tricky = 'He said "hi" \\ and left\n<!channel> </script>'
    blocks = _render(provider_harness.host.templates[("custom", "chat")], {"subject": tricky, "message": tricky})[
        "blocks"
    ]
    assert blocks[1]["text"] == {"type": "plain_text", "text": tricky}


# --- the conformance kit can fail ---------------------------------------------------------------


class LossyNotifier(Provider):
    """Drops the last recipient's result: the classic batching bug."""

    type_name = "lossy"
    capability = "notify"
    channels = ("sms",)

    @hookimpl
    def notify(self, message: Message) -> NotifyResult:
        return NotifyResult([RecipientResult(r.address, "sent") for r in message.recipients[:-1]])


class ShuffledNotifier(LossyNotifier):
    type_name = "shuffled"

    @hookimpl
    def notify(self, message: Message) -> NotifyResult:
        return NotifyResult([RecipientResult(r.address, "sent") for r in reversed(message.recipients)])


class ForgetfulStore(Provider):
    """Returns empty content for a missing key instead of raising NotFoundError."""

    type_name = "forgetful"
    capability = "store"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.files: dict[str, tuple[bytes, StoredFile]] = {}

    @hookimpl
    def store(self, file: StoredFile, stream: UploadStream) -> StoredFile:
        self.files[file.key] = (b"".join(iter(lambda: stream.read(65536), b"")), file)
        return file

    @hookimpl
    def store_read(self, key: str, byte_range: tuple[int, int | None] | None) -> Any:
        first, last = byte_range or (0, None)
        data = self.files[key][0] if key in self.files else b""
        return io.BytesIO(data[first : None if last is None else last + 1])

    @hookimpl
    def store_head(self, key: str) -> StoredObject:
        data, file = self.files.get(key, (b"", None))
        return StoredObject(key, len(data), file and file.content_type, dict(file.metadata) if file else {})

    @hookimpl
    def store_delete(self, key: str) -> bool:
        return self.files.pop(key, None) is not None


class GenerousGateway(Provider):
    """Refunds whatever it is asked to, even more than was paid."""

    type_name = "generous"
    capability = "pay"

    @hookimpl
    def pay(self, payment: PaymentRequest) -> Any:
        from hub.capabilities import PaymentResult

        return PaymentResult(f"pi_{payment.idempotency_key}", "succeeded", payment.amount, payment.currency)

    @hookimpl
    def refund(self, refund: RefundRequest) -> Any:
        from hub.capabilities import RefundResult

        return RefundResult(uuid.uuid4().hex, "succeeded", refund.amount or Decimal("15.00"), refund.currency)

    @hookimpl
    def payment_status(self, lookup: PaymentLookup) -> Any:
        from hub.capabilities import PaymentResult

        # It forgets nothing and knows nothing: every payment it ever made is still "succeeded".
        transaction_id = lookup.transaction_id or f"pi_{lookup.idempotency_key}"
        if not transaction_id.startswith("pi_contract-pay"):
            return None
        return PaymentResult(transaction_id, "succeeded", Decimal("25.00"), "USD")


class PanickyHealth(GenerousGateway):
    type_name = "panicky"

    @hookimpl
    def health(self) -> HealthResult:
        raise RuntimeError("credentials file missing")


class CarelessSource(Provider):
    type_name = "careless"
    capability = "sync"

    @hookimpl
    def sync(self, request: SyncRequest) -> Any:
        from hub.capabilities import SyncResult

        return SyncResult([{"sku": "A", "location": "X", "quantity": 1}])  # whatever the data type


@pytest.mark.parametrize(
    ("provider_class", "check", "complaint"),
    [
        (LossyNotifier, lambda h, p: check_notify(h, p), "returned 1 results for 2 recipients"),
        (ShuffledNotifier, lambda h, p: check_notify(h, p), "keep the order of message.recipients"),
        (ForgetfulStore, lambda h, p: check_store(h, p, memory_bound=0), "it must raise NotFoundError"),
        (GenerousGateway, check_pay, "must raise PermanentError"),
        (PanickyHealth, check_health, "health() raised RuntimeError"),
        (CarelessSource, lambda h, p: check_sync(h, p, "inventory"), "unknown data type"),
    ],
)
def test_contract_checks_fail_for_a_broken_provider(
    provider_harness: ProviderHarness, provider_class: type, check: Any, complaint: str
) -> None:
    provider_harness.add_provider_classes(provider_class)
    provider = provider_harness.build(provider_class.type_name)
    with pytest.raises(AssertionError) as raised:
        check(provider_harness, provider)
    assert complaint in str(raised.value)
    assert f"{provider_class.type_name} provider" in str(raised.value)


class UndecoratedHealth(LossyNotifier):
    type_name = "undecorated"

    def health(self) -> HealthResult:
        return HealthResult("success", "fine")


class UndeclaredSecret(LossyNotifier):
    type_name = "undeclared-secret"
    secret_settings = ("api_key",)

    class Settings(Schema):
        token = fields.String()

    settings_schema = Settings


class MisnamedArgument(LossyNotifier):
    type_name = "misnamed"

    @hookimpl
    def notify(self, msg: Message) -> NotifyResult:  # the hook passes `message`
        return NotifyResult([])


@pytest.mark.parametrize(
    ("provider_class", "complaint"),
    [
        (UndecoratedHealth, "health() looks like the health hook but is not decorated with @hookimpl"),
        (UndeclaredSecret, "secret_settings names ['api_key'], which settings_schema does not declare"),
        (MisnamedArgument, "its parameters must be named as in the hookspec: notify(message)"),
    ],
)
def test_class_check_fails_for_a_broken_class(provider_class: type, complaint: str) -> None:
    with pytest.raises(AssertionError) as raised:
        check_provider_class(provider_class)
    assert complaint in str(raised.value)


def test_harness_refuses_a_provider_without_its_required_hooks(provider_harness: ProviderHarness) -> None:
    class HalfAGateway(Provider):
        type_name = "half"
        capability = "pay"

        @hookimpl
        def pay(self, payment: PaymentRequest) -> Any:
            raise PermanentError("never")

    with pytest.raises(AssertionError, match="a pay provider must implement refund"):
        provider_harness.add_provider_classes(HalfAGateway)


def test_harness_call_names_a_missing_hook(provider_harness: ProviderHarness) -> None:
    outbox = provider_harness.build("outbox")
    with pytest.raises(AssertionError, match="does not implement pay"):
        provider_harness.call(outbox, "pay", payment=_payment())
    with pytest.raises(AssertionError, match="not a provider hook"):
        provider_harness.call(outbox, "register_providers", register=print)


def test_harness_calls_only_the_providers_own_hook(provider_harness: ProviderHarness) -> None:
    provider_harness.add_provider_classes(LossyNotifier)
    lossy = provider_harness.build("lossy")
    outbox = provider_harness.build("outbox")
    message = _message(channel="sms")
    assert len(provider_harness.call(outbox, "notify", message=message).results) == 2
    assert len(provider_harness.call(lossy, "notify", message=message).results) == 1


def test_harness_close_unregisters_the_providers(tmp_path: Path) -> None:
    harness = ProviderHarness(tmp_path)
    harness.load_builtins()
    provider = harness.build("outbox", name="mail")
    assert harness.host.pm.get_plugin("mail") is provider
    harness.close()
    assert harness.host.pm.get_plugin("mail") is None and harness.providers == []
