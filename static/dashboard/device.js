// Device page: one Plotly chart per metric over the chosen range, with its threshold bands.
// Raw ranges draw the readings and, ending now, stream new ones in and slide along; longer ranges
// draw the rollups' average as the line and their min–max as a shaded band.
(function () {
  "use strict";
  const BAND_COLORS = { warning: "rgba(245, 166, 35, 0.15)", critical: "rgba(220, 53, 69, 0.15)" };
  const LINE_COLOR = "#1f6feb";
  const SPREAD_COLOR = "rgba(31, 111, 235, 0.18)";

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

  // The values and threshold limits in view, padded; a loop, since spreading 100,000 values overflows the stack.
  function yRange(series) {
    let lo = Infinity, hi = -Infinity;
    for (const values of [series.y, series.min || [], series.max || []]) {
      for (const v of values) { if (v < lo) lo = v; if (v > hi) hi = v; }
    }
    const b = series.bands || {};
    for (const k of ["warning_min", "warning_max", "critical_min", "critical_max"]) {
      if (b[k] !== null && b[k] !== undefined) { lo = Math.min(lo, b[k]); hi = Math.max(hi, b[k]); }
    }
    if (lo === Infinity) return undefined;
    const pad = (hi - lo) * 0.1 || 1;
    return [lo - pad, hi + pad];
  }

  // Epoch ms → "YYYY-MM-DD HH:MM:SS" in the plant's time zone, the form of the server's x values.
  function plantTimeFormat(timeZone) {
    const format = new Intl.DateTimeFormat("en-CA", {
      timeZone: timeZone, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit",
    });
    return (ms) => {
      const p = {};
      for (const part of format.formatToParts(new Date(ms))) p[part.type] = part.value;
      return p.year + "-" + p.month + "-" + p.day + " " + p.hour + ":" + p.minute + ":" + p.second;
    };
  }

  // Raw: one line. Rollups: min (invisible), max filled down to min, then the average on top.
  function traces(series) {
    const line = { x: series.x, y: series.y, mode: "lines", name: series.min ? gettext("avg") : series.key, line: { width: 2, color: LINE_COLOR } };
    if (!series.min) return [line];
    return [
      { x: series.x, y: series.min, mode: "lines", name: gettext("min"), line: { width: 0 } },
      { x: series.x, y: series.max, mode: "lines", name: gettext("max"), line: { width: 0 }, fill: "tonexty", fillcolor: SPREAD_COLOR },
      line,
    ];
  }

  // Index of the first x at or after `cutoff` (x values are sorted "YYYY-MM-DD HH:MM:SS" strings).
  function firstAtOrAfter(xs, cutoff) {
    let lo = 0, hi = xs.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (xs[mid] < cutoff) lo = mid + 1; else hi = mid;
    }
    return lo;
  }

  // Room after "now" on a live chart, so the newest reading is not drawn on the edge.
  function livePadding(chart) {
    return chart.live ? (Date.parse(chart.end) - Date.parse(chart.start)) / 50 : 0;
  }

  // The title is the card's heading, above the plot: Plotly's toolbar never covers it. The plot
  // fills its box (fixed height in style.css), so resizes and rotations keep its size.
  function drawChart(container, series, chart, plantTime) {
    const card = document.createElement("section");
    card.className = "card chart-card";
    const title = document.createElement("h2");
    title.textContent = series.label + (series.unit ? " (" + series.unit + ")" : "");
    const div = document.createElement("div");
    div.className = "chart";
    div.id = "chart-" + series.key;
    card.append(title, div);
    container.appendChild(card);
    Plotly.newPlot(div, traces(series), {
      autosize: true, margin: { t: 28, r: 12, b: 40, l: 50 }, showlegend: false, hovermode: "x unified",
      xaxis: { type: "date", range: [plantTime(Date.parse(chart.start)), plantTime(Date.parse(chart.end) + livePadding(chart))] },
      yaxis: { range: yRange(series) }, shapes: bandShapes(series.bands),
      annotations: series.x.length ? [] : [{ text: chart.no_data, xref: "paper", yref: "paper", x: 0.5, y: 0.5, showarrow: false, font: { color: "#5c6773" } }],
    }, { responsive: true, displaylogo: false, locale: chart.locale.name });
    // A zoom or pan stops the live chart from sliding; a double-click (autorange) resumes it.
    div.zoomed = false;
    div.on("plotly_relayout", (event) => {
      if ("xaxis.range[0]" in event) div.zoomed = true;
      if ("xaxis.autorange" in event) div.zoomed = false;
    });
    return div;
  }

  window.IotHub.deviceCharts = function (deviceId, chart) {
    window.IotHub.registerPlotlyLocale(chart.locale);
    const container = document.getElementById("charts");
    const plantTime = plantTimeFormat(chart.time_zone);
    const charts = {};
    for (const series of chart.series) charts[series.key] = drawChart(container, series, chart, plantTime);

    const span = Date.parse(chart.end) - Date.parse(chart.start);
    let pending = new Map();
    let scheduled = false;
    function flush() {
      scheduled = false;
      const now = Date.now();
      const cutoff = plantTime(now - span);
      for (const [key, points] of pending) {
        const div = charts[key];
        if (!div) continue;
        const line = div.data.length - 1;
        const xs = div.data[line].x;
        Plotly.extendTraces(div, { x: [points.x], y: [points.y] }, [line], xs.length - firstAtOrAfter(xs, cutoff) + points.x.length);
      }
      pending = new Map();
      for (const div of Object.values(charts)) {
        if (!div.zoomed) Plotly.relayout(div, { "xaxis.range": [cutoff, plantTime(now + livePadding(chart))] });
      }
    }
    function onReadings(message) {
      window.IotHub.updateCells(message);
      if (!chart.live) return;
      for (const item of message.items) {
        if (!pending.has(item.metric)) pending.set(item.metric, { x: [], y: [] });
        const points = pending.get(item.metric);
        points.x.push(plantTime(item.ts));
        points.y.push(item.value);
      }
      if (!scheduled) { scheduled = true; requestAnimationFrame(flush); }
    }
    window.IotHub.connect("/ws/devices/" + encodeURIComponent(deviceId) + "/", { readings: onReadings, alert: window.IotHub.onAlertRow });
  };
})();
