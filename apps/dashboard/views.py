"""Dashboard pages: plant overview, device page, alert console. Login required for all."""

from datetime import timedelta

from django.contrib.auth.decorators import login_required
from django.db.models import Count, Q
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from apps.alerts.models import Alert
from apps.alerts.selectors import effective_thresholds
from apps.alerts.services import acknowledge_alert, resolve_alert
from apps.devices.models import Device, Location
from apps.devices.selectors import devices_at
from apps.telemetry.selectors import readings_between, realtime_status


def plant_tree(measurements, alert_counts):
    """Measurements → [(factory, [(building, [(floor, [location entry])])])] in display order."""
    tree = {}
    for m in measurements:
        loc = m["location"]
        floors = tree.setdefault(loc["factory"], {}).setdefault(loc["building"], {})
        entry = floors.setdefault(loc["floor"], {}).setdefault(
            loc["loc_id"], {"location": loc, "devices": [], "alerts": alert_counts.get(loc["loc_id"], {})}
        )
        entry["devices"].append(m)
    return [
        (factory, [(building, [(floor, list(locs.values())) for floor, locs in floors.items()]) for building, floors in buildings.items()])
        for factory, buildings in tree.items()
    ]


def open_alert_counts():
    rows = (
        Alert.objects.exclude(state=Alert.State.RESOLVED)
        .values("device__location__loc_id")
        .annotate(warning=Count("pk", filter=Q(level="warning")), critical=Count("pk", filter=~Q(level="warning")))
    )
    return {r["device__location__loc_id"]: {"warning": r["warning"], "critical": r["critical"]} for r in rows}


@login_required
def overview(request):
    factory = request.GET.get("factory") or None
    query = request.GET.get("q", "").strip()
    devices = devices_at(factory=factory, active_only=True)
    if query:
        devices = devices.filter(Q(device_id__icontains=query) | Q(name__icontains=query) | Q(location__loc_id__icontains=query) | Q(location__name__icontains=query))
    status = realtime_status(devices)
    counts = open_alert_counts()
    context = {
        "tree": plant_tree(status["measurements"], counts),
        "device_count": len(status["measurements"]),
        "factories": Location.objects.order_by("factory").values_list("factory", flat=True).distinct(),
        "factory": factory,
        "query": query,
        "open_alerts": Alert.objects.exclude(state=Alert.State.RESOLVED).select_related("device", "metric")[:50],
        "totals": {
            "warning": sum(c["warning"] for c in counts.values()),
            "critical": sum(c["critical"] for c in counts.values()),
        },
    }
    return render(request, "dashboard/overview.html", context)


@login_required
def device_detail(request, device_id):
    device = get_object_or_404(Device.objects.select_related("device_type", "location"), device_id=device_id)
    hours = max(1, min(int(request.GET.get("hours", 1) or 1), 24 * 7))
    end = timezone.now()
    start = end - timedelta(hours=hours)
    metrics = list(device.device_type.metrics.all())
    thresholds = effective_thresholds(device=device, metrics=metrics)
    series = []
    for metric in metrics:
        points = readings_between(device=device, metric=metric, start=start, end=end)
        bands = thresholds.get(metric.pk)
        series.append(
            {
                "key": metric.key,
                "label": metric.label or metric.key,
                "unit": metric.unit,
                "x": [t.isoformat() for t, _ in points],
                "y": [v for _, v in points],
                "bands": None if bands is None else {
                    "warning_min": bands.warning_min, "warning_max": bands.warning_max,
                    "critical_min": bands.critical_min, "critical_max": bands.critical_max,
                },
            }
        )
    context = {
        "device": device,
        "series": series,
        "hours": hours,
        "alerts": device.alerts.select_related("metric", "acknowledged_by")[:50],
        "status": realtime_status([device])["measurements"][0],
    }
    return render(request, "dashboard/device.html", context)


@login_required
def alert_console(request):
    alerts = Alert.objects.select_related("device__location", "metric", "acknowledged_by")
    state = request.GET.get("state", "active")
    if state == "active":
        alerts = alerts.exclude(state=Alert.State.RESOLVED)
    elif state in Alert.State.values:
        alerts = alerts.filter(state=state)
    level = request.GET.get("level")
    if level:
        alerts = alerts.filter(level=level)
    loc_id = request.GET.get("loc_id")
    if loc_id:
        alerts = alerts.filter(device__location__loc_id=loc_id)
    context = {"alerts": alerts[:200], "state": state, "level": level or "", "loc_id": loc_id or "",
               "states": ["active", *Alert.State.values, "all"], "levels": ["warning", "critical", "offline"]}
    return render(request, "dashboard/alerts.html", context)


@login_required
@require_POST
def alert_action(request, pk, action):
    change = {"acknowledge": acknowledge_alert, "resolve": resolve_alert}[action]
    get_object_or_404(Alert, pk=pk)
    change(alert_id=pk, user=request.user, note=request.POST.get("note", "")[:1000])
    next_url = request.POST.get("next", "")
    if url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}):
        return redirect(next_url)
    return redirect("dashboard:alerts")
