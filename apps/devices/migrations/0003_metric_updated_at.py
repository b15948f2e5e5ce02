import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("devices", "0002_device_credentials")]

    operations = [
        migrations.AddField(
            model_name="metric",
            name="updated_at",
            field=models.DateTimeField(auto_now=True, default=django.utils.timezone.now),
            preserve_default=False,
        ),
    ]
