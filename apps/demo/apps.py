from django.apps import AppConfig


class DemoConfig(AppConfig):
    """The zero-infrastructure demo (runhub), demo data (seed_demo) and simulated sensors (simulate)."""

    name = "apps.demo"
