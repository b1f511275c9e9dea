"""The web console (hub/console): signed in with an API token, tenant-scoped like the API, CSRF-protected forms,
no token in any URL; and, in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright), signing
in, every page, the API reference, and a dead letter replayed until its status changes.

Records of two tenants (alpha, beta) are made through the real paths: a notification whose one job attempt
finds its provider down (dead), a payment, an upload, an event, inventory syncs from two file sources that
disagree (levels, low stock, a discrepancy, sync runs with cursors).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select

from hub.api import create_app
from hub.console import CONSOLE_PATHS, CONSOLE_PREFIX, console_paths
from hub.manager import IntegrationManager
from hub.records import AuditEntry
from tests.test_resilience import make_hub

CHROMIUM = Path("/usr/bin/chromium")
TENANTS = ("alpha", "beta")
#: Every page a signed-in tenant opens (the record pages are added per record).
PAGES = ["/", "/notifications", "/payments", "/files", "/events", "/sync-runs", "/dead-letters", "/subscriptions", "/sync", "/inventory", "/providers", "/api"]
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def write_levels(folder: Path, stamp: str, *rows: tuple[str, str, float]) -> None:
    """A file source's export holding only these rows (each run's stamp is later, so an incremental sync reads them)."""
    (folder / "inventory.json").write_text(json.dumps([{"sku": sku, "location": location, "quantity": quantity, "updated_at": stamp} for sku, location, quantity in rows]))


def seed(hub: IntegrationManager, folders: dict[str, Path], tenant: str, minute: int) -> dict[str, Any]:
    """One tenant's records of every kind; returns their ids (and the SKU only this tenant has)."""
    sku = f"{tenant.upper()}-SKU"
    dead = hub.send_notification("email", [{"email": f"ops@{tenant}.example"}], data={"subject": "s", "message": "m"}, tenant_id=tenant, idempotency_key=f"{tenant}-welcome", asynchronous=True)["messageId"]
    hub.run_record(dead)
    assert hub.get_record(dead, tenant).status == "dead"
    payment = hub.process_payment("12.50", "USD", order_id=f"order-{tenant}", payment_method="4242424242424242", tenant_id=tenant)["paymentId"]
    upload = hub.upload_file(f"{tenant}-report.txt", b"quarterly numbers", "text/plain", tenant_id=tenant)["fileId"]
    published = hub.publish_event("orders", "order.created", {"order": f"order-{tenant}"}, tenant_id=tenant)["eventId"]
    stamp = f"2026-01-01T00:{minute:02d}:00+00:00"
    write_levels(folders["erp"], stamp, (sku, "WAREHOUSE-A", 3), (f"{sku}-2", "WAREHOUSE-A", 40))
    write_levels(folders["wms"], stamp, (sku, "WAREHOUSE-A", 4))  # both low (the state is per SKU and location), and they disagree
    syncs = [result["jobId"] for result in hub.sync_all_inventory(tenant).values()]
    return {"dead": dead, "payment": payment, "file": upload, "event": published, "syncs": syncs, "sku": sku, "ids": [dead, payment, upload, published, *syncs, sku]}


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    paths = {"erp": tmp_path / "erp", "wms": tmp_path / "wms"}
    for path in paths.values():
        path.mkdir()
    return paths


@pytest.fixture
def hub(tmp_path: Path, folders: dict[str, Path]) -> Iterator[IntegrationManager]:
    providers = {
        "mail": {"type": "scripted-notify", "behaviour": "transient"},
        "erp": {"type": "file-source", "directory": str(folders["erp"])},
        "wms": {"type": "file-source", "directory": str(folders["wms"])},
    }
    services = {"email": {"providers": ["mail"], "enabled": True}, "externalAPI": {"providers": ["erp", "wms"]}}
    manager = make_hub(
        tmp_path,
        providers,
        services,
        # One job attempt and no horizon: a notification whose provider is down is dead at once.
        retry={"attempts": 1, "initial_delay": 0, "max_delay": 0, "jitter": 0, "job_attempts": 1, "job_delay": 0, "horizon": 0},
        inventory={"low_stock": {"default_threshold": 5}},
        sync_schedules=[{"data_type": "inventory", "cron": "17 * * * *", "tenant": "alpha", "provider": "erp"}],
    )
    yield manager
    manager.close()


