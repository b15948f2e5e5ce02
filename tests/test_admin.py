"""Django admin: every registered model's list, search and add pages work for a plant admin."""

import pytest
from django.contrib import admin
from django.test import Client
from django.urls import reverse

from apps.alerts.models import Alert
from apps.devices.models import Device

MODELS = [model for model in admin.site._registry if model._meta.app_label in {"devices", "telemetry", "alerts"}]


@pytest.fixture
def admin_client_(plant, django_user_model):
    user = django_user_model.objects.create_superuser("root", password="root-pw-123")
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m._meta.model_name)
def test_it_lists_and_searches_every_model(admin_client_, model):
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    assert admin_client_.get(url).status_code == 200
    assert admin_client_.get(url, {"q": "dev"}).status_code == 200


def test_it_filters_devices_by_plant_hierarchy_and_links_to_the_dashboard(admin_client_):
    url = reverse("admin:devices_device_changelist")
    page = admin_client_.get(url, {"location__factory": "North", "is_active__exact": "1"}).content.decode()
    assert "dev-1" in page and "/devices/dev-1/" in page


def test_it_deactivates_devices_with_an_action(admin_client_):
    url = reverse("admin:devices_device_changelist")
    pks = list(Device.objects.values_list("pk", flat=True))
    admin_client_.post(url, {"action": "deactivate", "_selected_action": pks})
    assert not Device.objects.filter(is_active=True).exists()


def test_it_refuses_a_threshold_with_inconsistent_bands(admin_client_, plant):
    url = reverse("admin:alerts_threshold_add")
    response = admin_client_.post(
        url,
        {
            "metric": plant["temperature"].pk,
            "warning_max": 30,
            "critical_max": 20,
            "hysteresis": 0,
            "hold_seconds": 0,
            "enabled": "on",
        },
    )
    assert response.status_code == 200
    assert "Must not be below warning max." in response.content.decode()


def test_it_shows_alert_history_inline(admin_client_, plant):
    from django.utils import timezone

    alert = Alert.objects.create(device=plant["devices"][0], level="offline", opened_at=timezone.now())
    alert.events.create(kind="opened", at=timezone.now(), level="offline")
    page = admin_client_.get(reverse("admin:alerts_alert_change", args=[alert.pk])).content.decode()
    assert "opened" in page


def test_it_shows_the_thresholds_in_force_on_the_device_page(admin_client_, plant):
    from apps.alerts.models import Threshold

    Threshold.objects.create(metric=plant["temperature"], location=plant["location"], warning_max=25)
    page = admin_client_.get(reverse("admin:devices_device_change", args=[plant["devices"][0].pk])).content.decode()
    assert "temperature: temperature @ location N-ASM-1-LA" in page and "humidity: none" in page
