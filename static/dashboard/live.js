// Live updates over the dashboard WebSocket. Messages are applied once per animation frame,
// newest value per cell, so a burst of readings costs one DOM pass, not one per reading.
(function () {
  "use strict";
  const IotHub = (window.IotHub = {});
  let cells = null;
  let pending = new Map();
  let frameRequested = false;

  function cellIndex() {
    if (!cells) {
      cells = new Map();
      document.querySelectorAll("[data-cell]").forEach((el) => {
        const list = cells.get(el.dataset.cell) || [];
        list.push(el);
        cells.set(el.dataset.cell, list);
      });
    }
    return cells;
  }

  function applyPending() {
    frameRequested = false;
    const index = cellIndex();
    for (const [key, item] of pending) {
      for (const el of index.get(key) || []) {
        el.textContent = item.value.toFixed(1);
        el.className = el.className.replace(/\b(normal|warning|critical|none)\b/g, "").trim() + " " + (item.status || "none");
        el.title = item.metric + " at " + new Date(item.ts).toLocaleTimeString();
        const row = el.closest("tr[data-device]");
        if (row) row.classList.remove("offline");
      }
    }
    pending = new Map();
  }

  IotHub.updateCells = function (message) {
    for (const item of message.items) pending.set(item.device + "|" + item.metric, item);
    if (!frameRequested) {
      frameRequested = true;
      requestAnimationFrame(applyPending);
    }
  };

  function alertText(a) {
    const value = a.last_value === null || a.last_value === undefined ? "" : " = " + Number(a.last_value).toFixed(1);
    const what = a.source === "system" ? "system " + a.subject : a.device + " " + (a.metric || "data");
    return a.level + " " + what + value + " (" + a.state + ")";
  }

  function cue(alert) {
    if (alert.level !== "critical" || alert.state !== "open") return;
    const banner = document.getElementById("banner");
    banner.textContent = "CRITICAL: " + alertText(alert);
    banner.hidden = false;
    banner.classList.remove("flash");
    void banner.offsetWidth;
    banner.classList.add("flash");
    try {
      const ctx = new (window.AudioContext || window.webkitAudioContext)();
      const osc = ctx.createOscillator();
      osc.frequency.value = 880;
      osc.connect(ctx.destination);
      osc.start();
      osc.stop(ctx.currentTime + 0.25);
    } catch (e) { /* no audio device: the banner is the cue */ }
  }

  // Active alert levels by id, seeded from the page, so the header totals follow live changes.
  let activeLevels = null;
  function updateTotals(a) {
    if (!activeLevels) {
      activeLevels = new Map();
      document.querySelectorAll("#alert-feed [data-alert]").forEach((li) => {
        activeLevels.set(li.dataset.alert, li.classList.contains("warning") ? "warning" : "critical");
      });
    }
    const id = String(a.id);
    const before = activeLevels.get(id);
    const after = a.state === "resolved" ? undefined : (a.level === "warning" ? "warning" : "critical");
    if (before === after) return;
    if (after) activeLevels.set(id, after); else activeLevels.delete(id);
    for (const [level, delta] of [[before, -1], [after, 1]]) {
      const el = level && document.getElementById("total-" + level);
      if (el) el.textContent = Math.max(0, parseInt(el.textContent, 10) + delta) + " " + level;
    }
  }

  IotHub.onAlert = function (message) {
    const a = message.alert;
    cue(a);
    updateTotals(a);
    const feed = document.getElementById("alert-feed");
    if (!feed) return;
    feed.querySelectorAll(".quiet").forEach((el) => el.remove());
    let li = feed.querySelector('[data-alert="' + a.id + '"]');
    if (a.state === "resolved") {
      if (li) li.remove();
      return;
    }
    if (!li) {
      li = document.createElement("li");
      li.dataset.alert = a.id;
      feed.prepend(li);
    }
    li.className = "alert-item " + a.level;
    li.textContent = alertText(a);
  };

  IotHub.onAlertRow = function (message) {
    const a = message.alert;
    cue(a);
    const rows = document.getElementById("alert-rows");
    const row = rows && rows.querySelector('[data-alert="' + a.id + '"]');
    if (row) {
      row.className = "alert-row " + a.level + " " + a.state;
      row.querySelector(".state").textContent = a.state;
    } else if (rows && a.state === "open") {
      const tr = document.createElement("tr");
      tr.className = "alert-row new " + a.level + " " + a.state;
      tr.dataset.alert = a.id;
      tr.innerHTML = "<td></td><td class='state'></td><td></td><td></td><td></td><td colspan='6'><a href=''>reload to act</a></td>";
      const tds = tr.querySelectorAll("td");
      tds[0].textContent = a.level; tds[1].textContent = a.state; tds[2].textContent = a.device || "system";
      tds[3].textContent = a.metric || a.subject || "—"; tds[4].textContent = a.opened_at;
      rows.prepend(tr);
    }
  };

  IotHub.connect = function (path, handlers) {
    const conn = document.getElementById("conn");
    let delay = 500;
    function open() {
      const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + path);
      ws.onopen = () => { delay = 500; conn.textContent = "● live"; conn.className = "conn live"; };
      ws.onmessage = (event) => {
        const message = JSON.parse(event.data);
        const handler = handlers[message.type];
        if (handler) handler(message);
      };
      ws.onclose = () => {
        conn.textContent = "● reconnecting"; conn.className = "conn";
        setTimeout(open, delay);
        delay = Math.min(delay * 2, 10000);
      };
    }
    open();
  };
})();