@pytest.fixture
def seeded(hub: IntegrationManager, folders: dict[str, Path]) -> dict[str, dict[str, Any]]:
    return {tenant: seed(hub, folders, tenant, minute) for minute, tenant in enumerate(TENANTS, start=1)}


def sign_in(client: Any, tenant: str, token: str) -> Any:
    page = client.get(f"{CONSOLE_PREFIX}/signin")
    return client.post(f"{CONSOLE_PREFIX}/signin", data={"csrf_token": CSRF.search(page.text).group(1), "tenant": tenant, "token": token})


def csrf_of(client: Any, path: str) -> str:
    return CSRF.search(client.get(CONSOLE_PREFIX + path).text).group(1)


def urls_in(html: str) -> list[str]:
    return re.findall(r'(?:href|src|action)="([^"]*)"', html)


# --- Flask test client -----------------------------------------------------------------------------------


def test_every_page_shows_the_tenants_own_records_and_never_another_tenants(hub: IntegrationManager, seeded: dict[str, dict[str, Any]]) -> None:
    app = create_app(manager=hub)
    client = app.test_client()
    token = hub.tokens.create("alpha", "console")[1]
    signed = sign_in(client, "alpha", token)
    assert signed.status_code == 302 and signed.headers["Location"] == f"{CONSOLE_PREFIX}/"
    cookie = signed.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and f"Path={CONSOLE_PREFIX}" in cookie
    # The signed cookie holds the token's hash and the tenant, never the token.
    stored = app.session_interface.get_signing_serializer(app).loads(client.get_cookie("hub_console", path=CONSOLE_PREFIX).value)
    assert stored["tenant"] == "alpha" and token not in json.dumps(stored) and token not in cookie

    alpha, beta = seeded["alpha"], seeded["beta"]
    pages = PAGES + [f"/records/{record_id}" for record_id in (alpha["dead"], alpha["payment"], alpha["event"], *alpha["syncs"])]
    seen = ""
    for path in pages:
        response = client.get(CONSOLE_PREFIX + path)
        assert response.status_code == 200, (path, response.text[:500])
        assert response.headers["Cache-Control"] == "no-store" and "script-src 'self'" in response.headers["Content-Security-Policy"]
        html = response.text
        leaked = [item for item in beta["ids"] if item in html]
        assert not leaked, f"{path} shows beta's {leaked}"
        assert token not in html and not any(token in url or "token=" in url for url in urls_in(html)), path
        seen += html
    # Each of alpha's records is on its pages: the tables are not empty by accident.
    assert all(item in seen for item in alpha["ids"]), [item for item in alpha["ids"] if item not in seen]
    overview = client.get(f"{CONSOLE_PREFIX}/").text
    assert "mail" in overview and "circuit" in overview.lower() and "scripted-notify" in overview
    inventory = client.get(f"{CONSOLE_PREFIX}/inventory").text
    low, _, rest = inventory.partition("Open discrepancies")
    discrepancies, _, levels = rest.partition("<h1>Levels")
    assert "ALPHA-SKU" in low and "ALPHA-SKU" in discrepancies and "erp: 3" in discrepancies and "wms: 4" in discrepancies
    assert "ALPHA-SKU-2" in levels
    sync_page = client.get(f"{CONSOLE_PREFIX}/sync").text
    assert "<code>17 * * * *</code>" in sync_page and sync_page.count("<code>{") >= 2  # the schedule, each stream's cursor
    providers = client.get(f"{CONSOLE_PREFIX}/providers").text
    assert '<section class="chart" data-provider="mail">' in providers and "<svg" in providers and "1 error(s)" in providers
    dead_letters = client.get(f"{CONSOLE_PREFIX}/dead-letters").text
    assert f'data-id="{alpha["dead"]}"' in dead_letters and "alpha-welcome" in dead_letters
    # The status filter is the API's ?status=.
    assert alpha["dead"] in client.get(f"{CONSOLE_PREFIX}/notifications?status=dead").text
    assert alpha["dead"] not in client.get(f"{CONSOLE_PREFIX}/notifications?status=succeeded").text

    # Another tenant's record by id: not found, as in the API; its replay too.
    # (The answer names the id asked for, as the API's does, and nothing of the record.)
    for refused in (
        client.get(f"{CONSOLE_PREFIX}/records/{beta['dead']}"),
        client.post(f"{CONSOLE_PREFIX}/dead-letters/{beta['dead']}/replay", data={"csrf_token": csrf_of(client, "/dead-letters"), "kind": "notification"}),
    ):
        assert refused.status_code == 404 and f"No record with id {beta['dead']}" in refused.text
        assert "beta-welcome" not in refused.text and "ops@beta.example" not in refused.text
    assert hub.get_record(beta["dead"], "beta").status == "dead"
    # Admin-only pages as in the API: a tenant token is refused the hub-wide alert incidents.
    assert client.get(f"{CONSOLE_PREFIX}/alerts").status_code == 403
    assert "/console/alerts" not in overview


