"""hub-rest against a local supplier API (werkzeug) serving every pagination style and auth type."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from typing import Any

import hub_rest
import pytest
from hub_rest import RestSource
from werkzeug.wrappers import Request, Response

from hub.capabilities import SyncRequest
from hub.errors import ConfigError, ConfigurationError, PermanentError, TransientError, UnsupportedError
from hub.testing import ProviderHarness
from hub.testing.contracts import check_provider_class, run_contract
from hub.testing.rest import rest_hub
from hub.testing.servers import WsgiServer

API = "/api/integrations"
SECRET = "s3cr3t-value-never-shown"


def supplier(number: int, minute: int | None = None) -> dict[str, Any]:
    minute = number if minute is None else minute
    return {
        "id": f"sup-{number}",
        "attributes": {"name": f"Supplier {number}", "email": f"s{number}@example.com"},
        "updated_at": f"2026-01-01T10:{minute:02d}:00Z",
    }


class SupplierApi(WsgiServer):
    """Suppliers sorted by id, on one path per pagination style; auth and failures set by the test."""

    def __init__(self, count: int = 7) -> None:
        super().__init__(name="supplier-api")
        self.lock = threading.Lock()
        self.records = [supplier(number) for number in range(1, count + 1)]
        self.auth: tuple[str, ...] = ("none",)
        self.tokens: set[str] = set()
        self.issued = 0
        self.log: list[tuple[str, dict[str, str]]] = []
        #: (path, page) -> statuses answered once each before the page is served.
        self.fail: dict[tuple[str, int], list[tuple[int, dict[str, str]]]] = {}

    def _authorized(self, request: Request) -> bool:
        kind = self.auth[0]
        if kind == "bearer":
            return request.headers.get("Authorization") == f"Bearer {self.auth[1]}"
        if kind == "api_key_header":
            return request.headers.get("X-Api-Key") == self.auth[1]
        if kind == "api_key_query":
            return request.args.get("api_key") == self.auth[1]
        if kind == "basic":
            expected = base64.b64encode(f"{self.auth[1]}:{self.auth[2]}".encode()).decode()
            return request.headers.get("Authorization") == f"Basic {expected}"
        if kind == "oauth2":
            header = request.headers.get("Authorization", "")
            return header.startswith("Bearer ") and header[7:] in self.tokens
        return kind == "none"

    def _token(self, request: Request) -> Response:
        expected = base64.b64encode(f"client-1:{self.auth[1]}".encode()).decode()
        if (
            request.headers.get("Authorization") != f"Basic {expected}"
            or request.form.get("grant_type") != "client_credentials"
        ):
            return json_response({"error": "invalid_client"}, 401)
        with self.lock:
            self.issued += 1
            token = f"tok-{self.issued}"
            self.tokens.add(token)
        return json_response(
            {"access_token": token, "token_type": "bearer", "expires_in": 3600, "scope": request.form.get("scope")}
        )

    def __call__(self, environ: Any, start_response: Any) -> Any:
        request = Request(environ)
        return self.respond(request)(environ, start_response)

    def respond(self, request: Request) -> Response:
        if request.path == "/oauth/token":
            return self._token(request)
        args = request.args.to_dict()
        with self.lock:
            self.log.append(
                (request.path, {**args, **{k: v for k, v in request.headers.items() if k == "If-Modified-Since"}})
            )
        if not self._authorized(request):
            return json_response({"message": "unauthorized"}, 401)
        rows = list(self.records)
        if "supplier" in args:
            rows = [row for row in rows if row["id"] == args["supplier"]]
        if "updated_since" in args:
            rows = [row for row in rows if row["updated_at"] >= args["updated_since"].replace("+00:00", "Z")]
        rows.sort(key=lambda row: (row.get("updated_at", ""), row["id"]))
        limit = int(args.get("limit", 100))
        path = request.path
        if path == "/page":
            page = int(args.get("page", 1))
            start = (page - 1) * limit
        elif path == "/offset":
            start, page = int(args.get("offset", 0)), int(args.get("offset", 0)) // limit + 1
        else:
            start = int(args.get("cursor") or args.get("page") or 0)
            page = start // limit + 1
        with self.lock:
            queue = self.fail.get((path, page))
            if queue:
                status, headers = queue.pop(0)
                return json_response({"message": "try later"}, status, headers)
        chunk, end = rows[start : start + limit], start + limit
        more = end < len(rows)
        if path == "/page":
            return json_response({"data": {"items": chunk, "page": page}})
        if path == "/offset":
            return json_response(chunk)
        if path == "/cursor":
            return json_response({"results": chunk, "meta": {"next": str(end) if more else None}})
        if path == "/link":
            echo = f"&api_key={args['api_key']}" if "api_key" in args else ""  # some APIs echo the key: never stored
            headers = {"Link": f'<{self.url}/link?page={end}&limit={limit}{echo}>; rel="next"'} if more else {}
            return json_response({"items": chunk}, 200, headers)
        if path == "/next":
            return json_response(
                {"items": chunk, "links": {"next": f"/next?page={end}&limit={limit}" if more else None}}
            )
        return json_response({"message": "no such path"}, 404)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, headers=headers or {}, content_type="application/json")


PAGINATIONS: dict[str, dict[str, Any]] = {
    "page_number": {
        "path": "/page",
        "record_selector": "data.items",
        "pagination": {"type": "page_number", "page_param": "page", "size_param": "limit", "start": 1},
    },
    "offset": {
        "path": "/offset",
        "record_selector": "",
        "pagination": {"type": "offset", "offset_param": "offset", "limit_param": "limit"},
    },
    "cursor": {
        "path": "/cursor",
        "record_selector": "results",
        "pagination": {"type": "cursor", "cursor_param": "cursor", "cursor_path": "meta.next", "size_param": "limit"},
    },
    "link_header": {
        "path": "/link",
        "record_selector": "items",
        "pagination": {"type": "link_header", "size_param": "limit"},
    },
    "next_url": {
        "path": "/next",
        "record_selector": "items",
        "pagination": {"type": "next_url", "next_url_path": "links.next", "size_param": "limit"},
    },
}
FIELDS = {"id": "id", "name": "attributes.name", "email": "attributes.email", "updated_at": "updated_at"}


def settings(url: str, style: str = "page_number", auth: dict[str, Any] | None = None, **stream: Any) -> dict[str, Any]:
    return {
        "base_url": url,
        "timeout": 2.0,
        "auth": auth or {"type": "none"},
        "streams": {"suppliers": {**PAGINATIONS[style], "fields": FIELDS, "primary_key": ["id"], **stream}},
    }


@pytest.fixture
def api() -> Iterator[SupplierApi]:
    with SupplierApi() as server:
        yield server


@pytest.fixture
def harness(provider_harness: ProviderHarness) -> ProviderHarness:
    provider_harness.add_plugin(hub_rest, "rest")
    return provider_harness


def read_all(
    harness: ProviderHarness, provider: Any, cursor: str | None = None, page_size: int = 3
) -> tuple[list[dict[str, Any]], str | None, int]:
    records: list[dict[str, Any]] = []
    pages = 0
    while True:
        page = harness.call(
            provider, "sync", request=SyncRequest("r1", "demo", "suppliers", cursor=cursor, page_size=page_size)
        )
        records += page.records
        pages += 1
        cursor = page.cursor
        if not page.has_more:
            return records, cursor, pages


# --- contract and pagination ---------------------------------------------------------------------


def test_the_provider_class() -> None:
    check_provider_class(RestSource)


@pytest.mark.parametrize("pagination", sorted(PAGINATIONS))
def test_the_sync_contract_for_each_pagination(harness: ProviderHarness, api: SupplierApi, pagination: str) -> None:
    provider = harness.build("rest", settings(api.url, pagination))
    run_contract(harness, provider, data_type="suppliers")
    records, _, pages = read_all(harness, provider, page_size=3)
    assert [record["id"] for record in records] == [f"sup-{n}" for n in range(1, 8)]
    assert records[0] == {
        "id": "sup-1",
        "name": "Supplier 1",
        "email": "s1@example.com",
        "updated_at": "2026-01-01T10:01:00Z",
    }
    assert pages == 3


def test_the_selector_keeps_unmapped_records_whole(harness: ProviderHarness, api: SupplierApi) -> None:
    provider = harness.build("rest", settings(api.url, "offset", fields={}))
    records, _, _ = read_all(harness, provider)
    assert records[0] == supplier(1)


def test_an_unknown_stream_is_unsupported(harness: ProviderHarness, api: SupplierApi) -> None:
    provider = harness.build("rest", settings(api.url))
    with pytest.raises(UnsupportedError):
        harness.call(provider, "sync", request=SyncRequest("r1", "demo", "orders"))


def test_a_next_url_on_another_host_is_refused(harness: ProviderHarness, api: SupplierApi) -> None:
    # The API's Link header names 127.0.0.1; with a base URL on localhost that is another host: no credentials go there.
    provider = harness.build("rest", settings(api.url.replace("127.0.0.1", "localhost"), "link_header"))
    with pytest.raises(PermanentError, match="leaves"):
        harness.call(provider, "sync", request=SyncRequest("r1", "demo", "suppliers", page_size=2))


def test_invalid_settings_name_the_key(harness: ProviderHarness, api: SupplierApi) -> None:
    with pytest.raises(ConfigError, match="token"):
        harness.build("rest", settings(api.url, auth={"type": "bearer"}))
    with pytest.raises(ConfigError, match="cursor_path"):
        harness.build("rest", settings(api.url, pagination={"type": "cursor"}))


# --- auth ----------------------------------------------------------------------------------------


AUTHS = {
    "bearer": (("bearer", SECRET), {"type": "bearer", "token": SECRET}),
    "api_key_header": (("api_key_header", SECRET), {"type": "api_key", "name": "X-Api-Key", "value": SECRET}),
    "api_key_query": (
        ("api_key_query", SECRET),
        {"type": "api_key", "name": "api_key", "value": SECRET, "in": "query"},
    ),
    "basic": (("basic", "hub", SECRET), {"type": "basic", "username": "hub", "password": SECRET}),
    "oauth2": (
        ("oauth2", SECRET),
        {
            "type": "oauth2_client_credentials",
            "token_url": "/oauth/token",
            "client_id": "client-1",
            "client_secret": SECRET,
            "scope": "read",
        },
    ),
}


def _auth(api: SupplierApi, name: str) -> dict[str, Any]:
    server_auth, auth = AUTHS[name]
    api.auth = server_auth
    auth = dict(auth)
    if "token_url" in auth:
        auth["token_url"] = api.url + auth["token_url"]
    return auth


@pytest.mark.parametrize("name", sorted(AUTHS))
def test_each_auth_type(harness: ProviderHarness, api: SupplierApi, name: str) -> None:
    for style in ("cursor", "link_header"):
        provider = harness.build("rest", settings(api.url, style, auth=_auth(api, name)))
        first = harness.call(provider, "sync", request=SyncRequest("r1", "demo", "suppliers", page_size=3))
        assert SECRET not in (first.cursor or "")
        records, _, pages = read_all(harness, provider, page_size=3)
        assert len(records) == 7 and pages == 3
    assert harness.call(provider, "health").status == "success"
    wrong = {**_auth(api, name)}
    for key in ("token", "value", "password", "client_secret"):
        if key in wrong:
            wrong[key] = "wrong-" + SECRET
    refused = harness.build("rest", settings(api.url, "cursor", auth=wrong))
    with pytest.raises(ConfigurationError) as error:
        harness.call(refused, "sync", request=SyncRequest("r1", "demo", "suppliers"))
    assert SECRET not in str(error.value) and SECRET not in repr(
        error.value.to_dict() if hasattr(error.value, "to_dict") else ""
    )


def test_oauth2_tokens_are_cached_and_refreshed_once_on_401(harness: ProviderHarness, api: SupplierApi) -> None:
    provider = harness.build("rest", settings(api.url, "page_number", auth=_auth(api, "oauth2")))
    first = harness.call(provider, "sync", request=SyncRequest("r1", "demo", "suppliers", page_size=3))
    second = harness.call(
        provider, "sync", request=SyncRequest("r1", "demo", "suppliers", cursor=first.cursor, page_size=3)
    )
    assert api.issued == 1  # cached between pages
    api.tokens.clear()  # the API revokes it early: the next page gets 401, a new token, and succeeds
    third = harness.call(
        provider, "sync", request=SyncRequest("r1", "demo", "suppliers", cursor=second.cursor, page_size=3)
    )
    assert api.issued == 2 and [r["id"] for r in third.records] == ["sup-7"]
    api.auth = ("oauth2-never", SECRET)  # every token refused: one refresh, then ConfigurationError
    with pytest.raises(ConfigurationError):
        harness.call(provider, "sync", request=SyncRequest("r1", "demo", "suppliers"))
    assert api.issued == 3


# --- incremental ---------------------------------------------------------------------------------


INCREMENTAL = {"cursor_field": "updated_at", "type": "datetime", "param": "updated_since", "lookback": "2m"}


def test_the_incremental_cursor_with_lookback(harness: ProviderHarness, api: SupplierApi) -> None:
    provider = harness.build("rest", settings(api.url, "page_number", incremental=INCREMENTAL))
    records, cursor, _ = read_all(harness, provider, page_size=3)
    assert len(records) == 7 and all("updated_since" not in args for _, args in api.log)
    assert json.loads(cursor or "")["hwm"] == "2026-01-01T10:07:00+00:00"
    api.records[1] = {**supplier(2, 30), "attributes": {"name": "Renamed", "email": "s2@example.com"}}
    api.records.append(supplier(8, 31))
    api.log.clear()
    records, cursor, _ = read_all(harness, provider, cursor=cursor, page_size=3)
    # 10:07 minus the 2-minute lookback: 10:05 onwards, so 5, 6, 7 again (the core deduplicates) plus 2 and 8
    assert [r["id"] for r in records] == ["sup-5", "sup-6", "sup-7", "sup-2", "sup-8"]
    assert {args["updated_since"] for _, args in api.log} == {"2026-01-01T10:05:00+00:00"}
    assert json.loads(cursor or "")["hwm"] == "2026-01-01T10:31:00+00:00"


def test_the_high_water_mark_moves_only_after_the_last_page(harness: ProviderHarness, api: SupplierApi) -> None:
    provider = harness.build("rest", settings(api.url, "offset", incremental={**INCREMENTAL, "lookback": 0}))
    _, cursor, _ = read_all(harness, provider, page_size=3)
    api.records += [supplier(20, 40), supplier(21, 41), supplier(22, 42), supplier(23, 43)]
    page = harness.call(provider, "sync", request=SyncRequest("r1", "demo", "suppliers", cursor=cursor, page_size=3))
    state = json.loads(page.cursor)
    assert page.has_more and state["hwm"] == "2026-01-01T10:07:00+00:00" and state["max"] == "2026-01-01T10:41:00+00:00"


def test_an_integer_cursor_and_an_http_date_header(harness: ProviderHarness, api: SupplierApi) -> None:
    incremental = {
        "cursor_field": "updated_at",
        "param": "unused",
        "header": "If-Modified-Since",
        "format": "http-date",
        "lookback": 60,
    }
    provider = harness.build("rest", settings(api.url, "page_number", incremental=incremental))
    _, cursor, _ = read_all(harness, provider)
    api.log.clear()
    read_all(harness, provider, cursor=cursor)
    assert api.log[0][1]["If-Modified-Since"] == "Thu, 01 Jan 2026 10:06:00 GMT"
    api.records = [{"id": f"n{n}", "seq": n} for n in range(1, 6)]
    provider = harness.build(
        "rest",
        settings(
            api.url,
            "offset",
            fields={},
            incremental={"cursor_field": "seq", "type": "integer", "param": "since", "lookback": 1},
        ),
    )
    _, cursor, _ = read_all(harness, provider)
    assert json.loads(cursor or "")["hwm"] == 5
    api.log.clear()
    read_all(harness, provider, cursor=cursor)
    assert api.log[0][1]["since"] == "4"


# --- errors --------------------------------------------------------------------------------------


def test_throttling_and_status_mapping(harness: ProviderHarness, api: SupplierApi) -> None:
    provider = harness.build("rest", settings(api.url))
    api.fail[("/page", 1)] = [(429, {"Retry-After": "7"}), (503, {}), (404, {})]
    with pytest.raises(TransientError) as throttled:
        harness.call(provider, "sync", request=SyncRequest("r1", "demo", "suppliers"))
    assert throttled.value.retry_after == 7
    with pytest.raises(TransientError):
        harness.call(provider, "sync", request=SyncRequest("r1", "demo", "suppliers"))
    with pytest.raises(PermanentError):
        harness.call(provider, "sync", request=SyncRequest("r1", "demo", "suppliers"))
    with pytest.raises(PermanentError, match="cursor"):
        harness.call(provider, "sync", request=SyncRequest("r1", "demo", "suppliers", cursor="not json"))


# --- through the hub -----------------------------------------------------------------------------


def _hub(tmp_path: Any, api: SupplierApi, **stream: Any) -> Any:
    return rest_hub(
        tmp_path,
        plugins=[(hub_rest, "rest")],
        providers={"erp": {"type": "rest", **settings(api.url, "page_number", auth=_auth(api, "bearer"), **stream)}},
        services={"externalAPI": {"providers": ["erp"]}},
        retry={"attempts": 1, "initial_delay": 0.01, "max_delay": 0.01, "jitter": 0},
    )


def _stored(hub: Any) -> list[str]:
    items = hub.get(f"{API}/sync/records?dataType=suppliers&limit=100").get_json()["data"]["items"]
    return sorted(item["record"]["id"] for item in items)


def test_test_sync_with_a_supplier_id_option(tmp_path: Any, api: SupplierApi) -> None:
    with _hub(tmp_path, api, params={"supplier": "{options.supplierId}"}) as hub:
        response = hub.post(f"{API}/test/sync", {"dataType": "suppliers", "options": {"supplierId": "sup-3"}})
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["data"]["status"] == "succeeded"
        assert _stored(hub) == ["sup-3"]
        assert api.log[-1][1]["supplier"] == "sup-3"
        everyone = hub.post(f"{API}/test/sync", {"dataType": "suppliers", "pageSize": 3})
        assert everyone.status_code == 200, everyone.get_json()
        assert "supplier" not in api.log[-1][1]  # no option: the param is left out
        assert _stored(hub) == [f"sup-{n}" for n in range(1, 8)]
        views = json.dumps(hub.get("/api/integrations/health").get_json())
        assert SECRET not in views


def test_an_interrupted_sync_resumes_without_losing_or_duplicating_rows(tmp_path: Any, api: SupplierApi) -> None:
    with _hub(tmp_path, api, incremental={**INCREMENTAL, "lookback": 0}) as hub:
        api.fail[("/page", 3)] = [(500, {})]
        accepted = hub.post(f"{API}/sync", {"dataType": "suppliers", "pageSize": 2})
        assert accepted.status_code == 202, accepted.get_json()
        job_id = accepted.get_json()["data"]["jobId"]
        hub.hub.run_record(job_id)
        interrupted = hub.get(f"{API}/sync/{job_id}").get_json()["data"]
        assert (interrupted["status"], interrupted["count"], interrupted["hasMore"]) == ("queued", 4, True)
        assert _stored(hub) == ["sup-1", "sup-2", "sup-3", "sup-4"]
        hub.hub.run_record(job_id)
        done = hub.get(f"{API}/sync/{job_id}").get_json()["data"]
        assert (done["status"], done["count"]) == ("succeeded", 7), done
        assert _stored(hub) == [f"sup-{n}" for n in range(1, 8)]
        pages = [args["page"] for path, args in api.log if path == "/page"]
        assert pages == ["1", "2", "3", "3", "4"]  # page 3 again, never pages 1-2
        checkpoint = hub.get(f"{API}/sync/checkpoints").get_json()["data"]["items"][0]
        assert json.loads(checkpoint["cursor"])["hwm"] == "2026-01-01T10:07:00+00:00"


# --- Xero's Accounting API (Contacts), checked against Xero's own description -------------------------------


XERO_TENANT = "a3f1c2d4-0000-4000-8000-000000000001"


def _ms_date(minute: int) -> str:
    return f"/Date({1767261600000 + minute * 60_000}+0000)/"  # 2026-01-01T10:00Z + minute


def _contact(number: int, minute: int) -> dict[str, Any]:
    return {
        "ContactID": f"00000000-0000-4000-8000-{number:012d}",
        "Name": f"Contact {number}",
        "ContactStatus": "ACTIVE",
        "EmailAddress": f"c{number}@example.com",
        "IsSupplier": number % 2 == 0,
        "UpdatedDateUTC": _ms_date(minute),
    }


@pytest.fixture
def xero() -> Iterator[Any]:
    from datetime import datetime

    from hub.testing.contract_server import ContractRequest, ContractServer
    from hub.testing.specs import spec_or_skip

    spec = spec_or_skip("xero.com/xero_accounting.json")
    contacts = [_contact(number, number // 10) for number in range(1, 151)]

    def get_contacts(request: ContractRequest, state: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        rows = list(state.get("contacts", contacts))
        since = request.header("if-modified-since")
        if since:
            moment = datetime.fromisoformat(since.replace("Z", "+00:00")).timestamp() * 1000
            rows = [row for row in rows if int(row["UpdatedDateUTC"][6:-7]) >= moment]
        rows.sort(key=lambda row: (row["UpdatedDateUTC"], row["ContactID"]))
        page = int(request.query.get("page") or 1)
        state.setdefault("pages", []).append((page, since))
        return 200, {"Contacts": rows[(page - 1) * 100 : page * 100]}

    def token_app(environ: Any, start_response: Any) -> Any:
        request = Request(environ)
        expected = base64.b64encode(f"xero-client:{SECRET}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {expected}":
            return json_response({"error": "invalid_client"}, 400)(environ, start_response)
        return json_response({"access_token": "xero-token", "expires_in": 1800, "token_type": "Bearer"})(
            environ, start_response
        )

    server = ContractServer(
        spec,
        handlers={"getContacts": get_contacts},
        auth_check=lambda request: request.header("authorization") == "Bearer xero-token",
    )
    with server, WsgiServer(token_app, name="xero-identity") as identity:
        yield server, identity, contacts
        server.check()
        server.check_requests()


def test_xero_contacts_by_page_with_if_modified_since(harness: ProviderHarness, xero: Any) -> None:
    server, identity, contacts = xero
    provider = harness.build(
        "rest",
        {
            "base_url": server.url + "/api.xro/2.0",
            "auth": {
                "type": "oauth2_client_credentials",
                "token_url": identity.url + "/connect/token",
                "client_id": "xero-client",
                "client_secret": SECRET,
                "scope": "accounting.contacts.read",
            },
            "streams": {
                "suppliers": {
                    "path": "/Contacts",
                    "headers": {"xero-tenant-id": XERO_TENANT},
                    "record_selector": "Contacts",
                    "primary_key": ["id"],
                    "fields": {"id": "ContactID", "name": "Name", "email": "EmailAddress", "updated": "UpdatedDateUTC"},
                    "pagination": {"type": "page_number", "page_param": "page", "start": 1, "max_page_size": 100},
                    "incremental": {
                        "cursor_field": "UpdatedDateUTC",
                        "param": "If-Modified-Since",
                        "header": "If-Modified-Since",
                        "lookback": "1m",
                    },
                }
            },
        },
    )
    records, cursor, pages = read_all(harness, provider, page_size=500)
    assert len({record["id"] for record in records}) == 150 and pages == 2
    assert json.loads(cursor or "")["hwm"] == "2026-01-01T10:15:00+00:00"
    server.state["contacts"] = [*contacts, _contact(151, 30)]
    records, _, _ = read_all(harness, provider, cursor=cursor, page_size=500)
    # since 10:14 (10:15 minus the lookback): contacts 140-150 again, and the new one
    assert [record["id"][-3:] for record in records] == [f"{n:03d}" for n in [*range(140, 151), 151]]
    assert server.state["pages"][-1] == (1, "2026-01-01T10:14:00+00:00")


def test_xero_contacts_with_a_where_filter(harness: ProviderHarness, xero: Any) -> None:
    server, identity, _ = xero
    stream = {
        "path": "/Contacts",
        "headers": {"xero-tenant-id": XERO_TENANT},
        "record_selector": "Contacts",
        "fields": {"id": "ContactID", "updated": "UpdatedDateUTC"},
        "pagination": {"type": "page_number", "max_page_size": 100},
        "incremental": {
            "cursor_field": "UpdatedDateUTC",
            "param": "where",
            "format": "%Y,%m,%d,%H,%M,%S",
            "template": "UpdatedDateUTC>=DateTime({value})",
        },
    }
    auth = {
        "type": "oauth2_client_credentials",
        "token_url": identity.url + "/connect/token",
        "client_id": "xero-client",
        "client_secret": SECRET,
    }
    provider = harness.build(
        "rest", {"base_url": server.url + "/api.xro/2.0", "auth": auth, "streams": {"contacts": stream}}
    )
    cursor = None
    for _ in range(3):
        page = harness.call(
            provider, "sync", request=SyncRequest("r1", "demo", "contacts", cursor=cursor, page_size=500)
        )
        cursor = page.cursor
        if not page.has_more:
            break
    harness.call(provider, "sync", request=SyncRequest("r1", "demo", "contacts", cursor=cursor, page_size=500))
    assert server.requests[-1].query["where"] == "UpdatedDateUTC>=DateTime(2026,01,01,10,15,00)"
