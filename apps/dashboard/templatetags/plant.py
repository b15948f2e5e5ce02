"""Template tags of the plant overview."""

import time
from html import escape
from urllib.parse import quote

from django import template
from django.urls import reverse
from django.utils.safestring import mark_safe
from django.utils.translation import gettext

from ..selectors import cell_status as status_class
from ..selectors import value_text

register = template.Library()

DEVICE_ID_PLACEHOLDER = "DEVICE-ID"


@register.simple_tag
def server_time_ms():
    """Now on the server, in epoch ms: live.js measures the browser's clock against it, to tell
    silent devices by the server's clock (watchSilence)."""
    return int(time.time() * 1000)


@register.filter
def most_cells(floor):
    """The most values a device row of this floor's tiles shows: its tiles are made that wide."""
    return max((len(row.cells) for tile in floor.children for row in tile.devices), default=1)


@register.filter
def cell_status(status):
    return status_class(status)


@register.filter(name="value_text")
def value_text_filter(value):
    """A live cell's text (as pushed to it), or a dash before the first value."""
    return "–" if value is None or value == "" else value_text(value)


@register.filter
def metric_title(metric):
    """ "Temperature (°C)": what a cell of this metric shows."""
    name = metric.label or metric.key
    return f"{name} ({metric.unit})" if metric.unit else name


def metric_abbreviation(metric):
    """ "RH %", "PCWT °C", "Temp °C": short enough for a cell, different for metrics of one unit."""
    words = (metric.label or metric.key.replace("_", " ")).split()
    short = "".join(w[0] for w in words).upper() if len(words) > 1 else words[0][:4].capitalize()
    return f"{short} {metric.unit}".strip()


def legend_row(metrics):
    """The column heads of the device rows below it: each metric abbreviated, named in full on hover."""
    heads = "".join(
        f'<span class="cell head" title="{escape(metric_title(m))}">{escape(metric_abbreviation(m))}</span>' for m in metrics
    )
    return f'<div class="device legend"><span class="who">{escape(gettext("Device"))}</span>{heads}</div>\n'


@register.simple_tag
def device_rows(rows):
    """One row per device of a location tile: its link, then one live cell per metric, under a
    legend row naming the metrics (again wherever the next device reports other metrics).

    Built with f-strings rather than a template loop: at 10,000 devices (30,000 cells) the loop
    costs about half a second per page, this about a twentieth. Ids and keys are escaped here;
    value texts and timestamps are numbers formatted by the selector.
    """
    url_before, url_after = reverse("dashboard:device", args=[DEVICE_ID_PLACEHOLDER]).split(DEVICE_ID_PLACEHOLDER)
    offline_text = escape(gettext("offline"))
    html, shown_metrics, titles = [], None, {}
    for row in rows:
        metrics = [metric for metric, *_ in row.cells]
        if metrics != shown_metrics:
            html.append(legend_row(metrics))
            shown_metrics = metrics
        device = escape(row.device_id)
        href = escape(f"{url_before}{quote(row.device_id, safe='')}{url_after}")
        offline = " offline" if row.offline else ""
        html.append(
            f'<div class="device{offline}" data-device="{device}" data-silent-after="{row.silent_after}">'
            f'<a href="{href}" title="{device}">{device}</a>'
            f'<span class="off-label" title="{offline_text}"><span class="off-text">{offline_text}</span></span>'
        )
        for metric, status, text, ts in row.cells:
            if metric.pk not in titles:
                titles[metric.pk] = escape(metric_title(metric))
            stamp = f' data-ts="{ts}"' if ts else ""
            html.append(
                f'<span class="cell {status}" data-cell="{device}|{escape(metric.key)}" title="{titles[metric.pk]}"{stamp}>{text}</span>'
            )
        html.append("</div>\n")
    return mark_safe("".join(html))
