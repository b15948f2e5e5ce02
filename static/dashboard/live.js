// Live updates over the dashboard WebSocket. The server renders what the page shows of an alert
// or a factory (the same templates as the page) and the text and status of every cell; this file
// only puts them in place. Readings are applied once per animation frame, newest value per cell,
// so a burst of readings costs one DOM pass, not one per reading.
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
      for (const el of index.get(key) || []) {
        el.textContent = item.text;
        if (!el.classList.contains(item.status_class)) {
          el.classList.remove(...STATUS_CLASSES);
          el.classList.add(item.status_class);
        }
        el.dataset.ts = item.ts;
        const silent = el.closest("[data-silent-after].offline");
        if (silent) silent.classList.remove("offline");
      }
      if (performance.now() > deadline) break;
    }
    if (pending.size) requestFrame();
  }

  IotHub.updateCells = function (message) {
    for (const item of message.items) pending.set(item.device + "|" + item.metric, item);
    requestFrame();
  };

  function fragment(html) {
    const template = document.createElement("template");
    template.innerHTML = html.trim();
    return template.content.firstElementChild;
  }

  // The alarm sound: off until the operator turns it on (a click, which browsers require before
  // a page may play sound); the choice is kept per browser. Its control shows on the pages whose
  // socket brings alerts (IotHub.connect), the only ones that can sound one.
  const SOUND_KEY = "iothub.sound";
  let audio = null;

  function soundButton() { return document.getElementById("sound"); }

  function showSound() {
    const button = soundButton();
    if (!button) return;
    const on = localStorage.getItem(SOUND_KEY) === "on";
    const blocked = on && (!audio || audio.state !== "running");
    button.setAttribute("aria-pressed", String(on));
    button.dataset.state = blocked ? "blocked" : on ? "on" : "off";
  }

  function unlockAudio() {
    if (localStorage.getItem(SOUND_KEY) !== "on") return;
    audio = audio || new (window.AudioContext || window.webkitAudioContext)();
    audio.resume().then(showSound, showSound);
  }

  function initSound() {
    const button = soundButton();
    if (!button || !button.hidden) return;
    button.hidden = false;
    button.addEventListener("click", () => {
      localStorage.setItem(SOUND_KEY, localStorage.getItem(SOUND_KEY) === "on" ? "off" : "on");
      if (localStorage.getItem(SOUND_KEY) === "on") unlockAudio(); else showSound();
    });
    // Turned on earlier: the first click or key anywhere on the page lets the browser play it.
    for (const kind of ["pointerdown", "keydown"]) document.addEventListener(kind, unlockAudio, { once: true });
    showSound();
  }

  function beep() {
    if (localStorage.getItem(SOUND_KEY) !== "on" || !audio || audio.state !== "running") return;
    const osc = audio.createOscillator();
    osc.frequency.value = 880;
    osc.connect(audio.destination);
    osc.start();
    osc.stop(audio.currentTime + 0.25);
    const button = soundButton();
    button.dataset.played = Number(button.dataset.played || 0) + 1;
  }

  function cue(message) {
    if (!message.banner) return;
    const banner = document.getElementById("banner");
    banner.replaceChildren(fragment(message.banner));
    banner.hidden = false;
    banner.classList.remove("flash");
    void banner.offsetWidth;
    banner.classList.add("flash");
    beep();
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
          pill.querySelector(".n").textContent = count;
          pill.hidden = !pill.classList.contains("total") && count === 0;
        }
      }
    }
    countChanges = new Map();
  }

  function updateCounts(a) {
    if (!activeAlerts) return;
    const id = String(a.id);
    const before = activeAlerts.get(id);
    // Counted as on a reload: what needs attention (not resolved, shelved or a suppressed record).
    const after = ["open", "acknowledged"].includes(a.state) ? [a.level === "warning" ? "warning" : "critical", a.location || null] : undefined;
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

  // An alert's element in a list (the overview's feed, a table of alerts): replaced by the
  // server's rendering, added at the top when new, removed when the page no longer shows it. The
  // list's "nothing here" line stays last; the style sheet shows it only when it is alone.
  function placeAlert(list, message) {
    if (!list) return;
    const old = list.querySelector(':scope > [data-alert="' + message.alert.id + '"]');
    if (!message.html) {
      if (old) old.remove();
      return;
    }
    const element = fragment(message.html);
    if (old) old.replaceWith(element); else list.prepend(element);
    const items = list.querySelectorAll(":scope > [data-alert]");
    const length = Number(list.dataset.length || 0);
    for (let i = length || items.length; i < items.length; i++) items[i].remove();
  }

  IotHub.onAlert = function (message) {
    cue(message);
    updateCounts(message.alert);
    placeAlert(document.getElementById("alert-feed"), message);
  };

  // A page may list alerts in more than one table (the console's shelved alerts apart): the row
  // goes to the list the server names and leaves the others.
  const ALERT_LISTS = ["alert-rows", "shelved-rows"];

  IotHub.onAlertRow = function (message) {
    cue(message);
    for (const id of ALERT_LISTS) {
      placeAlert(document.getElementById(id), id === message.list ? message : { alert: message.alert, html: "" });
    }
  };

  // The device master changed: the factories it touched, rendered again (or gone), and the
  // overview's device count and factory choice.
  IotHub.onDevices = function (message) {
    const plant = document.getElementById("plant");
    for (const [name, html] of Object.entries(message.factories)) {
      const old = plant.querySelector(':scope > .factory[data-factory="' + CSS.escape(name) + '"]');
      if (!html) {
        if (old) old.remove();
        continue;
      }
      const section = fragment(html);
      if (old) {
        old.replaceWith(section);
        continue;
      }
      const next = [...plant.querySelectorAll(":scope > .factory")].find((f) => f.dataset.factory > name);
      plant.insertBefore(section, next || null);
      plant.querySelectorAll(":scope > .empty").forEach((el) => el.remove());
    }
    for (const [id, html] of Object.entries(message.summary)) {
      const old = document.getElementById(id);
      if (old) old.replaceWith(fragment(html));
    }
    cells = null; // new rows: index the cells again
    if (IotHub.kioskShow) IotHub.kioskShow();
  };

  // A device that stops reporting turns offline on the open page, by the rule a reload renders
  // (apps.devices.selectors.is_offline): an element with data-silent-after (a device row of the
  // overview, the head of a device page) is offline when none of its cells has a value, or the
  // newest is older than that many seconds, by the server's clock (the page's meta server-time
  // against the browser's clock when the page arrived). A new reading puts it back online.
  const SILENCE_CHECK_MS = 2000;
  IotHub.watchSilence = function () {
    const served = document.querySelector('meta[name="server-time"]');
    const skew = served ? Number(served.content) - Date.now() : 0;
    setInterval(() => {
      const now = Date.now() + skew;
      for (const el of document.querySelectorAll("[data-silent-after]")) {
        let newest = 0;
        for (const cell of el.querySelectorAll("[data-ts]")) newest = Math.max(newest, Number(cell.dataset.ts));
        const offline = !newest || now - newest > Number(el.dataset.silentAfter) * 1000;
        if (offline !== el.classList.contains("offline")) el.classList.toggle("offline", offline);
      }
    }, SILENCE_CHECK_MS);
  };

  // The header's connection indicator: "live", "reconnecting" or "offline". Hidden until a page's
  // live connection (its socket, or the health page's polling) reports: a page without one shows
  // no connection state at all.
  IotHub.showConnection = function (state) {
    const conn = document.getElementById("conn");
    conn.hidden = false;
    conn.dataset.state = state;
    conn.classList.toggle("live", state === "live");
  };

  // A socket of the page: the server renders for the page it is told (path and query).
  IotHub.connect = function (path, handlers) {
    initSound();
    let delay = 500;
    const page = encodeURIComponent(location.pathname + location.search);
    function open() {
      const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + path + "?page=" + page);
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

  document.addEventListener("DOMContentLoaded", IotHub.watchSilence);
})();

