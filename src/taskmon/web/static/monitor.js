'use strict';

// The monitor page: polls the JSON endpoints the page names on <body data-*-url>.
//
// Why polling, not an event feed: /api/monitor/stats is one cheap read whatever the load
// (an HMGET of the counters and the semaphore's count), so sampling it every second costs
// the same at 1 task/s and at 1,000, and the chart wants a sample per interval anyway. A
// global SSE feed would cost a publish and a delivery to every open page per transition of
// every task, and would still need the stats snapshot for the counts and the permits. The
// recent list (two Redis round trips) is read every 2 s, and at once when the counts move;
// per-worker state every 5 s; all of it pauses while the tab is hidden. A task's own SSE stream stays the way to follow one
// task (docs/api.md).
//
// Every string from the server is put on the page with textContent, never parsed as HTML: task
// text, ids, worker names and error messages are shown as text, whatever markup they carry.
(() => {
  const STATS_EVERY_MS = 1000;
  const PERMITS_EVERY_MS = 1000; // beside the in-flight figure, which it explains
  const RECENT_EVERY_MS = 2000;
  const WORKERS_EVERY_MS = 5000;
  const MAX_DELAY_MS = 5000;
  const MIN_GAP_MS = 500;
  const REQUEST_TIMEOUT_MS = 4000;
  const WINDOW_MS = 5 * 60 * 1000;
  const MIN_WINDOW_MS = 60 * 1000;
  const BUCKET_MS = 5000;
  const MAX_PAIR_GAP_MS = 2 * BUCKET_MS;
  const GAP_MS = 3500; // a hole longer than this between samples breaks the line
  const RECENT_LIMIT = 50;
  const OFFLINE_AFTER = 2; // failed stats reads in a row before the "no answer" banner
  const DASH = '—';
  const STATES = ['queued', 'running', 'done', 'failed'];
  const RESULT_PREFIX = '/api/task/result/';

  const body = document.body;
  const el = (id) => document.querySelector(`[data-testid="${id}"]`);
  const urls = {
    stats: body.dataset.statsUrl || '/api/monitor/stats',
    permits: body.dataset.permitsUrl || '/api/monitor/permits',
    recent: body.dataset.recentUrl || '/api/monitor/recent',
    workers: body.dataset.workersUrl || '/api/monitor/workers',
  };

  // -- formatting --------------------------------------------------------------------------

  const setText = (node, text) => {
    if (node && node.textContent !== text) node.textContent = text;
  };
  const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : null);
  const str = (v) => (v === undefined || v === null ? DASH : String(v));
  const fmtCount = (v) => {
    const n = num(v);
    return n === null ? DASH : n.toLocaleString('en-US');
  };
  const fmtRate = (v) => {
    const n = num(v);
    return n === null ? DASH : `${(n * 100).toFixed(1)}%`;
  };
  const fmtSeconds = (v) => {
    const n = num(v);
    if (n === null) return DASH;
    if (n < 10) return `${n.toFixed(2)} s`;
    if (n < 60) return `${n.toFixed(1)} s`;
    const minutes = Math.floor(n / 60);
    return `${minutes} min ${Math.round(n - minutes * 60)} s`;
  };
  const shortId = (id) => (typeof id === 'string' ? id.slice(0, 8) : DASH);

  // -- polling -----------------------------------------------------------------------------

  async function getJson(url) {
    const ctrl = new AbortController();
    const killer = setTimeout(() => ctrl.abort(), REQUEST_TIMEOUT_MS);
    try {
      const res = await fetch(url, {
        cache: 'no-store',
        headers: { Accept: 'application/json' },
        signal: ctrl.signal,
      });
      const data = res.ok ? await res.json() : null;
      return { status: res.status, data, worker: res.headers.get('X-Worker-Id') };
    } finally {
      clearTimeout(killer);
    }
  }

  // Runs `read` every `everyMs` while the tab is visible; after failures, backs off to
  // MAX_DELAY_MS. `read` answers true when it got an answer. `wake()` reads at once (at most
  // once per MIN_GAP_MS), for a change seen elsewhere on the page.
  function every(everyMs, read) {
    let failures = 0;
    let timer = null;
    let busy = false;
    let lastRun = 0;
    const tick = async () => {
      clearTimeout(timer);
      if (!document.hidden) {
        busy = true;
        lastRun = Date.now();
        let ok = false;
        try {
          ok = await read();
        } catch (err) {
          ok = false;
        }
        busy = false;
        failures = ok ? 0 : failures + 1;
      }
      const delay = failures === 0 ? everyMs : Math.min(MAX_DELAY_MS, everyMs * 2 ** failures);
      timer = setTimeout(tick, delay);
    };
    tick();
    return {
      wake() {
        if (!busy && failures === 0 && Date.now() - lastRun >= MIN_GAP_MS) tick();
      },
    };
  }

  // Keeps `tbody`'s rows in the order of `items`, reusing each row by its key, so a row
  // (and a focused link in it) stays in place across refreshes.
  function syncRows(tbody, items, keyOf, build, update) {
    const existing = new Map();
    for (const row of tbody.rows) existing.set(row.dataset.key, row);
    // Two items may share a key (two processes of one worker name, a restarted container's
    // old record): the second gets its own row, never one that would be left behind.
    const seen = new Map();
    items.forEach((item, index) => {
      const base = String(keyOf(item, index));
      const nth = (seen.get(base) || 0) + 1;
      seen.set(base, nth);
      const key = nth === 1 ? base : `${base}#${nth}`;
      let row = existing.get(key);
      if (row) existing.delete(key);
      else {
        row = build();
        row.dataset.key = key;
      }
      update(row, item);
      if (tbody.rows[index] !== row) tbody.insertBefore(row, tbody.rows[index] || null);
    });
    for (const row of existing.values()) row.remove();
  }

  function rowOf(columns) {
    const tr = document.createElement('tr');
    for (const [col, cls] of columns) {
      const td = document.createElement('td');
      td.dataset.col = col;
      if (cls) td.className = cls;
      tr.appendChild(td);
    }
    return tr;
  }
  const cell = (row, col) => row.querySelector(`[data-col="${col}"]`);

  // -- stats: tiles, concurrency, banners, chart samples -----------------------------------

  let statsFailures = 0;
  let lastUpdate = null;
  let lastCounts = '';
  let recentReader = null;

  function setStatus(state, text) {
    const node = el('status');
    if (!node) return;
    node.dataset.state = state;
    setText(node, text);
  }

  function renderStats(data, headerWorker) {
    const counts = data.counts && typeof data.counts === 'object' ? data.counts : {};
    for (const key of STATES) setText(el(`count-${key}`), fmtCount(counts[key]));
    setText(el('total'), fmtCount(data.total));
    setText(el('success-rate'), fmtRate(data.success_rate));

    const conc = data.concurrency && typeof data.concurrency === 'object' ? data.concurrency : {};
    const inUse = num(conc.in_use);
    const limit = num(conc.limit);
    setText(el('concurrency'), `${fmtCount(inUse)} / ${fmtCount(limit)}`);
    let scope = conc.scope === 'worker' ? "(this worker's own)" : '(every worker)';
    if (data.degraded === true && limit === 0) {
      scope = "(this worker's share of the cap is 0 while Redis is away: its tasks wait for Redis)";
    }
    setText(el('concurrency-scope'), scope);
    const fill = el('concurrency-bar');
    if (fill) {
      const pct = inUse !== null && limit ? Math.max(0, Math.min(100, (inUse / limit) * 100)) : 0;
      fill.style.width = `${pct}%`;
      fill.classList.toggle('full', limit !== null && limit > 0 && inUse !== null && inUse >= limit);
    }

    const backend = typeof data.backend === 'string' && data.backend ? data.backend : 'unknown';
    const degraded = data.degraded === true;
    const badge = el('backend');
    if (badge) {
      setText(badge, backend === 'unknown' ? DASH : degraded ? `${backend} (degraded)` : backend);
      badge.dataset.mode = degraded ? 'degraded' : backend;
    }
    const banner = el('degraded');
    if (banner) banner.hidden = !degraded;
    let policy = '';
    if (data.fallback_policy === 'reject') policy = 'New tasks are refused (429, Retry-After) until Redis is back.';
    else if (data.fallback_policy === 'partition') policy = "New tasks run under this worker's share of the cap.";
    setText(el('fallback-policy-text'), policy);
    const note = el('memory-note');
    if (note) note.hidden = degraded || backend !== 'memory';

    setText(el('worker'), (typeof data.worker === 'string' && data.worker) || headerWorker || DASH);
    lastUpdate = new Date();
    const updated = el('updated');
    if (updated) {
      updated.dateTime = lastUpdate.toISOString();
      setText(updated, lastUpdate.toLocaleTimeString());
    }
  }

  function showOffline(offline) {
    const banner = el('offline');
    if (banner) banner.hidden = !offline;
    const since = el('offline-since');
    if (since && lastUpdate) {
      since.dateTime = lastUpdate.toISOString();
      setText(since, lastUpdate.toLocaleTimeString());
    }
  }

  async function readStats() {
    let res = null;
    try {
      res = await getJson(urls.stats);
    } catch (err) {
      res = null;
    }
    const data = res && res.status === 200 ? res.data : null;
    if (!data || typeof data !== 'object') {
      statsFailures += 1;
      setStatus('stale', 'stale — retrying');
      showOffline(statsFailures >= OFFLINE_AFTER);
      return false;
    }
    statsFailures = 0;
    renderStats(data, res.worker);
    // The counts moved: the recent list is read now rather than at its next turn, so the
    // list and the tiles agree within a second while tasks move (and cost nothing when idle).
    const counts = JSON.stringify(data.counts || null);
    if (counts !== lastCounts && recentReader) recentReader.wake();
    lastCounts = counts;
    addSample(data);
    setStatus('live', 'live');
    showOffline(false);
    return true;
  }

  // -- charts ------------------------------------------------------------------------------

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

  // -- permit holders ----------------------------------------------------------------------

  async function readPermits() {
    const tbody = el('holders');
    const empty = el('holders-empty');
    let res = null;
    try {
      res = await getJson(urls.permits);
    } catch (err) {
      res = null;
    }
    const data = res && res.status === 200 ? res.data : null;
    if (!data || typeof data !== 'object') {
      if (empty) empty.hidden = true; // never claim that none is held
      return false;
    }
    const holders = Array.isArray(data.holders) ? data.holders : [];
    syncRows(
      tbody,
      holders,
      (h) => str(h.task_id),
      () => rowOf([['worker', ''], ['task', 'mono'], ['fencing', 'num'], ['left', 'num']]),
      (row, h) => {
        setText(cell(row, 'worker'), str(h.worker));
        setText(cell(row, 'task'), str(h.task_id));
        setText(cell(row, 'fencing'), str(h.fencing));
        setText(cell(row, 'left'), fmtSeconds(h.expires_in_s));
      },
    );
    let text = 'No permit is held.';
    if (data.degraded === true) text = 'No permit is held by this worker (the holders of the others cannot be read now).';
    else if (data.scope === 'worker') text = 'No permit is held by this worker.';
    setText(empty, text);
    if (empty) empty.hidden = holders.length > 0;
    setText(el('holders-caption'), data.degraded === true ? 'Permit holders of this worker only (degraded)' : 'Permit holders');
    return true;
  }

  // -- recent tasks ------------------------------------------------------------------------

  const RECENT_COLUMNS = [
    ['task', 'mono'], ['state', ''], ['worker', ''], ['waited', 'num'], ['ran', 'num'],
    ['text', 'excerpt'], ['result', ''],
  ];

  function updateTaskRow(row, t) {
    const state = STATES.includes(t.state) ? t.state : 'unknown';
    row.dataset.taskId = str(t.task_id);
    row.dataset.state = state;
    const id = cell(row, 'task');
    setText(id, shortId(t.task_id));
    id.title = str(t.task_id);
    let badge = cell(row, 'state').firstElementChild;
    if (!badge) {
      badge = document.createElement('span');
      cell(row, 'state').appendChild(badge);
    }
    badge.className = `state s-${state}`;
    setText(badge, state);
    setText(cell(row, 'worker'), str(t.worker));
    setText(cell(row, 'waited'), fmtSeconds(t.queued_s));
    setText(cell(row, 'ran'), t.run_s === null || t.run_s === undefined ? DASH : fmtSeconds(t.run_s) + (state === 'running' ? ' …' : ''));
    const text = cell(row, 'text');
    setText(text, typeof t.text_excerpt === 'string' ? t.text_excerpt : '');
    text.title = text.textContent;
    const result = cell(row, 'result');
    const href = typeof t.result_url === 'string' && t.result_url.startsWith(RESULT_PREFIX) ? t.result_url : null;
    const link = result.querySelector('a');
    if (href) {
      if (!link || link.getAttribute('href') !== href) {
        const a = document.createElement('a');
        a.href = href;
        a.textContent = 'WAV';
        a.setAttribute('aria-label', `Result of task ${str(t.task_id)} (WAV audio)`);
        result.replaceChildren(a);
      }
    } else {
      const error = t.error && typeof t.error === 'object' ? t.error : null;
      if (link) link.remove();
      setText(result, error ? str(error.code) : DASH);
      result.title = error ? str(error.message) : '';
    }
  }

  async function readRecent() {
    let res = null;
    try {
      res = await getJson(`${urls.recent}?limit=${RECENT_LIMIT}`);
    } catch (err) {
      res = null;
    }
    const data = res && res.status === 200 ? res.data : null;
    if (!data || typeof data !== 'object') {
      if (el('recent').rows.length) setText(el('recent-caption'), 'Recent tasks as last read (the list cannot be read now; retrying)');
      return false;
    }
    const tasks = Array.isArray(data.tasks) ? data.tasks : [];
    syncRows(el('recent'), tasks, (t) => str(t.task_id), () => rowOf(RECENT_COLUMNS), updateTaskRow);
    const empty = el('recent-empty');
    if (empty) empty.hidden = tasks.length > 0;
    let caption = 'The newest tasks, newest first';
    if (data.degraded === true) caption = "This worker's newest tasks (degraded: the others' cannot be read now)";
    else if (data.scope === 'worker') caption = "This worker's newest tasks (in-memory backend)";
    setText(el('recent-caption'), caption);
    const oldest = data.oldest_queued && typeof data.oldest_queued === 'object' ? data.oldest_queued : null;
    const tile = el('oldest-queued');
    setText(tile, oldest ? `${fmtSeconds(oldest.queued_s)} waiting (${shortId(oldest.task_id)})` : 'none');
    if (tile) tile.title = oldest ? str(oldest.task_id) : '';
    return true;
  }

  // -- per-worker state --------------------------------------------------------------------

  const WORKER_COLUMNS = [
    ['worker', 'mono'], ['backend', ''], ['mode', ''], ['in_flight', 'num'], ['pending', 'num'],
    ['draining', ''], ['last_seen', 'num'],
  ];

  async function readWorkers() {
    const panel = el('workers-panel');
    const unavailable = el('workers-unavailable');
    let res = null;
    try {
      res = await getJson(urls.workers);
    } catch (err) {
      res = null;
    }
    if (res && res.status === 404) {
      // This service does not report per-worker state: an answer, not a failure.
      setText(unavailable, 'Per-worker state unavailable (this service does not report it).');
      unavailable.hidden = false;
      panel.hidden = true;
      return true;
    }
    const data = res && res.status === 200 ? res.data : null;
    if (!data || typeof data !== 'object' || !Array.isArray(data.workers)) {
      setText(unavailable, 'Per-worker state unavailable: the last read failed; retrying.');
      unavailable.hidden = false;
      return false;
    }
    unavailable.hidden = true;
    panel.hidden = false;
    syncRows(
      el('workers'),
      data.workers,
      (w) => str(w.worker),
      () => rowOf(WORKER_COLUMNS),
      (row, w) => {
        row.dataset.degraded = String(w.degraded === true);
        setText(cell(row, 'worker'), str(w.worker));
        setText(cell(row, 'backend'), str(w.backend));
        setText(cell(row, 'mode'), w.degraded === true ? 'degraded' : 'normal');
        setText(cell(row, 'in_flight'), fmtCount(w.in_flight));
        setText(cell(row, 'pending'), fmtCount(w.pending));
        setText(cell(row, 'draining'), w.draining === true ? 'draining' : 'no');
        setText(cell(row, 'last_seen'), num(w.last_seen_s) === null ? DASH : `${fmtSeconds(w.last_seen_s)} ago`);
      },
    );
    setText(el('workers-caption'), `Workers, as seen by ${str(data.worker)}`);
    return true;
  }

  // -- start -------------------------------------------------------------------------------

  function start() {
    recentReader = every(RECENT_EVERY_MS, readRecent);
    every(STATS_EVERY_MS, readStats);
    every(PERMITS_EVERY_MS, readPermits);
    every(WORKERS_EVERY_MS, readWorkers);
    window.addEventListener('resize', drawCharts);
    const scheme = window.matchMedia ? window.matchMedia('(prefers-color-scheme: dark)') : null;
    if (scheme && scheme.addEventListener) scheme.addEventListener('change', drawCharts);
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
