"""A local Shopify Admin GraphQL server (graphql-core) for the tests: the queries and the mutation hub-shopify uses.

``POST /admin/api/<version>/graphql.json`` with ``X-Shopify-Access-Token``. State: locations, inventory items (one
product variant each, with its SKU) and an ``available`` quantity per item and location. Relay connections take
``first``/``after`` and answer ``nodes``, ``edges { cursor node }`` and ``pageInfo { hasNextPage endCursor }``
(``first`` above 250 is refused, as Shopify does). The cost model follows Shopify's documentation: a requested cost
computed before execution (1 per object field, plus per connection ``first`` times its nested cost), a leaky bucket
(``maximumAvailable`` 1000, ``restoreRate`` 50/s), an actual cost charged after execution (the unused part refunded),
``extensions.cost`` on every answer, and ``THROTTLED`` (HTTP 200) when the bucket holds less than the requested cost.
``clock`` may be replaced by a test (a frozen clock: no restore between requests).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from graphql import (
    FieldNode,
    GraphQLError,
    OperationType,
    build_schema,
    graphql_sync,
    parse,
    validate,
)
from werkzeug.wrappers import Request, Response

from hub.testing.servers import WsgiServer

SDL = """
type Query {
  locations(first: Int, after: String): LocationConnection!
  location(id: ID!): Location
  productVariants(first: Int, after: String, query: String): ProductVariantConnection!
  inventoryItem(id: ID!): InventoryItem
}
type Mutation {
  inventorySetQuantities(input: InventorySetQuantitiesInput!): InventorySetQuantitiesPayload
}
type PageInfo { hasNextPage: Boolean! hasPreviousPage: Boolean! endCursor: String startCursor: String }
type Location {
  id: ID!
  name: String!
  isActive: Boolean!
  inventoryLevels(first: Int, after: String): InventoryLevelConnection!
  inventoryLevel(inventoryItemId: ID!): InventoryLevel
}
type LocationEdge { cursor: String! node: Location! }
type LocationConnection { nodes: [Location!]! edges: [LocationEdge!]! pageInfo: PageInfo! }
type InventoryQuantity { id: ID! name: String! quantity: Int! updatedAt: String }
type InventoryLevel {
  id: ID!
  location: Location!
  item: InventoryItem!
  quantities(names: [String!]!): [InventoryQuantity!]!
  updatedAt: String!
}
type InventoryLevelEdge { cursor: String! node: InventoryLevel! }
type InventoryLevelConnection { nodes: [InventoryLevel!]! edges: [InventoryLevelEdge!]! pageInfo: PageInfo! }
type InventoryItem {
  id: ID!
  sku: String
  tracked: Boolean!
  variant: ProductVariant!
  inventoryLevel(locationId: ID!): InventoryLevel
}
type ProductVariant { id: ID! sku: String title: String! inventoryItem: InventoryItem! }
type ProductVariantEdge { cursor: String! node: ProductVariant! }
type ProductVariantConnection { nodes: [ProductVariant!]! edges: [ProductVariantEdge!]! pageInfo: PageInfo! }
input InventoryQuantityInput {
  inventoryItemId: ID!
  locationId: ID!
  quantity: Int!
  compareQuantity: Int
  changeFromQuantity: Int
}
input InventorySetQuantitiesInput {
  name: String!
  reason: String!
  referenceDocumentUri: String
  ignoreCompareQuantity: Boolean
  quantities: [InventoryQuantityInput!]!
}
type InventoryChange { name: String! delta: Int! quantityAfterChange: Int item: InventoryItem location: Location }
type InventoryAdjustmentGroup { id: ID! reason: String! createdAt: String! changes: [InventoryChange!]! }
type InventorySetQuantitiesUserError { field: [String!] message: String! code: String }
type InventorySetQuantitiesPayload {
  inventoryAdjustmentGroup: InventoryAdjustmentGroup
  userErrors: [InventorySetQuantitiesUserError!]!
}
"""

SCHEMA = build_schema(SDL)
MAX_PAGE = 250
MUTATION_COST = 10
#: The reasons Shopify accepts for inventorySetQuantities (its documented list, abridged).
REASONS = {
    "correction",
    "cycle_count_available",
    "damaged",
    "movement_created",
    "movement_updated",
    "movement_received",
    "movement_canceled",
    "other",
    "promotion",
    "quality_control",
    "received",
    "reservation_created",
    "reservation_deleted",
    "reservation_updated",
    "restock",
    "safety_stock",
    "shrinkage",
}


def gid(kind: str, number: int) -> str:
    return f"gid://shopify/{kind}/{number}"


def gid_number(value: str, kind: str) -> int | None:
    prefix = f"gid://shopify/{kind}/"
    if not isinstance(value, str) or not value.startswith(prefix):
        return None
    tail = value[len(prefix) :].split("?", 1)[0]
    return int(tail) if tail.isdigit() else None


def _connection(items: list[Any], first: int | None, after: str | None, key: Callable[[Any], int]) -> dict[str, Any]:
    if first is None:
        raise GraphQLError("you must provide one of first or last")
    if first < 0 or first > MAX_PAGE:
        raise GraphQLError(f"The first argument must be between 0 and {MAX_PAGE}")
    start = 0
    if after:
        try:
            last = int(after.removeprefix("c"))
        except ValueError as error:
            raise GraphQLError("Invalid cursor for current pagination sort.") from error
        start = next((index for index, item in enumerate(items) if key(item) > last), len(items))
    page = items[start : start + first]
    cursors = [f"c{key(item)}" for item in page]
    return {
        "nodes": page,
        "edges": [{"cursor": cursor, "node": item} for cursor, item in zip(cursors, page, strict=True)],
        "pageInfo": {
            "hasNextPage": start + first < len(items),
            "hasPreviousPage": start > 0,
            "endCursor": cursors[-1] if cursors else None,
            "startCursor": cursors[0] if cursors else None,
        },
    }


def requested_cost(document: Any, operation: Any) -> int:
    """Shopify's static cost, simplified: a mutation costs 10; a query costs, per connection, 1 + ``first`` x (1 + the
    cost of what each node selects), and per object field 1 plus what it selects; scalars cost nothing (Shopify:
    scalars 0, objects 1), so ``inventoryItem(id:) { id sku }`` costs 1, as on Shopify."""
    if operation.operation == OperationType.MUTATION:
        return MUTATION_COST

    def selection_cost(selection_set: Any, variables: dict[str, Any]) -> int:
        total = 0
        for field in selection_set.selections if selection_set else ():
            if not isinstance(field, FieldNode):
                continue
            first = None
            for argument in field.arguments:
                if argument.name.value == "first":
                    node = argument.value
                    first = variables.get(node.name.value) if hasattr(node, "name") else int(node.value)
            inner = selection_cost(field.selection_set, variables)
            if first is not None:
                total += int(first or 0) * (1 + inner) + 1
            elif field.selection_set is not None and field.name.value not in ("nodes", "edges", "node", "pageInfo"):
                total += 1 + inner
            else:
                total += inner
        return total

    return max(1, selection_cost(operation.selection_set, _CURRENT.variables))


class _Current(threading.local):
    variables: dict[str, Any] = {}
    nodes: int = 0


_CURRENT = _Current()


class FakeShopify(WsgiServer):
    """Shop state and the GraphQL endpoint. ``faults`` (a list of ``(status, headers, body)``) answer the next
    requests instead of the API; ``stale_writes`` changes a level just before the next N mutations (another app)."""

    def __init__(self, *, token: str = "shpat_test", items: int = 7, locations: int = 3) -> None:
        super().__init__(name="fake-shopify")
        self.token = token
        self.lock = threading.RLock()
        self.clock: Callable[[], float] = time.monotonic
        self.maximum = 1000.0
        self.restore_rate = 50.0
        self.available = self.maximum
        self.last_refill = self.clock()
        self.faults: list[tuple[int, dict[str, str], str]] = []
        self.stale_writes = 0
        self.requests: list[dict[str, Any]] = []
        self.versions: list[str] = []
        self.locations = [{"number": n, "name": f"Warehouse {n}"} for n in range(1, locations + 1)]
        self.items = [{"number": 1000 + n, "sku": f"SKU-{n:03d}"} for n in range(1, items + 1)]
        self.levels: dict[tuple[int, int], int] = {
            (item["number"], location["number"]): (item["number"] * 7 + location["number"] * 3) % 50
            for item in self.items
            for location in self.locations
        }
        self.changed_at: dict[tuple[int, int], str] = {}
        self.adjustments = 0
        self.root = {
            "locations": self._locations,
            "location": self._location,
            "productVariants": self._variants,
            "inventoryItem": self._inventory_item,
            "inventorySetQuantities": self._set_quantities,
        }

    # --- graph objects ------------------------------------------------------------------------------

    def _location_object(self, location: dict[str, Any]) -> dict[str, Any]:
        number = location["number"]

        def levels(info: Any, first: int | None = None, after: str | None = None) -> dict[str, Any]:
            rows = [
                self._level_object(item, location) for item in self.items if (item["number"], number) in self.levels
            ]
            page = _connection(rows, first, after, key=lambda row: row["_item"])
            _CURRENT.nodes += len(page["nodes"])
            return page

        def level(info: Any, inventoryItemId: str) -> dict[str, Any] | None:  # noqa: N803 (GraphQL's name)
            item = self._item_by_gid(inventoryItemId)
            return self._level_object(item, location) if item and (item["number"], number) in self.levels else None

        return {
            "id": gid("Location", number),
            "name": location["name"],
            "isActive": True,
            "inventoryLevels": levels,
            "inventoryLevel": level,
            "_number": number,
        }

    def _item_object(self, item: dict[str, Any]) -> dict[str, Any]:
        def level(info: Any, locationId: str) -> dict[str, Any] | None:  # noqa: N803
            location = self._location_by_gid(locationId)
            if location is None or (item["number"], location["number"]) not in self.levels:
                return None
            return self._level_object(item, location)

        variant = {"id": gid("ProductVariant", item["number"] + 5000), "sku": item["sku"], "title": "Default Title"}
        result = {
            "id": gid("InventoryItem", item["number"]),
            "sku": item["sku"],
            "tracked": True,
            "inventoryLevel": level,
        }
        result["variant"] = variant
        variant["inventoryItem"] = result
        return result

    def _level_object(self, item: dict[str, Any], location: dict[str, Any]) -> dict[str, Any]:
        key = (item["number"], location["number"])
        updated = self.changed_at.get(key, "2026-01-01T00:00:00Z")

        def quantities(info: Any, names: list[str]) -> list[dict[str, Any]]:
            return [
                {
                    "id": f"{gid('InventoryQuantity', key[0])}?location={key[1]}&name={name}",
                    "name": name,
                    "quantity": self.levels[key],
                    "updatedAt": updated,
                }
                for name in names
                if name in ("available", "on_hand")
            ]

        return {
            "id": f"gid://shopify/InventoryLevel/{key[1]}?inventory_item_id={key[0]}",
            "location": lambda info: self._location_object(location),
            "item": lambda info: self._item_object(item),
            "quantities": quantities,
            "updatedAt": updated,
            "_item": item["number"],
        }

    def _item_by_gid(self, value: str) -> dict[str, Any] | None:
        number = gid_number(value, "InventoryItem")
        return next((item for item in self.items if item["number"] == number), None)

    def _location_by_gid(self, value: str) -> dict[str, Any] | None:
        number = gid_number(value, "Location")
        return next((location for location in self.locations if location["number"] == number), None)

    # --- root fields -------------------------------------------------------------------------------

    def _locations(self, info: Any, first: int | None = None, after: str | None = None) -> dict[str, Any]:
        page = _connection(self.locations, first, after, key=lambda location: location["number"])
        _CURRENT.nodes += len(page["nodes"])
        page["nodes"] = [self._location_object(location) for location in page["nodes"]]
        page["edges"] = [
            {"cursor": edge["cursor"], "node": self._location_object(edge["node"])} for edge in page["edges"]
        ]
        return page

    def _location(self, info: Any, id: str) -> dict[str, Any] | None:  # noqa: A002 (GraphQL's name)
        location = self._location_by_gid(id)
        return self._location_object(location) if location else None

    def _inventory_item(self, info: Any, id: str) -> dict[str, Any] | None:  # noqa: A002
        item = self._item_by_gid(id)
        return self._item_object(item) if item else None

    def _variants(self, info: Any, first: int | None = None, after: str | None = None, query: str | None = None):
        items = self.items
        if query:
            field, _, value = query.partition(":")
            if field.strip() != "sku":
                raise GraphQLError(f"unsupported search field in this fake: {field}")
            wanted = value.strip().strip("'\"")
            items = [item for item in items if item["sku"] == wanted]
        page = _connection(items, first, after, key=lambda item: item["number"])
        _CURRENT.nodes += len(page["nodes"])
        page["nodes"] = [self._item_object(item)["variant"] for item in page["nodes"]]
        page["edges"] = [
            {"cursor": edge["cursor"], "node": self._item_object(edge["node"])["variant"]} for edge in page["edges"]
        ]
        return page

    def _set_quantities(self, info: Any, input: dict[str, Any]) -> dict[str, Any]:  # noqa: A002
        errors: list[dict[str, Any]] = []
        if input["name"] not in ("available", "on_hand"):
            errors.append(
                {
                    "field": ["input", "name"],
                    "message": "The quantity name must be available or on_hand.",
                    "code": "INVALID_NAME",
                }
            )
        if input["reason"] not in REASONS:
            errors.append(
                {"field": ["input", "reason"], "message": "The specified reason is invalid.", "code": "INVALID_REASON"}
            )
        changes = []
        resolved = []
        for index, quantity in enumerate(input["quantities"]):
            item = self._item_by_gid(quantity["inventoryItemId"])
            location = self._location_by_gid(quantity["locationId"])
            where = ["input", "quantities", str(index)]
            if item is None:
                errors.append(
                    {
                        "field": [*where, "inventoryItemId"],
                        "message": "The specified inventory item could not be found.",
                        "code": "INVALID_INVENTORY_ITEM",
                    }
                )
                continue
            if location is None:
                errors.append(
                    {
                        "field": [*where, "locationId"],
                        "message": "The specified location could not be found.",
                        "code": "INVALID_LOCATION",
                    }
                )
                continue
            key = (item["number"], location["number"])
            if key not in self.levels:
                errors.append(
                    {
                        "field": [*where, "locationId"],
                        "message": "The specified inventory item is not stocked at the location.",
                        "code": "ITEM_NOT_STOCKED_AT_LOCATION",
                    }
                )
                continue
            if self.stale_writes > 0:  # another app changes the level between our read and this write
                self.stale_writes -= 1
                self.levels[key] += 1
            if "changeFromQuantity" not in quantity and not input.get("ignoreCompareQuantity"):
                errors.append(
                    {
                        "field": [*where, "changeFromQuantity"],
                        "message": "changeFromQuantity is required.",
                        "code": "CHANGE_FROM_QUANTITY_REQUIRED",
                    }
                )
                continue
            change_from = quantity.get("changeFromQuantity")
            if change_from is not None and change_from != self.levels[key]:
                errors.append(
                    {
                        "field": [*where, "changeFromQuantity"],
                        "message": "The specified changeFromQuantity does not match the current quantity.",
                        "code": "CHANGE_FROM_QUANTITY_STALE",
                    }
                )
                continue
            if quantity["quantity"] < -1_000_000_000 or quantity["quantity"] > 1_000_000_000:
                errors.append(
                    {
                        "field": [*where, "quantity"],
                        "message": "The quantity is out of range.",
                        "code": "INVALID_QUANTITY_TOO_HIGH",
                    }
                )
                continue
            resolved.append((key, item, location, quantity["quantity"]))
        if errors:  # Shopify applies all or nothing
            return {"inventoryAdjustmentGroup": None, "userErrors": errors}
        for key, item, location, new in resolved:
            delta = new - self.levels[key]
            self.levels[key] = new
            self.adjustments += 1
            self.changed_at[key] = f"2026-01-02T00:00:{self.adjustments % 60:02d}Z"
            changes.append(
                {
                    "name": input["name"],
                    "delta": delta,
                    "quantityAfterChange": new,
                    "item": self._item_object(item),
                    "location": self._location_object(location),
                }
            )
        group = {
            "id": gid("InventoryAdjustmentGroup", self.adjustments),
            "reason": input["reason"],
            "createdAt": "2026-01-02T00:00:00Z",
            "changes": changes,
        }
        return {"inventoryAdjustmentGroup": group, "userErrors": []}

    # --- the bucket ---------------------------------------------------------------------------------

    def _refill(self) -> None:
        now = self.clock()
        self.available = min(self.maximum, self.available + (now - self.last_refill) * self.restore_rate)
        self.last_refill = now

    def _cost(self, requested: int, actual: int | None) -> dict[str, Any]:
        return {
            "requestedQueryCost": requested,
            "actualQueryCost": actual,
            "throttleStatus": {
                "maximumAvailable": self.maximum,
                "currentlyAvailable": int(self.available),
                "restoreRate": self.restore_rate,
            },
        }

    # --- HTTP ---------------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        return self.handle(request)(environ, start_response)

    def handle(self, request: Request) -> Response:
        parts = request.path.strip("/").split("/")
        if len(parts) != 4 or parts[:2] != ["admin", "api"] or parts[3] != "graphql.json":
            return _json({"errors": "Not Found"}, 404)
        if request.method != "POST":
            return _json({"errors": "Method Not Allowed"}, 405)
        if request.headers.get("X-Shopify-Access-Token") != self.token:
            return _json(
                {"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"}, 401
            )
        with self.lock:
            self.versions.append(parts[2])
            if self.faults:
                status, headers, body = self.faults.pop(0)
                return Response(body, status=status, headers=headers, content_type="application/json")
            try:
                body = json.loads(request.get_data())
                source = body["query"]
                variables = body.get("variables") or {}
            except (ValueError, KeyError, TypeError):
                return _json({"errors": [{"message": "Bad Request: no query"}]}, 400)
            self.requests.append({"query": source, "variables": variables})
            try:
                document = parse(source)
            except GraphQLError as error:
                return _json({"errors": [error.formatted]})
            problems = validate(SCHEMA, document)
            if problems:
                return _json({"errors": [problem.formatted for problem in problems]})
            operation = next(d for d in document.definitions if hasattr(d, "operation"))
            _CURRENT.variables = variables
            _CURRENT.nodes = 0
            requested = requested_cost(document, operation)
            self._refill()
            if requested > self.maximum:
                return _json(
                    {
                        "errors": [
                            {
                                "message": f"Query cost is {requested}, which exceeds the single query max "
                                f"cost limit ({int(self.maximum)}).",
                                "extensions": {"code": "MAX_COST_EXCEEDED"},
                            }
                        ],
                        "extensions": {"cost": self._cost(requested, None)},
                    }
                )
            if requested > self.available:
                return _json(
                    {
                        "errors": [
                            {
                                "message": "Throttled",
                                "extensions": {
                                    "code": "THROTTLED",
                                    "documentation": "https://shopify.dev/api/usage/rate-limits",
                                },
                            }
                        ],
                        "extensions": {"cost": self._cost(requested, None)},
                    }
                )
            self.available -= requested
            result = graphql_sync(SCHEMA, source, root_value=self.root, variable_values=variables)
            actual = requested if operation.operation == OperationType.MUTATION else 1 + _CURRENT.nodes
            actual = min(actual, requested)
            self.available = min(self.maximum, self.available + (requested - actual))
            answer: dict[str, Any] = {}
            if result.errors:
                answer["errors"] = [error.formatted for error in result.errors]
            answer["data"] = result.data
            answer["extensions"] = {"cost": self._cost(requested, actual)}
            return _json(answer)


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")