def test_replay_button_queues_the_dead_record_again_and_the_page_shows_its_new_status(hub: IntegrationManager, seeded: dict[str, dict[str, Any]]) -> None:
    client = create_app(manager=hub).test_client()
    sign_in(client, "alpha", hub.tokens.create("alpha", "console")[1])
    dead = seeded["alpha"]["dead"]
    hub.registry.slots["mail"].instance.settings["behaviour"] = "ok"  # the provider is back
    replayed = client.post(f"{CONSOLE_PREFIX}/dead-letters/{dead}/replay", data={"csrf_token": csrf_of(client, "/dead-letters"), "kind": "notification"}, follow_redirects=True)
    assert replayed.status_code == 200 and replayed.request.path == f"{CONSOLE_PREFIX}/records/{dead}"
    assert f"Replayed {dead}: queued" in replayed.text and 'class="status s-queued">queued' in replayed.text
    assert dead not in client.get(f"{CONSOLE_PREFIX}/dead-letters").text
    hub.run_record(dead)  # what a worker does with the queued job
    done = client.get(f"{CONSOLE_PREFIX}/records/{dead}").text
    assert 'class="status s-succeeded">succeeded' in done and "alpha-welcome" in done  # the same record, the same key
    # The replay is in the tenant's audit trail, as an API call's would be.
    assert [entry.outcome for entry in hub.audit_log("alpha", limit=500) if entry.operation == f"POST {CONSOLE_PREFIX}/dead-letters/<item_id>/replay"] == ["success"]
    assert not [entry for entry in hub.audit_log("beta", limit=500) if "console" in entry.operation]
    again = client.post(f"{CONSOLE_PREFIX}/dead-letters/{dead}/replay", data={"csrf_token": csrf_of(client, "/dead-letters"), "kind": "notification"}, follow_redirects=True)
    assert f"Could not replay {dead}: Only a dead record can be replayed" in again.text


def test_forms_without_the_csrf_token_are_refused(hub: IntegrationManager, seeded: dict[str, dict[str, Any]]) -> None:
    client = create_app(manager=hub).test_client()
    token = hub.tokens.create("alpha", "console")[1]
    client.get(f"{CONSOLE_PREFIX}/signin")
    assert client.post(f"{CONSOLE_PREFIX}/signin", data={"tenant": "alpha", "token": token}).status_code == 400
    assert client.get(f"{CONSOLE_PREFIX}/").status_code == 302  # not signed in by it
    sign_in(client, "alpha", token)
    dead = seeded["alpha"]["dead"]
    for data in ({"kind": "notification"}, {"kind": "notification", "csrf_token": "forged"}):
        refused = client.post(f"{CONSOLE_PREFIX}/dead-letters/{dead}/replay", data=data)
        assert refused.status_code == 400 and "CSRF" in refused.text
    assert hub.get_record(dead, "alpha").status == "dead"
    # Another browser's (session's) valid token is no good in this session either.
    other = create_app(manager=hub).test_client()
    sign_in(other, "alpha", token)
    assert client.post(f"{CONSOLE_PREFIX}/dead-letters/{dead}/replay", data={"kind": "notification", "csrf_token": csrf_of(other, "/")}).status_code == 400
    assert client.post(f"{CONSOLE_PREFIX}/signout", data={}).status_code == 400
    assert client.get(f"{CONSOLE_PREFIX}/").status_code == 200  # still signed in
    assert client.post(f"{CONSOLE_PREFIX}/signout", data={"csrf_token": csrf_of(client, "/")}).status_code == 302
    assert client.get(f"{CONSOLE_PREFIX}/").headers["Location"] == f"{CONSOLE_PREFIX}/signin"


