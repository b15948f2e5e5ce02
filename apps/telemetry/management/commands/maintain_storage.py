from django.core.management.base import BaseCommand, CommandError

from apps.telemetry.timescale import PolicySettingsError
from apps.telemetry.upkeep import maintain_storage


class Command(BaseCommand):
    help = (
        "Run the storage upkeep that beat runs hourly (partitions, retention, compression and "
        "refresh policies) now, and print one line per change."
    )

    def handle(self, *args, **options):
        try:
            changes = maintain_storage()
        except PolicySettingsError as error:
            raise CommandError(f"{error}; nothing was changed") from None
        for line in changes:
            self.stdout.write(f"maintain_storage: {line}")
        if not changes:
            self.stdout.write("maintain_storage: storage already matches the settings, nothing changed")
