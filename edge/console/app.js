// The alarm console page: plain JavaScript, no framework, nothing external.
//
// Data flow: after login the page opens an EventSource on /api/events. The
// server first sends "snapshot" (every active alarm) and then one "alert"
// per transition; each alert carries the alarm's whole current view, so the
// page keeps a map alarm_id -> latest alert and redraws from it. A
// reconnect starts with a fresh snapshot, so nothing is missed while the
// phone was away. Commands are POSTs with a JSON body (the server refuses
// anything else, which is its CSRF defence).
//
// The gateway's own health comes from /api/status, polled every 10 s (and
// when a spool-failed transition arrives): while its storage fails the page
// shows a banner above the alarms (status.spool.degraded: data kept in
// memory only; disk_full: the oldest readings are dropped).
//
// Hooks for tests (keep them stable): #active holds one [data-alarm-id]
// element per alarm with data-state and data-priority, its buttons .ack,
// .shelve[data-minutes], .unshelve, .oos, .ins; #live has data-state
// "live" while the stream is connected, "reconnecting" otherwise;
// #storage-banner is shown with data-kind "memory" or "full".
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);

  const PRIO_RANK = { high: 2, medium: 1, low: 0 };
  const STATE_TEXT = {
    unack: 'Not acknowledged',
    acked: 'Acknowledged',
    rtn_unack: 'Cleared, not acknowledged',
    shelved: 'Shelved',
    out_of_service: 'Out of service',
    normal: 'Normal',
  };
  const EVENT_TEXT = {
    raise: 'Alarm',
    ack: 'Acknowledged',
    clear: 'Cleared',
    rtn: 'Returned to normal',
    escalate: 'Escalated',
    shelve: 'Shelved',
    unshelve: 'Unshelved',
    out_of_service: 'Out of service',
    in_service: 'Back in service',
    flood: 'Alarm flood',
    flood_end: 'Flood over',
  };
  const SHELVE_MINUTES = [15, 30, 60];

  const st = {
    me: null,
    alarms: new Map(), // alarm_id -> latest alert object
    offsetMs: 0, // server clock - this phone's clock
    es: null,
    retryTimer: null,
    cards: new Map(), // alarm_id -> element
    groups: new Map(), // group id -> <details>
    cued: new Set(), // high alarm occurrences already announced
    soundOn: localStorage.getItem('carehub.sound') !== 'off',
    audio: null,
    reminder: null,
    tab: 'active',
    statusTimer: null,
  };

  const now = () => Date.now() + st.offsetMs;

  // ---- helpers ----------------------------------------------------------

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text); // never innerHTML
    return e;
  }

  function toast(msg, bad) {
    const t = $('toast');
    t.textContent = msg;
    t.classList.toggle('bad', !!bad);
    t.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { t.hidden = true; }, bad ? 5000 : 2500);
  }

  function ago(ms) {
    if (!ms) return '';
    const s = Math.max(0, Math.floor((now() - ms) / 1000));
    if (s < 60) return s < 5 ? 'just now' : s + ' s ago';
    const m = Math.floor(s / 60);
    if (m < 60) return m + ' min ago';
    const h = Math.floor(m / 60);
    if (h < 24) return h + ' h ' + (m % 60) + ' min ago';
    return Math.floor(h / 24) + ' d ago';
  }

  function clock(ms) {
    const d = new Date(ms - st.offsetMs);
    return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  }

  function where(a) {
    const parts = [];
    if (a.room) parts.push('Room ' + a.room);
    if (a.bed) parts.push('Bed ' + a.bed);
    if (!parts.length) parts.push(a.device || a.alarm_id);
    return parts.join(' \u00b7 ');
  }

  function fmtValue(a) {
    if (typeof a.value !== 'number') return '';
    const v = Math.abs(a.value) >= 100 ? Math.round(a.value) : Math.round(a.value * 10) / 10;
    return (a.metric ? a.metric + ' ' : '') + v;
  }

  function since(a) {
    return a.raised_ms || a.ts_ms;
  }

  function byPriorityThenAge(x, y) {
    const p = (PRIO_RANK[y.priority] || 0) - (PRIO_RANK[x.priority] || 0);
    if (p) return p;
    const t = since(x) - since(y);
    if (t) return t;
    return x.alarm_id < y.alarm_id ? -1 : x.alarm_id > y.alarm_id ? 1 : 0;
  }

  async function api(method, path, body) {
    const opt = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
    if (method === 'POST') {
      opt.headers['Content-Type'] = 'application/json';
      opt.body = JSON.stringify(body || {});
    }
    const res = await fetch(path, opt);
    let data = null;
    try { data = await res.json(); } catch (e) { /* an empty or non-JSON body */ }
    if (!res.ok) {
      const err = new Error((data && data.error) || res.statusText || 'request failed');
      err.status = res.status;
      if (res.status === 401 && path !== '/api/login') showLogin();
      throw err;
    }
    return data;
  }

  // ---- sound and vibration ------------------------------------------------

  // The AudioContext may only start after a user gesture; the login tap or
  // any later tap unlocks it. Without it (or muted) the card still flashes.
  function unlockAudio() {
    if (st.audio || !(window.AudioContext || window.webkitAudioContext)) return;
    try {
      st.audio = new (window.AudioContext || window.webkitAudioContext)();
    } catch (e) {
      st.audio = null;
    }
  }

  // IEC 60601-1-8 high-priority burst: 3 + 2 pulses.
  function cue() {
    if (navigator.vibrate) {
      try { navigator.vibrate([300, 120, 300, 120, 300, 400, 300, 120, 300]); } catch (e) { /* not allowed */ }
    }
    if (!st.soundOn || !st.audio) return;
    if (st.audio.state === 'suspended') st.audio.resume();
    const t0 = st.audio.currentTime + 0.05;
    const starts = [0, 0.25, 0.5, 1.25, 1.5];
    for (const s of starts) {
      const o = st.audio.createOscillator();
      const g = st.audio.createGain();
      o.type = 'square';
      o.frequency.value = 880;
      g.gain.setValueAtTime(0.0001, t0 + s);
      g.gain.exponentialRampToValueAtTime(0.25, t0 + s + 0.02);
      g.gain.setValueAtTime(0.25, t0 + s + 0.14);
      g.gain.exponentialRampToValueAtTime(0.0001, t0 + s + 0.18);
      o.connect(g).connect(st.audio.destination);
      o.start(t0 + s);
      o.stop(t0 + s + 0.2);
    }
  }

  function maybeCue() {
    let fresh = false;
    for (const a of st.alarms.values()) {
      if (a.priority !== 'high' || a.state !== 'unack') continue;
      const key = a.alarm_id + '@' + since(a) + '#' + (a.escalation || 0);
      if (!st.cued.has(key)) {
        st.cued.add(key);
        fresh = true;
      }
    }
    if (fresh) cue();
  }

  // While a high alarm waits for someone, remind every 30 s.
  function remind() {
    for (const a of st.alarms.values()) {
      if (a.priority === 'high' && a.state === 'unack') {
        cue();
        return;
      }
    }
  }

  // ---- the active list ------------------------------------------------------

  function actionButtons(a) {
    const box = el('div', 'actions');
    const admin = st.me && st.me.role === 'admin';
    const add = (cls, text, minutes) => {
      const b = el('button', cls, text);
      b.type = 'button';
      if (minutes) b.dataset.minutes = String(minutes);
      box.appendChild(b);
    };
    if (a.state === 'unack' || a.state === 'rtn_unack') add('ack', 'Acknowledge');
    if (a.state === 'unack' || a.state === 'acked') {
      for (const m of SHELVE_MINUTES) add('shelve', 'Shelve ' + m + ' min', m);
    }
    if (a.state === 'shelved') add('unshelve', 'Unshelve');
    if (admin && a.state !== 'out_of_service' && a.rule !== 'flood') add('oos', 'Out of service');
    if (admin && a.state === 'out_of_service') add('ins', 'Back in service');
    return box;
  }

  function fillCard(card, a) {
    card.className = 'card prio-' + a.priority;
    card.dataset.alarmId = a.alarm_id;
    card.dataset.state = a.state;
    card.dataset.priority = a.priority;
    card.dataset.escalation = String(a.escalation || 0);
    card.replaceChildren();

    const head = el('div', 'card-head');
    head.appendChild(el('span', 'prio', a.priority.toUpperCase()));
    head.appendChild(el('span', 'where', where(a)));
    const age = el('span', 'age', ago(since(a)));
    age.dataset.since = String(since(a));
    head.appendChild(age);
    card.appendChild(head);

    if (a.resident) card.appendChild(el('div', 'resident', 'Resident ' + a.resident));
    card.appendChild(el('div', 'msg', a.message || a.rule + ' on ' + a.device));

    const meta = el('div', 'meta');
    const value = fmtValue(a);
    if (value) meta.appendChild(el('span', 'tag value', value));
    meta.appendChild(el('span', 'tag state state-' + a.state, STATE_TEXT[a.state] || a.state));
    if (a.escalation > 0) meta.appendChild(el('span', 'tag esc', 'Escalated \u00d7' + a.escalation));
    if (a.latched) meta.appendChild(el('span', 'tag latched', 'Latched'));
    if (a.state === 'shelved' && a.shelved_until_ms)
      meta.appendChild(el('span', 'tag', 'until ' + clock(a.shelved_until_ms)));
    if (a.by && a.state !== 'unack') meta.appendChild(el('span', 'tag by', a.by.replace(/^console:/, '')));
    card.appendChild(meta);
    card.appendChild(actionButtons(a));
  }

  function cardFor(a) {
    let c = st.cards.get(a.alarm_id);
    if (!c) {
      c = el('article');
      st.cards.set(a.alarm_id, c);
    }
    fillCard(c, a);
    return c;
  }

  function groupFor(id, members) {
    let g = st.groups.get(id);
    if (!g) {
      g = el('details', 'group');
      g.dataset.group = id;
      g.appendChild(el('summary'));
      g.appendChild(el('div', 'members'));
      st.groups.set(id, g);
    }
    const n = members.length;
    g.firstChild.textContent =
      n + ' low-priority alarm' + (n === 1 ? '' : 's') + ' grouped during flood';
    g.dataset.count = String(n);
    const box = g.lastChild;
    reorder(box, members.map(cardFor));
    return g;
  }

  // Puts exactly the wanted elements into box, in order, moving rather than
  // rebuilding them (a card under a finger stays the same element).
  function reorder(box, wanted) {
    const keep = new Set(wanted);
    for (const child of Array.from(box.children)) if (!keep.has(child)) child.remove();
    wanted.forEach((e, i) => {
      if (box.children[i] !== e) box.insertBefore(e, box.children[i] || null);
    });
  }

  function render() {
    const list = Array.from(st.alarms.values()).sort(byPriorityThenAge);
    // Low-priority alarms that the gateway grouped under a flood become one
    // collapsed card where the first of them would have been.
    const top = [];
    const grouped = new Map();
    for (const a of list) {
      if (a.group && a.priority === 'low') {
        if (!grouped.has(a.group)) {
          grouped.set(a.group, []);
          top.push({ group: a.group });
        }
        grouped.get(a.group).push(a);
      } else {
        top.push(a);
      }
    }
    const wanted = top.map((t) => (t.group ? groupFor(t.group, grouped.get(t.group)) : cardFor(t)));
    reorder($('active'), wanted);
    for (const id of Array.from(st.cards.keys())) if (!st.alarms.has(id)) st.cards.delete(id);
    for (const id of Array.from(st.groups.keys())) if (!grouped.has(id)) st.groups.delete(id);

    const n = list.length;
    const highUnack = list.some((a) => a.priority === 'high' && a.state === 'unack');
    $('active-empty').hidden = n > 0;
    $('active-count').textContent = String(n);
    $('active-count').classList.toggle('has-high', highUnack);
    const site = (st.me && (st.me.site || st.me.gateway)) || 'carehub';
    document.title = (n ? '(' + n + ') ' : '') + site + ' alarms';
  }

  function tick() {
    for (const e of document.querySelectorAll('.age[data-since]')) {
      e.textContent = ago(Number(e.dataset.since));
    }
  }

  function applySnapshot(d) {
    if (typeof d.server_ms === 'number') st.offsetMs = d.server_ms - Date.now();
    st.alarms = new Map();
    for (const a of d.alarms || []) st.alarms.set(a.alarm_id, a);
    render();
    maybeCue();
  }

  // ---- the gateway's own health ------------------------------------------------

  function showStorage(spool) {
    const b = $('storage-banner');
    const kind = !spool ? '' : spool.degraded ? 'memory' : spool.disk_full ? 'full' : '';
    b.hidden = !kind;
    if (!kind) return;
    b.dataset.kind = kind;
    $('storage-title').textContent = kind === 'memory'
      ? '本机存储故障：数据仅保存在内存中 / Storage failure: data kept in memory only'
      : '本机存储已满：最早的数据被删除 / Disk full: the oldest readings are dropped';
    const bits = [];
    if (spool.error) bits.push(spool.error);
    if (kind === 'memory' && spool.memory_max) {
      bits.push(Math.round(spool.memory_bytes / 1024) + ' / ' + Math.round(spool.memory_max / 1024) + ' KiB in memory');
    }
    if (spool.since_ms) bits.push('since ' + clock(spool.since_ms));
    bits.push('alarms still sound here; call the technician');
    $('storage-detail').textContent = bits.join(' \u00b7 ');
  }

  async function loadStatus() {
    clearTimeout(st.statusTimer);
    try {
      const d = await api('GET', '/api/status');
      if (typeof d.server_ms === 'number') st.offsetMs = d.server_ms - Date.now();
      showStorage(d.status && d.status.spool);
    } catch (err) { /* keep the last view; a 401 shows the login */ }
    if (st.me) st.statusTimer = setTimeout(loadStatus, 10000);
  }

  function applyTransition(a) {
    const old = st.alarms.get(a.alarm_id);
    if (old && old.ts_ms > a.ts_ms) return; // an older copy (snapshot overlap)
    if (a.state === 'normal') st.alarms.delete(a.alarm_id);
    else st.alarms.set(a.alarm_id, a);
    if (a.rule === 'spool-failed') loadStatus();
    render();
    maybeCue();
    if (st.tab === 'history') prependHistory(a);
  }

  // ---- the event stream -----------------------------------------------------

  function setLive(state) {
    const l = $('live');
    l.dataset.state = state;
    l.textContent = state === 'live' ? 'live' : state === 'reconnecting' ? 'reconnecting\u2026' : 'offline';
  }

  function connect() {
    clearTimeout(st.retryTimer);
    if (st.es) st.es.close();
    setLive('reconnecting');
    const es = new EventSource('/api/events');
    st.es = es;
    es.onopen = () => { if (st.es === es) setLive('live'); };
    es.addEventListener('snapshot', (e) => {
      if (st.es !== es) return;
      setLive('live');
      try { applySnapshot(JSON.parse(e.data)); } catch (err) { /* keep the last good view */ }
    });
    es.addEventListener('alert', (e) => {
      if (st.es !== es) return;
      try { applyTransition(JSON.parse(e.data)); } catch (err) { /* ignore one bad event */ }
    });
    es.onerror = () => {
      if (st.es !== es) return;
      setLive('reconnecting');
      if (es.readyState === EventSource.CLOSED) {
        // The server refused the stream (login expired, too many phones):
        // ask why before trying again, rather than hammering it.
        es.close();
        st.es = null;
        st.retryTimer = setTimeout(async () => {
          try {
            await api('GET', '/api/me');
            connect();
          } catch (err) {
            if (err.status !== 401) st.retryTimer = setTimeout(connect, 5000);
          }
        }, 3000);
      }
      // Otherwise EventSource retries by itself after the server's retry: delay.
    };
  }

  function disconnect() {
    clearTimeout(st.retryTimer);
    if (st.es) st.es.close();
    st.es = null;
    setLive('offline');
  }

  // ---- commands --------------------------------------------------------------

  async function command(button) {
    const card = button.closest('[data-alarm-id]');
    if (!card) return;
    const id = card.dataset.alarmId;
    let action = null;
    let body = {};
    if (button.classList.contains('ack')) action = 'ack';
    else if (button.classList.contains('shelve')) {
      action = 'shelve';
      body = { minutes: Number(button.dataset.minutes) };
    } else if (button.classList.contains('unshelve')) action = 'unshelve';
    else if (button.classList.contains('oos')) action = 'out_of_service';
    else if (button.classList.contains('ins')) action = 'in_service';
    if (!action) return;
    for (const b of card.querySelectorAll('button')) b.disabled = true;
    try {
      await api('POST', '/api/alarms/' + encodeURIComponent(id) + '/' + action, body);
      toast(action === 'ack' ? 'Acknowledged' : action === 'shelve' ? 'Shelved for ' + body.minutes + ' min' : 'Done');
      // The stream brings the new state; without it, fetch the list.
      if ($('live').dataset.state !== 'live') loadAlarms();
    } catch (err) {
      toast(err.message, true);
      if (err.status === 409 || err.status === 404) loadAlarms();
    } finally {
      for (const b of card.querySelectorAll('button')) b.disabled = false;
    }
  }

  async function loadAlarms() {
    try {
      applySnapshot(await api('GET', '/api/alarms'));
    } catch (err) {
      if (err.status !== 401) toast('Cannot load alarms: ' + err.message, true);
    }
  }

  // ---- history ----------------------------------------------------------------

  function historyItem(a) {
    const li = el('li', 'prio-' + a.priority);
    li.dataset.alarmId = a.alarm_id;
    li.dataset.event = a.event;
    li.appendChild(el('span', 'time', clock(a.ts_ms)));
    const what = el('span', 'what');
    what.appendChild(el('span', 'dot'));
    what.appendChild(document.createTextNode((EVENT_TEXT[a.event] || a.event) + ' \u2014 ' + where(a)));
    li.appendChild(what);
    const bits = [a.message || a.rule];
    if (a.resident) bits.push(a.resident);
    if (a.event === 'escalate') bits.push('level ' + a.escalation);
    if (a.by) bits.push('by ' + a.by.replace(/^console:/, ''));
    li.appendChild(el('span', 'detail', bits.join(' \u00b7 ')));
    return li;
  }

  function prependHistory(a) {
    const ol = $('history');
    ol.insertBefore(historyItem(a), ol.firstChild);
    $('history-empty').hidden = true;
  }

  async function loadHistory() {
    const hours = $('history-hours').value;
    try {
      const d = await api('GET', '/api/history?hours=' + encodeURIComponent(hours));
      if (typeof d.server_ms === 'number') st.offsetMs = d.server_ms - Date.now();
      const ol = $('history');
      ol.replaceChildren(...(d.history || []).slice().reverse().map(historyItem));
      $('history-empty').hidden = ol.children.length > 0;
    } catch (err) {
      if (err.status !== 401) toast('Cannot load history: ' + err.message, true);
    }
  }

  function showTab(tab) {
    st.tab = tab;
    for (const b of document.querySelectorAll('.tab')) {
      b.setAttribute('aria-selected', String(b.dataset.tab === tab));
    }
    $('panel-active').hidden = tab !== 'active';
    $('panel-history').hidden = tab !== 'history';
    if (tab === 'history') loadHistory();
  }

  // ---- login and views ------------------------------------------------------

  function showLogin() {
    disconnect();
    clearInterval(st.reminder);
    clearTimeout(st.statusTimer);
    st.me = null;
    st.alarms = new Map();
    $('storage-banner').hidden = true;
    $('app-view').hidden = true;
    $('login-view').hidden = false;
    $('site-name').textContent = 'carehub';
    document.title = 'carehub alarms';
    $('login-user').focus();
  }

  function showApp(me) {
    st.me = me;
    $('login-view').hidden = true;
    $('app-view').hidden = false;
    $('site-name').textContent = me.site ? me.site + (me.gateway ? ' / ' + me.gateway : '') : 'carehub';
    $('whoami').textContent = me.user + (me.role === 'admin' ? ' (admin)' : '');
    for (const o of $('history-hours').options) {
      o.disabled = me.history_max_hours ? Number(o.value) > me.history_max_hours : false;
    }
    loadAlarms();
    loadStatus();
    connect();
    clearInterval(st.reminder);
    st.reminder = setInterval(remind, 30000);
  }

  async function onLogin(ev) {
    ev.preventDefault();
    unlockAudio();
    const btn = $('login-submit');
    btn.disabled = true;
    $('login-error').textContent = '';
    try {
      await api('POST', '/api/login', {
        user: $('login-user').value.trim(),
        password: $('login-password').value,
      });
      $('login-password').value = '';
      showApp(await api('GET', '/api/me'));
    } catch (err) {
      $('login-error').textContent =
        err.status === 429 ? 'Too many failed attempts. Wait a minute.' : err.message;
    } finally {
      btn.disabled = false;
    }
  }

  async function onLogout() {
    try { await api('POST', '/api/logout', {}); } catch (err) { /* signed out anyway */ }
    showLogin();
  }

  function setSound(on) {
    st.soundOn = on;
    localStorage.setItem('carehub.sound', on ? 'on' : 'off');
    const b = $('sound-toggle');
    b.textContent = on ? 'Sound on' : 'Sound off';
    b.setAttribute('aria-pressed', String(on));
  }

  function init() {
    $('login-form').addEventListener('submit', onLogin);
    $('logout').addEventListener('click', onLogout);
    $('sound-toggle').addEventListener('click', () => { unlockAudio(); setSound(!st.soundOn); });
    $('tab-active').addEventListener('click', () => showTab('active'));
    $('tab-history').addEventListener('click', () => showTab('history'));
    $('history-hours').addEventListener('change', loadHistory);
    $('history-refresh').addEventListener('click', loadHistory);
    $('active').addEventListener('click', (ev) => {
      unlockAudio();
      const b = ev.target.closest('button');
      if (b) command(b);
    });
    document.addEventListener('visibilitychange', () => {
      // A phone that slept may have a dead stream; start afresh.
      if (!document.hidden && st.me && (!st.es || st.es.readyState === EventSource.CLOSED)) connect();
    });
    setSound(st.soundOn);
    setInterval(tick, 1000);
    api('GET', '/api/me').then(showApp, () => showLogin());
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
