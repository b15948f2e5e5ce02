// Pipeline health page: polls the pipeline JSON every 2 s, shows the figures, and keeps the last
// 5 minutes of each in a sparkline (in the browser only: reloading starts them afresh).
(function () {
  "use strict";
  const POLL_MS = 2000;
  const HISTORY_POINTS = (5 * 60 * 1000) / POLL_MS;
  const STALE_REPORT_S = 15;

  const LANG = document.documentElement.lang;
  const decimal = (digits) => new Intl.NumberFormat(LANG, { minimumFractionDigits: digits, maximumFractionDigits: digits });
  const ONE_DECIMAL = decimal(1), TWO_DECIMALS = decimal(2), WHOLE = decimal(0);

  function rate(value) {
    return value < 10 ? ONE_DECIMAL.format(value) : WHOLE.format(Math.round(value));
  }
  function latency(seconds) {
    if (seconds === null) return "–";
    return seconds < 1 ? WHOLE.format(Math.round(seconds * 1000)) + " ms" : TWO_DECIMALS.format(seconds) + " s";
  }
  function count(value) {
    return value === null ? "–" : WHOLE.format(value);
  }

  // What each stat card shows: the figure, an optional note, and the value its sparkline plots.
  const STATS = {
    messages_per_s: (h) => [rate(h.messages_per_s), "", h.messages_per_s],
    readings_per_s: (h) => [rate(h.readings_per_s), "", h.readings_per_s],
    kafka_lag: (h) => [count(h.kafka_lag), h.kafka_lag === null ? gettext("no Kafka consumer") : gettext("messages behind"), h.kafka_lag],
    latency_p99: (h) => [latency(h.latency_p99), h.latency_p99 === null ? gettext("no recent messages") : gettext("worst process"), h.latency_p99 === null ? null : h.latency_p99 * 1000],
    dead_letters_per_s: (h) => [rate(h.dead_letters_per_s), interpolate(gettext("%s %% of messages"), [TWO_DECIMALS.format(h.dead_letter_ratio * 100)]), h.dead_letters_per_s],
    load_percent: (h) => [ONE_DECIMAL.format(h.capacity.load_percent) + " %", interpolate(gettext("of %s msg/s measured capacity"), [count(h.capacity.total)]), h.capacity.load_percent],
  };

  function renderCapacity(capacity) {
    const body = document.querySelector("#capacity tbody");
    body.replaceChildren();
    for (const row of capacity.sensors) {
      const tr = body.insertRow();
      cell(tr, interpolate(gettext("every %s"), [row.interval_s < 60 ? row.interval_s + " s" : row.interval_s / 60 + " min"]));
      cell(tr, count(row.sensors), "num");
    }
  }

  function sparkline(div) {
    Plotly.newPlot(div, [{
      x: [], y: [], mode: "lines", fill: "tozeroy", line: { width: 1.5, color: "#1f6feb" },
      fillcolor: "rgba(31, 111, 235, 0.12)", hovertemplate: "%{y}<extra></extra>", connectgaps: false,
    }], {
      height: 56, margin: { t: 4, r: 0, b: 4, l: 0 }, showlegend: false,
      xaxis: { visible: false }, yaxis: { visible: false, rangemode: "tozero", fixedrange: true },
      paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
    }, { displayModeBar: false, responsive: true });
  }

  // A cell, labelled with its column's head (narrow screens show each row as a card of labelled values).
  function cell(row, text, className) {
    const td = row.insertCell();
    td.textContent = text;
    if (className) td.className = className;
    const head = row.closest("table").tHead.rows[0].cells[td.cellIndex];
    if (head) td.dataset.label = head.textContent;
  }

  function renderProcesses(processes) {
    const body = document.querySelector("#processes tbody");
    body.replaceChildren();
    for (const p of processes) {
      const row = body.insertRow();
      if (p.report_age_s > STALE_REPORT_S) row.className = "stale";
      cell(row, p.name);
      cell(row, p.source);
      cell(row, interpolate(gettext("%s s ago"), [Math.round(p.report_age_s)]));
      cell(row, rate(p.messages_per_s), "num");
      cell(row, count(p.dead_letters), "num");
      cell(row, latency(p.latency_p99), "num");
      cell(row, count(p.kafka_lag), "num");
    }
    if (!processes.length) {
      const row = body.insertRow();
      row.className = "stale";
      const td = row.insertCell();
      td.colSpan = 7;
      td.textContent = gettext("No ingest process has reported in the last 30 s.");
    }
  }

  function renderReasons(reasons) {
    const body = document.querySelector("#dead-letter-reasons tbody");
    body.replaceChildren();
    for (const r of reasons) {
      const row = body.insertRow();
      cell(row, r.label);
      cell(row, count(r.count), "num");
    }
    if (!reasons.length) {
      const td = body.insertRow().insertCell();
      td.colSpan = 2;
      td.className = "quiet";
      td.textContent = gettext("None.");
    }
  }

  function render(health) {
    const at = new Date(health.at * 1000);
    for (const [key, show] of Object.entries(STATS)) {
      const [text, note, plotted] = show(health);
      document.getElementById("stat-" + key).textContent = text;
      document.getElementById("note-" + key).textContent = note;
      Plotly.extendTraces("spark-" + key, { x: [[at]], y: [[plotted]] }, [0], HISTORY_POINTS);
    }
    renderProcesses(health.processes);
    renderReasons(health.dead_letters_by_reason);
    renderCapacity(health.capacity);
    document.getElementById("health-updated").textContent = interpolate(
      gettext("Updated %s · every 2 s; charts show the last 5 minutes."), [at.toLocaleTimeString(LANG)]);
  }

  window.IotHub.pipelineHealth = function (url, initial) {
    for (const key of Object.keys(STATS)) sparkline(document.getElementById("spark-" + key));
    render(initial);
    window.IotHub.showConnection("live");
    async function poll() {
      try {
        const response = await fetch(url, { headers: { Accept: "application/json" }, redirect: "error" });
        if (!response.ok) throw new Error(response.statusText);
        render(await response.json());
        window.IotHub.showConnection("live");
      } catch (e) {
        window.IotHub.showConnection("offline");  // server down, or the session ended (login redirect)
      }
      setTimeout(poll, POLL_MS);
    }
    setTimeout(poll, POLL_MS);
  };
})();
