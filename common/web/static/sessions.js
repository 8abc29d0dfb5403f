// One experiment session: a plot per device and value from /api/sessions/<id>/data, growing while it records
// (each poll asks only for the rows recorded since the last one: ?after=<next>).
"use strict";
(() => {
  const config = JSON.parse(document.getElementById("session-config").textContent);
  const root = document.getElementById("session-plots");
  const rowsEl = document.getElementById("session-rows");
  const devices = {};  // id -> {ts: [], cols: {name: []}}
  const plots = {};  // "device.value" -> {plot, box}
  let after = 0;
  let total = 0;

  function append(device, part) {
    const dev = devices[device] = devices[device] || {ts: [], cols: {}};
    const n = dev.ts.length;
    for (const name of Object.keys(part.values)) if (!dev.cols[name]) dev.cols[name] = new Array(n).fill(null);
    dev.ts.push(...part.ts);
    for (const [name, col] of Object.entries(dev.cols)) col.push(...(part.values[name] || part.ts.map(() => null)));
    total += part.ts.length;
  }

  function draw() {
    for (const [device, dev] of Object.entries(devices)) {
      for (const [name, col] of Object.entries(dev.cols)) {
        const key = `${device}.${name}`;
        let p = plots[key];
        if (!p) {
          const box = document.createElement("section");
          box.className = "card plot"; box.dataset.plot = key;
          const h = document.createElement("h2"); h.textContent = `${device} · ${name}`;
          const area = document.createElement("div");
          box.append(h, area);
          root.append(box);
          p = plots[key] = {box, plot: EduPlot.make(area, [name], [dev.ts, col], {timezone: config.timezone})};
        } else {
          p.plot.setData([dev.ts, col]);
        }
        p.box.dataset.points = String(col.filter(v => v !== null).length);
      }
    }
    root.dataset.rows = String(total);
    if (rowsEl) rowsEl.textContent = String(total);
  }

  async function tick() {
    let more = false;
    try {
      const r = await fetch(`/api/sessions/${config.session}/data?after=${after}`, {credentials: "same-origin"});
      if (r.redirected || r.status === 401) { location.reload(); return; }
      if (r.ok) {
        const data = await r.json();
        for (const [device, part] of Object.entries(data.devices)) append(device, part);
        more = data.next > after && !data.session.running;  // a long finished session comes in parts
        after = data.next;
        draw();
        if (!data.session.running && config.running) { location.reload(); return; }  // stopped elsewhere
      }
    } catch (e) { /* the gateway is restarting: try again */ }
    if (more) setTimeout(tick, 0);
    else if (config.running) setTimeout(tick, 2000);
  }
  tick();
})();
