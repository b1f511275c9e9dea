"""store: validate an upload, give it a tenant-prefixed key, stream it to the first storage provider that
takes it, and serve downloads (whole or by byte range), heads, URLs, listings and deletes from the provider
that holds each file. Direct uploads: presign at a provider, then confirm what arrived.

Nothing here holds a whole file: uploads pass through a :class:`~hub.capabilities.UploadStream` (size limit,
SHA-256 and content sniffing on the way), downloads are the provider's file object, bounded to the length
the response promised.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import io
import logging
import mimetypes
import os
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import filetype
from sqlalchemy import func, select, update
from werkzeug.utils import secure_filename

from hub.capabilities import LimitedReader, StoredFile, StoredObject, UploadStream, to_dict
from hub.errors import (
    Conflict,
    Forbidden,
    HubError,
    NoProviderError,
    NotFound,
    NotFoundError,
    PayloadTooLargeError,
    ProviderError,
    ValidationError,
)
from hub.records import FileRecord, Record, utcnow
from hub.runtime import Runtime, describe
from hub.schemas import DirectUploadSchema, FileUploadSchema, load

if TYPE_CHECKING:
    from itsdangerous import URLSafeSerializer

log = logging.getLogger("hub.store")

#: Bytes the content type is sniffed from (all that ``filetype`` looks at).
SNIFF_BYTES = 8192
#: Chunk size when the core itself reads a stored file (confirming a direct upload).
READ_CHUNK = 1024 * 1024
#: A content type that says nothing: the sniffed one, or the file name's, is used instead.
UNKNOWN_TYPE = "application/octet-stream"

#: What an upload's content may be: bytes, a readable binary file object (a request body, a spooled
#: multipart part, a file the Python caller opened), or ``None`` for the base64 ``content`` field.
UploadSource = bytes | bytearray | memoryview | BinaryIO | None

#: Names of one type: what a client may declare for content that sniffs as the other.
_TYPE_ALIASES = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/x-png": "image/png",
    "image/x-icon": "image/vnd.microsoft.icon",
    "audio/x-wav": "audio/wav",
    "audio/wave": "audio/wav",
    "audio/x-flac": "audio/flac",
    "audio/mp3": "audio/mpeg",
    "application/x-zip-compressed": "application/zip",
    "application/x-gzip": "application/gzip",
    "application/x-pdf": "application/pdf",
    "text/xml": "application/xml",
}
#: Formats that are zip archives inside (Office, OpenDocument, Java, EPUB): content sniffed as a zip may be one.
_ZIP_BASED = ("application/vnd.openxmlformats-officedocument.", "application/vnd.oasis.opendocument.", "application/java-archive", "application/epub+zip", "application/vnd.android.package-archive")
#: ISO base media files share one signature (``ftyp``): a sniffer names the brand, the client the use.
_ISO_MEDIA = {"video/mp4", "audio/mp4", "audio/x-m4a", "audio/m4a", "video/quicktime", "video/3gpp", "video/x-m4v"}


@dataclass
class Download:
    """An open download: the provider's stream, bounded to ``length`` bytes starting at ``first``."""

    file: FileRecord
    stream: BinaryIO
    #: ``(first, last)`` inclusive for a partial download, ``None`` for the whole file.
    byte_range: tuple[int, int] | None
    length: int

    def __enter__(self) -> Download:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stream.close()


