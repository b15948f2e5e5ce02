"""Django admin: every registered model's list, search and add pages work for a plant admin."""

import re

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
    # One row per metric: its warning and critical bands in words, and where the threshold is set.
    assert "<td>temperature</td><td>above 25 °C</td><td>—</td><td>location N-ASM-1-LA</td>" in page
    assert "<td>humidity</td><td>—</td><td>—</td><td>no threshold</td>" in page
    assert "<label>Thresholds in force:</label>" in page and "Dashboard:" in page


def import_devices(client, name, content, *, model="device"):
    """Upload a file to the admin's import page: the preview page (nothing saved yet)."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile(name, content)
    form = {"resource": "0", "format": "0" if name.endswith(".csv") else "1", "import_file": upload}
    return client.post(reverse(f"admin:{'alerts' if model == 'threshold' else 'devices'}_{model}_import"), form)


def test_it_previews_an_import_with_per_row_errors_and_saves_nothing_of_a_bad_file(admin_client_, plant):
    csv = (
        b"device_id,name,device_type,location,is_active\n"
        b"dev-1,Renamed,env,N-ASM-1-LA,1\n"
        b"dev-7,New one,env,N-ASM-1-LA,1\n"
        b"dev-8,Nowhere,env,NO-SUCH-PLACE,1\n"
    )
    page = import_devices(admin_client_, "devices.csv", csv).content.decode()
    assert "No location “NO-SUCH-PLACE”." in page
    assert 'name="import_file_name"' not in page  # nothing to confirm
    assert Device.objects.get(device_id="dev-1").name == "" and not Device.objects.filter(device_id="dev-7").exists()


def test_it_imports_devices_after_a_preview_and_exports_them_as_xlsx(admin_client_, plant):
    import io
    import re

    from openpyxl import load_workbook

    csv = "device_id,name,device_type,location,is_active\ndev-1,Renamed,env,N-ASM-1-LA,1\ndev-7,New one,env,N-ASM-1-LA,1\n"
    preview = import_devices(admin_client_, "devices.csv", csv.encode()).content.decode()
    assert "New" in preview and "Update" in preview and not Device.objects.filter(device_id="dev-7").exists()
    confirm = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', preview))
    response = admin_client_.post(reverse("admin:devices_device_process_import"), confirm)
    assert response.status_code == 302
    assert (
        Device.objects.get(device_id="dev-1").name == "Renamed"
        and Device.objects.get(device_id="dev-7").location.loc_id == "N-ASM-1-LA"
    )
    export = admin_client_.post(
        reverse("admin:devices_device_export"),
        {
            "format": "1",
            "resource": "0",
            "export_items": [],
            **{f"deviceresource_{f}": "on" for f in ("device_id", "name", "device_type", "location", "is_active")},
        },
    )
    rows = list(load_workbook(io.BytesIO(export.content)).active.values)
    assert rows[0][:5] == ("device_id", "name", "device_type", "location", "is_active")
    assert ("dev-7", "New one", "env", "N-ASM-1-LA", 1) in [r[:5] for r in rows]


def test_it_imports_thresholds_by_metric_and_scope_and_reports_inconsistent_bands(admin_client_, plant):
    import re

    from apps.alerts.models import Threshold

    header = (
        "metric,device,location,device_type,warning_min,warning_max,critical_min,critical_max,hysteresis,hold_seconds,enabled\n"
    )
    bad = header + "temperature,,,,,28,,33,1,0,1\nhumidity,dev-1,,,70,60,,,0,0,1\n"
    page = import_devices(admin_client_, "thresholds.csv", bad.encode(), model="threshold").content.decode()
    assert "Must be above warning min." in page and 'name="import_file_name"' not in page
    assert Threshold.objects.get(device=None, location=None, device_type=None).warning_max == 30
    good = header + "temperature,,,,,28,,33,1,0,1\nhumidity,dev-1,,,20,60,,,0,0,1\n"
    preview = import_devices(admin_client_, "thresholds.csv", good.encode(), model="threshold").content.decode()
    confirm = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', preview))
    admin_client_.post(reverse("admin:alerts_threshold_process_import"), confirm)
    # The global temperature threshold is updated in place; the device's humidity one is new.
    assert Threshold.objects.get(metric__key="temperature", device=None).warning_max == 28
    assert Threshold.objects.get(metric__key="humidity", device__device_id="dev-1").warning_min == 20
    assert Threshold.objects.count() == 2


def test_every_label_of_the_alerts_app_is_translated():
    """Every model of the alerts app and every field but the id carry a label of their own, in Korean too."""
    from django.apps import apps
    from django.utils import translation

    def labels():
        config = apps.get_app_config("alerts")
        names = [str(config.verbose_name)]
        for model in config.get_models():
            names += [str(model._meta.verbose_name), str(model._meta.verbose_name_plural)]
            names += [str(f.verbose_name) for f in model._meta.get_fields() if f.concrete and f.name != "id"]
        return names

    with translation.override("en"):
        english = labels()
    with translation.override("ko"):
        korean = labels()
    untranslated = [name for name, ko in zip(english, korean, strict=True) if name == ko]
    assert untranslated == []


def test_the_admin_shows_the_alerts_app_in_korean(admin_client_, plant):
    def page(name, *args):
        return admin_client_.get(reverse(f"admin:{name}", args=args), HTTP_ACCEPT_LANGUAGE="ko").content.decode()

    index = page("index")
    for label in ("알림 및 경보 관리", "임계값", "정비 기간", "알림 경로", "알림 메시지"):
        assert label in index, label
    for english in ("Alerts and alarm management", "Maintenance windows", "Notification routes"):
        assert english not in index, english
    thresholds = page("alerts_threshold_changelist")
    start = thresholds.index('id="result_list"')
    head = thresholds[start : thresholds.index("</thead>", start)]
    headers = [re.sub(r"<[^>]+>", "", text).strip() for text in re.findall(r'<div class="text">(.*?)</div>', head)]
    assert headers[1:] == ["측정 항목", "범위", "경고", "위험", "히스테리시스", "유지 시간(초)", "변화율", "예측(분 앞)", "사용"]
    window = page("alerts_maintenancewindow_add")
    for label in ("장치", "위치", "시작", "끝", "사유"):
        assert f">{label}:</label>" in window, label
    assert 'aria-label="시작 날짜"' in window


def device_rows(rows):
    return "device_id,name,device_type,location,is_active\n" + "".join(f"{','.join(row)}\n" for row in rows)


def confirm_form(preview):
    import re

    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', preview))


def test_a_few_hundred_devices_import_all_or_nothing_with_every_bad_row_reported(admin_client_, plant):
    """A file with bad rows saves none of its good ones and names every bad row; a good file is
    previewed (nothing saved), then saved whole, and the open overviews are told which factories
    changed."""
    from apps.devices.models import Location
    from apps.devices.signals import devices_changed

    south = Location.objects.create(loc_id="S-FDY-1", factory="South", building="Foundry", floor="1")
    new = [(f"imp-{n:03d}", f"Sensor {n}", "env", "N-ASM-1-LA" if n % 2 else "S-FDY-1", "1") for n in range(1, 300)]
    bad = [
        ("imp-900", "Lost", "env", "NO-SUCH-PLACE", "1"),
        ("imp-901", "Odd type", "no-such-type", "S-FDY-1", "1"),
        ("imp-010", "Twice", "env", "S-FDY-1", "1"),
        ("imp-902", "x" * 201, "env", "S-FDY-1", "1"),
    ]
    page = import_devices(admin_client_, "devices.csv", device_rows(new + bad).encode()).content.decode()
    assert 'name="import_file_name"' not in page  # nothing to confirm
    for message in (
        "No location “NO-SUCH-PLACE”.",
        "No device type “no-such-type”.",
        "“imp-010” is in the file more than once.",
        "Ensure this value has at most 200 characters (it has 201).",
    ):
        assert message in page
    assert [int(n) for n in re.findall(r"<td>(\d+) </td>", page)] == [300, 301, 302, 303]
    assert Device.objects.count() == 2

    moved = [("dev-1", "Moved", "env", "S-FDY-1", "1")]
    preview = import_devices(admin_client_, "devices.csv", device_rows(new + moved).encode()).content.decode()
    assert preview.count('<tr class="new">') == 299 and preview.count('<tr class="update">') == 1
    assert Device.objects.count() == 2  # a preview saves nothing
    before = Device.objects.get(device_id="dev-1").updated_at
    told = []
    receiver = lambda sender, factories, **kwargs: told.append(set(factories))  # noqa: E731
    devices_changed.connect(receiver)
    try:
        response = admin_client_.post(reverse("admin:devices_device_process_import"), confirm_form(preview))
    finally:
        devices_changed.disconnect(receiver)
    assert response.status_code == 302
    assert Device.objects.filter(device_id__startswith="imp-").count() == 299
    assert Device.objects.filter(location=south).count() == 150
    dev1 = Device.objects.get(device_id="dev-1")
    assert (dev1.name, dev1.location_id, dev1.updated_at > before) == ("Moved", south.pk, True)
    assert told == [{"North", "South"}]


def test_a_confirmed_import_that_meets_a_changed_plant_saves_nothing(admin_client_, plant):
    """Between the preview and the confirmation a location the file names is deleted: the import
    is rolled back as a whole and the admin says which rows failed."""
    from apps.devices.models import Location

    doomed = Location.objects.create(loc_id="S-TMP-1", factory="South")
    rows = [(f"imp-{n:03d}", "", "env", "S-TMP-1" if n == 150 else "N-ASM-1-LA", "1") for n in range(1, 201)]
    preview = import_devices(admin_client_, "devices.csv", device_rows(rows).encode()).content.decode()
    doomed.delete()
    response = admin_client_.post(reverse("admin:devices_device_process_import"), confirm_form(preview), follow=True)
    assert not Device.objects.filter(device_id__startswith="imp-").exists()
    text = response.content.decode()
    assert "Nothing was imported." in text and "row 150: location: No location “S-TMP-1”." in text


def test_the_admin_shows_this_projects_models_and_fields_in_korean(admin_client_, plant):
    index = admin_client_.get(reverse("admin:index"), HTTP_ACCEPT_LANGUAGE="ko").content.decode()
    for label in ("장치 마스터", "텔레메트리", "계정 및 API 접근", "장치 유형", "측정 항목", "거부된 메시지", "API 토큰"):
        assert label in index, label
    for english in ("Device master", "Device types", "Dead letters", "Accounts and API access"):
        assert english not in index, english
    devices = admin_client_.get(reverse("admin:devices_device_changelist"), HTTP_ACCEPT_LANGUAGE="ko").content.decode()
    start = devices.index('id="result_list"')
    head = devices[start : devices.index("</thead>", start)]
    headers = [re.sub(r"<[^>]+>", "", text).strip() for text in re.findall(r'<div class="text">(.*?)</div>', head)]
    assert headers[1:] == ["장치 ID", "이름", "장치 유형", "위치", "활성", "마지막 수신", "대시보드"]  # after the selection box
    for label in ("선택한 장치 활성화", 'data-filter-title="공장"', "실시간 보기"):
        assert label in devices, label
    tokens = admin_client_.get(reverse("admin:accounts_apitoken_changelist"), HTTP_ACCEPT_LANGUAGE="ko").content.decode()
    assert "쓰기 허용" in tokens and "폐기" in tokens


def test_a_location_import_renames_a_factory_and_tells_both_factories(admin_client_, plant):
    from apps.devices.models import Location
    from apps.devices.signals import devices_changed

    rows = "loc_id,name,factory,building,floor,area\nN-ASM-1-LA,Line A,North 2,Assembly,1,Line A\nS-NEW-1,New,South,New,1,A\n"
    preview = import_devices(admin_client_, "locations.csv", rows.encode(), model="location").content.decode()
    assert preview.count('<tr class="new">') == 1 and preview.count('<tr class="update">') == 1
    told = []
    receiver = lambda sender, factories, **kwargs: told.append(set(factories))  # noqa: E731
    devices_changed.connect(receiver)
    try:
        admin_client_.post(reverse("admin:devices_location_process_import"), confirm_form(preview))
    finally:
        devices_changed.disconnect(receiver)
    assert Location.objects.get(loc_id="N-ASM-1-LA").factory == "North 2" and Location.objects.filter(loc_id="S-NEW-1").exists()
    assert told == [{"North", "North 2", "South"}]
