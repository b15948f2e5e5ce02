from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class AlertsConfig(AppConfig):
    """Thresholds, alerts and notifications."""

    name = "apps.alerts"
    verbose_name = _("Alerts and alarm management")

    def ready(self):
        from apps.telemetry.handoff import AlertRules, provide_alert_rules

        from .models import Threshold
        from .thresholds import load_threshold_index, significant_readings

        # Ingest learns from here which readings matter to alerts and where stored batches go.
        provide_alert_rules(
            AlertRules(
                tables=(Threshold,),
                load=load_threshold_index,
                significant_readings=significant_readings,
                evaluation_task="apps.alerts.tasks.evaluate_batch",
            )
        )
