"""Bad input (issue 7): refused with a 4xx naming the field before any provider is called, on SQLite and
PostgreSQL; a plugin's unexpected exception never opens a provider's breaker for every tenant."""

from __future__ import annotations

import base64
import errno
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pybreaker
import pytest

from hub import hookimpl
from hub.api import create_app
from hub.builtins.local_disk import LocalDisk
from hub.capabilities import StoredFile, UploadStream
from hub.errors import TransientError
from hub.manager import IntegrationManager
from hub.resilience import Breakers, guarded_call, is_retryable
from tests.conftest import API, base_config, data_of, error_of

SURROGATE_JSON = '"a\\ud800"'  # JSON's escape for a lone surrogate: json.loads gives "a\ud800"


class Api:
    def __init__(self, manager: IntegrationManager) -> None:
        self.manager = manager
        self.client = create_app(manager=manager).test_client()
        self.headers = {"Authorization": f"Bearer {manager.tokens.create('acme')[1]}", "X-Tenant-ID": "acme"}

    def post(self, path: str, body: Any = None, raw: str | None = None, **headers: str) -> Any:
        if raw is not None:
            return self.client.post(API + path, data=raw, content_type="application/json", headers={**self.headers, **headers})
        return self.client.post(API + path, json=body, headers={**self.headers, **headers})

    def get(self, path: str, **headers: str) -> Any:
        return self.client.get(API + path, headers={**self.headers, **headers})

    def put(self, path: str, body: Any = None, raw: str | None = None) -> Any:
        if raw is not None:
            return self.client.put(API + path, data=raw, content_type="application/json", headers=self.headers)
        return self.client.put(API + path, json=body, headers=self.headers)

    def upload(self, name: str, content: bytes = b"hello world") -> Any:
        return self.post("/files", {"fileName": name, "content": base64.b64encode(content).decode()})


@pytest.fixture(params=["sqlite", "postgresql"])
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Api]:
    options: dict[str, Any] = {}
    if request.param == "postgresql":
        options["database_url"] = request.getfixturevalue("postgres_url")
    manager = IntegrationManager(base_config(tmp_path / "var", **options), environ={}, entry_points=False)
    assert manager.db.engine.dialect.name == request.param
    yield Api(manager)
    manager.close()


def _email(name: Any = "Ann", subject_data: Any = "hi") -> dict[str, Any]:
    return {"type": "email", "recipients": [{"email": "ann@example.com", "name": name}], "template": "custom", "data": {"subject": subject_data, "message": "hello"}}


# --- text no provider or database could take: 422 naming the field -----------------------------------


def test_lone_surrogates_and_nuls_are_refused_in_every_field(api: Api) -> None:
    body = json.dumps(_email()).replace('"Ann"', SURROGATE_JSON)
    refused = error_of(api.post("/notifications", raw=body), 422)
    assert refused["errors"] == {"recipients": {"0": {"name": ["must be valid Unicode text (it holds a lone surrogate)"]}}}
    in_subject = json.dumps(_email()).replace('"hi"', SURROGATE_JSON)
    assert "data" in error_of(api.post("/notifications", raw=in_subject), 422)["errors"]
    order = json.dumps({"amount": 5, "currency": "USD", "orderId": "x"}).replace('"x"', SURROGATE_JSON)
    assert "orderId" in error_of(api.post("/payments", raw=order), 422)["errors"]
    event = json.dumps({"topic": "orders", "eventType": "order.created", "data": {}, "key": "k"}).replace('"k"', SURROGATE_JSON)
    assert "key" in error_of(api.post("/events", raw=event), 422)["errors"]
    nested = {"topic": "orders", "eventType": "order.created", "data": {"deep": [{"x": "a\x00b"}]}}
    assert error_of(api.post("/events", nested), 422)["errors"] == {"data": {"deep": {"0": {"x": ["must not contain a NUL character"]}}}}
    assert "fileName" in error_of(api.upload("report\x00.txt"), 422)["errors"]
    surrogate_name = json.dumps({"fileName": "x", "content": "aGk="}).replace('"x"', SURROGATE_JSON)
    assert "fileName" in error_of(api.post("/files", raw=surrogate_name), 422)["errors"]
    # Nothing reached a provider, and nothing was recorded.
    assert api.manager.list_records("acme", None, None, 50, 0) == []


def test_templates_with_nul_or_surrogates_are_refused(api: Api) -> None:
    assert "text" in error_of(api.put("/templates/welcome", {"channel": "email", "text": "Hi\x00"}), 422)["errors"]
    raw = json.dumps({"channel": "email", "text": "x"}).replace('"x"', SURROGATE_JSON)
    assert "text" in error_of(api.put("/templates/welcome", raw=raw), 422)["errors"]
    preview = json.dumps({"data": {"subject": "x", "message": "m"}}).replace('"x"', SURROGATE_JSON)
    error_of(api.client.post(f"{API}/templates/custom/preview", data=preview, content_type="application/json", headers=api.headers), 422)