// Kiosk mode (?kiosk=1, a wall display nobody scrolls): no navigation, large type, the plant
// one factory (top-level location) at a time, and a factory taller than the screen one screenful
// at a time; the next every `cycle` seconds (?cycle=, default 20). The toolbar names what is on
// screen: the factory, its place in the plant and the screenful.
(function () {
  "use strict";
  const root = document.documentElement;
  if (!root.classList.contains("kiosk")) return;
  const seconds = Number(new URLSearchParams(location.search).get("cycle")) || 20;
  const OVERLAP = 0.1; // of a screen, shown again on the next screenful for context
  let current = null;
  let screenful = 0;

  const factories = () => [...document.querySelectorAll("#plant > .factory")];

  // Screenfuls of the current factory: the first shows it from the top of the page, each next one
  // moves down by a screen (less the toolbar that stays on top, and the overlap), until its last
  // device is on screen.
  function screenfuls(factory) {
    const toolbar = document.querySelector(".toolbar").offsetHeight;
    const step = (window.innerHeight - toolbar) * (1 - OVERLAP);
    const bottom = factory.getBoundingClientRect().bottom + window.scrollY;
    return { step: step, count: Math.max(1, Math.ceil((bottom - window.innerHeight) / step) + 1) };
  }

  function show() {
    const all = factories();
    if (!all.length) return;
    if (!all.some((f) => f.dataset.factory === current)) {
      current = all[0].dataset.factory;
      screenful = 0;
    }
    const factory = all.find((f) => f.dataset.factory === current);
    for (const f of all) f.classList.toggle("current", f === factory);
    const pages = screenfuls(factory);
    screenful = Math.min(screenful, pages.count - 1);
    window.scrollTo(0, screenful * pages.step);
    const place = document.getElementById("kiosk-place");
    if (place) {
      const text = pages.count > 1
        ? gettext("%(factory)s · factory %(n)s of %(count)s · screen %(screen)s of %(screens)s")
        : gettext("%(factory)s · factory %(n)s of %(count)s");
      const values = { factory: current, n: all.indexOf(factory) + 1, count: all.length, screen: screenful + 1, screens: pages.count };
      place.textContent = interpolate(text, values, true);
    }
  }

  function next() {
    const all = factories();
    const factory = all.find((f) => f.dataset.factory === current);
    if (factory && screenful + 1 < screenfuls(factory).count) {
      screenful += 1;
    } else {
      const names = all.map((f) => f.dataset.factory);
      current = names[(names.indexOf(current) + 1) % names.length];
      screenful = 0;
    }
    show();
  }

  window.IotHub.kioskShow = show;
  show();
  setInterval(next, seconds * 1000);
})();
