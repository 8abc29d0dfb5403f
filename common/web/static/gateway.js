// Central's gateway page: plots of the gateway's devices and health from the store (PromQL query_range).
"use strict";
(() => {
  const config = JSON.parse(document.getElementById("gateway-config").textContent);
  const rangeEl = document.getElementById("range");
  const stateEl = document.getElementById("plot-state");
  const base = `/api/gateways/${encodeURIComponent(config.school)}/${encodeURIComponent(config.gateway)}/series`;

  function plots(container, group, title) {
    const names = Object.keys(group.values);
    for (const name of names) {
      const box = document.createElement("div"); box.className = "plot"; box.dataset.plot = `${title}.${name}`;
      const h = document.createElement("h3"); h.textContent = name;
      const area = document.createElement("div");
      box.append(h, area); container.append(box);
      EduPlot.make(area, [name], [group.ts, group.values[name]], {height: 170, timezone: config.timezone});
    }
  }

  async function load() {
    stateEl.textContent = "loading…";
    const r = await fetch(`${base}?range=${rangeEl.value}`, {credentials: "same-origin"});
    if (!r.ok) { stateEl.textContent = `store: HTTP ${r.status}`; return 0; }
    const data = await r.json();
    const health = document.getElementById("health-plots");
    const devices = document.getElementById("device-plots");
    health.replaceChildren(); devices.replaceChildren();
    plots(health, {ts: data.health.ts, values: {...data.health.values, ...data.online.values}}, "_gateway");
    for (const [device, group] of Object.entries(data.devices)) {
      const section = document.createElement("section"); section.className = "card"; section.dataset.device = device;
      const h = document.createElement("h2"); h.textContent = device + (group.room ? ` (${group.room})` : "");
      const grid = document.createElement("div"); grid.className = "plots";
      section.append(h, grid); devices.append(section);
      plots(grid, group, device);
    }
    const n = Object.keys(data.devices).length;
    stateEl.textContent = n ? `${n} devices, one point per ${data.step_s} s` : "no data in the store yet";
    return n;
  }

  let timer = null;
  async function cycle() {
    clearTimeout(timer);
    const n = await load().catch(() => 0);
    timer = setTimeout(cycle, n ? 30000 : 5000);  // sooner while the store has nothing yet
  }
  rangeEl.addEventListener("change", cycle);
  cycle();
})();
