from rest_framework import serializers

from .models import Alert


class AlertSerializer(serializers.ModelSerializer):
    """The alert shape of the API and of live pushes (architecture §6, §7)."""

    device = serializers.SlugRelatedField(slug_field="device_id", read_only=True, allow_null=True)
    metric = serializers.SlugRelatedField(slug_field="key", read_only=True, allow_null=True)
    acknowledged_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    location = serializers.CharField(source="device.location.loc_id", read_only=True, allow_null=True)

    class Meta:
        model = Alert
        fields = [
            "id",
            "device",
            "metric",
            "level",
            "state",
            "opened_at",
            "first_value",
            "peak_value",
            "last_value",
            "acknowledged_at",
            "acknowledged_by",
            "resolved_at",
            "note",
            "location",
            "source",
            "subject",
            "shelved_until",
            "predicted_critical_at",
        ]
        read_only_fields = fields


def alert_json(alert):
    return AlertSerializer(alert).data
