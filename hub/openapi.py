"""The OpenAPI 3 document, built by apispec from the same marshmallow schemas that validate requests."""

from __future__ import annotations

import re
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask

from hub import schemas
from hub.api.middleware import API_PREFIX, MAX_OFFSET, idempotent
from hub.capabilities import PAYMENT_STATUSES
from hub.config import SERVICES, SubscriptionRequestSchema, TemplateSchema
from hub.schemas import EVENT_TYPE
from hub.services.templates import TEMPLATE_NAME

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
    "publish_events": (schemas.EventBatchSchema, 201),
    "reset_offsets": (schemas.OffsetResetSchema, 200),
    "test_file": (schemas.TestFileSchema, 200),
    "upload_file": (schemas.FileUploadSchema, 201),
    "start_direct_upload": (schemas.DirectUploadSchema, 201),
    "test_sync": (schemas.TestSyncSchema, 200),
    "create_sync_job": (schemas.SyncSchema, 202),
    "sync_inventory": (schemas.InventorySyncSchema, 200),
    "push_inventory_updates": (schemas.InventoryPushSchema, 200),
    "override_inventory_level": (schemas.InventoryOverrideSchema, 200),
    "put_credentials": (schemas.CredentialsSchema, 200),
    "save_template": (TemplateSchema, 200),
    "register_event_schema": (schemas.EventTypeSchemaSchema, 201),
    "create_subscription": (SubscriptionRequestSchema, 201),
    "create_topic": (schemas.TopicSchema, 201),
}

_PAGE = [
    ("limit", {"type": "integer"}, False, "at most this many items (clamped to 1..500; 50 by default)"),
    ("offset", {"type": "integer", "maximum": MAX_OFFSET}, False, "skip this many (negative counts as 0)"),
]
_RECORDS_PAGE = [*_PAGE, ("status", {"type": "string"}, False, "only records in this status")]

#: operation id -> its query parameters (name, schema, required, description)
QUERY_PARAMETERS: dict[str, list[tuple[str, dict[str, Any], bool, str]]] = {
    "get_payment": [("refresh", {"type": "boolean"}, False, "Ask the payment's gateway for its status first (payment_status)")],
    "list_notifications": _RECORDS_PAGE,
    "list_payments": [
        *_PAGE,
        ("status", {"type": "string", "enum": list(PAYMENT_STATUSES)}, False, "only payments in this status"),
        ("gateway", {"type": "string", "minLength": 1, "maxLength": 100}, False, "only payments made through this provider (its name in hub.yaml)"),
        ("orderId", {"type": "string", "minLength": 1, "maxLength": 200}, False, "only payments for this order"),
        ("createdFrom", {"type": "string", "format": "date-time"}, False, "created at or after (ISO 8601; UTC without an offset)"),
        ("createdTo", {"type": "string", "format": "date-time"}, False, "created before (ISO 8601; UTC without an offset)"),
    ],
    "list_files": [
        *_PAGE,
        ("category", {"type": "string"}, False, "only files of this category"),
        ("prefix", {"type": "string"}, False, "only keys starting with this, after the tenant's part (`invoices/`)"),
        ("provider", {"type": "string"}, False, "only files held by this storage provider"),
    ],
    "signed_download": [("token", {"type": "string", "minLength": 1}, True, "the signature from the file's downloadUrl")],
    "list_sync_jobs": _RECORDS_PAGE,
    "list_inventory_updates": _RECORDS_PAGE,
    "list_deliveries": [*_RECORDS_PAGE, ("kind", {"type": "string"}, False, "only records of this kind (notification, payment, ...)")],
    "list_synced_records": [
        ("dataType", {"type": "string", "minLength": 1}, True, "the stream to list"),
        ("provider", {"type": "string"}, False, "only this provider's records"),
        *_PAGE,
    ],
    "list_inventory_levels": [*_PAGE, ("provider", {"type": "string"}, False, ""), ("sku", {"type": "string"}, False, ""), ("location", {"type": "string"}, False, "")],
    "list_inventory_history": [_PAGE[0], ("provider", {"type": "string"}, False, ""), ("sku", {"type": "string"}, False, ""), ("location", {"type": "string"}, False, "")],
    "get_inventory_history": [
        _PAGE[0],
        ("from", {"type": "string", "format": "date-time"}, False, "changes at or after (ISO 8601; UTC without an offset)"),
        ("to", {"type": "string", "format": "date-time"}, False, "changes before (ISO 8601; UTC without an offset)"),
        ("location", {"type": "string", "minLength": 1, "maxLength": 255}, False, "only this location"),
        ("provider", {"type": "string", "minLength": 1, "maxLength": 100}, False, "only this source (`override` for levels set by hand)"),
    ],
    "list_inventory_discrepancies": [
        *_PAGE,
        ("status", {"type": "string", "enum": ["open", "resolved", "all"]}, False, "open (default), resolved or all"),
        ("sku", {"type": "string", "minLength": 1, "maxLength": 255}, False, "only this SKU"),
    ],
    "list_low_stock": _PAGE,
    "list_alerts": [_PAGE[0], ("status", {"type": "string", "enum": ["open", "resolved", "all"]}, False, "open (default), resolved or all")],
    "list_topics": [("provider", {"type": "string"}, False, "the publish provider to ask (default: the tenant's first that can)")],
    "delete_consumer_group": [("provider", {"type": "string"}, False, "the publish provider holding the group")],
    "list_snapshots": [_PAGE[0], ("provider", {"type": "string"}, False, "")],
    "list_sync_checkpoints": [("provider", {"type": "string"}, False, ""), ("dataType", {"type": "string"}, False, "")],
    "audit": [
        _PAGE[0],
        ("provider", {"type": "string"}, False, ""),
        ("service", {"type": "string"}, False, ""),
        ("outcome", {"type": "string"}, False, "success, rejected or error"),
    ],
}

