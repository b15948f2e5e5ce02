from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """People's own security: a second factor (TOTP and recovery codes) for those who edit the device master."""

    name = "apps.accounts"
