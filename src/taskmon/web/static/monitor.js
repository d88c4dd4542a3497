'use strict';

(() => {
  const BASE_DELAY = 1000;
  const MAX_DELAY = 5000;
  const REQUEST_TIMEOUT = 4000;
  const DASH = '—';

  const el = (id) => document.querySelector(`[data-testid="${id}"]`);
  const url = (document.body && document.body.dataset.statsUrl) || '/api/monitor/stats';
  let failures = 0;
  let timer = null;

  const setText = (node, text) => {
    if (node && node.textContent !== text) node.textContent = text;
  };
  const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : null);
  const fmtCount = (v) => {
    const n = num(v);
    return n === null ? DASH : String(n);
  };
  const fmtRate = (v) => {
    const n = num(v);
    return n === null ? DASH : `${(n * 100).toFixed(1)}%`;
  };

  function setStatus(state, text) {
    const node = el('status');
    if (!node) return;
    node.dataset.state = state;
    setText(node, text);
  }

  function render(data, headerWorker) {
    const counts = data.counts && typeof data.counts === 'object' ? data.counts : {};
    for (const key of ['queued', 'running', 'done', 'failed']) {
      setText(el(`count-${key}`), fmtCount(counts[key]));
    }
    setText(el('total'), fmtCount(data.total));
    setText(el('success-rate'), fmtRate(data.success_rate));

    const conc = data.concurrency && typeof data.concurrency === 'object' ? data.concurrency : {};
    const inUse = num(conc.in_use);
    const limit = num(conc.limit);
    setText(el('concurrency'), `${fmtCount(inUse)} / ${fmtCount(limit)}`);
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
      setText(badge, backend === 'unknown' ? DASH : backend);
      badge.dataset.mode = degraded ? 'degraded' : backend;
    }
    const banner = el('degraded');
    if (banner) banner.hidden = !degraded;
    const note = el('memory-note');
    if (note) note.hidden = degraded || backend !== 'memory';

    const worker = (typeof data.worker === 'string' && data.worker) || headerWorker || DASH;
    setText(el('worker'), worker);

    const now = new Date();
    const updated = el('updated');
    if (updated) {
      updated.dateTime = now.toISOString();
      setText(updated, now.toLocaleTimeString());
    }
  }

  const permitsUrl = (document.body && document.body.dataset.permitsUrl) || '/api/monitor/permits';

  // Who holds the permits: best effort, a failure here never marks the page stale.
  async function pollHolders(signal) {
    const body = el('holders');
    if (!body) return;
    const empty = el('holders-empty');
    try {
      const res = await fetch(permitsUrl, { cache: 'no-store', signal });
      if (!res.ok) {
        // The holders could not be read: never claim that none is held.
        if (empty) empty.hidden = true;
        return;
      }
      const data = await res.json();
      const holders = data && Array.isArray(data.holders) ? data.holders : [];
      const rows = holders.map((h) => {
        const tr = document.createElement('tr');
        const left = num(h.expires_in_s);
        for (const text of [h.worker, h.task_id, h.fencing, left === null ? DASH : `${left.toFixed(1)} s`]) {
          const td = document.createElement('td');
          td.textContent = text === undefined || text === null ? DASH : String(text);
          tr.appendChild(td);
        }
        return tr;
      });
      body.replaceChildren(...rows);
      if (empty) {
        // Degraded: the global holders cannot be read, only this worker's own.
        let text = 'No permit is held.';
        if (data.degraded === true) text = 'No permit is held by this worker (the holders of the others cannot be read now).';
        else if (data.scope === 'worker') text = 'No permit is held by this worker.';
        setText(empty, text);
        empty.hidden = rows.length > 0;
      }
      const caption = el('holders-caption');
      if (caption) setText(caption, data.degraded === true ? 'Permit holders of this worker only (degraded)' : 'Permit holders');
    } catch (err) {
      // Keep the last table, but never claim that none is held.
      if (empty) empty.hidden = true;
    }
  }

  async function poll() {
    const ctrl = typeof AbortController === 'function' ? new AbortController() : null;
    const killer = ctrl ? setTimeout(() => ctrl.abort(), REQUEST_TIMEOUT) : null;
    let ok = false;
    try {
      const res = await fetch(url, {
        cache: 'no-store',
        headers: { Accept: 'application/json' },
        signal: ctrl ? ctrl.signal : undefined,
      });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const data = await res.json();
      if (!data || typeof data !== 'object') throw new Error('bad payload');
      render(data, res.headers.get('X-Worker-Id'));
      ok = true;
      await pollHolders(ctrl ? ctrl.signal : undefined);
    } catch (err) {
      ok = false;
    } finally {
      if (killer !== null) clearTimeout(killer);
    }
    if (ok) {
      failures = 0;
      setStatus('live', 'live');
    } else {
      failures += 1;
      setStatus('stale', 'stale — retrying');
    }
    schedule();
  }

  function schedule() {
    const delay = failures === 0 ? BASE_DELAY : Math.min(MAX_DELAY, BASE_DELAY * 2 ** failures);
    clearTimeout(timer);
    timer = setTimeout(() => {
      poll().catch(() => schedule());
    }, delay);
  }

  const start = () => {
    poll().catch(() => schedule());
  };
  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', start);
  } else {
    start();
  }
})();
