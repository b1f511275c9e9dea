"""The built-in notification templates, one per event the inventory system reports.

Each template has an email (subject, text, HTML), an SMS (one short line) and a chat variant (text,
plus Slack Block Kit ``blocks``). They are Jinja2 sources rendered in a sandbox with the notification's
``data`` as variables. Optional variables are tested with ``is defined`` so the templates also render
under ``StrictUndefined``. Chat blocks insert every value through ``|tojson`` (valid JSON whatever the
value holds) and as ``plain_text``, so a value cannot inject Slack markup or mentions.

Variables:

* ``low_stock_alert``: sku, location, current_stock, threshold; optional item_name.
* ``expiry_alert``: sku, expiry_date, quantity; optional location, batch.
* ``daily_report``: date; optional summary (a mapping of figure -> value) and lines (a list of strings).
* ``purchase_order_created``: po_number, supplier, total; optional currency, items (mappings with sku,
  quantity and optionally name, unit_price), expected_date.
* ``critical_alert``: title, message; optional severity (default ``critical``).
* ``custom``: subject, message (SMS needs only message).

Tenants replace any of these with their own templates in ``hub.yaml``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hub import hookimpl


@dataclass(frozen=True)
class TemplateSource:
    name: str
    channel: str
    text: str
    required: tuple[str, ...]
    subject: str | None = None
    html: str | None = None
    blocks: str | None = None


# Shared HTML frame: inline styles only, as mail clients ignore <style> sheets.
_HTML_OPEN = (
    '<!DOCTYPE html>\n<html><body style="font-family: Arial, Helvetica, sans-serif; color: #222; margin: 0;">\n'
    '<div style="max-width: 600px; margin: 0 auto; padding: 24px;">\n'
)
_HTML_CLOSE = '<p style="color: #888; font-size: 12px; margin-top: 32px;">Sent by the integration hub.</p>\n</div></body></html>\n'


def _html(body: str) -> str:
    return _HTML_OPEN + body + _HTML_CLOSE


# --- low_stock_alert -----------------------------------------------------------------------------

_LOW_STOCK_NAME = "{{ item_name ~ ' (' ~ sku ~ ')' if item_name is defined and item_name else sku }}"

LOW_STOCK_ALERT = (
    TemplateSource(
        "low_stock_alert",
        "email",
        subject="Low stock: " + _LOW_STOCK_NAME + " at {{ location }}",
        text=(
            "Low stock alert\n\n"
            "Item: " + _LOW_STOCK_NAME + "\n"
            "Location: {{ location }}\n"
            "Current stock: {{ current_stock }}\n"
            "Threshold: {{ threshold }}\n\n"
            "Stock is at or below the reorder threshold. Consider creating a purchase order.\n"
        ),
        html=_html(
            '<h2 style="color: #b45309;">Low stock alert</h2>\n'
            "<p>Stock of <strong>" + _LOW_STOCK_NAME + "</strong> at <strong>{{ location }}</strong> is at or"
            " below its reorder threshold.</p>\n"
            '<table style="border-collapse: collapse;">\n'
            '<tr><td style="padding: 4px 12px 4px 0;">Current stock</td><td><strong>{{ current_stock }}</strong></td></tr>\n'
            '<tr><td style="padding: 4px 12px 4px 0;">Threshold</td><td>{{ threshold }}</td></tr>\n'
            "</table>\n"
            "<p>Consider creating a purchase order.</p>\n"
        ),
        required=("sku", "location", "current_stock", "threshold"),
    ),
    TemplateSource(
        "low_stock_alert",
        "sms",
        text="LOW STOCK {{ sku|truncate(30, True, '') }} @ {{ location|truncate(30, True, '') }}:"
        " {{ current_stock }} left (threshold {{ threshold }})",
        required=("sku", "location", "current_stock", "threshold"),
    ),
    TemplateSource(
        "low_stock_alert",
        "chat",
        text=":warning: Low stock: " + _LOW_STOCK_NAME + " at {{ location }}: {{ current_stock }} left"
        " (threshold {{ threshold }})",
        blocks=r"""[
  {"type": "header", "text": {"type": "plain_text", "text": {{ ("Low stock: " ~ sku)|truncate(150, True, "")|tojson }}}},
  {"type": "section", "fields": [
    {"type": "plain_text", "text": {{ ("Item: " ~ (item_name if item_name is defined and item_name else sku))|tojson }}},
    {"type": "plain_text", "text": {{ ("Location: " ~ location)|tojson }}},
    {"type": "plain_text", "text": {{ ("Current stock: " ~ current_stock)|tojson }}},
    {"type": "plain_text", "text": {{ ("Threshold: " ~ threshold)|tojson }}}
  ]},
  {"type": "context", "elements": [{"type": "plain_text", "text": "Stock is at or below the reorder threshold."}]}
]""",
        required=("sku", "location", "current_stock", "threshold"),
    ),
)

# --- expiry_alert --------------------------------------------------------------------------------

EXPIRY_ALERT = (
    TemplateSource(
        "expiry_alert",
        "email",
        subject="Expiring stock: {{ sku }} ({{ quantity }} units) on {{ expiry_date }}",
        text=(
            "Expiry alert\n\n"
            "SKU: {{ sku }}\n"
            "{% if batch is defined and batch %}Batch: {{ batch }}\n{% endif %}"
            "{% if location is defined and location %}Location: {{ location }}\n{% endif %}"
            "Quantity: {{ quantity }}\n"
            "Expiry date: {{ expiry_date }}\n\n"
            "Use, move or write off this stock before it expires.\n"
        ),
        html=_html(
            '<h2 style="color: #b45309;">Expiry alert</h2>\n'
            "<p><strong>{{ quantity }}</strong> units of <strong>{{ sku }}</strong> expire on"
            " <strong>{{ expiry_date }}</strong>.</p>\n"
            '<table style="border-collapse: collapse;">\n'
            "{% if batch is defined and batch %}"
            '<tr><td style="padding: 4px 12px 4px 0;">Batch</td><td>{{ batch }}</td></tr>\n'
            "{% endif %}"
            "{% if location is defined and location %}"
            '<tr><td style="padding: 4px 12px 4px 0;">Location</td><td>{{ location }}</td></tr>\n'
            "{% endif %}"
            "</table>\n"
            "<p>Use, move or write off this stock before it expires.</p>\n"
        ),
        required=("sku", "expiry_date", "quantity"),
    ),
    TemplateSource(
        "expiry_alert",
        "sms",
        text="EXPIRY {{ sku|truncate(30, True, '') }}: {{ quantity }} units expire {{ expiry_date }}"
        "{% if location is defined and location %} @ {{ location|truncate(30, True, '') }}{% endif %}"
        "{% if batch is defined and batch %} (batch {{ batch|truncate(20, True, '') }}){% endif %}",
        required=("sku", "expiry_date", "quantity"),
    ),
    TemplateSource(
        "expiry_alert",
        "chat",
        text=":hourglass: {{ quantity }} units of {{ sku }} expire on {{ expiry_date }}"
        "{% if location is defined and location %} at {{ location }}{% endif %}",
        blocks=r"""[
  {"type": "header", "text": {"type": "plain_text", "text": {{ ("Expiring stock: " ~ sku)|truncate(150, True, "")|tojson }}}},
  {"type": "section", "fields": [
    {"type": "plain_text", "text": {{ ("SKU: " ~ sku)|tojson }}},
    {"type": "plain_text", "text": {{ ("Quantity: " ~ quantity)|tojson }}},
    {"type": "plain_text", "text": {{ ("Expiry date: " ~ expiry_date)|tojson }}}
    {%- if location is defined and location %},
    {"type": "plain_text", "text": {{ ("Location: " ~ location)|tojson }}}
    {%- endif %}
    {%- if batch is defined and batch %},
    {"type": "plain_text", "text": {{ ("Batch: " ~ batch)|tojson }}}
    {%- endif %}
  ]}
]""",
        required=("sku", "expiry_date", "quantity"),
    ),
)

# --- daily_report --------------------------------------------------------------------------------

# ``summary`` is a mapping of figure name -> value; ``lines`` a list of free-text lines.
_HAS_SUMMARY = "summary is defined and summary is mapping and summary"
_HAS_LINES = "lines is defined and lines is iterable and lines is not string and lines"

DAILY_REPORT = (
    TemplateSource(
        "daily_report",
        "email",
        subject="Daily inventory report for {{ date }}",
        text=(
            "Daily inventory report: {{ date }}\n\n"
            "{% if " + _HAS_SUMMARY + " %}"
            "{% for name, value in summary|dictsort %}{{ name|replace('_', ' ')|capitalize }}: {{ value }}\n{% endfor %}\n"
            "{% endif %}"
            "{% if " + _HAS_LINES + " %}{% for line in lines %}- {{ line }}\n{% endfor %}{% endif %}"
            "{% if not (" + _HAS_SUMMARY + ") and not (" + _HAS_LINES + ") %}Nothing to report.\n{% endif %}"
        ),
        html=_html(
            "<h2>Daily inventory report: {{ date }}</h2>\n"
            "{% if " + _HAS_SUMMARY + " %}"
            '<table style="border-collapse: collapse;">\n'
            "{% for name, value in summary|dictsort %}"
            '<tr><td style="padding: 4px 12px 4px 0;">{{ name|replace("_", " ")|capitalize }}</td>'
            "<td><strong>{{ value }}</strong></td></tr>\n"
            "{% endfor %}"
            "</table>\n"
            "{% endif %}"
            "{% if "
            + _HAS_LINES
            + " %}<ul>\n{% for line in lines %}<li>{{ line }}</li>\n{% endfor %}</ul>\n{% endif %}"
            "{% if not (" + _HAS_SUMMARY + ") and not (" + _HAS_LINES + ") %}<p>Nothing to report.</p>\n{% endif %}"
        ),
        required=("date",),
    ),
    TemplateSource(
        "daily_report",
        "sms",
        text="Daily report {{ date }}"
        "{% if " + _HAS_SUMMARY + " %}: "
        "{% for name, value in (summary|dictsort)[:4] %}{{ name|replace('_', ' ')|truncate(20, True, '') }} {{ value }}"
        "{% if not loop.last %}, {% endif %}{% endfor %}"
        "{% endif %}",
        required=("date",),
    ),
    TemplateSource(
        "daily_report",
        "chat",
        text=":bar_chart: Daily inventory report for {{ date }}"
        "{% if " + _HAS_SUMMARY + " %}"
        "{% for name, value in summary|dictsort %}\n{{ name|replace('_', ' ')|capitalize }}: {{ value }}{% endfor %}"
        "{% endif %}",
        # Slack allows at most 10 fields per section and 3000 characters per text.
        blocks=r"""[
  {"type": "header", "text": {"type": "plain_text", "text": {{ ("Daily inventory report: " ~ date)|truncate(150, True, "")|tojson }}}}
  {%- if summary is defined and summary is mapping and summary %},
  {"type": "section", "fields": [
    {%- for name, value in (summary|dictsort)[:10] %}
    {"type": "plain_text", "text": {{ ((name|replace("_", " ")|capitalize) ~ ": " ~ value)|truncate(1900, True)|tojson }}}{% if not loop.last %},{% endif %}
    {%- endfor %}
  ]}
  {%- endif %}
  {%- if lines is defined and lines is iterable and lines is not string and lines %},
  {"type": "section", "text": {"type": "plain_text", "text": {{ ("- " ~ lines|join("\n- "))|truncate(2900, True)|tojson }}}}
  {%- endif %}
]""",
        required=("date",),
    ),
)

# --- purchase_order_created ----------------------------------------------------------------------

_CURRENCY = "{{ currency ~ ' ' if currency is defined and currency else '' }}"
_HAS_ITEMS = "items is defined and items is iterable and items is not string and items"

PURCHASE_ORDER_CREATED = (
    TemplateSource(
        "purchase_order_created",
        "email",
        subject="Purchase order {{ po_number }} created for {{ supplier }}",
        text=(
            "Purchase order {{ po_number }} was created.\n\n"
            "Supplier: {{ supplier }}\n"
            "Total: " + _CURRENCY + "{{ total }}\n"
            "{% if expected_date is defined and expected_date %}Expected delivery: {{ expected_date }}\n{% endif %}"
            "{% if " + _HAS_ITEMS + " %}\nItems:\n"
            "{% for item in items %}"
            "{% if item is mapping %}- {{ item.quantity|default('') }} x {{ item.sku|default('') }}"
            "{% if item.name is defined and item.name %} ({{ item.name }}){% endif %}"
            "{% if item.unit_price is defined and item.unit_price %} @ {{ item.unit_price }}{% endif %}"
            "{% else %}- {{ item }}{% endif %}\n"
            "{% endfor %}"
            "{% endif %}"
        ),
        html=_html(
            "<h2>Purchase order {{ po_number }}</h2>\n"
            "<p>A purchase order was created for <strong>{{ supplier }}</strong>.</p>\n"
            '<table style="border-collapse: collapse;">\n'
            '<tr><td style="padding: 4px 12px 4px 0;">Total</td><td><strong>'
            + _CURRENCY
            + "{{ total }}</strong></td></tr>\n"
            "{% if expected_date is defined and expected_date %}"
            '<tr><td style="padding: 4px 12px 4px 0;">Expected delivery</td><td>{{ expected_date }}</td></tr>\n'
            "{% endif %}"
            "</table>\n"
            "{% if " + _HAS_ITEMS + " %}"
            '<table style="border-collapse: collapse; margin-top: 16px;">\n'
            '<tr><th style="text-align: left; padding: 4px 12px 4px 0;">SKU</th>'
            '<th style="text-align: left; padding: 4px 12px 4px 0;">Item</th>'
            '<th style="text-align: right; padding: 4px 12px 4px 0;">Quantity</th>'
            '<th style="text-align: right; padding: 4px 0;">Unit price</th></tr>\n'
            "{% for item in items %}"
            "{% if item is mapping %}"
            '<tr><td style="padding: 4px 12px 4px 0;">{{ item.sku|default("") }}</td>'
            '<td style="padding: 4px 12px 4px 0;">{{ item.name|default("") }}</td>'
            '<td style="text-align: right; padding: 4px 12px 4px 0;">{{ item.quantity|default("") }}</td>'
            '<td style="text-align: right; padding: 4px 0;">{{ item.unit_price|default("") }}</td></tr>\n'
            "{% else %}"
            '<tr><td colspan="4" style="padding: 4px 0;">{{ item }}</td></tr>\n'
            "{% endif %}"
            "{% endfor %}"
            "</table>\n"
            "{% endif %}"
        ),
        required=("po_number", "supplier", "total"),
    ),
    TemplateSource(
        "purchase_order_created",
        "sms",
        text="PO {{ po_number|truncate(30, True, '') }} created: {{ supplier|truncate(40, True) }}, "
        + _CURRENCY
        + "{{ total }}"
        "{% if expected_date is defined and expected_date %}, due {{ expected_date }}{% endif %}",
        required=("po_number", "supplier", "total"),
    ),
    TemplateSource(
        "purchase_order_created",
        "chat",
        text=":package: Purchase order {{ po_number }} created for {{ supplier }}: " + _CURRENCY + "{{ total }}",
        blocks=r"""[
  {"type": "header", "text": {"type": "plain_text", "text": {{ ("Purchase order " ~ po_number)|truncate(150, True, "")|tojson }}}},
  {"type": "section", "fields": [
    {"type": "plain_text", "text": {{ ("Supplier: " ~ supplier)|tojson }}},
    {"type": "plain_text", "text": {{ ("Total: " ~ (currency ~ " " if currency is defined and currency else "") ~ total)|tojson }}}
    {%- if expected_date is defined and expected_date %},
    {"type": "plain_text", "text": {{ ("Expected delivery: " ~ expected_date)|tojson }}}
    {%- endif %}
  ]}
  {%- if items is defined and items is iterable and items is not string and items %}
  {%- set item_lines %}
    {%- for item in items[:30] %}
      {%- if item is mapping %}
- {{ item.quantity|default("") }} x {{ item.sku|default("") }}{% if item.name is defined and item.name %} ({{ item.name }}){% endif %}
      {%- else %}
- {{ item }}
      {%- endif %}
    {%- endfor %}
  {%- endset %},
  {"type": "section", "text": {"type": "plain_text", "text": {{ ("Items:" ~ item_lines)|truncate(2900, True)|tojson }}}}
  {%- endif %}
]""",
        required=("po_number", "supplier", "total"),
    ),
)

# --- critical_alert ------------------------------------------------------------------------------

_SEVERITY = "{{ (severity if severity is defined and severity else 'critical')|upper }}"

CRITICAL_ALERT = (
    TemplateSource(
        "critical_alert",
        "email",
        subject="[" + _SEVERITY + "] {{ title }}",
        text=_SEVERITY + ": {{ title }}\n\n{{ message }}\n",
        html=_html(
            '<h2 style="color: #b91c1c;">' + _SEVERITY + ": {{ title }}</h2>\n"
            '<p style="white-space: pre-wrap;">{{ message }}</p>\n'
        ),
        required=("title", "message"),
    ),
    TemplateSource(
        "critical_alert",
        "sms",
        text=_SEVERITY + ": {{ title|truncate(50, True) }} - {{ message|truncate(80, True) }}",
        required=("title", "message"),
    ),
    TemplateSource(
        "critical_alert",
        "chat",
        text=":rotating_light: *" + _SEVERITY + "*: {{ title }}\n{{ message }}",
        blocks=r"""[
  {"type": "header", "text": {"type": "plain_text", "text": {{ ((severity if severity is defined and severity else "critical")|upper ~ ": " ~ title)|truncate(150, True)|tojson }}}},
  {"type": "section", "text": {"type": "plain_text", "text": {{ message|string|truncate(2900, True)|tojson }}}}
]""",
        required=("title", "message"),
    ),
)

# --- custom --------------------------------------------------------------------------------------

CUSTOM = (
    TemplateSource(
        "custom",
        "email",
        subject="{{ subject }}",
        text="{{ message }}\n",
        html=_html('<h2>{{ subject }}</h2>\n<p style="white-space: pre-wrap;">{{ message }}</p>\n'),
        required=("subject", "message"),
    ),
    TemplateSource(
        "custom",
        "sms",
        # An SMS has no subject line: use it as a prefix when given. The caller's own words are not
        # truncated: a long custom SMS is sent in several segments rather than cut.
        text="{% if subject is defined and subject %}{{ subject }}: {% endif %}{{ message }}",
        required=("message",),
    ),
    TemplateSource(
        "custom",
        "chat",
        text="*{{ subject }}*\n{{ message }}",
        blocks=r"""[
  {"type": "header", "text": {"type": "plain_text", "text": {{ subject|string|truncate(150, True)|tojson }}}},
  {"type": "section", "text": {"type": "plain_text", "text": {{ message|string|truncate(2900, True)|tojson }}}}
]""",
        required=("subject", "message"),
    ),
)

BUILTIN_TEMPLATES: tuple[TemplateSource, ...] = (
    *LOW_STOCK_ALERT,
    *EXPIRY_ALERT,
    *DAILY_REPORT,
    *PURCHASE_ORDER_CREATED,
    *CRITICAL_ALERT,
    *CUSTOM,
)


@hookimpl
def register_templates(register: Callable[..., Any]) -> None:
    for template in BUILTIN_TEMPLATES:
        register(
            template.name,
            template.channel,
            text=template.text,
            subject=template.subject,
            html=template.html,
            blocks=template.blocks,
            required=template.required,
        )
