"""hub-example: a notify provider that POSTs each message as JSON to an HTTP endpoint.

The running example of ``docs/writing-a-plugin.md``; the whole plugin is this module. :mod:`hub.http` gives it
pooled sessions with timeouts and the hub's mapping of HTTP failures to errors, so the provider is only its
settings, its request and its health check:

* :class:`WebhookNotifier` -- provider type ``webhook-notifier`` (channels email, sms and chat). Each message
  becomes one ``POST <url>`` whose JSON body is the message, with ``Authorization: Bearer <token>`` and
  ``Idempotency-Key: <message id>`` (stable across retries, so the receiver can drop a duplicate).
* :func:`register_providers` and :func:`register_templates` -- the set-up hooks the hub calls when it loads the
  ``example`` entry point (see ``pyproject.toml``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from marshmallow import Schema, fields, validate

from hub import hookimpl
from hub.capabilities import HealthResult, Message, NotifyResult, Provider, ProviderContext, RecipientResult, to_dict
from hub.errors import ConfigurationError
from hub.http import HttpClient, HttpSettings, describe_url

if TYPE_CHECKING:
    import requests

__version__ = "0.1.0"


class WebhookNotifierSettings(HttpSettings):
    """``type: webhook-notifier`` settings; HttpSettings adds ``timeout`` and ``connect_timeout`` (seconds)."""

    url = fields.Url(required=True, require_tld=False, schemes={"http", "https"})
    token = fields.String(required=True, validate=validate.Length(min=1))  # or EXAMPLE_WEBHOOK_TOKEN


class WebhookNotifier(Provider):
    type_name = "webhook-notifier"
    capability = "notify"
    channels = ("email", "sms", "chat")
    settings_schema: ClassVar[type[Schema]] = WebhookNotifierSettings
    env_settings: ClassVar[dict[str, str]] = {"token": "EXAMPLE_WEBHOOK_TOKEN"}
    secret_settings: ClassVar[tuple[str, ...]] = ("token",)
    description = "POSTs each message as JSON to an HTTP endpoint (Bearer token)."

    def __init__(self, name: str, settings: dict[str, Any], context: ProviderContext) -> None:
        super().__init__(name, settings, context)  # no network here: start-up stays fast and works offline
        self.http = HttpClient.from_settings(
            describe_url(settings["url"]),  # errors name host:port, never the URL's path or query
            settings,
            headers={"Authorization": f"Bearer {settings['token']}", "User-Agent": f"hub-example/{__version__}"},
            status_errors={404: ConfigurationError},  # a wrong URL is a setting to fix: try the next provider
        )

    @hookimpl
    def notify(self, message: Message) -> NotifyResult:
        # Raises the hub's error for anything but 2xx; a retry sends the same Idempotency-Key.
        response = self.http.post(self.settings["url"], json=to_dict(message), headers={"Idempotency-Key": message.id})
        # Recipient ids must be unique across sends (delivery webhooks are matched by them): derive them.
        recipients = [RecipientResult(r.address, "sent", f"{message.id}:{i}") for i, r in enumerate(message.recipients)]
        return NotifyResult(recipients, provider_message_id=answer_id(response))

    @hookimpl
    def health(self) -> HealthResult:
        return self.http.probe("HEAD", self.settings["url"])  # the host, the port and the token; nothing sent

    @hookimpl
    def close(self) -> None:
        self.http.close()  # the next call opens new sessions: the hub reuses providers after POST /initialize


def answer_id(response: requests.Response) -> str | None:
    """The endpoint's id for the send, when it answers ``{"id": ...}``."""
    try:
        answer = response.json()
    except ValueError:  # no body, or not JSON: the send still succeeded
        return None
    return str(answer["id"]) if isinstance(answer, dict) and answer.get("id") not in (None, "") else None


# --- set-up hooks (the plugin module) --------------------------------------------------------


@hookimpl
def register_providers(register: Callable[[type], None]) -> None:
    register(WebhookNotifier)


@hookimpl
def register_templates(register: Callable[..., None]) -> None:
    register(
        "example_digest",
        "email",
        subject="{{ title }}: {{ items|length }} update{{ '' if items|length == 1 else 's' }}",
        text="{{ title }}\n\n{% for item in items %}- {{ item }}\n{% endfor %}",
        html="<h2>{{ title }}</h2>\n<ul>\n{% for item in items %}<li>{{ item }}</li>\n{% endfor %}</ul>\n",
        required=("title", "items"),
    )