def test_wrong_token_other_tenant_and_revoked_token(hub: IntegrationManager, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client = create_app(manager=hub).test_client()
    with hub.db.session() as session:
        before = len(session.scalars(select(AuditEntry).where(AuditEntry.outcome == "refused")).all())
    wrong = sign_in(client, "alpha", "hub_not-a-token")
    assert wrong.status_code == 401 and "Invalid or expired token." in wrong.text and "hub_not-a-token" not in wrong.text
    with hub.db.session() as session:
        refused = session.scalars(select(AuditEntry).where(AuditEntry.outcome == "refused")).all()
    assert len(refused) == before + 1 and refused[-1].operation == f"POST {CONSOLE_PREFIX}/signin"  # counted like API 401s
    beta_token = hub.tokens.create("beta", "console")[1]
    other = sign_in(client, "alpha", beta_token)
    assert other.status_code == 403 and "does not belong to this tenant" in other.text
    assert client.get(f"{CONSOLE_PREFIX}/notifications").status_code == 302
    row, token = hub.tokens.create("alpha", "console")
    assert sign_in(client, "alpha", token).status_code == 302
    assert client.get(f"{CONSOLE_PREFIX}/notifications").status_code == 200
    hub.tokens.revoke(row.id)  # revoking the token ends the console session at the next page
    gone = client.get(f"{CONSOLE_PREFIX}/notifications")
    assert gone.status_code == 302 and gone.headers["Location"] == f"{CONSOLE_PREFIX}/signin"
    admin = create_app(manager=hub).test_client()
    sign_in(admin, "ops", hub.tokens.create("ops", "admin", admin=True)[1])
    overview = admin.get(f"{CONSOLE_PREFIX}/").text
    assert "/console/alerts" in overview and "(admin)" in overview
    assert admin.get(f"{CONSOLE_PREFIX}/alerts").status_code == 200
    assert not [secret for secret in (token, beta_token, "hub_not-a-token") if secret in caplog.text]  # no token in any log


def test_console_paths_are_listed_for_the_tenant_probe(hub: IntegrationManager) -> None:
    app = create_app(manager=hub)
    assert sorted(rule for rule, _methods in console_paths(app)) == sorted(CONSOLE_PATHS)
    # The API's OpenAPI document stays the API's: the console is HTML, not in it.
    spec = app.test_client().get("/api/integrations/openapi.json").get_json()
    assert not any(path.startswith(CONSOLE_PREFIX) for path in spec["paths"])


def test_pages_with_hundreds_of_records_use_a_fixed_number_of_queries(hub: IntegrationManager, seeded: dict[str, dict[str, Any]]) -> None:
    client = create_app(manager=hub).test_client()
    token = hub.tokens.create("alpha", "console")[1]
    sign_in(client, "alpha", token)
    statements: list[str] = []
    event.listen(hub.db.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))

    def queries(path: str) -> tuple[int, float]:
        hub.tokens.verify(token)  # the token's check is cached for seconds: fresh now, so no page pays for it
        statements.clear()
        started = time.perf_counter()
        assert client.get(CONSOLE_PREFIX + path).status_code == 200
        return len(statements), time.perf_counter() - started

    few = {path: queries(path)[0] for path in ("/notifications", "/dead-letters", "/providers", "/events")}
    for n in range(300):
        hub.send_notification("email", [{"email": f"c{n}@alpha.example"}], data={"subject": "s", "message": "m"}, tenant_id="alpha", asynchronous=True)
        hub.publish_event("orders", "order.created", {"n": n}, tenant_id="alpha")
    for path, count in few.items():
        many, seconds = queries(path)
        assert many == count, (path, count, many)  # no query per row
        assert seconds < 2.0, (path, seconds)
    # A page of 100, then the next one by the pager's link.
    first = client.get(f"{CONSOLE_PREFIX}/events").text
    assert first.count("<tr data-record=") == 100 and 'href="?offset=100">older' in first
    second = client.get(f"{CONSOLE_PREFIX}/events?offset=100").text
    assert second.count("<tr data-record=") == 100 and not set(re.findall(r'data-record="([^"]+)"', first)) & set(re.findall(r'data-record="([^"]+)"', second))


