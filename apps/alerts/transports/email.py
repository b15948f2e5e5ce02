import smtplib

from django.conf import settings
from django.core.mail import send_mail

from . import PermanentError, TemporaryError


def send(route, message):
    send_to([a.strip() for a in route.target.split(",") if a.strip()], message)


def send_to(recipients, message):
    """One message {"subject", "text"} to these addresses."""
    if not recipients:
        raise PermanentError("no recipient address")
    try:
        send_mail(message["subject"], message["text"], settings.DEFAULT_FROM_EMAIL, recipients)
    except smtplib.SMTPRecipientsRefused as e:
        raise PermanentError(f"recipients refused: {e.recipients}") from e
    except (smtplib.SMTPException, OSError) as e:
        raise TemporaryError(str(e)) from e
