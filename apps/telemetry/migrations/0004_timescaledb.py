"""Where the readings table is a TimescaleDB hypertable: rollups as continuous aggregates,
compression and retention policies (apps.telemetry.timescale). Nothing elsewhere."""

from django.db import migrations

from apps.telemetry.rollups import hour_offset, plant_tz
from apps.telemetry.timescale import create_continuous_aggregates, ensure_policies, history_beyond_readings, hypertable_in_use


def use_timescaledb(apps, schema_editor):
    if not hypertable_in_use():
        return
    odd_minutes = int(hour_offset(plant_tz()).utcoffset(None).total_seconds() // 60)
    with schema_editor.connection.cursor() as cursor:
        if history_beyond_readings(cursor):
            print("\n  telemetry: rollups hold history older than the raw readings; they stay tables (see apps/telemetry/timescale.py)")
        else:
            create_continuous_aggregates(cursor, tz_name=str(plant_tz()), odd_minutes=odd_minutes)
    ensure_policies()


class Migration(migrations.Migration):
    # Continuous aggregates are created and filled outside a transaction (TimescaleDB requires it).
    atomic = False

    dependencies = [
        ("telemetry", "0003_location_rollups"),
    ]

    operations = [
        migrations.RunPython(use_timescaledb, migrations.RunPython.noop),
    ]
