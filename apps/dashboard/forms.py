"""Forms of the dashboard pages."""

from django import forms
from django.utils.translation import gettext_lazy as _

from apps.alerts.kpis import LONGEST_KPI_PERIOD


class KpiPeriodForm(forms.Form):
    """The alarm KPI page's choice: plant-local days from `start` to `end`, both included, for the
    whole plant, a factory or one location."""

    start = forms.DateField(label=_("From"), widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(label=_("To"), widget=forms.DateInput(attrs={"type": "date"}))
    factory = forms.ChoiceField(label=_("Factory"), required=False)
    loc_id = forms.CharField(label=_("Location id"), required=False, max_length=64)

    def __init__(self, data, *, factories):
        super().__init__(data)
        self.fields["factory"].choices = [("", _("whole plant")), *((name, name) for name in factories)]

    def clean(self):
        data = super().clean()
        start, end = data.get("start"), data.get("end")
        if start and end and end < start:
            self.add_error("end", _("Choose an end on or after the start."))
        elif start and end and end - start >= LONGEST_KPI_PERIOD:
            self.add_error("end", _("Choose at most a year."))
        return data
