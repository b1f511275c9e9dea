"""A PayPal test double for your own tests: a stateful PayPal on 127.0.0.1 that checks every request.

:func:`paypal_contract_server` starts a :class:`~hub.testing.contract_server.ContractServer` serving PayPal's
official Orders v2 description (``shared/specs/paypal/checkout_orders_v2.json``) plus the few operations the
``paypal`` gateway also calls, which that description does not cover -- the OAuth2 token, an authorization's
capture and void, a capture's refund, webhook signature verification and the signing certificate. Those are
**written here from PayPal's API reference** (field names, statuses and error bodies as documented; marked
``x-hub-source`` in the merged description), not taken from an official description. A request either
description does not allow is refused in PayPal's error shape; every answer of :class:`PayPalFake` is checked
against the description too.

The fake keeps state like PayPal: orders, authorizations, captures and refunds per account (client id), tokens
that expire, ``PayPal-Request-Id`` replays that answer with the first request's resource, refunds never above
what is left of a capture. Vaulted test tokens choose the outcome (:data:`TEST_TOKENS`). :func:`sign_webhook`
signs an event as PayPal does (``PAYPAL-TRANSMISSION-SIG``: SHA256withRSA over
``transmission_id|transmission_time|webhook_id|crc32(body)``) with the fake's throwaway certificate, which the
fake serves at a 127.0.0.1 ``PAYPAL-CERT-URL``; its ``verify-webhook-signature`` really verifies.

Example::

    from hub_paypal.testing import paypal_contract_server

    with paypal_contract_server() as paypal:
        providers = {"paypal": {"type": "paypal", **paypal.gateway_settings()}}  # client id, secret, api_base...
        ...  # build the hub or the gateway, pay with "tok-visa"; paypal.charges() lists what took money
        body, headers = paypal.sign_webhook(paypal.capture_event(order_id))
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import secrets
import string
import time
import zlib
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hub.capabilities import currency_exponent
from hub.testing.contract_server import ContractError, ContractRequest, ContractServer
from hub.testing.specs import local_spec_or_skip

__all__ = [
    "BACKUP_CLIENT_ID",
    "BACKUP_CLIENT_SECRET",
    "CLIENT_ID",
    "CLIENT_SECRET",
    "TEST_TOKENS",
    "WEBHOOK_ID",
    "PayPalFake",
    "merged_spec",
    "paypal_contract_server",
    "paypal_error_shaper",
    "sign_webhook",
]

CLIENT_ID = "hub-test-client"
CLIENT_SECRET = "hub-test-secret"
BACKUP_CLIENT_ID = "hub-backup-client"
BACKUP_CLIENT_SECRET = "hub-backup-secret"
#: The webhook id registered for the fake's accounts (``webhook_id`` setting).
WEBHOOK_ID = "8PT597110X687430LKGECATA"

#: Vault ids (``payment_method``) that choose what the fake does; any other vault id is charged at once.
TEST_TOKENS = {
    "tok-declined": "INSTRUMENT_DECLINED",  # 422 UNPROCESSABLE_ENTITY
    "tok-refused": "TRANSACTION_REFUSED",  # 422 UNPROCESSABLE_ENTITY
    "tok-pending": "pending",  # capture PENDING (settled later)
    "tok-approve": "approve",  # order APPROVED: the client captures or authorizes it
    "tok-lost-answer": "lost",  # processed, then answered 500 INTERNAL_SERVER_ERROR
    "tok-capture-declined": "capture-declined",  # order COMPLETED, its capture DECLINED
}
#: PayPal's decimals where they differ from ISO 4217 (HUF and TWD: whole units).
PAYPAL_EXPONENTS = {"HUF": 0, "TWD": 0}

_NOT_OFFICIAL = "hub-paypal: written from PayPal's API reference; not part of an official API description"
_TOKEN_LIFETIME = 32400


# --- the description ---------------------------------------------------------------------------------------


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json_body(schema: Any, *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def _answer(description: str, schema: Any) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors() -> dict[str, Any]:
    return {
        "400": _answer("Invalid request.", _ref("error_400")),
        "401": {"description": "Authentication failed."},
        "404": _answer("The resource does not exist.", _ref("error_404")),
        "422": _answer("The action cannot be performed.", _ref("error_422")),
        "default": {"$ref": "#/components/responses/default"},
    }


def _request_headers() -> list[dict[str, Any]]:
    return [{"$ref": "#/components/parameters/paypal_request_id"}, {"$ref": "#/components/parameters/prefer"}]


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def merged_spec(official: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of PayPal's Orders v2 description with the path items the gateway also uses added (the
    shared file and the cached dict stay untouched). Each added item carries ``x-hub-source``."""
    spec = copy.deepcopy(dict(official))
    components = spec.setdefault("components", {})
    components.setdefault("securitySchemes", {})["BasicAuth"] = {
        "type": "http",
        "scheme": "basic",
        "description": "client_id:client_secret, for /v1/oauth2/token only. " + _NOT_OFFICIAL,
    }
    oauth = [{"Oauth2": ["https://uri.paypal.com/services/payments/payment"]}]
    schemas = components.setdefault("schemas", {})
    schemas["hub_capture_request"] = {
        "type": "object",
        "description": "POST /v2/payments/authorizations/{id}/capture (Payments v2 reference). " + _NOT_OFFICIAL,
        "additionalProperties": False,
        "properties": {
            "amount": _ref("money"),
            "invoice_id": {"type": "string", "maxLength": 127},
            "final_capture": {"type": "boolean"},
            "note_to_payer": {"type": "string", "maxLength": 255},
            "soft_descriptor": {"type": "string", "maxLength": 22},
        },
    }
    schemas["hub_refund_request"] = {
        "type": "object",
        "description": "POST /v2/payments/captures/{id}/refund (Payments v2 reference). " + _NOT_OFFICIAL,
        "additionalProperties": False,
        "properties": {
            "amount": _ref("money"),
            "custom_id": {"type": "string", "minLength": 1, "maxLength": 127, "pattern": "^[A-Za-z0-9-_.,]*$"},
            "invoice_id": {"type": "string", "minLength": 1, "maxLength": 127},
            "note_to_payer": {"type": "string", "minLength": 1, "maxLength": 255},
        },
    }
    schemas["hub_verify_webhook_signature"] = {
        "type": "object",
        "description": "Webhooks Management v1 reference. " + _NOT_OFFICIAL,
        "additionalProperties": False,
        "required": [
            "auth_algo",
            "cert_url",
            "transmission_id",
            "transmission_sig",
            "transmission_time",
            "webhook_id",
            "webhook_event",
        ],
        "properties": {
            "auth_algo": {"type": "string", "maxLength": 100, "pattern": "^[a-zA-Z0-9]+$"},
            "cert_url": {"type": "string", "maxLength": 500, "format": "uri"},
            "transmission_id": {"type": "string", "maxLength": 50},
            "transmission_sig": {"type": "string", "maxLength": 500},
            "transmission_time": {"type": "string", "maxLength": 100, "format": "date-time"},
            "webhook_id": {"type": "string", "maxLength": 50, "pattern": "^[a-zA-Z0-9]+$"},
            "webhook_event": {"type": "object"},
        },
    }
    paths = spec.setdefault("paths", {})
    paths["/v1/oauth2/token"] = {
        "x-hub-source": _NOT_OFFICIAL,
        "post": {
            "operationId": "hub.oauth2.token",
            "summary": "Get an access token (client credentials). " + _NOT_OFFICIAL,
            "security": [{"BasicAuth": []}],
            "requestBody": {
                "required": True,
                "content": {
                    "application/x-www-form-urlencoded": {
                        "schema": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["grant_type"],
                            "properties": {"grant_type": {"type": "string", "enum": ["client_credentials"]}},
                        }
                    }
                },
            },
            "responses": {
                "200": _answer(
                    "An access token.",
                    {
                        "type": "object",
                        "required": ["access_token", "token_type", "expires_in"],
                        "properties": {
                            "scope": {"type": "string"},
                            "access_token": {"type": "string"},
                            "token_type": {"type": "string", "enum": ["Bearer"]},
                            "app_id": {"type": "string"},
                            "expires_in": {"type": "integer", "minimum": 0},
                            "nonce": {"type": "string"},
                        },
                    },
                ),
                "401": {"description": "invalid_client"},
            },
        },
    }
    paths["/v2/payments/authorizations/{authorization_id}/capture"] = {
        "x-hub-source": _NOT_OFFICIAL,
        "post": {
            "operationId": "hub.authorizations.capture",
            "summary": "Capture an authorized payment. " + _NOT_OFFICIAL,
            "security": oauth,
            "parameters": [_path_param("authorization_id"), *_request_headers()],
            "requestBody": _json_body(_ref("hub_capture_request"), required=False),
            "responses": {
                "200": _answer("The capture (an idempotent replay).", _ref("capture")),
                "201": _answer("The capture.", _ref("capture")),
                **_errors(),
            },
        },
    }
    paths["/v2/payments/authorizations/{authorization_id}/void"] = {
        "x-hub-source": _NOT_OFFICIAL,
        "post": {
            "operationId": "hub.authorizations.void",
            "summary": "Void an authorized payment. " + _NOT_OFFICIAL,
            "security": oauth,
            "parameters": [_path_param("authorization_id"), *_request_headers()],
            "responses": {
                "200": _answer("The voided authorization (Prefer: return=representation).", _ref("authorization")),
                "204": {"description": "Voided."},
                **_errors(),
            },
        },
    }
    paths["/v2/payments/captures/{capture_id}/refund"] = {
        "x-hub-source": _NOT_OFFICIAL,
        "post": {
            "operationId": "hub.captures.refund",
            "summary": "Refund a captured payment. " + _NOT_OFFICIAL,
            "security": oauth,
            "parameters": [_path_param("capture_id"), *_request_headers()],
            "requestBody": _json_body(_ref("hub_refund_request"), required=False),
            "responses": {
                "200": _answer("The refund (an idempotent replay).", _ref("refund")),
                "201": _answer("The refund.", _ref("refund")),
                **_errors(),
            },
        },
    }
    paths["/v2/payments/captures/{capture_id}"] = {
        "x-hub-source": _NOT_OFFICIAL,
        "get": {
            "operationId": "hub.captures.get",
            "summary": "Show a captured payment's details. " + _NOT_OFFICIAL,
            "security": oauth,
            "parameters": [_path_param("capture_id")],
            "responses": {"200": _answer("The capture.", _ref("capture")), **_errors()},
        },
    }
    paths["/v1/notifications/verify-webhook-signature"] = {
        "x-hub-source": _NOT_OFFICIAL,
        "post": {
            "operationId": "hub.webhooks.verify_signature",
            "summary": "Verify a webhook signature. " + _NOT_OFFICIAL,
            "security": oauth,
            "requestBody": _json_body(_ref("hub_verify_webhook_signature")),
            "responses": {
                "200": _answer(
                    "The verification status.",
                    {
                        "type": "object",
                        "required": ["verification_status"],
                        "properties": {"verification_status": {"type": "string", "enum": ["SUCCESS", "FAILURE"]}},
                    },
                ),
                **_errors(),
            },
        },
    }
    paths["/v1/notifications/certs/{cert_id}"] = {
        "x-hub-source": _NOT_OFFICIAL,
        "get": {
            "operationId": "hub.webhooks.certificate",
            "summary": "The PEM certificate a PAYPAL-CERT-URL names. " + _NOT_OFFICIAL,
            "parameters": [_path_param("cert_id")],
            "responses": {"200": {"description": "PEM", "content": {"text/plain": {"schema": {"type": "string"}}}}},
        },
    }
    return spec