def test_subscription_dead_letters_and_consumer_groups_with_lag_of_the_tenant_only(tmp_path: Path) -> None:
    from tests.test_publish import Receiver

    with Receiver() as receiver:
        receiver.fail = {1: (-1, 422), 2: (-1, 422)}  # refused for good: a dead letter at the first attempt
        subscriptions = {
            f"{tenant}-orders": {"tenant": tenant, "topics": ["orders"], "handler": {"type": "webhook", "url": f"{receiver.url}/{tenant}"}, "max_attempts": 1, "lease_seconds": 2}
            for tenant in TENANTS
        }
        overrides = {"subscriptions": subscriptions, "retry": {"attempts": 1, "initial_delay": 0, "max_delay": 0, "jitter": 0, "job_attempts": 1, "job_delay": 0, "horizon": 0}}
        consumer = make_hub(tmp_path, {}, {}, **overrides)
        try:
            consumer.start_workers(1)
            for n, tenant in enumerate(TENANTS, start=1):
                consumer.publish_event("orders", "order.created", {"n": n}, tenant_id=tenant)
            deadline = time.monotonic() + 15
            while not all(consumer.publish.dead_letters(tenant) for tenant in TENANTS):
                assert time.monotonic() < deadline, "no dead letter for each tenant"
                time.sleep(0.05)
        finally:
            consumer.close()  # the groups keep their committed offsets; events published now are their lag
        hub = make_hub(tmp_path, {}, {}, **overrides)
        try:
            for _ in range(2):
                hub.publish_event("orders", "order.created", {"n": 9}, tenant_id="alpha")
            (alpha_letter,), (beta_letter,) = (hub.publish.dead_letters(tenant) for tenant in TENANTS)
            client = create_app(manager=hub).test_client()
            sign_in(client, "alpha", hub.tokens.create("alpha", "console")[1])
            page = client.get(f"{CONSOLE_PREFIX}/subscriptions").text
            assert "alpha-orders" in page and "beta" not in page
            group = next(item for item in hub.publish.consumer_groups("alpha") if item["subscription"] == "alpha-orders")
            assert group["lag"] >= 2 and f"<td>{group['groupId']}</td>" in page and f"<td><b>{group['lag']}</b></td>" in page
            letters = client.get(f"{CONSOLE_PREFIX}/dead-letters").text
            assert f'data-id="{alpha_letter["id"]}"' in letters and beta_letter["id"] not in letters

            receiver.fail = {}  # the receiver takes it now
            replayed = client.post(f"{CONSOLE_PREFIX}/dead-letters/{alpha_letter['id']}/replay", data={"csrf_token": csrf_of(client, "/dead-letters"), "kind": "subscription"}, follow_redirects=True)
            assert f"Replayed {alpha_letter['id']}: delivered" in replayed.text and f'data-id="{alpha_letter["id"]}"' not in replayed.text
            assert receiver.numbers("/alpha") == [1]
            refused = client.post(f"{CONSOLE_PREFIX}/dead-letters/{beta_letter['id']}/replay", data={"csrf_token": csrf_of(client, "/dead-letters"), "kind": "subscription"})
            assert refused.status_code == 404 and receiver.numbers("/beta") == []
        finally:
            hub.close()


def test_the_chart_buckets_calls_errors_and_latency_over_time() -> None:
    from datetime import UTC, datetime, timedelta

    from hub.console.chart import BOTTOM, BUCKETS, TOP, provider_charts

    start = datetime(2026, 1, 1, tzinfo=UTC)
    calls = [AuditEntry(at=start + timedelta(minutes=minute), provider="mail", outcome=outcome, latency_ms=latency, operation="notify") for minute, outcome, latency in ((0, "success", 10.0), (0, "failure", 30.0), (23, "success", 40.0))]
    calls.append(AuditEntry(at=start + timedelta(minutes=12), provider="backup", outcome="success", latency_ms=None, operation="notify"))
    backup, mail = provider_charts(calls)
    assert (mail["provider"], mail["calls"], mail["errors"], mail["error_rate"], mail["mean_latency"]) == ("mail", 3, 1, 0.3333, 26.67)
    assert len(mail["bars"]) == BUCKETS and mail["most_calls"] == 2 and mail["slowest"] == 40.0
    first, last = mail["bars"][0], mail["bars"][-1]
    assert first["calls_height"] == BOTTOM - TOP and first["errors_height"] == (BOTTOM - TOP) / 2  # 2 calls, 1 error: the tallest
    assert last["calls_height"] == (BOTTOM - TOP) / 2 and last["errors_height"] == 0
    assert all(bar["calls_height"] == 0 for bar in mail["bars"][1:-1])
    # Mean latency: 20 ms in the first bucket, 40 ms (the slowest: the top) in the last.
    assert [y for _x, y in mail["latency_points"]] == [BOTTOM - (BOTTOM - TOP) / 2, TOP]
    assert backup["calls"] == 1 and backup["latency_points"] == [] and backup["mean_latency"] is None
    assert provider_charts([]) == []


