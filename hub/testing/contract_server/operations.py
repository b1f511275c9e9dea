"""One operation of the description, prepared to check a request's parameters, credentials and body."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass
from hub.testing.contract_server.description import (
    OpenAPIDocument,
)
from hub.testing.contract_server.messages import (
    Credentials,
)


@dataclass
class _Parameter:
    name: str
    location: str
    required: bool
    schema: Any
    style: str | None
    explode: bool | None
    collection_format: str | None = None


@dataclass
class _Body:
    required: bool
    content: dict[str, Any]  # lower-cased media type → media type object (with "schema")


@dataclass
class _Prepared:
    parameters: list[_Parameter]
    body: _Body | None
    security: list[dict[str, Any]] | None
    responses: dict[str, Any]


class _Operation:
    """One method on one path template, with its regex compiled at index time and the rest prepared lazily."""

    def __init__(
        self,
        document: OpenAPIDocument,
        method: str,
        template: str,
        base_path: str,
        path_item: Mapping[str, Any],
        operation: Mapping[str, Any],
    ) -> None:
        self.document = document
        self.method = method.upper()
        self.template = template
        self.full_template = base_path + template
        self.path_item = path_item
        self.operation = operation
        self.key = f"{self.method} {template}"
        self.operation_id: str = operation.get("operationId") or self.key
        pieces = re.split(r"(\{[^{}/]+\})", self.full_template)
        self.param_names = [piece[1:-1] for piece in pieces if piece.startswith("{") and piece.endswith("}")]
        regex = "".join(
            "([^/]+)" if piece.startswith("{") and piece.endswith("}") else re.escape(piece) for piece in pieces
        )
        self.regex = re.compile(regex)
        literal = sum(len(piece) for piece in pieces if not piece.startswith("{"))
        # Literal paths win over templated ones ("/v1/payment_intents/search" before ".../{intent}").
        self.sort_key = (len(self.param_names), -literal)
        self._prepared: _Prepared | None = None

    def match(self, path: str) -> dict[str, str] | None:
        found = self.regex.fullmatch(path)
        if found is None:
            return None
        return dict(zip(self.param_names, found.groups(), strict=True))

    def prepared(self) -> _Prepared:
        if self._prepared is None:
            self._prepared = self._prepare()
        return self._prepared

    def _prepare(self) -> _Prepared:
        document = self.document
        merged: dict[tuple[str, str], Mapping[str, Any]] = {}
        for raw in [*(self.path_item.get("parameters") or []), *(self.operation.get("parameters") or [])]:
            parameter = document.deref(raw)
            merged[(parameter["name"], parameter["in"])] = parameter  # operation level overrides path level
        parameters: list[_Parameter] = []
        body: _Body | None = None
        form_fields: list[Mapping[str, Any]] = []
        for (name, location), parameter in merged.items():
            if location == "body":  # Swagger 2.0
                consumes = self.operation.get("consumes") or document.spec.get("consumes") or ["application/json"]
                body = _Body(
                    required=bool(parameter.get("required")),
                    content={media.lower(): {"schema": parameter.get("schema", {})} for media in consumes},
                )
            elif location == "formData":  # Swagger 2.0
                form_fields.append(parameter)
            else:
                parameters.append(
                    _Parameter(
                        name=name,
                        location=location,
                        required=bool(parameter.get("required")) or location == "path",
                        schema=parameter.get("schema") or _swagger2_schema(parameter),
                        style=parameter.get("style"),
                        explode=parameter.get("explode"),
                        collection_format=parameter.get("collectionFormat"),
                    )
                )
        if form_fields:
            consumes = self.operation.get("consumes") or document.spec.get("consumes") or []
            media_types = [media.lower() for media in consumes if "form" in media.lower()]
            schema = {
                "type": "object",
                "properties": {field["name"]: _swagger2_schema(field) for field in form_fields},
                "required": [field["name"] for field in form_fields if field.get("required")],
            }
            body = _Body(
                required=bool(schema["required"]),
                content={media: {"schema": schema} for media in media_types or ["application/x-www-form-urlencoded"]},
            )
        request_body = self.operation.get("requestBody")
        if request_body is not None:
            request_body = document.deref(request_body)
            body = _Body(
                required=bool(request_body.get("required")),
                content={
                    media.split(";")[0].strip().lower(): value
                    for media, value in request_body.get("content", {}).items()
                },
            )
        security = self.operation.get("security", document.spec.get("security"))
        return _Prepared(
            parameters=parameters,
            body=body,
            security=security,
            responses=dict(self.operation.get("responses") or {}),
        )


_SWAGGER2_SCHEMA_KEYS = (
    "type", "format", "items", "enum", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength",
    "maxLength", "pattern", "minItems", "maxItems", "uniqueItems", "multipleOf", "default", "x-nullable",
)  # fmt: skip


def _swagger2_schema(parameter: Mapping[str, Any]) -> dict[str, Any]:
    """A Swagger 2.0 non-body parameter keeps its schema keywords on itself; gather them into a schema."""
    schema = {key: parameter[key] for key in _SWAGGER2_SCHEMA_KEYS if key in parameter}
    if schema.get("type") == "file":
        schema = {"type": "string", "format": "binary"}
    return schema


def _media_kind(media_type: str) -> str:
    if media_type == "application/json" or media_type.endswith("+json") or "/json" in media_type:
        return "json"
    if media_type == "application/x-www-form-urlencoded":
        return "form"
    if media_type.startswith("multipart/"):
        return "multipart"
    if media_type.startswith("text/"):
        return "text"
    return "binary"


def _find_media(content: Mapping[str, Any], media_type: str) -> tuple[str, Any] | None:
    if media_type in content:
        return media_type, content[media_type]
    wildcard = media_type.split("/")[0] + "/*"
    for candidate in (wildcard, "*/*"):
        if candidate in content:
            return media_type, content[candidate]
    return None


def _normalise_base_path(path: str) -> str:
    """``"v3/"`` → ``"/v3"``; ``"/"`` and ``""`` → ``""``."""
    stripped = path.strip("/")
    return f"/{stripped}" if stripped else ""


def _parse_credentials(header: str | None) -> Credentials | None:
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    scheme = scheme.lower()
    value = value.strip()
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return Credentials(scheme=scheme, token=value)
        username, _, password = decoded.partition(":")
        return Credentials(scheme=scheme, username=username, password=password)
    return Credentials(scheme=scheme, token=value)
