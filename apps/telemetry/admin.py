from django.contrib import admin

from .models import DeadLetter, Reading


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written by the pipeline: look, don't touch."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Reading)
class ReadingAdmin(ReadOnlyAdmin):
    list_display = ["time", "device", "metric", "value"]
    list_filter = ["metric", "device__location__factory"]
    search_fields = ["device__device_id"]
    list_select_related = ["device", "metric"]
    date_hierarchy = "time"
    show_full_result_count = False  # counting a partitioned table of millions of rows is slow


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyAdmin):
    list_display = ["received_at", "source", "topic", "reason", "detail"]
    list_filter = ["reason", "source"]
    search_fields = ["topic", "detail"]
    date_hierarchy = "received_at"
