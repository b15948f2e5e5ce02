// What the pages with Plotly charts share (the device page, the alarm KPI page): Plotly in the
// page's language. Loaded after live.js, which creates window.IotHub.
(function () {
  "use strict";
  // Plotly in the page's language: month and day names from Django's catalogues, the toolbar's
  // tooltips from ours.
  window.IotHub.registerPlotlyLocale = function (locale) {
    Plotly.register({
      moduleType: "locale", name: locale.name,
      dictionary: {
        "Download plot as a png": gettext("Download plot as a png"), "Zoom": gettext("Zoom"), "Pan": gettext("Pan"),
        "Zoom in": gettext("Zoom in"), "Zoom out": gettext("Zoom out"), "Autoscale": gettext("Autoscale"),
        "Reset axes": gettext("Reset axes"), "Double-click to zoom back out": gettext("Double-click to zoom back out"),
      },
      format: {
        days: locale.days, shortDays: locale.shortDays, months: locale.months, shortMonths: locale.shortMonths,
        periods: [gettext("AM"), gettext("PM")], decimal: ".", thousands: ",", grouping: [3], currency: ["", ""],
        // d3 time formats of the axis ticks, translated like any string.
        // xgettext:no-javascript-format
        dateTime: gettext("%a %b %e %X %Y"),
        // xgettext:no-javascript-format
        date: gettext("%d/%m/%Y"),
        // xgettext:no-javascript-format
        time: gettext("%H:%M:%S"),
        // xgettext:no-javascript-format
        year: gettext("%Y"),
        // xgettext:no-javascript-format
        month: gettext("%b %Y"),
        // xgettext:no-javascript-format
        dayMonth: gettext("%b %-d"),
        // xgettext:no-javascript-format
        dayMonthYear: gettext("%b %-d, %Y"),
      },
    });
  };
})();
