"""notify: notifications through the REST and Python APIs, templates, recipients, bulk sends, and the
transactions one inline send costs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from hub import IntegrationManager
from hub.api import create_app
from hub.errors import ValidationError
from tests.conftest import API, base_config, data_of, error_of
from tests.test_api import SEED_NOTIFICATION


def test_test_notification(client: Any, headers: dict[str, str], hub_config: dict[str, Any]) -> None:
    result = data_of(client.post(f"{API}/test/notification", json=SEED_NOTIFICATION, headers=headers))
    assert result["success"] is True and result["messageId"] and result["transporter"] == "outbox"
    written = list(Path(hub_config["data_dir"], "outbox", "demo", "email").glob("*.json"))
    assert len(written) == 1
    message = json.loads(written[0].read_text())
    assert message["subject"] == "Test Notification"


def test_invalid_recipients_are_reported_and_the_rest_still_sent(client: Any, headers: dict[str, str]) -> None:
    body = {**SEED_NOTIFICATION, "recipients": [{"email": "good@example.com"}, {"email": "broken@"}, {"name": "no address"}]}
    result = data_of(client.post(f"{API}/notifications", json=body, headers=headers))
    statuses = [r["status"] for r in result["recipients"]]
    assert statuses == ["sent", "failed", "failed"] and result["status"] == "partial"
    assert "invalid email" in result["recipients"][1]["error"]


def test_sms_numbers_are_formatted_to_e164_with_the_tenant_region(client: Any, headers: dict[str, str]) -> None:
    body = {"type": "sms", "recipients": [{"phone": "(415) 555-2671"}, {"phone": "+44 20 7946 0958"}, {"phone": "12"}], "template": "critical_alert", "data": {"title": "Freezer", "message": "Temperature high"}}
    result = data_of(client.post(f"{API}/notifications", json=body, headers=headers))
    assert [r.get("address") for r in result["recipients"][:2]] == ["+14155552671", "+442079460958"]
    assert result["recipients"][2]["status"] == "failed"


def test_bulk_notification_is_accepted_with_202_and_delivered_by_a_worker(client: Any, manager: Any, headers: dict[str, str], hub_config: dict[str, Any]) -> None:
    recipients = [{"email": f"user{i}@example.com"} for i in range(60)]
    body = {"type": "email", "recipients": recipients, "template": "low_stock_alert", "data": {"sku": "W-1", "location": "A", "current_stock": 5, "threshold": 10}}
    accepted = data_of(client.post(f"{API}/notifications", json=body, headers=headers), 202)
    assert accepted["status"] == "queued"
    manager.run_record(accepted["messageId"])
    done = data_of(client.get(f"{API}/notifications/{accepted['messageId']}", headers=headers))
    assert done["status"] == "succeeded" and done["sent"] == 60
    record = data_of(client.get(f"{API}/deliveries/{accepted['messageId']}", headers=headers))
    assert record["attempts"] == 1 and record["provider"] == "outbox" and record["status"] == "succeeded"
    assert len(record["recipients"]) == 60 and record["recipients"][59]["status"] == "sent"


def test_tenants_save_their_own_templates(client: Any, manager: Any, headers: dict[str, str], hub_config: dict[str, Any]) -> None:
    template = {"channel": "email", "subject": "Reorder {{ sku }}", "text": "Reorder {{ sku }} now ({{ current_stock }} left).", "required": ["sku"]}
    saved = data_of(client.put(f"{API}/templates/low_stock_alert", json=template, headers=headers))
    assert saved == {"name": "low_stock_alert", "channel": "email", "source": "tenant:demo"}
    listed = {(t["name"], t["channel"]): t for t in data_of(client.get(f"{API}/templates", headers=headers))["items"]}
    assert listed[("low_stock_alert", "email")]["source"] == "tenant:demo" and listed[("low_stock_alert", "sms")]["source"] == "templates"
    preview = data_of(client.post(f"{API}/templates/low_stock_alert/preview", json={"channel": "email", "data": {"sku": "W-9", "current_stock": 2}}, headers=headers))
    assert preview["subject"] == "Reorder W-9"
    sent = data_of(client.post(f"{API}/notifications", json={"type": "email", "recipients": [{"email": "a@example.com"}], "template": "low_stock_alert", "data": {"sku": "W-9", "current_stock": 2}}, headers=headers))
    written = json.loads(next(Path(hub_config["data_dir"], "outbox", "demo", "email").glob("*.json")).read_text())
    assert sent["status"] == "succeeded" and written["subject"] == "Reorder W-9"
    # Another tenant still gets the built-in template.
    other = {"Authorization": f"Bearer {manager.tokens.create('acme')[1]}", "X-Tenant-ID": "acme"}
    built_in = data_of(client.post(f"{API}/templates/low_stock_alert/preview", json={"channel": "email", "data": {"sku": "W-9", "location": "A", "current_stock": 2, "threshold": 5}}, headers=other))
    assert built_in["subject"] != "Reorder W-9"
    missing = error_of(client.post(f"{API}/templates/low_stock_alert/preview", json={"channel": "email", "data": {"current_stock": 2}}, headers=headers), 422)
    assert "sku" in json.dumps(missing["errors"])
    broken = error_of(client.put(f"{API}/templates/bad", json={"channel": "sms", "text": "{% if %}"}, headers=headers), 422)
    assert "text" in broken["errors"]
    error_of(client.put(f"{API}/templates/bad", json={"channel": "fax", "text": "x"}, headers=headers), 422)
    data_of(client.delete(f"{API}/templates/low_stock_alert/email", headers=headers))
    error_of(client.delete(f"{API}/templates/low_stock_alert/email", headers=headers), 404)


def test_tenant_templates_override_the_built_in_ones(tmp_path: Path) -> None:
    template = {"channel": "email", "subject": "Stock low: {{ sku }}", "text": "Only {{ current_stock }} left of {{ sku }}.", "required": ["sku"]}
    hub = IntegrationManager(base_config(tmp_path / "var", tenants={"acme": {"templates": {"low_stock_alert": [template]}}}), environ={}, entry_points=False)
    try:
        data = {"sku": "W-1", "location": "A", "current_stock": 2, "threshold": 5}
        assert hub.templates.render("low_stock_alert", "email", data, "acme").subject == "Stock low: W-1"
        assert hub.templates.render("low_stock_alert", "email", data, "other").subject != "Stock low: W-1"
        with pytest.raises(ValidationError) as raised:
            hub.templates.render("low_stock_alert", "email", {"current_stock": 1}, "acme")
        assert "sku" in json.dumps(raised.value.errors)
    finally:
        hub.close()


def test_templates_are_sandboxed_and_html_is_escaped(manager: IntegrationManager) -> None:
    rendered = manager.templates.render("custom", "email", {"subject": "Hi", "message": "<script>alert(1)</script>"}, "t")
    assert "<script>" not in (rendered.html or "") and "&lt;script&gt;" in (rendered.html or "")
    from hub.config import validate_config as validate

    evil = {"templates": {"evil": [{"channel": "sms", "text": "{{ ''.__class__.__mro__[1].__subclasses__() }}"}]}}
    hub_config = {**manager.config, "templates": validate(evil, environ={})["templates"]}
    from hub.delivery import TemplateLibrary

    library = TemplateLibrary(manager.host.templates, hub_config)
    with pytest.raises(ValidationError, match="failed to render"):
        library.render("evil", "sms", {}, None)


@pytest.mark.parametrize("idempotency_key", [None, "walk-1"])
def test_an_inline_email_costs_two_transactions_three_with_a_key(client: Any, manager: IntegrationManager, headers: dict[str, str], idempotency_key: str | None) -> None:
    body = {"type": "email", "recipients": [{"email": "walk@example.com"}], "template": "custom", "data": {"subject": "s", "message": "m"}}
    request_headers = {**headers, **({"Idempotency-Key": idempotency_key} if idempotency_key else {})}
    data_of(client.post(f"{API}/notifications", json=body, headers=request_headers))  # warm: token and template caches
    if idempotency_key:
        request_headers["Idempotency-Key"] = idempotency_key + "-b"
    commits: list[int] = []
    listener = lambda _connection: commits.append(1)  # noqa: E731
    event.listen(manager.db.engine, "commit", listener)
    try:
        sent = data_of(client.post(f"{API}/notifications", json=body, headers=request_headers))
    finally:
        event.remove(manager.db.engine, "commit", listener)
    assert sent["status"] == "succeeded" and sent["recipients"][0]["status"] == "sent"
    # The record (with the key's claim), then outcomes + status + audit + idempotent answer together.
    assert len(commits) == (3 if idempotency_key else 2), commits
    stored = manager.get_record(sent["messageId"], "demo").to_dict()
    assert stored["status"] == "succeeded" and stored["result"]["sent"] == 1
    audit = data_of(client.get(f"{API}/audit?limit=5", headers=headers))["items"]
    assert {entry["operation"] for entry in audit} >= {"notify", "POST /api/integrations/notifications"}
    assert manager.notify.view(manager.get_record(sent["messageId"], "demo"))["recipients"] == sent["recipients"]


def test_python_api_validates_its_arguments_like_the_rest_api(manager: IntegrationManager) -> None:
    with pytest.raises(ValidationError) as refused:
        manager.send_notification("fax", [{"email": "a@example.com"}], data={"subject": "s", "message": "m"}, tenant_id="t")
    assert "type" in refused.value.errors
    with pytest.raises(ValidationError) as refused:
        manager.send_notification("email", [{"email": "a@example.com"}], priority="urgent", data={"subject": "s", "message": "m"}, tenant_id="t")
    assert "priority" in refused.value.errors


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_text_the_database_cannot_store_is_refused_before_anything_is_sent(tmp_path: Path, database: str, request: pytest.FixtureRequest) -> None:
    # PostgreSQL refuses NUL in text and JSON: found after the send, the record stayed `running` and recovery
    # would have sent it again. A lone surrogate is not text at all (it cannot be encoded).
    overrides = {"database_url": str(request.getfixturevalue("postgres_url"))} if database == "postgresql" else {}
    hub = IntegrationManager(base_config(tmp_path / "var", **overrides), environ={}, entry_points=False)
    try:
        client = create_app(manager=hub).test_client()
        headers = {"Authorization": f"Bearer {hub.tokens.create('demo', 'tests')[1]}", "X-Tenant-ID": "demo"}
        outbox = Path(hub.config["data_dir"], "outbox")
        bodies = {
            "name": '{"type": "email", "recipients": [{"email": "a@example.com", "name": "A\\u0000B"}], "data": {"subject": "s", "message": "m"}}',
            "message": '{"type": "email", "recipients": [{"email": "a@example.com"}], "data": {"subject": "s", "message": "m\\ud800"}}',
        }
        for field, body in bodies.items():
            refused = error_of(client.post(f"{API}/notifications", data=body, content_type="application/json", headers=headers), 422)
            assert field in json.dumps(refused.get("errors", refused)), refused
        for recipients, data in (([{"email": "a@example.com", "name": "A\x00B"}], {"subject": "s", "message": "m"}), ([{"email": "a@example.com"}], {"subject": "s\ud800", "message": "m"})):
            with pytest.raises(ValidationError) as raised:  # the Python API: no schema in front of it
                hub.send_notification("email", recipients, data=data, tenant_id="demo")
            assert set(raised.value.errors) <= {"recipients.0.name", "data.subject"} and raised.value.errors
        assert not list(outbox.rglob("*.json")), "nothing may be sent"
        assert hub.runtime.ledger.list("demo", "notification") == []
        # The same recipient with a storable name goes out and is recorded.
        sent = hub.send_notification("email", [{"email": "a@example.com", "name": "A B"}], data={"subject": "s", "message": "m"}, tenant_id="demo")
        assert sent["status"] == "succeeded" and sent["recipients"][0]["name"] == "A B"
    finally:
        hub.close()
