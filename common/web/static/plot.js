// Small helpers around uPlot shared by the live page and central's gateway page.
"use strict";
window.EduPlot = (() => {
  const COLORS = ["#0b6bcb", "#c2410c", "#15803d", "#7c3aed", "#be185d", "#0f766e", "#a16207", "#475569"];

  // Draw min/max threshold lines (dashed red) and keep them inside the y range.
  function thresholdPlugin(limit) {
    if (!limit) return {hooks: {}};
    const lines = [limit.min, limit.max].filter(v => v !== null && v !== undefined);
    return {
      opts: (self, opts) => {
        const y = opts.scales.y = opts.scales.y || {};
        y.range = (u, lo, hi) => {
          if (lo === null || hi === null) { lo = Math.min(...lines); hi = Math.max(...lines); }
          lo = Math.min(lo, ...lines); hi = Math.max(hi, ...lines);
          const pad = (hi - lo) * 0.08 || Math.abs(hi) * 0.05 || 1;
          return [lo - pad, hi + pad];
        };
      },
      hooks: {
        draw: [u => {
          const ctx = u.ctx;
          ctx.save();
          ctx.strokeStyle = "#c62828";
          ctx.lineWidth = 1.5 * devicePixelRatio;
          ctx.setLineDash([6 * devicePixelRatio, 4 * devicePixelRatio]);
          for (const v of lines) {
            const y = Math.round(u.valToPos(v, "y", true));
            ctx.beginPath(); ctx.moveTo(u.bbox.left, y); ctx.lineTo(u.bbox.left + u.bbox.width, y); ctx.stroke();
          }
          ctx.restore();
        }],
      },
    };
  }

  // One plot: x = Unix seconds, one or more y series.
  function make(container, labels, data, {limit = null, height = 200, timezone = null} = {}) {
    const width = Math.max(240, container.clientWidth || 300);
    const series = [{}].concat(labels.map((label, i) => ({
      label, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: false, points: {show: false},
    })));
    const opts = {width, height, series, scales: {x: {time: true}}, legend: {show: labels.length > 1},
                  cursor: {drag: {x: true, y: false}}, plugins: [thresholdPlugin(limit)]};
    if (timezone) opts.tzDate = ts => uPlot.tzDate(new Date(ts * 1000), timezone);  // the school's clock
    const plot = new uPlot(opts, data, container);
    new ResizeObserver(() => {
      const w = Math.max(240, container.clientWidth);
      if (Math.abs(w - plot.width) > 2) plot.setSize({width: w, height});
    }).observe(container);
    return plot;
  }

  return {make, COLORS};
})();
