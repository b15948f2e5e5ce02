"""The HTML a page shows of one alert or one factory, for the page and for its live pushes alike.

A WebSocket consumer renders what it forwards with the same templates and selectors as the view of
the page it serves (found from the page address the page connects with), for its user, in its
language: a row that arrives live is the row a reload shows.
"""

from urllib.parse import parse_qs

from django.conf import settings
from django.http import HttpRequest, QueryDict
from django.template.loader import render_to_string
from django.urls import Resolver404, resolve

from apps.alerts.models import ANNUNCIATED_STATES, Alert, Level
from apps.devices.models import Location
from iothub.api import is_plant_staff

from .selectors import active_alerts, alert_rows, console_alerts, plant_devices, plant_tree

FEED_LENGTH = 50


def page_request(scope):
    """The page a WebSocket serves, as the request that rendered it: its path and query string
    (from `?page=` of the socket's address), user, cookies and language headers."""
    page = parse_qs(scope.get("query_string", b"").decode()).get("page", ["/"])[0]
    path, _, query = page.partition("?")
    request = HttpRequest()
    request.path = request.path_info = path if path.startswith("/") else "/"
    request.GET = QueryDict(query)
    request.user = scope["user"]
    request.session = scope.get("session")
    request.COOKIES = scope.get("cookies", {})
    headers = dict(scope.get("headers", []))
    request.META = {
        "QUERY_STRING": query,
        "HTTP_ACCEPT_LANGUAGE": headers.get(b"accept-language", b"").decode("latin-1"),
        "HTTP_HOST": headers.get(b"host", b"").decode("latin-1"),
    }
    csrf_cookie = request.COOKIES.get(settings.CSRF_COOKIE_NAME)
    if csrf_cookie:
        request.META["CSRF_COOKIE"] = csrf_cookie  # as CsrfViewMiddleware leaves it: forms post from live rows
    try:
        request.resolver_match = resolve(request.path_info)
    except Resolver404:
        request.resolver_match = None
    return request


def page_name(request):
    return request.resolver_match.url_name if request.resolver_match else None


def console_filters(query):
    """The alert console's filters from its query string."""
    return {"state": query.get("state", "active"), "level": query.get("level", ""), "loc_id": query.get("loc_id", "")}


def page_alerts(request):
    """The alerts the page shows, by the id of the list they are in: the console's filtered rows
    (and, when it lists the active alerts, the shelved ones apart), a device's alerts, the
    overview's feed of what needs attention; none on other pages."""
    page = request.resolver_match
    if page.url_name == "alerts":
        filters = console_filters(request.GET)
        lists = {"alert-rows": console_alerts(**filters)}
        if filters["state"] == "active":
            lists["shelved-rows"] = console_alerts(**{**filters, "state": Alert.State.SHELVED})
        return lists
    if page.url_name == "device":
        return {"alert-rows": alert_rows().filter(device__device_id=page.kwargs["device_id"])}
    if page.url_name == "overview":
        return {"alert-feed": alert_rows().filter(state__in=ANNUNCIATED_STATES)}
    return {}  # a page that lists no alerts (it shows the banner of a critical one)


def alert_fragments(request, alert_id):
    """The alert as the page shows it ("html": a table row, or an item of the overview's feed; ""
    when the page does not show it, or no longer), the id of the list it is in ("list"), and the
    banner of an open critical alert."""
    alert = alert_rows().filter(pk=alert_id).first()
    if alert is None:
        return {"html": "", "list": "", "banner": ""}
    shown_in = next((name for name, alerts in page_alerts(request).items() if alerts.filter(pk=alert_id).exists()), "")
    template = "dashboard/alert_item.html" if page_name(request) == "overview" else "dashboard/alert_row.html"
    context = {"a": alert, "can_act": is_plant_staff(request.user)}
    critical = alert.level == Level.CRITICAL and alert.state == Alert.State.OPEN
    return {
        "html": render_to_string(template, context, request) if shown_in else "",
        "list": shown_in,
        "banner": render_to_string("dashboard/alert_banner.html", context, request) if critical else "",
    }


def plant_filters(query):
    """The overview's filters from its query string."""
    return {"factory": query.get("factory") or None, "query": query.get("q", "").strip()}


def factory_fragments(request, factories):
    """factory name → its section of the overview, or "" where the page shows none of it (no active
    device left, or outside the page's filter); with the device count, which changes with them."""
    filters = plant_filters(request.GET)
    alerts = active_alerts()
    sections = {}
    for name in factories:
        tree = []
        if filters["factory"] in (None, name):
            tree, _ = plant_tree(factory=name, query=filters["query"], alerts=alerts)
        sections[name] = render_to_string("dashboard/plant_factory.html", {"factory": tree[0]}, request) if tree else ""
    return {"factories": sections, "summary": plant_summary(request, **filters)}


def plant_summary(request, *, factory, query):
    """Element id → the overview's device count and factory choice, which change with the sections."""
    context = plant_summary_context(factory=factory, device_count=plant_devices(factory=factory, query=query).count())
    return {
        "device-count": render_to_string("dashboard/device_count.html", context, request),
        "factory-choice": render_to_string("dashboard/factory_choice.html", context, request),
    }


def plant_summary_context(*, factory, device_count):
    return {
        "device_count": device_count,
        "factories": Location.objects.order_by("factory").values_list("factory", flat=True).distinct(),
        "factory": factory,
    }
