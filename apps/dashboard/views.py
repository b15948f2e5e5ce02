"""Dashboard pages: plant overview, device page, alert console, pipeline health.

Every page and JSON endpoint requires a login (anonymous users are sent to the login page);
acting on alerts requires plant staff, as in the API.
"""

from contextlib import suppress
from datetime import UTC, datetime, time, timedelta

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseBadRequest, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.dates import MONTHS, MONTHS_3, WEEKDAYS, WEEKDAYS_ABBR
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import get_language, gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST

from apps.alerts.kpis import FLOOD_ALARMS, MANAGEABLE_PER_HOUR, alarm_kpis, alarms_per_10min, per_hour
from apps.alerts.models import Alert
from apps.alerts.selectors import effective_thresholds, location_storms
from apps.alerts.services import AlertNotActive, acknowledge_alert, resolve_alert, shelve_alert, unshelve_alert
from apps.devices.models import Device, Location
from apps.devices.selectors import live_device, locations_at
from apps.telemetry.rollups import plant_tz
from apps.telemetry.selectors import device_status
from iothub.api import is_plant_staff

from .forms import KpiPeriodForm
from .fragments import FEED_LENGTH, console_filters, page_alerts, plant_filters, plant_summary_context
from .history import CUSTOM, RANGES, chart_series, history_window
from .selectors import (
    ALERT_LEVELS,
    ALERT_STATES,
    SHELVE_CHOICES,
    active_alerts,
    alert_rows,
    device_history,
    pipeline_health,
    plant_tree,
    recent_dead_letters,
)

DEVICE_ALERTS = 50  # the newest alerts a device page lists
CONSOLE_ALERTS = 200
PIPELINE_STATS = [
    ("messages_per_s", _("Messages/s")),
    ("readings_per_s", _("Readings/s")),
    ("kafka_lag", _("Kafka consumer lag")),
    ("latency_p99", _("p99 publish → stored")),
    ("dead_letters_per_s", _("Dead letters/s")),
    ("load_percent", _("Load of capacity")),
]

ALERT_ACTIONS = {"acknowledge": acknowledge_alert, "resolve": resolve_alert, "shelve": shelve_alert, "unshelve": unshelve_alert}


def plotly_locale():
    """Month and day names of the active language for Plotly's date axes (Sunday first, as Plotly wants)."""
    sunday_first = [6, 0, 1, 2, 3, 4, 5]
    return {
        "name": get_language(),
        "months": [str(MONTHS[m]) for m in range(1, 13)],
        "shortMonths": [str(MONTHS_3[m]).capitalize() for m in range(1, 13)],
        "days": [str(WEEKDAYS[d]) for d in sunday_first],
        "shortDays": [str(WEEKDAYS_ABBR[d]) for d in sunday_first],
    }


@login_required
def overview(request):
    """The plant as factory → building → floor → location tiles with every device's latest values
    and the open warnings and criticals of each level; values and counts then follow live."""
    filters = plant_filters(request.GET)
    alerts = active_alerts()
    tree, device_count = plant_tree(**filters, alerts=alerts)
    context = {
        **plant_summary_context(factory=filters["factory"], device_count=device_count),
        "tree": tree,
        "query": filters["query"],
        "open_alerts": page_alerts(request)["alert-feed"][:FEED_LENGTH],
        "feed_length": FEED_LENGTH,
        "totals": {kind: sum(a.kind == kind for a in alerts) for kind in ("warning", "critical")},
        "active_alerts": {a.id: [a.kind, a.loc_id] for a in alerts},
    }
    return render(request, "dashboard/overview.html", context)


@login_required
def device_detail(request, device_id):
    """One device: its latest values, a history chart per metric over the chosen range (raw
    readings up to a day, hourly or daily rollups beyond) with threshold bands, and its alerts."""
    device = get_object_or_404(Device.objects.select_related("device_type", "location"), device_id=device_id)
    window = history_window(request.GET, now=timezone.now())
    metrics = list(device.device_type.metrics.all())
    history = device_history(device=device, metrics=metrics, start=window.start, end=window.end, resolution=window.resolution)
    chart = {
        "resolution": window.resolution,
        "live": window.live,
        "start": window.start.isoformat(),
        "end": window.end.isoformat(),
        "time_zone": settings.TIME_ZONE,
        "no_data": gettext("No data in this range"),
        "locale": plotly_locale(),
        "series": chart_series(
            metrics=metrics,
            history=history,
            thresholds=effective_thresholds(device=device, metrics=metrics),
            resolution=window.resolution,
        ),
    }
    status = device_status(live_device(device))
    latest = status["metrics"]
    context = {
        "device": device,
        "window": window,
        "ranges": [(key, label) for key, (label, _) in RANGES.items()],
        "custom": CUSTOM,
        "chart": chart,
        "alerts": alert_rows().filter(device=device)[:DEVICE_ALERTS],
        "can_act": is_plant_staff(request.user),
        "now": [(m, latest.get(m.key, {})) for m in metrics],
        "offline": status["offline"],
        "formulas": {m.key: m.expression for m in metrics if m.is_calculated},
    }
    return render(request, "dashboard/device.html", context)


