"""Preparing notifications: templates (Jinja2, sandboxed) and recipients (email-validator, phonenumbers)."""

from __future__ import annotations

import contextvars
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, wraps
from typing import Any

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from email_validator.syntax import validate_email_local_part
from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, meta
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from hub.errors import ValidationError
from hub.plugins import TemplateDefinition

#: The most characters one rendered part (subject, text, html, blocks) may have, and any string or list a
#: template builds on the way: a tenant's template must not make the hub hold 20 MB per recipient.
MAX_RENDERED_CHARS = 1_000_000
#: The longest one template may take to render (checked at every call, operator, output and filter).
RENDER_SECONDS = 1.0
#: ``a ** b`` on integers is refused past this many bits of result (a 10 ** 10000000 costs seconds).
MAX_POWER_BITS = 4096
#: String methods and filters whose integer argument is the width of what they build.
_PADDING = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs", "indent"})

_deadline: contextvars.ContextVar[float] = contextvars.ContextVar("hub_render_deadline", default=float("inf"))


class RenderLimitError(SecurityError):
    """A template went past :data:`MAX_RENDERED_CHARS` or :data:`RENDER_SECONDS`."""


class RenderTimeError(RenderLimitError):
    """Past :data:`RENDER_SECONDS`."""


def _check_size(value: Any) -> Any:
    if isinstance(value, str | bytes | list | tuple) and len(value) > MAX_RENDERED_CHARS:
        raise RenderLimitError(f"the template builds a value over {MAX_RENDERED_CHARS:,} characters")
    return value


def _check_time() -> None:
    if time.monotonic() > _deadline.get():
        raise RenderTimeError(f"the template took longer than {RENDER_SECONDS} s to render")


