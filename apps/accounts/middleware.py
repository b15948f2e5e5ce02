from urllib.parse import urlencode

from django.shortcuts import redirect
from django.urls import reverse

from .two_factor import is_enrolled, needs_second_factor


class RequireSecondFactor:
    """The admin (where the device master is edited) opens only to a session verified with a second
    factor, for the users that need one: enrolled users verify, the others enrol first."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = request.user
        if request.path.startswith("/admin/") and needs_second_factor(user) and not user.is_verified():
            step = "accounts:two_factor_verify" if is_enrolled(user) else "accounts:two_factor_setup"
            return redirect(f"{reverse(step)}?{urlencode({'next': request.get_full_path()})}")
        return self.get_response(request)
