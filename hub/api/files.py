"""Files: upload (multipart, raw body or base64 JSON; or directly to the provider), list, metadata, download
(with ``Range``), delete.

Uploads stream: a multipart part is spooled to a temporary file by werkzeug's parser (not memory), a raw body
is read from ``request.stream`` in chunks as the provider takes it. Downloads stream the provider's file
object to the client in chunks.
"""

from __future__ import annotations

import json
import os
import unicodedata
from collections.abc import Iterator
from typing import Any, BinaryIO
from urllib.parse import quote, unquote

from flask import Blueprint, Response, current_app, g, request

from hub.api.middleware import (
    SMALL_BODY,
    error_response,
    idempotency_key,
    idempotent,
    json_body,
    manager,
    ok,
    paging,
    public,
)
from hub.errors import ValidationError
from hub.records import FileRecord

blueprint = Blueprint("files", __name__)

#: The header naming a raw-body upload (percent-encoded UTF-8 allowed), else the ``fileName`` query parameter.
FILE_NAME_HEADER = "X-File-Name"
#: Bytes per chunk sent to a downloading client.
DOWNLOAD_CHUNK = 256 * 1024


@blueprint.post("/files")
@idempotent
def upload_file() -> Any:
    """Upload a file: multipart (``file`` plus form fields), a raw body, or JSON with base64 ``content``.

    A raw body carries the file's type in ``Content-Type`` and its name in ``X-File-Name`` (or ``?fileName=``);
    ``category``, ``fileType`` and ``metadata`` (JSON) are query parameters. Past ``max_file_size``: 413.
    """
    store = manager().store
    mimetype = request.mimetype
    if mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None:
            raise ValidationError({"file": ["multipart field 'file' is required"]})
        raw = _fields(request.form)
        raw.setdefault("fileName", upload.filename or "file")
        raw.setdefault("contentType", upload.mimetype if upload.mimetype != "application/octet-stream" else None)
        part: BinaryIO = upload.stream  # type: ignore[assignment]
        return ok(store.accept_upload(g.tenant, raw, part, idempotency_key(), size=_spooled_size(part)), 201)
    if mimetype == "application/json":
        return ok(store.accept_upload(g.tenant, json_body(), None, idempotency_key()), 201)
    raw = _fields(request.args)
    name = request.headers.get(FILE_NAME_HEADER)
    if name:
        raw["fileName"] = unquote(_header_text(name))
    raw.setdefault("contentType", mimetype or None)
    size = request.content_length
    # A small body may have been read already (the idempotency fingerprint); a large one is streamed.
    source: bytes | BinaryIO = request.get_data() if size is not None and size <= SMALL_BODY else request.stream
    return ok(store.accept_upload(g.tenant, raw, source, idempotency_key(), size=size), 201)


@blueprint.post("/files/uploads")
@idempotent
def start_direct_upload() -> Any:
    """Ask for a presigned URL to upload a file straight to the storage provider (then call ``complete``)."""
    return ok(manager().store.start_direct_upload(g.tenant, json_body(), idempotency_key()), 201)


@blueprint.post("/files/uploads/<upload_id>/complete")
def complete_direct_upload(upload_id: str) -> Any:
    """Confirm a direct upload: the provider is asked what arrived, and the file is recorded."""
    return ok(manager().store.complete_direct_upload(upload_id, g.tenant), 201)


@blueprint.get("/files")
def list_files() -> Any:
    """The tenant's files, newest first: ?category=&prefix=&provider=&limit=&offset=."""
    limit, offset = paging()
    store = manager().store
    args = request.args
    rows, total = store.list(g.tenant, args.get("category"), limit, offset, prefix=args.get("prefix"), provider=args.get("provider"))
    return ok({"items": [store.view(row) for row in rows], "total": total, "limit": limit, "offset": offset})


@blueprint.get("/files/<file_id>")
def file_metadata(file_id: str) -> Any:
    """A file's metadata with ``downloadUrl``, a time-limited URL needing no token (the provider's presigned one,
    or the hub's signed one); ``?verify=true`` adds what the provider holds (``storage``)."""
    verify = request.args.get("verify", "").lower() in ("1", "true", "yes")
    view = manager().store.metadata_view(file_id, g.tenant, current_app.logger.warning, verify=verify)
    if str(view.get("downloadUrl", "")).startswith("/"):
        view["downloadUrl"] = request.host_url.rstrip("/") + view["downloadUrl"]  # the hub's own: absolute
    return ok(view)


@blueprint.get("/files/<file_id>/download")
@public
def signed_download(file_id: str) -> Any:
    """Download through a signed URL (``downloadUrl`` of the file's metadata): no token; 403 once it expired
    or when it was altered. ``Range`` works as on ``/content``."""
    return _serve(manager().store.verify_download(file_id, request.args.get("token", "")))


