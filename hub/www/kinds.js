// What happened, for both consoles (care-hub's, served from its www
// directory, and care-edge's, which compiles this same file into its
// binary): the alarm kinds of alert.schema.json's "kind", an icon for each
// and its title in zh-CN and en. One file, so a fall looks the same on the
// nurse's phone at the gateway and on the operator's screen at the hub.
//
//   CarehubKinds.of(alarm)          the alarm's kind; unknown or absent: 'other'
//   CarehubKinds.title(kind, lang)  '跌倒' / 'Fall'
//   CarehubKinds.icon(kind)         an <svg class="kind-icon"> (aria-hidden)
'use strict';

window.CarehubKinds = (function () {
  const KINDS = ['sos', 'fall', 'call', 'wandering', 'bed_exit', 'vital_signs', 'inactivity',
    'device_battery', 'device_offline', 'air_quality', 'gas', 'smoke', 'temperature', 'gateway',
    'other'];

  const TITLES = {
    'zh-CN': {
      sos: '紧急呼叫',
      fall: '跌倒',
      call: '呼叫',
      wandering: '防走失',
      bed_exit: '离床',
      vital_signs: '生命体征异常',
      inactivity: '长时间未活动',
      device_battery: '电量低',
      device_offline: '设备离线',
      air_quality: '空气质量',
      gas: '燃气泄漏',
      smoke: '烟雾',
      temperature: '温度异常',
      gateway: '网关故障',
      other: '报警',
    },
    en: {
      sos: 'SOS call',
      fall: 'Fall',
      call: 'Nurse call',
      wandering: 'Wandering',
      bed_exit: 'Out of bed',
      vital_signs: 'Vital signs',
      inactivity: 'No movement',
      device_battery: 'Low battery',
      device_offline: 'Device offline',
      air_quality: 'Air quality',
      gas: 'Gas',
      smoke: 'Smoke',
      temperature: 'Temperature',
      gateway: 'Gateway fault',
      other: 'Alarm',
    },
  };

  // Kind icons: inline SVG paths on a 24x24 grid, drawn with currentColor
  // (no emoji or icon font: the gateway serves no fonts and a phone or a
  // headless browser may have none with these symbols).
  const CIRCLE = (cx, cy, r) =>
    'M' + (cx - r) + ' ' + cy + 'a' + r + ' ' + r + ' 0 1 0 ' + 2 * r + ' 0a' + r + ' ' + r +
    ' 0 1 0 ' + -2 * r + ' 0';
  const ICONS = {
    sos: [CIRCLE(12, 12, 9), 'M12 7v6', 'M12 16.5v.5'],
    fall: [CIRCLE(17, 5, 2), 'M15 9l-5 5', 'M10 14l-5 1', 'M10 14l1 4', 'M14 10l4 3', 'M3 21h18'],
    call: ['M6 17v-6a6 6 0 0 1 12 0v6', 'M4 17h16', 'M10 20h4', 'M12 3v2'],
    wandering: ['M4 3h9v18H4z', 'M10 12h.01', 'M15 12h6', 'M18 9l3 3-3 3'],
    bed_exit: ['M3 19V8', 'M3 15h18v4', 'M11 15v-4h7a3 3 0 0 1 3 3v1', CIRCLE(7, 12, 1.5),
      'M15 7V3', 'M13 5l2-2 2 2'],
    vital_signs: ['M2 12h4l2-5 4 10 2-5h8'],
    inactivity: [CIRCLE(12, 12, 9), 'M12 7v5l3 2'],
    device_battery: ['M3 8h15v8H3z', 'M21 11v2', 'M6 11v2'],
    device_offline: ['M2 9a15 15 0 0 1 20 0', 'M5 12.5a10 10 0 0 1 14 0', 'M8.5 16a5 5 0 0 1 7 0',
      'M12 19.5v.5', 'M3 3l18 18'],
    air_quality: ['M3 8h10a3 3 0 1 0-3-3', 'M3 12h15a3 3 0 1 1-3 3', 'M3 16h7'],
    gas: ['M12 3c3 4 6 6 6 11a6 6 0 0 1-12 0c0-3 2-5 3-7 1 2 2 3 3 3 0-3-1-5 0-7z'],
    smoke: ['M6 20c-2-3 2-4 0-7s2-4 0-7', 'M12 20c-2-3 2-4 0-7s2-4 0-7',
      'M18 20c-2-3 2-4 0-7s2-4 0-7'],
    temperature: ['M10 14V5a2 2 0 0 1 4 0v9a4 4 0 1 1-4 0z', 'M12 9v7'],
    gateway: ['M3 13h18v6H3z', 'M7 16h.01', 'M11 16h.01', 'M12 13V9', 'M8 6a6 6 0 0 1 8 0'],
    other: ['M12 3l10 18H2z', 'M12 10v5', 'M12 18v.5'],
  };

  const SVG_NS = 'http://www.w3.org/2000/svg';
  function icon(kind) {
    const svg = document.createElementNS(SVG_NS, 'svg');
    svg.setAttribute('viewBox', '0 0 24 24');
    svg.setAttribute('class', 'kind-icon');
    svg.setAttribute('aria-hidden', 'true');
    svg.setAttribute('focusable', 'false');
    for (const d of ICONS[kind] || ICONS.other) {
      const p = document.createElementNS(SVG_NS, 'path');
      p.setAttribute('d', d);
      svg.appendChild(p);
    }
    return svg;
  }

  const of = (a) => (a && KINDS.includes(a.kind) ? a.kind : 'other');
  // lang: 'zh-CN' or 'zh' (the hub console's code) for Chinese, else English
  const title = (kind, lang) =>
    (/^zh/i.test(lang || '') ? TITLES['zh-CN'] : TITLES.en)[KINDS.includes(kind) ? kind : 'other'];

  return { KINDS, of, title, icon };
})();
