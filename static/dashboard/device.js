// Device page: one Plotly chart per metric with its threshold bands; new readings stream in.
(function () {
  "use strict";
  const BAND_COLORS = { warning: "rgba(245, 166, 35, 0.15)", critical: "rgba(220, 53, 69, 0.15)" };

  function bandShapes(bands) {
    if (!bands) return [];
    const shapes = [];
    const band = (y0, y1, level) => shapes.push({
      type: "rect", xref: "paper", x0: 0, x1: 1, yref: "y", y0: y0, y1: y1,
      fillcolor: BAND_COLORS[level], line: { width: 0 }, layer: "below",
    });
    const big = 1e6;
    if (bands.warning_max !== null) band(bands.warning_max, bands.critical_max !== null ? bands.critical_max : big, "warning");
    if (bands.critical_max !== null) band(bands.critical_max, big, "critical");
    if (bands.warning_min !== null) band(bands.critical_min !== null ? bands.critical_min : -big, bands.warning_min, "warning");
    if (bands.critical_min !== null) band(-big, bands.critical_min, "critical");
    return shapes;
  }

  function yRange(series) {
    const values = series.y.slice();
    const b = series.bands || {};
    ["warning_min", "warning_max", "critical_min", "critical_max"].forEach((k) => { if (b[k] !== null && b[k] !== undefined) values.push(b[k]); });
    if (!values.length) return undefined;
    const lo = Math.min(...values), hi = Math.max(...values), pad = (hi - lo) * 0.1 || 1;
    return [lo - pad, hi + pad];
  }

  window.IotHub.deviceCharts = function (deviceId, allSeries) {
    const container = document.getElementById("charts");
    const charts = {};
    for (const series of allSeries) {
      const div = document.createElement("div");
      div.className = "chart card";
      div.id = "chart-" + series.key;
      container.appendChild(div);
      Plotly.newPlot(div, [{ x: series.x, y: series.y, mode: "lines", name: series.key, line: { width: 2 } }], {
        title: { text: series.label + (series.unit ? " (" + series.unit + ")" : "") },
        height: 260, margin: { t: 40, r: 20, b: 40, l: 50 },
        shapes: bandShapes(series.bands), yaxis: { range: yRange(series) },
      }, { responsive: true, displaylogo: false });
      charts[series.key] = div;
    }
    let pending = {};
    let scheduled = false;
    function flush() {
      scheduled = false;
      for (const [key, points] of Object.entries(pending)) {
        if (charts[key]) Plotly.extendTraces(charts[key], { x: [points.x], y: [points.y] }, [0], 20000);
      }
      pending = {};
    }
    window.IotHub.connect("/ws/devices/" + encodeURIComponent(deviceId) + "/", {
      readings: (message) => {
        window.IotHub.updateCells(message);
        for (const item of message.items) {
          const p = (pending[item.metric] = pending[item.metric] || { x: [], y: [] });
          p.x.push(new Date(item.ts).toISOString());
          p.y.push(item.value);
        }
        if (!scheduled) { scheduled = true; requestAnimationFrame(flush); }
      },
      alert: window.IotHub.onAlertRow,
    });
  };
})();
