"""Every operator-facing string has its Korean translation, and the compiled catalogue is current."""

import gettext
import json
import shutil
import subprocess

import pytest
from django.core.management import call_command
from django.test import Client

from .support import ROOT

SOURCES = ["apps", "iothub", "templates", "static", "locale"]


@pytest.mark.parametrize("domain", ["django", "djangojs"])
def test_makemessages_leaves_no_untranslated_korean_string(domain, settings, tmp_path, monkeypatch):
    """The strings extracted now from the code and templates (of a copy of the sources, so the
    repository is left alone) are all translated, none fuzzy; the compiled catalogue in the
    repository is that one."""
    for source in SOURCES:
        shutil.copytree(ROOT / source, tmp_path / source, ignore=shutil.ignore_patterns("__pycache__"))
    settings.LOCALE_PATHS = [tmp_path / "locale"]
    monkeypatch.chdir(tmp_path)
    call_command("makemessages", locale=["ko"], domain=domain, no_location=True, verbosity=0)
    fresh = tmp_path / "locale" / "ko" / "LC_MESSAGES" / f"{domain}.po"
    for flag in ("--untranslated", "--only-fuzzy"):
        left = subprocess.run(["msgattrib", flag, "--no-obsolete", str(fresh)], capture_output=True, text=True, check=True).stdout
        assert "msgid" not in left, f"{flag[2:]} in {domain}.po:\n{left}"
    subprocess.run(["msgfmt", "--check-format", "-o", str(fresh.with_suffix(".mo")), str(fresh)], check=True)
    with open(fresh.with_suffix(".mo"), "rb") as f:
        expected = gettext.GNUTranslations(f)._catalog
    with open(ROOT / "locale" / "ko" / "LC_MESSAGES" / f"{domain}.mo", "rb") as f:
        shipped = gettext.GNUTranslations(f)._catalog
    assert {k: v for k, v in shipped.items() if k} == {k: v for k, v in expected.items() if k}


def test_it_speaks_the_browsers_language_and_the_chosen_one(db, django_user_model):
    client = Client()
    client.force_login(django_user_model.objects.create_user("operator", is_staff=True))
    page = client.get("/alerts/", HTTP_ACCEPT_LANGUAGE="ko-KR,ko;q=0.9").content.decode()
    assert '<html lang="ko"' in page and "알림 콘솔" in page and "알림이 없습니다." in page
    catalogue = client.get("/jsi18n/", HTTP_ACCEPT_LANGUAGE="ko").content.decode()
    assert f'"avg": {json.dumps("평균")}' in catalogue
    client.post("/i18n/setlang/", {"language": "en", "next": "/alerts/"}, HTTP_ACCEPT_LANGUAGE="ko")
    page = client.get("/alerts/", HTTP_ACCEPT_LANGUAGE="ko-KR,ko;q=0.9").content.decode()
    assert '<html lang="en"' in page and "Alert console" in page
