from django.contrib import admin

from .models import APIToken


@admin.register(APIToken)
class APITokenAdmin(admin.ModelAdmin):
    """Tokens are issued on the API tokens page or by `manage.py api_token`; here admins see and revoke them."""

    list_display = ["name", "user", "prefix", "can_write", "created_at", "revoked_at"]
    list_filter = ["can_write", ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "user__username", "prefix"]
    readonly_fields = ["user", "prefix", "can_write", "created_at"]
    fields = ["name", "user", "prefix", "can_write", "created_at", "revoked_at"]

    def has_add_permission(self, request):
        return False