def paypal_spec() -> dict[str, Any]:
    """The official Orders v2 description from ``shared/specs`` (the test skips without it), merged."""
    return merged_spec(local_spec_or_skip("paypal/checkout_orders_v2.json", what="PayPal's Orders v2 description"))


# --- errors --------------------------------------------------------------------------------------------------

_ERROR_TEXT = {
    400: ("INVALID_REQUEST", "Request is not well-formed, syntactically incorrect, or violates schema."),
    404: ("RESOURCE_NOT_FOUND", "The specified resource does not exist."),
    415: ("UNSUPPORTED_MEDIA_TYPE", "The server does not support the request payload's media type."),
    422: (
        "UNPROCESSABLE_ENTITY",
        "The requested action could not be performed, semantically incorrect, or failed business validation.",
    ),
    500: ("INTERNAL_SERVER_ERROR", "An internal server error occurred."),
}


def _debug_id() -> str:
    return secrets.token_hex(6)


def paypal_error(status: int, issue: str | None = None, description: str | None = None, **detail: str) -> dict:
    name, message = _ERROR_TEXT[status]
    body: dict[str, Any] = {"name": name, "message": message, "debug_id": _debug_id()}
    if issue:
        body["details"] = [{**detail, "issue": issue, **({"description": description} if description else {})}]
    body["links"] = [
        {"href": f"https://developer.paypal.com/docs/api/orders/v2/#error-{issue or name}", "rel": "information_link"}
    ]
    return body