@login_required
def alert_console(request):
    """Alerts filtered by state, level and location; new ones appear live."""
    filters = console_filters(request.GET)
    lists = page_alerts(request)
    context = {
        "alerts": lists["alert-rows"][:CONSOLE_ALERTS],
        **filters,
        "states": ALERT_STATES,
        "levels": ALERT_LEVELS,
        "can_act": is_plant_staff(request.user),
        # What needs attention: a storm's alerts folded into its storm alert, shelved alerts apart.
        "storms": location_storms() if filters["state"] == "active" and not filters["loc_id"] else [],
        "storm_minutes": settings.IOTHUB["STORM_WINDOW"] // 60,
        "shelved": lists["shelved-rows"][:CONSOLE_ALERTS] if "shelved-rows" in lists else None,
    }
    return render(request, "dashboard/alerts.html", context)


@login_required
@require_POST
def alert_action(request, pk, action):
    """Acknowledge, resolve, shelve (for one of SHELVE_CHOICES) or unshelve an alert (plant staff),
    then back to the page it was done from."""
    if not is_plant_staff(request.user):
        raise PermissionDenied(gettext("Only plant staff act on alerts."))
    get_object_or_404(Alert, pk=pk)
    fields = {"note": request.POST.get("note", "")[:1000]}
    if action == "shelve":
        minutes = request.POST.get("minutes", "")
        if not minutes.isdigit() or int(minutes) not in dict(SHELVE_CHOICES):
            return HttpResponseBadRequest(gettext("Choose how long to shelve the alert."))
        fields["minutes"] = int(minutes)
    with suppress(AlertNotActive):  # the page shows it resolved
        ALERT_ACTIONS[action](alert_id=pk, user=request.user, **fields)
    next_url = request.POST.get("next", "")
    if url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}):
        return redirect(next_url)
    return redirect("dashboard:alerts")


@login_required
def alarm_kpis_page(request):
    """Alarm KPIs (EEMUA 191 / ISA-18.2) of chosen plant-local days for the plant, a factory or a
    location, with charts against EEMUA 191's targets and the most frequent alarms (plant staff)."""
    if not is_plant_staff(request.user):
        raise PermissionDenied(gettext("Only plant staff see the alarm KPIs."))
    tz = plant_tz()
    today = timezone.now().astimezone(tz).date()
    factories = Location.objects.order_by("factory").values_list("factory", flat=True).distinct()
    form = KpiPeriodForm(request.GET or {"start": today - timedelta(days=6), "end": today}, factories=factories)
    context = {"form": form, "manageable": MANAGEABLE_PER_HOUR, "flood": FLOOD_ALARMS, "kpis": None}
    if form.is_valid():
        choice = form.cleaned_data
        start = datetime.combine(choice["start"], time.min, tzinfo=tz)
        end = datetime.combine(choice["end"] + timedelta(days=1), time.min, tzinfo=tz)
        where = {"factory": choice["factory"] or None, "loc_id": choice["loc_id"] or None}
        locations = locations_at(**where) if any(where.values()) else None
        counts = alarms_per_10min(start=start, end=end, locations=locations)
        context["kpis"] = alarm_kpis(start=start, end=end, locations=locations, now=timezone.now(), counts=counts)
        context["chart"] = kpi_chart(start=start, counts=counts, tz=tz)
    return render(request, "dashboard/kpis.html", context)


def kpi_chart(*, start, counts, tz):
    """The KPI charts' data: the alarms of every 10-minute period and every hour at plant-local
    times, EEMUA 191's limits and the chart labels in the page's language."""
    first = start.astimezone(UTC)

    def local(period):
        return (first + period * timedelta(minutes=10)).astimezone(tz).strftime("%Y-%m-%d %H:%M")

    return {
        "periods": [local(i) for i in range(len(counts))],
        "per_10min": counts,
        "hours": [local(i) for i in range(0, len(counts), 6)],
        "per_hour": per_hour(counts),
        "manageable": MANAGEABLE_PER_HOUR,
        "flood": FLOOD_ALARMS,
        "locale": plotly_locale(),
        "labels": {
            "alarms": gettext("alarms"),
            "manageable": gettext("EEMUA 191: at most %(n)s per hour is manageable") % {"n": MANAGEABLE_PER_HOUR},
            "flood": gettext("flood: more than %(n)s in 10 minutes") % {"n": FLOOD_ALARMS},
        },
    }


@login_required
def pipeline_health_page(request):
    """Ingest throughput, Kafka lag, latency and dead letters, polled live from pipeline_json;
    the latest dead letters for plant staff."""
    staff = is_plant_staff(request.user)
    context = {
        "health": pipeline_health(),
        "stats": PIPELINE_STATS,
        "dead_letters": recent_dead_letters() if staff else None,
    }
    return render(request, "dashboard/health.html", context)


@login_required
def pipeline_json(request):
    """The pipeline-health figures the health page polls every 2 s."""
    return JsonResponse(pipeline_health())
