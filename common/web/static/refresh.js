// Refresh a server-rendered part of the page: <div data-refresh="/url" data-interval="ms">.
"use strict";
(() => {
  const stale = document.getElementById("stale");
  for (const el of document.querySelectorAll("[data-refresh]")) {
    const every = Number(el.dataset.interval) || 2000;
    const tick = async () => {
      try {
        const r = await fetch(el.dataset.refresh + location.search, {credentials: "same-origin"});
        if (r.redirected || r.status === 401) { location.reload(); return; }  // the session ended
        if (!r.ok) throw new Error(`HTTP ${r.status}`);
        el.innerHTML = await r.text();  // server-rendered, escaped by the template engine
        if (stale) stale.hidden = true;
      } catch (e) {
        if (stale) stale.hidden = false;
      }
      setTimeout(tick, every);
    };
    setTimeout(tick, every);
  }
})();
