// On-call: firing alerts, open incidents with their timelines, replicas not ready or
// crash-looping with their last exit and stderr tail, every replica (keyed rows updated in
// place), recent actions from the event stream, silences; restart, silence and faults off,
// each behind a confirmation.

import { post, del } from './api.js';
import { h, text, cls, keyed, clock, confirmAction } from './dom.js';

// Every change of a replica row's readiness, with the wall time it reached the DOM.
const transitions = (window.bulwarkTransitions = []);

const ACTIONS = new Set(['replica_exited', 'restart_scheduled', 'crash_looping', 'replica_killed',
  'replica_ejected', 'replica_readmitted', 'replica_ready', 'replica_unready', 'scaled',
  'rollout_started', 'rollout_verdict', 'rollout_aborted', 'rollout_ended', 'remediation',
  'autoscaled', 'faults_toggled', 'reloaded', 'alert_firing', 'alert_resolved',
  'incident_opened', 'incident_resolved', 'spawn_failed', 'gap']);

let el = {};

const refresh = (what) => window.dispatchEvent(new CustomEvent('bulwark:refresh', { detail: what }));

function table(id, heads, empty) {
  const body = h('tbody');
  // The footer shows only while the body is empty (style.css).
  const foot = h('tfoot', {}, h('tr', {}, h('td', { class: 'muted', colspan: String(heads.length) }, empty)));
  return [h('table', { id }, h('thead', {}, h('tr', {}, heads.map((x) => h('th', {}, x)))), body, foot), body];
}

export function mount(root, store) {
  const [alerts, alertsBody] = table('alerts', ['severity', 'service', 'alert', 'since', 'summary'], 'No alert firing.');
  const [sick, sickBody] = table('attention', ['replica', 'state', 'restarts', 'last exit', 'stderr tail'], 'Every replica is ready.');
  const [reps, repsBody] = table('replicas', ['replica', 'state', 'ready', 'pid', 'restarts', ''], 'No replica.');
  const [sil, silBody] = table('silences', ['service', 'SLO', 'until', 'comment', ''], 'No silence.');
  const service = h('select', { id: 'silence-service' });
  const minutes = h('input', { id: 'silence-minutes', type: 'number', value: '60', min: '1', class: 'short' });
  const comment = h('input', { id: 'silence-comment', placeholder: 'comment' });
  const note = h('span', { class: 'error', id: 'action-error' });
  const form = h('form', { class: 'inline action', id: 'silence-form' }, 'Silence', service, 'for', minutes,
    'minutes', comment, h('button', { type: 'submit', id: 'silence-add' }, 'Add silence'));
  form.addEventListener('submit', (e) => { e.preventDefault(); addSilence(service.value, Number(minutes.value), comment.value); });
  const faultsOff = h('button', { class: 'danger action', id: 'faults-off', onclick: faultsOffClick }, 'Faults off');
  const events = h('ul', { class: 'events', id: 'actions' });
  const incidents = h('div', { id: 'incidents' });
  root.append(
    h('div', { class: 'cols' },
      h('div', {}, h('h2', {}, 'Firing alerts'), alerts, h('h2', {}, 'Open incidents'), incidents,
        h('h2', {}, 'Needs attention'), sick),
      h('div', {}, h('h2', {}, 'Recent actions'), events, h('h2', {}, 'Silences'), sil, form,
        h('p', {}, faultsOff, ' ', note))),
    h('h2', {}, 'Replicas'), reps);
  el = { alertsBody, sickBody, repsBody, silBody, service, events, incidents, note, shownEvents: new Set() };
  for (const svc of store.status.services) service.append(h('option', { value: svc.name }, svc.name));
}

export function unmount() { el = {}; }

async function act(message, fn, then) {
  if (!(await confirmAction(message))) return;
  try {
    await fn();
    text(el.note, '');
    refresh(then);
  } catch (e) {
    text(el.note, e.message);
  }
}

function addSilence(service, minutes, comment) {
  const ends = Date.now() + Math.max(1, minutes) * 60000;
  act(`Silence every alert of ${service} for ${minutes} minutes?`,
    () => post('/v1/silences', { service, ends_at_ms: ends, comment }), 'silences');
}

function faultsOffClick() {
  act('Remove every injected fault (HTTP faults and TCP toxics) now?', () => post('/v1/faults/off'), 'status');
}

function replicaRow(item) {
  const restart = h('button', { class: 'restart action' }, 'Restart');
  restart.addEventListener('click', () => act(`Restart ${item.key}?`,
    () => post(`/v1/services/${encodeURIComponent(item.svc)}/restart?replica=${item.r.index}`), 'status'));
  return h('tr', {}, h('td', {}, item.key), h('td'), h('td'), h('td'), h('td'), h('td', {}, restart));
}

