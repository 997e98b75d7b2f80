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
// Language: Chinese (zh-CN) or English (en), as the hub console does
// (hub/www/app.js, same wording where the two say the same thing). The
// carer's choice on the switch is kept in localStorage "carehub.lang" and
// wins; else the "locale" of GET /api/me when the gateway sends one; else
// the browser's language (zh* -> zh-CN, anything else -> en).
//
// Alarm cards read: what happened (kind: icon and title), where (room and
// bed, or the zone a wearable was last located in), who (resident, else the
// device), then the message, the times (each duration says what it
// measures), state tags and buttons. Optional fields of an alarm, used when
// the gateway sends them, else the older ones: kind (unknown or absent ->
// "other"), room_name/bed_name/resident_name/device_name/site_name (else
// room/bed/resident/device/site), located_ms (room is where a wearable was
// located at that time). An "alert" whose event is "notified" (a message
// was sent: by = to whom, message = e.g. the channel and result) goes to the
// history and never changes a card's state.
//
// Hooks for tests (keep them stable): #active holds one [data-alarm-id]
// element per alarm with data-state, data-priority and data-kind (one of
// CarehubKinds.KINDS in kinds.js, the file the hub console shares), its
// headline .kind, its .where and .who lines, its buttons .ack,
// .shelve[data-minutes], .unshelve, .oos, .ins; #live has data-state
// "live" while the stream is connected, "reconnecting" otherwise;
// #storage-banner is shown with data-kind "memory" or "full"; the language
// switch is button[data-lang="zh-CN"|"en"] (aria-pressed on the current one,
// one switch in #login-view and one in the header); <html lang> follows.
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);

  const LANG_KEY = 'carehub.lang';
  const LANGS = ['zh-CN', 'en'];
  const PRIO_RANK = { high: 2, medium: 1, low: 0 };
  const SHELVE_MINUTES = [15, 30, 60];

  // ---- dictionary ---------------------------------------------------------

  const DICT = {
    'zh-CN': {
      'brand.sub': '报警',
      'title': '{0} 报警',
      'lang.label': '语言',
      'live.live': '实时',
      'live.reconnecting': '重新连接中…',
      'live.offline': '离线',
      'login.title': '登录',
      'login.hint': '仅限本机构员工。每次确认都会记录您的用户名。',
      'login.user': '用户名',
      'login.password': '密码',
      'login.submit': '登录',
      'tab.active': '当前报警',
      'tab.history': '报警记录',
      'active.empty': '当前没有活动报警',
      'history.last': '最近',
      'history.h1': '1小时',
      'history.h4': '4小时',
      'history.h8': '8小时',
      'history.h24': '24小时',
      'history.refresh': '刷新',
      'history.empty': '此时段没有报警',
      'sound.on': '提示音：开',
      'sound.off': '提示音：关',
      'logout': '退出',
      'whoami.admin': '{0}（管理员）',
      'prio.high': '高',
      'prio.medium': '中',
      'prio.low': '低',
      'state.unack': '未确认',
      'state.acked': '已确认',
      'state.rtn_unack': '已恢复，未确认',
      'state.shelved': '已搁置',
      'state.out_of_service': '停用',
      'state.normal': '已恢复',
      'event.raise': '报警',
      'event.ack': '已确认',
      'event.clear': '已解除',
      'event.rtn': '情况已恢复',
      'event.escalate': '已升级',
      'event.shelve': '已搁置',
      'event.unshelve': '取消搁置',
      'event.out_of_service': '停用',
      'event.in_service': '恢复使用',
      'event.flood': '报警泛滥',
      'event.flood_end': '报警泛滥结束',
      'event.notified': '已通知',
      'hist.notified': '已通知 {0} {1}',
      'hist.level': '第{0}级',
      'hist.by': '操作人 {0}',
      'card.room': '{0}房',
      'card.bed': '{0}床',
      'card.resident': '住户 {0}',
      'card.device': '设备 {0}',
      'card.lastSeen': '最后位置 {0}',
      'card.on': '{0}（{1}）',
      'card.for': '已持续 {0}',
      'card.waiting': '等待确认 {0}',
      'card.raisedAt': '发生于 {0}',
      'card.ackTook': '确认用时 {0}',
      'card.clearedAt': '恢复于 {0}',
      'card.lasted': '情况持续 {0}',
      'card.escalated': '已升级 ×{0}',
      'card.latched': '保持至确认',
      'card.shelvedUntil': '搁置至 {0}',
      'card.ackedBy': '确认人 {0}',
      'card.by': '操作人 {0}',
      'card.notified': '已通知 {0} {1}',
      'btn.ack': '确认',
      'btn.shelve': '搁置 {0}',
      'btn.unshelve': '取消搁置',
      'btn.oos': '停用',
      'btn.ins': '恢复使用',
      'group.one': '{0} 个低优先级报警（报警泛滥期间合并）',
      'group.many': '{0} 个低优先级报警（报警泛滥期间合并）',
      'toast.acked': '已确认',
      'toast.shelved': '已搁置 {0}',
      'toast.done': '已完成',
      'storage.memory': '本机存储故障：数据仅保存在内存中',
      'storage.full': '本机存储已满：最早的数据被删除',
      'storage.inMemory': '内存中 {0} / {1} KiB',
      'storage.since': '始于 {0}',
      'storage.call': '本机报警仍会响铃；请联系技术人员',
      'err.loadAlarms': '无法加载报警：{0}',
      'err.loadHistory': '无法加载报警记录：{0}',
      'err.login': '用户名或密码错误',
      'err.400': '请求无效',
      'err.401': '登录已失效，请重新登录',
      'err.403': '只有管理员可以执行此操作',
      'err.404': '该报警已不存在',
      'err.409': '报警状态已改变，无法执行此操作',
      'err.429': '登录失败次数过多，请一分钟后再试',
      'err.500': '网关内部错误',
      'err.503': '同时在线的设备过多，请稍后再试',
      'err.network': '无法连接网关',
      'err.generic': '请求失败（{0}）',
      'ago.now': '刚刚',
      'ago.s': '{0}秒前',
      'ago.m': '{0}分钟前',
      'ago.h': '{0}小时前',
      'ago.d': '{0}天前',
      'unit.s': '{0}秒',
      'unit.m': '{0}分钟',
      'unit.h': '{0}小时',
      'unit.d': '{0}天',
      'unit.join': '',
      'metric.co2': 'CO₂',
      'metric.pm25': 'PM2.5',
      'metric.temperature': '温度',
      'metric.humidity': '湿度',
      'metric.hr': '心率',
      'metric.rr': '呼吸',
      'metric.spo2': '血氧',
      'metric.battery': '电量',
    },
    en: {
      'brand.sub': 'alarms',
      'title': '{0} alarms',
      'lang.label': 'Language',
      'live.live': 'Live',
      'live.reconnecting': 'Reconnecting…',
      'live.offline': 'Offline',
      'login.title': 'Sign in',
      'login.hint': 'Site staff only. Your name is recorded with every acknowledgement.',
      'login.user': 'User',
      'login.password': 'Password',
      'login.submit': 'Sign in',
      'tab.active': 'Active',
      'tab.history': 'History',
      'active.empty': 'No active alarms',
      'history.last': 'Last',
      'history.h1': '1 hour',
      'history.h4': '4 hours',
      'history.h8': '8 hours',
      'history.h24': '24 hours',
      'history.refresh': 'Refresh',
      'history.empty': 'Nothing in this period',
      'sound.on': 'Sound: on',
      'sound.off': 'Sound: off',
      'logout': 'Sign out',
      'whoami.admin': '{0} (admin)',
      'prio.high': 'High',
      'prio.medium': 'Medium',
      'prio.low': 'Low',
      'state.unack': 'Not acknowledged',
      'state.acked': 'Acknowledged',
      'state.rtn_unack': 'Cleared, not acknowledged',
      'state.shelved': 'Shelved',
      'state.out_of_service': 'Out of service',
      'state.normal': 'Normal',
      'event.raise': 'Alarm',
      'event.ack': 'Acknowledged',
      'event.clear': 'Cleared',
      'event.rtn': 'Returned to normal',
      'event.escalate': 'Escalated',
      'event.shelve': 'Shelved',
      'event.unshelve': 'Unshelved',
      'event.out_of_service': 'Out of service',
      'event.in_service': 'Back in service',
      'event.flood': 'Alarm flood',
      'event.flood_end': 'Flood over',
      'event.notified': 'Notified',
      'hist.notified': 'Notified {0} {1}',
      'hist.level': 'level {0}',
      'hist.by': 'by {0}',
      'card.room': 'Room {0}',
      'card.bed': 'Bed {0}',
      'card.resident': 'Resident {0}',
      'card.device': 'Device {0}',
      'card.lastSeen': 'Last seen at {0}',
      'card.on': '{0} ({1})',
      'card.for': 'Active for {0}',
      'card.waiting': 'Waiting for acknowledgement {0}',
      'card.raisedAt': 'Raised {0}',
      'card.ackTook': 'Time to acknowledge {0}',
      'card.clearedAt': 'Returned to normal {0}',
      'card.lasted': 'Condition lasted {0}',
      'card.escalated': 'Escalated ×{0}',
      'card.latched': 'Latched',
      'card.shelvedUntil': 'Shelved until {0}',
      'card.ackedBy': 'Acknowledged by {0}',
      'card.by': 'by {0}',
      'card.notified': 'Notified {0} {1}',
      'btn.ack': 'Acknowledge',
      'btn.shelve': 'Shelve {0}',
      'btn.unshelve': 'Unshelve',
      'btn.oos': 'Out of service',
      'btn.ins': 'Back in service',
      'group.one': '{0} low-priority alarm grouped during flood',
      'group.many': '{0} low-priority alarms grouped during flood',
      'toast.acked': 'Acknowledged',
      'toast.shelved': 'Shelved for {0}',
      'toast.done': 'Done',
      'storage.memory': 'Storage failure: data kept in memory only',
      'storage.full': 'Disk full: the oldest readings are dropped',
      'storage.inMemory': '{0} / {1} KiB in memory',
      'storage.since': 'since {0}',
      'storage.call': 'alarms still sound here; call the technician',
      'err.loadAlarms': 'Cannot load alarms: {0}',
      'err.loadHistory': 'Cannot load history: {0}',
      'err.login': 'Wrong user or password',
      'err.400': 'Invalid request',
      'err.401': 'Your session has ended. Sign in again.',
      'err.403': 'Only an admin may do that',
      'err.404': 'This alarm no longer exists',
      'err.409': 'Not possible in the alarm\'s current state',
      'err.429': 'Too many failed attempts. Wait a minute.',
      'err.500': 'Internal error on the gateway',
      'err.503': 'Too many phones connected; try again shortly',
      'err.network': 'Cannot reach the gateway',
      'err.generic': 'Request failed ({0})',
      'ago.now': 'just now',
      'ago.s': '{0} s ago',
      'ago.m': '{0} min ago',
      'ago.h': '{0} h ago',
      'ago.d': '{0} d ago',
      'unit.s': '{0} s',
      'unit.m': '{0} min',
      'unit.h': '{0} h',
      'unit.d': '{0} d',
      'unit.join': ' ',
      'metric.co2': 'CO₂',
      'metric.pm25': 'PM2.5',
      'metric.temperature': 'Temperature',
      'metric.humidity': 'Humidity',
      'metric.hr': 'Heart rate',
      'metric.rr': 'Breathing',
      'metric.spo2': 'SpO₂',
      'metric.battery': 'Battery',
    },
  };

  const st = {
    lang: 'en',
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
    spool: null, // the last status.spool, redrawn in another language
    history: [], // the history tab's transitions, newest first
    loginErr: null, // why the last sign-in failed, redrawn in another language
  };

  const now = () => Date.now() + st.offsetMs;

  // ---- helpers ----------------------------------------------------------

  function t(key, ...args) {
    let s = DICT[st.lang][key];
    if (s === undefined) s = DICT.en[key];
    if (s === undefined) return key;
    return s.replace(/\{(\d)\}/g, (m, i) => (args[i] === undefined ? m : String(args[i])));
  }

  // A label from the dictionary when there is one, else the raw value.
  function tOr(prefix, v) {
    return DICT.en[prefix + v] !== undefined ? t(prefix + v) : String(v);
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text); // never innerHTML
    return e;
  }

  const icon = (kind) => window.CarehubKinds.icon(kind);

  function toast(msg, bad) {
    const tEl = $('toast');
    tEl.textContent = msg;
    tEl.classList.toggle('bad', !!bad);
    tEl.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { tEl.hidden = true; }, bad ? 5000 : 2500);
  }

  // "40秒", "5分钟", "1小时5分钟" / "40 s", "5 min", "1 h 5 min": two units at most.
  // coarse: whole minutes once past one (a running "已持续 5分钟").
  function dur(sec, coarse) {
    sec = Math.max(0, Math.floor(sec));
    const d = Math.floor(sec / 86400);
    const h = Math.floor((sec % 86400) / 3600);
    const m = Math.floor((sec % 3600) / 60);
    const s = sec % 60;
    let parts;
    if (d) parts = [['d', d], ['h', h]];
    else if (h) parts = [['h', h], ['m', m]];
    else if (m) parts = [['m', m], ['s', s]];
    else parts = [['s', s]];
    if (parts.length > 1 && parts[1][1] === 0) parts.pop();
    if (parts.length > 1 && parts[0][0] === 'm' && (coarse || parts[0][1] >= 10)) parts.pop();
    return parts.map(([u, n]) => t('unit.' + u, n)).join(t('unit.join'));
  }

  // "刚刚", "3分钟前", "2小时前" / "just now", "3 min ago", "2 h ago".
  function ago(ms) {
    if (!ms) return '';
    const s = Math.max(0, Math.floor((now() - ms) / 1000));
    if (s < 5) return t('ago.now');
    if (s < 60) return t('ago.s', s);
    const m = Math.floor(s / 60);
    if (m < 60) return t('ago.m', m);
    const h = Math.floor(m / 60);
    if (h < 24) return t('ago.h', h);
    return t('ago.d', Math.floor(h / 24));
  }

  const sinceNow = (ms) => dur((now() - ms) / 1000, true);

  // What an element with data-since says, redrawn every second by tick().
  const LIVE_TEXT = {
    for: (ms) => t('card.for', sinceNow(ms)),
    waiting: (ms) => t('card.waiting', sinceNow(ms)),
    ago: (ms) => ago(ms),
    paren: (ms) => '(' + ago(ms) + ')',
  };

  function live(cls, fmt, ms) {
    const e = el('span', cls, LIVE_TEXT[fmt](ms));
    e.dataset.since = String(ms);
    e.dataset.fmt = fmt;
    return e;
  }

  const locale = () => (st.lang === 'zh-CN' ? 'zh-CN' : 'en-GB');

  // A wall-clock label of the gateway, shown on this phone's clock (the
  // offset keeps "10:32:05" and "1 min ago" consistent); the date only when
  // it is not today.
  function fmtTime(ms) {
    if (!ms) return '';
    const d = new Date(ms - st.offsetMs);
    const opts = { hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' };
    if (d.toDateString() !== new Date().toDateString()) {
      opts.month = st.lang === 'zh-CN' ? 'numeric' : 'short';
      opts.day = 'numeric';
    }
    return d.toLocaleString(locale(), opts);
  }

  function fmtShort(ms) {
    const d = new Date(ms - st.offsetMs);
    return d.toLocaleTimeString(locale(), { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
  }

  const kindOf = (a) => window.CarehubKinds.of(a);
  const nonEmpty = (v) => (typeof v === 'string' && v !== '' ? v : null);
  const located = (a) => typeof a.located_ms === 'number' && a.located_ms > 0;

  // A display name as it came (any language, no suffix added), else the id
  // in a label ("203房" / "Room 203").
  function named(name, id, key) {
    if (nonEmpty(name)) return name;
    if (nonEmpty(id)) return t(key, id);
    return null;
  }

  function placeText(a) {
    return named(a.room_name, a.room, 'card.room');
  }

  function deviceText(a) {
    return nonEmpty(a.device_name) || (nonEmpty(a.device) ? t('card.device', a.device) : null);
  }

  function residentText(a) {
    return named(a.resident_name, a.resident, 'card.resident');
  }

  // Where as one line of text (history, and the card without a location).
  function where(a) {
    const parts = [];
    const place = placeText(a);
    if (located(a) && place) return t('card.lastSeen', place) + ' \u00b7 ' + fmtTime(a.located_ms);
    if (place) parts.push(place);
    const bed = named(a.bed_name, a.bed, 'card.bed');
    if (bed) parts.push(bed);
    if (!parts.length) parts.push(deviceText(a) || a.alarm_id);
    return parts.join(' \u00b7 ');
  }

  // The card's where line: a wearable's last location says when it was
  // seen there, and how long ago (redrawn as time passes).
  function whereLine(a) {
    const box = el('div', 'where');
    const place = placeText(a);
    if (located(a) && place) {
      box.classList.add('located');
      box.append(t('card.lastSeen', place) + ' \u00b7 ' + fmtTime(a.located_ms) + ' ');
      box.appendChild(live('located-ago', 'paren', a.located_ms));
    } else {
      box.textContent = where(a);
    }
    return box;
  }

  // Who: the resident, else the device that raised it (unless the where
  // line already names the device, for want of a room).
  function who(a) {
    return residentText(a) || (placeText(a) ? deviceText(a) : null);
  }

  function fmtValue(a) {
    if (typeof a.value !== 'number') return '';
    const v = Math.abs(a.value) >= 100 ? Math.round(a.value) : Math.round(a.value * 10) / 10;
    return (a.metric ? tOr('metric.', a.metric) + ' ' : '') + v;
  }

  function since(a) {
    return a.raised_ms || a.ts_ms;
  }

  function byPriorityThenAge(x, y) {
    const p = (PRIO_RANK[y.priority] || 0) - (PRIO_RANK[x.priority] || 0);
    if (p) return p;
    const d = since(x) - since(y);
    if (d) return d;
    return x.alarm_id < y.alarm_id ? -1 : x.alarm_id > y.alarm_id ? 1 : 0;
  }

  const byName = (by) => String(by || '').replace(/^console:/, '');

  // What went wrong, in the page's language (the server's own message is
  // English and only the fallback).
  function errText(err, login) {
    if (!err.status) return t('err.network');
    if (err.status === 401 && login) return t('err.login');
    if (DICT.en['err.' + err.status] !== undefined) return t('err.' + err.status);
    return t('err.generic', err.status + (err.message ? ': ' + err.message : ''));
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

  // ---- language -----------------------------------------------------------

  function normLang(v) {
    if (typeof v !== 'string') return null;
    if (/^zh/i.test(v)) return 'zh-CN';
    if (/^en/i.test(v)) return 'en';
    return null;
  }

  // The carer's choice, else the gateway's locale, else the browser's.
  function chooseLang(me) {
    let saved = null;
    try { saved = localStorage.getItem(LANG_KEY); } catch (e) { /* storage off */ }
    const nav = (navigator.languages && navigator.languages[0]) || navigator.language || '';
    return normLang(saved) || normLang(me && me.locale) || (/^zh/i.test(nav) ? 'zh-CN' : 'en');
  }

  function applyStaticLabels() {
    document.documentElement.lang = st.lang;
    for (const e of document.querySelectorAll('[data-i18n]')) e.textContent = t(e.dataset.i18n);
    for (const e of document.querySelectorAll('[data-i18n-attr]')) {
      for (const pair of e.dataset.i18nAttr.split(',')) {
        const [attr, key] = pair.split(':');
        e.setAttribute(attr.trim(), t(key.trim()));
      }
    }
    for (const b of document.querySelectorAll('button[data-lang]')) {
      b.setAttribute('aria-pressed', String(b.dataset.lang === st.lang));
    }
  }

  // Redraws everything that has words in it.
  function applyLang(lang) {
    st.lang = LANGS.includes(lang) ? lang : 'en';
    applyStaticLabels();
    setLive($('live').dataset.state);
    setSound(st.soundOn);
    if (st.me) {
      showIdentity();
      showStorage(st.spool);
      render();
      renderHistory();
    } else {
      document.title = t('title', 'carehub');
      $('login-error').textContent = st.loginErr ? errText(st.loginErr, true) : '';
    }
  }

  function setLang(lang) {
    try { localStorage.setItem(LANG_KEY, lang); } catch (e) { /* storage off: this page only */ }
    applyLang(lang);
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
    if (a.state === 'unack' || a.state === 'rtn_unack') add('ack', t('btn.ack'));
    if (a.state === 'unack' || a.state === 'acked') {
      for (const m of SHELVE_MINUTES) add('shelve', t('btn.shelve', dur(m * 60)), m);
    }
    if (a.state === 'shelved') add('unshelve', t('btn.unshelve'));
    if (admin && a.state !== 'out_of_service' && a.rule !== 'flood') add('oos', t('btn.oos'));
    if (admin && a.state === 'out_of_service') add('ins', t('btn.ins'));
    return box;
  }

  // The times of an alarm, each saying what it measures. The head says how
  // long the alarm has been active (since raised); here: when it was
  // raised, how long until someone acknowledged it, and, for an alarm whose
  // condition ended before anyone acknowledged it, when that was. A latched
  // alarm is not over until acknowledged: it shows no such time.
  function timesLine(a) {
    const box = el('div', 'times');
    const add = (cls, text) => box.appendChild(el('span', cls, text));
    if (a.raised_ms) add('raised', t('card.raisedAt', fmtTime(a.raised_ms)));
    if (a.acked_ms && a.raised_ms && a.acked_ms >= a.raised_ms) {
      add('ack-took', t('card.ackTook', dur((a.acked_ms - a.raised_ms) / 1000)));
    }
    if (a.state === 'rtn_unack' && !a.latched && a.cleared_ms) {
      add('cleared', t('card.clearedAt', fmtTime(a.cleared_ms)));
      if (a.raised_ms && a.cleared_ms >= a.raised_ms) {
        add('lasted', t('card.lasted', dur((a.cleared_ms - a.raised_ms) / 1000)));
      }
    }
    return box;
  }

  function fillCard(card, a) {
    const kind = kindOf(a);
    card.className = 'card prio-' + a.priority + ' kind-' + kind;
    card.dataset.alarmId = a.alarm_id;
    card.dataset.state = a.state;
    card.dataset.priority = a.priority;
    card.dataset.kind = kind;
    card.dataset.escalation = String(a.escalation || 0);
    card.replaceChildren();

    // What happened: the headline.
    const head = el('div', 'card-head');
    head.appendChild(el('span', 'prio', tOr('prio.', a.priority)));
    head.appendChild(icon(kind));
    head.appendChild(el('span', 'kind', window.CarehubKinds.title(kind, st.lang)));
    // How long it has been going on: since raised. An alarm whose condition
    // has ended waits only for its acknowledgement.
    head.appendChild(live('age', a.state === 'rtn_unack' ? 'waiting' : 'for', since(a)));
    card.appendChild(head);

    // Where, then who.
    card.appendChild(whereLine(a));
    const person = who(a);
    if (person) card.appendChild(el('div', 'who resident', person));
    card.appendChild(el('div', 'msg', a.message || (a.rule + ' \u00b7 ' + (deviceText(a) || ''))));
    card.appendChild(timesLine(a));

    const meta = el('div', 'meta');
    const value = fmtValue(a);
    if (value) meta.appendChild(el('span', 'tag value', value));
    meta.appendChild(el('span', 'tag state state-' + a.state, tOr('state.', a.state)));
    if (a.escalation > 0) meta.appendChild(el('span', 'tag esc', t('card.escalated', a.escalation)));
    if (a.latched) meta.appendChild(el('span', 'tag latched', t('card.latched')));
    if (a.state === 'shelved' && a.shelved_until_ms)
      meta.appendChild(el('span', 'tag', t('card.shelvedUntil', fmtShort(a.shelved_until_ms))));
    if (a.by && a.state !== 'unack' && a.event !== 'notified') {
      const key = a.state === 'acked' ? 'card.ackedBy' : 'card.by';
      meta.appendChild(el('span', 'tag by', t(key, byName(a.by))));
    }
    if (a.notified && a.notified.by) {
      meta.appendChild(el('span', 'tag notified',
        t('card.notified', a.notified.by, fmtShort(a.notified.ts_ms))));
    }
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
    g.firstChild.textContent = t(n === 1 ? 'group.one' : 'group.many', n);
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

  function siteText() {
    const me = st.me || {};
    return nonEmpty(me.site_name) || nonEmpty(me.site) || nonEmpty(me.gateway) || 'carehub';
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
    const wanted = top.map((x) => (x.group ? groupFor(x.group, grouped.get(x.group)) : cardFor(x)));
    reorder($('active'), wanted);
    for (const id of Array.from(st.cards.keys())) if (!st.alarms.has(id)) st.cards.delete(id);
    for (const id of Array.from(st.groups.keys())) if (!grouped.has(id)) st.groups.delete(id);

    const n = list.length;
    const highUnack = list.some((a) => a.priority === 'high' && a.state === 'unack');
    $('active-empty').hidden = n > 0;
    $('active-count').textContent = String(n);
    $('active-count').classList.toggle('has-high', highUnack);
    document.title = (n ? '(' + n + ') ' : '') + t('title', siteText());
  }

  function tick() {
    for (const e of document.querySelectorAll('[data-since][data-fmt]')) {
      const f = LIVE_TEXT[e.dataset.fmt];
      if (f) e.textContent = f(Number(e.dataset.since));
    }
  }

  function applySnapshot(d) {
    if (typeof d.server_ms === 'number') st.offsetMs = d.server_ms - Date.now();
    const old = st.alarms;
    st.alarms = new Map();
    for (const a of d.alarms || []) {
      // a notification already shown stays with its alarm
      const prev = old.get(a.alarm_id);
      if (prev && prev.notified && since(prev) === since(a)) a.notified = prev.notified;
      st.alarms.set(a.alarm_id, a);
    }
    render();
    maybeCue();
  }

  // ---- the gateway's own health ------------------------------------------------

  function showStorage(spool) {
    st.spool = spool || null;
    const b = $('storage-banner');
    const kind = !spool ? '' : spool.degraded ? 'memory' : spool.disk_full ? 'full' : '';
    b.hidden = !kind;
    if (!kind) return;
    b.dataset.kind = kind;
    $('storage-title').textContent = t(kind === 'memory' ? 'storage.memory' : 'storage.full');
    const bits = [];
    if (spool.error) bits.push(spool.error);
    if (kind === 'memory' && spool.memory_max) {
      bits.push(t('storage.inMemory', Math.round(spool.memory_bytes / 1024),
        Math.round(spool.memory_max / 1024)));
    }
    if (spool.since_ms) bits.push(t('storage.since', fmtTime(spool.since_ms)));
    bits.push(t('storage.call'));
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

  // A notification was sent about an alarm: it goes to the history and
  // onto the card as a note; the alarm's state and who acted on it stay as
  // they were (its "by" is whom the message went to).
  function applyNotified(a) {
    const old = st.alarms.get(a.alarm_id);
    if (old) {
      const copy = Object.assign({}, old);
      copy.notified = { by: a.by || '', message: a.message || '', ts_ms: a.ts_ms };
      st.alarms.set(a.alarm_id, copy);
      render();
    }
    if (st.tab === 'history') prependHistory(a);
  }

  function applyTransition(a) {
    if (a.event === 'notified') {
      applyNotified(a);
      return;
    }
    const old = st.alarms.get(a.alarm_id);
    if (old && old.ts_ms > a.ts_ms) return; // an older copy (snapshot overlap)
    if (a.state === 'normal') st.alarms.delete(a.alarm_id);
    else {
      if (old && old.notified && since(old) === since(a)) a.notified = old.notified;
      st.alarms.set(a.alarm_id, a);
    }
    if (a.rule === 'spool-failed') loadStatus();
    render();
    maybeCue();
    if (st.tab === 'history') prependHistory(a);
  }

  // ---- the event stream -----------------------------------------------------

  function setLive(state) {
    const l = $('live');
    l.dataset.state = state;
    l.textContent = t(state === 'live' ? 'live.live'
      : state === 'reconnecting' ? 'live.reconnecting' : 'live.offline');
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
      toast(action === 'ack' ? t('toast.acked')
        : action === 'shelve' ? t('toast.shelved', dur(body.minutes * 60)) : t('toast.done'));
      // The stream brings the new state; without it, fetch the list.
      if ($('live').dataset.state !== 'live') loadAlarms();
    } catch (err) {
      toast(errText(err), true);
      if (err.status === 409 || err.status === 404) loadAlarms();
    } finally {
      for (const b of card.querySelectorAll('button')) b.disabled = false;
    }
  }

  async function loadAlarms() {
    try {
      applySnapshot(await api('GET', '/api/alarms'));
    } catch (err) {
      if (err.status !== 401) toast(t('err.loadAlarms', errText(err)), true);
    }
  }

  // ---- history ----------------------------------------------------------------

  function historyItem(a) {
    const li = el('li', 'prio-' + a.priority);
    li.dataset.alarmId = a.alarm_id;
    li.dataset.event = a.event;
    li.dataset.kind = kindOf(a);
    li.appendChild(el('span', 'time', fmtTime(a.ts_ms)));
    const what = el('span', 'what');
    what.appendChild(el('span', 'dot'));
    const kind = kindOf(a);
    const title = kind === 'other' ? '' : window.CarehubKinds.title(kind, st.lang) + ' \u00b7 ';
    const bits = [];
    if (a.event === 'notified') {
      // "已通知 张护士 10:32:05 · 企业微信 ok"; its by and message are the notification's
      let text = t('hist.notified', a.by || '', fmtTime(a.ts_ms));
      if (a.message) text += ' \u00b7 ' + a.message;
      what.append(text);
      bits.push(title + where(a));
      const person = residentText(a);
      if (person) bits.push(person);
    } else {
      what.append(tOr('event.', a.event) + ' \u2014 ' + title + where(a));
      bits.push(a.message || a.rule);
      const person = residentText(a);
      if (person) bits.push(person);
      if (a.event === 'escalate') bits.push(t('hist.level', a.escalation));
      if (a.event === 'ack' && a.acked_ms && a.raised_ms && a.acked_ms >= a.raised_ms)
        bits.push(t('card.ackTook', dur((a.acked_ms - a.raised_ms) / 1000)));
      if ((a.event === 'rtn' || a.event === 'clear') && a.cleared_ms && a.raised_ms &&
          a.cleared_ms >= a.raised_ms)
        bits.push(t('card.lasted', dur((a.cleared_ms - a.raised_ms) / 1000)));
      if (a.by) bits.push(t('hist.by', byName(a.by)));
    }
    li.appendChild(what);
    li.appendChild(el('span', 'detail', bits.join(' \u00b7 ')));
    return li;
  }

  function renderHistory() {
    const ol = $('history');
    ol.replaceChildren(...st.history.map(historyItem));
    $('history-empty').hidden = ol.children.length > 0;
  }

  function prependHistory(a) {
    st.history.unshift(a);
    const ol = $('history');
    ol.insertBefore(historyItem(a), ol.firstChild);
    $('history-empty').hidden = true;
  }

  async function loadHistory() {
    const hours = $('history-hours').value;
    try {
      const d = await api('GET', '/api/history?hours=' + encodeURIComponent(hours));
      if (typeof d.server_ms === 'number') st.offsetMs = d.server_ms - Date.now();
      st.history = (d.history || []).slice().reverse();
      renderHistory();
    } catch (err) {
      if (err.status !== 401) toast(t('err.loadHistory', errText(err)), true);
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
    st.history = [];
    st.spool = null;
    $('storage-banner').hidden = true;
    $('app-view').hidden = true;
    $('login-view').hidden = false;
    $('site-name').textContent = 'carehub';
    document.title = t('title', 'carehub');
    $('login-user').focus();
  }

  function showIdentity() {
    const me = st.me;
    $('site-name').textContent = nonEmpty(me.site_name)
      ? me.site_name
      : me.site ? me.site + (me.gateway ? ' / ' + me.gateway : '') : 'carehub';
    $('whoami').textContent = me.role === 'admin' ? t('whoami.admin', me.user) : me.user;
  }

  function showApp(me) {
    st.me = me;
    applyLang(chooseLang(me));
    $('login-view').hidden = true;
    $('app-view').hidden = false;
    showIdentity();
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
    st.loginErr = null;
    try {
      await api('POST', '/api/login', {
        user: $('login-user').value.trim(),
        password: $('login-password').value,
      });
      $('login-password').value = '';
      showApp(await api('GET', '/api/me'));
    } catch (err) {
      st.loginErr = err;
      $('login-error').textContent = errText(err, true);
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
    b.textContent = t(on ? 'sound.on' : 'sound.off');
    b.setAttribute('aria-pressed', String(on));
  }

  function init() {
    applyLang(chooseLang(null));
    for (const b of document.querySelectorAll('button[data-lang]')) {
      b.addEventListener('click', () => setLang(b.dataset.lang));
    }
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
