"""Store provider ``gcs``: files in a Google Cloud Storage bucket, with the official google-cloud-storage SDK.

* **Uploads** are resumable uploads (``Blob.open("wb")``): the stream is copied in bounded pieces into the
  SDK's writer, which sends one ``chunk_size`` chunk (a multiple of 256 KiB) at a time; memory stays about
  two chunks whatever the file's size. The object appears only when the last chunk finalises the session;
  an upload that breaks off is cancelled (the session is deleted), so nothing is visible under the key and
  an earlier object there stays as it was.
* **Consistency**: the hub's metadata (tenant, category, file name, the caller's fields) goes with the
  upload itself. While copying, the provider computes the CRC32C of the bytes it read; once the object is
  finalised it PATCHes the core's SHA-256 into the metadata (known only at the end of the stream) and
  compares the size and CRC32C GCS reports in that answer with its own. A mismatch, or a PATCH that fails,
  deletes the object and raises ``TransientError`` (the core retries).
* **Downloads** are ranged GETs of at most ``chunk_size`` bytes each, pinned to the object's generation
  (an overwrite during a download fails it rather than mixing two versions); a whole-file download is
  checked against the stored CRC32C at its end.
* **Signed URLs** (V4) for GET and for a PUT with the content type and metadata bound, when the
  credentials can sign (a service-account key); ``None`` otherwise.

One ``storage.Client`` per provider instance, made on first use under a lock; its HTTP session (a
``requests`` session with a connection pool) is shared by the worker threads, and every call makes its own
``Blob`` objects. The SDK's own retries are off (``retry=None``): the hub retries with backoff and fails over.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO, ClassVar

from marshmallow import Schema, ValidationError, fields, validate, validates

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
from hub.errors import (
    ConfigurationError,
    HubError,
    NotFoundError,
    PermanentError,
    ProviderError,
    TransientError,
)
from hub.http import parse_retry_after, status_error, transport_error

__all__ = ["GcsSettings", "GcsStore", "register_providers"]

KIB = 1024
MIB = 1024 * KIB
#: GCS resumable uploads take chunks in multiples of 256 KiB.
CHUNK_MULTIPLE = 256 * KIB
#: Bytes read from the upload stream per ``read()``: bounded, and small next to a chunk.
COPY_BUFFER = 1 * MIB
#: Pieces handed to the core's reader from a downloaded chunk (slicing bytes costs a copy per piece).
READ_PIECE = 256 * KIB
#: V4 signed URLs last at most seven days.
MAX_SIGNED_SECONDS = 7 * 24 * 3600
#: Where signed URLs point when no ``api_endpoint`` is configured.
DEFAULT_ENDPOINT = "https://storage.googleapis.com"

#: Object metadata the hub writes for itself; the caller's own fields are kept under their names.
META_TENANT = "hub-tenant"
META_CATEGORY = "hub-category"
META_FILENAME = "hub-filename"
META_SHA256 = "hub-sha256"
RESERVED_METADATA = frozenset({META_TENANT, META_CATEGORY, META_FILENAME, META_SHA256})

_BUCKET_NAME = r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$"


class GcsSettings(Schema):
    """``providers.<name>`` settings of a ``gcs`` provider."""

    #: The bucket files go to (env ``GCS_BUCKET``).
    bucket = fields.String(required=True, validate=validate.Regexp(_BUCKET_NAME, error="not a valid GCS bucket name"))
    #: The Google Cloud project (env ``GOOGLE_CLOUD_PROJECT``): needed to create the bucket; else optional.
    project = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1))
    #: A credentials JSON file (a service-account key signs URLs); absent: Application Default Credentials.
    credentials_file = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1))
    #: Another JSON API endpoint: an emulator (``http://127.0.0.1:4443``) or a private endpoint.
    api_endpoint = fields.Url(load_default=None, allow_none=True, require_tld=False, schemes={"http", "https"})
    #: Send no credentials (an emulator). Default: anonymous when ``api_endpoint`` is set without a credentials file.
    anonymous = fields.Boolean(load_default=None, allow_none=True)
    #: Bytes per resumable-upload chunk and per download request: a multiple of 256 KiB.
    chunk_size = fields.Integer(load_default=8 * MIB, validate=validate.Range(min=CHUNK_MULTIPLE, max=1024 * MIB))
    #: Seconds each HTTP request may take (connect and read).
    timeout = fields.Float(load_default=60.0, validate=validate.Range(min=0.1, max=600))
    #: Prepended to every key in the bucket (``hub/``): several hubs, or other data, can share a bucket.
    prefix = fields.String(load_default="", validate=validate.Regexp(r"^(?!/)[^\x00\r\n]*$", error="no leading '/'"))
    #: Create the bucket on first use when it does not exist (needs ``project`` and storage.buckets.create).
    create_bucket = fields.Boolean(load_default=False)
    #: Where a created bucket lives (GCS's default, US multi-region, when absent).
    location = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1))

    @validates("chunk_size")
    def _chunk_multiple(self, value: int, **_: Any) -> None:
        if value % CHUNK_MULTIPLE:
            raise ValidationError(f"must be a multiple of 256 KiB ({CHUNK_MULTIPLE} bytes), e.g. {8 * MIB}")


class GcsStore(Provider):
    type_name = "gcs"
    capability = "store"
    settings_schema: ClassVar[type[Schema]] = GcsSettings
    env_settings: ClassVar[dict[str, str]] = {
        "bucket": "GCS_BUCKET",
        "project": "GOOGLE_CLOUD_PROJECT",
        "credentials_file": "GOOGLE_APPLICATION_CREDENTIALS",
        "api_endpoint": "STORAGE_EMULATOR_HOST",
    }
    secret_settings: ClassVar[tuple[str, ...]] = ("credentials_file",)
    description = "Stores files in a Google Cloud Storage bucket (resumable uploads, V4 signed URLs)."

    def __init__(self, name: str, settings: dict[str, Any], context: ProviderContext) -> None:
        super().__init__(name, settings, context)
        self.bucket_name: str = settings["bucket"]
        self.prefix: str = settings["prefix"]
        self.chunk_size: int = settings["chunk_size"]
        self.timeout: float = settings["timeout"]
        self.endpoint: str | None = settings["api_endpoint"].rstrip("/") if settings["api_endpoint"] else None
        anonymous = settings["anonymous"]
        self.anonymous: bool = (
            bool(anonymous)
            if anonymous is not None
            else (self.endpoint is not None and not settings["credentials_file"])
        )
        self._client: Any = None
        self._signer: Any = None  # the client's credentials
        self._client_lock = threading.Lock()
        self._bucket_ready = not settings["create_bucket"]

    # --- the client ------------------------------------------------------------------------------

    def storage_client(self) -> Any:
        """The provider's ``storage.Client``, made on first use (no request is sent to make it)."""
        with self._client_lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self) -> Any:
        from google.cloud import storage

        credentials = self._signer = self._credentials()
        options = {"api_endpoint": self.endpoint} if self.endpoint else None
        try:
            # project=None (not omitted) keeps the SDK from looking for a default project on the network.
            client = storage.Client(project=self.settings["project"], credentials=credentials, client_options=options)
        except Exception as error:
            raise self._error(error, "making the client") from None
        if getattr(client, "_bucket_metadata_cache", None) is not None:
            # Recent SDKs fetch the bucket's metadata in a background thread, for trace attributes only: a
            # GET the hub does not control (with the SDK's own retries, needing storage.buckets.get). The
            # SDK checks for a missing cache everywhere; the process-wide switch is the environment variable
            # DISABLE_GCS_PYTHON_CLIENT_OTEL_BUCKET_METADATA, which a plugin should not set for everyone.
            client._bucket_metadata_cache = None
        return client

    def _credentials(self) -> Any:
        import google.auth
        from google.auth.credentials import AnonymousCredentials
        from google.cloud.storage import Client

        if self.anonymous:
            return AnonymousCredentials()
        try:
            if self.settings["credentials_file"]:
                credentials = self._credentials_from_file(self.settings["credentials_file"], Client.SCOPE)
            else:
                credentials, _ = google.auth.default(scopes=Client.SCOPE)
        except Exception as error:
            # The loader's text quotes the file's path (a secret setting): only the kind of failure is kept.
            where = "credentials_file" if self.settings["credentials_file"] else "Application Default Credentials"
            raise ConfigurationError(
                f"GCS: cannot load the credentials ({where}): {type(error).__name__}", provider_code="credentials"
            ) from None
        return credentials

    @staticmethod
    def _credentials_from_file(path: str, scopes: Any) -> Any:
        """A service-account key or an authorized-user file, each with its own loader (google-auth warns
        against its generic loader, which accepts any credential configuration, external accounts too)."""
        from google.oauth2 import credentials as user
        from google.oauth2 import service_account

        with open(path, encoding="utf-8") as handle:
            info = json.load(handle)
        kind = info.get("type") if isinstance(info, dict) else None
        if kind == "service_account":
            return service_account.Credentials.from_service_account_info(info, scopes=scopes)
        if kind == "authorized_user":
            return user.Credentials.from_authorized_user_info(info, scopes=scopes)
        raise ValueError(f"unsupported credentials type {kind!r}")

    def _bucket(self) -> Any:
        """The configured bucket (created first when ``create_bucket`` is set and it is missing)."""
        bucket = self.storage_client().bucket(self.bucket_name)
        if not self._bucket_ready:
            with self._client_lock:
                if not self._bucket_ready:
                    self._ensure_bucket(bucket)
                    self._bucket_ready = True
        return bucket

    def _ensure_bucket(self, bucket: Any) -> None:
        from google.api_core import exceptions as api

        try:
            if bucket.exists(retry=None, timeout=self.timeout):
                return
            bucket.create(location=self.settings["location"], retry=None, timeout=self.timeout)
            self.log.info("gcs: created bucket %s", self.bucket_name)
        except api.Conflict:
            return  # created by another hub at the same time
        except Exception as error:
            raise self._error(error, "creating the bucket") from None

    def object_name(self, key: str) -> str:
        """The object's name in the bucket for the core's ``key``."""
        if not isinstance(key, str) or not key or "\x00" in key or "\r" in key or "\n" in key:
            raise PermanentError(f"gcs: refusing key {key!r}")
        name = f"{self.prefix}{key}"
        if len(name.encode("utf-8")) > 1024:
            raise PermanentError("gcs: the object name would exceed GCS's 1024 bytes")
        return name

    # --- store -----------------------------------------------------------------------------------

    @hookimpl
    def store(self, file: StoredFile, stream: UploadStream) -> StoredFile:
        import google_crc32c

        name = self.object_name(file.key)
        reserved = sorted(RESERVED_METADATA & set(file.metadata))
        if reserved:
            raise PermanentError(f"gcs: metadata keys {reserved} are reserved for the hub's own fields")
        try:
            blob = self._bucket().blob(name, chunk_size=self.chunk_size)
            blob.metadata = {
                **file.metadata,
                META_TENANT: file.tenant,
                META_CATEGORY: file.category,
                META_FILENAME: file.filename,
            }
            writer = blob.open(
                "wb",
                chunk_size=self.chunk_size,
                content_type=file.content_type,
                timeout=self.timeout,
                retry=None,
                checksum=None,  # the provider checks its own CRC32C of what it read against GCS's
                ignore_flush=True,
            )
        except HubError:
            raise
        except Exception as error:
            raise self._error(error, "starting the upload", bucket_level=True) from None

        crc = google_crc32c.Checksum()
        try:
            while chunk := stream.read(COPY_BUFFER):
                crc.update(chunk)
                writer.write(chunk)  # the writer sends every full chunk as it fills
            writer.close()  # sends the last chunk: only now does the object exist
        except BaseException as error:
            # Not finalised: cancel the session so GCS drops what it received. Best effort: an abandoned
            # session never becomes an object either (GCS expires it after a week).
            with contextlib.suppress(Exception):
                writer.terminate()
            if isinstance(error, HubError) or not isinstance(error, Exception):
                raise  # the stream's own error (too large, incomplete), or an interrupt
            raise self._error(error, "uploading", bucket_level=True) from None

        expected_crc = base64.b64encode(crc.digest()).decode("ascii")
        self._seal(blob, stream, expected_crc)
        return replace(file, size=stream.size, checksum=stream.checksum, url=None)

    def _seal(self, blob: Any, stream: UploadStream, expected_crc: str) -> None:
        """Record the core's SHA-256 on the finalised object and check that GCS holds the bytes read."""
        from google.api_core import exceptions as api

        blob.metadata = {**(blob.metadata or {}), META_SHA256: stream.checksum or ""}
        try:
            # A finalised object starts at metageneration 1: never patch an object someone changed since.
            blob.patch(if_metageneration_match=1, retry=None, timeout=self.timeout)
        except api.PreconditionFailed:
            raise TransientError(
                "GCS: the object changed while it was being stored (another upload of the same key?)",
                provider_code="precondition-failed",
            ) from None
        except Exception as error:
            self._discard(blob, None)
            mapped = self._error(error, "recording the checksum")
            # Refused for good (no storage.objects.update): fail over rather than retry an upload that cannot seal.
            kind = ConfigurationError if isinstance(mapped, ConfigurationError) else TransientError
            raise kind(
                f"GCS: the upload was removed because its checksum could not be recorded: {mapped.message}",
                provider_code=mapped.provider_code,
                retry_after=mapped.retry_after,
            ) from None
        if blob.size != stream.size or blob.crc32c != expected_crc:
            self._discard(blob, blob.generation)
            raise TransientError(
                f"GCS holds {blob.size} bytes with CRC32C {blob.crc32c}, but {stream.size} bytes with CRC32C "
                f"{expected_crc} were sent: the object was removed",
                provider_code="checksum-mismatch",
            )

    def _discard(self, blob: Any, generation: int | None) -> None:
        try:
            blob.delete(if_generation_match=generation, retry=None, timeout=self.timeout)
        except Exception as error:  # reported, but the upload's own error is what the caller gets
            self.log.warning("gcs: could not remove a rejected upload of %s: %s", blob.name, type(error).__name__)

    # --- read, head, delete ----------------------------------------------------------------------

    def _reload(self, key: str) -> Any:
        blob = self.storage_client().bucket(self.bucket_name).blob(self.object_name(key))
        try:
            blob.reload(retry=None, timeout=self.timeout)
        except Exception as error:
            raise self._error(error, "reading the object's metadata", key=key) from None
        return blob

    @hookimpl
    def store_read(self, key: str, byte_range: tuple[int, int | None] | None) -> BinaryIO:
        blob = self._reload(key)  # NotFoundError now, not at the first read; and the generation to pin
        size = int(blob.size or 0)
        first, last = byte_range if byte_range is not None else (0, None)
        last = size - 1 if last is None else min(last, size - 1)
        if first < 0 or (size and first > last):
            raise PermanentError(f"gcs: invalid byte range {byte_range!r} for {size} bytes")
        verify = blob.crc32c if byte_range is None else None
        return IteratorStream(self._download(blob, first, last, verify))

    def _download(self, blob: Any, first: int, last: int, expected_crc: str | None) -> Iterator[bytes]:
        """Bytes ``first..last`` (inclusive) as pieces, one ranged GET of ``chunk_size`` at a time."""
        import google_crc32c

        crc = google_crc32c.Checksum() if expected_crc else None
        start = first
        while start <= last:
            end = min(start + self.chunk_size - 1, last)
            try:
                data = blob.download_as_bytes(
                    start=start,
                    end=end,
                    raw_download=True,  # the bytes as stored, no decompressive transcoding
                    checksum=None,
                    if_generation_match=blob.generation,
                    retry=None,
                    timeout=self.timeout,
                )
            except Exception as error:
                raise self._error(error, "downloading", key=blob.name) from None
            if len(data) != end - start + 1:
                raise TransientError(f"GCS sent {len(data)} bytes for a range of {end - start + 1}")
            if crc is not None:
                crc.update(data)
            for offset in range(0, len(data), READ_PIECE):
                yield data[offset : offset + READ_PIECE]
            del data
            start = end + 1
        if crc is not None and base64.b64encode(crc.digest()).decode("ascii") != expected_crc:
            raise TransientError("GCS: the downloaded content does not match its CRC32C", provider_code="checksum")

    @hookimpl
    def store_head(self, key: str) -> StoredObject:
        blob = self._reload(key)
        metadata = dict(blob.metadata or {})
        checksum = metadata.get(META_SHA256) or None
        for reserved in RESERVED_METADATA:
            metadata.pop(reserved, None)
        updated = blob.updated
        return StoredObject(
            key=key,
            size=int(blob.size or 0),
            content_type=blob.content_type,
            metadata=metadata,
            checksum=checksum,
            etag=str(blob.generation) if blob.generation is not None else blob.etag,
            updated_at=updated.astimezone(UTC) if isinstance(updated, datetime) else None,
        )

    @hookimpl
    def store_delete(self, key: str) -> bool:
        from google.api_core import exceptions as api

        blob = self.storage_client().bucket(self.bucket_name).blob(self.object_name(key))
        try:
            blob.delete(retry=None, timeout=self.timeout)
        except api.NotFound as error:
            mapped = self._error(error, "deleting", key=key)
            if isinstance(mapped, NotFoundError):
                return False
            raise mapped from None
        except Exception as error:
            raise self._error(error, "deleting", key=key) from None
        return True

    # --- signed URLs -----------------------------------------------------------------------------

    def _signing_credentials(self) -> Any:
        """The client's credentials when they can sign a URL themselves (a service-account key), else ``None``."""
        from google.auth.credentials import Signing

        self.storage_client()  # loads the credentials
        return self._signer if isinstance(self._signer, Signing) else None

    def _signed_url(self, key: str, expires_in: int, method: str, **options: Any) -> str | None:
        credentials = self._signing_credentials()
        if credentials is None:
            return None
        if not 0 < expires_in <= MAX_SIGNED_SECONDS:
            raise PermanentError(f"gcs: signed URLs last 1 s to 7 days, not {expires_in} s")
        blob = self.storage_client().bucket(self.bucket_name).blob(self.object_name(key))
        try:
            return str(
                blob.generate_signed_url(
                    version="v4",
                    expiration=timedelta(seconds=expires_in),
                    method=method,
                    credentials=credentials,
                    api_access_endpoint=self.endpoint or DEFAULT_ENDPOINT,
                    **options,
                )
            )
        except Exception as error:
            raise self._error(error, "signing a URL") from None

    @hookimpl
    def store_url(self, key: str, expires_in: int) -> str | None:
        return self._signed_url(key, expires_in, "GET")

    @hookimpl
    def store_upload_url(self, file: StoredFile, expires_in: int) -> PresignedUpload | None:
        # Metadata travels as signed x-goog-meta-* headers: GCS refuses the PUT unless they are sent as
        # signed. Only header-safe names and ASCII values can go that way; the hub keeps the full metadata in
        # its own record either way.
        fields = {name: value for name, value in file.metadata.items() if name not in RESERVED_METADATA}
        fields.update({META_TENANT: file.tenant, META_CATEGORY: file.category, META_FILENAME: file.filename})
        headers = {
            f"x-goog-meta-{name.lower()}": str(value)
            for name, value in fields.items()
            if _HEADER_NAME.match(name) and _header_safe(str(value))
        }
        if file.size is not None:
            headers["x-goog-content-length-range"] = f"{file.size},{file.size}"  # GCS refuses another length
        started = datetime.now(UTC)
        url = self._signed_url(file.key, expires_in, "PUT", content_type=file.content_type, headers=headers)
        if url is None:
            return None
        return PresignedUpload(
            url=url,
            method="PUT",
            headers={"Content-Type": file.content_type, **headers},
            expires_at=started + timedelta(seconds=expires_in),
        )

    # --- health and close ------------------------------------------------------------------------

    @hookimpl
    def health(self) -> HealthResult:
        try:
            bucket = self._bucket()
            # storage.objects.list: what an object-level role has (buckets.get may be refused to it).
            blobs = self.storage_client().list_blobs(
                bucket, max_results=1, prefix=self.prefix or None, retry=None, timeout=self.timeout
            )
            list(blobs)
        except Exception as error:
            mapped = error if isinstance(error, ProviderError) else self._error(error, "listing", bucket_level=True)
            return HealthResult("error", mapped.message)
        return HealthResult("success", f"GCS bucket {self.bucket_name} reachable")

    @hookimpl
    def close(self) -> None:
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    # --- errors ----------------------------------------------------------------------------------

    def _error(
        self, error: BaseException, action: str, *, key: str | None = None, bucket_level: bool = False
    ) -> ProviderError:
        """The hub error for an SDK exception. Messages carry GCS's status, reason and message, never a
        URL (the SDK's own texts quote the request URL) or a credential."""
        if isinstance(error, ProviderError):
            return error
        from google.api_core import exceptions as api
        from google.auth import exceptions as auth

        try:
            from google.cloud.storage.exceptions import DataCorruption, InvalidResponse
        except ImportError:  # pragma: no cover - older SDKs keep them in google.resumable_media
            from google.resumable_media import DataCorruption, InvalidResponse  # type: ignore[no-redef]

        response = getattr(error, "response", None)
        status: int | None = None
        if isinstance(error, api.GoogleAPICallError) and error.code:
            status = int(error.code)
        elif isinstance(error, InvalidResponse) and response is not None:
            status = int(getattr(response, "status_code", 0) or 0) or None
        if status is not None:
            reason, message = _error_reason(response)
            headers = getattr(response, "headers", None)
            if status == 404 and (bucket_level or _bucket_missing(message)):
                return ConfigurationError(
                    f"GCS: the bucket {self.bucket_name} does not exist (or the endpoint is wrong)"
                    + ("; set create_bucket: true to create it" if not self.settings["create_bucket"] else ""),
                    provider_code="bucket-not-found",
                )
            if status == 404:
                return NotFoundError(
                    f"gcs: no object stored under {key!r}" if key else f"GCS: not found while {action}"
                )
            if status == 412:
                return TransientError(f"GCS: the object changed while {action}", provider_code="precondition-failed")
            mapped = status_error(status, service="GCS", headers=headers, code=reason, message=message)
            if mapped is not None:
                if mapped.retryable and mapped.retry_after is None and headers is not None:
                    mapped.retry_after = parse_retry_after(headers.get("Retry-After"))
                return mapped
        if isinstance(error, DataCorruption):
            return TransientError(f"GCS: corrupted data while {action}", provider_code="data-corruption")
        if isinstance(error, auth.TransportError):
            return transport_error(error, service="the Google token endpoint", timeout=self.timeout)
        if isinstance(error, auth.GoogleAuthError):
            # RefreshError: the key was refused (invalid_grant...). Its text may quote the token server's body.
            return ConfigurationError(
                f"GCS: the credentials were refused ({type(error).__name__})", provider_code="credentials"
            )
        if _is_transport(error):
            return transport_error(error, service="GCS", timeout=self.timeout)
        if isinstance(error, ValueError) and "credentials" in str(error).lower():
            return ConfigurationError(f"GCS: unusable credentials while {action}", provider_code="credentials")
        return TransientError(f"GCS: {action} failed ({type(error).__name__})", provider_code=type(error).__name__)