class StoreService:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        if runtime.config["storage_limits"]["migrate_back"]:
            runtime.jobs.register_periodic(self.migrate_back)

    @property
    def limits(self) -> dict[str, Any]:
        return self.runtime.config["storage_limits"]

    def limits_for(self, category: str) -> dict[str, Any]:
        """The upload limits of ``category``: the shared ones, with what ``storage_limits.categories`` sets."""
        shared = self.limits
        own = shared["categories"].get(category) or {}
        allowed = own.get("allowed_content_types")
        return {
            "max_file_size": own.get("max_file_size") or shared["max_file_size"],
            "allowed_content_types": shared["allowed_content_types"] if allowed is None else allowed,
        }

    # --- uploads through the hub -----------------------------------------------------------------

    def accept_upload(
        self,
        tenant: str,
        raw: Any,
        source: UploadSource,
        idempotency_key: str | None = None,
        *,
        size: int | None = None,
    ) -> dict[str, Any]:
        """Store an upload and record it. ``raw`` holds the camelCase fields of :class:`FileUploadSchema`;
        ``size`` is the length the client announced (a request's ``Content-Length``), when it did."""
        self.runtime.require_running()
        request = load(FileUploadSchema(), raw)
        limit = self.limits_for(request["category"])["max_file_size"]
        if source is None:
            source = _decode_base64(request["content"], limit)
        if isinstance(source, bytes | bytearray | memoryview):
            size = len(source)
            source = io.BytesIO(source)
        if size is not None and size > limit:
            raise PayloadTooLargeError(limit)  # refused before a byte is read
        with UploadStream(source, limit=limit, expected_size=size) as stream:
            return self._upload(tenant, request, stream, idempotency_key)

    def _upload(self, tenant: str, request: dict[str, Any], stream: UploadStream, idempotency_key: str | None) -> dict[str, Any]:
        runtime = self.runtime
        limits = self.limits_for(request["category"])
        head = stream.peek(min(SNIFF_BYTES, limits["max_file_size"] + 1))  # never read ahead far past the limit
        if not head:
            raise ValidationError({"file": ["the file is empty"]})
        safe_name = secure_filename(request["file_name"]) or "file"
        sniffed = filetype.guess_mime(head)
        content_type = self._content_type(request["content_type"], sniffed, safe_name, limits["allowed_content_types"])
        key = _new_key(tenant, request["category"], safe_name)
        payload = {
            "fileName": request["file_name"],
            "key": key,
            "announcedSize": stream.expected_size,
            "contentType": content_type,
            "sniffedType": sniffed,
            "category": request["category"],
        }
        record, replayed = runtime.ledger.begin(
            "file", tenant, "fileStorage", payload, idempotency_key, lambda done: self.view(self.get(done.id, tenant)), before=lambda: runtime.hit_rate_limit(tenant, "fileStorage")
        )
        if record is None:
            return replayed
        stored = _stored_file(tenant, key, safe_name, content_type, request, stream.expected_size)
        try:
            call = runtime.calls.store(tenant, stored, stream, record_id=record.id)
            self._check_stream_was_consumed(tenant, call.provider, key, stream)
        except HubError as error:
            # The stream's own error (too large, cut short) is the client's answer, whatever the provider made of it.
            failure = stream.error or error
            runtime.ledger.fail(record.id, failure, attempt_log=getattr(error, "attempts", []))
            if stream.error is not None:
                raise stream.error from None
            raise
        file_record = FileRecord(
            id=record.id,
            tenant=tenant,
            key=key,
            filename=request["file_name"],
            content_type=content_type,
            size=stream.size,
            checksum=stream.checksum,
            category=request["category"],
            file_type=request["file_type"],
            meta=request["metadata"],
            provider=call.provider,
            url=call.result.url if call.result is not None else None,
            created_at=utcnow(),
        )
        with runtime.db.session() as session:
            session.add(file_record)
            runtime.ledger.apply(session, record.id, {"status": "succeeded", "provider": call.provider, "provider_reference": key, "result": {"key": key, "url": file_record.url, "size": stream.size}, "attempt_log": call.attempts})
        return self.view(file_record)

    def _content_type(self, declared: str | None, sniffed: str | None, safe_name: str, allowed: list[str]) -> str:
        """What the client declared, else what the bytes look like, else what the name says; refused when
        it, or what the content really is, is not an allowed type, and when the content is something else
        than what the declared type or the file name says (a ``.png`` whose bytes are a PDF)."""
        declared = (declared or "").strip().lower() or None
        if declared == UNKNOWN_TYPE:
            declared = None  # "I don't know": the content can say better
        named = (mimetypes.guess_type(safe_name)[0] or "").lower() or None
        claimed = declared or named
        if sniffed and claimed and not _same_content_type(claimed, sniffed):
            said = f"the declared {declared}" if declared else f"{claimed}, as its name {safe_name!r} says"
            raise ValidationError({"contentType": [f"the content is {sniffed}, not {said}"]})
        content_type = (declared or sniffed or named or UNKNOWN_TYPE).lower()
        if not _content_type_allowed(content_type, allowed):
            raise ValidationError({"contentType": [f"{content_type} is not accepted; allowed: {', '.join(allowed)}"]})
        if sniffed and sniffed != content_type and not _content_type_allowed(sniffed, allowed):
            # A declared image/png whose bytes are an executable.
            raise ValidationError({"contentType": [f"the content is {sniffed}, which is not accepted; allowed: {', '.join(allowed)}"]})
        return content_type

    def _check_stream_was_consumed(self, tenant: str, provider: str, key: str, stream: UploadStream) -> None:
        """A provider that returned success must have read the whole stream without an error."""
        if stream.finished and stream.error is None:
            return
        with contextlib.suppress(HubError):  # whatever it kept is not the file: do not leave it behind
            self.runtime.calls.store_delete(tenant, key, provider=provider)
        if stream.error is not None:
            raise stream.error
        raise NoProviderError(f"storage provider {provider!r} returned before reading the whole upload ({stream.size} bytes read)")

    # --- direct uploads (presigned at the provider) ------------------------------------------------

    def start_direct_upload(self, tenant: str, raw: Any, idempotency_key: str | None = None) -> dict[str, Any]:
        """Presign an upload at the first ``fileStorage`` provider that can, for the client to send the
        bytes there; :meth:`complete_direct_upload` records the file once they arrived."""
        runtime = self.runtime
        runtime.require_running()
        request = load(DirectUploadSchema(), raw)
        limits = self.limits_for(request["category"])
        if request["size"] > limits["max_file_size"]:
            raise PayloadTooLargeError(limits["max_file_size"])
        safe_name = secure_filename(request["file_name"]) or "file"
        content_type = self._content_type(request["content_type"], None, safe_name, limits["allowed_content_types"])
        providers = [name for name in runtime.registry.service_providers("fileStorage", tenant) if runtime.hook_for(name, tenant, "store_upload_url")]
        if not providers:
            raise Conflict("No storage provider of this tenant can take direct uploads: upload through POST /files")
        key = _new_key(tenant, request["category"], safe_name)
        payload = {
            "fileName": request["file_name"],
            "key": key,
            "announcedSize": request["size"],
            "contentType": content_type,
            "category": request["category"],
            "fileType": request["file_type"],
            "metadata": request["metadata"],
        }
        record, replayed = runtime.ledger.begin("file", tenant, "fileStorage", payload, idempotency_key, self._direct_view, before=lambda: runtime.hit_rate_limit(tenant, "fileStorage"))
        if record is None:
            return replayed
        stored = _stored_file(tenant, key, safe_name, content_type, request, request["size"])
        expires_in = self.limits["url_expiry"]
        try:
            call = runtime.calls.store_upload_url(tenant, stored, expires_in, providers=providers, record_id=record.id)
        except HubError as error:
            runtime.ledger.fail(record.id, error)
            raise
        if call.result is None:
            runtime.ledger.save(record.id, status="failed", error=f"{call.provider} gave no upload URL", attempt_log=call.attempts)
            raise Conflict(f"Storage provider {call.provider!r} cannot presign this upload: upload through POST /files")
        upload = to_dict(call.result)
        upload["expiresAt"] = upload.pop("expires_at") or (utcnow() + timedelta(seconds=expires_in)).isoformat()
        saved = runtime.ledger.save(record.id, status="awaiting_upload", provider=call.provider, provider_reference=key, result={"upload": upload}, attempt_log=call.attempts)
        return self._direct_view(saved)

    def complete_direct_upload(self, upload_id: str, tenant: str) -> dict[str, Any]:
        """Confirm a direct upload with the provider (``store_head``), read it once to compute its SHA-256 and
        sniff its type, and record the file; an upload over the limit or of a refused type is deleted."""
        runtime = self.runtime
        runtime.require_running()
        record = runtime.ledger.get(upload_id, tenant, "file")
        if record.status == "succeeded":
            return self.view(self.get(record.id, tenant))  # completing twice answers the same
        if record.status != "awaiting_upload":
            raise Conflict(f"Upload {upload_id} is {record.status}, not awaiting its content")
        payload, provider = record.payload, str(record.provider)
        key = payload["key"]
        try:
            head = runtime.calls.store_head(tenant, key, provider=provider).result
        except NotFoundError:
            raise Conflict(f"Nothing was uploaded for {upload_id} yet: send the content to the upload URL first") from None
        limits = self.limits_for(payload["category"])
        limit = limits["max_file_size"]
        try:
            if head.size > limit:
                raise PayloadTooLargeError(limit)
            size, checksum, sniffed = self._read_back(tenant, key, provider, limit)
            content_type = self._content_type(payload["contentType"], sniffed, secure_filename(payload["fileName"]) or "file", limits["allowed_content_types"])
        except ValidationError as refused:
            runtime.calls.store_delete(tenant, key, provider=provider)
            runtime.ledger.save(record.id, status="failed", error=describe(refused))
            raise
        file_record = FileRecord(
            id=record.id,
            tenant=tenant,
            key=key,
            filename=payload["fileName"],
            content_type=content_type,
            size=size,
            checksum=checksum,
            category=payload["category"],
            file_type=payload["fileType"],
            meta=payload["metadata"],
            provider=provider,
            url=None,
            created_at=utcnow(),
        )
        with runtime.db.session() as session:
            session.add(file_record)
            runtime.ledger.apply(session, record.id, {"status": "succeeded", "result": {**(record.result or {}), "key": key, "size": size, "etag": head.etag}})
        return self.view(file_record)

    def _read_back(self, tenant: str, key: str, provider: str, limit: int) -> tuple[int, str, str | None]:
        """Size, SHA-256 and sniffed type of a stored object, read once in chunks."""
        opened = self.runtime.calls.store_read(tenant, key, None, provider=provider).result
        digest = hashlib.sha256()
        size = 0
        head = b""
        try:
            while chunk := opened.read(READ_CHUNK):
                if len(head) < SNIFF_BYTES:
                    head += chunk[: SNIFF_BYTES - len(head)]
                digest.update(chunk)
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLargeError(limit)
        finally:
            opened.close()
        return size, digest.hexdigest(), filetype.guess_mime(head) if head else None

    def _direct_view(self, record: Record) -> dict[str, Any]:
        if record.status == "succeeded":
            return self.view(self.get(record.id, record.tenant))
        payload = record.payload
        return {
            "success": True,
            "uploadId": record.id,
            "fileId": record.id,
            "fileName": payload["fileName"],
            "fileKey": payload["key"],
            "contentType": payload["contentType"],
            "status": record.status,
            "provider": record.provider,
            "upload": (record.result or {}).get("upload"),
            "completeUrl": f"/api/integrations/files/uploads/{record.id}/complete",
        }

    # --- reading ---------------------------------------------------------------------------------

    def view(self, file_record: FileRecord) -> dict[str, Any]:
        return {"success": True, **file_record.to_dict(download_url=f"/api/integrations/files/{file_record.id}/content")}

    def get(self, file_id: str, tenant: str) -> FileRecord:
        with self.runtime.db.session() as session:
            file_record = session.get(FileRecord, file_id)
        if file_record is None or file_record.tenant != tenant or file_record.deleted_at is not None:
            raise NotFound(f"No file with id {file_id}")
        return file_record

    def list(self, tenant: str, category: str | None = None, limit: int = 50, offset: int = 0, *, prefix: str | None = None, provider: str | None = None) -> tuple[list[FileRecord], int]:
        """The tenant's files, newest first, and how many match. ``prefix`` matches keys after the tenant's part
        (``invoices/`` or ``invoices/17``): a tenant never lists another's keys, whatever the prefix says."""
        with self.runtime.db.session() as session:
            query = select(FileRecord).where(FileRecord.tenant == tenant, FileRecord.deleted_at.is_(None))
            if category:
                query = query.where(FileRecord.category == category)
            if prefix:
                query = query.where(FileRecord.key.startswith(f"{tenant}/{prefix}", autoescape=True))
            if provider:
                query = query.where(FileRecord.provider == provider)
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = list(session.scalars(query.order_by(FileRecord.created_at.desc()).limit(limit).offset(offset)))
        return rows, total

    def open(self, file_record: FileRecord, byte_range: tuple[int, int] | None = None) -> Download:
        """Open the file's content (or the inclusive ``byte_range``, already checked against its size) at
        the provider that holds it. The caller reads the stream in chunks and closes it."""
        if byte_range is not None:
            first, last = byte_range
            if not 0 <= first <= last < file_record.size:
                raise ValidationError({"range": [f"bytes {first}-{last} are outside the file's {file_record.size} bytes"]})
        call = self.runtime.calls.store_read(file_record.tenant, file_record.key, byte_range, provider=file_record.provider)
        length = file_record.size if byte_range is None else byte_range[1] - byte_range[0] + 1
        # Never more than the response promised, whatever the provider sends.
        return Download(file_record, LimitedReader(call.result, length), byte_range, length)

    def download(self, file_id: str, tenant: str, byte_range: tuple[int, int] | None = None) -> Download:
        return self.open(self.get(file_id, tenant), byte_range)

    def head(self, file_record: FileRecord) -> StoredObject:
        """What the provider holds under the file's key (``NotFoundError`` when it is gone)."""
        return self.runtime.calls.store_head(file_record.tenant, file_record.key, provider=file_record.provider).result

    def verification(self, file_record: FileRecord) -> dict[str, Any]:
        """The file as its provider reports it, and whether that matches the record."""
        try:
            head = self.head(file_record)
        except NotFoundError:
            return {"exists": False, "intact": False}
        intact = head.size == file_record.size and head.checksum in (None, file_record.checksum)
        updated = head.updated_at.astimezone(UTC).isoformat().replace("+00:00", "Z") if isinstance(head.updated_at, datetime) else None
        return {"exists": True, "intact": intact, "size": head.size, "contentType": head.content_type, "checksum": head.checksum, "etag": head.etag, "updatedAt": updated}

    def download_url(self, file_id: str, tenant: str) -> str:
        """A time-limited URL for the file: the provider's presigned one where it has them, else the hub's own
        signed URL (a path under the API, to join to the hub's address; see :meth:`signed_download`)."""
        file_record = self.get(file_id, tenant)
        expires_in = self.limits["url_expiry"]
        if self.runtime.hook_for(file_record.provider, tenant, "store_url") is not None:
            presigned = self.runtime.calls.store_url(tenant, file_record.key, expires_in, provider=file_record.provider).result
            if presigned:
                return presigned
        return self.signed_download(file_record, expires_in)

    # --- the hub's own signed download URLs (providers without presigned URLs: local disk) ------------

    @cached_property
    def _url_signer(self) -> URLSafeSerializer:
        from itsdangerous import URLSafeSerializer

        return URLSafeSerializer(self._url_signing_key(), salt="hub.files.download")

    def _url_signing_key(self) -> str:
        configured = self.limits["url_signing_key"]
        if configured:
            return configured
        path = Path(self.runtime.config["data_dir"]) / "url-signing.key"
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            pass
        key = secrets.token_urlsafe(48)
        try:  # the first process to get here writes it; the others read what it wrote
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            time.sleep(0.05)
            return path.read_text().strip()
        with os.fdopen(descriptor, "w") as out:
            out.write(key)
        return key

    def signed_download(self, file_record: FileRecord, expires_in: int) -> str:
        """``/api/integrations/files/<id>/download?token=…``: downloads the file without an API token until
        ``expires_in`` seconds from now. The token names the file, its tenant and the expiry, signed with
        ``storage_limits.url_signing_key``: an altered or expired URL is refused with 403."""
        token = self._url_signer.dumps({"f": file_record.id, "t": file_record.tenant, "e": int(time.time()) + expires_in})
        return f"/api/integrations/files/{file_record.id}/download?token={token}"

    def verify_download(self, file_id: str, token: str) -> FileRecord:
        """The file a signed download URL names (:meth:`signed_download`), or :class:`Forbidden`."""
        from itsdangerous import BadSignature

        try:
            claims = self._url_signer.loads(token)
        except BadSignature:
            raise Forbidden("This download URL is not valid: it was altered or not made by this hub") from None
        if not isinstance(claims, dict) or claims.get("f") != file_id or not isinstance(claims.get("e"), int):
            raise Forbidden("This download URL is not valid for this file")
        if claims["e"] < time.time():
            raise Forbidden("This download URL has expired: ask for the file's metadata again for a new one")
        return self.get(file_id, str(claims.get("t")))

    def metadata_view(self, file_id: str, tenant: str, warn: Any, *, verify: bool = False) -> dict[str, Any]:
        """A file's metadata, with a time-limited direct URL when the provider gives one, and with
        ``verify`` what the provider holds (``storage``)."""
        file_record = self.get(file_id, tenant)
        view = self.view(file_record)
        try:
            signed = self.download_url(file_id, tenant)
        except (HubError, ProviderError) as error:
            # The metadata is still worth answering; the file stays downloadable through /content.
            warn("no download URL for %s: %s", file_id, error)
            signed = None
        if signed:
            view["downloadUrl"] = signed
        if verify:
            view["storage"] = self.verification(file_record)
        return view

    # --- moving files back to the first provider (after a failover) --------------------------------

    def migrate(self, tenant: str | None = None, limit: int = 100) -> dict[str, Any]:
        """Move up to ``limit`` files that live elsewhere than their tenant's first ``fileStorage`` provider (a
        failover put them on the next, local disk last) back to it: read from where they are, stored under the
        same key, checked against the recorded size and SHA-256, then the record switched and the old copy
        deleted. Until the switch, downloads read the old copy; after it, the new one. Stops at the first
        provider failure (it is still down: the next run tries again). Returns counts and the moved file ids."""
        runtime = self.runtime
        report: dict[str, Any] = {"moved": [], "failed": [], "remaining": 0}
        with runtime.db.session() as session:
            tenants = [tenant] if tenant else list(session.scalars(select(FileRecord.tenant).where(FileRecord.deleted_at.is_(None)).distinct()))
        for name in tenants:
            providers = runtime.registry.service_providers("fileStorage", name)
            if not providers:
                continue
            target = providers[0]
            with runtime.db.session() as session:
                waiting = select(FileRecord).where(FileRecord.tenant == name, FileRecord.deleted_at.is_(None), FileRecord.provider != target)
                candidates = list(session.scalars(waiting.order_by(FileRecord.created_at).limit(max(limit - len(report["moved"]), 0))))
                report["remaining"] += session.scalar(select(func.count()).select_from(waiting.subquery())) or 0
            for file_record in candidates:
                try:
                    self._move(file_record, target)
                except (HubError, ProviderError) as error:
                    report["failed"].append({"fileId": file_record.id, "error": describe(error)})
                    log.warning("could not move %s to %s: %s", file_record.id, target, describe(error))
                    break  # the target (or the source) is failing: leave the rest for the next run
                report["moved"].append(file_record.id)
        report["remaining"] -= len(report["moved"])
        return report

    def migrate_back(self) -> None:
        """The periodic job (``storage_limits.migrate_back: true``): a batch a minute."""
        report = self.migrate(limit=20)
        if report["moved"] or report["failed"]:
            log.info("moved %d file(s) back to their first storage provider; %d left", len(report["moved"]), report["remaining"])

    def _move(self, file_record: FileRecord, target: str) -> None:
        runtime, tenant, source = self.runtime, file_record.tenant, file_record.provider
        reader = runtime.calls.store_read(tenant, file_record.key, None, provider=source).result
        stored = StoredFile(
            key=file_record.key,
            tenant=tenant,
            filename=secure_filename(file_record.filename) or "file",
            content_type=file_record.content_type,
            category=file_record.category,
            metadata={**(file_record.meta or {}), "tenant": tenant, "original-name": file_record.filename[:200]},
            size=file_record.size,
        )
        try:
            with UploadStream(reader, expected_size=file_record.size) as stream:
                call = runtime.calls.store(tenant, stored, stream, providers=[target], record_id=file_record.id)
                intact = stream.finished and stream.error is None and stream.size == file_record.size and stream.checksum == file_record.checksum
        finally:
            reader.close()
        if not intact:
            with contextlib.suppress(HubError, ProviderError):
                runtime.calls.store_delete(tenant, file_record.key, provider=target)
            raise NoProviderError(f"the copy of {file_record.id} read from {source} does not match its recorded size and SHA-256")
        with runtime.db.session() as session:
            # Only if nothing else moved or deleted it meanwhile.
            switched = session.execute(
                update(FileRecord)
                .where(FileRecord.id == file_record.id, FileRecord.provider == source, FileRecord.deleted_at.is_(None))
                .values(provider=target, url=call.result.url if call.result is not None else None)
            ).rowcount
        if not switched:
            with contextlib.suppress(HubError, ProviderError):
                runtime.calls.store_delete(tenant, file_record.key, provider=target)
            return
        try:
            runtime.calls.store_delete(tenant, file_record.key, provider=source)
        except (HubError, ProviderError) as error:  # the file is safe at the target; the old copy is only clutter
            log.warning("moved %s to %s but could not delete the copy at %s: %s", file_record.id, target, source, describe(error))

    # --- deleting --------------------------------------------------------------------------------

    def delete(self, file_id: str, tenant: str) -> dict[str, Any]:
        file_record = self.get(file_id, tenant)
        call = self.runtime.calls.store_delete(tenant, file_record.key, provider=file_record.provider)
        with self.runtime.db.session() as session:
            stored = session.get(FileRecord, file_id)
            assert stored is not None
            stored.deleted_at = utcnow()
        return {"success": True, "fileId": file_id, "deleted": True, "existedAtProvider": bool(call.result)}


