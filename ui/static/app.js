// Kagzi dashboard: hash-routed pages over the public API. The URL holds
// the page and its filters (#/runs?ns=default&status=failed), so links
// can be shared. Everything is built with DOM calls, never innerHTML.
import { api, ApiError, getKey, setKey, nsPath } from './api.js';
import { lineChart } from './chart.js';

const main = document.getElementById('main');
const flash = document.getElementById('flash');
const nsSelect = document.getElementById('namespace');
let refreshTimer = null;
let renderSeq = 0;

// h builds an element: attributes (on* are listeners) and children
// (strings become text).
function h(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'class') e.className = v;
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

// route is the page, its argument and its parameters, from the hash.
function route() {
  const hash = location.hash.replace(/^#/, '') || '/overview';
  const [path, qs] = hash.split('?');
  const parts = path.split('/').filter(Boolean);
  return { page: parts[0] || 'overview', arg: parts[1] ? decodeURIComponent(parts[1]) : '', params: new URLSearchParams(qs || '') };
}

function currentNS() {
  return route().params.get('ns') || 'default';
}

// link is the hash of a page in the current namespace.
function link(page, arg, params) {
  const p = new URLSearchParams(params || {});
  for (const [k, v] of [...p]) if (v === '' || v === undefined) p.delete(k);
  p.set('ns', currentNS());
  return '#/' + page + (arg ? '/' + encodeURIComponent(arg) : '') + '?' + p.toString();
}

function say(message, kind = 'error') {
  flash.replaceChildren();
  if (!message) return;
  flash.className = kind;
  flash.append(h('p', {}, message));
}

function errorText(err) {
  return err instanceof ApiError ? err.message : 'Something went wrong in the dashboard: ' + err.message;
}

// act runs a change the user asked for, says how it went, and re-renders.
async function act(what, fn) {
  try {
    const result = await fn();
    say(what + ' done.', 'ok');
    await render(false);
    return result;
  } catch (err) {
    say(`Could not ${what.toLowerCase()}: ${errorText(err)}`);
    return null;
  }
}

// Formatting.
function ago(ts) {
  if (!ts) return '—';
  const s = Math.round((Date.now() - new Date(ts).getTime()) / 1000);
  return (s < 0 ? 'in ' : '') + duration(Math.abs(s) * 1000) + (s < 0 ? '' : ' ago');
}

function duration(ms) {
  if (ms === null || ms === undefined) return '—';
  if (ms < 1000) return Math.round(ms) + ' ms';
  const s = ms / 1000;
  if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + ' s';
  if (s < 3600) return Math.floor(s / 60) + ' min ' + Math.round(s % 60) + ' s';
  if (s < 86400) return Math.floor(s / 3600) + ' h ' + Math.round((s % 3600) / 60) + ' min';
  return Math.floor(s / 86400) + ' d ' + Math.round((s % 86400) / 3600) + ' h';
}

function when(ts) {
  if (!ts) return '—';
  return h('time', { datetime: ts, title: ts }, new Date(ts).toLocaleString());
}

function status(s) {
  return h('span', { class: 'status ' + s }, s);
}

function json(v) {
  return h('pre', { class: 'json' }, v === undefined ? 'null' : JSON.stringify(v, null, 2));
}

function table(headers, rows, empty) {
  if (!rows.length) return h('p', { class: 'empty' }, empty);
  return h('table', {}, h('thead', {}, h('tr', {}, headers.map((t) => h('th', { scope: 'col' }, t)))), h('tbody', {}, rows));
}

function button(label, onclick, attrs = {}) {
  return h('button', { type: 'button', onclick, ...attrs }, label);
}

function pager(page, arg, params, nextCursor) {
  const first = { ...params };
  delete first.cursor;
  return h('nav', { class: 'pager', 'aria-label': 'Pages' },
    params.cursor ? h('a', { href: link(page, arg, first) }, '« First page') : null,
    nextCursor ? h('a', { href: link(page, arg, { ...params, cursor: nextCursor }), rel: 'next' }, 'Next page »') : null);
}

// Pages.

async function overview() {
  const ns = currentNS();
  const [queues, stats] = await Promise.all([
    api('GET', nsPath(ns) + '/task-queues'),
    api('GET', nsPath(ns) + '/stats', { query: { window_ms: 3600000, bucket_ms: 60000 } }),
  ]);
  const totals = stats.buckets.reduce((t, b) => ({
    started: t.started + b.started, completed: t.completed + b.completed, failed: t.failed + b.failed,
  }), { started: 0, completed: 0, failed: 0 });
  const rows = queues.task_queues.map((q) => h('tr', {},
    h('th', { scope: 'row' }, h('a', { href: link('runs', '', { task_queue: q.name }) }, q.name)),
    h('td', { class: 'num' }, q.available), h('td', { class: 'num' }, q.running), h('td', { class: 'num' }, q.sleeping),
    h('td', {}, q.oldest_available_at ? duration(Math.max(0, Date.now() - new Date(q.oldest_available_at))) : '—'),
    h('td', { class: 'num' }, q.workers_online), h('td', {}, q.paused ? status('paused') : 'no')));
  return [
    h('h1', {}, 'Overview'),
    h('section', { class: 'cards', 'aria-label': 'Live runs' },
      card('Pending', stats.now.pending), card('Running', stats.now.running), card('Sleeping', stats.now.sleeping),
      card('Started in the last hour', totals.started), card('Completed', totals.completed), card('Failed', totals.failed)),
    h('section', {}, h('h2', {}, 'The last hour'),
      h('div', { class: 'legend' }, h('span', { class: 'key started' }, 'started'), h('span', { class: 'key completed' }, 'completed'), h('span', { class: 'key failed' }, 'failed')),
      lineChart(stats.buckets, [
        { key: 'started', label: 'Started', cls: 'started' },
        { key: 'completed', label: 'Completed', cls: 'completed' },
        { key: 'failed', label: 'Failed', cls: 'failed' },
      ])),
    h('section', {}, h('h2', {}, 'Task queues'),
      table(['Queue', 'Available', 'Running', 'Sleeping', 'Oldest waiting', 'Workers online', 'Paused'], rows, 'No task queue is in use in this namespace yet.')),
    h('p', { class: 'muted' }, 'Refreshes every 5 seconds.'),
  ];
}

function card(label, value) {
  return h('div', { class: 'card' }, h('span', { class: 'value' }, value), h('span', { class: 'label' }, label));
}

const statuses = ['pending', 'sleeping', 'running', 'completed', 'failed', 'cancelled'];

async function runs(params) {
  const ns = currentNS();
  const filters = {};
  for (const k of ['status', 'task_queue', 'workflow_type', 'external_id', 'schedule_id', 'cursor']) {
    if (params.get(k)) filters[k] = params.get(k);
  }
  const page = await api('GET', nsPath(ns) + '/workflows', { query: { ...filters, limit: 50 } });
  const form = h('form', {
    class: 'filters', role: 'search',
    onsubmit: (ev) => {
      ev.preventDefault();
      const data = new FormData(ev.target);
      const p = {};
      for (const [k, v] of data) if (String(v).trim()) p[k] = String(v).trim();
      location.hash = link('runs', '', p);
    },
  },
  h('label', {}, 'Status ', h('select', { name: 'status' }, h('option', { value: '' }, 'any'),
    statuses.map((s) => h('option', { value: s, selected: filters.status === s }, s)))),
  h('label', {}, 'Task queue ', h('input', { name: 'task_queue', value: filters.task_queue || '', size: 12 })),
  h('label', {}, 'Workflow type ', h('input', { name: 'workflow_type', value: filters.workflow_type || '', size: 14 })),
  h('label', {}, 'External ID ', h('input', { name: 'external_id', value: filters.external_id || '', size: 14 })),
  h('label', {}, 'Schedule ', h('input', { name: 'schedule_id', value: filters.schedule_id || '', size: 14 })),
  h('button', { type: 'submit' }, 'Filter'),
  h('a', { href: link('runs') }, 'Clear'));
  const rows = page.workflows.map((r) => h('tr', {},
    h('td', {}, h('a', { href: link('run', r.run_id), class: 'mono' }, r.run_id)),
    h('td', {}, r.workflow_type), h('td', {}, r.task_queue), h('td', {}, status(r.status)),
    h('td', { class: 'num' }, r.attempt), h('td', {}, when(r.created_at)),
    h('td', {}, r.finished_at && r.started_at ? duration(new Date(r.finished_at) - new Date(r.started_at)) : '—')));
  return [
    h('h1', {}, 'Runs'), form,
    table(['Run', 'Workflow type', 'Queue', 'Status', 'Attempt', 'Created', 'Took'], rows, 'No run matches these filters.'),
    pager('runs', '', filters, page.next_cursor),
  ];
}

async function run(params, runID) {
  const ns = currentNS();
  const path = nsPath(ns) + '/workflows/' + encodeURIComponent(runID);
  const [r, steps, inbox, kids] = await Promise.all([api('GET', path), api('GET', path + '/steps'),
    api('GET', path + '/signals', { query: { limit: 100 } }), api('GET', path + '/children', { query: { limit: 100 } })]);
  const live = ['pending', 'sleeping', 'running'].includes(r.status);
  const actions = h('div', { class: 'actions' },
    live ? button('Cancel run', () => confirm('Cancel this run?') && act('Cancel the run', () => api('POST', path + '/cancel'))) : null,
    live ? button('Send signal', () => sendSignal(path)) : null,
    ['failed', 'cancelled'].includes(r.status) ? button('Retry run', () => act('Retry the run', () => api('POST', path + '/retry'))) : null);
  const facts = [
    ['Status', status(r.status)], ['Workflow type', r.workflow_type], ['Task queue', r.task_queue],
    ['Attempt', `${r.attempt} (at most ${r.retry_policy.max_attempts} per start or retry)`],
    ['External ID', r.external_id || '—'], ['Version', r.version || '—'],
    ['Schedule', r.schedule_id ? h('a', { href: link('runs', '', { schedule_id: r.schedule_id }) }, r.schedule_id) : '—'],
    ['Created', when(r.created_at)], ['Started', when(r.started_at)], ['Finished', when(r.finished_at)],
    ['Available', r.available_at ? when(r.available_at) : (r.waiting_for ? 'when a signal comes' : '—')], ['Worker', r.worker_id || '—'],
    ['Waiting for', r.waiting_for ? r.waiting_for.join(', ') : '—'],
    ['Parent', r.parent_run_id ? h('a', { href: link('run', r.parent_run_id), class: 'mono' }, r.parent_run_id) : '—'],
  ];
  const signalRows = inbox.signals.map((sg) => h('tr', {},
    h('td', { class: 'num' }, sg.seq), h('th', { scope: 'row' }, sg.name), h('td', {}, status(sg.status)),
    h('td', {}, sg.step || '—'), h('td', {}, h('code', {}, truncate(JSON.stringify(sg.input), 80))), h('td', {}, when(sg.created_at))));
  const childRows = kids.children.map((c) => h('tr', {},
    h('td', {}, h('a', { href: link('run', c.run_id), class: 'mono' }, c.run_id)), h('td', {}, c.workflow_type),
    h('td', {}, status(c.status)), h('td', {}, when(c.created_at))));
  const start = steps.steps.length ? Math.min(...steps.steps.map((s) => new Date(s.created_at).getTime())) : 0;
  const end = Math.max(start + 1, ...steps.steps.map((s) => new Date(s.finished_at || Date.now()).getTime()));
  const stepRows = steps.steps.map((s) => {
    const t0 = new Date(s.created_at).getTime();
    const t1 = s.finished_at ? new Date(s.finished_at).getTime() : Date.now();
    const bar = h('span', { class: 'bar ' + s.status });
    bar.style.marginLeft = ((100 * (t0 - start)) / (end - start)).toFixed(2) + '%';
    bar.style.width = Math.max(0.5, (100 * (t1 - t0)) / (end - start)).toFixed(2) + '%';
    return h('tr', {},
      h('th', { scope: 'row' }, s.name), h('td', {}, s.kind), h('td', { class: 'num' }, s.attempt), h('td', {}, status(s.status)),
      h('td', { class: 'num' }, s.finished_at ? duration(t1 - t0) : 'running'),
      h('td', { class: 'timeline' }, bar),
      h('td', {}, s.error ? h('span', { class: 'err' }, s.error.message) : s.output !== null && s.output !== undefined ? h('code', {}, truncate(JSON.stringify(s.output), 80)) : '—'));
  });
  return [
    h('h1', {}, 'Run ', h('span', { class: 'mono' }, r.run_id)), actions,
    h('dl', { class: 'facts' }, facts.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])),
    r.error ? h('section', {}, h('h2', {}, 'Error'), h('p', { class: 'err' }, r.error.message + (r.error.type ? ` (${r.error.type})` : '')),
      r.error.details !== null && r.error.details !== undefined ? json(r.error.details) : null) : null,
    h('div', { class: 'payloads' },
      h('section', {}, h('h2', {}, 'Input'), json(r.input)),
      h('section', {}, h('h2', {}, 'Output'), json(r.output))),
    h('section', {}, h('h2', {}, 'Steps'),
      table(['Step', 'Kind', 'Attempt', 'Status', 'Took', 'Timeline', 'Output or error'], stepRows, 'This run has recorded no step yet.'),
      steps.next_cursor ? h('p', { class: 'muted' }, `Only the first ${steps.steps.length} step attempts are shown.`) : null),
    h('section', {}, h('h2', {}, 'Inbox'),
      table(['Seq', 'Signal', 'Status', 'Taken by step', 'Input', 'Sent'], signalRows, 'No signal has been sent to this run.'),
      inbox.next_cursor ? h('p', { class: 'muted' }, `Only the first ${inbox.signals.length} signals are shown.`) : null),
    h('section', {}, h('h2', {}, 'Children'),
      table(['Run', 'Type', 'Status', 'Created'], childRows, 'This run has started no child.'),
      kids.next_cursor ? h('p', { class: 'muted' }, `Only the first ${kids.children.length} children are shown.`) : null),
  ];
}

