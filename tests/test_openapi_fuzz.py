"""The OpenAPI document is the truth: schemathesis, driven by the hub's own document, against the app in-process.

Every operation gets ``FUZZ_EXAMPLES`` schema-valid requests and as many schema-violating ones (a fixed seed:
hypothesis' ``derandomize``), with a tenant's bearer token and ``X-Tenant-ID``. Checked on every answer: no 5xx,
the status is documented for the operation, the content type and the body match the document. Valid requests
must be accepted (2xx, or 404/409 for ids and states that do not exist), invalid ones refused (4xx).

A few rules depend on what is configured or stored at run time (the template's variables, provider and gateway
names, the data types a provider offers): the document cannot state them, so a 422 naming only such a field is
an accepted answer to a schema-valid request — listed per operation in ``RUNTIME_RULES`` with the reason.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from hub.api import API_PREFIX, create_app
from hub.manager import IntegrationManager
from tests.conftest import base_config

#: Requests per operation and per mode (valid / invalid): about 60 operations, so ~60 * 2 * this in all.
FUZZ_EXAMPLES = int(os.environ.get("HUB_FUZZ_EXAMPLES", "12"))

_TEMPLATE = "the template's variables (data.*) and its existence are the tenant's templates, known at run time"
_PROVIDER = "provider and gateway names are hub.yaml's and the tenant's"
_CROSS_FIELD = "recipients are required unless type is chat, fallbackServices must not repeat type"
_DATA_TYPE = "the data types a sync provider offers are the provider's"
_MONEY = "an ISO 4217 code in any case (JSON Schema has no case-insensitive enum); how many decimal places an amount may have is its currency's minor unit"
_EVENT_SCHEMAS = "an event's data must match its type's JSON Schema (registered at run time: GET /events/schemas), in the version it names"
_REFUND_MONEY = "how many decimal places an amount may have is the payment's currency's minor unit"
#: operation -> fields a 422 may name for a schema-valid request, with why the document cannot state the rule.
RUNTIME_RULES: dict[str, tuple[set[str], str]] = {
    "POST /notifications": ({"data", "template", "fallbackServices", "recipients"}, f"{_TEMPLATE}; {_CROSS_FIELD}"),
    "POST /test/notification": ({"data", "template", "fallbackServices", "recipients"}, f"{_TEMPLATE}; {_CROSS_FIELD}"),
    "POST /templates/{name}/preview": ({"data", "template"}, _TEMPLATE),
    "PUT /templates/{name}": ({"text", "subject", "html", "blocks"}, "a template must render: checked by rendering it"),
    "POST /payments": ({"gateway", "amount", "currency"}, f"{_PROVIDER}; {_MONEY}"),
    "POST /events": ({"data", "schemaVersion"}, _EVENT_SCHEMAS),
    "POST /test/event": ({"data", "schemaVersion"}, _EVENT_SCHEMAS),
    "POST /events/batch": ({"events"}, _EVENT_SCHEMAS),
    "POST /events/topics": ({"provider"}, _PROVIDER),
    "GET /events/topics": ({"provider"}, _PROVIDER),
    "DELETE /events/consumer-groups/{group}": ({"provider"}, _PROVIDER),
    "POST /events/subscriptions": (
        {"handler", "group", "provider", "tenant", "name", "topics", "filter"},
        "handler types and their settings are the plugins'; providers and groups follow the tenant's configuration",
    ),
    "PUT /events/schemas/{event_type}/{version}": (
        {"version", "schema"},
        "versions follow the ones registered (known at run time); a schema must be a valid JSON Schema, compatible with the version before",
    ),
    "POST /test/payment": ({"gateway", "amount", "currency"}, f"{_PROVIDER}; {_MONEY}"),
    "GET /payments": ({"createdTo"}, "createdTo must be after createdFrom (a cross-field rule)"),
    "GET /inventory/{sku}/history": ({"to"}, "to must be after from (a cross-field rule)"),
    "POST /payments/{record_id}/refunds": ({"amount"}, _REFUND_MONEY),
    "POST /payments/{record_id}/capture": ({"amount"}, _REFUND_MONEY),
    "POST /refunds": ({"amount"}, _REFUND_MONEY),
    "POST /sync": ({"provider", "dataType"}, f"{_PROVIDER}; {_DATA_TYPE}"),
    "POST /test/sync": ({"provider", "dataType"}, f"{_PROVIDER}; {_DATA_TYPE}"),
    "POST /inventory/updates": ({"provider"}, _PROVIDER),
    "PUT /credentials/{provider}": ({"settings"}, "a provider's own settings schema is the plugin's: checked by building the provider"),
    "POST /events/consumer-groups/{group}/reset": ({"offsets", "timestamp", "provider"}, "offsets/timestamp go with `to` (a cross-field rule)"),
    "POST /files": (
        {"metadata", "fileName", "contentType"},
        "metadata is a string holding a JSON object; a raw body is named by X-File-Name or ?fileName= (OpenAPI 3.0 cannot require one of two); "
        "the content must be what contentType (or the file name) says, found by sniffing the bytes",
    ),
}

#: Operations whose 422 may be the provider's own refusal of a valid request (no ``errors`` map): a card the
#: gateway declines (any card number is a valid string), a data type the sync provider does not offer.
PROVIDER_REFUSALS = {"POST /payments", "POST /test/payment", "POST /sync", "POST /test/sync"}
#: Operations that need an admin token: the fuzzer's is a tenant's, so their answer is 403.
ADMIN_ONLY = {"POST /initialize", "POST /shutdown", "GET /alerts"}
#: Operations authenticated by a signed query parameter: a schema-valid token the fuzzer makes up is refused (403).
SIGNED_URLS = {"GET /files/{file_id}/download"}

#: Parameters read only with a raw-body upload: sent with a JSON or multipart body they are not read, so a bad
#: value there is not refused (OpenAPI 3.0 cannot tie a parameter to one of the body's media types).
RAW_BODY_ONLY = {"POST /files": {"fileName", "category", "fileType", "metadata", "X-File-Name"}}

VALID_KEY = re.compile(r"^[!-~]{1,255}$")  # the document's Idempotency-Key

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzzed_hub(tmp_path_factory: pytest.TempPathFactory) -> Any:
    data_dir: Path = tmp_path_factory.mktemp("fuzz") / "var"
    # A credential key, so PUT /credentials stores rather than answering 503 (no key configured).
    hub = IntegrationManager(base_config(data_dir), environ={"HUB_CREDENTIAL_KEYS": "Zm9yLXRoZS1mdXp6LXRlc3Qtb25seS0zMmJ5dGVzISE="}, entry_points=False)
    yield hub, create_app(manager=hub), hub.tokens.create("demo", "fuzz")[1]
    hub.close()


def _accepted(label: str, response: Any) -> bool:
    """Is this an acceptable answer to a schema-valid request?"""
    status = response.status_code
    if status < 300 or status in (404, 409, 429):  # 429: the fuzzer outpaces the email limit, and should
        return True
    if status == 403:
        return label in ADMIN_ONLY or label in SIGNED_URLS
    if status != 422:
        return False
    body = response.json()
    if label in PROVIDER_REFUSALS and not body.get("errors"):
        return True
    allowed, _why = RUNTIME_RULES.get(label, (set(), ""))
    # A rule on a field covers what is inside it (data.items.0.sku under data; events.3.data under events).
    return bool(body.get("errors")) and all(any(key == name or key.startswith(f"{name}.") for name in allowed) for key in body["errors"])


def _negation_not_read(label: str, case: Any) -> bool:
    """Is the invalid part of this case only parameters the hub does not read with this body?"""
    only_raw = RAW_BODY_ONLY.get(label)
    data = case.meta.phase.data if case.meta is not None else None
    if not only_raw or case.media_type == "application/octet-stream" or data is None:
        return False
    if not data.mutations:
        return False
    # A mutation names its parameter, or points into the location's schema: /properties/<name>.
    negated = {mutation.parameter or mutation.schema_pointer.split("/properties/")[-1].split("/")[0] for mutation in data.mutations}
    locations = {mutation.parameter_location for mutation in data.mutations}
    return negated <= only_raw and locations <= {ParameterLocation.QUERY, ParameterLocation.HEADER}


def _fuzz(operation: Any, mode: GenerationMode, token: str, counts: Counter[str], failures: dict[tuple[str, str], str]) -> None:
    """Send ``FUZZ_EXAMPLES`` cases of one mode to one operation; count them and keep the first of each failure."""
    label = f"{operation.method.upper()} {operation.path}"
    checks = CHECKS if mode is GenerationMode.POSITIVE else [*CHECKS, negative_data_rejection]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=FUZZ_EXAMPLES,
        derandomize=True,  # a fixed seed: the same cases on every run
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: Any) -> None:
        counts["cases"] += 1
        case.headers = dict(case.headers or {})
        if "X-Tenant-ID" in case.headers:  # left out when the case is about a missing tenant
            case.headers["X-Tenant-ID"] = "demo"
        key = case.headers.get("Idempotency-Key")
        if isinstance(key, str) and VALID_KEY.match(key):  # an invalid key is kept: the case is about it
            # The fuzzer draws the same few short keys for different bodies; the hub rightly refuses a key
            # reused with another body (422, tests/test_api.py): each case gets a key of its own.
            case.headers["Idempotency-Key"] = uuid.uuid4().hex
        rules = checks if not _negation_not_read(label.replace(API_PREFIX, "", 1), case) else CHECKS
        try:
            response = case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=rules)
        except BaseException as error:  # schemathesis' FailureGroup is a BaseExceptionGroup
            if isinstance(error, KeyboardInterrupt):
                raise
            counts["failed"] += 1
            text = str(error)
            kind = text.split("\n\n")[1][:80] if "\n\n" in text else repr(error)[:80]
            failures.setdefault((label, kind), text[:1500])
            return
        if mode is GenerationMode.POSITIVE and not _accepted(label.replace(API_PREFIX, "", 1), response):
            counts["failed"] += 1
            failures.setdefault((label, f"valid request refused with {response.status_code}"), f"{case.as_curl_command()}\n{response.text[:600]}")

    try:
        fuzz()
    except Unsatisfiable:
        counts["unsatisfiable"] += 1  # no invalid request exists for it (a path of free strings, no body rules)


def test_schemathesis_finds_nothing(fuzzed_hub: Any) -> None:
    _hub, app, token = fuzzed_hub
    schema = schemathesis.openapi.from_wsgi(f"{API_PREFIX}/openapi.json", app)
    # Authorization comes from the test (a real token), not generated; X-Tenant-ID is a documented parameter.
    # The hub refuses NULs and lone surrogates in any text (422: no database, file system or SMTP server takes
    # them), a rule JSON Schema cannot state: valid requests are drawn from UTF-8 text without NUL.
    schema.config.generation.update(with_security_parameters=False, codec="utf-8", allow_x00=False)
    # A size over the limit is refused with 413, not 422.
    schema.config.checks.negative_data_rejection.expected_statuses = ["400", "401", "403", "404", "405", "409", "413", "415", "422", "429"]
    counts: Counter[str] = Counter()
    failures: dict[tuple[str, str], str] = {}
    started = time.monotonic()
    for result in schema.get_all_operations():
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz(result.ok(), mode, token, counts, failures)
    elapsed = time.monotonic() - started
    print(f"schemathesis: {counts['cases']} cases, {counts['failed']} failed, {len(failures)} distinct, {elapsed:.0f} s")
    assert counts["cases"] >= 1000  # the run really ran
    assert not failures, "\n".join(f"{label}: {kind}" for label, kind in failures) + "\n\n" + "\n\n".join(f"== {label}: {kind}\n{detail}" for (label, kind), detail in list(failures.items())[:15])
