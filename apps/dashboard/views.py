"""Dashboard pages: plant overview, device page, alert console, pipeline health.

Every page and JSON endpoint requires a login (anonymous users are sent to the login page);
acting on alerts requires plant staff, as in the API.
"""

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseBadRequest, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST

from apps.alerts.models import ANNUNCIATED_STATES, Alert
from apps.alerts.selectors import effective_thresholds, location_storms, shelved_alerts
from apps.alerts.services import AlertNotActive, acknowledge_alert, resolve_alert, shelve_alert, unshelve_alert
from apps.devices.models import Device, Location
from apps.devices.selectors import live_device
from apps.telemetry.selectors import device_status
from iothub.api import is_plant_staff

from .history import CUSTOM, RANGES, chart_series, history_window
from .selectors import active_alerts, device_history, pipeline_health, plant_tree, recent_dead_letters

FEED_LENGTH = 50
PIPELINE_STATS = [
    ("messages_per_s", "Messages/s"),
    ("readings_per_s", "Readings/s"),
    ("kafka_lag", "Kafka consumer lag"),
    ("latency_p99", "p99 publish → stored"),
    ("dead_letters_per_s", "Dead letters/s"),
    ("load_percent", "Load of capacity"),
]
SHELVE_CHOICES = [(15, _("15 min")), (60, _("1 hour")), (240, _("4 hours")), (480, _("8 hours")), (1440, _("24 hours"))]


def alert_list():
    """Alerts with everything their rows show, in one query."""
    return Alert.objects.select_related("device__location", "metric", "acknowledged_by")


@login_required
def overview(request):
    """The plant as factory → building → floor → location tiles with every device's latest values
    and the open warnings and criticals of each level; values and counts then follow live."""
    factory = request.GET.get("factory") or None
    query = request.GET.get("q", "").strip()
    alerts = active_alerts()
    tree, device_count = plant_tree(factory=factory, query=query, alerts=alerts)
    context = {
        "tree": tree,
        "device_count": device_count,
        "factories": Location.objects.order_by("factory").values_list("factory", flat=True).distinct(),
        "factory": factory,
        "query": query,
        "open_alerts": alert_list().filter(state__in=ANNUNCIATED_STATES)[:FEED_LENGTH],
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
        "series": chart_series(
            metrics=metrics,
            history=history,
            thresholds=effective_thresholds(device=device, metrics=metrics),
            resolution=window.resolution,
        ),
    }
    context = {
        "device": device,
        "window": window,
        "ranges": [(key, label) for key, (label, _) in RANGES.items()],
        "custom": CUSTOM,
        "chart": chart,
        "alerts": alert_list().filter(device=device)[:50],
        "can_act": is_plant_staff(request.user),
        "status": device_status(live_device(device)),
    }
    return render(request, "dashboard/device.html", context)


@login_required
def alert_console(request):
    """Alerts filtered by state, level and location; new ones appear live."""
    alerts = alert_list()
    state = request.GET.get("state", "active")
    shelved, storms = None, []
    if state == "active":  # what needs attention: a storm's alerts folded into its storm alert, shelved ones apart
        storms = [] if request.GET.get("loc_id") else location_storms()
        alerts = alerts.filter(state__in=ANNUNCIATED_STATES).exclude(device__location__loc_id__in=[s.loc_id for s in storms])
        shelved = shelved_alerts()
    elif state in Alert.State.values:
        alerts = alerts.filter(state=state)
    level = request.GET.get("level")
    if level:
        alerts = alerts.filter(level=level)
    loc_id = request.GET.get("loc_id")
    if loc_id:
        alerts = alerts.filter(device__location__loc_id=loc_id)
    context = {
        "alerts": alerts[:200],
        "state": state,
        "level": level or "",
        "loc_id": loc_id or "",
        "states": ["active", *Alert.State.values, "all"],
        "levels": ["warning", "critical", "offline"],
        "can_act": is_plant_staff(request.user),
        "shelved": shelved,
        "shelve_choices": SHELVE_CHOICES,
        "storms": storms,
        "storm_minutes": settings.IOTHUB["STORM_WINDOW"] // 60,
    }
    return render(request, "dashboard/alerts.html", context)


@login_required
@require_POST
def alert_action(request, pk, action):
    """Acknowledge or resolve an alert (plant staff), then back to the page it was done from."""
    if not is_plant_staff(request.user):
        raise PermissionDenied("Only plant staff act on alerts.")
    change = {"acknowledge": acknowledge_alert, "resolve": resolve_alert}[action]
    get_object_or_404(Alert, pk=pk)
    change(alert_id=pk, user=request.user, note=request.POST.get("note", "")[:1000])
    return back_to_console(request)


@login_required
@require_POST
def alert_shelving(request, pk, action):
    """Shelve an alert for one of SHELVE_CHOICES, or unshelve it (plant staff); a resolved alert stays as it is."""
    if not is_plant_staff(request.user):
        raise PermissionDenied("Only plant staff act on alerts.")
    get_object_or_404(Alert, pk=pk)
    note = request.POST.get("note", "")[:1000]
    try:
        if action == "shelve":
            minutes = int(request.POST.get("minutes", ""))
            if minutes not in dict(SHELVE_CHOICES):
                raise ValueError(minutes)
            shelve_alert(alert_id=pk, user=request.user, minutes=minutes, note=note)
        else:
            unshelve_alert(alert_id=pk, user=request.user, note=note)
    except ValueError:
        return HttpResponseBadRequest(_("Choose how long to shelve the alert."))
    except AlertNotActive:
        pass  # resolved meanwhile: the page shows it so
    return back_to_console(request)


def back_to_console(request):
    """Back to the page the action was done from (if it is one of ours), else the console."""
    next_url = request.POST.get("next", "")
    if url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}):
        return redirect(next_url)
    return redirect("dashboard:alerts")


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