// sendSignal asks for a signal's name and input, and sends it to the run.
function sendSignal(path) {
  const name = prompt('Signal name');
  if (!name) return null;
  const text = prompt('Input (JSON)', 'null');
  if (text === null) return null;
  let input;
  try {
    input = JSON.parse(text);
  } catch (err) {
    say('Could not send the signal: the input is not JSON (' + err.message + ').');
    return null;
  }
  return act('Send the signal', () => api('POST', path + '/signals/' + encodeURIComponent(name), { body: { input } }));
}

function truncate(s, n) {
  return s.length > n ? s.slice(0, n - 1) + '…' : s;
}

async function workers(params) {
  const ns = currentNS();
  const filters = {};
  for (const k of ['status', 'task_queue', 'cursor']) if (params.get(k)) filters[k] = params.get(k);
  const page = await api('GET', nsPath(ns) + '/workers', { query: { ...filters, limit: 100 } });
  const rows = page.workers.map((w) => {
    const path = nsPath(ns) + '/workers/' + encodeURIComponent(w.worker_id);
    return h('tr', {},
      h('td', { class: 'mono' }, w.worker_id), h('td', {}, w.task_queue), h('td', {}, w.hostname || '—'),
      h('td', {}, status(w.status)), h('td', { class: 'num' }, `${w.active_count} / ${w.max_concurrent}`),
      h('td', { class: 'num' }, w.total_completed), h('td', { class: 'num' }, w.total_failed), h('td', {}, ago(w.last_heartbeat_at)),
      h('td', { class: 'actions' },
        w.status === 'online' ? button('Drain', () => act('Drain the worker', () => api('POST', path + '/drain')), { 'aria-label': 'Drain worker ' + w.worker_id }) : null,
        button('Remove', () => confirm('Remove this worker? Its runs are released.') && act('Remove the worker', () => api('DELETE', path)), { 'aria-label': 'Remove worker ' + w.worker_id })));
  });
  const form = h('form', {
    class: 'filters', role: 'search',
    onsubmit: (ev) => {
      ev.preventDefault();
      const v = new FormData(ev.target).get('status');
      location.hash = link('workers', '', v ? { status: v } : {});
    },
  }, h('label', {}, 'Status ', h('select', { name: 'status' }, h('option', { value: '' }, 'any'),
    ['online', 'draining', 'offline'].map((s) => h('option', { value: s, selected: filters.status === s }, s)))),
  h('button', { type: 'submit' }, 'Filter'));
  return [h('h1', {}, 'Workers'), form,
    table(['Worker', 'Queue', 'Host', 'Status', 'Active', 'Completed', 'Failed', 'Last heartbeat', ''], rows, 'No worker is registered in this namespace.'),
    pager('workers', '', filters, page.next_cursor)];
}

