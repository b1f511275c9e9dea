"""The OpenAPI 3 document, built by apispec from the same marshmallow schemas that validate requests."""

from __future__ import annotations

import re
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask

from hub import schemas
from hub.api.middleware import API_PREFIX
from hub.config import TemplateSchema

#: operation id (the view's name) -> (request body schema, success status)
REQUEST_BODIES: dict[str, tuple[type, int]] = {
    "test_notification": (schemas.NotificationSchema, 200),
    "create_notification": (schemas.NotificationSchema, 200),
    "test_payment": (schemas.TestPaymentSchema, 200),
    "create_payment": (schemas.PaymentSchema, 201),
    "refund_payment": (schemas.RefundSchema, 201),
    "capture_payment": (schemas.CaptureSchema, 200),
    "cancel_payment": (schemas.CancelSchema, 200),
    "create_refund": (schemas.RefundSchema, 201),
    "test_event": (schemas.EventSchema, 200),
    "publish_event": (schemas.EventSchema, 201),
    "test_file": (schemas.TestFileSchema, 200),
    "upload_file": (schemas.FileUploadSchema, 201),
    "test_sync": (schemas.TestSyncSchema, 200),
    "create_sync_job": (schemas.SyncSchema, 202),
    "sync_inventory": (schemas.InventorySyncSchema, 200),
    "push_inventory_updates": (schemas.InventoryPushSchema, 200),
    "save_template": (TemplateSchema, 200),
}

#: operation id -> its query parameters (name, type, description)
QUERY_PARAMETERS: dict[str, list[tuple[str, str, str]]] = {
    "get_payment": [("refresh", "boolean", "Ask the payment's gateway for its status first (payment_status)")],
}

#: operation id -> other success statuses it may answer with
OTHER_SUCCESSES: dict[str, dict[str, str]] = {
    "create_payment": {"202": "Accepted, outcome not known yet (status processing): looked up later, GET ?refresh=true"},
    "refund_payment": {"202": "Refund sent, outcome not known yet (status processing): sent again later with the same key"},
    "create_refund": {"202": "Refund sent, outcome not known yet (status processing): sent again later with the same key"},
}

ERROR_STATUSES = {
    "400": "Bad request",
    "401": "Missing or invalid bearer token",
    "403": "Tenant header missing or not the token's tenant",
    "404": "Not found",
    "409": "Idempotency-Key still in progress",
    "422": "Validation error naming the field",
    "429": "Rate limited (see Retry-After)",
    "500": "Internal error",
    "503": "No provider available",
}

_CACHE: dict[int, dict[str, Any]] = {}


def build_spec(app: Flask) -> dict[str, Any]:
    cached = _CACHE.get(id(app))
    if cached is not None:
        return cached
    spec = APISpec(
        title="Integration Hub API",
        version="0.1.0",
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={"description": "Notify, pay, store, publish and sync through provider plugins."},
    )
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    spec.components.schema("Error", schema=schemas.ErrorSchema)
    spec.components.schema("Envelope", schema=schemas.EnvelopeSchema)
    for schema, _status in REQUEST_BODIES.values():
        component = schema.__name__.removesuffix("Schema")
        if component not in spec.components.schemas:
            spec.components.schema(component, schema=schema)
    paths: dict[str, dict[str, Any]] = {}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(API_PREFIX):
            continue
        operation_id = rule.endpoint.split(".", 1)[1]
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        view = app.view_functions[rule.endpoint]
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            operation: dict[str, Any] = {
                "operationId": operation_id,
                "summary": (view.__doc__ or rule.endpoint).strip().splitlines()[0],
                "tags": [rule.endpoint.split(".", 1)[0]],
                "parameters": [
                    {"name": argument, "in": "path", "required": True, "schema": {"type": "string"}} for argument in sorted(rule.arguments)
                ],
                "responses": {},
            }
            operation["parameters"] += [
                {"name": name, "in": "query", "required": False, "schema": {"type": kind}, "description": description}
                for name, kind, description in QUERY_PARAMETERS.get(operation_id, [])
            ]
            status = 200
            if operation_id in REQUEST_BODIES:
                schema, status = REQUEST_BODIES[operation_id]
                component = schema.__name__.removesuffix("Schema")
                content = {"application/json": {"schema": {"$ref": f"#/components/schemas/{component}"}}}
                if operation_id == "upload_file":
                    content["multipart/form-data"] = {
                        "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}, "category": {"type": "string"}}}
                    }
                operation["requestBody"] = {"required": True, "content": content}
            if method == "POST":
                operation["parameters"].append(
                    {"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string", "maxLength": 255}}
                )
            if operation_id != "openapi":
                operation["responses"][str(status)] = {
                    "description": "Success",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Envelope"}}},
                }
                for code, description in OTHER_SUCCESSES.get(operation_id, {}).items():
                    operation["responses"][code] = {
                        "description": description,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Envelope"}}},
                    }
                for code, description in ERROR_STATUSES.items():
                    operation["responses"][code] = {
                        "description": description,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                    }
            else:
                operation["responses"]["200"] = {"description": "This document"}
            if getattr(view, "public", False):
                operation["security"] = []
            else:
                operation["parameters"].append({"name": "X-Tenant-ID", "in": "header", "required": True, "schema": {"type": "string"}})
            paths.setdefault(path, {})[method.lower()] = operation
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    document = spec.to_dict()
    document["security"] = [{"bearer": []}]
    _CACHE[id(app)] = document
    return document
