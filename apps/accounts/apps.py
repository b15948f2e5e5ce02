from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class AccountsConfig(AppConfig):
    """A person's own credentials: personal API tokens, and a second factor (TOTP and recovery
    codes) for those who edit the device master."""

    name = "apps.accounts"
    verbose_name = _("Accounts and API access")