async function queues() {
  const ns = currentNS();
  const list = await api('GET', nsPath(ns) + '/task-queues');
  const rows = list.task_queues.map((q) => {
    const path = nsPath(ns) + '/task-queues/' + encodeURIComponent(q.name);
    const limit = h('input', { type: 'number', min: 0, value: q.max_concurrent ?? '', size: 6, 'aria-label': 'Most running runs of ' + q.name, placeholder: 'none' });
    return h('tr', {},
      h('th', { scope: 'row' }, q.name), h('td', {}, q.paused ? status('paused') : status('active')),
      h('td', { class: 'num' }, q.available), h('td', { class: 'num' }, q.running), h('td', { class: 'num' }, q.sleeping),
      h('td', { class: 'num' }, q.workers_online),
      h('td', {}, Object.entries(q.workflow_type_limits || {}).map(([t, n]) => `${t}: ${n}`).join(', ') || '—'),
      h('td', { class: 'actions' },
        q.paused
          ? button('Resume', () => act('Resume the queue', () => api('PATCH', path, { body: { paused: false } })), { 'aria-label': 'Resume ' + q.name })
          : button('Pause', () => act('Pause the queue', () => api('PATCH', path, { body: { paused: true } })), { 'aria-label': 'Pause ' + q.name })),
      h('td', { class: 'actions' }, limit,
        button('Set limit', () => act('Set the limit', () => api('PATCH', path, {
          body: { max_concurrent: limit.value === '' ? null : Number(limit.value) },
        })), { 'aria-label': 'Set the limit of ' + q.name })));
  });
  return [h('h1', {}, 'Task queues'),
    table(['Queue', 'State', 'Available', 'Running', 'Sleeping', 'Workers online', 'Type limits', '', 'Most running'], rows, 'No task queue is in use in this namespace yet.')];
}

