'use strict';

// The monitor page's two charts, drawn on <canvas>: syntheses in flight against the limit
// (degraded spans shaded, samples above the limit marked) and tasks finished per 5 s. monitor.js
// loads after this file and feeds it one sample per stats read (`addSample`); `draw` redraws
// for a resize or a colour-scheme change. Each chart also states its figures as text (a summary
// line, and data-* attributes the browser tests read), put on the page with textContent only.
window.taskmonCharts = (() => {
  const WINDOW_MS = 5 * 60 * 1000;
  const MIN_WINDOW_MS = 60 * 1000;
  const BUCKET_MS = 5000;
  const MAX_PAIR_GAP_MS = 2 * BUCKET_MS;
  const GAP_MS = 3500; // a hole longer than this between samples breaks the line

  // `page` gives the page's helpers (el, num, str, setText) and how often it samples.
  function create(page) {
    const { el, num, str, setText } = page;
    const STATS_EVERY_MS = page.sampleEveryMs;

    const samples = [];

    function addSample(data) {
      const counts = data.counts && typeof data.counts === 'object' ? data.counts : {};
      const conc = data.concurrency && typeof data.concurrency === 'object' ? data.concurrency : {};
      const now = Date.now();
      samples.push({
        t: now,
        inUse: num(conc.in_use),
        limit: num(conc.limit),
        done: num(counts.done),
        failed: num(counts.failed),
        degraded: data.degraded === true,
        scope: conc.scope,
        worker: data.worker,
      });
      while (samples.length && samples[0].t < now - WINDOW_MS - BUCKET_MS) samples.shift();
      drawCharts();
    }

    // Finish counts of two samples are comparable only from one store: not across a switch to
    // or from degraded mode, and in memory mode only from one worker.
    const comparable = (a, b) =>
      !a.degraded && !b.degraded && a.scope === b.scope &&
      (a.scope !== 'worker' || a.worker === b.worker) &&
      a.done !== null && b.done !== null && a.failed !== null && b.failed !== null;

    function palette() {
      const css = getComputedStyle(document.documentElement);
      const v = (name) => css.getPropertyValue(name).trim();
      return {
        fg: v('--fg'), muted: v('--muted'), grid: v('--border'), inflight: v('--accent'),
        limit: v('--fg'), degraded: v('--warn-border'), done: v('--ok'), failed: v('--bad'),
      };
    }

    function canvasFor(id) {
      const canvas = el(id);
      if (!canvas || !canvas.getContext) return null;
      const dpr = window.devicePixelRatio || 1;
      const w = Math.max(1, canvas.clientWidth);
      const h = Math.max(1, canvas.clientHeight);
      if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
        canvas.width = Math.round(w * dpr);
        canvas.height = Math.round(h * dpr);
      }
      const ctx = canvas.getContext('2d');
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.clearRect(0, 0, w, h);
      ctx.font = '11px system-ui, sans-serif';
      return { canvas, ctx, w, h };
    }

    // The span the charts show: since the first sample (at least a minute), at most WINDOW_MS,
    // so a page opened a moment ago already shows a readable chart.
    function span(now) {
      const first = samples.length ? samples[0].t : now;
      const wanted = Math.max(MIN_WINDOW_MS, now - first);
      return Math.min(WINDOW_MS, Math.ceil(wanted / BUCKET_MS) * BUCKET_MS);
    }

    const fmtSpan = (ms) => (ms % 60000 ? `${Math.round(ms / 1000)} s` : `${ms / 60000} min`);
    const fmtAgo = (ms) => {
      const s = Math.round(ms / 1000);
      if (s === 0) return 'now';
      if (s < 60) return `\u2212${s} s`;
      return s % 60 ? `\u2212${Math.floor(s / 60)} min ${s % 60} s` : `\u2212${s / 60} min`;
    };

    // The frame both charts share: y ticks (integers) on the left, time ago on the bottom.
    function frame(ctx, w, h, yMax, spanMs, colors) {
      const box = { left: 34, right: w - 8, top: 8, bottom: h - 20 };
      const step = Math.max(1, Math.ceil(yMax / 4));
      const top = Math.max(step, Math.ceil(yMax / step) * step);
      box.y = (v) => box.bottom - (v / top) * (box.bottom - box.top);
      box.x = (t, now) => box.left + ((t - (now - spanMs)) / spanMs) * (box.right - box.left);
      ctx.strokeStyle = colors.grid;
      ctx.fillStyle = colors.muted;
      ctx.lineWidth = 1;
      ctx.textAlign = 'right';
      ctx.textBaseline = 'middle';
      for (let v = 0; v <= top; v += step) {
        const y = Math.round(box.y(v)) + 0.5;
        ctx.beginPath();
        ctx.moveTo(box.left, y);
        ctx.lineTo(box.right, y);
        ctx.stroke();
        ctx.fillText(String(v), box.left - 6, y);
      }
      ctx.textAlign = 'center';
      ctx.textBaseline = 'top';
      const tick = [10000, 15000, 30000, 60000].find((ms) => spanMs / ms <= 6) || 60000;
      const labelWidth = 56;
      const every = Math.max(1, Math.ceil((labelWidth * (spanMs / tick)) / Math.max(1, box.right - box.left)));
      for (let ago = 0, n = 0; ago <= spanMs; ago += tick, n += 1) {
        if (n % every) continue;
        const x = box.right - (ago / spanMs) * (box.right - box.left);
        ctx.fillText(fmtAgo(ago), Math.min(Math.max(x, box.left + 20), box.right - 14), box.bottom + 5);
      }
      return box;
    }

    function drawInFlight(now, colors) {
      const c = canvasFor('chart-inflight');
      if (!c) return;
      const { canvas, ctx, w, h } = c;
      const spanMs = span(now);
      const shown = samples.filter((s) => s.t >= now - spanMs);
      const known = shown.filter((s) => s.inUse !== null);
      const peak = known.reduce((m, s) => Math.max(m, s.inUse), 0);
      const limits = shown.filter((s) => s.limit !== null);
      const maxLimit = limits.reduce((m, s) => Math.max(m, s.limit), 0);
      const over = known.filter((s) => s.limit !== null && s.inUse > s.limit).length;
      const box = frame(ctx, w, h, Math.max(1, peak, maxLimit), spanMs, colors);
      const until = (i) => {
        const next = shown[i + 1];
        return next && next.t - shown[i].t <= GAP_MS ? next.t : shown[i].t + STATS_EVERY_MS;
      };
      // Degraded spans, shaded behind the lines.
      ctx.globalAlpha = 0.25;
      ctx.fillStyle = colors.degraded;
      shown.forEach((s, i) => {
        if (s.degraded) ctx.fillRect(box.x(s.t, now), box.top, box.x(until(i), now) - box.x(s.t, now), box.bottom - box.top);
      });
      ctx.globalAlpha = 1;
      const stepLine = (value, color, dash, fill) => {
        ctx.strokeStyle = color;
        ctx.lineWidth = 2;
        ctx.setLineDash(dash);
        shown.forEach((s, i) => {
          const v = value(s);
          if (v === null) return;
          const x0 = box.x(s.t, now);
          const x1 = Math.min(box.right, box.x(until(i), now));
          const y = box.y(v);
          if (fill) {
            ctx.globalAlpha = 0.18;
            ctx.fillStyle = color;
            ctx.fillRect(x0, y, x1 - x0, box.bottom - y);
            ctx.globalAlpha = 1;
          }
          ctx.beginPath();
          ctx.moveTo(x0, y);
          ctx.lineTo(x1, y);
          const next = shown[i + 1];
          if (next && next.t - s.t <= GAP_MS && value(next) !== null) ctx.lineTo(x1, box.y(value(next)));
          ctx.stroke();
        });
        ctx.setLineDash([]);
      };
      stepLine((s) => s.limit, colors.limit, [5, 4], false);
      stepLine((s) => s.inUse, colors.inflight, [], true);
      ctx.fillStyle = colors.failed;
      for (const s of known) {
        if (s.limit !== null && s.inUse > s.limit) {
          ctx.beginPath();
          ctx.arc(box.x(s.t, now), box.y(s.inUse), 4, 0, 2 * Math.PI);
          ctx.fill();
        }
      }
      const latest = known.length ? known[known.length - 1] : null;
      canvas.dataset.samples = String(known.length);
      canvas.dataset.peak = String(peak);
      canvas.dataset.limit = latest && latest.limit !== null ? String(latest.limit) : '';
      canvas.dataset.over = String(over);
      canvas.dataset.latest = latest ? String(latest.inUse) : '';
      const summary = latest
        ? `In flight now ${latest.inUse} of ${str(latest.limit)}; peak ${peak} over ${known.length} samples in the ${fmtSpan(spanMs)} shown` +
          (over ? `; above the limit in ${over} samples.` : '; above the limit in no sample.')
        : 'No sample yet.';
      setText(el('inflight-summary'), summary);
    }

    function drawThroughput(now, colors) {
      const c = canvasFor('chart-throughput');
      if (!c) return;
      const { canvas, ctx, w, h } = c;
      const spanMs = span(now);
      const count = spanMs / BUCKET_MS;
      const firstStart = Math.floor(now / BUCKET_MS) * BUCKET_MS - (count - 1) * BUCKET_MS;
      const buckets = Array.from({ length: count }, (_, i) => ({ start: firstStart + i * BUCKET_MS, done: 0, failed: 0 }));
      for (let i = 1; i < samples.length; i += 1) {
        const a = samples[i - 1];
        const b = samples[i];
        // A gap (tab hidden, service away) would pour everything finished meanwhile into one
        // bar: such a pair counts nowhere rather than in the wrong place.
        if (!comparable(a, b) || b.t - a.t > MAX_PAIR_GAP_MS) continue;
        const index = Math.floor((b.t - firstStart) / BUCKET_MS);
        if (index < 0 || index >= count) continue;
        // A Redis restarted empty starts its counters again: never a negative bar.
        buckets[index].done += Math.max(0, b.done - a.done);
        buckets[index].failed += Math.max(0, b.failed - a.failed);
      }
      const tallest = buckets.reduce((m, b) => Math.max(m, b.done + b.failed), 0);
      const box = frame(ctx, w, h, Math.max(1, tallest), spanMs, colors);
      const slot = (box.right - box.left) / count;
      const width = Math.max(1, slot - 1);
      buckets.forEach((b, i) => {
        const x = box.left + i * slot;
        if (b.done) {
          ctx.fillStyle = colors.done;
          ctx.fillRect(x, box.y(b.done), width, box.bottom - box.y(b.done));
        }
        if (b.failed) {
          ctx.fillStyle = colors.failed;
          ctx.fillRect(x, box.y(b.done + b.failed), width, box.y(b.done) - box.y(b.done + b.failed));
        }
      });
      const sum = (list, key) => list.reduce((n, b) => n + b[key], 0);
      const lastMinute = buckets.slice(-MIN_WINDOW_MS / BUCKET_MS);
      const finished = sum(buckets, 'done') + sum(buckets, 'failed');
      canvas.dataset.finished = String(finished);
      canvas.dataset.failed = String(sum(buckets, 'failed'));
      canvas.dataset.tallest = String(tallest);
      const minute = sum(lastMinute, 'done') + sum(lastMinute, 'failed');
      setText(
        el('throughput-summary'),
        samples.length < 2
          ? 'No sample yet.'
          : `${minute} finished in the last minute (${sum(lastMinute, 'failed')} failed); ${finished} in the ${fmtSpan(spanMs)} shown.`,
      );
    }

    function drawCharts() {
      const now = Date.now();
      const colors = palette();
      drawInFlight(now, colors);
      drawThroughput(now, colors);
    }

    return { addSample, draw: drawCharts };
  }

  return { create };
})();