def test_deep_json_non_object_bodies_and_huge_offsets_are_4xx(api: Api) -> None:
    deep = "[" * 5000 + "]" * 5000
    assert error_of(api.post("/notifications", raw=deep), 422)["errors"] == {"body": ["nested too deeply (at most 32 levels)"]}
    shallow = {"topic": "orders", "eventType": "order.created", "data": {"a": json.loads("[" * 20 + "]" * 20)}}
    assert api.post("/events", shallow).status_code == 201
    too_deep = {"topic": "orders", "eventType": "order.created", "data": {"a": json.loads("[" * 40 + "]" * 40)}}
    error_of(api.post("/events", too_deep), 422)
    for body in ("[1, 2]", '"text"', "42"):
        error_of(api.post("/templates/custom/preview", raw=body), 422)
        error_of(api.put("/templates/custom", raw=body), 422)
    assert "offset" in error_of(api.get("/files?offset=99999999999999999999"), 422)["errors"]
    assert "offset" in error_of(api.get("/payments?offset=99999999999999999999"), 422)["errors"]


def test_multipart_upload_with_an_unnamed_part_is_4xx(api: Api) -> None:
    boundary = "XyZ"
    body = (f"--{boundary}\r\nContent-Disposition: form-data\r\n\r\nno name\r\n--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="a.txt"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--{boundary}--\r\n')
    response = api.client.post(f"{API}/files", data=body.encode(), content_type=f"multipart/form-data; boundary={boundary}", headers=api.headers)
    assert "form" in error_of(response, 422)["errors"]
    with_bad_field = body.replace("--XyZ--", '--XyZ\r\nContent-Disposition: form-data; name="category"\r\n\r\nno spaces allowed\r\n--XyZ--')
    response = api.client.post(f"{API}/files", data=with_bad_field.encode(), content_type=f"multipart/form-data; boundary={boundary}", headers=api.headers)
    assert "form" in error_of(response, 422)["errors"]  # was a 500: a None key beside "category" in the error's JSON
    only_unnamed = f"--{boundary}\r\nContent-Disposition: form-data\r\n\r\nno name\r\n--{boundary}--\r\n"
    response = api.client.post(f"{API}/files", data=only_unnamed.encode(), content_type=f"multipart/form-data; boundary={boundary}", headers=api.headers)
    assert "file" in error_of(response, 422)["errors"]
    form = {"file": (io.BytesIO(b"hello"), "a.txt"), "category": "ok\x00"}
    response = api.client.post(f"{API}/files", data=form, content_type="multipart/form-data", headers=api.headers)
    assert "category" in error_of(response, 422)["errors"]
    raw = api.client.post(f"{API}/files", data=b"hello", content_type="text/plain", headers={**api.headers, "X-File-Name": "a%00b.txt"})
    assert "fileName" in error_of(raw, 422)["errors"]


# --- headers: Idempotency-Key, X-Request-ID --------------------------------------------------------------


def test_empty_or_over_long_idempotency_keys_are_400(api: Api) -> None:
    payment = {"amount": 5, "currency": "USD"}
    for key in ("", " ", "k" * 256, "tab\tkey"):
        assert "Idempotency-Key" in error_of(api.post("/payments", payment, **{"Idempotency-Key": key}), 400)["errors"]
    # The refusals left nothing behind: later POSTs of that kind (with and without a key) still work.
    data_of(api.post("/payments", payment), 201)
    first = data_of(api.post("/payments", payment, **{"Idempotency-Key": "k" * 255}), 201)
    assert data_of(api.post("/payments", payment, **{"Idempotency-Key": "k" * 255}), 201) == first


def test_long_request_ids_and_long_idempotent_paths_are_not_500(api: Api) -> None:
    long_id = "r" * 100
    response = api.get("/payments/nope", **{"X-Request-ID": long_id})
    error_of(response, 404)
    assert response.headers["X-Request-ID"] == long_id[:64]
    created = api.post("/payments", {"amount": 5, "currency": "USD"}, **{"X-Request-ID": long_id})
    assert created.status_code == 201 and data_of(created, 201)
    weird = api.get("/payments/nope", **{"X-Request-ID": "bad id\u00e9"})
    assert weird.status_code == 404 and len(weird.headers["X-Request-ID"]) == 32
    refund = api.post("/payments/" + "p" * 600 + "/refunds", {}, **{"Idempotency-Key": "refund-1"})
    error_of(refund, 404)
    assert api.get("/payments/a%00b").status_code == 422  # a NUL in the URL: no database is asked


# --- names a file system accepts, and downloads of any name --------------------------------------------


def test_a_250_character_file_name_and_a_249_character_topic_work(api: Api) -> None:
    name = "r" * 246 + ".pdf"
    uploaded = data_of(api.upload(name, b"%PDF-1.4 hello"), 201)
    assert uploaded["fileName"] == name and len(uploaded["fileKey"].rsplit("/", 1)[1]) <= 200
    assert api.get(f"/files/{uploaded['fileId']}/content").data == b"%PDF-1.4 hello"
    topic = "t" * 249
    published = data_of(api.post("/events", {"topic": topic, "eventType": "order.created", "data": {"n": 1}}), 201)
    assert published["topic"] == topic
    other = data_of(api.post("/events", {"topic": "t" * 248 + "u", "eventType": "order.created", "data": {"n": 2}}), 201)
    assert other["offset"] == published["offset"] == "0"  # two long topics, two logs


@pytest.mark.parametrize("name", ["отчёт.pdf", "報告.txt", "tab\there\r\nnewline.txt", 'quote"back\\slash%.txt', "résumé.txt"])
def test_any_file_name_downloads_with_an_rfc_6266_content_disposition(api: Api, name: str) -> None:
    uploaded = data_of(api.upload(name), 201)
    download = api.get(f"/files/{uploaded['fileId']}/content")
    assert download.status_code == 200 and download.data == b"hello world"
    disposition = download.headers["Content-Disposition"]
    assert disposition.isascii() and "\r" not in disposition and "\n" not in disposition
    fallback = disposition.split('filename="', 1)[1].split('"', 1)[0]
    assert fallback and fallback.isprintable() and '"' not in fallback
    assert unquote(disposition.split("filename*=UTF-8''", 1)[1]) == name


def test_raw_uploads_take_a_percent_encoded_or_raw_utf8_x_file_name(api: Api) -> None:
    name = "отчёт 報告.pdf"
    for sent in (quote(name), name.encode("utf-8").decode("latin-1")):  # WSGI hands headers over as Latin-1
        raw = api.client.post(f"{API}/files", data=b"hello", content_type="text/plain", headers={**api.headers, "X-File-Name": sent})
        assert data_of(raw, 201)["fileName"] == name


# --- templates: refused on save when they cannot render; bounded in size and time ------------------------


@pytest.mark.parametrize(
    "text",
    [
        "{{ 1/0 }}",
        "{{ 10.0 ** 400 }}",
        "{% macro m(n) %}{{ m(n) }}{% endmacro %}{{ m(1) }}",
        "{{ 3.7|round(2, 'sideways') }}",
        "{{ 'abc'|wordwrap(0) }}",
        "{{ 'A' * 20000000 }}",
        "{{ 10 ** 10000000 }}",
        "{{ 'a'|center(100000000) }}",
        "{% for i in range(100000) %}{% for j in range(100000) %}{{ j }}{% endfor %}{% endfor %}",
        "{% set r = range(100000)|list %}{% set s %}{% for i in r %}{% for j in r %}{% endfor %}{% endfor %}{% endset %}x",
    ],
)
def test_templates_that_cannot_render_are_refused_on_save(api: Api, text: str) -> None:
    started = time.monotonic()
    refused = error_of(api.put("/templates/broken", {"channel": "email", "subject": "s", "text": text}), 422)
    assert "text" in refused["errors"] and time.monotonic() - started < 5
    assert "broken" not in [item["name"] for item in data_of(api.get("/templates"))["items"]]


def test_render_errors_are_422_and_rendering_is_bounded(api: Api) -> None:
    # Templates that render with some data are accepted; with data that breaks them, a send is a 422.
    data_of(api.put("/templates/invoice", {"channel": "email", "subject": "Invoice", "text": "Due: {{ total / count }} {{ 'A' * width }}", "required": ["total", "count", "width"]}))
    ok = data_of(api.post("/templates/invoice/preview", {"channel": "email", "data": {"total": 10, "count": 4, "width": 3}}))
    assert ok["text"] == "Due: 2.5 AAA"
    for data, reason in (({"total": 1, "count": 0, "width": 1}, "ZeroDivisionError"), ({"total": 1, "count": 1, "width": 20_000_000}, "over 1,000,000 characters")):
        refused = error_of(api.post("/templates/invoice/preview", {"channel": "email", "data": data}), 422)
        assert reason in refused["errors"]["template"][0]
        send = {"type": "email", "recipients": [{"email": "ann@example.com"}], "template": "invoice", "data": data}
        assert reason in error_of(api.post("/notifications", send), 422)["errors"]["template"][0]
    started = time.monotonic()
    data_of(api.put("/templates/loops", {"channel": "email", "text": "{% for i in range(n) %}{% for j in range(n) %}{% if j < 0 %}{{ j }}{% endif %}{% endfor %}{% endfor %}x", "required": ["n"]}))
    error_of(api.post("/templates/loops/preview", {"channel": "email", "data": {"n": 100_000}}), 422)
    data_of(api.put("/templates/pairs", {"channel": "email", "text": "{% for i in items %}{% for j in items %}{% endfor %}{% endfor %}done", "required": ["items"]}))
    assert data_of(api.post("/templates/pairs/preview", {"channel": "email", "data": {"items": [1, 2]}}))["text"] == "done"
    error_of(api.post("/templates/pairs/preview", {"channel": "email", "data": {"items": list(range(100_000))}}), 422)
    assert time.monotonic() - started < 5  # cut at the render time limit, not after 10^10 iterations


# --- breakers: only provider failures count -----------------------------------------------------------------


def test_unexpected_plugin_errors_neither_open_the_breaker_nor_retry() -> None:
    breaker = Breakers(fail_max=2, reset_timeout=30).get("disk")

    def crash() -> None:
        raise OSError(36, "File name too long", "/srv/hub/files/" + "x" * 300)

    for _ in range(10):
        with pytest.raises(OSError, match="File name too long"):
            guarded_call(breaker, crash)
    assert breaker.current_state == pybreaker.STATE_CLOSED and not is_retryable(OSError(36, "File name too long"))
    assert not is_retryable(UnicodeEncodeError("utf-8", "a\ud800", 1, 2, "surrogates not allowed"))
    assert is_retryable(ConnectionRefusedError()) and is_retryable(TransientError("down"))

    def down() -> None:
        raise ConnectionResetError("reset by peer")

    for _ in range(2):
        with pytest.raises(ConnectionResetError):
            guarded_call(breaker, down)
    assert breaker.current_state == pybreaker.STATE_OPEN  # a transport failure is a provider failure


# --- hub-smtp: a lone surrogate that got past the API (the Python facade, a hub.yaml template) ----------------


def test_hub_smtp_sends_a_lone_surrogate_in_a_name_or_subject_instead_of_crashing(provider_harness: Any) -> None:
    import hub_smtp

    from hub.capabilities import Message, Recipient
    from hub.testing.servers import SmtpServer

    provider_harness.add_plugin(hub_smtp, "smtp")
    with SmtpServer(starttls=False, require_auth=False) as server:
        provider = provider_harness.build("smtp", {"host": server.host, "port": server.port, "from_address": "hub@example.com", "timeout": 5, "security": "none"})
        message = Message(id="rec-1-email-0", tenant="demo", channel="email", recipients=[Recipient("ann@example.com", name="Ann \ud800")], subject="Hi \udfff there", text="hello\n")
        result = provider_harness.call(provider, "notify", message=message)
        assert [outcome.status for outcome in result.results] == ["sent"]
        received = server.messages[0].message
        assert received["Subject"] == "Hi ? there" and "Ann ?" in received["To"]


class CrashingDisk(LocalDisk):
    """Local disk whose store() hits an error it did not expect for some names (as ENAMETOOLONG was)."""

    type_name = "crashing-disk"
    calls = 0

    @hookimpl
    def store(self, file: StoredFile, stream: UploadStream) -> StoredFile:
        type(self).calls += 1
        if "boom" in file.key:
            raise OSError(errno.ENAMETOOLONG, "File name too long", str(self.root / file.key))
        return super().store(file, stream)


class CrashingDiskPlugin:
    @hookimpl
    def register_providers(self, register: Any) -> None:
        register(CrashingDisk)


def test_one_tenants_crashing_input_neither_retries_nor_opens_the_breaker_for_others(tmp_path: Path) -> None:
    config = base_config(tmp_path / "var", providers={"crashy": {"type": "crashing-disk", "root": "files"}}, services={"fileStorage": {"providers": ["crashy"]}})
    manager = IntegrationManager(config, environ={}, entry_points=False, plugins=[(CrashingDiskPlugin(), "crashing-disk")])
    try:
        api = Api(manager)
        root = str(manager.registry.slots["crashy"].instance.root)
        for n in range(12):  # well past the breaker's fail_max
            failed = api.upload(f"boom-{n}.txt")
            assert failed.status_code == 503 and "circuit open" not in failed.get_data(as_text=True)
            assert root not in failed.get_data(as_text=True) and "<path>" in failed.get_json()["error"]
        assert CrashingDisk.calls == 12  # tried once each: a plugin's bug fails the same way again
        assert manager.runtime.breakers.state("crashy") == "closed"
        other = Api.__new__(Api)
        other.manager, other.client = manager, api.client
        other.headers = {"Authorization": f"Bearer {manager.tokens.create('other')[1]}", "X-Tenant-ID": "other"}
        data_of(other.upload("fine.txt"), 201)  # another tenant is not shut out
    finally:
        manager.close()
