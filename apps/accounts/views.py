"""The API tokens page: a logged-in user creates, names and revokes their own personal API tokens."""

from django import forms
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from .models import APIToken
from .services import issue_api_token, revoke_api_token


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
