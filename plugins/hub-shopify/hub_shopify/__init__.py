"""Sync provider ``shopify``: inventory levels per location from the Shopify Admin GraphQL API, quantities pushed
back with ``inventorySetQuantities``, and ``inventory_levels/update`` webhooks verified.

**Reading** (``data_type="inventory"``): one GraphQL request per page. A run first lists the shop's locations
(``locations(first: 250)``), then walks each location's ``inventoryLevels(first: page_size, after: cursor)`` Relay
connection. The cursor the hub stores is this provider's JSON: the locations still to read and the connection's
``endCursor`` in the current one, so an interrupted run resumes after its last stored page. When the last location is
read the cursor is ``None``: Shopify's inventory levels have no change feed to continue from, so every run reads the
whole stream again (the core deduplicates by ``(sku, location)``); webhooks carry the changes in between.

**Cost-based throttling.** Every answer carries ``extensions.cost`` (``requestedQueryCost``, ``actualQueryCost``,
``throttleStatus { maximumAvailable currentlyAvailable restoreRate }``). A ``THROTTLED`` answer (HTTP 200) raises
:class:`~hub.errors.TransientError` with ``retry_after = (requestedQueryCost - currentlyAvailable) / restoreRate``
seconds, the time the bucket needs to refill; the core waits that long and asks for the same page again. Nothing is
hard-coded: the numbers are the shop's. HTTP 429 (``Retry-After``) and 5xx are mapped by :mod:`hub.http`.

**Pushing.** For each update: read the item's current ``available`` quantity at the location (looked up by SKU),
then ``inventorySetQuantities(name: "available", quantities: [{..., quantity, changeFromQuantity: <read>}])``.
``CHANGE_FROM_QUANTITY_STALE`` (someone changed it in between) -> read again and retry once; stale again -> that
update ``failed`` with ``conflict`` in its error (the hub never overwrites a level it did not see).

**Webhooks.** ``inventory_levels/update`` names the inventory item by number only; its SKU is asked for once
(``inventoryItem(id:) { id sku }``) and kept in a small per-instance cache, so the event carries the same ``sku`` and
``location`` as the sync records (``type=INVENTORY_LEVEL_EVENT``). The signature is checked before anything is sent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from marshmallow import Schema, fields, validate

from hub import hookimpl
from hub.capabilities import (
    INVENTORY_LEVEL_EVENT,
    HealthResult,
    InventoryPush,
    InventoryUpdate,
    Provider,
    ProviderContext,
    PushItemResult,
    PushResult,
    SyncRequest,
    SyncResult,
    WebhookEvent,
    WebhookRequest,
)
from hub.errors import (
    ConfigurationError,
    PermanentError,
    ProviderError,
    ProviderThrottledError,
    SignatureError,
    TransientError,
    UnsupportedError,
)
from hub.http import HttpClient, HttpSettings, ProviderReason

__all__ = ["ShopifyInventory", "ShopifySettings", "register_providers"]

DATA_TYPES = ("inventory",)
MAX_PAGE = 250
_CURSOR_VERSION = 1

LOCATIONS_QUERY = """
query HubLocations($first: Int!, $after: String) {
  locations(first: $first, after: $after) {
    nodes { id name }
    pageInfo { hasNextPage endCursor }
  }
}
"""

LEVELS_QUERY = """
query HubInventoryLevels($location: ID!, $first: Int!, $after: String) {
  location(id: $location) {
    id
    name
    inventoryLevels(first: $first, after: $after) {
      nodes {
        id
        updatedAt
        quantities(names: ["available"]) { name quantity }
        item { id sku }
      }
      pageInfo { hasNextPage endCursor }
    }
  }
}
"""

LEVEL_BY_SKU_QUERY = """
query HubLevelBySku($query: String!, $location: ID!) {
  productVariants(first: 1, query: $query) {
    nodes {
      sku
      inventoryItem {
        id
        inventoryLevel(locationId: $location) { quantities(names: ["available"]) { name quantity } }
      }
    }
  }
}
"""

ITEM_SKU_QUERY = """
query HubInventoryItemSku($id: ID!) {
  inventoryItem(id: $id) { id sku }
}
"""

#: How many inventory item -> SKU answers a provider keeps, and for how long (a SKU can be renamed in Shopify).
SKU_CACHE_SIZE = 4096
SKU_CACHE_SECONDS = 900.0

SET_QUANTITIES_MUTATION = """
mutation HubSetQuantities($input: InventorySetQuantitiesInput!) {
  inventorySetQuantities(input: $input) {
    inventoryAdjustmentGroup { changes { name delta quantityAfterChange } }
    userErrors { field message code }
  }
}
"""


class ShopifySettings(HttpSettings):
    """``providers.<name>`` settings of a ``shopify`` provider (HttpSettings adds ``timeout``/``connect_timeout``)."""

    #: The shop's domain: ``my-shop.myshopify.com``.
    shop = fields.String(required=True, validate=validate.Regexp(r"^[A-Za-z0-9][A-Za-z0-9.-]*$", error="not a domain"))
    #: An Admin API access token (``shpat_...``) with read_inventory/write_inventory and read_locations.
    access_token = fields.String(required=True, validate=validate.Length(min=1))
    api_version = fields.String(
        load_default="2026-04", validate=validate.Regexp(r"^(\d{4}-\d{2}|unstable)$", error="not an API version")
    )
    #: Tests only: a server to use instead of https://<shop>.
    api_base = fields.Url(load_default=None, allow_none=True, schemes={"http", "https"}, require_tld=False)
    #: The most levels asked for per request (Shopify allows 250).
    page_size = fields.Integer(load_default=MAX_PAGE, validate=validate.Range(min=1, max=MAX_PAGE))
    #: The app's client secret, which signs webhooks (``X-Shopify-Hmac-Sha256``).
    webhook_secret = fields.String(load_default=None, allow_none=True)
    #: The ``reason`` sent with pushed quantities when the update names none.
    reason = fields.String(load_default="correction")


class ShopifyInventory(Provider):
    type_name = "shopify"
    capability = "sync"
    settings_schema: ClassVar[type[Schema]] = ShopifySettings
    env_settings: ClassVar[dict[str, str]] = {
        "access_token": "SHOPIFY_ACCESS_TOKEN",
        "webhook_secret": "SHOPIFY_WEBHOOK_SECRET",
    }
    secret_settings = ("access_token", "webhook_secret")
    description = "Shopify inventory levels per location (Admin GraphQL), inventorySetQuantities, signed webhooks."

    def __init__(self, name: str, settings: dict[str, Any], context: ProviderContext) -> None:
        super().__init__(name, settings, context)
        base = (settings.get("api_base") or f"https://{settings['shop']}").rstrip("/")
        self.path = f"/admin/api/{settings['api_version']}/graphql.json"
        self.http = HttpClient.from_settings(
            "Shopify",
            settings,
            base_url=base,
            headers={
                "X-Shopify-Access-Token": settings["access_token"],
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
            extract_error=_shopify_error,
            # A 404 names no resource of ours (the shop and version are in the URL): shop or api_version is wrong.
            status_errors={404: ConfigurationError},
        )
        #: The shop's bucket as the last answer left it, and what each named query cost: (clock time, status).
        self.clock: Callable[[], float] = time.monotonic
        self._bucket_lock = threading.Lock()
        self._bucket: tuple[float, float, float, float] | None = None  # (time, available, restore rate, maximum)
        self._costs: dict[str, float] = {}
        #: inventory item GID -> (clock time, SKU as ``_record`` gives it), least recently used first.
        self._skus: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._skus_lock = threading.Lock()

    # --- GraphQL ----------------------------------------------------------------------------------

    def graphql(self, query: str, variables: Mapping[str, Any]) -> dict[str, Any]:
        """``data`` of one request; THROTTLED and other top-level errors raised as the hub's errors.

        Before sending, the bucket the last answer reported (refilled at its ``restoreRate`` since) is compared
        with what this query cost last time: when it cannot pay, :class:`TransientError` is raised at once with
        the refill time, sparing Shopify a request that would be throttled.
        """
        name = _operation_name(query)
        self._check_bucket(name)
        response = self.http.post(self.path, json={"query": query, "variables": dict(variables)})
        try:
            body = response.json()
        except ValueError as error:
            raise TransientError("Shopify answered with a body that is not JSON", provider_code="bad-json") from error
        cost = ((body.get("extensions") or {}).get("cost") or {}) if isinstance(body, dict) else {}
        errors = body.get("errors") if isinstance(body, dict) else None
        self._note_cost(name, cost)
        if errors:
            raise _graphql_error(errors, cost)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            raise TransientError("Shopify's answer has no data", provider_code="no-data")
        status = cost.get("throttleStatus") or {}
        if status:
            self.log.debug(
                "shopify: cost %s of %s, %s/%s available",
                cost.get("actualQueryCost"),
                cost.get("requestedQueryCost"),
                status.get("currentlyAvailable"),
                status.get("maximumAvailable"),
            )
        return data

    def _check_bucket(self, name: str) -> None:
        with self._bucket_lock:
            needed, bucket = self._costs.get(name), self._bucket
        if needed is None or bucket is None:
            return
        seen_at, available, rate, maximum = bucket
        if rate <= 0:
            return
        now_available = min(maximum, available + max(0.0, self.clock() - seen_at) * rate)
        if now_available < needed:
            wait = math.ceil((needed - now_available) / rate * 1000) / 1000
            raise ProviderThrottledError(
                f"Shopify's query cost bucket holds {now_available:.0f} of the {needed:.0f} points {name} needs",
                provider_code="THROTTLED",
                retry_after=wait,
            )

    def _note_cost(self, name: str, cost: Mapping[str, Any]) -> None:
        status = cost.get("throttleStatus") or {}
        try:
            bucket = (
                self.clock(),
                float(status["currentlyAvailable"]),
                float(status["restoreRate"]),
                float(status["maximumAvailable"]),
            )
        except (KeyError, TypeError, ValueError):
            return
        with self._bucket_lock:
            self._bucket = bucket
            if cost.get("requestedQueryCost") is not None:
                self._costs[name] = float(cost["requestedQueryCost"])

    # --- sync ------------------------------------------------------------------------------------

    @hookimpl
    def sync(self, request: SyncRequest) -> SyncResult:
        if request.data_type not in DATA_TYPES:
            raise UnsupportedError(f"Shopify offers {', '.join(DATA_TYPES)}, not {request.data_type!r}")
        if request.options:
            raise PermanentError(f"Shopify's inventory stream takes no options (got {sorted(request.options)})")
        position = _read_cursor(request.cursor)
        if position is None:
            position = {"v": _CURSOR_VERSION, "locations": self._locations(), "after": None}
        first = max(1, min(request.page_size, self.settings["page_size"], MAX_PAGE))
        locations: list[list[str]] = position["locations"]
        while locations:
            location_id, location_name = locations[0]
            data = self.graphql(LEVELS_QUERY, {"location": location_id, "first": first, "after": position["after"]})
            location = data.get("location")
            if location is None:  # deleted since the run began: nothing to read there
                locations = locations[1:]
                position = {"v": _CURSOR_VERSION, "locations": locations, "after": None}
                continue
            connection = location["inventoryLevels"]
            records = [_record(node, location) for node in connection["nodes"]]
            page_info = connection["pageInfo"]
            if page_info["hasNextPage"]:
                after, rest = page_info["endCursor"], locations
            else:
                after, rest = None, locations[1:]
            if not rest:
                return SyncResult(records, cursor=None, has_more=False, primary_key=("sku", "location"))
            cursor = json.dumps({"v": _CURSOR_VERSION, "locations": rest, "after": after}, separators=(",", ":"))
            if not records:  # an empty location: go on to the next one in this call
                position, locations = json.loads(cursor), rest
                continue
            return SyncResult(records, cursor=cursor, has_more=True, primary_key=("sku", "location"))
        return SyncResult([], cursor=None, has_more=False, primary_key=("sku", "location"))

    def _locations(self) -> list[list[str]]:
        found: list[list[str]] = []
        after = None
        while True:
            connection = self.graphql(LOCATIONS_QUERY, {"first": 50, "after": after})["locations"]
            found += [[node["id"], node["name"]] for node in connection["nodes"]]
            if not connection["pageInfo"]["hasNextPage"]:
                return found
            after = connection["pageInfo"]["endCursor"]

    # --- push ------------------------------------------------------------------------------------

    @hookimpl
    def sync_push(self, push: InventoryPush) -> PushResult:
        results: list[PushItemResult] = []
        for update in push.updates:
            try:
                results.append(self._push_one(update))
            except (TransientError, ConfigurationError) as error:
                return PushResult.cut_short(push, results, error)
            except PermanentError as error:  # Shopify refused this update's request: this update fails
                results.append(PushItemResult(update.sku, update.location, "failed", error=error.message))
        return PushResult(results)

    def _push_one(self, update: InventoryUpdate) -> PushItemResult:
        location_id = _location_gid(update.location)
        if location_id is None:
            return PushItemResult(update.sku, update.location, "failed", error="location is not a Shopify location id")
        if isinstance(update.quantity, float) and not update.quantity.is_integer():
            return PushItemResult(update.sku, update.location, "failed", error="Shopify quantities are whole numbers")
        last_error = ""
        for _attempt in range(2):
            current = self._read_level(update.sku, location_id)
            if isinstance(current, str):
                return PushItemResult(update.sku, update.location, "failed", error=current)
            item_id, quantity = current
            target = int(update.quantity) if update.mode == "set" else quantity + int(update.quantity)
            data = self.graphql(
                SET_QUANTITIES_MUTATION,
                {
                    "input": {
                        "name": "available",
                        "reason": update.reason if update.reason in _REASONS else self.settings["reason"],
                        "referenceDocumentUri": f"hub://inventory-update/{update.id}" if update.id else None,
                        "quantities": [
                            {
                                "inventoryItemId": item_id,
                                "locationId": location_id,
                                "quantity": target,
                                "changeFromQuantity": quantity,
                            }
                        ],
                    }
                },
            )
            payload = data.get("inventorySetQuantities") or {}
            errors = payload.get("userErrors") or []
            if not errors:
                return PushItemResult(update.sku, update.location, "sent", quantity=target)
            codes = {error.get("code") for error in errors}
            last_error = "; ".join(str(error.get("message")) for error in errors)
            if codes != {"CHANGE_FROM_QUANTITY_STALE"}:
                return PushItemResult(
                    update.sku, update.location, "failed", error=f"{sorted(map(str, codes))}: {last_error}"
                )
            self.log.info("shopify: %s at %s changed since it was read; reading it again", update.sku, update.location)
        return PushItemResult(
            update.sku,
            update.location,
            "failed",
            error=f"conflict: the level changed again while it was being set (CHANGE_FROM_QUANTITY_STALE: {last_error})",
        )

    def _read_level(self, sku: str, location_id: str) -> tuple[str, int] | str:
        """(inventory item id, available quantity), or why the update cannot be applied."""
        query = "sku:" + json.dumps(sku)
        nodes = self.graphql(LEVEL_BY_SKU_QUERY, {"query": query, "location": location_id})["productVariants"]["nodes"]
        variant = next((node for node in nodes if node.get("sku") == sku), None)
        if variant is None:
            return f"no product variant with SKU {sku!r}"
        item = variant["inventoryItem"]
        level = item.get("inventoryLevel")
        if level is None:
            return "the item is not stocked at this location"
        available = next((q["quantity"] for q in level["quantities"] if q["name"] == "available"), None)
        if available is None:
            return "Shopify returned no available quantity"
        return item["id"], int(available)

    # --- health ----------------------------------------------------------------------------------

    @hookimpl
    def health(self) -> HealthResult:
        try:
            data = self.graphql(LOCATIONS_QUERY, {"first": 1, "after": None})
        except ProviderError as error:
            return HealthResult("error", error.message)
        return HealthResult(
            "success", f"Shop {self.settings['shop']}: {len(data['locations']['nodes'])} location(s) seen"
        )

    # --- webhooks --------------------------------------------------------------------------------

    @hookimpl
    def handle_webhook(self, webhook: WebhookRequest) -> list[WebhookEvent]:
        secret = self.settings.get("webhook_secret")
        if not secret:
            raise SignatureError("webhook_secret is not set: Shopify webhooks cannot be verified")
        signature = _header(webhook.headers, "X-Shopify-Hmac-Sha256")
        if not signature:
            raise SignatureError("missing X-Shopify-Hmac-Sha256 header")
        expected = base64.b64encode(hmac.new(secret.encode(), webhook.body, hashlib.sha256).digest()).decode()
        if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
            raise SignatureError("X-Shopify-Hmac-Sha256 does not match the body")
        topic = _header(webhook.headers, "X-Shopify-Topic") or ""
        if topic != "inventory_levels/update":
            return []
        try:
            body = json.loads(webhook.body)
        except ValueError as error:
            raise PermanentError("the inventory_levels/update body is not JSON") from error
        if not isinstance(body, dict):
            raise PermanentError("the inventory_levels/update body is not a JSON object")
        item, location = body.get("inventory_item_id"), body.get("location_id")
        if not str(item).isdigit() or not str(location).isdigit():
            raise PermanentError("not an inventory_levels/update payload (no inventory_item_id/location_id)")
        available = body.get("available")
        if not isinstance(available, int) or isinstance(available, bool):
            # An untracked item has no available quantity: there is no level to set, and a retry would not help.
            self.log.info("shopify: inventory_levels/update for item %s carries no available quantity", item)
            return []
        item_id = f"gid://shopify/InventoryItem/{item}"
        sku = self._item_sku(item_id)
        if sku is None:
            # Deleted since Shopify sent it: acknowledged (2xx), since every retry would find it gone as well.
            self.log.warning("shopify: inventory_levels/update names %s, which Shopify no longer knows", item_id)
            return []
        event_id = _header(webhook.headers, "X-Shopify-Event-Id") or _header(webhook.headers, "X-Shopify-Webhook-Id")
        reference = (
            body.get("admin_graphql_api_id") or f"gid://shopify/InventoryLevel/{location}?inventory_item_id={item}"
        )
        details = {
            "sku": sku,
            "location": f"gid://shopify/Location/{location}",
            "quantity": available,
            "updatedAt": body.get("updated_at"),
            "inventoryItemId": item_id,
        }
        return [
            WebhookEvent(
                event_id=event_id or f"{reference}@{body.get('updated_at')}",
                reference=str(reference),
                status="updated",
                type=INVENTORY_LEVEL_EVENT,
                details=details,
            )
        ]

    def _item_sku(self, item_id: str) -> str | None:
        """The item's SKU as sync records carry it (its GID when it has none); ``None`` if Shopify has no such item.

        Throttling and transport errors propagate (the API answers 503, so Shopify delivers the webhook again).
        """
        now = self.clock()
        with self._skus_lock:
            cached = self._skus.get(item_id)
            if cached is not None and now - cached[0] < SKU_CACHE_SECONDS:
                self._skus.move_to_end(item_id)
                return cached[1]
        node = self.graphql(ITEM_SKU_QUERY, {"id": item_id}).get("inventoryItem")
        if node is None:
            return None
        sku = str(node.get("sku") or node.get("id") or item_id)
        with self._skus_lock:
            self._skus[item_id] = (now, sku)
            self._skus.move_to_end(item_id)
            while len(self._skus) > SKU_CACHE_SIZE:
                self._skus.popitem(last=False)
        return sku

    @hookimpl
    def close(self) -> None:
        self.http.close()


#: Reasons inventorySetQuantities accepts; other update reasons are sent as the ``reason`` setting.
_REASONS = frozenset(
    {
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
)


def _record(node: Mapping[str, Any], location: Mapping[str, Any]) -> dict[str, Any]:
    available = next((q["quantity"] for q in node.get("quantities") or [] if q["name"] == "available"), None)
    item = node.get("item") or {}
    return {
        "sku": item.get("sku") or item.get("id"),
        "location": location["id"],
        "quantity": available if available is not None else 0,
        "location_name": location.get("name"),
        "inventory_item_id": item.get("id"),
        "inventory_level_id": node.get("id"),
        "updated_at": node.get("updatedAt"),
    }


def _read_cursor(cursor: str | None) -> dict[str, Any] | None:
    if cursor is None:
        return None
    try:
        position = json.loads(cursor)
        assert isinstance(position, dict) and position.get("v") == _CURSOR_VERSION
        assert isinstance(position["locations"], list) and all(len(pair) == 2 for pair in position["locations"])
        assert position.get("after") is None or isinstance(position["after"], str)
    except (ValueError, AssertionError, KeyError, TypeError) as error:
        raise PermanentError("not a cursor of this Shopify provider: run a full resync") from error
    return position


def _graphql_error(errors: Any, cost: Mapping[str, Any]) -> ProviderError:
    first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
    code = str((first.get("extensions") or {}).get("code") or "")
    message = str(first.get("message") or errors)
    if code == "THROTTLED":
        return ProviderThrottledError(
            f"Shopify throttled the query ({message})", provider_code="THROTTLED", retry_after=_refill_time(cost)
        )
    if code in ("ACCESS_DENIED", "UNAUTHORIZED"):
        return ConfigurationError(f"Shopify refused the query: {message}", provider_code=code)
    if code == "INTERNAL_SERVER_ERROR":
        return TransientError(f"Shopify failed: {message}", provider_code=code)
    return PermanentError(f"Shopify refused the query: {message}", provider_code=code or "graphql")


def _operation_name(query: str) -> str:
    match = re.search(r"\b(?:query|mutation)\s+(\w+)", query)
    return match.group(1) if match else "query"


def _refill_time(cost: Mapping[str, Any]) -> float | None:
    """Seconds until the bucket holds the requested cost, from the answer's own numbers."""
    status = cost.get("throttleStatus") or {}
    try:
        requested = float(cost["requestedQueryCost"])
        available = float(status["currentlyAvailable"])
        rate = float(status["restoreRate"])
    except (KeyError, TypeError, ValueError):
        return None
    if rate <= 0:
        return None
    return max(0.0, math.ceil((requested - available) / rate * 1000) / 1000)


def _shopify_error(response: Any) -> ProviderReason | None:
    """The code and message of an error answer: ``{"errors": "..."}`` or ``{"errors": [{"message": ...}]}``."""
    try:
        body = response.json()
    except ValueError:
        return None
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, str):
        return ProviderReason(None, errors)
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        return ProviderReason((errors[0].get("extensions") or {}).get("code"), errors[0].get("message"))
    return None


def _location_gid(location: str) -> str | None:
    if location.startswith("gid://shopify/Location/"):
        return location
    if location.isdigit():
        return f"gid://shopify/Location/{location}"
    return None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    return next((value for key, value in headers.items() if key.lower() == wanted), None)


@hookimpl
def register_providers(register: Callable[[type], None]) -> None:
    register(ShopifyInventory)
