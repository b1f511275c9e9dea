"""A stateful HTTP server that checks every request against a provider's official API description.

Provider plugins are tested with the provider's own SDK pointed at this server. The server is generic over the
description (OpenAPI 3.0/3.1, or Swagger 2.0): it finds the operation a request addresses, checks the path,
query and header parameters, the credentials the operation's ``security`` asks for, and the body — JSON,
``application/x-www-form-urlencoded`` with Stripe-style nested keys (``metadata[order_id]=x``,
``expand[]=a``, ``items[0][price]=p``) converted to the schema's types, or multipart — and refuses what the
description does not allow, in the provider's error shape. What a valid request *does* is up to the test: a
handler per operation keeps state in a dict like the real service (a created payment can be fetched and
refunded; a refund above the charge is refused). Handlers' responses are checked against the description too,
so the fakes stay faithful to the real API.

Example, for a Stripe fixture::

    from hub.testing.contract_server import ContractRequest, ContractServer
    from hub.testing.specs import load_spec

    def create_intent(request: ContractRequest, state: dict) -> tuple[int, dict]:
        intent = {"id": "pi_1", "object": "payment_intent", "amount": request.body["amount"], ...}
        state.setdefault("intents", {})[intent["id"]] = intent
        return 200, intent

    with ContractServer(load_spec("stripe.com.json"), handlers={"PostPaymentIntents": create_intent}) as server:
        client = stripe.StripeClient("sk_test_x", base_addresses={"api": server.url})
        client.v1.payment_intents.create(params={"amount": 2000, "currency": "usd"})
        assert server.requests[-1].operation_id == "PostPaymentIntents"

Only the standard library (and :mod:`hub.testing.servers`, which needs no more) is imported at module level
(werkzeug and jsonschema when a server is built), so ``hub.testing`` stays importable in plugin test suites
that need none of this.
"""

from __future__ import annotations

from hub.testing.contract_server.description import OpenAPIDocument
from hub.testing.contract_server.forms import parse_nested_form
from hub.testing.contract_server.messages import (
    ContractError,
    ContractRequest,
    Credentials,
    ErrorShaper,
    Handler,
    HandlerResult,
    default_error_shaper,
)
from hub.testing.contract_server.server import ContractServer

__all__ = [
    "ContractError",
    "ContractRequest",
    "ContractServer",
    "Credentials",
    "ErrorShaper",
    "Handler",
    "HandlerResult",
    "OpenAPIDocument",
    "default_error_shaper",
    "parse_nested_form",
]