def paypal_error_shaper(error: ContractError) -> tuple[int, Any, Mapping[str, str]]:
    """PayPal's answers to requests the description refuses."""
    if error.status == 401:
        if error.operation_id == "hub.oauth2.token":
            return 401, {"error": "invalid_client", "error_description": "Client Authentication failed"}, {}
        return 401, {"error": "invalid_token", "error_description": "Access Token not found in cache"}, {}
    status = error.status if error.status in _ERROR_TEXT else 400
    if status == 404:
        return 404, paypal_error(404, "INVALID_RESOURCE_ID", error.message), {}
    issue = "MISSING_REQUIRED_PARAMETER" if error.message.startswith("Missing") else "INVALID_PARAMETER_VALUE"
    field = "/" + (error.param or "").replace(".", "/") if error.param else None
    detail = {"location": error.location or "body", **({"field": field} if field else {})}
    return status, paypal_error(status, issue, error.message, **detail), {}


# --- the fake -------------------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _paypal_id() -> str:
    return "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(17))


def _canonical(event: Any) -> bytes:
    """The bytes PayPal signs (and the fake re-creates from a parsed event): compact JSON, keys in order."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()


class _Signer:
    """A throwaway RSA key and self-signed certificate, as PayPal's webhook signing certificate."""

    def __init__(self, common_name: str = "messageverificationcerts.paypal.com") -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = datetime.now(UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=1))
            .sign(self.key, hashes.SHA256())
        )
        self.pem = self.certificate.public_bytes(serialization.Encoding.PEM)

    def sign(self, message: bytes) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        return base64.b64encode(self.key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


def sign_webhook(
    event: Mapping[str, Any],
    *,
    cert_url: str,
    signer: Any,
    webhook_id: str = WEBHOOK_ID,
    timestamp: float | None = None,
    transmission_id: str | None = None,
) -> tuple[bytes, dict[str, str]]:
    """``(body, headers)`` of a webhook as PayPal sends it: the event as compact JSON and the ``PAYPAL-*``
    transmission headers, signed by ``signer`` (a :class:`PayPalFake`'s, or another key to forge one) at
    ``timestamp`` (default now)."""
    body = _canonical(dict(event))
    sent = datetime.fromtimestamp(time.time() if timestamp is None else timestamp, UTC)
    transmission_time = sent.strftime("%Y-%m-%dT%H:%M:%SZ")
    transmission_id = transmission_id or f"{secrets.token_hex(4)}-{secrets.token_hex(2)}-11ef-{secrets.token_hex(6)}"
    message = f"{transmission_id}|{transmission_time}|{webhook_id}|{zlib.crc32(body)}".encode()
    headers = {
        "Content-Type": "application/json",
        "PAYPAL-AUTH-ALGO": "SHA256withRSA",
        "PAYPAL-CERT-URL": cert_url,
        "PAYPAL-TRANSMISSION-ID": transmission_id,
        "PAYPAL-TRANSMISSION-SIG": signer.sign(message),
        "PAYPAL-TRANSMISSION-TIME": transmission_time,
    }
    return body, headers


class PayPalFake:
    """PayPal's orders, authorizations, captures, refunds, tokens and webhook verification, statefully.

    ``server.state`` holds ``orders`` (id -> order as PayPal shows it), ``resources`` (authorization, capture
    and refund ids -> the object, its kind, its order and account), ``tokens`` and ``request_ids``
    (``(account, operation, PayPal-Request-Id)`` -> the resource the first request made).
    """

    def __init__(self, server: ContractServer) -> None:
        self.server = server
        self.accounts = {CLIENT_ID: CLIENT_SECRET, BACKUP_CLIENT_ID: BACKUP_CLIENT_SECRET}
        self.webhook_ids = {CLIENT_ID: WEBHOOK_ID, BACKUP_CLIENT_ID: WEBHOOK_ID}
        self.signer = _Signer()
        self.cert_id = "CERT-360caa42-fca2a594-" + secrets.token_hex(4)
        server.auth_check = self.authenticated
        for operation, handler in {
            "hub.oauth2.token": self.token,
            "orders.create": self.create_order,
            "orders.get": self.get_order,
            "orders.capture": self.capture_order,
            "orders.authorize": self.authorize_order,
            "hub.authorizations.capture": self.capture_authorization,
            "hub.authorizations.void": self.void_authorization,
            "hub.captures.refund": self.refund_capture,
            "hub.captures.get": self.get_capture,
            "hub.webhooks.verify_signature": self.verify_signature,
            "hub.webhooks.certificate": self.certificate,
        }.items():
            server.register(operation, handler)

    @property
    def url(self) -> str:
        return self.server.url

    def gateway_settings(self, client_id: str = CLIENT_ID, **overrides: Any) -> dict[str, Any]:
        """Settings of a ``paypal`` gateway talking to this fake as ``client_id`` (a hub.yaml provider section
        without ``type``), e.g. for a failover test: ``{"type": "paypal", **fake.gateway_settings()}``."""
        return {
            "client_id": client_id,
            "client_secret": self.accounts[client_id],
            "api_base": self.url,
            "webhook_id": self.webhook_ids[client_id],
            "cert_hosts": ["127.0.0.1"],
            **overrides,
        }

    @property
    def cert_url(self) -> str:
        return f"{self.server.url}/v1/notifications/certs/{self.cert_id}"

    # -- credentials ---------------------------------------------------------------------------------------

    def authenticated(self, request: ContractRequest) -> bool:
        if request.operation_id == "hub.webhooks.certificate":
            return True
        auth = request.auth
        if request.operation_id == "hub.oauth2.token":
            return auth is not None and self.accounts.get(auth.username or "") == auth.password
        return self._client(request) is not None

    def _client(self, request: ContractRequest) -> str | None:
        auth = request.auth
        if auth is None or auth.scheme != "bearer" or not auth.token:
            return None
        entry = self.server.state.get("tokens", {}).get(auth.token)
        if entry is None or entry["expires"] < time.time():
            return None
        return str(entry["client"])

    def expire_tokens(self) -> None:
        """Every token issued so far stops working (PayPal answers 401 ``invalid_token``)."""
        with self.server._lock:
            self.server.state["tokens"] = {}

    def token(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, Any]:
        token = "A21AA" + secrets.token_urlsafe(24)
        client = request.auth.username if request.auth else ""
        state.setdefault("tokens", {})[token] = {"client": client, "expires": time.time() + _TOKEN_LIFETIME}
        state["tokens_issued"] = state.get("tokens_issued", 0) + 1
        return 200, {
            "scope": "https://uri.paypal.com/services/payments/payment",
            "access_token": token,
            "token_type": "Bearer",
            "app_id": "APP-80W284485P519543T",
            "expires_in": _TOKEN_LIFETIME,
            "nonce": f"{_now()}{secrets.token_hex(8)}",
        }

    # -- helpers -----------------------------------------------------------------------------------------

    def _replayed(self, request: ContractRequest, state: dict[str, Any], client: str) -> Any:
        request_id = request.header("paypal-request-id")
        if not request_id:
            return None
        return state.setdefault("request_ids", {}).get((client, request.operation_id, request_id))

    def _remember(self, request: ContractRequest, state: dict[str, Any], client: str, resource_id: str) -> None:
        request_id = request.header("paypal-request-id")
        if request_id:
            state.setdefault("request_ids", {})[(client, request.operation_id, request_id)] = resource_id

    def _resource(self, state: dict[str, Any], client: str, kind: str, resource_id: str) -> dict[str, Any] | None:
        entry = state.get("resources", {}).get(resource_id)
        if entry is None or entry["client"] != client or entry["kind"] != kind:
            return None
        return entry

    def _order(self, state: dict[str, Any], client: str, order_id: str) -> dict[str, Any] | None:
        entry = state.get("orders", {}).get(order_id)
        return entry["order"] if entry is not None and entry["client"] == client else None

    def _not_found(self) -> tuple[int, Any]:
        return 404, paypal_error(
            404,
            "INVALID_RESOURCE_ID",
            "Specified resource ID does not exist. Please check the resource ID and try again.",
        )

    def _unprocessable(self, issue: str, description: str | None = None) -> tuple[int, Any]:
        return 422, paypal_error(422, issue, description or self._described(issue))

    def _described(self, issue: str) -> str:
        """The description the official description gives ``issue`` in its 422 catalogue."""
        found: list[str] = []

        def walk(node: Any) -> None:
            if found:
                return
            if isinstance(node, dict):
                issue_schema = (node.get("properties") or {}).get("issue") or {}
                if issue_schema.get("enum") == [issue]:
                    found.extend((node["properties"].get("description") or {}).get("enum") or [])
                    return
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        walk(self.server.document.spec.get("components", {}).get("schemas", {}).get("422"))
        return found[0] if found else issue.replace("_", " ").capitalize() + "."

    def _link(self, path: str, rel: str, method: str = "GET") -> dict[str, str]:
        return {"href": f"{self.server.url}{path}", "rel": rel, "method": method}

    @staticmethod
    def _decimals(money: Mapping[str, Any]) -> bool:
        code = str(money["currency_code"]).upper()
        places = PAYPAL_EXPONENTS.get(code)
        if places is None:
            try:
                places = currency_exponent(code)
            except ValueError:
                return False
        value = Decimal(str(money["value"]))
        return value == value.quantize(Decimal(1).scaleb(-places)) if places else value == value.to_integral_value()

    def _add_capture(
        self, state: dict[str, Any], client: str, order: dict[str, Any], amount: dict[str, str], status: str,
        authorization: dict[str, Any] | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        unit = order["purchase_units"][0]
        capture_id = _paypal_id()
        capture: dict[str, Any] = {
            "id": capture_id,
            "status": status,
            "amount": dict(amount),
            "final_capture": True,
            "seller_protection": {"status": "ELIGIBLE", "dispute_categories": ["ITEM_NOT_RECEIVED"]},
            "links": [
                self._link(f"/v2/payments/captures/{capture_id}", "self"),
                self._link(f"/v2/payments/captures/{capture_id}/refund", "refund", "POST"),
                self._link(f"/v2/checkout/orders/{order['id']}", "up"),
            ],
            "create_time": _now(),
            "update_time": _now(),
        }
        if status == "PENDING":
            capture["status_details"] = {"reason": "PENDING_REVIEW"}
        if status == "DECLINED":
            capture["processor_response"] = {"response_code": "5120", "avs_code": "G", "cvv_code": "P"}
        for name in ("custom_id", "invoice_id"):
            if unit.get(name):
                capture[name] = unit[name]
        unit.setdefault("payments", {}).setdefault("captures", []).append(capture)
        state.setdefault("resources", {})[capture_id] = {
            "kind": "capture", "client": client, "order_id": order["id"], "object": capture,
            "authorization_id": authorization["id"] if authorization else None,
        }  # fmt: skip
        order["update_time"] = _now()
        return capture

    def _add_authorization(self, state: dict[str, Any], client: str, order: dict[str, Any]) -> dict[str, Any]:
        unit = order["purchase_units"][0]
        authorization_id = _paypal_id()
        expires = (datetime.now(UTC) + timedelta(days=29)).strftime("%Y-%m-%dT%H:%M:%SZ")
        authorization: dict[str, Any] = {
            "id": authorization_id,
            "status": "CREATED",
            "amount": dict(unit["amount"]),
            "expiration_time": expires,
            "seller_protection": {"status": "ELIGIBLE", "dispute_categories": ["ITEM_NOT_RECEIVED"]},
            "links": [
                self._link(f"/v2/payments/authorizations/{authorization_id}", "self"),
                self._link(f"/v2/payments/authorizations/{authorization_id}/capture", "capture", "POST"),
                self._link(f"/v2/payments/authorizations/{authorization_id}/void", "void", "POST"),
                self._link(f"/v2/checkout/orders/{order['id']}", "up"),
            ],
            "create_time": _now(),
            "update_time": _now(),
        }
        for name in ("custom_id", "invoice_id"):
            if unit.get(name):
                authorization[name] = unit[name]
        unit.setdefault("payments", {}).setdefault("authorizations", []).append(authorization)
        state.setdefault("resources", {})[authorization_id] = {
            "kind": "authorization", "client": client, "order_id": order["id"], "object": authorization,
        }  # fmt: skip
        return authorization

    def _process(self, state: dict[str, Any], client: str, order: dict[str, Any], behaviour: str) -> None:
        """Take the money (intent CAPTURE) or reserve it (AUTHORIZE) of an order that has a payment source."""
        unit = order["purchase_units"][0]
        if order["intent"] == "CAPTURE":
            status = {"pending": "PENDING", "capture-declined": "DECLINED"}.get(behaviour, "COMPLETED")
            self._add_capture(state, client, order, unit["amount"], status)
        else:
            self._add_authorization(state, client, order)
        order["status"] = "COMPLETED"
        order["update_time"] = _now()

    # -- orders ------------------------------------------------------------------------------------------

    def create_order(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, Any]:
        client = self._client(request) or ""
        replayed = self._replayed(request, state, client)
        if replayed is not None:
            return 200, state["orders"][replayed]["order"]
        body = request.body
        unit_request = body["purchase_units"][0]
        for unit in body["purchase_units"]:
            if not self._decimals(unit["amount"]):
                return self._unprocessable("DECIMAL_PRECISION")
            if Decimal(str(unit["amount"]["value"])) <= 0:
                return self._unprocessable("CANNOT_BE_ZERO_OR_NEGATIVE")
        source = body.get("payment_source")
        vault_id = None
        if isinstance(source, dict):
            for kind in ("card", "paypal", "token"):
                if isinstance(source.get(kind), dict):
                    vault_id = source[kind].get("vault_id") or source[kind].get("id")
        behaviour = TEST_TOKENS.get(str(vault_id), "charge")
        if behaviour in ("INSTRUMENT_DECLINED", "TRANSACTION_REFUSED"):
            return self._unprocessable(behaviour)
        invoice = unit_request.get("invoice_id")
        if invoice and any(
            entry["client"] == client and entry["order"]["purchase_units"][0].get("invoice_id") == invoice
            and entry["order"]["status"] == "COMPLETED"
            for entry in state.get("orders", {}).values()
        ):  # fmt: skip
            return self._unprocessable("DUPLICATE_INVOICE_ID")
        order_id = _paypal_id()
        unit: dict[str, Any] = {
            "reference_id": unit_request.get("reference_id", "default"),
            "amount": dict(unit_request["amount"]),
            "payee": {"email_address": "merchant@example.com", "merchant_id": "7KNGBPH2U58GQ"},
        }
        for name in ("custom_id", "invoice_id", "description"):
            if unit_request.get(name):
                unit[name] = unit_request[name]
        order: dict[str, Any] = {
            "id": order_id,
            "intent": body["intent"],
            "status": "CREATED",
            "purchase_units": [unit],
            "create_time": _now(),
            "update_time": _now(),
            "links": [self._link(f"/v2/checkout/orders/{order_id}", "self")],
        }
        state.setdefault("orders", {})[order_id] = {"client": client, "order": order, "vault_id": vault_id}
        self._remember(request, state, client, order_id)
        if source is None:
            order["links"].append(
                {"href": f"https://www.paypal.com/checkoutnow?token={order_id}", "rel": "approve", "method": "GET"}
            )
        elif behaviour == "approve":
            order["status"] = "APPROVED"
            action = "capture" if body["intent"] == "CAPTURE" else "authorize"
            order["links"].append(self._link(f"/v2/checkout/orders/{order_id}/{action}", action, "POST"))
        else:
            self._process(state, client, order, behaviour)
        if behaviour == "lost":
            return 500, paypal_error(500)
        return 201, order

    def get_order(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, Any]:
        order = self._order(state, self._client(request) or "", request.path_params["id"])
        return (200, order) if order is not None else self._not_found()

    def _complete(self, request: ContractRequest, state: dict[str, Any], intent: str) -> tuple[int, Any]:
        client = self._client(request) or ""
        replayed = self._replayed(request, state, client)
        if replayed is not None:
            return 200, state["orders"][replayed]["order"]
        order = self._order(state, client, request.path_params["id"])
        if order is None:
            return self._not_found()
        if order["intent"] != intent:
            return self._unprocessable("ACTION_DOES_NOT_MATCH_INTENT", "Order was created with an intent other.")
        if order["status"] == "COMPLETED":
            return self._unprocessable("ORDER_ALREADY_CAPTURED" if intent == "CAPTURE" else "ORDER_ALREADY_AUTHORIZED")
        if order["status"] != "APPROVED":
            return self._unprocessable("ORDER_NOT_APPROVED")
        self._process(state, client, order, "charge")
        self._remember(request, state, client, order["id"])
        return 201, order

    def capture_order(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, Any]:
        return self._complete(request, state, "CAPTURE")

    def authorize_order(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, Any]:
        return self._complete(request, state, "AUTHORIZE")

    # -- payments ----------------------------------------------------------------------------------------

    def capture_authorization(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, Any]:
        client = self._client(request) or ""
        replayed = self._replayed(request, state, client)
        if replayed is not None:
            return 200, state["resources"][replayed]["object"]
        entry = self._resource(state, client, "authorization", request.path_params["authorization_id"])
        if entry is None:
            return self._not_found()
        authorization = entry["object"]
        if authorization["status"] in ("CAPTURED", "PARTIALLY_CAPTURED"):
            return self._unprocessable("AUTHORIZATION_ALREADY_CAPTURED", "Authorization has been previously captured.")
        if authorization["status"] == "VOIDED":
            return self._unprocessable("AUTHORIZATION_VOIDED", "A voided authorization cannot be captured.")
        body = request.body or {}
        amount = body.get("amount") or authorization["amount"]
        if amount["currency_code"] != authorization["amount"]["currency_code"]:
            return self._unprocessable("CURRENCY_MISMATCH", "Currency of capture must match authorization.")
        if not self._decimals(amount):
            return self._unprocessable("DECIMAL_PRECISION")
        # PayPal lets a capture exceed the authorization by up to 115% (account permitting); never more.
        if Decimal(amount["value"]) > Decimal(authorization["amount"]["value"]) * Decimal("1.15"):
            return self._unprocessable("MAX_CAPTURE_AMOUNT_EXCEEDED", "Capture amount exceeds allowable limit.")
        order = state["orders"][entry["order_id"]]["order"]
        capture = self._add_capture(state, client, order, amount, "COMPLETED", authorization)
        authorization["status"] = "CAPTURED" if body.get("final_capture", False) else "PARTIALLY_CAPTURED"
        authorization["update_time"] = _now()
        self._remember(request, state, client, capture["id"])
        return 201, capture

    def void_authorization(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, Any]:
        client = self._client(request) or ""
        replayed = self._replayed(request, state, client)
        if replayed is not None:
            return 200, state["resources"][replayed]["object"]
        entry = self._resource(state, client, "authorization", request.path_params["authorization_id"])
        if entry is None:
            return self._not_found()
        authorization = entry["object"]
        if authorization["status"] in ("CAPTURED", "PARTIALLY_CAPTURED"):
            return self._unprocessable("AUTHORIZATION_ALREADY_CAPTURED", "Authorization has been previously captured.")
        if authorization["status"] == "VOIDED":
            return self._unprocessable("AUTHORIZATION_VOIDED", "Authorization has been previously voided.")
        authorization["status"] = "VOIDED"
        authorization["update_time"] = _now()
        self._remember(request, state, client, authorization["id"])
        if "return=representation" in (request.header("prefer") or ""):
            return 200, authorization
        return 204, None

    def refund_capture(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, Any]:
        client = self._client(request) or ""
        replayed = self._replayed(request, state, client)
        if replayed is not None:
            return 200, state["resources"][replayed]["object"]
        entry = self._resource(state, client, "capture", request.path_params["capture_id"])
        if entry is None:
            return self._not_found()
        capture = entry["object"]
        if capture["status"] == "REFUNDED":
            return self._unprocessable("CAPTURE_FULLY_REFUNDED", "The capture has already been fully refunded.")
        if capture["status"] not in ("COMPLETED", "PARTIALLY_REFUNDED"):
            return self._unprocessable("REFUND_NOT_ALLOWED", "Refund cannot be processed for this capture status.")
        order = state["orders"][entry["order_id"]]["order"]
        payments = order["purchase_units"][0]["payments"]
        done = sum(
            (
                Decimal(e["object"]["amount"]["value"])
                for e in state.get("resources", {}).values()
                if e["kind"] == "refund" and e["capture_id"] == capture["id"] and e["object"]["status"] == "COMPLETED"
            ),
            Decimal(0),
        )
        left = Decimal(capture["amount"]["value"]) - done
        body = request.body or {}
        currency = capture["amount"]["currency_code"]
        amount = body.get("amount") or {"currency_code": currency, "value": str(left)}
        if amount["currency_code"] != currency:
            return self._unprocessable("REFUND_CURRENCY_MISMATCH", "Refund must be in the currency of the capture.")
        if not self._decimals(amount):
            return self._unprocessable("DECIMAL_PRECISION")
        if Decimal(amount["value"]) > left:
            return self._unprocessable(
                "REFUND_AMOUNT_EXCEEDED",
                "The refund amount must be less than or equal to the capture amount that has not yet been refunded.",
            )
        refund_id = _paypal_id()
        refund: dict[str, Any] = {
            "id": refund_id,
            "status": "COMPLETED",
            "amount": dict(amount),
            "links": [
                self._link(f"/v2/payments/refunds/{refund_id}", "self"),
                self._link(f"/v2/payments/captures/{capture['id']}", "up"),
            ],
            "create_time": _now(),
            "update_time": _now(),
        }
        for name in ("custom_id", "invoice_id", "note_to_payer"):
            if body.get(name):
                refund[name] = body[name]
        payments.setdefault("refunds", []).append(refund)
        capture["status"] = (
            "REFUNDED"
            if done + Decimal(amount["value"]) >= Decimal(capture["amount"]["value"])
            else "PARTIALLY_REFUNDED"
        )
        capture["update_time"] = _now()
        state.setdefault("resources", {})[refund_id] = {
            "kind": "refund", "client": client, "order_id": order["id"], "object": refund, "capture_id": capture["id"],
        }  # fmt: skip
        self._remember(request, state, client, refund_id)
        return 201, refund

    def get_capture(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, Any]:
        entry = self._resource(state, self._client(request) or "", "capture", request.path_params["capture_id"])
        return (200, entry["object"]) if entry is not None else self._not_found()

    # -- webhooks ----------------------------------------------------------------------------------------

    def certificate(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, Any, Mapping[str, str]]:
        if request.path_params["cert_id"] != self.cert_id:
            return 404, "no such certificate", {"Content-Type": "text/plain"}
        state["certificate_fetches"] = state.get("certificate_fetches", 0) + 1
        return 200, self.signer.pem.decode(), {"Content-Type": "text/plain"}

    def verify_signature(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, Any]:
        """Really verifies: the certificate must be this fake's, the webhook id the account's, and the signature
        PayPal's over ``transmission_id|transmission_time|webhook_id|crc32(event)``."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        client = self._client(request) or ""
        body = request.body
        state["verifications"] = state.get("verifications", 0) + 1
        if body["cert_url"] != self.cert_url or body["webhook_id"] != self.webhook_ids.get(client):
            return 200, {"verification_status": "FAILURE"}
        if body["auth_algo"] != "SHA256withRSA":
            return 200, {"verification_status": "FAILURE"}
        crc = zlib.crc32(_canonical(body["webhook_event"]))
        message = f"{body['transmission_id']}|{body['transmission_time']}|{body['webhook_id']}|{crc}".encode()
        try:
            signature = base64.b64decode(body["transmission_sig"], validate=True)
            self.signer.certificate.public_key().verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, ValueError):
            return 200, {"verification_status": "FAILURE"}
        return 200, {"verification_status": "SUCCESS"}

    def sign_webhook(
        self, event: Mapping[str, Any], *, forged: bool = False, timestamp: float | None = None, **options: Any
    ) -> tuple[bytes, dict[str, str]]:
        """``(body, headers)`` of ``event`` as PayPal posts it, signed with this fake's certificate (``forged``:
        with another key, under the same certificate URL)."""
        signer = _Signer() if forged else self.signer
        return sign_webhook(event, cert_url=self.cert_url, signer=signer, timestamp=timestamp, **options)

    def _event(self, event_type: str, resource_type: str, resource: Mapping[str, Any], summary: str) -> dict:
        return {
            "id": "WH-" + _paypal_id() + "-" + _paypal_id(),
            "event_version": "1.0",
            "create_time": _now(),
            "resource_type": resource_type,
            "resource_version": "2.0",
            "event_type": event_type,
            "summary": summary,
            "resource": dict(resource),
            "links": [],
        }

    def capture_event(self, order_id: str, event_type: str = "PAYMENT.CAPTURE.COMPLETED") -> dict[str, Any]:
        """The webhook event PayPal sends about the order's (last) capture."""
        order = self.server.state["orders"][order_id]["order"]
        capture = dict(order["purchase_units"][0]["payments"]["captures"][-1])
        capture["supplementary_data"] = {"related_ids": {"order_id": order_id}}
        amount = capture["amount"]
        return self._event(
            event_type, "capture", capture, f"Payment completed for {amount['value']} {amount['currency_code']}"
        )

    def refund_event(self, refund_id: str) -> dict[str, Any]:
        """``PAYMENT.CAPTURE.REFUNDED`` for a refund the fake made."""
        refund = dict(self.server.state["resources"][refund_id]["object"])
        return self._event("PAYMENT.CAPTURE.REFUNDED", "refund", refund, "A payment was refunded")

    def settle(self, order_id: str, status: str = "COMPLETED") -> dict[str, Any]:
        """A ``PENDING`` capture of the order clears (or, with ``status="DECLINED"``, fails), as PayPal's review
        or the bank would decide later; returns the capture."""
        with self.server._lock:
            capture = self.server.state["orders"][order_id]["order"]["purchase_units"][0]["payments"]["captures"][-1]
            capture["status"] = status
            capture.pop("status_details", None)
            capture["update_time"] = _now()
            return dict(capture)

    def dispute_event(self, order_id: str, event_type: str = "CUSTOMER.DISPUTE.CREATED") -> dict[str, Any]:
        """A dispute (Disputes API v1 shape) of the order's last capture: it names the capture, not the order."""
        order = self.server.state["orders"][order_id]["order"]
        unit = order["purchase_units"][0]
        capture = unit["payments"]["captures"][-1]
        dispute_id = "PP-D-" + secrets.token_hex(3).upper()
        resource = {
            "dispute_id": dispute_id,
            "create_time": _now(),
            "update_time": _now(),
            "disputed_transactions": [
                {
                    "seller_transaction_id": capture["id"],
                    "create_time": capture["create_time"],
                    "transaction_status": "COMPLETED",
                    "gross_amount": dict(capture["amount"]),
                    "custom": unit.get("custom_id", ""),
                }
            ],
            "reason": "MERCHANDISE_OR_SERVICE_NOT_RECEIVED",
            "status": "OPEN",
            "dispute_amount": dict(capture["amount"]),
            "dispute_life_cycle_stage": "INQUIRY",
            "dispute_channel": "INTERNAL",
            "links": [{"href": f"{self.server.url}/v1/customer/disputes/{dispute_id}", "rel": "self", "method": "GET"}],
        }
        return self._event(event_type, "dispute", resource, f"A new dispute opened with Case # {dispute_id}")

    # -- what tests inspect ------------------------------------------------------------------------------

    def orders(self, client: str = CLIENT_ID) -> list[dict[str, Any]]:
        """The orders made for ``client`` (probe orders of lookups included), oldest first."""
        return [entry["order"] for entry in self.server.state.get("orders", {}).values() if entry["client"] == client]

    def charges(self, client: str = CLIENT_ID) -> list[dict[str, Any]]:
        """The orders that took or reserved money (they have captures or authorizations)."""
        return [o for o in self.orders(client) if o["purchase_units"][0].get("payments")]

    def requests_to(self, operation_id: str) -> list[ContractRequest]:
        return [r for r in self.server.requests if r.operation_id == operation_id]


@contextlib.contextmanager
def paypal_contract_server(spec: Mapping[str, Any] | None = None) -> Iterator[PayPalFake]:
    """A started :class:`PayPalFake` on 127.0.0.1 (stopped at the end); the test skips when ``shared/specs``
    lacks PayPal's description. Reset it between tests with ``fake.server.isolated(...)`` or ``reset()``."""
    server = ContractServer(dict(spec) if spec is not None else paypal_spec(), error_shaper=paypal_error_shaper)
    fake = PayPalFake(server)
    with server:
        yield fake
