// Live readings: the last hour from /api/history, then every new reading from /api/live (Server-Sent Events).
"use strict";
(() => {
  const config = JSON.parse(document.getElementById("live-config").textContent);
  const pick = document.getElementById("pick");
  pick.addEventListener("change", () => { if (pick.value) location.search = "?" + pick.value; });
  if (!config.devices.length) return;
  const stateEl = document.getElementById("live-state");
  const devices = {};  // id -> {section, ts: [], cols: {name: []}, plots: {name: uPlot}, tiles: {name: el}}

  const fmt = v => (typeof v === "number" ? (Number.isInteger(v) ? String(v) : String(Math.round(v * 1000) / 1000))
                                          : String(v));

  function limitOf(device, name) { return (config.thresholds[device] || {})[name] || null; }

  function tile(dev, name) {
    if (dev.tiles[name]) return dev.tiles[name];
    const el = document.createElement("div");
    el.className = "tile";
    el.dataset.value = `${dev.id}.${name}`;
    const label = document.createElement("span"); label.className = "name"; label.textContent = name;
    const num = document.createElement("span"); num.className = "num"; num.textContent = "–";
    el.append(label, num);
    const limit = limitOf(dev.id, name);
    if (limit) {
      const l = document.createElement("span"); l.className = "limit";
      l.textContent = [limit.min !== null ? `min ${limit.min}` : "", limit.max !== null ? `max ${limit.max}` : ""]
        .filter(Boolean).join(" · ");
      el.append(l);
    }
    dev.section.querySelector(".tiles").append(el);
    return (dev.tiles[name] = el);
  }

  function show(dev, name, value) {
    const el = tile(dev, name);
    el.querySelector(".num").textContent = fmt(value);
    const limit = limitOf(dev.id, name);
    el.classList.toggle("high", !!limit && limit.max !== null && typeof value === "number" && value > limit.max);
    el.classList.toggle("low", !!limit && limit.min !== null && typeof value === "number" && value < limit.min);
  }

  function plot(dev, name) {
    if (dev.plots[name]) return dev.plots[name];
    const box = document.createElement("div"); box.className = "plot"; box.dataset.plot = `${dev.id}.${name}`;
    const h = document.createElement("h3"); h.textContent = name;
    const area = document.createElement("div");
    box.append(h, area);
    dev.section.querySelector(".plots").append(box);
    if (!dev.cols[name]) dev.cols[name] = dev.ts.map(() => null);
    const opts = {limit: limitOf(dev.id, name), timezone: config.timezone};
    dev.plots[name] = EduPlot.make(area, [name], [dev.ts, dev.cols[name]], opts);
    return dev.plots[name];
  }

  function redraw(dev) {
    for (const [name, p] of Object.entries(dev.plots)) p.setData([dev.ts, dev.cols[name]]);
  }

  function add(dev, tsSec, values) {
    const numeric = Object.entries(values).filter(([, v]) => typeof v === "number");
    const res = config.resolution_s;
    const n = dev.ts.length;
    if (n && Math.floor(tsSec / res) <= Math.floor(dev.ts[n - 1] / res) && tsSec >= dev.ts[n - 1] - res) {
      for (const [name, v] of numeric) { if (!dev.cols[name]) dev.cols[name] = dev.ts.map(() => null); dev.cols[name][n - 1] = v; }
    } else {
      dev.ts.push(tsSec);
      for (const name of Object.keys(dev.cols)) dev.cols[name].push(null);
      for (const [name, v] of numeric) { if (!dev.cols[name]) dev.cols[name] = dev.ts.map(() => null); dev.cols[name][dev.ts.length - 1] = v; }
    }
    const since = Date.now() / 1000 - config.window_s;
    let drop = 0;
    while (drop < dev.ts.length && dev.ts[drop] < since) drop++;
    if (drop) { dev.ts.splice(0, drop); for (const c of Object.values(dev.cols)) c.splice(0, drop); }
    for (const [name] of numeric) plot(dev, name);
  }

  async function load(id) {
    const section = document.querySelector(`section.device[data-device="${CSS.escape(id)}"]`);
    const dev = devices[id] = {id, section, ts: [], cols: {}, plots: {}, tiles: {}};
    const r = await fetch(`/api/history?device=${encodeURIComponent(id)}`, {credentials: "same-origin"});
    if (!r.ok) return;
    const h = await r.json();
    dev.ts = h.ts;
    for (const [name, col] of Object.entries(h.values)) {
      dev.cols[name] = col;
      plot(dev, name);
      for (let i = col.length - 1; i >= 0; i--) if (col[i] !== null) { show(dev, name, col[i]); break; }
    }
  }

  function connect() {
    const source = new EventSource(`/api/live?${config.query}`);
    source.onopen = () => { stateEl.textContent = "live"; stateEl.className = "live-state up"; };
    source.onerror = () => { stateEl.textContent = "reconnecting…"; stateEl.className = "live-state down"; };
    source.addEventListener("event", e => showEvent(JSON.parse(e.data)));
    source.addEventListener("telemetry", e => {
      const u = JSON.parse(e.data);
      const dev = devices[u.device];
      if (!dev) return;
      for (const [name, v] of Object.entries(u.values)) show(dev, name, v);
      add(dev, u.ts / 1000, u.values);
      redraw(dev);
      dev.section.querySelector(".updated").textContent = "last reading " +
        new Date(u.ts).toLocaleTimeString([], {timeZone: config.timezone});
    });
  }

  function showEvent(u) {  // card taps, alarms...: the type and time only (the data stays on the gateway)
    const dev = devices[u.device];
    if (!dev) return;
    const list = dev.section.querySelector(".events");
    const item = document.createElement("li");
    const at = new Date(u.ts).toLocaleTimeString([], {timeZone: config.timezone});
    item.textContent = `${at} ${u.type}`;
    if (!dev.ts.length) dev.section.querySelector(".updated").textContent = "last event " + at;
    list.prepend(item);
    while (list.children.length > 5) list.lastChild.remove();
    list.hidden = false;
  }

  Promise.all(config.devices.map(load)).then(connect, connect);
})();