#: The longest file-name part of a key: file systems take 255 bytes per name, and a provider may add a
#: suffix of its own (local disk's ``.json`` sidecar); the original name is kept in the file's record.
KEY_NAME_BYTES = 160


def _new_key(tenant: str, category: str, safe_name: str) -> str:
    if len(safe_name) > KEY_NAME_BYTES:  # secure_filename's output is ASCII: characters are bytes
        stem, dot, extension = safe_name.rpartition(".")
        extension = extension[:20] if dot and stem else ""
        safe_name = safe_name[: KEY_NAME_BYTES - len(extension) - 1].rstrip(".") + ("." + extension if extension else "")
    return f"{tenant}/{category}/{int(time.time() * 1000)}-{secrets.token_hex(4)}-{safe_name}"


def _decode_base64(content: str | None, limit: int) -> bytes:
    if content is None:
        raise ValidationError({"content": ["file content is required (multipart 'file', a raw body, or base64 'content')"]})
    if len(content) // 4 * 3 > limit + 3:
        raise PayloadTooLargeError(limit)  # refused before decoding
    try:
        return base64.b64decode(content, validate=True)
    except (ValueError, binascii.Error):
        raise ValidationError({"content": ["not valid base64"]}) from None


def _stored_file(tenant: str, key: str, safe_name: str, content_type: str, request: dict[str, Any], size: int | None) -> StoredFile:
    """What the provider is told about a new file (the caller's metadata plus the tenant and original name)."""
    return StoredFile(
        key=key,
        tenant=tenant,
        filename=safe_name,
        content_type=content_type,
        category=request["category"],
        metadata={**request["metadata"], "tenant": tenant, "original-name": request["file_name"][:200]},
        size=size,
    )


def _same_content_type(claimed: str, sniffed: str) -> bool:
    """Whether content sniffed as ``sniffed`` may be what the client (or the file name) calls ``claimed``."""
    claimed, sniffed = _TYPE_ALIASES.get(claimed, claimed), _TYPE_ALIASES.get(sniffed, sniffed)
    if claimed == sniffed:
        return True
    if sniffed == "application/zip" and claimed.startswith(_ZIP_BASED):
        return True
    return claimed in _ISO_MEDIA and sniffed in _ISO_MEDIA


def _content_type_allowed(content_type: str, allowed: list[str]) -> bool:
    if not allowed:
        return True
    family = content_type.split("/")[0] + "/*"
    return content_type in allowed or family in allowed
