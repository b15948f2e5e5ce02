"""Signals of the device master for changes that bypass model saves (queryset updates)."""

from django.dispatch import Signal

# Sent after devices changed in bulk; `factories`: the names of the factories they stand in.
devices_changed = Signal()
