"""Preparing notifications: templates (Jinja2, sandboxed) and recipients (email-validator, phonenumbers)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from email_validator.syntax import validate_email_local_part
from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from hub.errors import ValidationError
from hub.plugins import TemplateDefinition


@dataclass
class Rendered:
    subject: str | None
    text: str
    html: str | None
    blocks: list[dict[str, Any]] | None


class TemplateLibrary:
    """Templates contributed by plugins (``register_templates``), overridden by hub.yaml's
    ``templates:`` and then by each tenant's own ``templates:``."""

    def __init__(
        self,
        plugin_templates: dict[tuple[str, str], TemplateDefinition],
        config: dict[str, Any],
        stored: Callable[[str], dict[tuple[str, str], TemplateDefinition]] | None = None,
    ) -> None:
        #: The tenant's templates saved through the API (``PUT /templates/<name>``); they win over all.
        self._stored = stored or (lambda tenant: {})
        # StrictUndefined: a missing variable is an error naming it, never a silent blank.
        self._text_env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
        self._html_env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=True)
        self._base = dict(plugin_templates)
        for name, variants in config.get("templates", {}).items():
            for variant in variants:
                self._base[(name, variant["channel"])] = _definition(name, variant, "hub.yaml")
        self._tenants: dict[str, dict[tuple[str, str], TemplateDefinition]] = {}
        for tenant, tenant_config in config.get("tenants", {}).items():
            self._tenants[tenant] = {
                (name, variant["channel"]): _definition(name, variant, f"tenants.{tenant}")
                for name, variants in tenant_config.get("templates", {}).items()
                for variant in variants
            }
        self._compiled: dict[tuple[int, str], Any] = {}

    def names(self, channel: str | None = None, tenant: str | None = None) -> list[str]:
        keys = set(self._base) | set(self._tenants.get(tenant or "", {})) | set(self._stored(tenant) if tenant else {})
        return sorted({name for name, ch in keys if channel is None or ch == channel})

    def get(self, name: str, channel: str, tenant: str | None) -> TemplateDefinition | None:
        stored = self._stored(tenant).get((name, channel)) if tenant else None
        return stored or self._tenants.get(tenant or "", {}).get((name, channel)) or self._base.get((name, channel))

    def describe(self, tenant: str) -> list[dict[str, Any]]:
        """Every template the tenant can use, with the variant that wins and where it comes from."""
        keys = set(self._base) | set(self._tenants.get(tenant, {})) | set(self._stored(tenant))
        views = []
        for name, channel in sorted(keys):
            definition = self.get(name, channel, tenant)
            assert definition is not None
            views.append(
                {
                    "name": name,
                    "channel": channel,
                    "source": definition.source,
                    "subject": definition.subject,
                    "text": definition.text,
                    "html": definition.html,
                    "blocks": definition.blocks,
                    "required": list(definition.required),
                }
            )
        return views

    def check_syntax(self, definition: TemplateDefinition) -> None:
        """Refuse a template that does not compile, naming the part (``text``, ``html``...)."""
        for part in ("subject", "text", "html", "blocks"):
            source = getattr(definition, part)
            if source:
                try:
                    (self._html_env if part == "html" else self._text_env).parse(source)
                except TemplateSyntaxError as error:
                    raise ValidationError({part: [f"template syntax error on line {error.lineno}: {error.message}"]}) from None

    def render(self, name: str, channel: str, data: dict[str, Any], tenant: str | None) -> Rendered:
        definition = self.get(name, channel, tenant)
        if definition is None:
            available = ", ".join(self.names(channel, tenant)) or "none"
            raise ValidationError({"template": [f"no template {name!r} for channel {channel} (available: {available})"]})
        missing = [variable for variable in definition.required if data.get(variable) in (None, "")]
        if missing:
            raise ValidationError(
                {"data": {variable: ["required by template " + name] for variable in missing}},
                f"Template {name!r} needs data.{', data.'.join(missing)}",
            )
        try:
            subject = self._render(definition.subject, data, html=False) if definition.subject else None
            text = self._render(definition.text, data, html=False)
            html = self._render(definition.html, data, html=True) if definition.html else None
            blocks = None
            if definition.blocks and channel == "chat":
                blocks = json.loads(self._render(definition.blocks, data, html=False))
        except UndefinedError as error:
            variable = _undefined_name(error)
            raise ValidationError(
                {"data": {variable: [f"used by template {name!r} ({channel}) but not given"]}},
                f"Template {name!r} needs data.{variable}",
            ) from None
        except (TemplateSyntaxError, SecurityError, json.JSONDecodeError, TypeError, ValueError) as error:
            reason = f"template {name!r} ({channel}) failed to render: {error}"
            raise ValidationError({"template": [reason]}, reason[0].upper() + reason[1:]) from None
        if subject:
            subject = " ".join(subject.split())  # a header must be one line
        return Rendered(subject=subject, text=text.strip(), html=html, blocks=blocks)

    def _render(self, source: str, data: dict[str, Any], html: bool) -> str:
        env = self._html_env if html else self._text_env
        key = (id(env), source)
        template = self._compiled.get(key)
        if template is None:
            template = env.from_string(source)
            self._compiled[key] = template
        return template.render(**data)


