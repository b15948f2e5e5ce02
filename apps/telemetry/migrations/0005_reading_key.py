"""Readings keyed by (device, metric, time): the surrogate id, its sequence and its index go."""

from django.db import migrations, models

from apps.telemetry.partitions import rekey_reading_table


def rekey_readings(apps, schema_editor):
    rekey_reading_table(schema_editor, apps.get_model("telemetry", "Reading"))


class Migration(migrations.Migration):

    dependencies = [
        ("telemetry", "0004_timescaledb"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveConstraint(model_name="reading", name="reading_device_metric_time"),
                migrations.RemoveField(model_name="reading", name="id"),
                migrations.AddField(
                    model_name="reading",
                    name="pk",
                    field=models.CompositePrimaryKey(
                        "device", "metric", "time", blank=True, editable=False, primary_key=True, serialize=False
                    ),
                ),
            ],
        ),
        # After the state step, so the historical Reading model has the new key (SQLite builds it).
        migrations.RunPython(rekey_readings),
    ]