async function schedules(params) {
  const ns = currentNS();
  const filters = params.get('cursor') ? { cursor: params.get('cursor') } : {};
  const page = await api('GET', nsPath(ns) + '/schedules', { query: { ...filters, limit: 100 } });
  const rows = page.schedules.map((s) => {
    const path = nsPath(ns) + '/schedules/' + encodeURIComponent(s.schedule_id);
    const next = s.next_fire_times && s.next_fire_times.length ? s.next_fire_times.slice(0, 3) : s.next_fire_at ? [s.next_fire_at] : [];
    return h('tr', {},
      h('td', {}, h('a', { href: link('runs', '', { schedule_id: s.schedule_id }), class: 'mono', title: 'Runs of this schedule' }, s.schedule_id.slice(0, 8) + '…')),
      h('td', {}, s.workflow_type), h('td', {}, s.task_queue), h('td', {}, h('code', {}, s.cron), ' ', s.timezone),
      h('td', {}, s.enabled ? status('enabled') : status('disabled')),
      h('td', {}, next.length ? h('ul', { class: 'times' }, next.map((t) => h('li', {}, when(t)))) : '—'),
      h('td', {}, when(s.last_fired_at)),
      h('td', { class: 'actions' },
        s.enabled
          ? button('Disable', () => act('Disable the schedule', () => api('PATCH', path, { body: { enabled: false } })), { 'aria-label': 'Disable schedule ' + s.schedule_id })
          : button('Enable', () => act('Enable the schedule', () => api('PATCH', path, { body: { enabled: true } })), { 'aria-label': 'Enable schedule ' + s.schedule_id }),
        button('Trigger now', async () => {
          const r = await act('Trigger the schedule', () => api('POST', path + '/trigger'));
          if (r) {
            flash.append(h('p', {}, 'Started run ', h('a', { href: link('run', r.run_id), class: 'mono' }, r.run_id), '.'));
          }
        }, { 'aria-label': 'Trigger schedule ' + s.schedule_id })));
  });
  return [h('h1', {}, 'Schedules'),
    table(['Schedule', 'Workflow type', 'Queue', 'Cron', 'State', 'Next fire times', 'Last fired', ''], rows, 'No schedule in this namespace.'),
    pager('schedules', '', filters, page.next_cursor)];
}