def _check_width(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    if name in _PADDING:
        for value in (*args, *kwargs.values()):
            if isinstance(value, int) and value > MAX_RENDERED_CHARS:
                raise RenderLimitError(f"{name}: a width over {MAX_RENDERED_CHARS:,} characters")


class _TimedList(list):  # type: ignore[type-arg]
    """A list whose iteration reads the render clock every 1,024 items: a loop whose body calls nothing
    and prints nothing (``{% for i in r %}{% for j in r %}{% endfor %}{% endfor %}``) passes no other hook."""

    def __iter__(self) -> Any:
        for index, item in enumerate(list.__iter__(self)):
            if not index & 1023:
                _check_time()
            yield item


def _timed(value: Any, depth: int = 0) -> Any:
    """``value`` with its lists (and ranges) as :class:`_TimedList`, at any depth of the template's data."""
    if isinstance(value, _TimedList) or depth > 32:
        return value
    if isinstance(value, list | tuple | range):
        return _TimedList(_timed(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return {key: _timed(item, depth + 1) for key, item in value.items()}
    return value


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, bounded in size and time through its documented hooks: ``call_binop``
    for the operators that build large values (``intercepted_binops``), ``call`` for every call made by a
    template, ``finalize`` for every ``{{ }}`` output; filters are wrapped with the same checks. Exceeding a
    bound raises :class:`RenderLimitError` (a ``SecurityError``), reported as a 422 like any render error."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=self._finalize, **options)
        self.filters = {name: _bounded_filter(name, function) for name, function in self.filters.items()}

    @staticmethod
    def _finalize(value: Any) -> Any:
        _check_time()
        return _check_size(value)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _check_time()
        if operator == "*":
            for sequence, count in ((left, right), (right, left)):
                if isinstance(sequence, str | bytes | list | tuple) and isinstance(count, int) and len(sequence) * count > MAX_RENDERED_CHARS:
                    raise RenderLimitError(f"the template builds a value over {MAX_RENDERED_CHARS:,} characters")
        elif operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right * abs(left).bit_length() > MAX_POWER_BITS:
            raise RenderLimitError(f"an integer power over {MAX_POWER_BITS} bits")
        elif operator == "+" and isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
            _check_size(range(len(left) + len(right)))  # the size before building it
        return _check_size(super().call_binop(context, operator, left, right))

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 (Jinja's signature)
        _check_time()
        if isinstance(getattr(__obj, "__self__", None), str):
            _check_width(getattr(__obj, "__name__", ""), args, kwargs)
        result = _check_size(super().call(__context, __obj, *args, **kwargs))
        return _TimedList(result) if type(result) in (list, range) else result  # range(): a loop's usual source


def _bounded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(function)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _check_time()
        _check_width(name, args[1:], kwargs)
        result = _check_size(function(*args, **kwargs))
        return _TimedList(result) if type(result) is list else result

    return bounded


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
        self._text_env = BoundedSandbox(undefined=StrictUndefined, autoescape=False)
        self._html_env = BoundedSandbox(undefined=StrictUndefined, autoescape=True)
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
        deadline = _deadline.set(time.monotonic() + RENDER_SECONDS)  # for all the parts together
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
        except Exception as error:
            # Whatever a template raises (1/0, an overflow, a recursive macro, a bad filter argument, a bound
            # passed) is the template's fault or its data's: a 422 naming it, never a 500.
            reason = f"template {name!r} ({channel}) failed to render: {_render_error(error)}"
            raise ValidationError({"template": [reason]}, reason[0].upper() + reason[1:]) from None
        finally:
            _deadline.reset(deadline)
        if subject:
            subject = " ".join(subject.split())  # a header must be one line
        return Rendered(subject=subject, text=text.strip(), html=html, blocks=blocks)

    def check_renders(self, definition: TemplateDefinition) -> None:
        """Refuse a template that cannot render whatever its data (``{{ 1/0 }}``, a recursive macro, a value
        past the bounds): each part is rendered with sample data, every variable it uses (and every declared
        one) set to a string, then to a number; one that renders with either, or fails only for want of an
        attribute or key the sample lacks, depends on its data and is accepted."""
        for part in ("subject", "text", "html", "blocks"):
            source = getattr(definition, part)
            if not source:
                continue
            env = self._html_env if part == "html" else self._text_env
            variables = meta.find_undeclared_variables(env.parse(source)) | set(definition.required)
            failures: list[BaseException] = []
            for sample in ("sample", 1):
                deadline = _deadline.set(time.monotonic() + RENDER_SECONDS)
                try:
                    self._render(source, dict.fromkeys(variables, sample), html=part == "html")
                    break
                except UndefinedError:
                    break
                except RenderTimeError as error:
                    failures = [error]  # another second with other data would not tell more
                    break
                except Exception as error:
                    failures.append(error)
                finally:
                    _deadline.reset(deadline)
            if len(failures) == 2 or (failures and isinstance(failures[0], RenderTimeError)):
                raise ValidationError({part: [f"the template fails to render: {_render_error(failures[0])}"]}, f"Template {part} fails to render")

    def _render(self, source: str, data: dict[str, Any], html: bool) -> str:
        env = self._html_env if html else self._text_env
        key = (id(env), source)
        template = self._compiled.get(key)
        if template is None:
            template = env.from_string(source)
            self._compiled[key] = template
        # Streamed, so that the output is counted (and the clock read) as it grows, not once it is whole.
        pieces: list[str] = []
        size = 0
        for piece in template.generate(**_timed(data)):
            size += len(piece)
            if size > MAX_RENDERED_CHARS:
                raise RenderLimitError(f"the template renders over {MAX_RENDERED_CHARS:,} characters")
            _check_time()
            pieces.append(piece)
        return "".join(pieces)


def _render_error(error: BaseException) -> str:
    if isinstance(error, RecursionError):
        return "too deeply recursive (a macro calling itself?)"
    if isinstance(error, SecurityError | TemplateSyntaxError):
        return str(error)
    return f"{type(error).__name__}: {error}"[:300]


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
