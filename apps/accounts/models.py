from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

KEY_PREFIX_LENGTH = 8


class APIToken(models.Model):
    """A personal API token (`Authorization: Token <key>`): acts as its user, named by them,
    read-only or allowed to write, revoked rather than deleted. Only the SHA-256 digest of the
    key is kept; the key is shown once, when it is issued."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens", verbose_name=_("user")
    )
    name = models.CharField(_("name"), max_length=100)
    prefix = models.CharField(
        _("prefix"),
        max_length=KEY_PREFIX_LENGTH,
        unique=True,
        editable=False,
        help_text=_("The clear start of the key, to look it up."),
    )
    digest = models.CharField(_("digest"), max_length=64, editable=False)
    can_write = models.BooleanField(_("may write"), default=False, help_text=_("Read-only tokens only read (GET)."))
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    revoked_at = models.DateTimeField(_("revoked"), null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name = _("API token")
        verbose_name_plural = _("API tokens")

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self):
        return self.revoked_at is None
