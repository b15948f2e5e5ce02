"""Two factors for the people who edit the device master (django-otp): a TOTP authenticator app
and ten single-use recovery codes. Staff who enrolled always give a code before the admin opens;
superusers must enrol when IOTHUB_REQUIRE_2FA=1."""

from django.conf import settings
from django_otp import devices_for_user
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

RECOVERY_CODES = 10


def is_enrolled(user):
    return any(devices_for_user(user, confirmed=True))


def needs_second_factor(user):
    """Does this user give a code before the admin opens?"""
    if not user.is_authenticated or not user.is_staff:
        return False
    return is_enrolled(user) or (user.is_superuser and settings.IOTHUB_REQUIRE_2FA)


def pending_authenticator(user):
    """The user's authenticator being enrolled (its key shown as a QR code until a code confirms it)."""
    device = TOTPDevice.objects.filter(user=user, confirmed=False).first()
    return device or TOTPDevice.objects.create(user=user, name="authenticator", confirmed=False)


def confirm_authenticator(device):
    """The first right code makes it the user's one authenticator; returns new recovery codes (shown once)."""
    device.confirmed = True
    device.save(update_fields=["confirmed"])
    TOTPDevice.objects.filter(user=device.user).exclude(pk=device.pk).delete()
    return new_recovery_codes(device.user)


def new_recovery_codes(user):
    """Replace the user's recovery codes with RECOVERY_CODES new single-use ones."""
    recovery, _ = StaticDevice.objects.get_or_create(user=user, name="recovery", defaults={"confirmed": True})
    recovery.token_set.all().delete()
    codes = [StaticToken.random_token() for _ in range(RECOVERY_CODES)]
    StaticToken.objects.bulk_create([StaticToken(device=recovery, token=code) for code in codes])
    return codes
