"""What a locked-out login attempt gets (django-axes, settings.AXES_*): the API a JSON error, a
person the login page with the reason. 429 either way, on the JWT token endpoint too."""

from django.conf import settings
from django.http import JsonResponse
from django.shortcuts import render
from django.utils.translation import gettext as _
from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt.views import TokenObtainPairView


def locked_out(request, original_response, credentials):
    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
    message = _(
        "Too many failed logins for this account or from this address. Try again in %(minutes)d minutes, "
        "or ask an administrator to unlock it."
    ) % {"minutes": minutes}
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": [message]}, status=429)  # the API's one error shape
    return render(request, "registration/locked_out.html", {"message": message}, status=429)


class TokenObtainView(TokenObtainPairView):
    """JWT login, refused like the login pages while django-axes has locked the username or the
    address (429 and why, not "wrong credentials": axes marks DRF's request, which its middleware
    does not see)."""

    def post(self, request, *args, **kwargs):
        try:
            return super().post(request, *args, **kwargs)
        except AuthenticationFailed:
            if getattr(request, "axes_locked_out", False):
                return locked_out(request, None, None)
            raise