#: operation id -> a path parameter's schema, where it is narrower than any string
PATH_PARAMETERS: dict[str, dict[str, dict[str, Any]]] = {
    "save_template": {"name": {"type": "string", "pattern": TEMPLATE_NAME.pattern}},
    "delete_template": {"channel": {"type": "string", "enum": ["email", "sms", "chat"]}},
    "health_service": {"service": {"type": "string", "enum": sorted(SERVICES)}},
    "service": {"service": {"type": "string", "enum": sorted(SERVICES)}},
    "override_inventory_level": {"sku": {"type": "string", "minLength": 1, "maxLength": 255}, "location": {"type": "string", "minLength": 1, "maxLength": 255}},
    "get_inventory_history": {"sku": {"type": "string", "minLength": 1, "maxLength": 255}},
    "get_event_schema": {"version": {"type": "integer", "minimum": 1}, "event_type": {"type": "string", "pattern": EVENT_TYPE.pattern}},
    "register_event_schema": {"version": {"type": "integer", "minimum": 1}, "event_type": {"type": "string", "pattern": EVENT_TYPE.pattern}},
}

_QUEUED = "Accepted: delivered in the background (poll the record)"
#: operation id -> other success statuses it may answer with
OTHER_SUCCESSES: dict[str, dict[str, str]] = {
    "create_payment": {"202": "Accepted, outcome not known yet (status processing): looked up later, GET ?refresh=true"},
    "refund_payment": {"202": "Refund sent, outcome not known yet (status processing): sent again later with the same key"},
    "create_refund": {"202": "Refund sent, outcome not known yet (status processing): sent again later with the same key"},
    "replay_delivery": {"202": "The dead record is queued again; only its unfinished work is redone"},
    "test_notification": {"202": _QUEUED + " (a bulk send, or async: true)"},
    "create_notification": {"202": _QUEUED + " (a bulk send, or async: true)"},
    "test_sync": {"202": _QUEUED + " (async: true)"},
    "create_sync_job": {"200": "Ran now (async: false): the job with its outcome"},
    "push_inventory_updates": {"202": _QUEUED + " (async: true, or updates to retry)"},
}

#: The code of the wrapper ``@idempotent`` puts around a view: only those views honour Idempotency-Key.
_IDEMPOTENT_WRAPPER = idempotent(lambda: None).__code__


def _honours_idempotency_key(view: Any) -> bool:
    while view is not None:
        if getattr(view, "__code__", None) is _IDEMPOTENT_WRAPPER:
            return True
        view = getattr(view, "__wrapped__", None)  # through @require_admin and other functools.wraps
    return False

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

