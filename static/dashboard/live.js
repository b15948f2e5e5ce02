// Live updates over the dashboard WebSocket. Messages are applied once per animation frame,
// newest value per cell, so a burst of readings costs one DOM pass, not one per reading.
(function () {
  "use strict";
  const IotHub = (window.IotHub = {});
  const STATUS_CLASSES = ["normal", "warning", "critical", "none"];
  let cells = null;
  const pending = new Map(); // "device|metric" → newest item not yet shown
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

  // Cells written in one frame stop after FRAME_BUDGET_MS (the browser's layout and paint of them
  // cost about as much again); the rest wait for the next frame, still newest value per cell. A
  // steady stream fits in the budget; a burst (a tab back from the background, a reconnect)
  // is spread over a few frames instead of freezing the page.
  const FRAME_BUDGET_MS = 6;

  function requestFrame() {
    if (!frameRequested) {
      frameRequested = true;
      requestAnimationFrame(applyPending);
    }
  }

  function applyPending() {
    frameRequested = false;
    const index = cellIndex();
    const deadline = performance.now() + FRAME_BUDGET_MS;
    for (const [key, item] of pending) {
      pending.delete(key);
      const status = item.status || "none";
      for (const el of index.get(key) || []) {
        el.textContent = item.value.toFixed(1);
        if (!el.classList.contains(status)) {
          el.classList.remove(...STATUS_CLASSES);
          el.classList.add(status);
        }
        el.dataset.ts = item.ts;
        const row = el.closest(".device.offline");
        if (row) row.classList.remove("offline");
      }
      if (performance.now() > deadline) break;
    }
    if (pending.size) requestFrame();
  }

  IotHub.updateCells = function (message) {
    for (const item of message.items) pending.set(item.device + "|" + item.metric, item);
    requestFrame();
  };

  // A cell's tooltip (metric and time of its value) is made when hovered, not on every update.
  document.addEventListener("mouseover", (event) => {
    const cell = event.target.closest && event.target.closest("[data-cell]");
    if (!cell) return;
    const metric = cell.dataset.cell.split("|").pop();
    cell.title = cell.dataset.ts ? metric + " at " + new Date(Number(cell.dataset.ts)).toLocaleString() : metric;
  });

  // "critical dev-1 temperature = 36.5 (open)" as the feed and the banner show it.
  function alertParts(a) {
    const what = a.device ? a.device + (a.metric ? " " + a.metric : "") : "system " + a.subject;
    const value = a.last_value === null || a.last_value === undefined ? "" : " = " + Number(a.last_value).toFixed(1);
    return { level: a.level, text: " " + what + value + " ", state: a.state };
  }

  function cue(alert) {
    if (alert.level !== "critical" || alert.state !== "open") return;
    const parts = alertParts(alert);
    const banner = document.getElementById("banner");
    banner.textContent = "CRITICAL:" + parts.text + "(" + parts.state + ")";
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

  // Open alert counts of the overview: the header totals and the pills of every level of the
  // tree (tile → floor → building → factory). Changes are summed per location and applied once
  // per animation frame, so an alert storm costs one pass per location, not per alert.
  let activeAlerts = null; // alert id → [kind ("warning" | "critical"), loc_id or null]
  let countChanges = new Map(); // loc_id → {warning: delta, critical: delta}
  let countsFrameRequested = false;

  IotHub.trackAlertCounts = function (active) {
    activeAlerts = new Map(Object.entries(active));
  };

  function countPills(loc, kind) {
    const pills = [document.getElementById("total-" + kind)];
    let node = loc === null ? null : document.querySelector('.tile[data-loc="' + CSS.escape(loc) + '"]');
    for (; node; node = node.parentElement.closest("[data-counts]")) {
      pills.push(node.querySelector(':scope > header [data-level="' + kind + '"]'));
    }
    return pills.filter(Boolean);
  }

  function applyCountChanges() {
    countsFrameRequested = false;
    for (const [loc, deltas] of countChanges) {
      for (const [kind, delta] of Object.entries(deltas)) {
        if (!delta) continue;
        for (const pill of countPills(loc, kind)) {
          const count = Math.max(0, Number(pill.dataset.count) + delta);
          pill.dataset.count = count;
          const total = pill.classList.contains("total");
          pill.textContent = total ? count + " " + kind : count;
          pill.hidden = !total && count === 0;
        }
      }
    }
    countChanges = new Map();
  }

  function updateCounts(a) {
    if (!activeAlerts) return;
    const id = String(a.id);
    const before = activeAlerts.get(id);
    const after = a.state === "resolved" ? undefined : [a.level === "warning" ? "warning" : "critical", a.location || null];
    if (before && after ? before[0] === after[0] && before[1] === after[1] : before === after) return;
    if (after) activeAlerts.set(id, after); else activeAlerts.delete(id);
    for (const [entry, delta] of [[before, -1], [after, 1]]) {
      if (!entry) continue;
      const [kind, loc] = entry;
      if (!countChanges.has(loc)) countChanges.set(loc, { warning: 0, critical: 0 });
      countChanges.get(loc)[kind] += delta;
    }
    if (!countsFrameRequested) {
      countsFrameRequested = true;
      requestAnimationFrame(applyCountChanges);
    }
  }

  IotHub.onAlert = function (message) {
    const a = message.alert;
    cue(a);
    updateCounts(a);
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
      while (feed.children.length > Number(feed.dataset.length)) feed.lastElementChild.remove();
    }
    const parts = alertParts(a);
    const level = document.createElement("b");
    const state = document.createElement("small");
    level.textContent = parts.level;
    state.textContent = parts.state;
    li.className = "alert-item " + a.level;
    li.replaceChildren(level, parts.text, state);
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
      tds[3].textContent = a.device ? a.metric || "—" : a.subject; tds[4].textContent = a.opened_at;
      rows.prepend(tr);
    }
  };

  // The header's connection indicator: "live", "reconnecting" or "offline".
  IotHub.showConnection = function (state) {
    const conn = document.getElementById("conn");
    conn.textContent = "● " + state;
    conn.className = state === "live" ? "conn live" : "conn";
  };

  IotHub.connect = function (path, handlers) {
    let delay = 500;
    function open() {
      const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + path);
      ws.onopen = () => { delay = 500; IotHub.showConnection("live"); };
      ws.onmessage = (event) => {
        const message = JSON.parse(event.data);
        const handler = handlers[message.type];
        if (handler) handler(message);
      };
      ws.onclose = () => {
        IotHub.showConnection("reconnecting");
        setTimeout(open, delay);
        delay = Math.min(delay * 2, 10000);
      };
    }
    open();
  };
})();
