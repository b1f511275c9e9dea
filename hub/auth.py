"""API tokens: created per tenant, stored as SHA-256 hashes, listed, revoked and rotated with a grace
period (the old and the new token both work until the old one expires)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import select

from hub.records import ApiToken, Database, new_id, utcnow

TOKEN_PREFIX = "hub_"


def hash_token(token: str) -> str:
    # Tokens are 256 random bits, so a fast unsalted hash is enough: there is nothing to brute-force.
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    def __init__(self, db: Database) -> None:
        self.db = db

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
        now = utcnow()
        with self.db.session() as session:
            row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
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
        return self.create(tenant, name, admin=admin)