async function keyPage() {
  let mode = '';
  try {
    const info = await api('GET', '/v1/info');
    mode = info.auth === 'off'
      ? 'Authentication is off on this server: no key is needed.'
      : 'Authentication is on: every request needs a key (a reader key is enough to look; acting needs a client or admin key).';
  } catch (err) {
    mode = errorText(err);
  }
  const input = h('input', { type: 'password', id: 'key', name: 'key', autocomplete: 'off', size: 48, value: getKey() });
  return [h('h1', {}, 'API key'), h('p', {}, mode),
    h('form', {
      class: 'filters',
      onsubmit: (ev) => {
        ev.preventDefault();
        setKey(input.value.trim());
        say(input.value.trim() ? 'The key is kept for this browser session only.' : 'The key is forgotten.', 'ok');
        loadNamespaces();
      },
    }, h('label', { for: 'key' }, 'Key '), input, h('button', { type: 'submit' }, 'Use this key'),
    button('Forget the key', () => {
      setKey('');
      input.value = '';
      say('The key is forgotten.', 'ok');
    })),
    h('p', { class: 'muted' }, 'The key is sent as “Authorization: Bearer …” to this server only, and kept in this tab’s session storage.')];
}

const pages = { overview, runs, run, workers, queues, schedules, key: keyPage };

