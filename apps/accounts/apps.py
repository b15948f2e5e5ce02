from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """A person's own credentials: personal API tokens, and a second factor (TOTP and recovery
    codes) for those who edit the device master."""

    name = "apps.accounts"
    verbose_name = "Accounts and API access"
