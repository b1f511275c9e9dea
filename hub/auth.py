"""API tokens: created per tenant, stored as SHA-256 hashes, listed, revoked and rotated with a grace
period (the old and the new token both work until the old one expires)."""

from __future__ import annotations

import hashlib
import secrets
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from hub.records import ApiToken, Database, new_id, utcnow

if TYPE_CHECKING:
    from hub.runtime.invalidation import Invalidations

TOKEN_PREFIX = "hub_"


def hash_token(token: str) -> str:
    # Tokens are 256 random bits, so a fast unsalted hash is enough: there is nothing to brute-force.
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    #: A verified token is trusted this long without a query (one per request would be a transaction per
    #: request). Revoking or rotating takes effect at once in this process and, with Redis, in every other one
    #: (hub.runtime.invalidation); without Redis, in another process within this.
    CACHE_SECONDS = 5.0

    def __init__(self, db: Database, invalidations: Invalidations | None = None) -> None:
        self.db = db
        self._verified: dict[str, tuple[float, ApiToken]] = {}
        self.invalidations = invalidations
        if invalidations is not None:
            invalidations.on("tokens", lambda _key: self._verified.clear())

    def _forget_verified(self) -> None:
        if self.invalidations is not None:
            self.invalidations.changed("tokens")
        else:
            self._verified.clear()

    def create(
        self, tenant: str, name: str | None = None, *, admin: bool = False, expires_in: float | None = None
    ) -> tuple[ApiToken, str]:
        """Returns the stored row and the token itself, which is shown once and never stored."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        row = ApiToken(
            id=new_id("tok"),
            tenant=tenant,
            name=name,
            token_hash=hash_token(token),
            prefix=token[: len(TOKEN_PREFIX) + 6],
            admin=admin,
            created_at=utcnow(),
            expires_at=utcnow() + timedelta(seconds=expires_in) if expires_in else None,
        )
        with self.db.session() as session:
            session.add(row)
        return row, token

    def verify(self, token: str) -> ApiToken | None:
        """The token's row if it is valid now (not revoked, not expired), else None."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        return self.verify_hash(hash_token(token))

    def verify_hash(self, token_hash: str) -> ApiToken | None:
        """:meth:`verify` by the token's hash: the console's session keeps the hash, never the token."""
        now = utcnow()
        cached = self._verified.get(token_hash)
        if cached is not None and time.monotonic() - cached[0] < self.CACHE_SECONDS:
            row = cached[1]
            if row.expires_at is None or row.expires_at > now:
                return row
        row = self._verify(token_hash, now)
        if row is None:
            self._verified.pop(token_hash, None)
        else:
            if len(self._verified) > 10_000:
                self._verified.clear()  # bounded: a flood of distinct valid tokens cannot grow it forever
            self._verified[token_hash] = (time.monotonic(), row)
        return row

    def _verify(self, token_hash: str, now: Any) -> ApiToken | None:
        with self.db.session() as session:
            row = session.scalar(select(ApiToken).where(ApiToken.token_hash == token_hash))
            if row is None or row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
                return None
            # Write at most once a minute per token: a write per request would serialise SQLite.
            if row.last_used_at is None or now - row.last_used_at > timedelta(minutes=1):
                row.last_used_at = now
            return row

    def list(self, tenant: str | None = None) -> list[ApiToken]:
        with self.db.session() as session:
            query = select(ApiToken).order_by(ApiToken.created_at)
            if tenant:
                query = query.where(ApiToken.tenant == tenant)
            return list(session.scalars(query))

    def revoke(self, token_id: str) -> bool:
        with self.db.session() as session:
            row = session.get(ApiToken, token_id)
            if row is None or row.revoked_at is not None:
                return False
            row.revoked_at = utcnow()
        self._forget_verified()
        return True

    def rotate(self, token_id: str, grace_seconds: float = 3600) -> tuple[ApiToken, str]:
        """Issue a new token for the same tenant; the old one keeps working for ``grace_seconds``."""
        with self.db.session() as session:
            old = session.get(ApiToken, token_id)
            if old is None or old.revoked_at is not None:
                raise KeyError(token_id)
            expires = utcnow() + timedelta(seconds=grace_seconds)
            if old.expires_at is None or old.expires_at > expires:
                old.expires_at = expires
            tenant, name, admin = old.tenant, old.name, old.admin
        self._forget_verified()
        return self.create(tenant, name, admin=admin)
