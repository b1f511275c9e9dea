"""Store provider ``azure-blob``: files as block blobs in one Azure Storage container (azure-storage-blob).

One ``BlobServiceClient`` (and its ``ContainerClient``) per provider instance, made on first use; both are
thread-safe and share one pooled HTTP session. The SDK's own retries are off: the hub retries with backoff and
fails over, and two retry layers would multiply the wait on an outage.

Uploads are staged blocks and one commit, so a blob appears whole or not at all:

* the stream is read in blocks of ``max_block_size``; a file that ends within ``max_single_put_size`` goes
  up in one ``Put Blob`` (atomic by itself);
* anything longer is sent as ``Put Block`` calls, at most ``max_concurrency`` at a time (memory stays about
  ``max_block_size x (max_concurrency + 2)``), and made visible by one ``Put Block List`` that carries the
  content type, the whole file's MD5 and the metadata -- including the SHA-256 the core computed, which is
  only known once the stream ended. Staged blocks are invisible until that commit: an upload that breaks
  off commits nothing, so a new key stays absent and an existing blob stays as it was. The blocks it staged
  under a new key are dropped (the uncommitted blob deleted); over an existing blob they wait for the next
  commit under the key, which discards them, or for Azure's garbage collection after 7 days.

Consistency: every block (and a single ``Put Blob``) is sent with its MD5 (``validate_content``); Azure
refuses a block whose bytes do not match, and the MD5 it reports back is compared with the one computed here.
Downloads are read in ``download_chunk_size`` ranges, each checked against the MD5 Azure sends for it.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO, ClassVar
from urllib.parse import quote, unquote

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from hub import hookimpl
from hub.capabilities import (
    HealthResult,
    IteratorStream,
    PresignedUpload,
    Provider,
    ProviderContext,
    StoredFile,
    StoredObject,
    UploadStream,
)
from hub.errors import ConfigurationError, HubError, NotFoundError, PermanentError, ProviderError, TransientError
from hub.http import status_error, transport_error

__all__ = ["AzureBlobSettings", "AzureBlobStore", "register_providers"]

_KIB = 1024
_MIB = 1024 * _KIB
SERVICE = "Azure Blob Storage"

#: Metadata names the provider writes on every blob (Azure metadata names must be C# identifiers and the
#: values ASCII: the text values are percent-encoded, the caller's own metadata kept as one JSON document).
META_TENANT = "tenant"
META_CATEGORY = "category"
META_FILENAME = "filename"
META_SHA256 = "sha256"
META_CUSTOM = "hubmetadata"
_HUB_META = frozenset({META_TENANT, META_CATEGORY, META_FILENAME, META_SHA256, META_CUSTOM})

#: Azure's limits: a block is at most 4000 MiB, a single Put Blob at most 5000 MiB, 50,000 blocks per blob.
_MAX_BLOCK = 4000 * _MIB
_MAX_SINGLE_PUT = 5000 * _MIB
_MAX_BLOCKS = 50_000

#: Container names: 3-63 lowercase letters, digits and single hyphens, starting and ending alphanumeric.
_CONTAINER_NAME = r"^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$"


class AzureBlobSettings(Schema):
    """``providers.<name>`` settings of an ``azure-blob`` provider."""

    #: The storage account's connection string (``AccountName=...;AccountKey=...;`` or with a ``BlobEndpoint``).
    connection_string = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1))
    #: Or the account name and key (``account_url`` defaults to ``https://<account_name>.blob.core.windows.net``).
    account_name = fields.String(
        load_default=None, allow_none=True, validate=validate.Regexp(r"^[a-z0-9]{3,24}$|^devstoreaccount1$")
    )
    account_key = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1))
    account_url = fields.Url(load_default=None, allow_none=True, require_tld=False, schemes={"http", "https"})
    container = fields.String(required=True, validate=validate.Regexp(_CONTAINER_NAME, error="not a container name"))
    #: Prepended to every key (``hub/`` puts keys under ``hub/<tenant>/...``).
    prefix = fields.String(load_default="", validate=validate.Regexp(r"^[^\\]*$"))
    #: Bytes per staged block; with ``max_concurrency`` it bounds the memory one upload uses.
    max_block_size = fields.Integer(load_default=4 * _MIB, validate=validate.Range(min=64 * _KIB, max=_MAX_BLOCK))
    #: Files up to this size go up in one Put Blob; longer ones as staged blocks.
    max_single_put_size = fields.Integer(load_default=8 * _MIB, validate=validate.Range(min=0, max=_MAX_SINGLE_PUT))
    #: Blocks of one upload in flight at once.
    max_concurrency = fields.Integer(load_default=4, validate=validate.Range(min=1, max=64))
    #: Bytes per ranged GET of a download (at most 4 MiB keeps Azure's per-range MD5 check possible).
    download_chunk_size = fields.Integer(load_default=4 * _MIB, validate=validate.Range(min=64 * _KIB, max=256 * _MIB))
    #: Send each block's MD5 (Azure refuses corrupted blocks) and check each downloaded range's MD5.
    validate_content = fields.Boolean(load_default=True)
    #: Seconds to wait for each read of an answer (and for the connection, unless ``connect_timeout``).
    timeout = fields.Float(load_default=30.0, validate=validate.Range(min=0, min_inclusive=False, max=600))
    connect_timeout = fields.Float(
        load_default=None, allow_none=True, validate=validate.Range(min=0, min_inclusive=False, max=600)
    )
    #: Create the container on first use when it does not exist (otherwise that is a configuration error).
    create_container = fields.Boolean(load_default=False)

    @validates_schema
    def _md5_ranges(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("validate_content", True) and data.get("download_chunk_size", 0) > 4 * _MIB:
            raise ValidationError(
                {
                    "download_chunk_size": [
                        "at most 4 MiB (4194304) with validate_content: Azure sends no MD5 for longer ranges"
                    ]
                }
            )

    @validates_schema
    def _credentials(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("connection_string"):
            return
        if not data.get("account_name"):
            raise ValidationError({"connection_string": ["set connection_string, or account_name and account_key"]})
        if not data.get("account_key"):
            raise ValidationError({"account_key": ["set account_key with account_name (or a connection_string)"]})


class AzureBlobStore(Provider):
    type_name = "azure-blob"
    capability = "store"
    settings_schema: ClassVar[type[Schema]] = AzureBlobSettings
    env_settings: ClassVar[dict[str, str]] = {
        "connection_string": "AZURE_STORAGE_CONNECTION_STRING",
        "account_name": "AZURE_STORAGE_ACCOUNT",
        "account_key": "AZURE_STORAGE_KEY",
        "container": "AZURE_STORAGE_CONTAINER",
    }
    secret_settings: ClassVar[tuple[str, ...]] = ("connection_string", "account_key")
    description = "Stores files as block blobs in an Azure Storage container (staged blocks, SAS URLs)."

    def __init__(self, name: str, settings: dict[str, Any], context: ProviderContext) -> None:
        super().__init__(name, settings, context)
        prefix = settings["prefix"].strip("/")
        self.prefix = f"{prefix}/" if prefix else ""
        self.container_name: str = settings["container"]
        self._service: Any = None
        self._container: Any = None
        self._client_lock = threading.Lock()
        self._container_ready = not settings["create_container"]

    # --- the client --------------------------------------------------------------------------------

    @property
    def container(self) -> Any:
        """The provider's ``ContainerClient``, made on first use (and the container created if configured)."""
        with self._client_lock:
            if self._container is None:
                self._service = self._make_service()
                self._container = self._service.get_container_client(self.container_name)
            if not self._container_ready:
                self._create_container(self._container)
                self._container_ready = True
            return self._container

    def _make_service(self) -> Any:
        from azure.storage.blob import BlobServiceClient

        settings = self.settings
        options: dict[str, Any] = {
            "retry_total": 0,  # the hub retries and fails over
            "connection_timeout": settings["connect_timeout"] or settings["timeout"],
            "read_timeout": settings["timeout"],
            "max_single_get_size": settings["download_chunk_size"],
            "max_chunk_get_size": settings["download_chunk_size"],
            # What store() sends in one Put Blob, the SDK must send as one too.
            "max_single_put_size": max(settings["max_single_put_size"], 1),
            "user_agent": "integration-hub",
        }
        try:
            if settings["connection_string"]:
                return BlobServiceClient.from_connection_string(settings["connection_string"], **options)
            account_url = settings["account_url"] or f"https://{settings['account_name']}.blob.core.windows.net"
            credential = {"account_name": settings["account_name"], "account_key": settings["account_key"]}
            return BlobServiceClient(account_url, credential=credential, **options)
        except ValueError:
            # The SDK's text may quote the connection string: say what is wrong without it.
            raise ConfigurationError(
                f"{SERVICE}: the connection string or account settings cannot be used (check their format)",
                provider_code="InvalidConnectionString",
            ) from None

    def _create_container(self, container: Any) -> None:
        from azure.core.exceptions import ResourceExistsError

        try:
            container.create_container()
        except ResourceExistsError:
            pass
        except Exception as error:
            raise self._provider_error(error) from None

    def blob_name(self, key: str) -> str:
        """The blob name of ``key``: the prefix, then the key (Azure takes any name up to 1,024 characters)."""
        if not isinstance(key, str) or not key or key.startswith("/") or "\\" in key or "\x00" in key:
            raise PermanentError(f"azure-blob: refusing key {key!r}: keys are relative paths with '/' separators")
        if any(part in ("", ".", "..") for part in key.split("/")):
            raise PermanentError(f"azure-blob: refusing key {key!r}: no empty, '.' or '..' path parts")
        name = self.prefix + key
        if len(name) > 1024:
            raise PermanentError(f"azure-blob: key {key[:60]!r}... is longer than Azure's 1,024 characters")
        return name

    def _blob(self, key: str) -> Any:
        return self.container.get_blob_client(self.blob_name(key))

    # --- store ---------------------------------------------------------------------------------------

    @hookimpl
    def store(self, file: StoredFile, stream: UploadStream) -> StoredFile:
        blob = self._blob(file.key)
        block_size = self.settings["max_block_size"]
        single_put = self.settings["max_single_put_size"]
        whole_md5 = hashlib.md5(usedforsecurity=False)
        pending: list[bytes] = []  # whole blocks read while it is not known yet whether one Put Blob will do
        pending_size = 0
        carry = b""  # bytes past the single-put allowance: the start of the next block
        while True:
            room = single_put - pending_size
            if room >= block_size:
                block = _read_block(stream, block_size)
                whole_md5.update(block)
                if block:
                    pending.append(block)
                    pending_size += len(block)
                if len(block) < block_size:
                    break  # the end of the stream
            else:
                # Less than a block of allowance left: read just past it, to learn whether the file ends there.
                tail = _read_block(stream, room + 1)
                whole_md5.update(tail)
                if len(tail) <= room:
                    pending.append(tail)
                    pending_size += len(tail)
                else:
                    carry = tail
                break
        block = b""  # the blocks live in `pending` only: staged, each is freed
        try:
            if not carry:
                size = self._put_whole(blob, file, stream, b"".join(pending), whole_md5)
            else:
                size = self._put_blocks(blob, file, stream, pending, carry, whole_md5)
        except HubError:
            raise
        except Exception as error:
            raise self._provider_error(error) from None
        self.log.debug("azure-blob: stored %s (%d bytes)", file.key, size)
        return replace(file, size=size, checksum=stream.checksum)

    def _put_whole(self, blob: Any, file: StoredFile, stream: UploadStream, data: bytes, md5: Any) -> int:
        """One Put Blob: atomic by itself; Azure checks the MD5 sent with it and reports the one it stored."""
        from azure.storage.blob import ContentSettings

        digest = md5.digest()
        response = blob.upload_blob(
            data,
            length=len(data),
            overwrite=True,
            content_settings=ContentSettings(content_type=file.content_type, content_md5=bytearray(digest)),
            metadata=self._metadata(file, stream.checksum),
            validate_content=self.settings["validate_content"],
        )
        reported = response.get("content_md5")
        if reported is not None and bytes(reported) != digest:
            self._discard(blob)
            raise TransientError(
                f"{SERVICE} stored {file.key!r} with another MD5 than the bytes sent; it was deleted",
                provider_code="Md5Mismatch",
            )
        return len(data)

    def _put_blocks(
        self, blob: Any, file: StoredFile, stream: UploadStream, first: list[bytes], carry: bytes, md5: Any
    ) -> int:
        """Staged blocks, ``max_concurrency`` in flight, then one commit carrying the content type, MD5 and
        metadata (with the SHA-256, known only now). Nothing is visible under the key before that commit."""
        from azure.storage.blob import BlobBlock, ContentSettings

        block_size = self.settings["max_block_size"]
        upload_id = uuid.uuid4().hex  # block ids unique to this attempt: a concurrent upload cannot mix in
        concurrency = self.settings["max_concurrency"]
        validate_content = self.settings["validate_content"]
        slots = threading.BoundedSemaphore(concurrency)
        block_ids: list[str] = []
        futures: list[concurrent.futures.Future[None]] = []
        size = 0

        def stage(block_id: str, data: bytes) -> None:
            try:
                response = blob.stage_block(block_id, data, length=len(data), validate_content=validate_content)
                reported = response.get("content_md5") if isinstance(response, dict) else None
                if reported is not None and bytes(reported) != hashlib.md5(data, usedforsecurity=False).digest():
                    raise TransientError(
                        f"{SERVICE} acknowledged a block of {file.key!r} with another MD5 than the bytes sent",
                        provider_code="Md5Mismatch",
                    )
            finally:
                slots.release()

        def failed() -> BaseException | None:
            for future in futures:
                if future.done() and future.exception() is not None:
                    return future.exception()
            return None

        executor = concurrent.futures.ThreadPoolExecutor(concurrency, thread_name_prefix=f"azure-{self.name}")
        committed = False
        try:
            queued = list(first)
            first.clear()  # the caller's list must not keep the blocks alive
            while True:
                if queued:
                    block = queued.pop(0)  # read (and hashed) by store() already
                else:
                    block = _read_block(stream, block_size - len(carry))
                    md5.update(block)
                    block, carry = carry + block, b""
                    if not block:
                        break
                block_ids.append(_block_id(upload_id, len(block_ids)))
                if len(block_ids) > _MAX_BLOCKS:
                    raise PermanentError(
                        f"the file needs more than Azure's {_MAX_BLOCKS} blocks of {block_size} bytes: "
                        "raise max_block_size",
                        provider_code="BlockCountExceedsLimit",
                    )
                size += len(block)
                slots.acquire()  # at most `concurrency` blocks in flight (and one being read)
                error = failed()
                if error is not None:
                    slots.release()
                    raise error
                futures.append(executor.submit(stage, block_ids[-1], block))
                del block
            for future in futures:
                future.result()
            executor.shutdown(wait=True)
            blob.commit_block_list(
                [BlobBlock(block_id=block_id) for block_id in block_ids],
                content_settings=ContentSettings(content_type=file.content_type, content_md5=bytearray(md5.digest())),
                metadata=self._metadata(file, stream.checksum),
            )
            committed = True
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
            if not committed and futures:
                self._drop_staged(blob)
        return size

    def _drop_staged(self, blob: Any) -> None:
        """After a failed upload: drop its staged blocks when no committed blob is under the key (deleting an
        uncommitted blob removes them). Over an existing blob they stay invisible until the next commit under
        the key discards them, or Azure's garbage collection does after 7 days; deleting would lose the blob.
        Best effort: a failure here is logged, the upload's own error is what the caller hears."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            blob.get_blob_properties()
            return  # a committed blob (the old version, or this commit if only its answer was lost): keep it
        except ResourceNotFoundError as error:
            if _error_code(error) != "BlobNotFound":
                return
        except Exception:
            return
        try:
            blob.delete_blob()
        except ResourceNotFoundError:
            pass  # nothing staged after all
        except Exception as error:
            self.log.warning(
                "azure-blob: could not drop the staged blocks of a failed upload: %s", type(error).__name__
            )

    def _metadata(self, file: StoredFile, checksum: str | None) -> dict[str, str]:
        metadata = {
            META_TENANT: quote(file.tenant, safe=""),
            META_CATEGORY: quote(file.category, safe=""),
            META_FILENAME: quote(file.filename, safe=""),
            META_CUSTOM: quote(json.dumps(file.metadata, separators=(",", ":"), sort_keys=True), safe=""),
        }
        if checksum:
            metadata[META_SHA256] = checksum
        return metadata

    def _discard(self, blob: Any) -> None:
        try:
            blob.delete_blob()
        except Exception as error:  # reported, but the MD5 mismatch is what the caller needs to hear
            self.log.warning("azure-blob: could not delete a blob after an MD5 mismatch: %s", type(error).__name__)

    # --- reading -------------------------------------------------------------------------------------

    @hookimpl
    def store_read(self, key: str, byte_range: tuple[int, int | None] | None) -> BinaryIO:
        blob = self._blob(key)
        offset: int | None = None
        length: int | None = None
        if byte_range is not None:
            first, last = byte_range
            if first < 0 or (last is not None and last < first):
                raise PermanentError(f"azure-blob: invalid byte range {byte_range!r}")
            offset, length = first, None if last is None else last - first + 1
        try:
            downloader = blob.download_blob(
                offset=offset, length=length, validate_content=self.settings["validate_content"]
            )
        except Exception as error:
            raise self._provider_error(error, key=key) from None
        return IteratorStream(self._chunks(downloader.chunks(), key))

    def _chunks(self, chunks: Iterator[bytes], key: str) -> Iterator[bytes]:
        # The later ranged GETs happen while the core streams the download: their errors become hub errors too.
        from azure.core.exceptions import ResourceModifiedError

        try:
            yield from chunks
        except ResourceModifiedError:
            # The SDK reads every range with If-Match on the first one's ETag: the blob changed since (Azurite
            # also answers 412 for one deleted since; Azure 404, which is a NotFoundError).
            raise TransientError(
                f"{SERVICE}: {key!r} was overwritten or deleted while it was being read",
                provider_code="ConditionNotMet",
            ) from None
        except Exception as error:
            raise self._provider_error(error, key=key) from None

    @hookimpl
    def store_head(self, key: str) -> StoredObject:
        try:
            properties = self._blob(key).get_blob_properties()
        except HubError:
            raise
        except Exception as error:
            raise self._provider_error(error, key=key) from None
        stored = dict(properties.metadata or {})
        try:
            custom = json.loads(unquote(stored[META_CUSTOM])) if META_CUSTOM in stored else None
        except ValueError:
            custom = None
        if not isinstance(custom, dict):
            # A blob written by something else: its own metadata is all there is.
            custom = {name: value for name, value in stored.items() if name not in _HUB_META}
        etag = properties.etag
        return StoredObject(
            key=key,
            size=int(properties.size),
            content_type=properties.content_settings.content_type,
            metadata={str(name): str(value) for name, value in custom.items()},
            checksum=stored.get(META_SHA256),
            etag=etag.strip('"') if isinstance(etag, str) else None,
            updated_at=properties.last_modified,
        )

    def content_md5(self, key: str) -> bytes | None:
        """The whole blob's MD5 as Azure keeps it (``Content-MD5``), or ``None``."""
        try:
            properties = self._blob(key).get_blob_properties()
        except Exception as error:
            raise self._provider_error(error, key=key) from None
        md5 = properties.content_settings.content_md5
        return bytes(md5) if md5 else None

    @hookimpl
    def store_delete(self, key: str) -> bool:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self._blob(key).delete_blob(delete_snapshots="include")
        except ResourceNotFoundError as error:
            if _error_code(error) == "ContainerNotFound":
                raise self._provider_error(error) from None
            return False
        except HubError:
            raise
        except Exception as error:
            raise self._provider_error(error, key=key) from None
        return True

    # --- SAS URLs ------------------------------------------------------------------------------------

    def _sas(self, key: str, expires_in: int, **permissions: bool) -> tuple[str, datetime] | None:
        """The blob's URL with a SAS token (``permissions`` as in ``BlobSasPermissions``), or ``None`` without
        an account key to sign with (a SAS connection string, say)."""
        from azure.storage.blob import BlobSasPermissions, generate_blob_sas

        blob = self._blob(key)
        credential = getattr(self._service, "credential", None)
        account_key = getattr(credential, "account_key", None)
        if not account_key:
            return None
        now = datetime.now(UTC)
        expiry = now + timedelta(seconds=expires_in)
        token = generate_blob_sas(
            account_name=blob.account_name,
            container_name=self.container_name,
            blob_name=blob.blob_name,
            account_key=account_key,
            permission=BlobSasPermissions(**permissions),
            expiry=expiry,
            start=now - timedelta(minutes=5),  # the service's clock may be a little behind ours
            protocol="https" if blob.url.startswith("https:") else "https,http",
        )
        return f"{blob.url}?{token}", expiry

    @hookimpl
    def store_url(self, key: str, expires_in: int) -> str | None:
        signed = self._sas(key, expires_in, read=True)
        return signed[0] if signed else None

    @hookimpl
    def store_upload_url(self, file: StoredFile, expires_in: int) -> PresignedUpload | None:
        # A SAS cannot bind the request's Content-Type, length or metadata: the headers say what to send,
        # and the core confirms the upload with store_head.
        signed = self._sas(file.key, expires_in, create=True, write=True)
        if signed is None:
            return None
        url, expiry = signed
        headers = {"x-ms-blob-type": "BlockBlob", "Content-Type": file.content_type}
        headers.update({f"x-ms-meta-{name}": value for name, value in self._metadata(file, None).items()})
        return PresignedUpload(url=url, method="PUT", headers=headers, expires_at=expiry)

    # --- health and close ----------------------------------------------------------------------------

    @hookimpl
    def health(self) -> HealthResult:
        try:
            self.container.get_container_properties()
        except Exception as error:
            mapped = error if isinstance(error, ProviderError) else self._provider_error(error)
            return HealthResult("error", mapped.message)
        return HealthResult("success", f"{SERVICE}: container {self.container_name!r} reachable")

    @hookimpl
    def close(self) -> None:
        with self._client_lock:
            service, self._service, self._container = self._service, None, None
            self._container_ready = not self.settings["create_container"]
        if service is not None:
            service.close()

    # --- errors --------------------------------------------------------------------------------------

    def _provider_error(self, error: BaseException, *, key: str | None = None) -> ProviderError:
        """The hub error for an azure-core / azure-storage-blob exception. Messages carry Azure's error code,
        never a credential or a SAS (Azure's text for 403s quotes the string it signed: dropped)."""
        from azure.core import exceptions as azure

        if isinstance(error, ProviderError):
            return error
        if isinstance(error, azure.ResourceNotFoundError):
            code = _error_code(error) or "NotFound"
            if code == "ContainerNotFound":
                return ConfigurationError(
                    f"{SERVICE}: container {self.container_name!r} does not exist (create it, or set "
                    "create_container: true)",
                    provider_code=code,
                )
            what = f"{key!r}" if key else "the blob"
            return NotFoundError(f"{SERVICE}: no file stored under {what}", provider_code=code)
        if isinstance(error, azure.HttpResponseError):
            response = getattr(error, "response", None)
            status = int(getattr(error, "status_code", None) or getattr(response, "status_code", 0) or 0)
            code = _error_code(error)
            headers = dict(getattr(response, "headers", None) or {})
            text = str(getattr(error, "message", "") or error).lower()
            if code == "Md5Mismatch" or ("md5" in text and "match" in text):
                # Azure answers 400 Md5Mismatch (Azurite: InvalidOperation, "contentMD5 doesn't match"): bytes
                # damaged on the way; nothing was stored, so another attempt may pass.
                return TransientError(
                    f"{SERVICE} refused bytes whose MD5 did not match what was sent", provider_code="Md5Mismatch"
                )
            if isinstance(error, azure.ClientAuthenticationError) and status not in (401, 403):
                status = 403
            if status == 404:
                return NotFoundError(f"{SERVICE} answered HTTP 404 ({code or 'NotFound'})", provider_code=code)
            if status:
                mapped = status_error(status, service=SERVICE, headers=headers, code=code)
                if mapped is not None:
                    return mapped
            if "mismatch" in str(error).lower() and "md5" in str(error).lower():
                return TransientError(
                    f"{SERVICE}: a downloaded range failed its MD5 check", provider_code="Md5Mismatch"
                )
            return TransientError(f"{SERVICE} call failed ({code or type(error).__name__})", provider_code=code)
        if isinstance(error, azure.ServiceRequestError | azure.ServiceResponseError):
            inner = getattr(error, "inner_exception", None)
            if isinstance(inner, BaseException):
                mapped = transport_error(inner, service=SERVICE, timeout=self.settings["timeout"])
            else:
                mapped = transport_error(error, service=SERVICE, timeout=self.settings["timeout"])
            if isinstance(error, azure.ServiceRequestError) and mapped.provider_code == "connection-dropped":
                # The SDK says the request was not sent: keep "cannot reach".
                return TransientError(f"cannot reach {SERVICE}", provider_code="connection")
            return mapped
        if isinstance(error, azure.AzureError):
            if "md5" in str(error).lower():
                return TransientError(
                    f"{SERVICE}: a downloaded range failed its MD5 check", provider_code="Md5Mismatch"
                )
            return TransientError(f"{SERVICE} call failed ({type(error).__name__})", provider_code=type(error).__name__)
        if isinstance(error, ValueError):
            return ConfigurationError(
                f"{SERVICE} refused the request parameters ({type(error).__name__})", provider_code="ValueError"
            )
        return TransientError(f"{SERVICE} call failed ({type(error).__name__})", provider_code=type(error).__name__)


def _error_code(error: BaseException) -> str | None:
    code = getattr(error, "error_code", None)
    if code:
        return str(getattr(code, "value", code))  # the SDK's StorageErrorCode enum, or a string
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None) or {}
    value = headers.get("x-ms-error-code") if hasattr(headers, "get") else None
    return str(value) if value else None


def _block_id(upload_id: str, index: int) -> str:
    # Every block id of a blob must have the same length (at most 64 bytes): a fixed-width index. The SDK
    # base64-encodes it on the wire (and decodes it in get_block_list).
    return f"{upload_id}-{index:06d}"


def _read_block(stream: BinaryIO, size: int) -> bytes:
    """Up to ``size`` bytes from ``stream`` (fewer only at the end): ``read(n)`` may return short counts."""
    first = stream.read(size)
    if not first or len(first) == size:
        return bytes(first or b"")
    parts = [first]
    got = len(first)
    while got < size:
        chunk = stream.read(size - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


@hookimpl
def register_providers(register: Callable[[type], None]) -> None:
    register(AzureBlobStore)
