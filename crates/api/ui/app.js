// The dashboard's shell: hash routes, the login gate, one EventSource for live events,
// throttled refreshes (nothing faster than once a second) and one batched render per
// animation frame. Timings go to `window.bulwarkPerf` (the browser tests read them).

import { get, del, Unauthorized } from './api.js';
import * as login from './login.js';
import * as overview from './overview.js';
import * as oncall from './oncall.js';
import * as service from './service.js';

const VIEWS = { overview, oncall, service };
const perf = (window.bulwarkPerf = { firstRender: null, updates: [], ages: [], csp: [] });
// Anything the Content-Security-Policy blocked (the tests require none).
document.addEventListener('securitypolicyviolation', (e) => perf.csp.push(`${e.violatedDirective} ${e.blockedURI}`));

// What the views read. `status` is patched by events at once and replaced by a refresh.
const store = {
  status: null, slo: [], alerts: [], incidents: { incidents: [], reliability: [] },
  silences: [], events: [], series: null, route: [], pageStart: Date.now(),
};
const RESOURCES = {
  status: '/v1/status', slo: '/v1/slo', alerts: '/v1/alerts',
  incidents: '/v1/incidents', silences: '/v1/silences',
};
const MAX_EVENTS = 200;

let view = null;
let frame = 0;
let pending = [];
let lastSeq = 0;
let source = null;
let poller = null;
const lastFetch = {};
const timers = {};

function route() {
  const parts = (location.hash.replace(/^#\/?/, '') || 'overview').split('/');
  return VIEWS[parts[0]] ? parts : ['overview'];
}

// Fetches a resource now, or once its second since the last fetch is over.
function refresh(name) {
  if (timers[name]) return;
  const wait = Math.max(0, (lastFetch[name] || 0) + 1000 - Date.now());
  timers[name] = setTimeout(async () => {
    lastFetch[name] = Date.now();
    try {
      store[name] = await get(RESOURCES[name]);
      schedule();
    } catch (e) {
      if (e instanceof Unauthorized) showLogin();
    } finally {
      timers[name] = null;
    }
  }, wait);
}

// What an event changes, applied to the status at once so the page shows it in the next
// frame, before the (throttled) refresh brings the full picture.
function patch(ev) {
  const svc = store.status && store.status.services.find((s) => s.name === ev.service);
  const r = svc && svc.replicas.find((x) => x.index === ev.index);
  if (r) {
    switch (ev.type) {
      case 'replica_started': Object.assign(r, { state: 'starting', pid: ev.pid, ready: false }); break;
      case 'replica_running': r.state = 'running'; break;
      case 'replica_ready': r.ready = true; break;
      case 'replica_unready': r.ready = false; break;
      case 'replica_exited':
        Object.assign(r, { state: 'exited', ready: false, pid: null, last_exit: ev.exit }); break;
      case 'replica_killed': Object.assign(r, { ready: false }); break;
      case 'crash_looping':
        Object.assign(r, { crash_looping: true, stderr_tail: ev.stderr_tail, last_exit: ev.last_exit }); break;
      case 'restart_scheduled': r.restarts = ev.restarts; break;
      default: break;
    }
    if (svc) svc.ready = svc.replicas.filter((x) => x.ready).length;
  }
  if (ev.type.startsWith('alert_')) refresh('alerts');
  if (ev.type.startsWith('incident_') || ev.type.startsWith('alert_')) refresh('incidents');
  if (ev.type === 'gap' || ev.type === 'reloaded' || ev.type === 'scaled') refresh('slo');
  refresh('status');
}

function onEvent(msg) {
  const ev = JSON.parse(msg.data);
  if (ev.seq && ev.seq <= lastSeq) return; // a reconnect replays the history
  if (ev.seq) lastSeq = ev.seq;
  ev.received = performance.now();
  pending.push(ev);
  schedule();
}

function schedule() {
  if (!frame) frame = requestAnimationFrame(flush);
}

// One render per frame: every event that arrived since, then the view's update.
function flush() {
  frame = 0;
  const batch = pending;
  pending = [];
  for (const ev of batch) {
    const live = ev.at_ms >= store.pageStart;
    if (live) patch(ev);
    store.events.unshift(ev);
  }
  if (store.events.length > MAX_EVENTS) store.events.length = MAX_EVENTS;
  if (!view || !store.status) return;
  view.update(store, batch);
  const now = performance.now();
  const wall = Date.now();
  for (const ev of batch) {
    if (ev.at_ms < store.pageStart) continue;
    perf.updates.push(now - ev.received);
    perf.ages.push(wall - ev.at_ms);
  }
  if (perf.updates.length > 1000) perf.updates.splice(0, perf.updates.length - 1000);
  if (perf.ages.length > 1000) perf.ages.splice(0, perf.ages.length - 1000);
}

function connect() {
  if (source) return;
  source = new EventSource(`/v1/events?follow=true&tail=${MAX_EVENTS}`);
  source.onmessage = onEvent;
  source.onopen = () => { document.getElementById('live').textContent = '● live'; };
  source.onerror = () => {
    document.getElementById('live').textContent = '○ reconnecting';
    // A refused stream (logged out) does not retry by itself: ask whether we are.
    if (source.readyState === EventSource.CLOSED) { source = null; start(); }
  };
}

function mount() {
  const main = document.getElementById('main');
  store.route = route();
  for (const a of document.querySelectorAll('nav a')) {
    a.classList.toggle('active', a.dataset.view === store.route[0]);
  }
  if (view && view.unmount) view.unmount();
  view = VIEWS[store.route[0]];
  main.replaceChildren();
  view.mount(main, store);
  view.update(store, []);
  if (perf.firstRender === null) {
    perf.firstRender = performance.now();
    document.body.dataset.rendered = 'true';
  }
}

function showLogin(message) {
  if (source) { source.close(); source = null; }
  view = null;
  document.getElementById('logout').hidden = true;
  document.body.dataset.view = 'login';
  login.show(document.getElementById('main'), message, start);
}

// Loads what every view needs, then shows the routed view and goes live.
async function start() {
  try {
    const [status, slo, alerts, incidents, silences] = await Promise.all(
      Object.values(RESOURCES).map((p) => get(p)),
    );
    Object.assign(store, { status, slo, alerts, incidents, silences });
  } catch (e) {
    if (e instanceof Unauthorized) return showLogin();
    document.getElementById('main').textContent = `Cannot reach bulwark: ${e.message}`;
    return;
  }
  document.getElementById('who').textContent = sessionStorage.getItem('bulwark-who') || '';
  // A viewer's session reads only: the action controls are not shown (the API refuses them
  // anyway).
  document.body.dataset.role = sessionStorage.getItem('bulwark-role') || '';
  document.getElementById('logout').hidden = false;
  document.body.dataset.view = route()[0];
  mount();
  connect();
  // SLOs, incidents and the rest change with time, not only with events.
  if (!poller) poller = setInterval(() => Object.keys(RESOURCES).forEach(refresh), 5000);
}

document.getElementById('logout').addEventListener('click', async () => {
  await del('/ui/session').catch(() => {});
  sessionStorage.removeItem('bulwark-who');
  sessionStorage.removeItem('bulwark-role');
  showLogin('Logged out.');
});
window.addEventListener('hashchange', () => {
  if (!view) return;
  document.body.dataset.view = route()[0];
  mount();
});
// Any view may ask for a refresh (after an action).
window.addEventListener('bulwark:refresh', (e) => refresh(e.detail));

login.fromLink(start).then((handled) => { if (!handled) start(); });
