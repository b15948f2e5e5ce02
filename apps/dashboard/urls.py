from django.urls import path

from . import views

app_name = "dashboard"
urlpatterns = [
    path("", views.overview, name="overview"),
    path("devices/<str:device_id>/", views.device_detail, name="device"),
    path("alerts/", views.alert_console, name="alerts"),
    path("alerts/<int:pk>/acknowledge/", views.alert_action, {"action": "acknowledge"}, name="alert-acknowledge"),
    path("alerts/<int:pk>/resolve/", views.alert_action, {"action": "resolve"}, name="alert-resolve"),
    path("alerts/<int:pk>/shelve/", views.alert_action, {"action": "shelve"}, name="alert-shelve"),
    path("alerts/<int:pk>/unshelve/", views.alert_action, {"action": "unshelve"}, name="alert-unshelve"),
    path("alarms/kpis/", views.alarm_kpis_page, name="kpis"),
    path("health/", views.pipeline_health_page, name="health"),
    path("health/pipeline.json", views.pipeline_json, name="pipeline-json"),
]
