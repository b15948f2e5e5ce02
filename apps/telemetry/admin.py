from django.contrib import admin

from .models import DeadLetter


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    """Input the pipeline rejected: look, don't touch. (Readings, keyed by (device, metric, time), are
    not in the admin: Django 5.2's admin takes no composite primary key; the API and dashboard show them.)"""

    list_display = ["received_at", "source", "topic", "reason", "detail"]
    list_filter = ["reason", "source"]
    search_fields = ["topic", "detail"]
    date_hierarchy = "received_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
