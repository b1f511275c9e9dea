"""Configuration, the Python API, logs and redaction, PostgreSQL and the CLI (sync schedules: tests/test_sync.py)."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from hub import IntegrationManager
from hub.auth import TokenStore
from hub.cli import main as cli
from hub.config import load_config, validate_config
from hub.errors import ConfigError, ValidationError
from hub.observability import configure_logging, redact_text
from tests.conftest import REPO, base_config

# --- hub.yaml ----------------------------------------------------------------------------------


def test_the_repo_hub_yaml_is_valid_and_uses_the_embedded_defaults() -> None:
    config = load_config(REPO / "hub.yaml", environ={})
    assert config["mode"] == "development" and config["database_url"] is None and config["rate_limits"]["storage"] == "memory://"
    assert {entry["type"] for entry in config["providers"].values()} == {"outbox", "local-disk", "event-log", "file-source", "sandbox"}
    assert config["data_dir"] == str((REPO / "var").resolve())


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ({"mode": "staging"}, "mode"),
        ({"services": {"email": {"providers": ["nowhere"]}}}, "services.email.providers.0"),
        ({"services": {"telepathy": {"providers": []}}}, "services.telepathy"),
        ({"rate_limits": {"limits": {"email": "lots"}}}, "rate_limits.limits.email"),
        ({"retry": {"attempts": 0}}, "retry.attempts"),
        ({"providers": {"x": {"colour": "red"}}}, "providers.x.type"),
        ({"queue": {"backend": "carrier-pigeon"}}, "queue.backend"),
        ({"surprise": 1}, "surprise"),
        ({"sync_schedules": [{"data_type": "inventory", "cron": "every day"}]}, "sync_schedules.0.cron"),
    ],
)
def test_a_bad_hub_yaml_names_the_key(raw: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as raised:
        validate_config(raw, environ={})
    assert raised.value.path.startswith(path), raised.value


def test_environment_interpolation(tmp_path: Path) -> None:
    file = tmp_path / "hub.yaml"
    file.write_text("providers:\n  mail:\n    type: outbox\n    directory: ${OUTBOX_DIR:-mail}\ndatabase_url: ${DB}\n")
    config = load_config(file, environ={"DB": "sqlite:///x.db"})
    assert config["providers"]["mail"]["directory"] == "mail" and config["database_url"] == "sqlite:///x.db"
    with pytest.raises(ConfigError, match="database_url: environment variable DB is not set"):
        load_config(file, environ={})
    file.write_text("mode: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(file, environ={})


def test_tenant_overrides_are_validated_at_start_up(tmp_path: Path) -> None:
    config = base_config(tmp_path / "var", tenants={"acme": {"providers": {"local": {"root": 42}}}})
    with pytest.raises(ConfigError, match="tenants.acme.providers.local.root"):
        IntegrationManager(config, environ={}, entry_points=False)


# --- the Python API (seed examples) --------------------------------------------------------------


def test_python_api_mirrors_the_seed_examples(manager: IntegrationManager) -> None:
    sent = manager.send_notification(
        type="email",
        recipients=[{"name": "Ops", "email": "ops@example.com", "phone": "+14155552671"}],
        template="low_stock_alert",
        data={"sku": "WIDGET-001", "location": "WAREHOUSE-A", "current_stock": 5, "threshold": 10},
        priority="high",
        fallback_services=["sms"],
        tenant_id="acme",
    )
    assert sent["status"] == "succeeded" and sent["transporter"] == "outbox"
    event = manager.publish_event("sales-events", "sales.order.created", {"orderId": "SO-1", "totalAmount": 99.5, "currency": "USD"}, tenant_id="acme")
    assert event["success"] and event["topic"] == "sales-events"
    synced = manager.sync_external_data("acme", "suppliers", {"supplierId": "supplier_123"})
    assert synced["count"] == 1
    paid = manager.process_payment(10, "USD", order_id="o-1", tenant_id="acme")
    refunded = manager.refund(paid["paymentId"], amount="4.00", tenant_id="acme")
    assert refunded["amount"] == 4.0
    uploaded = manager.upload_file("po.txt", b"PO-1", category="purchase-orders", tenant_id="acme")
    assert uploaded["fileKey"].startswith("acme/purchase-orders/")
    snapshots = manager.sync_all_inventory("acme")
    assert snapshots["local-files"]["success"] and snapshots["local-files"]["count"] > 0
    assert manager.status()["total"] == 7 and manager.health()["email"]["status"] == "healthy"
    with pytest.raises(ValidationError):
        manager.send_notification(type="email", recipients=[], tenant_id="acme")


# --- logs and redaction --------------------------------------------------------------------------


def test_redaction_masks_secrets_cards_emails_and_phones() -> None:
    text = redact_text(
        "to jane.doe@example.com +14155552671 card 4242 4242 4242 4242 Authorization: Bearer abcdefghijklmnop "
        "api_key=sk_test_51abcdef password: hunter22 token hub_abcdefghijklmnopqrstuvwxyz123"
    )
    for secret in ("jane.doe@example.com", "4155552671", "4242 4242 4242 4242", "abcdefghijklmnop", "sk_test_51abcdef", "hunter22", "hub_abcdefghijklmnopqrstuvwxyz123"):
        assert secret not in text, (secret, text)
    assert "j***@example.com" in text and "****4242" in text and "2671" in text


def test_logs_are_json_with_request_ids_and_no_personal_data(client: Any, headers: dict[str, str]) -> None:
    stream = io.StringIO()
    handler = configure_logging("INFO", stream=stream)
    try:
        client.post(
            "/api/integrations/notifications",
            json={"type": "sms", "recipients": [{"phone": "+14155552671", "email": "jane@example.com"}], "data": {"subject": "s", "message": "m"}},
            headers={**headers, "X-Request-ID": "req-log-1"},
        )
        client.post(
            "/api/integrations/payments",
            json={"amount": 5, "currency": "USD", "paymentMethod": "4000000000000002"},
            headers={**headers, "X-Request-ID": "req-log-2"},
        )
        logging.getLogger("hub.test").info("token %s for %s", headers["Authorization"], "jane@example.com")
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    assert any(line.get("request_id") == "req-log-1" for line in lines)
    everything = stream.getvalue()
    for secret in ("4155552671", "jane@example.com", "4000000000000002", headers["Authorization"].split()[1]):
        assert secret not in everything


# --- PostgreSQL ------------------------------------------------------------------------------------


def test_records_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    config = base_config(tmp_path / "var", database_url=postgres_url)
    hub = IntegrationManager(config, environ={}, entry_points=False)
    try:
        assert hub.db.engine.dialect.name == "postgresql"
        from hub.api import create_app

        client = create_app(manager=hub).test_client()
        headers = {"Authorization": f"Bearer {hub.tokens.create('pg')[1]}", "X-Tenant-ID": "pg", "Idempotency-Key": "pg-1"}
        body = {"amount": 7.5, "currency": "USD"}
        first = client.post("/api/integrations/payments", json=body, headers=headers)
        again = client.post("/api/integrations/payments", json=body, headers=headers)
        assert first.status_code == 201 and first.get_json() == again.get_json()
        accepted = hub.sync_external_data("pg", "inventory", asynchronous=True)
        hub.run_record(accepted["jobId"])
        assert hub.get_record(accepted["jobId"], "pg").status == "succeeded"
        assert len(hub.audit_log("pg")) >= 2
    finally:
        hub.close()


# --- CLI -------------------------------------------------------------------------------------------


def test_token_cli_create_list_rotate_revoke(tmp_path: Path) -> None:
    (tmp_path / "hub.yaml").write_text(yaml.safe_dump({"data_dir": "var"}))
    runner = CliRunner()
    config = ["--config", str(tmp_path / "hub.yaml")]
    created = runner.invoke(cli, [*config, "token", "create", "--tenant", "demo", "--name", "ci"])
    assert created.exit_code == 0, created.output
    token = created.stdout.strip().splitlines()[-1]
    listed = json.loads(runner.invoke(cli, [*config, "token", "list", "--json"]).stdout)
    token_id = listed[0]["id"]
    rotated = runner.invoke(cli, [*config, "token", "rotate", token_id, "--grace", "120"])
    new_token = rotated.stdout.strip().splitlines()[-1]
    assert new_token.startswith("hub_") and new_token != token
    hub = IntegrationManager(load_config(tmp_path / "hub.yaml", environ={}), environ={}, entry_points=False)
    try:
        assert hub.tokens.verify(token) is not None and hub.tokens.verify(new_token) is not None
        assert runner.invoke(cli, [*config, "token", "revoke", token_id]).exit_code == 0
        # Revoked in another process: refused once this process's short verification cache lapses.
        assert TokenStore(hub.db).verify(token) is None
        assert hub.tokens.verify(new_token) is not None
        assert runner.invoke(cli, [*config, "token", "revoke", "tok_nope"]).exit_code != 0
    finally:
        hub.close()


def test_plugins_and_check_commands(tmp_path: Path) -> None:
    runner = CliRunner(env={"HUB_PLUGINS_ALLOW": ""})  # hermetic: only the built-ins, whatever is installed
    (tmp_path / "hub.yaml").write_text((REPO / "hub.yaml").read_text())
    listed = runner.invoke(cli, ["--config", str(tmp_path / "hub.yaml"), "plugins", "--json"])
    assert listed.exit_code == 0 and {"outbox", "sandbox"} <= {p["name"] for p in json.loads(listed.stdout)}
    checked = runner.invoke(cli, ["--config", str(tmp_path / "hub.yaml"), "check"])
    assert checked.exit_code == 0 and "OK" in checked.stdout
    (tmp_path / "bad.yaml").write_text("retry: {attempts: 0}\n")
    bad = runner.invoke(cli, ["--config", str(tmp_path / "bad.yaml"), "check"])
    assert bad.exit_code != 0 and "retry.attempts" in bad.output
