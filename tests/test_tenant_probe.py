"""The cross-tenant probe: tenant ``demo`` fills every capability with records that carry unique markers, then
tenant ``acme`` calls every operation of the OpenAPI document (and every console page) with each of demo's ids in
every path parameter. Counted: responses that show acme anything of demo's that acme did not send itself (must be
0), and demo records that acme's calls changed (must be 0)."""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from hub.api import create_app
from hub.console import console_paths
from hub.manager import IntegrationManager
from hub.openapi import build_spec
from tests.conftest import API, base_config

KEYS = "u7Cnl2_1dGQbQm9_1zS1Yl6f1sVw5S2nq0l3mJm7d1Q="
METHODS = ("get", "post", "put", "patch", "delete")
# Operations acme may run that change no tenant's data but its own or the process's (checked separately: admin only).
PROCESS_WIDE = {f"{API}/initialize", f"{API}/shutdown"}


@pytest.fixture
def hub(tmp_path: Path) -> Any:
    manager = IntegrationManager(base_config(tmp_path / "var"), environ={"HUB_CREDENTIAL_KEYS": KEYS}, entry_points=False)
    yield manager
    manager.close()


def _headers(manager: IntegrationManager, tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {manager.tokens.create(tenant, f'{tenant}-probe')[1]}", "X-Tenant-ID": tenant}


def _fill(client: Any, headers: dict[str, str], marker: str) -> tuple[set[str], list[str]]:
    """Records of every kind for one tenant. Returns (ids and names acme could put in a path, what a GET by the
    owner must still find afterwards)."""
    ids: set[str] = set()
    owned: list[str] = []

    def made(response: Any) -> dict[str, Any]:
        assert response.status_code < 300, (response.request.path, response.get_json())
        data = response.get_json()["data"]
        for key, value in (data.items() if isinstance(data, dict) else ()):
            if isinstance(value, str) and (key.endswith("Id") or key in ("id", "name", "fileKey", "groupId")):
                ids.add(value)
        return data

    email = {"type": "email", "recipients": [{"email": f"{marker}@example.com", "name": f"Name {marker}"}], "data": {"subject": f"Subject {marker}", "message": f"Body {marker}"}}
    sent = made(client.post(f"{API}/notifications", json=email, headers=headers))
    owned.append(f"/notifications/{sent['messageId']}")
    queued = made(client.post(f"{API}/notifications", json={**email, "async": True}, headers={**headers, "Idempotency-Key": f"key-{marker}"}))
    owned.append(f"/notifications/{queued['messageId']}")
    paid = made(client.post(f"{API}/payments", json={"amount": 12.5, "currency": "usd", "orderId": f"order-{marker}", "description": f"Pay {marker}"}, headers=headers))
    owned.append(f"/payments/{paid['paymentId']}")
    refund = made(client.post(f"{API}/payments/{paid['paymentId']}/refunds", json={"amount": 2, "reason": "requested_by_customer"}, headers=headers))
    if refund.get("refundId"):
        owned.append(f"/refunds/{refund['refundId']}")
    authorized = made(client.post(f"{API}/payments", json={"amount": 3, "currency": "usd", "capture": False}, headers=headers))
    owned.append(f"/payments/{authorized['paymentId']}")
    content = base64.b64encode(f"Content {marker}".encode()).decode()
    uploaded = made(client.post(f"{API}/files", json={"fileName": f"{marker}.txt", "content": content}, headers=headers))
    owned += [f"/files/{uploaded['fileId']}", f"/files/{uploaded['fileId']}/content"]
    event = made(client.post(f"{API}/events", json={"topic": "inventory-events", "eventType": "inventory.stock.updated", "data": {"itemId": f"item-{marker}", "newQuantity": 7}}, headers=headers))
    if event.get("eventId"):
        owned.append(f"/events/{event['eventId']}")
    made(client.put(f"{API}/templates/tpl-{marker}", json={"channel": "email", "subject": f"Tpl {marker}", "text": "Hi {{ name }}"}, headers=headers))
    subscription = {"name": f"sub-{marker}", "topics": ["inventory-events"], "handler": {"type": "webhook", "url": f"http://127.0.0.1:9/{marker}"}}
    made(client.post(f"{API}/events/subscriptions", json=subscription, headers=headers))
    owned.append(f"/events/subscriptions/sub-{marker}")
    job = made(client.post(f"{API}/sync", json={"dataType": "suppliers", "async": False, "options": {"supplierId": f"sup-{marker}"}}, headers=headers))
    if job.get("jobId"):
        owned.append(f"/sync/{job['jobId']}")
    made(client.put(f"{API}/inventory/SKU-{marker}/WH-{marker}", json={"quantity": 5, "reason": f"count {marker}"}, headers=headers))
    owned.append(f"/inventory/SKU-{marker}/history")
    made(client.put(f"{API}/credentials/sandbox", json={"settings": {"webhook_secret": f"secret-{marker}"}}, headers=headers))
    ids |= {f"tpl-{marker}", f"sub-{marker}", f"SKU-{marker}", f"WH-{marker}", f"demo.sub-{marker}"}
    return ids, owned


def _contents(marker: str) -> set[str]:
    """What demo wrote into its records (never a path id): addresses, subjects, bodies, file content, secrets."""
    return {
        f"{marker}@example.com", f"Name {marker}", f"Subject {marker}", f"Body {marker}", f"order-{marker}", f"Pay {marker}",
        f"Content {marker}", f"{marker}.txt", f"item-{marker}", f"Tpl {marker}", f"sup-{marker}", f"count {marker}",
        f"secret-{marker}", f"key-{marker}", f"127.0.0.1:9/{marker}",
    }


def _paths(app: Any, ids: set[str]) -> list[tuple[str, str]]:
    """Every (method, concrete path) of the OpenAPI document: each path parameter filled with each of ``ids``,
    and each query parameter set to each of them in turn."""
    calls: list[tuple[str, str]] = []
    for template, operations in build_spec(app)["paths"].items():
        names = re.findall(r"{([^}]+)}", template)
        for method in (m for m in METHODS if m in operations):
            fillings = [template] if not names else [re.sub(r"{[^}]+}", value, template) for value in sorted(ids)]
            calls += [(method, path) for path in fillings]
            queries = [p["name"] for p in operations[method].get("parameters", []) if p.get("in") == "query"]
            calls += [(method, f"{fillings[0]}?{name}={value}") for name in queries for value in sorted(ids)]
    return calls


def test_no_operation_shows_or_changes_another_tenants_records(hub: IntegrationManager) -> None:
    app = create_app(manager=hub)
    client = app.test_client()
    demo, acme = _headers(hub, "demo"), _headers(hub, "acme")
    marker = f"probe{uuid.uuid4().hex[:12]}"
    ids, owned = _fill(client, demo, marker)
    before = {path: _owner_view(client.get(API + path, headers=demo)) for path in owned}
    # What acme must never see: demo's marker (in addresses, subjects, names, file bodies, secrets) and demo's
    # ids, unless acme put that id in the request itself (a 404 may repeat what was asked for).
    secrets = _contents(marker) | ids
    calls = _paths(app, ids)
    leaks: list[str] = []
    statuses: Counter[int] = Counter()
    for method, path in calls:
        if path in PROCESS_WIDE:
            continue
        for body in (None, {}):
            if body is not None and method in ("get", "delete"):
                continue
            response = client.open(path, method=method.upper(), headers=acme, json=body)
            text = response.get_data(as_text=True)
            statuses[response.status_code] += 1
            shown = {value for value in secrets if value in text and value not in path}
            if shown and response.status_code < 500:
                leaks.append(f"{method.upper()} {path} -> {response.status_code}: {sorted(shown)}")
            assert response.status_code != 500, (method, path, text[:500])
    for path in PROCESS_WIDE:
        assert client.post(path, headers=acme).status_code == 403  # tenant tokens cannot stop or start the hub
    after = {path: _owner_view(client.get(API + path, headers=demo)) for path in owned}
    changed = [path for path in owned if before[path] != after[path]]
    # The numbers, for the closing note and the CI log.
    print(f"tenant probe: {sum(statuses.values())} calls, {len(ids)} demo ids, leaks={len(leaks)}, changed={len(changed)}, statuses={dict(sorted(statuses.items()))}")
    # The probe reached the handlers: acme's token is accepted (no 401), its own lists answer, demo's ids are not found.
    assert statuses[401] == 0 and statuses[200] > 20 and statuses[404] > 200, statuses
    assert leaks == [], "\n".join(leaks[:40])
    assert changed == [], [(path, {k for k in before[path] if before[path][k] != after[path].get(k)}) for path in changed]
    console_leaks, console_calls = _probe_console(app, hub, ids, secrets)
    print(f"tenant probe, console: {console_calls} calls, leaks={len(console_leaks)}")
    assert console_leaks == [], "\n".join(console_leaks[:40])
    assert [path for path in owned if _owner_view(client.get(API + path, headers=demo)) != after[path]] == []
    assert data_of_list(client.get(f"{API}/credentials", headers=acme)) == []
    assert f"secret-{marker}" not in json.dumps([client.get(f"{API}/credentials", headers=demo).get_json()])  # never returned


CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def _probe_console(app: Any, manager: IntegrationManager, ids: set[str], secrets: set[str]) -> tuple[list[str], int]:
    """Every console page and form, signed in as acme, with demo's ids in every path parameter and as ``?q=``."""
    browser = app.test_client()
    signin = browser.get("/console/signin")
    token = manager.tokens.create("acme", "acme-console")[1]
    answer = browser.post("/console/signin", data={"csrf_token": CSRF.search(signin.text).group(1), "tenant": "acme", "token": token})
    assert answer.status_code == 302, answer.text[:300]
    csrf = CSRF.search(browser.get("/console/").text).group(1)
    leaks: list[str] = []
    calls = 0
    for rule, methods in console_paths(app):
        if "filename" in rule or rule.endswith("/signout"):
            continue
        names = re.findall(r"<(?:[^:>]+:)?([^>]+)>", rule)
        paths = [rule] if not names else [re.sub(r"<[^>]+>", value, rule) for value in sorted(ids)]
        for path in paths:
            for method in sorted(set(methods) & {"GET", "POST"}):
                for query in ("", *(f"?status={v}&q={v}&tenant=demo" for v in sorted(ids)[:3])):
                    response = browser.open(path + query, method=method, data={"csrf_token": csrf} if method == "POST" else None)
                    calls += 1
                    text = response.get_data(as_text=True)
                    assert response.status_code < 500, (method, path, text[:300])
                    shown = {value for value in secrets if value in text and value not in path + query}
                    if shown:
                        leaks.append(f"{method} {path}{query} -> {response.status_code}: {sorted(shown)}")
    return leaks, calls


def data_of_list(response: Any) -> list[Any]:
    assert response.status_code == 200, response.get_json()
    return response.get_json()["data"]["items"]


def _owner_view(response: Any) -> Any:
    assert response.status_code == 200, (response.request.path, response.get_data(as_text=True)[:300])
    body = response.get_json(silent=True)
    return _comparable(body) if body is not None else response.get_data()


def _comparable(body: dict[str, Any]) -> Any:
    """A record as its owner sees it, without what moves by itself (timestamps of background work, lease
    state, attempt counters of jobs still running)."""
    volatile = {"updatedAt", "nextAttemptAt", "attempts", "lastAttemptAt", "leaseUntil", "lag", "health", "downloadUrl"}  # a fresh signed link per read

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: strip(item) for key, item in value.items() if key not in volatile}
        if isinstance(value, list):
            return [strip(item) for item in value]
        return value

    return strip(body.get("data"))