// render draws the page the URL names; clearFlash is false after an
// action, so that its message stays.
async function render(clearFlash = true) {
  const seq = ++renderSeq;
  const { page, arg, params } = route();
  clearInterval(refreshTimer);
  refreshTimer = null;
  if (clearFlash) say('');
  for (const a of document.querySelectorAll('nav a[data-page]')) {
    const current = a.dataset.page === page || (page === 'run' && a.dataset.page === 'runs');
    a.setAttribute('href', link(a.dataset.page));
    if (current) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (nsSelect.value !== currentNS()) syncNamespace();
  const fn = pages[page];
  if (!fn) {
    main.replaceChildren(h('h1', {}, 'Not found'), h('p', {}, 'There is no such page. ', h('a', { href: link('overview') }, 'Go to the overview.')));
    return;
  }
  document.title = 'Kagzi — ' + (page === 'run' ? 'run ' + arg : page);
  try {
    const content = await fn(params, arg);
    if (seq !== renderSeq) return; // a newer render has begun
    main.replaceChildren(...content.flat().filter(Boolean));
    main.dataset.page = page;
    main.dataset.hash = location.hash;
  } catch (err) {
    if (seq !== renderSeq) return;
    main.replaceChildren(h('h1', {}, 'Could not load this page'), h('p', { class: 'err', role: 'alert' }, errorText(err)),
      err instanceof ApiError && err.status === 401 ? h('p', {}, h('a', { href: link('key') }, 'Enter a key.')) : null);
    main.dataset.page = page;
    main.dataset.hash = location.hash;
  }
  if (page === 'overview') {
    refreshTimer = setInterval(() => {
      if (document.visibilityState === 'visible' && !document.activeElement?.closest('main form')) render(false);
    }, 5000);
  }
}

function syncNamespace() {
  const ns = currentNS();
  if (![...nsSelect.options].some((o) => o.value === ns)) nsSelect.append(h('option', { value: ns }, ns));
  nsSelect.value = ns;
}

async function loadNamespaces() {
  try {
    const list = await api('GET', '/v1/namespaces', { query: { limit: 500 } });
    const names = new Set(list.namespaces.map((n) => n.name));
    names.add(currentNS());
    nsSelect.replaceChildren(...[...names].sort().map((n) => h('option', { value: n }, n)));
  } catch {
    // The page itself says why the API refused.
  }
  syncNamespace();
}

nsSelect.addEventListener('change', () => {
  const { page, params } = route();
  const p = new URLSearchParams();
  p.set('ns', nsSelect.value);
  location.hash = '#/' + (page === 'run' ? 'runs' : page) + '?' + p.toString();
  void params;
});

window.addEventListener('hashchange', () => {
  render();
  main.focus({ preventScroll: true });
});
loadNamespaces();
render();
