"""`manage.py api_token USERNAME [--name NAME] [--write]`: issue a personal API token and print its key."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from apps.accounts.services import issue_api_token


class Command(BaseCommand):
    help = "Issue a personal API token for a user and print its key (shown only now). Read-only unless --write."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="command line", help="what the token is for")
        parser.add_argument("--write", action="store_true", help="allow the token to write (POST, PUT, PATCH, DELETE)")

    def handle(self, *args, username, name, write, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user {username!r}.")
        token, key = issue_api_token(user=user, name=name, can_write=write)
        if options["verbosity"] > 0:
            access = "read and write" if write else "read-only"
            self.stderr.write(f"Token {token.name!r} of {username} ({access}); use it as: Authorization: Token <key>")
        self.stdout.write(key)
