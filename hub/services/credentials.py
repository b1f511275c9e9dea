"""Provider credentials per tenant through the API (seed "API Key Management"): encrypted at rest with
``cryptography``'s MultiFernet (keys from ``HUB_CREDENTIAL_KEYS``, comma-separated, the first encrypting: add a new
key first to rotate, drop the old one once everything is re-saved), never returned by any endpoint, every change in
the audit trail.

A change takes effect without a restart: every process re-reads the versions every :attr:`REFRESH_SECONDS` and
drops the tenant's provider instance whose credentials changed, so the next call builds it with the new ones. The
previous version stays readable for a grace period, and a webhook whose signature fails with the new secret is
verified again with the old one: a provider that still signs with the old secret is not refused mid-rotation.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from hub.errors import ConfigError, HubError, NotFound, ValidationError
from hub.http.targets import TargetRefused, url_settings
from hub.records import StoredCredential, utcnow

if TYPE_CHECKING:
    from hub.runtime import Runtime

KEYS_ENV = "HUB_CREDENTIAL_KEYS"


class CredentialsUnavailable(HubError):
    status_code = 503


class CredentialVault:
    REFRESH_SECONDS = 2.0

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._fernet = _fernet(runtime.environ.get(KEYS_ENV, ""))
        self._versions: dict[tuple[str, str], int] = {}
        self._settings: dict[tuple[str, str], dict[str, Any]] = {}
        self._previous: dict[tuple[str, str, int], object] = {}
        self._checked = 0.0
        self._lock = threading.Lock()
        # A change in another process: the next read looks at the versions again (at once with Redis).
        runtime.invalidations.on("credentials", lambda _key: setattr(self, "_checked", 0.0))

    # --- reading (the registry asks on every tenant instance lookup) --------------------------------

    def settings_for(self, tenant: str, provider: str) -> dict[str, Any] | None:
        self._refresh()
        return self._settings.get((tenant, provider))

    def _refresh(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._checked < self.REFRESH_SECONDS:
            return
        with self._lock:
            if not force and time.monotonic() - self._checked < self.REFRESH_SECONDS:
                return
            with self.runtime.db.session() as session:
                rows = session.execute(select(StoredCredential.tenant, StoredCredential.provider, StoredCredential.version)).all()
            current = {(tenant, provider): version for tenant, provider, version in rows}
            for key in set(self._versions) | set(current):
                if self._versions.get(key) != current.get(key):
                    self._settings.pop(key, None)
                    self.runtime.registry.forget(key[1], key[0])  # the next call builds it with the new settings
                    if key in current:
                        self._load(key)
            self._versions = current
            self._checked = time.monotonic()

    def _load(self, key: tuple[str, str]) -> None:
        with self.runtime.db.session() as session:
            row = session.get(StoredCredential, key)
        if row is not None and self._fernet is not None:
            self._settings[key] = json.loads(self._fernet.decrypt(row.ciphertext.encode()))

    def previous_instance(self, tenant: str, provider: str) -> object | None:
        """An instance with the previous credentials while their grace period lasts (webhook verification)."""
        with self.runtime.db.session() as session:
            row = session.get(StoredCredential, (tenant, provider))
        if row is None or row.previous_ciphertext is None or row.previous_until is None or row.previous_until < utcnow() or self._fernet is None:
            return None
        key = (tenant, provider, row.version)
        if key not in self._previous:
            settings = json.loads(self._fernet.decrypt(row.previous_ciphertext.encode()))
            self._previous[key] = self.runtime.registry.build_for(provider, tenant, settings)
        return self._previous[key]

    # --- changing -----------------------------------------------------------------------------------

    def put(self, tenant: str, provider: str, settings: dict[str, Any], by: str, grace_seconds: int) -> dict[str, Any]:
        if self._fernet is None:
            raise CredentialsUnavailable(f"Credentials cannot be stored: set {KEYS_ENV} (Fernet keys, comma-separated)")
        registry = self.runtime.registry
        if provider not in registry.slots:
            raise NotFound(f"No provider named {provider}")
        if not isinstance(settings, dict) or not settings:
            raise ValidationError({"settings": ["an object of the provider's settings"]})
        refused = {}
        for field, url in url_settings(settings, "settings."):
            try:
                self.runtime.tenant_urls.check(url)
            except TargetRefused as error:  # a tenant pointing a provider at the hub's own network
                refused[field] = [str(error)]
        if refused:
            raise ValidationError(refused)
        try:
            registry.build_for(provider, tenant, settings)  # refused here, not at the next call
        except ConfigError as error:
            raise ValidationError({"settings": [str(error)]}) from error
        except HubError as error:
            raise ValidationError({"settings": [str(error)]}) from error
        ciphertext = self._fernet.encrypt(json.dumps(settings).encode()).decode()
        now = utcnow()
        with self.runtime.db.session() as session:
            row = session.get(StoredCredential, (tenant, provider))
            if row is None:
                row = StoredCredential(tenant=tenant, provider=provider, ciphertext=ciphertext, version=1, fields=sorted(settings), updated_at=now, updated_by=by)
                session.add(row)
            else:
                row.previous_ciphertext, row.previous_until = row.ciphertext, now + timedelta(seconds=grace_seconds)
                row.ciphertext, row.version, row.fields, row.updated_at, row.updated_by = ciphertext, row.version + 1, sorted(settings), now, by
            view = row.to_dict()
        self.runtime.audit.add(
            tenant=tenant, capability="api", provider=provider, operation="credentials_set", outcome="success", latency_ms=0.0,
            detail=f"version {view['version']} by {by}: {', '.join(view['fields'])}",
        )
        self._refresh(force=True)
        self.runtime.invalidations.changed("credentials", tenant)
        return view

    def delete(self, tenant: str, provider: str, by: str) -> None:
        with self.runtime.db.session() as session:
            row = session.get(StoredCredential, (tenant, provider))
            if row is None:
                raise NotFound(f"No stored credentials for {provider}")
            session.delete(row)
        self.runtime.audit.add(tenant=tenant, capability="api", provider=provider, operation="credentials_deleted", outcome="success", latency_ms=0.0, detail=f"by {by}")
        self._refresh(force=True)
        self.runtime.invalidations.changed("credentials", tenant)

    def list(self, tenant: str) -> list[dict[str, Any]]:
        with self.runtime.db.session() as session:
            rows = session.scalars(select(StoredCredential).where(StoredCredential.tenant == tenant).order_by(StoredCredential.provider))
            return [row.to_dict() for row in rows]


def _fernet(keys: str) -> Any:
    from cryptography.fernet import Fernet, MultiFernet

    parts = [key.strip() for key in keys.split(",") if key.strip()]
    if not parts:
        return None
    try:
        return MultiFernet([Fernet(key) for key in parts])
    except ValueError as error:
        raise ConfigError(KEYS_ENV, f"not Fernet keys (32 url-safe base64 bytes each): {error}") from None
