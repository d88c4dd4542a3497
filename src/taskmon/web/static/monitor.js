'use strict';

// The monitor page: polls the JSON endpoints the page names on <body data-*-url>, and hands
// each stats read to the charts (monitor_charts.js, loaded first).
//
// Why polling, not an event feed: /api/monitor/stats is one cheap read whatever the load
// (an HMGET of the counters and the semaphore's count), so sampling it every second costs
// the same at 1 task/s and at 1,000, and the chart wants a sample per interval anyway. A
// global SSE feed would cost a publish and a delivery to every open page per transition of
// every task, and would still need the stats snapshot for the counts and the permits. The
// recent list (two Redis round trips) is read every 2 s, and at once when the counts move;
// per-worker state every 5 s; all of it pauses while the tab is hidden. A task's own SSE
// stream stays the way to follow one task (docs/api.md).
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

  // The two charts (monitor_charts.js, loaded first): one sample per stats read.
  const charts = window.taskmonCharts.create({ el, num, str, setText, sampleEveryMs: STATS_EVERY_MS });

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
    charts.addSample(data);
    setStatus('live', 'live');
    showOffline(false);
    return true;
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
    window.addEventListener('resize', charts.draw);
    const scheme = window.matchMedia ? window.matchMedia('(prefers-color-scheme: dark)') : null;
    if (scheme && scheme.addEventListener) scheme.addEventListener('change', charts.draw);
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