def _definition(name: str, variant: dict[str, Any], source: str) -> TemplateDefinition:
    return TemplateDefinition(
        name=name,
        channel=variant["channel"],
        text=variant["text"],
        subject=variant.get("subject"),
        html=variant.get("html"),
        blocks=variant.get("blocks"),
        required=tuple(variant.get("required", ())),
        source=source,
    )


def _undefined_name(error: UndefinedError) -> str:
    # Jinja's message is "'name' is undefined" (or "... has no attribute 'x'").
    message = str(error)
    if "'" in message:
        return message.split("'")[-2] if "attribute" in message else message.split("'")[1]
    return message


# --- recipients --------------------------------------------------------------------------------


@dataclass
class Address:
    """A recipient's address on one channel, or why it has none."""

    index: int
    name: str | None
    address: str | None
    error: str | None = None


def recipient_addresses(
    recipients: list[dict[str, Any]], channel: str, default_region: str
) -> list[Address]:
    """The address of every recipient on ``channel``: emails normalised, phones in E.164."""
    addresses = []
    for index, recipient in enumerate(recipients):
        name = recipient.get("name")
        try:
            if channel == "email":
                value = recipient.get("email")
                if not value:
                    raise ValueError("no email address")
                address = normalise_email(value)
            elif channel == "sms":
                value = recipient.get("phone")
                if not value:
                    raise ValueError("no phone number")
                address = format_phone(value, recipient.get("region") or default_region)
            else:
                address = recipient.get("channel") or recipient.get("address") or "default"
            addresses.append(Address(index, name, address))
        except ValueError as error:
            addresses.append(Address(index, name, None, str(error)))
    return addresses


def normalise_email(value: str) -> str:
    """A valid address, normalised (the domain lower-cased / IDNA-checked), else ValueError.

    email-validator does all the checking; a bulk list shares few domains, so a plain ASCII address
    has its domain validated once (cached) and only its local part checked each time."""
    local, at, domain = value.rpartition("@")
    if not at or not local or not local.isascii() or '"' in local or len(local) > 64 or len(value) > 254:
        return _validate_whole(value)
    try:
        validate_email_local_part(local, allow_smtputf8=False, allow_empty_local=False, quoted_local_part=False)
    except EmailNotValidError as error:
        raise ValueError(f"invalid email address: {error}") from None
    return f"{local}@{_validate_domain(domain)}"


@lru_cache(maxsize=65536)
def _validate_whole(value: str) -> str:
    try:
        # No DNS look-up: the hub must work offline, and deliverability is the provider's to judge.
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as error:
        raise ValueError(f"invalid email address: {error}") from None


@lru_cache(maxsize=4096)
def _validate_domain(domain: str) -> str:
    return _validate_whole(f"postmaster@{domain}").rpartition("@")[2]


@lru_cache(maxsize=65536)
def format_phone(value: str, region: str) -> str:
    try:
        number = phonenumbers.parse(value, region.upper())
    except phonenumbers.NumberParseException as error:
        raise ValueError(f"invalid phone number: {error}") from None
    if not phonenumbers.is_possible_number(number) or not phonenumbers.is_valid_number(number):
        raise ValueError("invalid phone number: not a valid number for its region")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
