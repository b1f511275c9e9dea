"""The REST API on the embedded defaults, through the Flask test client."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import API, data_of, error_of

SEED_NOTIFICATION = {
    "type": "email",
    "recipients": [{"name": "Test User", "email": "test@example.com", "phone": "+1234567890"}],
    "template": "custom",
    "data": {"subject": "Test Notification", "message": "This is a test notification from Smart Inventory ERP"},
}




# --- authentication and tenancy ------------------------------------------------------------------


def test_requests_without_a_token_are_refused_with_401(client: Any) -> None:
    error_of(client.get(f"{API}/status", headers={"X-Tenant-ID": "demo"}), 401)
    error_of(client.get(f"{API}/status", headers={"Authorization": "Bearer hub_not-a-real-token-at-all-xxxxxxxx", "X-Tenant-ID": "demo"}), 401)
    error_of(client.get(f"{API}/status", headers={"Authorization": "Basic dXNlcjpwYXNz", "X-Tenant-ID": "demo"}), 401)


def test_tenant_header_must_match_the_token(client: Any, token: str) -> None:
    error_of(client.get(f"{API}/status", headers={"Authorization": f"Bearer {token}"}), 403)
    error_of(client.get(f"{API}/status", headers={"Authorization": f"Bearer {token}", "X-Tenant-ID": "other"}), 403)


def test_revoked_and_rotated_tokens(client: Any, manager: Any) -> None:
    row, token = manager.tokens.create("demo")
    headers = {"Authorization": f"Bearer {token}", "X-Tenant-ID": "demo"}
    data_of(client.get(f"{API}/status", headers=headers))
    new_row, new_token = manager.tokens.rotate(row.id, grace_seconds=60)
    new_headers = {"Authorization": f"Bearer {new_token}", "X-Tenant-ID": "demo"}
    # During the rotation both tokens work.
    data_of(client.get(f"{API}/status", headers=headers))
    data_of(client.get(f"{API}/status", headers=new_headers))
    assert manager.tokens.revoke(row.id)
    error_of(client.get(f"{API}/status", headers=headers), 401)
    data_of(client.get(f"{API}/status", headers=new_headers))
    expired_row, expired = manager.tokens.create("demo", expires_in=-1)
    error_of(client.get(f"{API}/status", headers={"Authorization": f"Bearer {expired}", "X-Tenant-ID": "demo"}), 401)
    stored = [t.token_hash for t in manager.tokens.list("demo")]
    assert token not in stored and new_token not in stored  # only hashes are kept


def test_no_endpoint_returns_another_tenants_data(client: Any, manager: Any, headers: dict[str, str]) -> None:
    other = {"Authorization": f"Bearer {manager.tokens.create('acme')[1]}", "X-Tenant-ID": "acme"}
    sent = data_of(client.post(f"{API}/notifications", json=SEED_NOTIFICATION, headers=headers))
    paid = data_of(client.post(f"{API}/payments", json={"amount": 5, "currency": "usd"}, headers=headers), 201)
    uploaded = data_of(client.post(f"{API}/files", json={"fileName": "a.txt", "content": base64.b64encode(b"x").decode()}, headers=headers), 201)
    for path in (
        f"/notifications/{sent['messageId']}",
        f"/payments/{paid['paymentId']}",
        f"/files/{uploaded['fileId']}",
        f"/files/{uploaded['fileId']}/content",
        f"/deliveries/{sent['messageId']}",
    ):
        error_of(client.get(API + path, headers=other), 404)
    error_of(client.delete(f"{API}/files/{uploaded['fileId']}", headers=other), 404)
    error_of(client.post(f"{API}/payments/{paid['paymentId']}/refunds", json={}, headers=other), 404)
    assert data_of(client.get(f"{API}/files", headers=other))["items"] == []
    assert data_of(client.get(f"{API}/deliveries", headers=other))["items"] == []
    other_audit = data_of(client.get(f"{API}/audit", headers=other))["items"]
    assert other_audit and all(entry["tenantId"] == "acme" and entry["capability"] == "api" for entry in other_audit)
    assert uploaded["fileKey"].startswith("demo/")


# --- seed endpoints --------------------------------------------------------------------------------


def test_status_health_services_and_metrics_follow_the_seed(client: Any, headers: dict[str, str]) -> None:
    status = data_of(client.get(f"{API}/status", headers=headers))
    assert status["total"] == len(status["services"]) and status["healthy"] == status["total"]
    assert status["services"]["email"] == {"status": "healthy", "name": "Email Service", "type": "communication"}
    email = data_of(client.get(f"{API}/health/email", headers=headers))
    assert email["serviceName"] == "email" and email["status"] == "healthy"
    assert email["details"]["outbox"]["status"] == "success"
    everything = data_of(client.get(f"{API}/health", headers=headers))
    assert set(everything) >= {"email", "sms", "payment", "kafka", "fileStorage", "externalAPI"}
    service = data_of(client.get(f"{API}/services/email", headers=headers))
    assert service["name"] == "Email Service" and service["type"] == "communication" and service["status"] == "active"
    assert isinstance(service["dependencies"], list)
    assert data_of(client.get(f"{API}/services/events", headers=headers))["key"] == "kafka"  # alias
    error_of(client.get(f"{API}/services/nope", headers=headers), 404)
    error_of(client.get(f"{API}/health/nope", headers=headers), 404)
    metrics = data_of(client.get(f"{API}/metrics", headers=headers))
    assert metrics["email"]["transporters"] == ["outbox"]
    assert "low_stock_alert" in metrics["email"]["templates"] and metrics["email"]["status"] == "active"


def test_initialize_and_shutdown_need_an_admin_token(client: Any, headers: dict[str, str], admin_headers: dict[str, str]) -> None:
    error_of(client.post(f"{API}/shutdown", headers=headers), 403)
    down = data_of(client.post(f"{API}/shutdown", headers=admin_headers))
    assert down["email"] == {"status": "shutdown"} and down["payment"] == {"status": "shutdown"}
    error_of(client.post(f"{API}/test/notification", json=SEED_NOTIFICATION, headers=headers), 503)
    up = data_of(client.post(f"{API}/initialize", headers=admin_headers))
    assert up["email"]["status"] == "initialized" and up["kafka"]["status"] == "initialized"
    data_of(client.post(f"{API}/test/notification", json=SEED_NOTIFICATION, headers=headers))


def test_test_payment_event_file_and_sync(client: Any, headers: dict[str, str]) -> None:
    payment = data_of(client.post(f"{API}/test/payment", json={"amount": 10.00, "currency": "USD", "orderId": "test_order_123"}, headers=headers))
    assert payment["success"] and payment["status"] == "succeeded" and payment["amount"] == 10.0 and payment["currency"] == "USD"
    assert payment["transactionId"] and payment["gateway"] == "sandbox"
    event = data_of(
        client.post(
            f"{API}/test/event",
            json={"topic": "inventory-events", "eventType": "inventory.stock.updated", "data": {"itemId": "item_123", "newQuantity": 80}},
            headers=headers,
        )
    )
    assert event["success"] and event["partition"] >= 0 and isinstance(event["offset"], str)
    file = data_of(client.post(f"{API}/test/file", json={"fileName": "test-document.pdf", "fileType": "document", "category": "test"}, headers=headers))
    assert file["fileKey"].startswith("demo/test/") and file["fileKey"].endswith("-test-document.pdf")
    assert file["contentType"] == "application/pdf" and file["provider"] == "local" and file["size"] > 0
    content = client.get(f"{API}/files/{file['fileId']}/content", headers=headers)
    assert content.status_code == 200 and content.data.startswith(b"%PDF")
    synced = data_of(client.post(f"{API}/test/sync", json={"dataType": "suppliers", "options": {"supplierId": "supplier_123"}}, headers=headers))
    assert synced["success"] and synced["count"] == 1 and synced["suppliers"][0]["id"] == "supplier_123"


# --- validation -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/notifications", {"type": "fax", "recipients": [{"email": "a@example.com"}]}, "type"),
        ("/notifications", {"type": "email", "recipients": []}, "recipients"),
        ("/notifications", {"type": "email", "recipients": [{"email": "not-an-address"}], "data": {"subject": "s", "message": "m"}}, "recipients"),
        ("/notifications", {"type": "email", "recipients": [{"email": "a@example.com"}], "template": "low_stock_alert", "data": {"sku": "X"}}, "data"),
        ("/notifications", {"type": "email", "recipients": [{"email": "a@example.com"}], "surprise": 1}, "surprise"),
        ("/payments", {"amount": -5, "currency": "USD"}, "amount"),
        ("/payments", {"amount": 1.234, "currency": "USD"}, "amount"),
        ("/payments", {"amount": 10, "currency": "dollars"}, "currency"),
        ("/payments", {"currency": "USD"}, "amount"),
        ("/events", {"topic": "bad topic!", "eventType": "a.b", "data": {}}, "topic"),
        ("/events", {"topic": "t", "eventType": "NotDotted", "data": {}}, "eventType"),
        ("/sync", {"options": {}}, "dataType"),
        ("/files", {"fileName": "a.txt", "content": "%%%"}, "content"),
    ],
)
def test_bad_input_is_a_422_naming_the_field(client: Any, headers: dict[str, str], path: str, body: dict[str, Any], field: str) -> None:
    error = error_of(client.post(API + path, json=body, headers=headers), 422)
    assert field in json.dumps(error["errors"]), error
    assert field in error["message"] or field in error["error"]


def test_malformed_json_is_a_clear_error(client: Any, headers: dict[str, str]) -> None:
    error = error_of(client.post(f"{API}/notifications", data=b"{not json", headers={**headers, "Content-Type": "application/json"}), 422)
    assert "JSON" in error["message"]


def test_unknown_route_is_a_404_envelope(client: Any, headers: dict[str, str]) -> None:
    error_of(client.get(f"{API}/nothing-here", headers=headers), 404)


# --- idempotency and rate limits ------------------------------------------------------------------


def test_idempotency_key_replays_and_refuses_a_different_body(client: Any, headers: dict[str, str], hub_config: dict[str, Any]) -> None:
    keyed = {**headers, "Idempotency-Key": "order-42"}
    first = client.post(f"{API}/payments", json={"amount": 12.5, "currency": "USD", "orderId": "42"}, headers=keyed)
    second = client.post(f"{API}/payments", json={"amount": 12.5, "currency": "USD", "orderId": "42"}, headers=keyed)
    assert first.status_code == second.status_code == 201
    assert first.get_json() == second.get_json() and second.headers["Idempotent-Replayed"] == "true"
    payments = data_of(client.get(f"{API}/payments", headers=headers))["items"]
    assert len(payments) == 1
    error = error_of(client.post(f"{API}/payments", json={"amount": 99, "currency": "USD"}, headers=keyed), 422)
    assert "Idempotency-Key" in error["message"]
    keyed_note = {**headers, "Idempotency-Key": "note-1"}
    client.post(f"{API}/notifications", json=SEED_NOTIFICATION, headers=keyed_note)
    client.post(f"{API}/notifications", json=SEED_NOTIFICATION, headers=keyed_note)
    assert len(list(Path(hub_config["data_dir"], "outbox", "demo", "email").glob("*.json"))) == 1


def test_rate_limit_answers_429_with_retry_after(tmp_path: Path) -> None:
    from hub.api import create_app
    from hub.manager import IntegrationManager
    from tests.conftest import base_config

    config = base_config(tmp_path / "var", rate_limits={"storage": "memory://", "limits": {"email": "3/minute"}})
    hub = IntegrationManager(config, environ={}, entry_points=False)
    try:
        client = create_app(manager=hub).test_client()
        headers = {"Authorization": f"Bearer {hub.tokens.create('t1')[1]}", "X-Tenant-ID": "t1"}
        for _ in range(3):
            data_of(client.post(f"{API}/notifications", json=SEED_NOTIFICATION, headers=headers))
        limited = client.post(f"{API}/notifications", json=SEED_NOTIFICATION, headers=headers)
        error_of(limited, 429)
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        # Limits are per tenant: another tenant is unaffected.
        other = {"Authorization": f"Bearer {hub.tokens.create('t2')[1]}", "X-Tenant-ID": "t2"}
        data_of(client.post(f"{API}/notifications", json=SEED_NOTIFICATION, headers=other))
    finally:
        hub.close()


# --- resources ----------------------------------------------------------------------------------------


def test_plugins_endpoint_lists_builtins(client: Any, headers: dict[str, str]) -> None:
    listed = data_of(client.get(f"{API}/plugins", headers=headers))
    names = {plugin["name"]: plugin for plugin in listed["plugins"]}
    assert names["sandbox"]["providers"] == ["sandbox"] and names["sandbox"]["status"] == "loaded"
    assert "register_providers" in names["outbox"]["hooks"]
    assert {"outbox", "local-disk", "event-log", "file-source", "sandbox"} <= set(listed["providerTypes"])


def test_audit_trail_is_queryable_and_masks_personal_data(client: Any, headers: dict[str, str]) -> None:
    data_of(client.post(f"{API}/notifications", json=SEED_NOTIFICATION, headers=headers))
    error_of(client.post(f"{API}/payments", json={"amount": 5, "currency": "USD", "paymentMethod": "4000000000000002"}, headers=headers), 422)
    entries = data_of(client.get(f"{API}/audit", headers=headers))["items"]
    assert {(e["service"], e["provider"], e["outcome"]) for e in entries} >= {("email", "outbox", "success"), ("payment", "sandbox", "error")}
    api_calls = {(e["operation"], e["outcome"]) for e in entries if e["capability"] == "api"}
    assert api_calls >= {("POST /api/integrations/notifications", "success"), ("POST /api/integrations/payments", "rejected")}
    assert all(e["requestId"] and e["latencyMs"] is not None and e["tenantId"] == "demo" for e in entries)
    assert "test@example.com" not in json.dumps(entries) and "4000000000000002" not in json.dumps(entries)
    only_errors = data_of(client.get(f"{API}/audit?outcome=error", headers=headers))["items"]
    assert only_errors and all(e["outcome"] == "error" for e in only_errors)


def test_openapi_document_and_prometheus_metrics(client: Any, headers: dict[str, str], admin_headers: dict[str, str]) -> None:
    document = client.get(f"{API}/openapi.json").get_json()
    assert document["openapi"].startswith("3.") and f"{API}/notifications" in document["paths"]
    assert document["components"]["schemas"]["Notification"]["properties"]["fallbackServices"]
    from openapi_spec_validator import validate

    validate(document)
    data_of(client.post(f"{API}/test/notification", json=SEED_NOTIFICATION, headers=headers))
    text = client.get("/metrics", headers={"Authorization": admin_headers["Authorization"]}).data.decode()  # every tenant's counts: admin only
    assert 'hub_provider_calls_total{operation="notify",outcome="success",provider="outbox",service="email"} 1.0' in text
    assert "hub_http_requests_total" in text


def _document(client: Any) -> dict[str, Any]:
    return client.get(f"{API}/openapi.json").get_json()


def test_every_405_is_an_envelope_naming_the_documented_methods(client: Any, headers: dict[str, str]) -> None:
    import re

    paths = _document(client)["paths"]
    patterns = {path: re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$") for path in paths}
    probed = 0
    for path, operations in paths.items():
        integers = {p["name"] for op in operations.values() for p in op.get("parameters", []) if p.get("in") == "path" and p.get("schema", {}).get("type") == "integer"}
        # any value fits a string path parameter; an integer one takes a number
        url = re.sub(r"\{([^}]+)\}", lambda m, numbers=integers: "1" if m.group(1) in numbers else m.group(1), path)
        documented = {method.upper() for method in operations}
        expected = documented | {"OPTIONS"} | ({"HEAD"} if "GET" in documented else set())
        # GET /events/batch is GET /events/{event_id}: methods another path answers for this URL are no 405.
        elsewhere = {method.upper() for other, pattern in patterns.items() if other != path and pattern.match(url) for method in paths[other]}
        for method in {"GET", "POST", "PUT", "DELETE", "PATCH"} - documented - elsewhere:
            response = client.open(url, method=method, headers=headers)
            assert response.status_code == 405, (method, url, response.status_code)
            assert response.is_json and error_of(response, 405)["message"] == "Method Not Allowed"
            assert set(response.headers["Allow"].split(", ")) == expected, (method, url)
            probed += 1
    assert probed > 150


def test_errors_are_json_envelopes_wherever_they_are_raised(app: Any, client: Any, headers: dict[str, str]) -> None:
    from flask import request

    # Failures outside the view: in before- and after-request hooks, and one past every handler (the teardown).
    def failing_before() -> None:
        if "X-Fail-Before" in request.headers:
            raise RuntimeError("before")

    def failing_after(response: Any) -> Any:
        if "X-Fail-After" in request.headers:
            raise RuntimeError("after")
        return response

    def failing_teardown(_error: BaseException | None) -> None:
        if "X-Fail-Teardown" in request.headers:
            raise RuntimeError("teardown")

    app.before_request(failing_before)
    app.after_request(failing_after)
    app.teardown_request(failing_teardown)
    for header in ("X-Fail-Before", "X-Fail-After", "X-Fail-Teardown"):
        response = client.get(f"{API}/status", headers={**headers, header: "1"})
        assert response.status_code == 500 and response.is_json, (header, response.data[:200])
        assert error_of(response, 500)["message"] == "Internal server error"
        assert b"<html" not in response.data.lower() and b"teardown" not in response.data
    # werkzeug's own errors: routing (404) and a body over MAX_CONTENT_LENGTH found while parsing a form (413).
    assert error_of(client.get(f"{API}/nothing-here", headers=headers), 404) and client.get(f"{API}/nothing-here").is_json
    oversized = client.post(
        f"{API}/files", headers=headers, data=b"x" * (app.config["MAX_CONTENT_LENGTH"] + 1), content_type="multipart/form-data; boundary=b"
    )
    assert error_of(oversized, 413) and oversized.is_json


def test_document_states_the_rules_the_hub_enforces(client: Any, headers: dict[str, str]) -> None:
    document = _document(client)
    schemas, paths = document["components"]["schemas"], document["paths"]
    amount = schemas["Payment"]["properties"]["amount"]
    assert amount["minimum"] == 0 and amount["exclusiveMinimum"] is True and amount["multipleOf"] == 0.001
    assert schemas["Refund"]["properties"]["amount"]["exclusiveMinimum"] is True
    assert schemas["Payment"]["properties"]["currency"]["pattern"] == "^[A-Za-z]{3}$"
    upload = paths[f"{API}/files"]["post"]["requestBody"]["content"]
    assert upload["application/json"]["schema"]["allOf"][1]["required"] == ["content"]
    assert upload["multipart/form-data"]["schema"]["required"] == ["file"]
    assert schemas["DirectUpload"]["properties"]["size"]["maximum"] == 10 * 1024 * 1024
    # ... and the hub does refuse what the document rules out
    for body, field in (({"amount": 0, "currency": "USD"}, "amount"), ({"amount": 1, "currency": "US"}, "currency")):
        assert field in error_of(client.post(f"{API}/payments", json=body, headers=headers), 422)["errors"]
    assert "content" in error_of(client.post(f"{API}/files", json={"fileName": "a.txt"}, headers=headers), 422)["errors"]
    assert "async" in error_of(client.post(f"{API}/sync", json={"dataType": "suppliers", "async": 1}, headers=headers), 422)["errors"]
    # a body the document says is an object: null, 0 or [] are refused, also where a missing body means {}
    for path in ("/inventory/sync", "/test/file", "/payments/x/cancel"):
        for body in ("null", "0", "[]", "false"):
            refused = client.post(f"{API}{path}", data=body, content_type="application/json", headers=headers)
            assert "body" in error_of(refused, 422)["errors"], (path, body)


def test_every_status_the_api_answers_is_documented(client: Any, headers: dict[str, str]) -> None:
    paths = _document(client)["paths"]
    answered = {
        ("/notifications", "post"): client.post(f"{API}/notifications", json={**SEED_NOTIFICATION, "async": True}, headers=headers).status_code,
        ("/test/notification", "post"): client.post(f"{API}/test/notification", json={**SEED_NOTIFICATION, "async": True}, headers=headers).status_code,
        ("/sync", "post"): client.post(f"{API}/sync", json={"dataType": "suppliers", "async": False}, headers=headers).status_code,
        ("/payments", "post"): client.post(f"{API}/payments", json={"amount": 3, "currency": "USD"}, headers=headers).status_code,
        ("/payments", "delete"): client.delete(f"{API}/payments", headers=headers).status_code,
    }
    assert answered == {("/notifications", "post"): 202, ("/test/notification", "post"): 202, ("/sync", "post"): 200, ("/payments", "post"): 201, ("/payments", "delete"): 405}
    for (path, method), status in answered.items():
        if status != 405:
            assert str(status) in paths[f"{API}{path}"][method]["responses"], (path, method, status)
    download = paths[f"{API}/files/{{file_id}}/content"]["get"]["responses"]
    assert {"200", "206", "416"} <= set(download)
    assert {"201", "409"} <= set(paths[f"{API}/files/uploads/{{upload_id}}/complete"]["post"]["responses"])


def test_idempotency_key_is_documented_only_where_it_is_honoured(client: Any, headers: dict[str, str]) -> None:
    paths = _document(client)["paths"]

    def documents_key(path: str, method: str) -> bool:
        return any(parameter["name"] == "Idempotency-Key" for parameter in paths[f"{API}{path}"][method]["parameters"])

    assert documents_key("/payments", "post") and documents_key("/test/notification", "post") and documents_key("/payments/{record_id}/capture", "post")
    assert not documents_key("/templates/{name}/preview", "post") and not documents_key("/initialize", "post")
    assert not any(documents_key(path.removeprefix(API), "get") for path, operations in paths.items() if "get" in operations and path.startswith(API))
    # where it is documented, it works: the same key and body answer the first response again
    key = {**headers, "Idempotency-Key": "doc-key-1"}
    first = client.post(f"{API}/payments", json={"amount": 4, "currency": "USD"}, headers=key)
    again = client.post(f"{API}/payments", json={"amount": 4, "currency": "USD"}, headers=key)
    assert again.headers.get("Idempotent-Replayed") == "true" and again.get_json() == first.get_json()


def test_request_id_is_echoed(client: Any, headers: dict[str, str]) -> None:
    response = client.get(f"{API}/status", headers={**headers, "X-Request-ID": "req-123"})
    assert response.headers["X-Request-ID"] == "req-123"


def test_an_idempotency_key_in_progress_is_a_409_until_abandoned(client: Any, manager: Any, headers: dict[str, str]) -> None:
    from datetime import timedelta

    from hub.records import IdempotentRequest, utcnow

    body = {"amount": 3, "currency": "USD"}
    first = client.post(f"{API}/payments", json=body, headers={**headers, "Idempotency-Key": "k-1"})
    assert first.status_code == 201
    with manager.db.session() as session:
        fingerprint = session.get(IdempotentRequest, ("demo", "k-1")).request_hash
        # As if a process had died while answering an earlier request with key k-2 and this body.
        session.add(IdempotentRequest(tenant="demo", key="k-2", method="POST", path=f"{API}/payments", request_hash=fingerprint, created_at=utcnow()))
    error_of(client.post(f"{API}/payments", json=body, headers={**headers, "Idempotency-Key": "k-2"}), 409)
    with manager.db.session() as session:
        session.get(IdempotentRequest, ("demo", "k-2")).created_at = utcnow() - timedelta(minutes=10)
    data_of(client.post(f"{API}/payments", json=body, headers={**headers, "Idempotency-Key": "k-2"}), 201)