@blueprint.get("/files/<file_id>/content")
def download_file(file_id: str) -> Any:
    """Download a file's content, whole or one ``Range`` (206); an unsatisfiable range: 416."""
    return _serve(manager().store.get(file_id, g.tenant))


def _serve(file_record: FileRecord) -> Response:
    store = manager().store
    if request.method == "HEAD":
        store.head(file_record)  # 404 when the provider lost it
        response = Response(status=200, mimetype=file_record.content_type)
        _describe(response, file_record, file_record.size)
        return response
    byte_range = _requested_range(file_record)
    if byte_range == "unsatisfiable":
        response = error_response(416, "Range not satisfiable", f"the file has {file_record.size} bytes")
        response.headers["Content-Range"] = f"bytes */{file_record.size}"
        return response
    download = store.open(file_record, byte_range)
    response = Response(_chunks(download.stream), status=206 if download.byte_range else 200, mimetype=file_record.content_type, direct_passthrough=True)
    response.call_on_close(download.stream.close)  # also when the client goes away before the first chunk
    _describe(response, file_record, download.length)
    if download.byte_range:
        first, last = download.byte_range
        response.headers["Content-Range"] = f"bytes {first}-{last}/{file_record.size}"
    return response


@blueprint.delete("/files/<file_id>")
def delete_file(file_id: str) -> Any:
    return ok(manager().store.delete(file_id, g.tenant))


# --- helpers -------------------------------------------------------------------------------------------


def _fields(source: Any) -> dict[str, Any]:
    if any(not key for key in source):
        # A part without a name (werkzeug keys it None) could only be an unknown field, and a None key
        # beside a string one cannot even be written into the error's JSON.
        raise ValidationError({"form": ["every multipart part needs a name (Content-Disposition: form-data; name=...)"]})
    raw = {key: value for key, value in source.items()}
    if "metadata" in raw:
        try:
            raw["metadata"] = json.loads(raw["metadata"])
        except ValueError:
            raise ValidationError({"metadata": ["must be a JSON object"]}) from None
    return raw


def _header_text(value: str) -> str:
    """A header as its sender wrote it: WSGI hands headers over decoded as Latin-1, so raw UTF-8 (which
    clients send though they should percent-encode) comes back as UTF-8; anything else stays Latin-1."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


def _spooled_size(part: BinaryIO) -> int | None:
    """The size of a multipart part werkzeug spooled (to memory or a temporary file), without reading it."""
    try:
        start = part.tell()
        size = part.seek(0, os.SEEK_END) - start
        part.seek(start)
    except (AttributeError, OSError, ValueError):
        return None
    return size


def _requested_range(file_record: FileRecord) -> tuple[int, int] | str | None:
    """The client's single byte range as inclusive ``(first, last)``; ``None`` for the whole file (no
    ``Range``, several ranges, or an ``If-Range`` that no longer matches); ``"unsatisfiable"``."""
    if "Range" not in request.headers:
        return None
    requested = request.range
    if requested is None or requested.units != "bytes" or len(requested.ranges) != 1:
        return None  # unparsable or several ranges: the whole file is a valid answer
    if_range = request.if_range
    if if_range and (if_range.etag or if_range.date) and if_range.etag != file_record.checksum:
        return None  # the client's copy is of another version: send this one whole
    resolved = requested.range_for_length(file_record.size)
    if resolved is None:
        return "unsatisfiable"
    start, stop = resolved
    return start, stop - 1


def _describe(response: Response, file_record: FileRecord, length: int) -> None:
    response.headers["Content-Length"] = str(length)
    response.headers["Accept-Ranges"] = "bytes"
    response.set_etag(file_record.checksum)
    response.headers["Content-Disposition"] = content_disposition(file_record.filename)


def content_disposition(filename: str) -> str:
    """``attachment`` with the name as RFC 6266 asks: an ASCII ``filename=`` for old clients (accents
    dropped, anything else replaced) and the exact name as ``filename*=UTF-8''...`` (RFC 5987), so any
    name -- Cyrillic, CJK, control characters -- makes a valid header."""
    folded = (char for char in unicodedata.normalize("NFKD", filename) if not unicodedata.combining(char))  # é -> e
    fallback = "".join(char if " " <= char <= "~" and char not in '"\\%' else "_" for char in folded).strip() or "file"
    if fallback == filename:
        return f'attachment; filename="{fallback}"'
    # surrogateescape: a name stored before lone surrogates were refused still makes a header.
    encoded = quote(filename.encode("utf-8", "surrogateescape"), safe="!#$&+-.^_`|~")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


def _chunks(stream: BinaryIO) -> Iterator[bytes]:
    try:
        while chunk := stream.read(DOWNLOAD_CHUNK):
            yield chunk
    finally:
        stream.close()
