"""A person's own credentials: the API tokens page (create, name and revoke personal API tokens)
and the second factor (enrol an authenticator app, verify a session)."""

import qrcode
import qrcode.image.svg
from django import forms
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import mark_safe
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST
from django_otp import login as otp_login
from django_otp import match_token

from .models import APIToken
from .services import issue_api_token, revoke_api_token
from .two_factor import confirm_authenticator, pending_authenticator


class TokenForm(forms.ModelForm):
    class Meta:
        model = APIToken
        fields = ["name", "can_write"]


@login_required
def tokens(request):
    """The user's tokens, newest first, and a form for a new one; a created key is shown once."""
    form = TokenForm(request.POST or None)
    key = None
    if request.method == "POST" and form.is_valid():
        key = issue_api_token(user=request.user, **form.cleaned_data)[1]
        form = TokenForm()
    context = {"form": form, "key": key, "tokens": APIToken.objects.filter(user=request.user)}
    return render(request, "accounts/tokens.html", context)


@login_required
@require_POST
def revoke(request, pk):
    revoke_api_token(user=request.user, token_id=pk)
    return redirect("accounts:tokens")


class CodeForm(forms.Form):
    code = forms.CharField(
        label=_("Code"), max_length=16, widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "autofocus": True})
    )


def next_url(request):
    target = request.GET.get("next") or request.POST.get("next") or "/admin/"
    return target if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}) else "/admin/"


@login_required
def two_factor_setup(request):
    """Enrol an authenticator app: scan the QR code (or type the key), confirm with one code."""
    device = pending_authenticator(request.user)
    form = CodeForm(request.POST or None)
    if form.is_valid():
        if device.verify_token(form.cleaned_data["code"].strip()):
            codes = confirm_authenticator(device)
            otp_login(request, device)
            return render(request, "accounts/recovery_codes.html", {"codes": codes, "next": next_url(request)})
        form.add_error("code", _("That code is not right. Check the time on your phone and try the next code."))
    image = qrcode.make(device.config_url, image_factory=qrcode.image.svg.SvgPathImage, box_size=8)
    return render(
        request,
        "accounts/two_factor_setup.html",
        {
            "qr": mark_safe(image.to_string(encoding="unicode")),  # SVG made here from the device's URL
            "key": device.config_url.split("secret=")[1].split("&")[0],
            "form": form,
            "next": next_url(request),
        },
    )


@login_required
def two_factor_verify(request):
    """A code of the authenticator app, or one of the recovery codes (each works once)."""
    form = CodeForm(request.POST or None)
    if form.is_valid():
        device = match_token(request.user, form.cleaned_data["code"].strip())
        if device is not None:
            otp_login(request, device)
            return redirect(next_url(request))
        form.add_error("code", _("That code is not right."))
    return render(request, "accounts/two_factor_verify.html", {"form": form, "next": next_url(request)})