def _error_reason(response: Any) -> tuple[str | None, str | None]:
    """GCS's ``reason`` and ``message`` from a JSON error answer (``{"error": {"errors": [{"reason"}]}}``)."""
    if response is None:
        return None, None
    try:
        document = json.loads(response.content or b"{}")
    except (ValueError, TypeError, AttributeError):
        return None, None
    error = document.get("error") if isinstance(document, dict) else None
    if not isinstance(error, dict):
        return None, None
    reasons = error.get("errors") or []
    reason = reasons[0].get("reason") if reasons and isinstance(reasons[0], dict) else None
    message = error.get("message")
    return (str(reason) if reason else None), (str(message)[:300] if message else None)


_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


def _header_safe(value: str) -> bool:
    return value.isascii() and value.isprintable() and value == value.strip()


def _bucket_missing(message: str | None) -> bool:
    # GCS: "The specified bucket does not exist." for a bucket, "No such object: b/k" for an object.
    text = (message or "").lower()
    return "bucket" in text and "does not exist" in text and "no such object" not in text


def _is_transport(error: BaseException) -> bool:
    import http.client

    import requests

    return isinstance(error, requests.RequestException | OSError | http.client.HTTPException) or type(
        error
    ).__module__.startswith("urllib3")


@hookimpl
def register_providers(register: Callable[[type], None]) -> None:
    register(GcsStore)
