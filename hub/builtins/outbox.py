"""Notify provider ``outbox``: writes every message to a JSON file instead of sending it.

For development and tests (read what the hub would have sent), and as a last-resort provider that
never loses a message. Each message lands in ``<directory>/<tenant>/<channel>/<message id>.json``;
the message id is stable across retries, so a retried message replaces its file instead of adding one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from marshmallow import Schema, fields, validate

from hub import hookimpl
from hub.builtins.local_files import atomic_write, directory_health, resolve_in_data_dir
from hub.capabilities import (
    HealthResult,
    Message,
    NotifyResult,
    Provider,
    ProviderContext,
    RecipientResult,
    to_dict,
    utcnow,
)
from hub.errors import PermanentError

# Tenant, channel and message id become path components: nothing that could climb out of the folder.
_SAFE_PATH_COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,199}")


class OutboxSettings(Schema):
    directory = fields.String(load_default="outbox", validate=validate.Length(min=1))
    #: fsync each message file. Off by default: the hub's record of the notification is the source of
    #: truth, and the database does not fsync every commit either (SQLite WAL, synchronous=NORMAL).
    fsync = fields.Boolean(load_default=False)


class Outbox(Provider):
    type_name = "outbox"
    capability = "notify"
    channels = ("email", "sms", "chat")
    settings_schema: ClassVar[type[Schema]] = OutboxSettings
    description = "Writes each message to <directory>/<tenant>/<channel>/<id>.json instead of sending it."

    def __init__(self, name: str, settings: dict[str, Any], context: ProviderContext) -> None:
        super().__init__(name, settings, context)
        self.directory = resolve_in_data_dir(settings["directory"], context.data_dir)

    def message_path(self, message: Message) -> Path:
        for label, value in (("tenant", message.tenant), ("channel", message.channel), ("message id", message.id)):
            if not _SAFE_PATH_COMPONENT.fullmatch(value or ""):
                raise PermanentError(f"outbox: {label} {value!r} cannot be used as a file name")
        return self.directory / message.tenant / message.channel / f"{message.id}.json"

    @hookimpl
    def notify(self, message: Message) -> NotifyResult:
        path = self.message_path(message)
        document = {
            **to_dict(message),
            "provider": self.name,
            "written_at": utcnow().isoformat(),
        }
        atomic_write(path, json.dumps(document, indent=2, ensure_ascii=False).encode("utf-8"), fsync=self.settings["fsync"])
        # Counts only: addresses are personal data and stay out of the logs.
        self.log.info(
            "outbox: wrote %s message %s for %d recipient(s) to %s",
            message.channel,
            message.id,
            len(message.recipients),
            path,
        )
        return NotifyResult(
            [
                RecipientResult(recipient.address, "sent", provider_message_id=f"{message.id}:{index}")
                for index, recipient in enumerate(message.recipients)
            ],
            provider_message_id=message.id,
        )

    @hookimpl
    def health(self) -> HealthResult:
        return directory_health(self.directory, "outbox")


@hookimpl
def register_providers(register: Callable[[type], None]) -> None:
    register(Outbox)