_ENVELOPE = {"application/json": {"schema": {"$ref": "#/components/schemas/Envelope"}}}
#: The load balancer's probes (at the root, no token): only these answers.
PROBES: dict[str, dict[str, Any]] = {
    "livez": {"200": {"description": "The process answers (no database call)", "content": _ENVELOPE}},
    "readyz": {
        "200": {"description": "Ready: running, not shutting down, database and job queue answered", "content": _ENVELOPE},
        "503": {
            "description": "Not ready: `error` names the reason (shutting down, services shut down, database or queue unreachable)",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        },
    },
}


# --- files: bodies and answers that are not JSON envelopes ---------------------------------------------

_BINARY = {"schema": {"type": "string", "format": "binary"}}
_BASE64 = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


# Form fields and query parameters of an upload follow FileUpload's rules.
_FILE_NAME = {"$ref": "#/components/schemas/FileUpload/properties/fileName"}
_CATEGORY = {"$ref": "#/components/schemas/FileUpload/properties/category"}
_FILE_TYPE = {"type": "string", "maxLength": 50}


def _upload_file_details(operation: dict[str, Any]) -> None:
    content = operation["requestBody"]["content"]
    # As JSON the content is required (multipart and raw bodies carry it outside these fields), base64.
    content["application/json"]["schema"] = {
        "allOf": [
            {"$ref": "#/components/schemas/FileUpload"},
            {"type": "object", "required": ["content"], "properties": {"content": {"type": "string", "format": "byte", "minLength": 4, "pattern": _BASE64}}},
        ]
    }
    content["multipart/form-data"] = {
        "schema": {
            "type": "object",
            "required": ["file"],
            "properties": {
                "file": {"type": "string", "format": "binary", "minLength": 1, "description": "not empty"},
                "fileName": _FILE_NAME,
                "contentType": {"type": "string"},
                "category": _CATEGORY,
                "fileType": _FILE_TYPE,
                "metadata": {"type": "string", "description": "a JSON object of string values"},
            },
            "additionalProperties": False,
        }
    }
    content["application/octet-stream"] = {
        "schema": {
            "type": "string",
            "format": "binary",
            "minLength": 1,
            "description": "A raw body (not empty): any Content-Type but JSON and multipart is the file's type; name it with X-File-Name or ?fileName=.",
        }
    }
    operation["description"] = (
        "Three ways to send the content: multipart/form-data (a `file` part plus form fields), a raw body (the file's "
        "Content-Type, its name in `X-File-Name` or `?fileName=`, other fields as query parameters; chunked bodies "
        "are fine), or JSON with base64 `content` (for small files). The content streams to the storage provider: "
        "its size limit is enforced while reading (413), its SHA-256 and sniffed content type computed on the way."
    )
    operation["parameters"] += [
        {"name": "X-File-Name", "in": "header", "required": False, "schema": _FILE_NAME, "description": "raw body: the file's name (percent-encoded UTF-8 allowed)"},
        {"name": "fileName", "in": "query", "required": False, "schema": _FILE_NAME, "description": "raw body: the file's name"},
        {"name": "category", "in": "query", "required": False, "schema": _CATEGORY},
        {"name": "fileType", "in": "query", "required": False, "schema": _FILE_TYPE},
        {"name": "metadata", "in": "query", "required": False, "schema": {"type": "string"}, "description": "a JSON object of string values"},
    ]
    operation["responses"]["400"] = _error("The upload ended before its Content-Length, or the client went away")
    operation["responses"]["413"] = _error("Over storage_limits.max_file_size (found before or while reading)")


def _download_file_details(operation: dict[str, Any]) -> None:
    operation["parameters"] += [
        {"name": "Range", "in": "header", "required": False, "schema": {"type": "string"}, "description": "one byte range: bytes=0-99, bytes=100-, bytes=-100"},
        {"name": "If-Range", "in": "header", "required": False, "schema": {"type": "string"}, "description": "the ETag: send the range only if the file is still that version"},
    ]
    headers = {name: {"schema": {"type": "string"}} for name in ("ETag", "Accept-Ranges", "Content-Length", "Content-Disposition")}
    operation["responses"]["200"] = {"description": "The whole file (also for several ranges, or a stale If-Range)", "headers": headers, "content": {"*/*": _BINARY}}
    operation["responses"]["206"] = {
        "description": "The requested byte range",
        "headers": {**headers, "Content-Range": {"schema": {"type": "string"}, "description": "bytes first-last/size"}},
        "content": {"*/*": _BINARY},
    }
    operation["responses"]["416"] = {**_error("Range not satisfiable"), "headers": {"Content-Range": {"schema": {"type": "string"}, "description": "bytes */size"}}}


