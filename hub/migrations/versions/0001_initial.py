"""The initial schema: every table and index the hub had when migrations were introduced.

Revision ID: 0001
Revises: (none)
Create Date: 2026-12-02 12:49:40.564455
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "hub_api_tokens",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("admin", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_index(op.f("ix_hub_api_tokens_tenant"), "hub_api_tokens", ["tenant"], unique=False)

    op.create_table(
        "hub_audit",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant", sa.String(length=100), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("capability", sa.String(length=20), nullable=True),
        sa.Column("service", sa.String(length=40), nullable=True),
        sa.Column("provider", sa.String(length=100), nullable=True),
        sa.Column("operation", sa.String(length=60), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("record_id", sa.String(length=40), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_provider_at", "hub_audit", ["provider", "at"], unique=False)
    op.create_index("ix_audit_tenant_at", "hub_audit", ["tenant", "at"], unique=False)

    op.create_table(
        "hub_dead_letters",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant", sa.String(length=100), nullable=False),
        sa.Column("subscription", sa.String(length=200), nullable=False),
        sa.Column("group_id", sa.String(length=255), nullable=False),
        sa.Column("provider", sa.String(length=100), nullable=False),
        sa.Column("topic", sa.String(length=255), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("key", sa.Text(), nullable=True),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("published", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("subscription", "topic", "partition", "offset", name="uq_dead_letter_position"),
    )
    op.create_index("ix_dead_letter_tenant_created", "hub_dead_letters", ["tenant", "created_at"], unique=False)

    op.create_table(
        "hub_event_schemas",
        sa.Column("tenant", sa.String(length=100), nullable=False),
        sa.Column("event_type", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("schema", sa.JSON(), nullable=False),
        sa.Column("breaking", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "event_type", "version"),
    )
    op.create_table(
        "hub_files",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant", sa.String(length=100), nullable=False),
        sa.Column("key", sa.String(length=1024), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("content_type", sa.String(length=255), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("checksum", sa.String(length=64), nullable=False),
        sa.Column("category", sa.String(length=100), nullable=False),
        sa.Column("file_type", sa.String(length=50), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("provider", sa.String(length=100), nullable=False),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    op.create_index("ix_file_tenant_created", "hub_files", ["tenant", "created_at"], unique=False)

    op.create_table(
        "hub_idempotency",
        sa.Column("tenant", sa.String(length=100), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("method", sa.String(length=10), nullable=False),
        sa.Column("path", sa.String(length=500), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("response", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "key"),
    )
    op.create_table(
        "hub_inventory_discrepancies",
        sa.Column("tenant", sa.String(length=100), nullable=False),
        sa.Column("sku", sa.String(length=255), nullable=False),
        sa.Column("location", sa.String(length=255), nullable=False),
        sa.Column("provider", sa.String(length=100), nullable=False),
        sa.Column("other", sa.String(length=100), nullable=False),
        sa.Column("quantity", sa.Float(), nullable=True),
        sa.Column("other_quantity", sa.Float(), nullable=True),
        sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("tenant", "sku", "location", "provider", "other"),
    )
    op.create_index(
        "ix_inventory_discrepancy_open", "hub_inventory_discrepancies", ["tenant", "resolved_at"], unique=False
    )

    op.create_table(
        "hub_inventory_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=100), nullable=False),
        sa.Column("provider", sa.String(length=100), nullable=False),
        sa.Column("sku", sa.String(length=255), nullable=False),
        sa.Column("location", sa.String(length=255), nullable=False),
        sa.Column("quantity", sa.Float(), nullable=True),
        sa.Column("previous", sa.Float(), nullable=True),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("source", sa.String(length=10), nullable=False),
        sa.Column("snapshot_id", sa.String(length=40), nullable=True),
        sa.Column("record_id", sa.String(length=40), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_inventory_history_item",
        "hub_inventory_history",
        ["tenant", "provider", "sku", "location", "id"],
        unique=False,
    )
    op.create_index("ix_inventory_history_sku_at", "hub_inventory_history", ["tenant", "sku", "at"], unique=False)
    op.create_index("ix_inventory_history_snapshot", "hub_inventory_history", ["snapshot_id", "id"], unique=False)

    op.create_table(
        "hub_inventory_levels",
        sa.Column("tenant", sa.String(length=100), nullable=False),
        sa.Column("provider", sa.String(length=100), nullable=False),
        sa.Column("sku", sa.String(length=255), nullable=False),
        sa.Column("location", sa.String(length=255), nullable=False),
        sa.Column("quantity", sa.Float(), nullable=True),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("record_id", sa.String(length=40), nullable=True),
        sa.PrimaryKeyConstraint("tenant", "provider", "sku", "location"),
    )
    op.create_table(
        "hub_inventory_runs",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant", sa.String(length=100), nullable=False),
        sa.Column("provider", sa.String(length=100), nullable=False),
        sa.Column("record_id", sa.String(length=40), nullable=True),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("item_count", sa.Integer(), nullable=False),
        sa.Column("full", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_inventory_run_tenant_taken", "hub_inventory_runs", ["tenant", "taken_at"], unique=False)

    op.create_table(
        "hub_leases",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=True),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("renewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("note", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "hub_records",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("service", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("provider", sa.String(length=100), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempt_log", sa.JSON(), nullable=False),
        sa.Column("provider_reference", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant", "kind", "idempotency_key", name="uq_record_idempotency"),
    )
    op.create_index(op.f("ix_hub_records_provider_reference"), "hub_records", ["provider_reference"], unique=False)
    op.create_index("ix_record_status_lease", "hub_records", ["status", "lease_until"], unique=False)
    op.create_index("ix_record_tenant_kind_created", "hub_records", ["tenant", "kind", "created_at"], unique=False)

    op.create_table(
        "hub_stock_alerts",
        sa.Column("tenant", sa.String(length=100), nullable=False),
        sa.Column("sku", sa.String(length=255), nullable=False),
        sa.Column("location", sa.String(length=255), nullable=False),
        sa.Column("low", sa.Boolean(), nullable=False),
        sa.Column("quantity", sa.Float(), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("provider", sa.String(length=100), nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("record_id", sa.String(length=40), nullable=True),
        sa.PrimaryKeyConstraint("tenant", "sku", "location"),
    )
    op.create_table(
        "hub_subscriptions",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("tenant", sa.String(length=100), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_index(op.f("ix_hub_subscriptions_tenant"), "hub_subscriptions", ["tenant"], unique=False)

    op.create_table(
        "hub_sync_checkpoints",
        sa.Column("tenant", sa.String(length=100), nullable=False),
        sa.Column("provider", sa.String(length=100), nullable=False),
        sa.Column("stream", sa.String(length=100), nullable=False),
        sa.Column("scope", sa.String(length=64), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("cursor", sa.Text(), nullable=True),
        sa.Column("has_more", sa.Boolean(), nullable=False),
        sa.Column("pages", sa.Integer(), nullable=False),
        sa.Column("records", sa.Integer(), nullable=False),
        sa.Column("record_id", sa.String(length=40), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("tenant", "provider", "stream", "scope"),
    )
    op.create_table(
        "hub_sync_records",
        sa.Column("tenant", sa.String(length=100), nullable=False),
        sa.Column("provider", sa.String(length=100), nullable=False),
        sa.Column("stream", sa.String(length=100), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("record_id", sa.String(length=40), nullable=True),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "provider", "stream", "key"),
    )
    op.create_index("ix_sync_record_job", "hub_sync_records", ["record_id"], unique=False)

    op.create_table(
        "hub_templates",
        sa.Column("tenant", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("html", sa.Text(), nullable=True),
        sa.Column("blocks", sa.Text(), nullable=True),
        sa.Column("required", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "name", "channel"),
    )
    op.create_table(
        "hub_webhook_events",
        sa.Column("provider", sa.String(length=100), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("provider", "event_id"),
    )
    op.create_table(
        "hub_provider_refs",
        sa.Column("provider", sa.String(length=100), nullable=False),
        sa.Column("reference", sa.String(length=255), nullable=False),
        sa.Column("record_id", sa.String(length=40), nullable=False),
        sa.Column("recipient_index", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["record_id"],
            ["hub_records.id"],
        ),
        sa.PrimaryKeyConstraint("provider", "reference"),
    )
    op.create_index(op.f("ix_hub_provider_refs_record_id"), "hub_provider_refs", ["record_id"], unique=False)

    op.create_table(
        "hub_recipient_outcomes",
        sa.Column("record_id", sa.String(length=40), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("provider", sa.String(length=100), nullable=True),
        sa.Column("provider_message_id", sa.String(length=255), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("delivery_status", sa.String(length=40), nullable=True),
        sa.Column("delivery_detail", sa.JSON(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["record_id"],
            ["hub_records.id"],
        ),
        sa.PrimaryKeyConstraint("record_id", "idx"),
    )


def downgrade() -> None:
    op.drop_table("hub_recipient_outcomes")
    op.drop_index(op.f("ix_hub_provider_refs_record_id"), table_name="hub_provider_refs")

    op.drop_table("hub_provider_refs")
    op.drop_table("hub_webhook_events")
    op.drop_table("hub_templates")
    op.drop_index("ix_sync_record_job", table_name="hub_sync_records")

    op.drop_table("hub_sync_records")
    op.drop_table("hub_sync_checkpoints")
    op.drop_index(op.f("ix_hub_subscriptions_tenant"), table_name="hub_subscriptions")

    op.drop_table("hub_subscriptions")
    op.drop_table("hub_stock_alerts")
    op.drop_index("ix_record_tenant_kind_created", table_name="hub_records")
    op.drop_index("ix_record_status_lease", table_name="hub_records")
    op.drop_index(op.f("ix_hub_records_provider_reference"), table_name="hub_records")

    op.drop_table("hub_records")
    op.drop_table("hub_leases")
    op.drop_index("ix_inventory_run_tenant_taken", table_name="hub_inventory_runs")

    op.drop_table("hub_inventory_runs")
    op.drop_table("hub_inventory_levels")
    op.drop_index("ix_inventory_history_snapshot", table_name="hub_inventory_history")
    op.drop_index("ix_inventory_history_sku_at", table_name="hub_inventory_history")
    op.drop_index("ix_inventory_history_item", table_name="hub_inventory_history")

    op.drop_table("hub_inventory_history")
    op.drop_index("ix_inventory_discrepancy_open", table_name="hub_inventory_discrepancies")

    op.drop_table("hub_inventory_discrepancies")
    op.drop_table("hub_idempotency")
    op.drop_index("ix_file_tenant_created", table_name="hub_files")

    op.drop_table("hub_files")
    op.drop_table("hub_event_schemas")
    op.drop_index("ix_dead_letter_tenant_created", table_name="hub_dead_letters")

    op.drop_table("hub_dead_letters")
    op.drop_index("ix_audit_tenant_at", table_name="hub_audit")
    op.drop_index("ix_audit_provider_at", table_name="hub_audit")

    op.drop_table("hub_audit")
    op.drop_index(op.f("ix_hub_api_tokens_tenant"), table_name="hub_api_tokens")

    op.drop_table("hub_api_tokens")