# --- a real browser ------------------------------------------------------------------------------------------


@pytest.fixture
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright for Python is not installed (pip install playwright)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def served(hub: IntegrationManager) -> Iterator[str]:
    """The hub's app on a real HTTP server on 127.0.0.1 (werkzeug, threaded), with a job worker."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, create_app(manager=hub), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    hub.start_workers(1)
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)


def test_in_chromium_sign_in_open_every_page_and_replay_a_dead_letter(
    hub: IntegrationManager, seeded: dict[str, dict[str, Any]], served: str, browser: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # the server's request lines included
    token = hub.tokens.create("alpha", "console")[1]
    page = browser.new_page()
    requested: list[str] = []
    problems: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" and "Failed to load resource" not in message.text else None)
    failed: list[tuple[int, str, str]] = []
    page.on("response", lambda response: failed.append((response.status, response.request.method, response.url)) if response.status >= 400 else None)
    page.set_default_timeout(10_000)

    page.goto(f"{served}{CONSOLE_PREFIX}/")
    assert page.url == f"{served}{CONSOLE_PREFIX}/signin"  # not signed in: the sign-in form
    page.fill("input[name=tenant]", "alpha")
    page.fill("input[name=token]", "hub_wrong")
    page.click("button[type=submit]")
    assert "Invalid or expired token" in page.inner_text("#signin-error")
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{served}{CONSOLE_PREFIX}/")
    assert page.inner_text("#signed-in-tenant") == "alpha"

    beta = seeded["beta"]["ids"]
    for path in PAGES:
        page.goto(f"{served}{CONSOLE_PREFIX}{path}")
        assert page.locator("h1").first.is_visible(), path
        text = page.content()
        assert not [item for item in beta if item in text], path
    # Swagger UI, from the package's assets, renders the hub's own document.
    page.goto(f"{served}{CONSOLE_PREFIX}/api")
    page.wait_for_selector("#swagger-ui .info .title")
    assert "Integration Hub API" in page.inner_text("#swagger-ui .info .title")
    page.wait_for_selector("#swagger-ui .opblock")
    # "Try it out" with the token given to "Authorize": the tenant's header is filled in, the call answers 200.
    page.click(".btn.authorize")
    page.fill(".auth-container input", token)
    page.click(".auth-btn-wrapper .authorize")
    page.click(".auth-btn-wrapper .btn-done")
    page.click("#operations-admin-status .opblock-summary")
    page.click("#operations-admin-status .try-out__btn")
    with page.expect_response(lambda response: response.url == f"{served}/api/integrations/status") as answered:
        page.click("#operations-admin-status .execute")
    assert answered.value.status == 200 and answered.value.request.headers["x-tenant-id"] == "alpha"
    assert answered.value.json()["data"]["state"] == "running"

    dead = seeded["alpha"]["dead"]
    hub.registry.slots["mail"].instance.settings["behaviour"] = "ok"  # the provider is back
    page.goto(f"{served}{CONSOLE_PREFIX}/dead-letters")
    page.click(f"button.replay[data-id='{dead}']")
    page.wait_for_url(f"{served}{CONSOLE_PREFIX}/records/{dead}")
    assert f"Replayed {dead}: queued" in page.inner_text(".flash")
    deadline = time.monotonic() + 15
    while page.inner_text("#record-status") != "succeeded":  # the worker runs the replayed job
        assert time.monotonic() < deadline, page.inner_text("#record-status")
        time.sleep(0.2)
        page.reload()
    page.goto(f"{served}{CONSOLE_PREFIX}/dead-letters")
    assert page.locator(f"button.replay[data-id='{dead}']").count() == 0

    page.click("text=Sign out")
    page.wait_for_url(f"{served}{CONSOLE_PREFIX}/signin")
    page.goto(f"{served}{CONSOLE_PREFIX}/inventory")
    assert page.url == f"{served}{CONSOLE_PREFIX}/signin"

    assert all(url.startswith(served) for url in requested), [url for url in requested if not url.startswith(served)]
    assert not [url for url in requested if token in url]
    assert not problems, problems
    assert failed == [(401, "POST", f"{served}{CONSOLE_PREFIX}/signin")]  # only the wrong token's sign-in
    assert f"GET {CONSOLE_PREFIX}/dead-letters" in caplog.text and token not in caplog.text