def _file_metadata_details(operation: dict[str, Any]) -> None:
    operation["parameters"].append(
        {"name": "verify", "in": "query", "required": False, "schema": {"type": "boolean"}, "description": "add `storage`: what the provider holds (store_head) and whether it matches"}
    )


def _start_direct_upload_details(operation: dict[str, Any]) -> None:
    operation["description"] = (
        "Presign an upload at the first storage provider that can: send the bytes to `upload.url` (`upload.method`, "
        "`upload.headers`, for POST `upload.fields`), then call `completeUrl`. 409 when no provider can presign."
    )
    operation["responses"]["413"] = _error("The announced size is over storage_limits.max_file_size")


def _complete_direct_upload_details(operation: dict[str, Any]) -> None:
    operation["responses"].pop("200", None)
    operation["responses"]["201"] = {"description": "The file, recorded", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Envelope"}}}}
    operation["responses"]["409"] = _error("Nothing was uploaded yet, or the upload is not awaiting its content")
    operation["responses"]["413"] = _error("What arrived is over storage_limits.max_file_size: it was deleted")


def _create_refund_details(operation: dict[str, Any]) -> None:
    # Without a payment id in the path, the gateway's transaction id names what to refund.
    operation["requestBody"]["content"]["application/json"]["schema"] = {
        "allOf": [{"$ref": "#/components/schemas/Refund"}, {"type": "object", "required": ["transactionId"], "properties": {"transactionId": {"type": "string", "minLength": 1}}}]
    }


#: operation id -> a function completing its generated operation (non-JSON bodies and answers).
OPERATION_DETAILS: dict[str, Any] = {
    "upload_file": _upload_file_details,
    "download_file": _download_file_details,
    "file_metadata": _file_metadata_details,
    "start_direct_upload": _start_direct_upload_details,
    "complete_direct_upload": _complete_direct_upload_details,
    "create_refund": _create_refund_details,
}


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
        if not rule.rule.startswith(API_PREFIX) and rule.endpoint.split(".", 1)[0] != "probes":
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
                    {"name": argument, "in": "path", "required": True, "schema": PATH_PARAMETERS.get(operation_id, {}).get(argument, {"type": "string"})}
                    for argument in sorted(rule.arguments)
                ],
                "responses": {},
            }
            operation["parameters"] += [
                {"name": name, "in": "query", "required": required, "schema": schema, **({"description": description} if description else {})}
                for name, schema, required, description in QUERY_PARAMETERS.get(operation_id, [])
            ]
            status = 200
            if operation_id in REQUEST_BODIES:
                schema, status = REQUEST_BODIES[operation_id]
                component = schema.__name__.removesuffix("Schema")
                content = {"application/json": {"schema": {"$ref": f"#/components/schemas/{component}"}}}
                operation["requestBody"] = {"required": True, "content": content}
            if _honours_idempotency_key(view):
                operation["parameters"].append(
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
                        "description": "the same key and body again: the first answer, no second side effect",
                    }
                )
            if operation_id in PROBES:
                operation["responses"] = dict(PROBES[operation_id])
            elif operation_id != "openapi":
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
                    operation["responses"][code] = _error(description)
                if method in ("POST", "PUT", "PATCH"):
                    operation["responses"]["413"] = _error("The request body is over the configured limit")
            else:
                operation["responses"]["200"] = {"description": "This document"}
            if getattr(view, "public", False):
                operation["security"] = []
            else:
                operation["parameters"].append({"name": "X-Tenant-ID", "in": "header", "required": True, "schema": {"type": "string"}})
            amend = OPERATION_DETAILS.get(operation_id)
            if amend is not None:
                amend(operation)
            paths.setdefault(path, {})[method.lower()] = operation
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    document = spec.to_dict()
    # Rules that come from hub.yaml rather than from a schema.
    max_file_size = app.extensions["hub"].config["storage_limits"]["max_file_size"]
    document["components"]["schemas"]["DirectUpload"]["properties"]["size"]["maximum"] = max_file_size
    document["security"] = [{"bearer": []}]
    _CACHE[id(app)] = document
    return document
