"""Template tags of the alert console's rows."""

from django import template

from ..selectors import SHELVE_CHOICES

register = template.Library()


@register.simple_tag
def shelve_choices():
    """What a row's shelve control offers: (minutes, label), in a page and in a live row alike."""
    return SHELVE_CHOICES
