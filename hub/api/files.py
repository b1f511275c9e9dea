"""Files: upload, list, metadata, download, delete."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, current_app, g, request

from hub.api.middleware import idempotency_key, idempotent, json_body, manager, ok, paging
from hub.errors import ValidationError

blueprint = Blueprint("files", __name__)


@blueprint.post("/files")
@idempotent
def upload_file() -> Any:
    """Upload a file: multipart (``file`` plus form fields) or JSON with base64 ``content``."""
    store = manager().store
    if request.files:
        upload = request.files.get("file")
        if upload is None:
            raise ValidationError({"file": ["multipart field 'file' is required"]})
        raw = {key: value for key, value in request.form.items()}
        if "metadata" in raw:
            try:
                raw["metadata"] = json.loads(raw["metadata"])
            except ValueError:
                raise ValidationError({"metadata": ["must be a JSON object"]}) from None
        raw.setdefault("fileName", upload.filename or "file")
        raw.setdefault("contentType", upload.mimetype if upload.mimetype != "application/octet-stream" else None)
        return ok(store.accept_upload(g.tenant, raw, upload.read(), idempotency_key()), 201)
    return ok(store.accept_upload(g.tenant, json_body(), None, idempotency_key()), 201)


@blueprint.get("/files")
def list_files() -> Any:
    limit, offset = paging()
    store = manager().store
    rows, total = store.list(g.tenant, request.args.get("category"), limit, offset)
    return ok({"items": [store.view(row) for row in rows], "total": total, "limit": limit, "offset": offset})


@blueprint.get("/files/<file_id>")
def file_metadata(file_id: str) -> Any:
    return ok(manager().store.metadata_view(file_id, g.tenant, current_app.logger.warning))


@blueprint.get("/files/<file_id>/content")
def download_file(file_id: str) -> Any:
    file_record, data = manager().store.download(file_id, g.tenant)
    response = Response(data, mimetype=file_record.content_type)
    response.headers["Content-Disposition"] = f'attachment; filename="{file_record.filename.replace(chr(34), "")}"'
    response.headers["ETag"] = file_record.checksum
    return response


@blueprint.delete("/files/<file_id>")
def delete_file(file_id: str) -> Any:
    return ok(manager().store.delete(file_id, g.tenant))
