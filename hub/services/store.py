"""store: validate an upload, give it a tenant-prefixed key, store it at the first storage provider that
takes it, and serve downloads, URLs, listings and deletes from the provider that holds each file."""

from __future__ import annotations

import base64
import hashlib
import mimetypes
import secrets
import time
from typing import Any

from sqlalchemy import func, select
from werkzeug.utils import secure_filename

from hub.capabilities import StoredFile
from hub.errors import HubError, NoProviderError, NotFound, ProviderError, ValidationError
from hub.records import FileRecord, utcnow
from hub.runtime import Runtime, describe
from hub.schemas import FileUploadSchema, load


class StoreService:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def accept_upload(self, tenant: str, raw: Any, data: bytes | None, idempotency_key: str | None = None) -> dict[str, Any]:
        runtime = self.runtime
        runtime.require_running()
        request = load(FileUploadSchema(), raw)
        if data is None:
            if request["content"] is None:
                raise ValidationError({"content": ["file content is required (multipart 'file' or base64 'content')"]})
            try:
                data = base64.b64decode(request["content"], validate=True)
            except ValueError:
                raise ValidationError({"content": ["not valid base64"]}) from None
        limits = runtime.config["storage_limits"]
        if len(data) > limits["max_file_size"]:
            raise ValidationError({"file": [f"{len(data)} bytes is over the limit of {limits['max_file_size']} bytes"]})
        if not data:
            raise ValidationError({"file": ["the file is empty"]})
        safe_name = secure_filename(request["file_name"]) or "file"
        content_type = (request["content_type"] or mimetypes.guess_type(safe_name)[0] or "application/octet-stream").lower()
        if not _content_type_allowed(content_type, limits["allowed_content_types"]):
            raise ValidationError({"contentType": [f"{content_type} is not accepted; allowed: {', '.join(limits['allowed_content_types'])}"]})
        key = f"{tenant}/{request['category']}/{int(time.time() * 1000)}-{secrets.token_hex(4)}-{safe_name}"
        payload = {"fileName": request["file_name"], "key": key, "size": len(data), "contentType": content_type, "category": request["category"]}
        record, replayed = runtime.ledger.begin(
            "file", tenant, "fileStorage", payload, idempotency_key, lambda done: self.view(self.get(done.id, tenant)), before=lambda: runtime.hit_rate_limit(tenant, "fileStorage")
        )
        if record is None:
            return replayed
        stored = StoredFile(
            key=key,
            tenant=tenant,
            filename=safe_name,
            content_type=content_type,
            size=len(data),
            checksum=hashlib.sha256(data).hexdigest(),
            category=request["category"],
            metadata={**request["metadata"], "tenant": tenant, "original-name": request["file_name"][:200]},
        )
        try:
            call = runtime.calls.store(tenant, stored, data, record_id=record.id)
        except (ProviderError, NoProviderError) as error:
            runtime.ledger.save(record.id, status="failed", error=describe(error), attempt_log=getattr(error, "attempts", []))
            raise
        file_record = FileRecord(
            id=record.id,
            tenant=tenant,
            key=key,
            filename=request["file_name"],
            content_type=content_type,
            size=len(data),
            checksum=stored.checksum,
            category=request["category"],
            file_type=request["file_type"],
            meta=request["metadata"],
            provider=call.provider,
            url=call.result.url if call.result is not None else None,
            created_at=utcnow(),
        )
        with runtime.db.session() as session:
            session.add(file_record)
            runtime.ledger.apply(session, record.id, {"status": "succeeded", "provider": call.provider, "provider_reference": key, "result": {"key": key, "url": file_record.url}, "attempt_log": call.attempts})
        return self.view(file_record)

    def view(self, file_record: FileRecord) -> dict[str, Any]:
        return {"success": True, **file_record.to_dict(download_url=f"/api/integrations/files/{file_record.id}/content")}

    def get(self, file_id: str, tenant: str) -> FileRecord:
        with self.runtime.db.session() as session:
            file_record = session.get(FileRecord, file_id)
        if file_record is None or file_record.tenant != tenant or file_record.deleted_at is not None:
            raise NotFound(f"No file with id {file_id}")
        return file_record

    def list(self, tenant: str, category: str | None = None, limit: int = 50, offset: int = 0) -> tuple[list[FileRecord], int]:
        with self.runtime.db.session() as session:
            query = select(FileRecord).where(FileRecord.tenant == tenant, FileRecord.deleted_at.is_(None))
            if category:
                query = query.where(FileRecord.category == category)
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = list(session.scalars(query.order_by(FileRecord.created_at.desc()).limit(limit).offset(offset)))
        return rows, total

    def download(self, file_id: str, tenant: str) -> tuple[FileRecord, bytes]:
        file_record = self.get(file_id, tenant)
        call = self.runtime.calls.store_read(tenant, file_record.key, provider=file_record.provider)
        return file_record, call.result

    def download_url(self, file_id: str, tenant: str) -> str | None:
        file_record = self.get(file_id, tenant)
        if self.runtime.hook_for(file_record.provider, tenant, "store_url") is None:
            return None
        call = self.runtime.calls.store_url(tenant, file_record.key, self.runtime.config["storage_limits"]["url_expiry"], provider=file_record.provider)
        return call.result

    def metadata_view(self, file_id: str, tenant: str, warn: Any) -> dict[str, Any]:
        """A file's metadata, with a time-limited direct URL when the provider gives one."""
        view = self.view(self.get(file_id, tenant))
        try:
            signed = self.download_url(file_id, tenant)
        except (HubError, ProviderError) as error:
            # The metadata is still worth answering; the file stays downloadable through /content.
            warn("no download URL for %s: %s", file_id, error)
            signed = None
        if signed:
            view["downloadUrl"] = signed
        return view

    def delete(self, file_id: str, tenant: str) -> dict[str, Any]:
        file_record = self.get(file_id, tenant)
        call = self.runtime.calls.store_delete(tenant, file_record.key, provider=file_record.provider)
        with self.runtime.db.session() as session:
            stored = session.get(FileRecord, file_id)
            assert stored is not None
            stored.deleted_at = utcnow()
        return {"success": True, "fileId": file_id, "deleted": True, "existedAtProvider": bool(call.result)}


def _content_type_allowed(content_type: str, allowed: list[str]) -> bool:
    if not allowed:
        return True
    family = content_type.split("/")[0] + "/*"
    return content_type in allowed or family in allowed