function updateReplica(row, { key, r }) {
  const c = row.children;
  text(c[1], r.crash_looping ? 'crash-looping' : r.state);
  cls(c[1], r.state === 'running' ? 'ok' : 'bad');
  text(c[2], r.ready ? 'ready' : 'down');
  cls(c[2], r.ready ? 'ok' : 'bad');
  text(c[3], r.pid);
  text(c[4], r.restarts);
  const ready = String(r.ready);
  if (row.dataset.ready !== ready) {
    row.dataset.ready = ready;
    transitions.push({ key, ready: r.ready, at: Date.now() });
    if (transitions.length > 1000) transitions.shift();
  }
}

function exitText(e) {
  if (!e) return null;
  return e.code !== null && e.code !== undefined ? `exit ${e.code}` : `signal ${e.signal}`;
}

function updateSick(row, { key, r }) {
  const c = row.children;
  text(c[0], key);
  text(c[1], r.crash_looping ? 'crash-looping' : `${r.state}${r.ready ? '' : ', not ready'}`);
  text(c[2], r.restarts);
  text(c[3], exitText(r.last_exit));
  text(c[4].firstChild, (r.stderr_tail || []).slice(-5).join('\n') || '–');
}

function alertRow() { return h('tr', {}, h('td'), h('td'), h('td'), h('td'), h('td')); }
function updateAlert(row, a) {
  const c = row.children;
  text(c[0], a.severity); cls(c[0], a.severity === 'page' ? 'bad' : 'warn');
  text(c[1], a.service); text(c[2], a.name); text(c[3], clock(a.started_at_ms)); text(c[4], a.summary);
}

function silenceRow(s) {
  const rm = h('button', { class: 'action' }, 'Remove');
  rm.addEventListener('click', () => act(`Remove the silence of ${s.service}?`,
    () => del(`/v1/silences/${encodeURIComponent(s.id)}`), 'silences'));
  return h('tr', {}, h('td'), h('td'), h('td'), h('td'), h('td', {}, rm));
}
function updateSilence(row, s) {
  const c = row.children;
  text(c[0], s.service); text(c[1], s.name || 'all'); text(c[2], clock(s.ends_at_ms)); text(c[3], s.comment);
}

function incidentsView(store) {
  const open = store.incidents.incidents.filter((i) => i.state !== 'resolved');
  const sig = open.map((i) => `${i.id}:${i.timeline.length}`).join(',');
  if (el.incidents.dataset.sig === sig) return;
  el.incidents.dataset.sig = sig;
  el.incidents.replaceChildren(...(open.length ? open.map((i) => h('div', { class: 'incident' },
    h('b', {}, `#${i.id} ${i.service}: ${i.title}`), ' ', h('span', { class: 'muted' }, `since ${clock(i.detected_at_ms)}`),
    h('ul', { class: 'timeline' }, i.timeline.map((t) => h('li', {}, `${clock(t.at_ms)} ${t.kind}: ${t.text}`)))))
    : [h('p', { class: 'muted' }, 'No open incident.')]));
}

function describe(ev) {
  const who = ev.service !== undefined ? `${ev.service}${ev.index !== undefined ? `/${ev.index}` : ''} ` : '';
  const extra = ev.reason || ev.summary || (ev.exit && exitText(ev.exit)) || '';
  return `${clock(ev.at_ms)} ${who}${ev.type.replace(/_/g, ' ')} ${extra}`;
}

export function update(store, batch) {
  if (!el.repsBody) return;
  const all = [];
  for (const svc of store.status.services) {
    for (const r of svc.replicas) all.push({ key: `${svc.name}/${r.index}`, svc: svc.name, r });
  }
  keyed(el.repsBody, all, (x) => x.key, replicaRow, updateReplica);
  const sick = all.filter((x) => !x.r.ready || x.r.crash_looping);
  keyed(el.sickBody, sick, (x) => x.key,
    () => h('tr', {}, h('td'), h('td', { class: 'bad' }), h('td'), h('td'), h('td', {}, h('pre', { class: 'tail' }))),
    updateSick);
  keyed(el.alertsBody, store.alerts.filter((a) => a.state === 'firing'), (a) => a.id, alertRow, updateAlert);
  keyed(el.silBody, store.silences, (s) => s.id, silenceRow, updateSilence);
  incidentsView(store);
  // Recent actions: newest first, each event added once.
  const fresh = (batch.length ? batch : store.events).filter((e) => ACTIONS.has(e.type) && !el.shownEvents.has(e.seq));
  for (const ev of fresh.sort((a, b) => a.seq - b.seq)) {
    el.shownEvents.add(ev.seq);
    el.events.prepend(h('li', { class: ev.type.includes('exit') || ev.type.includes('crash') ? 'bad' : '' }, describe(ev)));
  }
  while (el.events.childElementCount > 100) el.events.lastElementChild.remove();
  // Remember only the newest events shown (a Set keeps insertion order).
  if (el.shownEvents.size > 2000) el.shownEvents = new Set([...el.shownEvents].slice(-1000));
}
