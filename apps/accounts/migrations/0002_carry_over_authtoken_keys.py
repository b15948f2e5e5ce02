"""The keys of DRF's authtoken table, where an older hub has one, become personal API tokens
that may write (as they could): integrators keep the key they have."""

import hashlib

from django.db import migrations


def carry_over(apps, schema_editor):
    connection = schema_editor.connection
    if "authtoken_token" not in connection.introspection.table_names():
        return
    APIToken = apps.get_model("accounts", "APIToken")
    with connection.cursor() as cursor:
        cursor.execute("SELECT key, user_id, created FROM authtoken_token")
        rows = cursor.fetchall()
    for key, user_id, created in rows:
        token = APIToken.objects.create(
            user_id=user_id, name="API token (before named tokens)", prefix=key[:8],
            digest=hashlib.sha256(key.encode()).hexdigest(), can_write=True,
        )
        APIToken.objects.filter(pk=token.pk).update(created_at=created)


class Migration(migrations.Migration):
    dependencies = [("accounts", "0001_initial")]

    operations = [migrations.RunPython(carry_over, migrations.RunPython.noop)]
