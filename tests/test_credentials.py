"""Provider credentials per tenant through the API: encrypted at rest, never returned, audited, in effect without a
restart, and the previous webhook secret still accepted for its grace period (the sandbox gateway signs webhooks)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from hub import IntegrationManager
from hub.api import create_app
from hub.builtins.sandbox import sign_webhook
from hub.records import AuditEntry, StoredCredential
from tests.conftest import API, base_config, data_of, error_of

OLD_KEY, NEW_KEY = Fernet.generate_key().decode(), Fernet.generate_key().decode()


def make(tmp_path: Path, keys: str) -> IntegrationManager:
    return IntegrationManager(base_config(tmp_path / "var"), environ={"HUB_CREDENTIAL_KEYS": keys}, entry_points=False)


@pytest.fixture
def hub(tmp_path: Path) -> Any:
    manager = make(tmp_path, OLD_KEY)
    yield manager
    manager.close()


def webhook(client: Any, secret: str, event_id: str) -> Any:
    body = json.dumps({"id": event_id, "transaction_id": "txn_unknown", "status": "succeeded", "type": "payment"}).encode()
    headers = {"Content-Type": "application/json", "Sandbox-Signature": sign_webhook(secret, body)}
    return client.post(f"{API}/webhooks/sandbox?tenant=demo", data=body, headers=headers)


def test_credentials_are_stored_encrypted_never_shown_audited_and_rotated_with_a_grace_period(hub: IntegrationManager, tmp_path: Path) -> None:
    client = create_app(manager=hub).test_client()
    headers = {"Authorization": f"Bearer {hub.tokens.create('demo', 'finance-app')[1]}", "X-Tenant-ID": "demo"}
    assert webhook(client, "first-secret", "e1").status_code == 401  # no secret configured yet

    view = data_of(client.put(f"{API}/credentials/sandbox", json={"settings": {"webhook_secret": "first-secret"}}, headers=headers))
    assert view["fields"] == ["webhook_secret"] and view["version"] == 1 and "first-secret" not in json.dumps(view)
    assert data_of(webhook(client, "first-secret", "e2"))["received"] == 1  # in effect at once, no restart

    # Rotation: the new secret works at once, the old one still verifies during the grace period.
    data_of(client.put(f"{API}/credentials/sandbox", json={"settings": {"webhook_secret": "second-secret"}, "graceSeconds": 3600}, headers=headers))
    assert data_of(webhook(client, "second-secret", "e3"))["received"] == 1
    assert data_of(webhook(client, "first-secret", "e4"))["received"] == 1
    assert webhook(client, "made-up-secret", "e5").status_code == 401
    # No grace: the old secret is refused at once.
    data_of(client.put(f"{API}/credentials/sandbox", json={"settings": {"webhook_secret": "third-secret"}, "graceSeconds": 0}, headers=headers))
    assert webhook(client, "second-secret", "e6").status_code == 401

    listed = data_of(client.get(f"{API}/credentials", headers=headers))["items"]
    assert [(item["provider"], item["version"], item["updatedBy"]) for item in listed] == [("sandbox", 3, "token:finance-app")]
    assert "secret" not in json.dumps(listed).replace("webhook_secret", "")
    with hub.db.session() as session:
        stored = session.get(StoredCredential, ("demo", "sandbox"))
        assert stored is not None and "third-secret" not in stored.ciphertext and "second-secret" not in (stored.previous_ciphertext or "")
        audit = session.scalars(select(AuditEntry).where(AuditEntry.operation == "credentials_set")).all()
    assert len(audit) == 3 and all("secret" not in (row.detail or "").replace("webhook_secret", "") for row in audit)

    # Another tenant sees none of it.
    other = {"Authorization": f"Bearer {hub.tokens.create('acme', 'x')[1]}", "X-Tenant-ID": "acme"}
    assert data_of(client.get(f"{API}/credentials", headers=other))["items"] == []


def test_bad_settings_are_refused_and_a_missing_key_is_a_clear_503(hub: IntegrationManager, tmp_path: Path) -> None:
    client = create_app(manager=hub).test_client()
    headers = {"Authorization": f"Bearer {hub.tokens.create('demo', 'app')[1]}", "X-Tenant-ID": "demo"}
    refused = error_of(client.put(f"{API}/credentials/sandbox", json={"settings": {"settle_after": "soon"}}, headers=headers), 422)
    assert "settings" in refused["errors"] and "settle_after" in refused["errors"]["settings"][0]
    assert error_of(client.put(f"{API}/credentials/nope", json={"settings": {"a": "b"}}, headers=headers), 404)
    assert error_of(client.put(f"{API}/credentials/sandbox", json={}, headers=headers), 422)["errors"].keys() == {"settings"}
    keyless = make(tmp_path / "other", "")
    try:
        keyless_client = create_app(manager=keyless).test_client()
        token = {"Authorization": f"Bearer {keyless.tokens.create('demo', 'app')[1]}", "X-Tenant-ID": "demo"}
        assert "HUB_CREDENTIAL_KEYS" in error_of(keyless_client.put(f"{API}/credentials/sandbox", json={"settings": {"webhook_secret": "s"}}, headers=token), 503)["message"]
    finally:
        keyless.close()


def test_a_key_rotation_keeps_stored_credentials_readable(tmp_path: Path) -> None:
    first = make(tmp_path, OLD_KEY)
    client = create_app(manager=first).test_client()
    headers = {"Authorization": f"Bearer {first.tokens.create('demo', 'app')[1]}", "X-Tenant-ID": "demo"}
    data_of(client.put(f"{API}/credentials/sandbox", json={"settings": {"webhook_secret": "kept"}}, headers=headers))
    first.close()
    # The new key first, the old one still listed: what the old key encrypted reads, what is saved now uses the new.
    second = make(tmp_path, f"{NEW_KEY},{OLD_KEY}")
    try:
        assert data_of(webhook(create_app(manager=second).test_client(), "kept", "k1"))["received"] == 1
    finally:
        second.close()
