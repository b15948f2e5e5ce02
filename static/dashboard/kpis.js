// Alarm KPI page: alarms per hour and per 10 minutes over the chosen days, each against its
// EEMUA 191 limit drawn as a dashed line and named in the chart (not by colour alone).
(function () {
  "use strict";
  const BAR_COLOR = "#1f6feb";
  const LIMIT_COLOR = "#c82333";

  function limitLine(y, text) {
    return {
      shapes: [{ type: "line", xref: "paper", x0: 0, x1: 1, yref: "y", y0: y, y1: y, line: { color: LIMIT_COLOR, width: 2, dash: "dash" } }],
      annotations: [{ xref: "paper", x: 0, xanchor: "left", yref: "y", y: y, yanchor: "bottom", text: text, showarrow: false, font: { color: LIMIT_COLOR, size: 12 } }],
    };
  }

  function draw(id, trace, limit, text, locale) {
    const peak = trace.y.reduce((a, b) => Math.max(a, b), limit);
    Plotly.newPlot(id, [trace], {
      autosize: true, margin: { t: 12, r: 12, b: 40, l: 40 }, showlegend: false, hovermode: "x unified",
      xaxis: { type: "date" }, yaxis: { range: [0, peak * 1.15 + 1], rangemode: "tozero" },
      ...limitLine(limit, text),
    }, { responsive: true, displaylogo: false, locale: locale.name });
  }

  window.IotHub.alarmKpiCharts = function (chart) {
    window.IotHub.registerPlotlyLocale(chart.locale);
    draw("chart-per-hour", { x: chart.hours, y: chart.per_hour, type: "bar", name: chart.labels.alarms, marker: { color: BAR_COLOR } },
      chart.manageable, chart.labels.manageable, chart.locale);
    draw("chart-per-10min", { x: chart.periods, y: chart.per_10min, type: "scatter", mode: "lines", name: chart.labels.alarms, line: { shape: "hv", color: BAR_COLOR } },
      chart.flood, chart.labels.flood, chart.locale);
  };
})();
