"""Store provider ``s3``: files in an Amazon S3 bucket (or an S3-compatible store: MinIO, R2, moto) with boto3.

One boto3 client per provider instance, made on first use under a lock: boto3 *clients* are thread-safe (the
hub's worker threads share it and its connection pool), sessions and resources are not. botocore's own retries
are off: the hub retries with backoff and fails over, and two retry layers would multiply the wait.

Uploads: the provider first reads up to ``multipart_threshold`` bytes. A file that ends before it goes up as
one ``PutObject`` carrying the core's SHA-256 (known once the stream ended): S3 checks the body against it
(``x-amz-checksum-sha256``) and keeps it, and it is also written as metadata (``x-amz-meta-hub-sha256``), so
``store_head`` returns it. A larger file goes through ``upload_fileobj`` with a ``TransferConfig``: a multipart
upload of ``multipart_chunksize`` parts, ``max_concurrency`` in flight and as many buffered, so memory stays near
``chunksize x (concurrency + 1)`` whatever the file's size. Each part carries a CRC32 S3 checks
(``ChecksumAlgorithm=CRC32``: the core already computes the SHA-256 once; twice more would cost CPU for nothing).
After the upload the object is checked against what was read: size, and S3's checksum -- the single
``PutObject``'s SHA-256, or the composite CRC32 of the parts (the CRC32 of their CRC32s), which the provider
computes as the parts pass, and the part count. A mismatch deletes the object and raises ``TransientError``.

S3 writes an object's metadata when the upload *starts*, so a multipart object cannot carry the core's SHA-256
(it is known only at the end): ``store_head`` reports ``None`` for it. Rewriting the object with
``copy_object`` to add it would cost a second copy of every large file; the hub's record keeps the SHA-256.

An object appears under its key only when ``PutObject`` or ``CompleteMultipartUpload`` succeeds; when the
stream breaks off, s3transfer aborts the multipart upload, so nothing half-written stays (an existing object
under the key stays as it was).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import re
import struct
import threading
import zlib
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import quote

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from hub import hookimpl
from hub.capabilities import (
    HealthResult,
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
from hub.http import parse_retry_after, transport_error

__all__ = ["S3Settings", "S3Store", "register_providers"]

MIB = 1024 * 1024
#: S3's smallest part (all but the last) and largest part of a multipart upload.
MIN_PART_SIZE = 5 * MIB
MAX_PART_SIZE = 5 * 1024 * MIB
#: S3 allows at most this many bytes of user metadata (keys and values, without ``x-amz-meta-``).
MAX_METADATA_BYTES = 2048
#: A SigV4 presigned URL is valid for at most seven days.
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
#: The most the provider asks the upload stream for at once.
READ_STEP = 1024 * 1024

#: The object metadata entries the provider writes (``x-amz-meta-hub-*``). S3 lowercases metadata keys, so the
#: caller's metadata (whose keys may be camelCase) is kept as one JSON document, ASCII-escaped.
META_METADATA = "hub-metadata"
META_TENANT = "hub-tenant"
META_CATEGORY = "hub-category"
META_FILENAME = "hub-filename"
#: The core's SHA-256 (hex), on objects uploaded with one PutObject (the only ones where it is known in time).
META_SHA256 = "hub-sha256"

_MULTIPART_ETAG = re.compile(r"-(\d+)$")

# botocore error codes, by what the hub should do about them.
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound", "NoSuchVersion"})
_THROTTLING_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests", "RequestThrottled"}
)
_SERVER_CODES = frozenset({"InternalError", "ServiceUnavailable", "InternalFailure", "503", "500"})
#: Answers to a body that arrived damaged or too slowly: sending it again can work.
_RESEND_CODES = frozenset(
    {
        "BadDigest",
        "InvalidDigest",
        "XAmzContentSHA256Mismatch",
        "IncompleteBody",
        "RequestTimeout",
        "InvalidChunkSizeError",
    }
)
_CREDENTIAL_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "AccountProblem",
        "InvalidSecurity",
        "MissingSecurityHeader",
        "AuthorizationHeaderMalformed",
        "InvalidObjectState",
        "403",
        "401",
    }
)
_BUCKET_CODES = frozenset(
    {"NoSuchBucket", "InvalidBucketName", "PermanentRedirect", "301", "IllegalLocationConstraintException"}
)
#: Refusals of this one request (the object is too large, the key too long): neither retry nor fail over.
_REQUEST_CODES = frozenset({"EntityTooLarge", "KeyTooLongError", "MetadataTooLarge", "InvalidRange", "416"})


class S3Settings(Schema):
    """``providers.<name>`` settings of an ``s3`` provider."""

    #: The bucket (env ``S3_BUCKET``).
    bucket = fields.String(
        required=True,
        validate=validate.Regexp(
            r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", error="an S3 bucket name: 3-63 lowercase letters, digits, '.', '-'"
        ),
    )
    #: AWS region (env ``AWS_REGION``).
    region = fields.String(load_default="us-east-1", validate=validate.Regexp(r"^[a-z]{2}(-[a-z0-9]+)+$|^auto$"))
    #: Another S3 endpoint: MinIO, Cloudflare R2, a VPC endpoint, moto in tests.
    endpoint_url = fields.Url(load_default=None, allow_none=True, require_tld=False, schemes={"http", "https"})
    #: Optional: without keys boto3's default credential chain is used (instance role, profile...).
    access_key_id = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1))
    secret_access_key = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1))
    session_token = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1))
    #: Put before every key (``hub/`` stores ``<tenant>/...`` as ``hub/<tenant>/...``).
    prefix = fields.String(load_default="", validate=validate.Regexp(r"^(?!/)[^\x00-\x1f]*$", error="no leading '/'"))
    #: Above this many bytes an upload is multipart.
    multipart_threshold = fields.Integer(load_default=8 * MIB, validate=validate.Range(min=MIN_PART_SIZE))
    #: Bytes per part (S3: at least 5 MiB, at most 5 GiB, at most 10,000 parts: 8 MiB parts cover 78 GiB).
    multipart_chunksize = fields.Integer(
        load_default=8 * MIB, validate=validate.Range(min=MIN_PART_SIZE, max=MAX_PART_SIZE)
    )
    #: Parts uploaded at once (and buffered ahead): memory is about chunksize x (max_concurrency + 1).
    max_concurrency = fields.Integer(load_default=4, validate=validate.Range(min=1, max=64))
    #: Create the bucket on first use when it does not exist (else a missing bucket is a configuration error).
    create_bucket = fields.Boolean(load_default=False)
    #: ``AES256`` (SSE-S3) or ``aws:kms`` (SSE-KMS, with ``sse_kms_key_id`` or the account's default key).
    server_side_encryption = fields.String(
        load_default=None, allow_none=True, validate=validate.OneOf(["AES256", "aws:kms", "aws:kms:dsse"])
    )
    sse_kms_key_id = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1))
    #: ``path`` (``endpoint/bucket/key``: moto, most MinIO set-ups), ``virtual`` or ``auto`` (the default: path
    #: when ``endpoint_url`` is set, else boto3's choice).
    addressing_style = fields.String(
        load_default=None, allow_none=True, validate=validate.OneOf(["auto", "path", "virtual"])
    )
    #: Connect and read timeout of each request, in seconds.
    timeout = fields.Float(load_default=20.0, validate=validate.Range(min=0.1, max=600))

    @validates_schema
    def _consistent(self, data: dict[str, Any], **_: Any) -> None:
        if bool(data.get("access_key_id")) != bool(data.get("secret_access_key")):
            missing = "secret_access_key" if data.get("access_key_id") else "access_key_id"
            raise ValidationError({missing: ["set access_key_id and secret_access_key together (or neither)"]})
        if data.get("session_token") and not data.get("access_key_id"):
            raise ValidationError({"session_token": ["a session token needs access_key_id and secret_access_key"]})
        if data.get("sse_kms_key_id") and not str(data.get("server_side_encryption") or "").startswith("aws:kms"):
            raise ValidationError({"sse_kms_key_id": ["only with server_side_encryption: aws:kms"]})


def read_full(stream: Any, size: int) -> bytes:
    """Up to ``size`` bytes of ``stream``: fewer only when it ended (a request body gives short reads)."""
    if size <= 0:
        return b""
    buffer = bytearray(size)
    view = memoryview(buffer)
    filled = 0
    while filled < size:
        # At most 1 MiB per read: the layers below (gunicorn, werkzeug, UploadStream) each buffer what one read
        # asks for, and an 8 MiB ask would hold two or three more copies of it at once.
        count = stream.readinto(view[filled : filled + READ_STEP])
        if not count:
            break
        filled += count
    return bytes(buffer) if filled == size else bytes(view[:filled])


class _PartChecksumReader(io.RawIOBase):
    """What s3transfer reads for a multipart upload: the head the provider read first, then the rest of the
    stream, with full reads, and the CRC32 of every ``part_size`` slice as it passes.

    s3transfer decides between one ``PutObject`` and a multipart upload by reading ``multipart_threshold``
    bytes and cuts parts with ``read(chunksize)``: a short read (which a request body may give) would make it
    send parts below S3's 5 MiB minimum, or a large body as one PutObject read whole into memory. So
    ``read(n)`` returns ``n`` bytes unless the stream ended. Parts are the consecutive ``part_size`` slices of
    the content, so the checksums here are S3's part checksums.
    """

    def __init__(self, head: bytes, stream: UploadStream, part_size: int) -> None:
        super().__init__()
        self._head: bytes | None = head
        self._stream = stream
        self._part_size = part_size
        self._part_crc = 0
        self._in_part = 0
        self.part_checksums: list[int] = []
        self.size = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            # s3transfer reads "the rest" only for a single PutObject, which it never chooses here (the head is
            # the whole threshold): kept correct anyway, in chunks.
            parts = []
            while chunk := self.read(MIB):
                parts.append(chunk)
            return b"".join(parts)
        head, self._head = self._head, None
        if head is None:
            data = read_full(self._stream, size)
        elif len(head) == size:
            data = head  # s3transfer's first read asks for exactly the threshold: no copy
        elif len(head) > size:
            data, self._head = head[:size], head[size:]
        else:
            data = head + read_full(self._stream, size - len(head))
        self._checksum(memoryview(data))
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _checksum(self, view: memoryview) -> None:
        self.size += len(view)
        while view:
            take = min(len(view), self._part_size - self._in_part)
            self._part_crc = zlib.crc32(view[:take], self._part_crc)
            self._in_part += take
            view = view[take:]
            if self._in_part == self._part_size:
                self.part_checksums.append(self._part_crc)
                self._part_crc = self._in_part = 0

    def _all_parts(self) -> list[int]:
        return [*self.part_checksums, *([self._part_crc] if self._in_part else [])]

    def composite_checksum(self) -> str:
        """S3's CRC32 of a multipart upload: base64 of the CRC32 of the parts' CRC32s (big-endian bytes)."""
        joined = b"".join(struct.pack(">I", crc) for crc in self._all_parts())
        return base64.b64encode(struct.pack(">I", zlib.crc32(joined))).decode("ascii")

    def part_count(self) -> int:
        return len(self._all_parts())


class _ObjectBody(io.RawIOBase):
    """A ``get_object`` body as a file object: ``read(n)`` is the body's own (botocore's ``StreamingBody``,
    which checks the length S3 announced), with read errors mapped; ``close()`` releases the connection even
    when nothing was read.

    Not ``IteratorStream(body.iter_chunks())``: that copies every chunk twice more on its way to the caller,
    which shows at several hundred MiB/s.
    """

    def __init__(self, body: Any, map_error: Callable[[Exception], ProviderError]) -> None:
        super().__init__()
        self._body = body
        self._map_error = map_error

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("I/O operation on a closed S3 object body")
        try:
            data = self._body.read(None if size is None or size < 0 else size)
        except Exception as error:  # the connection dropped or timed out mid-download
            raise self._map_error(error) from None
        return bytes(data)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            try:
                self._body.close()
            finally:
                super().close()


class S3Store(Provider):
    type_name = "s3"
    capability = "store"
    settings_schema: ClassVar[type[Schema]] = S3Settings
    env_settings: ClassVar[dict[str, str]] = {
        "bucket": "S3_BUCKET",
        "region": "AWS_REGION",
        "access_key_id": "AWS_ACCESS_KEY_ID",
        "secret_access_key": "AWS_SECRET_ACCESS_KEY",
        "session_token": "AWS_SESSION_TOKEN",
    }
    secret_settings: ClassVar[tuple[str, ...]] = ("access_key_id", "secret_access_key", "session_token")
    description = "Stores files in an Amazon S3 (or S3-compatible) bucket; presigned download and upload URLs."

    def __init__(self, name: str, settings: dict[str, Any], context: ProviderContext) -> None:
        super().__init__(name, settings, context)
        self.bucket: str = settings["bucket"]
        self.prefix: str = settings["prefix"] or ""
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._bucket_checked = False

    # --- the client --------------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The provider's boto3 S3 client, made on first use."""
        with self._client_lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self) -> Any:
        import boto3
        from botocore.config import Config

        settings = self.settings
        style = settings["addressing_style"] or ("path" if settings["endpoint_url"] else "auto")
        try:
            session = boto3.session.Session(
                aws_access_key_id=settings["access_key_id"],
                aws_secret_access_key=settings["secret_access_key"],
                aws_session_token=settings["session_token"],
                region_name=settings["region"],
            )
            return session.client(
                "s3",
                endpoint_url=settings["endpoint_url"],
                config=Config(
                    connect_timeout=min(settings["timeout"], 10.0),
                    read_timeout=settings["timeout"],
                    retries={"mode": "standard", "total_max_attempts": 1},
                    # Parts in flight for several uploads at once, plus heads and reads.
                    max_pool_connections=max(10, settings["max_concurrency"] * 4),
                    signature_version="s3v4",
                    s3={"addressing_style": style},
                    user_agent_extra="integration-hub",
                ),
            )
        except Exception as error:
            raise self._provider_error(error) from None

    def transfer_config(self) -> Any:
        """The ``TransferConfig`` of every upload: threshold, part size, concurrency, bounded buffering."""
        from boto3.s3.transfer import TransferConfig

        settings = self.settings
        concurrency = settings["max_concurrency"]
        config = TransferConfig(
            multipart_threshold=settings["multipart_threshold"],
            multipart_chunksize=settings["multipart_chunksize"],
            max_concurrency=concurrency,
            use_threads=concurrency > 1,
            preferred_transfer_client="classic",
        )
        # s3transfer buffers up to 10 parts read from a non-seekable stream ahead of the uploads by default
        # (80 MiB of 8 MiB parts): no more than are being sent is needed to keep them all busy.
        config.max_in_memory_upload_chunks = concurrency
        return config

    def object_key(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def _ensure_bucket(self) -> None:
        """With ``create_bucket``, create the bucket on first use when it is missing."""
        if self._bucket_checked or not self.settings["create_bucket"]:
            return
        from botocore.exceptions import ClientError

        client = self.client
        try:
            client.head_bucket(Bucket=self.bucket)
        except ClientError as error:
            if self._error_code(error) not in ("404", "NoSuchBucket", "NotFound"):
                raise self._provider_error(error) from None
            arguments: dict[str, Any] = {"Bucket": self.bucket}
            region = self.settings["region"]
            if region not in ("us-east-1", "auto"):
                arguments["CreateBucketConfiguration"] = {"LocationConstraint": region}
            try:
                client.create_bucket(**arguments)
            except ClientError as creation:
                if self._error_code(creation) not in ("BucketAlreadyOwnedByYou",):
                    raise self._provider_error(creation) from None
            self.log.info("s3: created bucket %s", self.bucket)
        except Exception as error:
            raise self._provider_error(error) from None
        self._bucket_checked = True

    # --- metadata ----------------------------------------------------------------------------------

    @staticmethod
    def object_metadata(file: StoredFile) -> dict[str, str]:
        """The ``x-amz-meta-*`` entries of ``file``: ASCII only, since S3 sends metadata as HTTP headers. Raises
        ``PermanentError`` when S3 could not keep them (leaving room for the core's SHA-256, added to a
        single-PUT upload once it is known)."""
        metadata = {
            META_TENANT: quote(file.tenant, safe=""),
            META_CATEGORY: quote(file.category, safe=""),
            META_FILENAME: quote(file.filename, safe=""),
            META_METADATA: json.dumps(dict(file.metadata), ensure_ascii=True, separators=(",", ":"), sort_keys=True),
        }
        used = sum(len(name) + len(value) for name, value in metadata.items()) + len(META_SHA256) + 64
        if used > MAX_METADATA_BYTES:
            raise PermanentError(
                f"s3: the file's metadata takes {used} bytes; S3 keeps at most {MAX_METADATA_BYTES} "
                "(shorten the custom metadata or the file name)",
                provider_code="MetadataTooLarge",
            )
        return metadata

    @staticmethod
    def caller_metadata(stored: dict[str, str]) -> dict[str, str]:
        """The caller's metadata from an object's ``x-amz-meta-*`` entries (written by :meth:`object_metadata`,
        or by another tool: then every entry but the hub's)."""
        if META_METADATA in stored:
            try:
                decoded = json.loads(stored[META_METADATA])
            except ValueError:
                decoded = None
            if isinstance(decoded, dict):
                return {str(key): str(value) for key, value in decoded.items()}
        return {key: value for key, value in stored.items() if not key.startswith("hub-")}

    def _encryption_arguments(self) -> dict[str, str]:
        arguments = {}
        if self.settings["server_side_encryption"]:
            arguments["ServerSideEncryption"] = self.settings["server_side_encryption"]
            if self.settings["sse_kms_key_id"]:
                arguments["SSEKMSKeyId"] = self.settings["sse_kms_key_id"]
        return arguments

    # --- store hooks -------------------------------------------------------------------------------

    @hookimpl
    def store(self, file: StoredFile, stream: UploadStream) -> StoredFile:
        client = self.client
        self._ensure_bucket()
        key = self.object_key(file.key)
        metadata = self.object_metadata(file)  # refused before a byte is read when S3 could not keep it
        threshold = self.settings["multipart_threshold"]
        # Read up to the threshold first: a file that ends before it goes up as one PutObject carrying the
        # core's SHA-256 (known once the stream ended), which S3 checks the body against and keeps.
        head = read_full(stream, threshold)
        try:
            if len(head) < threshold:
                sha256 = bytes.fromhex(stream.checksum or hashlib.sha256(head).hexdigest())
                client.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=head,
                    ContentType=file.content_type,
                    Metadata={**metadata, META_SHA256: sha256.hex()},
                    ChecksumAlgorithm="SHA256",
                    ChecksumSHA256=base64.b64encode(sha256).decode("ascii"),
                    **self._encryption_arguments(),
                )
                reader = None
            else:
                # A multipart upload: S3 checks each part's CRC32 (cheaper than SHA-256 on every byte twice
                # more; the core already computes the SHA-256 once), and the provider computes the composite.
                reader = _PartChecksumReader(head, stream, self.settings["multipart_chunksize"])
                del head
                extra = {
                    "ContentType": file.content_type,
                    "Metadata": metadata,
                    "ChecksumAlgorithm": "CRC32",
                    **self._encryption_arguments(),
                }
                client.upload_fileobj(reader, self.bucket, key, ExtraArgs=extra, Config=self.transfer_config())
        except HubError:
            raise  # the stream's own error (too large, cut short); s3transfer aborted the multipart upload
        except Exception as error:
            raise self._provider_error(error) from None
        self._verify_upload(key, reader, stream)
        return replace(file, size=stream.size, checksum=stream.checksum)

    def _verify_upload(self, key: str, reader: _PartChecksumReader | None, stream: UploadStream) -> None:
        """Compare what S3 holds with what was read: the size, and S3's checksum (the SHA-256 of a single
        PutObject, the composite CRC32 of a multipart upload). A mismatch deletes the object: the upload must
        be sent again."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        except Exception as error:
            raise self._provider_error(error) from None
        problem = None
        if int(head.get("ContentLength", -1)) != stream.size or (reader is not None and reader.size != stream.size):
            problem = f"S3 holds {head.get('ContentLength')} bytes, {stream.size} were sent"
        elif reader is None and head.get("ChecksumSHA256"):
            expected = base64.b64encode(bytes.fromhex(stream.checksum or "")).decode("ascii")
            if head["ChecksumSHA256"] != expected:
                problem = "S3's SHA-256 differs from the content's"
        elif reader is not None and head.get("ChecksumCRC32"):
            parts = self._multipart_count(head)
            if parts and parts != reader.part_count():
                problem = f"S3 assembled {parts} parts, {reader.part_count()} were sent"
            elif head["ChecksumCRC32"].split("-", 1)[0] != reader.composite_checksum():
                problem = "S3's CRC32 of the parts differs from the content sent"
        if problem is None:
            return
        self.log.warning("s3: upload of %s failed verification (%s): deleting it", key, problem)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as error:
            self.log.warning("s3: could not delete %s after a failed verification: %s", key, type(error).__name__)
        raise TransientError(f"s3: the stored object did not match the upload ({problem})", provider_code="Mismatch")

    @staticmethod
    def _multipart_count(head: dict[str, Any]) -> int | None:
        """The number of parts of a multipart object (its ETag ends in ``-N``; 0: multipart, count unknown),
        ``None`` for a single PUT."""
        match = _MULTIPART_ETAG.search(str(head.get("ETag") or "").strip('"'))
        if match:
            return int(match.group(1))
        composite = any("-" in str(head.get(name) or "") for name in ("ChecksumSHA256", "ChecksumCRC32"))
        if head.get("ChecksumType") == "COMPOSITE" or composite:
            return 0
        return None

    @hookimpl
    def store_read(self, key: str, byte_range: tuple[int, int | None] | None) -> Any:
        arguments: dict[str, Any] = {"Bucket": self.bucket, "Key": self.object_key(key)}
        if byte_range is not None:
            first, last = byte_range
            if first < 0 or (last is not None and last < first):
                raise PermanentError(f"s3: invalid byte range {byte_range!r}")
            arguments["Range"] = f"bytes={first}-{'' if last is None else last}"
        try:
            response = self.client.get_object(**arguments)
        except Exception as error:
            raise self._provider_error(error, key=key) from None
        return _ObjectBody(response["Body"], self._provider_error)

    @hookimpl
    def store_head(self, key: str) -> StoredObject:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.object_key(key), ChecksumMode="ENABLED")
        except Exception as error:
            raise self._provider_error(error, key=key) from None
        return self.describe(key, head)

    def describe(self, key: str, head: dict[str, Any]) -> StoredObject:
        """A ``head_object`` answer as a :class:`StoredObject`."""
        stored = dict(head.get("Metadata") or {})
        checksum = stored.get(META_SHA256)
        reported = head.get("ChecksumSHA256")
        if not checksum and reported and self._multipart_count(head) is None:
            # A single PutObject's checksum is the object's SHA-256: the core's, in base64.
            try:
                checksum = base64.b64decode(reported, validate=True).hex()
            except (ValueError, binascii.Error):
                checksum = None
        updated = head.get("LastModified")
        return StoredObject(
            key=key,
            size=int(head.get("ContentLength", 0)),
            content_type=head.get("ContentType"),
            metadata=self.caller_metadata(stored),
            checksum=checksum if checksum and re.fullmatch(r"[0-9a-f]{64}", checksum) else None,
            etag=str(head["ETag"]).strip('"') if head.get("ETag") else None,
            updated_at=updated.astimezone(UTC) if isinstance(updated, datetime) else None,
        )

    @hookimpl
    def store_delete(self, key: str) -> bool:
        object_key = self.object_key(key)
        try:
            self.client.head_object(Bucket=self.bucket, Key=object_key)
        except Exception as error:
            mapped = self._provider_error(error, key=key)
            if isinstance(mapped, NotFoundError):
                return False  # S3's DeleteObject answers 204 either way: the HEAD says whether it existed
            raise mapped from None
        try:
            self.client.delete_object(Bucket=self.bucket, Key=object_key)
        except Exception as error:
            raise self._provider_error(error, key=key) from None
        return True

    @hookimpl
    def store_url(self, key: str, expires_in: int) -> str | None:
        try:
            return str(
                self.client.generate_presigned_url(
                    "get_object",
                    Params={"Bucket": self.bucket, "Key": self.object_key(key)},
                    ExpiresIn=self._expiry(expires_in),
                    HttpMethod="GET",
                )
            )
        except Exception as error:
            raise self._provider_error(error) from None

    @hookimpl
    def store_upload_url(self, file: StoredFile, expires_in: int) -> PresignedUpload | None:
        """A presigned POST bound to the exact size when it is known, else a presigned PUT; both bind the
        content type and the hub's metadata (the client must send them as given)."""
        key = self.object_key(file.key)
        metadata = self.object_metadata(file)
        encryption = self._encryption_arguments()
        seconds = self._expiry(expires_in)
        expires_at = datetime.now(UTC) + timedelta(seconds=seconds)
        try:
            if file.size is not None:
                form = {"Content-Type": file.content_type, **{f"x-amz-meta-{k}": v for k, v in metadata.items()}}
                if encryption:
                    form["x-amz-server-side-encryption"] = encryption["ServerSideEncryption"]
                    if "SSEKMSKeyId" in encryption:
                        form["x-amz-server-side-encryption-aws-kms-key-id"] = encryption["SSEKMSKeyId"]
                conditions: list[Any] = [{name: value} for name, value in form.items()]
                conditions.append(["content-length-range", file.size, file.size])
                post = self.client.generate_presigned_post(
                    self.bucket, key, Fields=form, Conditions=conditions, ExpiresIn=seconds
                )
                return PresignedUpload(
                    url=post["url"], method="POST", fields=dict(post["fields"]), expires_at=expires_at
                )
            params = {
                "Bucket": self.bucket,
                "Key": key,
                "ContentType": file.content_type,
                "Metadata": metadata,
                **encryption,
            }
            url = self.client.generate_presigned_url("put_object", Params=params, ExpiresIn=seconds, HttpMethod="PUT")
        except Exception as error:
            raise self._provider_error(error) from None
        headers = {"Content-Type": file.content_type, **{f"x-amz-meta-{k}": v for k, v in metadata.items()}}
        if encryption:
            headers["x-amz-server-side-encryption"] = encryption["ServerSideEncryption"]
            if "SSEKMSKeyId" in encryption:
                headers["x-amz-server-side-encryption-aws-kms-key-id"] = encryption["SSEKMSKeyId"]
        return PresignedUpload(url=str(url), method="PUT", headers=headers, expires_at=expires_at)

    def _expiry(self, expires_in: int) -> int:
        if expires_in > MAX_PRESIGN_SECONDS:
            self.log.warning("s3: presigned URLs last at most 7 days; %d s asked, 7 days given", expires_in)
        return max(1, min(int(expires_in), MAX_PRESIGN_SECONDS))

    # --- health and close --------------------------------------------------------------------------

    @hookimpl
    def health(self) -> HealthResult:
        try:
            self._ensure_bucket()
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as error:
            mapped = error if isinstance(error, ProviderError) else self._provider_error(error)
            if isinstance(mapped, NotFoundError):  # head_bucket's 404 has no body: the bucket is missing
                mapped = ConfigurationError(f"s3: bucket {self.bucket} does not exist", provider_code="NoSuchBucket")
            return HealthResult("error", mapped.message)
        return HealthResult("success", f"bucket {self.bucket} reachable ({self.client.meta.region_name})")

    @hookimpl
    def close(self) -> None:
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None and hasattr(client, "close"):
            client.close()

    # --- errors ------------------------------------------------------------------------------------

    @staticmethod
    def _error_code(error: Any) -> str:
        details = error.response.get("Error", {}) if hasattr(error, "response") else {}
        status = (getattr(error, "response", None) or {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
        return str(details.get("Code") or status or "Unknown")

    def _provider_error(self, error: Exception, *, key: str | None = None) -> ProviderError:
        """The hub error for a boto3/botocore/s3transfer exception. Messages carry S3's error code and never
        a credential (AWS's text for credential errors can quote the access key id, so it is dropped)."""
        from botocore import exceptions as aws

        if isinstance(error, ProviderError):
            return error
        cause = error.__cause__ or error.__context__
        if not isinstance(error, aws.ClientError) and isinstance(cause, aws.ClientError | aws.BotoCoreError):
            error = cause  # s3transfer's S3UploadFailedError wraps the ClientError
        if isinstance(error, aws.ClientError):
            details = error.response.get("Error", {})
            metadata = error.response.get("ResponseMetadata", {})
            code = str(details.get("Code") or metadata.get("HTTPStatusCode") or "Unknown")
            status = int(metadata.get("HTTPStatusCode") or 0)
            retry_after = parse_retry_after((metadata.get("HTTPHeaders") or {}).get("retry-after"))
            if code in _NOT_FOUND_CODES:
                what = f"{key!r}" if key is not None else "the object"
                return NotFoundError(f"s3: no object stored under {what}", provider_code="NoSuchKey")
            if code in _BUCKET_CODES:
                return ConfigurationError(
                    f"s3: the bucket {self.bucket} cannot be used ({code}): check bucket and region", provider_code=code
                )
            if code in _THROTTLING_CODES or status in (429, 503):
                return TransientError(f"S3 throttled the request ({code})", provider_code=code, retry_after=retry_after)
            if code in _SERVER_CODES or status >= 500:
                return TransientError(f"S3 failed ({code}, HTTP {status})", provider_code=code, retry_after=retry_after)
            if code in _RESEND_CODES:
                return TransientError(f"S3 refused the body as sent ({code}): send it again", provider_code=code)
            if code in _CREDENTIAL_CODES or code.startswith("KMS") or status in (401, 403):
                return ConfigurationError(f"S3 refused the credentials or permissions ({code})", provider_code=code)
            if code in _REQUEST_CODES:
                text = str(details.get("Message") or "")[:200]
                return PermanentError(f"S3 refused the request ({code}): {text}", provider_code=code)
            return ConfigurationError(f"S3 refused the request ({code}, HTTP {status})", provider_code=code)
        if isinstance(error, aws.NoRegionError):
            return ConfigurationError("no AWS region: set region (or AWS_REGION)", provider_code="NoRegion")
        if isinstance(error, aws.NoCredentialsError | aws.PartialCredentialsError):
            return ConfigurationError(
                "no AWS credentials: set access_key_id and secret_access_key, or give the hub a role",
                provider_code=type(error).__name__,
            )
        if isinstance(error, aws.ParamValidationError):
            return ConfigurationError("boto3 refused the request parameters", provider_code="ParamValidation")
        if isinstance(error, aws.ConnectionError | aws.HTTPClientError | aws.ResponseStreamingError):
            # EndpointConnectionError, ReadTimeoutError, ConnectionClosedError...: nothing becomes visible under
            # a key until an upload completes, so even "sent, answer lost" is safe to retry or fail over.
            return transport_error(error, service="S3", timeout=self.settings["timeout"])
        if isinstance(error, aws.IncompleteReadError):
            return TransientError("S3 sent fewer bytes than announced", provider_code="IncompleteRead")
        return TransientError(f"S3 call failed ({type(error).__name__})", provider_code=type(error).__name__)


@hookimpl
def register_providers(register: Callable[[type], None]) -> None:
    register(S3Store)
