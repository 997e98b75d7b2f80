// The central carehub console: plain JavaScript (ES2020), no framework,
// nothing external, nothing inline (the hub's CSP is default-src 'self').
//
// It talks only to the hub's HTTP API (hub/API.md). People sign in with a
// name and password (POST /api/v1/login): the hub then sets an HttpOnly
// session cookie, which this page never sees or stores, and every request
// goes with credentials 'same-origin'. Or, the secondary way, with an access
// token: then "Authorization: Bearer <token>", the token kept in
// sessionStorage, and no cookie sent.
//
// Live data: GET /api/v1/events is read with fetch() and a ReadableStream
// (EventSource cannot send the header). Every time the stream (re)connects,
// /api/v1/alarms/active and /api/v1/sites are fetched afresh; transitions
// that arrive while that fetch is in flight are applied again on top of it,
// newest updated_ms wins. A command (ack, shelve, unshelve) never changes an
// alarm's state here: the card says "sending…" until the gateway's transition
// comes back on the stream.
//
// Views (hash routes): #/alarms, #/sites, #/site/<id>, #/supervision, and for
// admins #/users.
//
// Hooks for browser tests (keep them stable):
//   login: #login-name, #password (the default), #use-token, #token (a filled
//     #token signs in with the token), #login, #login-error; #logout
//   nav: a[data-nav=alarms|sites|supervision|users]
//   users: tr.user-row[data-user][data-disabled] with .user-disable, .user-reset;
//     #user-add-form: #new-user-name, #new-user-display, #new-user-role,
//     #new-user-sites, #new-user-password, #user-add, #user-add-error
//   alarm board: .alarm-card[data-alarm-id][data-site][data-gateway][data-state][data-priority]
//     with .ack-btn, .shelve-btn (+ select.shelve-dur, seconds), .unshelve-btn,
//     data-pending="ack|shelve|unshelve" while a command waits for its transition
//   site grid: .site-tile[data-site][data-online=true|false]
//   supervision: .summary-card[data-site] with [data-figure=raised|acked|never_acked|
//     ack_p50_s|ack_p90_s|resolved_p50_s|clear_p50_s|online_pct|completeness_pct|by_priority.<p>]
//     (text holds the number as the hub gave it, data-value the raw value),
//     .export-btn[data-data=telemetry|alarms][data-format=csv|json]
//   #live[data-state=live|connecting], .toast, [data-lang=zh|en]
'use strict';

(() => {
  const API = '/api/v1';
  const TOKEN_KEY = 'carehub.token';
  const LANG_KEY = 'carehub.lang';
  const SOUND_KEY = 'carehub.sound';
  const PRIOS = ['high', 'medium', 'low'];
  const PRIO_RANK = { high: 3, medium: 2, low: 1 };
  const STATE_RANK = { unack: 0, rtn_unack: 1, acked: 2, shelved: 3, out_of_service: 4, oos: 4 };
  const COMMAND_ROLES = ['staff', 'operator', 'admin'];
  const SUPERVISION_ROLES = ['regulator', 'operator', 'admin'];
  const SHELVE_CHOICES = [900, 3600, 14400, 28800]; // 15 min, 1 h, 4 h, 8 h
  const PENDING_TIMEOUT_MS = 45000; // then "no answer from the gateway"
  const STREAM_IDLE_MS = 45000; // keepalives come every 15 s
  const HOUR = 3600e3;
  const DAY = 24 * HOUR;
  const RANGES = { '1h': HOUR, '6h': 6 * HOUR, '24h': DAY, '7d': 7 * DAY, '30d': 30 * DAY };
  const EVERY_S = { '1h': 15, '6h': 60, '24h': 300, '7d': 1800, '30d': 7200 }; // ~240-360 points per line
  const ENV_METRICS = ['co2', 'pm25', 'temperature', 'humidity'];
  // A site page's charts: its rooms' environment, then its residents' beds and
  // bracelets (a line per device: pseudonymous). key: the chart's id and i18n key.
  const CHARTS = [
    ...ENV_METRICS.map((metric) => ({ key: metric, meas: 'environment', metric, box: 'env-charts' })),
    { key: 'bed.hr', meas: 'bed', metric: 'hr', box: 'care-charts' },
    { key: 'bed.rr', meas: 'bed', metric: 'rr', box: 'care-charts' },
    { key: 'bed.in_bed', meas: 'bed', metric: 'in_bed', box: 'care-charts' },
    { key: 'wearable.hr', meas: 'wearable', metric: 'hr', box: 'care-charts' },
    { key: 'wearable.battery', meas: 'wearable', metric: 'battery', box: 'care-charts' },
    // where each bracelet was heard (its readings' room is the zone): a row per
    // bracelet, a band per zone over time
    { key: 'wearable.zone', meas: 'wearable', metric: 'zone', box: 'care-charts', timeline: true },
  ];
  // GB/T 18883-2022, the hub's defaults; the summary's own limits win when present.
  const DEFAULT_LIMITS = {
    co2: { min: null, max: 1000 },
    pm25: { min: null, max: 50 },
    temperature: { min: 16, max: 28 },
    humidity: { min: 30, max: 80 },
  };
  const UNITS = { co2: 'ppm', pm25: 'µg/m³', temperature: '°C', humidity: '%',
    'bed.hr': 'bpm', 'bed.rr': '/min', 'wearable.hr': 'bpm', 'wearable.battery': '%' };
  const LINE_COLOURS = ['#66bb6a', '#ba68c8', '#4dd0e1', '#f06292', '#d4e157', '#9575cd',
    '#a1887f', '#4db6ac', '#ff8a65', '#e0e0e0', '#81c784', '#7986cb'];

  // ===========================================================================
  // Dictionary
  // ===========================================================================

  const DICT = {
    zh: {
      'app.sub': '照护数据中心',
      'a11y.skip': '跳到主要内容',
      'nav.label': '主导航',
      'nav.alarms': '报警',
      'nav.sites': '机构',
      'nav.supervision': '监管',
      'lang.label': '语言',
      'live.live': '实时',
      'live.connecting': '重新连接中…',
      'logout': '退出',
      'login.title': '登录',
      'login.hint': '请粘贴管理员发给您的访问令牌。令牌只保存在当前标签页中，关闭后即清除。',
      'login.token': '访问令牌',
      'login.submit': '登录',
      'login.empty': '请输入访问令牌',
      'login.bad': '访问令牌无效或已停用',
      'login.expired': '登录已失效，请重新输入访问令牌',
      'login.hint_user': '请输入您的用户名和密码。',
      'login.name': '用户名',
      'login.password': '密码',
      'login.use_token': '使用访问令牌登录',
      'login.use_password': '使用用户名和密码登录',
      'login.empty_user': '请输入用户名和密码',
      'login.bad_user': '用户名或密码错误',
      'login.throttled': '登录失败次数过多，请 {0} 秒后再试',
      'login.expired_user': '登录已失效，请重新登录',
      'nav.users': '用户',
      'users.title': '用户',
      'users.summary': '共 {0} 个用户',
      'users.none': '还没有用户',
      'users.name': '用户名',
      'users.display': '显示名称',
      'users.role': '角色',
      'users.scope': '机构',
      'users.state': '状态',
      'users.actions': '操作',
      'users.active': '正常',
      'users.disabled': '已停用',
      'users.all_sites': '全部机构',
      'users.district': '辖区 {0}',
      'users.disable': '停用',
      'users.enable': '启用',
      'users.reset': '重置密码',
      'users.reset_prompt': '为 {0} 设置新密码（至少 10 个字符）：',
      'users.reset_done': '已为 {0} 重置密码',
      'users.add_title': '添加用户',
      'users.sites_input': '机构（用逗号分隔，* 表示全部）',
      'users.initial_password': '初始密码（至少 10 个字符）',
      'users.add': '添加',
      'users.added': '已添加用户 {0}',
      'users.saved': '已保存 {0}',
      'users.need_fields': '请填写用户名、机构和至少 10 个字符的初始密码',
      'role.staff': '护理人员',
      'role.operator': '运营方',
      'role.regulator': '监管部门',
      'role.admin': '管理员',
      'prio.high': '高',
      'prio.medium': '中',
      'prio.low': '低',
      'prio.high.long': '高优先级',
      'prio.medium.long': '中优先级',
      'prio.low.long': '低优先级',
      'state.unack': '未确认',
      'state.acked': '已确认',
      'state.rtn_unack': '已恢复，未确认',
      'state.shelved': '已搁置',
      'state.out_of_service': '停用',
      'state.oos': '停用',
      'state.normal': '已恢复',
      'alarms.title': '实时报警',
      'alarms.siteFilter': '机构',
      'alarms.allSites': '全部机构',
      'alarms.empty': '当前没有活动报警',
      'alarms.loading': '正在加载报警…',
      'alarms.readOnly': '只读视图：监管账号不能确认或搁置报警。',
      'alarms.ack': '确认',
      'alarms.shelve': '搁置',
      'alarms.unshelve': '取消搁置',
      'alarms.shelveFor': '搁置时长',
      'alarms.sending': '发送中…',
      'alarms.noAnswer': '网关尚未回应，请在现场查看',
      'alarms.room': '{0}房',
      'alarms.bed': '{0}床',
      'alarms.resident': '住户 {0}',
      'alarms.raisedAt': '发生于 {0}',
      'alarms.lastSeen': '最后位置 {0} · {1}',
      'alarms.notified': '已通知 {0} · {1} · {2}',
      'alarms.ackedBy': '确认人 {0}',
      'alarms.shelvedUntil': '搁置至 {0}',
      'alarms.escalated': '已升级 ×{0}',
      'alarms.gwOffline': '网关离线',
      'alarms.new': '新报警：{0}',
      'alarms.newHigh': '新的高优先级报警：{0}',
      'sound.on': '提示音：开',
      'sound.off': '提示音：关',
      'ago.now': '刚刚',
      'ago': '{0}前',
      'sites.title': '机构概况',
      'sites.search': '搜索机构编号',
      'sites.summary': '{0} 个机构 · {1} 个在线 · {2} 个离线',
      'sites.online': '在线',
      'sites.offline': '离线',
      'sites.lastSeen': '最后上报',
      'sites.devices': '设备在线',
      'sites.version': '软件版本',
      'sites.gateways': '网关',
      'sites.alarms': '活动报警',
      'sites.noAlarms': '无活动报警',
      'sites.empty': '您的授权范围内没有机构',
      'sites.noMatch': '没有匹配的机构',
      'sites.never': '从未',
      'site.back': '← 全部机构',
      'site.env': '室内环境',
      'site.range': '时间范围',
      'site.limit': '限值 {0}',
      'site.noData': '此时段没有数据',
      'site.care': '住户（床垫与手环）',
      'chart.bed.hr': '心率 · 床垫',
      'chart.bed.rr': '呼吸率 · 床垫',
      'chart.bed.in_bed': '在床（0–1）',
      'chart.wearable.hr': '心率 · 手环',
      'chart.wearable.battery': '手环电量',
      'chart.wearable.zone': '位置轨迹',
      'site.timelineLabel': '位置轨迹：{0} 个手环，{1} 个区域，{2}',
      'range.1h': '1小时',
      'range.6h': '6小时',
      'site.response': '报警响应时间',
      'site.responseHint': '每个报警从发生到确认的用时，虚线为中位数',
      'site.median': '中位数 {0}',
      'site.neverAcked': '{0} 个报警从未确认',
      'site.noAcks': '此时段没有已确认的报警',
      'site.history': '报警记录',
      'site.noHistory': '此时段没有报警',
      'site.showMore': '显示更多（还有 {0} 条）',
      'site.viewAlarms': '在报警页查看',
      'site.chartLabel': '{0}，{1} 个房间，{2}',
      'range.24h': '24小时',
      'range.7d': '7天',
      'range.30d': '30天',
      'col.raised': '发生时间',
      'col.priority': '优先级',
      'col.where': '位置',
      'col.resident': '住户',
      'col.message': '内容',
      'col.state': '状态',
      'col.ack': '确认用时',
      'col.by': '确认人',
      'col.cleared': '情况持续',
      'col.resolved': '处理完毕用时',
      'metric.co2': 'CO₂',
      'metric.pm25': 'PM2.5',
      'metric.temperature': '温度',
      'metric.humidity': '相对湿度',
      'sup.title': '监管数据',
      'sup.range': '统计区间',
      'sup.7d': '近7天',
      'sup.30d': '近30天',
      'sup.custom': '自定义',
      'sup.from': '开始日期',
      'sup.to': '结束日期',
      'sup.apply': '查询',
      'sup.badRange': '日期区间无效（开始须早于结束，最长400天）',
      'sup.period': '统计区间：{0} — {1}',
      'sup.overview.sites': '机构',
      'sup.overview.raised': '报警总数',
      'sup.overview.never': '从未确认的报警',
      'sup.overview.lowCompliance': '环境达标率低于95%的机构',
      'sup.alarms': '报警',
      'sup.raised': '报警数',
      'sup.acked': '已确认',
      'sup.neverAcked': '从未确认',
      'sup.ackP50': '确认用时中位数',
      'sup.ackP90': '确认用时P90',
      'sup.clearP50': '情况持续中位数',
      'sup.clearP50.def': '从报警到触发条件结束（如CO2回落、SOS拉绳松开）；报警可能仍未处理',
      'sup.resolvedP50': '处理完毕用时中位数',
      'sup.resolvedP50.def': '从报警到报警结束：已确认且条件已结束',
      'sup.ackP50.def': '从报警到有人确认',
      'sup.env': '环境达标率',
      'sup.noEnv': '没有环境数据',
      'sup.devices': '设备在线率',
      'sup.completeness': '数据完整率',
      'sup.received': '收到 {0} / 应收 {1}',
      'sup.samples': '{0} 个样本',
      'sup.room': '房间',
      'sup.deviceCount': '{0} 台设备',
      'sup.export': '导出',
      'sup.telemetry': '监测数据',
      'sup.alarmsData': '报警记录',
      'sup.exporting': '正在导出…',
      'sup.exported': '已下载 {0}',
      'sup.loading': '加载中…',
      'sup.none': '您的授权范围内没有机构',
      'common.retry': '重试',
      'common.close': '关闭',
      'common.none': '—',
      'err.401': '访问令牌无效或已过期',
      'err.403': '无权查看：不在您的授权范围内',
      'err.404': '未找到',
      'err.409': '网关离线——请在现场确认',
      'err.413': '请求过大',
      'err.429': '请求过于频繁，请稍候再试',
      'err.500': '服务器内部错误',
      'err.503': '数据库暂不可用，请稍后再试',
      'err.network': '无法连接服务器',
      'err.generic': '请求失败（{0}）',
      'unit.d': '天',
      'unit.h': '小时',
      'unit.m': '分',
      'unit.s': '秒',
    },
    en: {
      'app.sub': 'Care data hub',
      'a11y.skip': 'Skip to content',
      'nav.label': 'Main',
      'nav.alarms': 'Alarms',
      'nav.sites': 'Sites',
      'nav.supervision': 'Supervision',
      'lang.label': 'Language',
      'live.live': 'Live',
      'live.connecting': 'Reconnecting…',
      'logout': 'Sign out',
      'login.title': 'Sign in',
      'login.hint': 'Paste the access token you were given. It is kept in this browser tab only and forgotten when the tab closes.',
      'login.token': 'Access token',
      'login.submit': 'Sign in',
      'login.empty': 'Enter an access token',
      'login.bad': 'This access token is not valid or has been revoked',
      'login.expired': 'Your session has ended. Enter the access token again.',
      'login.hint_user': 'Enter your name and password.',
      'login.name': 'Name',
      'login.password': 'Password',
      'login.use_token': 'Use an access token',
      'login.use_password': 'Use a name and password',
      'login.empty_user': 'Enter your name and password',
      'login.bad_user': 'Wrong name or password',
      'login.throttled': 'Too many failed attempts. Try again in {0} s.',
      'login.expired_user': 'Your session has ended. Please sign in again.',
      'nav.users': 'Users',
      'users.title': 'Users',
      'users.summary': '{0} users',
      'users.none': 'No users yet',
      'users.name': 'Name',
      'users.display': 'Display name',
      'users.role': 'Role',
      'users.scope': 'Sites',
      'users.state': 'State',
      'users.actions': 'Actions',
      'users.active': 'Active',
      'users.disabled': 'Disabled',
      'users.all_sites': 'All sites',
      'users.district': 'District {0}',
      'users.disable': 'Disable',
      'users.enable': 'Enable',
      'users.reset': 'Reset password',
      'users.reset_prompt': 'New password for {0} (at least 10 characters):',
      'users.reset_done': 'Password of {0} reset',
      'users.add_title': 'Add a user',
      'users.sites_input': 'Sites (comma separated, * for all)',
      'users.initial_password': 'Initial password (at least 10 characters)',
      'users.add': 'Add',
      'users.added': 'User {0} added',
      'users.saved': '{0} saved',
      'users.need_fields': 'Give a name, sites and an initial password of at least 10 characters',
      'role.staff': 'Staff',
      'role.operator': 'Operator',
      'role.regulator': 'Regulator',
      'role.admin': 'Administrator',
      'prio.high': 'High',
      'prio.medium': 'Medium',
      'prio.low': 'Low',
      'prio.high.long': 'High priority',
      'prio.medium.long': 'Medium priority',
      'prio.low.long': 'Low priority',
      'state.unack': 'Not acknowledged',
      'state.acked': 'Acknowledged',
      'state.rtn_unack': 'Cleared, not acknowledged',
      'state.shelved': 'Shelved',
      'state.out_of_service': 'Out of service',
      'state.oos': 'Out of service',
      'state.normal': 'Normal',
      'alarms.title': 'Active alarms',
      'alarms.siteFilter': 'Site',
      'alarms.allSites': 'All sites',
      'alarms.empty': 'No active alarms',
      'alarms.loading': 'Loading alarms…',
      'alarms.readOnly': 'Read-only: regulator accounts cannot acknowledge or shelve alarms.',
      'alarms.ack': 'Acknowledge',
      'alarms.shelve': 'Shelve',
      'alarms.unshelve': 'Unshelve',
      'alarms.shelveFor': 'Shelve for',
      'alarms.sending': 'Sending…',
      'alarms.noAnswer': 'No answer from the gateway yet — check on site',
      'alarms.room': 'Room {0}',
      'alarms.bed': 'Bed {0}',
      'alarms.resident': 'Resident {0}',
      'alarms.raisedAt': 'Raised {0}',
      'alarms.lastSeen': 'Last seen at {0} · {1}',
      'alarms.notified': 'Notified {0} · {1} · {2}',
      'alarms.ackedBy': 'Acknowledged by {0}',
      'alarms.shelvedUntil': 'Shelved until {0}',
      'alarms.escalated': 'Escalated ×{0}',
      'alarms.gwOffline': 'Gateway offline',
      'alarms.new': 'New alarm: {0}',
      'alarms.newHigh': 'New high-priority alarm: {0}',
      'sound.on': 'Sound: on',
      'sound.off': 'Sound: off',
      'ago.now': 'just now',
      'ago': '{0} ago',
      'sites.title': 'Sites',
      'sites.search': 'Search site ids',
      'sites.summary': '{0} sites · {1} online · {2} offline',
      'sites.online': 'Online',
      'sites.offline': 'Offline',
      'sites.lastSeen': 'Last seen',
      'sites.devices': 'Devices online',
      'sites.version': 'Version',
      'sites.gateways': 'Gateways',
      'sites.alarms': 'Active alarms',
      'sites.noAlarms': 'No active alarms',
      'sites.empty': 'No sites in your scope',
      'sites.noMatch': 'No site matches',
      'sites.never': 'never',
      'site.back': '← All sites',
      'site.env': 'Indoor environment',
      'site.range': 'Period',
      'site.limit': 'limit {0}',
      'site.noData': 'No data in this period',
      'site.care': 'Residents (beds and bracelets)',
      'chart.bed.hr': 'Heart rate · bed',
      'chart.bed.rr': 'Breathing rate · bed',
      'chart.bed.in_bed': 'In bed (0–1)',
      'chart.wearable.hr': 'Heart rate · bracelet',
      'chart.wearable.battery': 'Bracelet battery',
      'chart.wearable.zone': 'Zone timeline',
      'site.timelineLabel': 'Zone timeline: {0} bracelets, {1} zones, {2}',
      'range.1h': '1 hour',
      'range.6h': '6 hours',
      'site.response': 'Alarm response times',
      'site.responseHint': 'Time from raised to acknowledged, per alarm; dashed line: median',
      'site.median': 'median {0}',
      'site.neverAcked': 'Never acknowledged: {0}',
      'site.noAcks': 'No acknowledged alarms in this period',
      'site.history': 'Alarm history',
      'site.noHistory': 'No alarms in this period',
      'site.showMore': 'Show more ({0} left)',
      'site.viewAlarms': 'Show on the alarm board',
      'site.chartLabel': '{0}, {1} rooms, {2}',
      'range.24h': '24 h',
      'range.7d': '7 days',
      'range.30d': '30 days',
      'col.raised': 'Raised',
      'col.priority': 'Priority',
      'col.where': 'Where',
      'col.resident': 'Resident',
      'col.message': 'Message',
      'col.state': 'State',
      'col.ack': 'Time to ack',
      'col.by': 'Acknowledged by',
      'col.cleared': 'Condition lasted',
      'col.resolved': 'Time to resolve',
      'metric.co2': 'CO₂',
      'metric.pm25': 'PM2.5',
      'metric.temperature': 'Temperature',
      'metric.humidity': 'Humidity',
      'sup.title': 'Supervision',
      'sup.range': 'Period',
      'sup.7d': 'Last 7 days',
      'sup.30d': 'Last 30 days',
      'sup.custom': 'Custom',
      'sup.from': 'From',
      'sup.to': 'To',
      'sup.apply': 'Apply',
      'sup.badRange': 'Invalid period (start before end, at most 400 days)',
      'sup.period': 'Period: {0} — {1}',
      'sup.overview.sites': 'Sites',
      'sup.overview.raised': 'Alarms raised',
      'sup.overview.never': 'Never acknowledged',
      'sup.overview.lowCompliance': 'Sites below 95 % compliance',
      'sup.alarms': 'Alarms',
      'sup.raised': 'Raised',
      'sup.acked': 'Acknowledged',
      'sup.neverAcked': 'Never acknowledged',
      'sup.ackP50': 'Median time to acknowledge',
      'sup.ackP90': '90th percentile',
      'sup.clearP50': 'Median time the condition lasted',
      'sup.clearP50.def': 'From the raise to the end of its condition (CO2 back under the limit, an SOS cord released); the alarm may still be unattended',
      'sup.resolvedP50': 'Median time to resolve',
      'sup.resolvedP50.def': 'From the raise to the alarm\'s end: acknowledged and its condition over',
      'sup.ackP50.def': 'From the raise to its acknowledgement',
      'sup.env': 'Environmental compliance',
      'sup.noEnv': 'No environment data',
      'sup.devices': 'Device online rate',
      'sup.completeness': 'Data completeness',
      'sup.received': '{0} of {1} received',
      'sup.samples': '{0} samples',
      'sup.room': 'Room',
      'sup.deviceCount': '{0} devices',
      'sup.export': 'Export',
      'sup.telemetry': 'Telemetry',
      'sup.alarmsData': 'Alarms',
      'sup.exporting': 'Exporting…',
      'sup.exported': 'Downloaded {0}',
      'sup.loading': 'Loading…',
      'sup.none': 'No sites in your scope',
      'common.retry': 'Retry',
      'common.close': 'Close',
      'common.none': '—',
      'err.401': 'Access token not valid or expired',
      'err.403': 'Not allowed: outside your scope',
      'err.404': 'Not found',
      'err.409': 'Gateway offline — acknowledge on site',
      'err.413': 'Request too large',
      'err.429': 'Too many requests — please wait a moment',
      'err.500': 'Internal server error',
      'err.503': 'Database unavailable — try again shortly',
      'err.network': 'Cannot reach the server',
      'err.generic': 'Request failed ({0})',
      'unit.d': 'd',
      'unit.h': 'h',
      'unit.m': 'min',
      'unit.s': 's',
    },
  };

  // ===========================================================================
  // State
  // ===========================================================================

  const st = {
    lang: 'en',
    token: null,
    me: null,
    view: null,
    offsetMs: 0, // hub clock - this browser's clock (from the Date header)
    sites: new Map(), // site id -> site object
    sitesLoaded: false,
    sitesError: null,
    alarms: new Map(), // site/gateway/alarm_id -> alarm object
    activeLoaded: false,
    activeError: null,
    activeSeq: 0,
    buffered: null, // transitions received while /alarms/active is in flight
    seenRaise: new Set(), // occurrences already announced
    pending: new Map(), // alarm key -> {action, timer, answered}
    cards: new Map(), // alarm key -> element
    notes: new Map(), // alarm key -> its latest "notified" transition (who was told)
    siteFilter: '',
    siteSearch: '',
    soundOn: localStorage.getItem(SOUND_KEY) !== 'off',
    audio: null,
    stream: { gen: 0, ctrl: null, backoff: 0, idle: null, wake: null },
    page: null, // the site page's state
    sup: { range: '7d', from: 0, to: 0, results: new Map(), gen: 0 },
  };

  const now = () => Date.now() + st.offsetMs;
  const $ = (id) => document.getElementById(id);

  // ===========================================================================
  // Small helpers
  // ===========================================================================

  // Elements without innerHTML: text is always text.
  function h(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    setAttrs(e, attrs);
    append(e, kids);
    return e;
  }

  const SVG_NS = 'http://www.w3.org/2000/svg';
  function s(tag, attrs, ...kids) {
    const e = document.createElementNS(SVG_NS, tag);
    setAttrs(e, attrs);
    append(e, kids);
    return e;
  }

  function setAttrs(e, attrs) {
    if (!attrs) return;
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') e.setAttribute('class', v);
      else if (k === 'text') e.textContent = String(v);
      else if (k === 'dataset') for (const [dk, dv] of Object.entries(v)) e.dataset[dk] = String(dv);
      else if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
  }

  // replaceChildren() that skips null and false like h() does.
  function put(e, ...kids) {
    e.replaceChildren();
    append(e, kids);
  }

  function append(e, kids) {
    for (const k of kids.flat(4)) {
      if (k === null || k === undefined || k === false) continue;
      e.append(k instanceof Node ? k : String(k));
    }
  }

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
  const isNum = (v) => typeof v === 'number' && Number.isFinite(v);

  function t(key, ...args) {
    const d = DICT[st.lang] || DICT.en;
    let s0 = d[key];
    if (s0 === undefined) s0 = DICT.en[key];
    if (s0 === undefined) return key;
    return s0.replace(/\{(\d)\}/g, (m, i) => (args[i] === undefined ? m : String(args[i])));
  }

  const locale = () => (st.lang === 'zh' ? 'zh-CN' : 'en-GB');

  function fmtInt(n) {
    return isNum(n) ? Math.round(n).toLocaleString(locale()) : t('common.none');
  }

  // A figure as the hub gave it, with at least one decimal (42 -> "42.0",
  // 118.25 -> "118.25"): the text always contains the number.
  function fmtFigure(v) {
    if (!isNum(v)) return t('common.none');
    if (Number.isInteger(v)) return v.toFixed(1);
    return String(Math.round(v * 100) / 100);
  }

  function fmtPct(v) {
    return isNum(v) ? String(Math.round(v * 100) / 100) + ' %' : t('common.none');
  }

  function fmtValue(metric, v) {
    if (!isNum(v)) return t('common.none');
    if (Math.abs(v) >= 100 || metric === 'co2') return String(Math.round(v));
    return String(Math.round(v * 10) / 10);
  }

  // "3 min 20 s" / "3分20秒"; two units at most.
  function dur(sec) {
    if (!isNum(sec)) return t('common.none');
    sec = Math.max(0, Math.round(sec));
    const d = Math.floor(sec / 86400);
    const hh = Math.floor((sec % 86400) / 3600);
    const m = Math.floor((sec % 3600) / 60);
    const ss = sec % 60;
    let parts;
    if (d) parts = [[d, 'd'], [hh, 'h']];
    else if (hh) parts = [[hh, 'h'], [m, 'm']];
    else if (m) parts = [[m, 'm'], [ss, 's']];
    else parts = [[ss, 's']];
    if (parts.length > 1 && parts[1][0] === 0) parts.pop();
    const zh = st.lang === 'zh';
    return parts.map(([n, u]) => (zh ? n + t('unit.' + u) : n + ' ' + t('unit.' + u))).join(zh ? '' : ' ');
  }

  // Short axis labels: 45s, 2m30s, 2h, 1d12h.
  function shortDur(sec) {
    const zh = st.lang === 'zh';
    const u = zh ? { d: '天', h: '时', m: '分', s: '秒' } : { d: 'd', h: 'h', m: 'm', s: 's' };
    sec = Math.round(sec);
    const two = (a, ua, b, ub) => a + ua + (b ? b + ub : '');
    if (sec < 60) return sec + u.s;
    if (sec < 3600) return two(Math.floor(sec / 60), u.m, sec % 60, u.s);
    if (sec < 86400) return two(Math.floor(sec / 3600), u.h, Math.floor((sec % 3600) / 60), u.m);
    return two(Math.floor(sec / 86400), u.d, Math.floor((sec % 86400) / 3600), u.h);
  }

  function ago(ms) {
    if (!isNum(ms)) return t('sites.never');
    const sec = (now() - ms) / 1000;
    if (sec < 5) return t('ago.now');
    return t('ago', dur(sec));
  }

  // Hub times (absolute instants) shown in this browser's local time zone;
  // the clock offset only matters for "how long ago".
  function fmtTime(ms, withSeconds) {
    if (!isNum(ms)) return t('common.none');
    const d = new Date(ms);
    const today = new Date();
    const sameDay = d.toDateString() === today.toDateString();
    const opts = { hour: '2-digit', minute: '2-digit', hour12: false };
    if (withSeconds) opts.second = '2-digit';
    if (!sameDay) {
      opts.month = '2-digit';
      opts.day = '2-digit';
      if (d.getFullYear() !== today.getFullYear()) opts.year = 'numeric';
    }
    return d.toLocaleString(locale(), opts);
  }

  function prioLabel(p) {
    return t('prio.' + p);
  }

  function stateLabel(s0) {
    return DICT.en['state.' + s0] ? t('state.' + s0) : s0;
  }

  // Where a carer must go: the room's (or a wearable's zone's) display name,
  // else its id as "Room 101"; then the bed's, unless the resident was
  // located elsewhere (a wearable's zone). A name is shown as written.
  function where(a) {
    const parts = [];
    if (a.room_name) parts.push(a.room_name);
    else if (a.room) parts.push(t('alarms.room', a.room));
    const bed = a.located_ms ? '' : a.bed_name || (a.bed ? t('alarms.bed', a.bed) : '');
    if (bed) parts.push(bed);
    if (!parts.length) parts.push(a.device_name || a.device || a.alarm_id);
    return parts.join(' · ');
  }

  // Who: the resident's label for staff, else the pseudonym; else the device.
  function who(a) {
    if (a.resident_name) return a.resident_name;
    if (a.resident) return t('alarms.resident', a.resident);
    return a.device_name || '';
  }

  const alarmKey = (a) => a.site + '/' + (a.gateway || '') + '/' + a.alarm_id;
  const canCommand = () => !!st.me && COMMAND_ROLES.includes(st.me.role);
  const canSupervise = () => !!st.me && SUPERVISION_ROLES.includes(st.me.role);
  const canManageUsers = () => !!st.me && st.me.role === 'admin';

  // ===========================================================================
  // API
  // ===========================================================================

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message || code || String(status));
      this.status = status;
      this.code = code;
    }
  }

  // A token goes in the header; a session is the browser's cookie.
  function authHeaders(extra) {
    return Object.assign(st.token ? { Authorization: 'Bearer ' + st.token } : {}, extra || {});
  }
  const credentials = () => (st.token ? 'omit' : 'same-origin');
  const signedIn = () => !!st.token || st.auth === 'cookie';

  function noteServerTime(res) {
    const d = Date.parse(res.headers.get('Date') || '');
    if (!isNum(d)) return;
    const off = d - Date.now();
    // The header has one-second resolution: only a clearly wrong clock matters.
    st.offsetMs = Math.abs(off) > 5000 ? off : 0;
  }

  // GET or POST one API path. 429 is retried after Retry-After; 401 ends the
  // session (except for the login probe). Returns the parsed JSON body, or the
  // Response itself with raw.
  async function api(path, opts = {}) {
    const { method = 'GET', body, signal, raw = false, login = false } = opts;
    const headers = authHeaders({ Accept: raw ? '*/*' : 'application/json' });
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    for (let attempt = 0; ; attempt++) {
      let res;
      try {
        res = await fetch(API + path, {
          method,
          headers,
          body: body === undefined ? undefined : JSON.stringify(body),
          signal,
          cache: 'no-store',
          credentials: credentials(),
        });
      } catch (e) {
        if (e && e.name === 'AbortError') throw e;
        throw new ApiError(0, 'network', t('err.network'));
      }
      noteServerTime(res);
      if (res.status === 429 && attempt < 4) {
        const ra = parseFloat(res.headers.get('Retry-After') || '');
        await sleep(clamp(isNum(ra) ? ra : 1, 0.5, 20) * 1000);
        continue;
      }
      if (res.ok) {
        if (raw) return res;
        if (res.status === 204) return null;
        try {
          return await res.json();
        } catch (e) {
          throw new ApiError(res.status, 'bad_json', 'invalid JSON from the hub');
        }
      }
      let data = null;
      try { data = await res.json(); } catch (e) { /* not JSON */ }
      const err = new ApiError(res.status, (data && data.error) || '', (data && data.message) || res.statusText);
      if (res.status === 401 && !login) sessionEnded();
      throw err;
    }
  }

  // Runs at most n of the given async jobs at a time (the token's rate limit
  // is a few requests per second).
  function limiter(n) {
    let running = 0;
    const queue = [];
    const next = () => {
      if (running >= n || !queue.length) return;
      running++;
      const { fn, resolve, reject } = queue.shift();
      fn().then(resolve, reject).finally(() => {
        running--;
        next();
      });
    };
    return (fn) => new Promise((resolve, reject) => {
      queue.push({ fn, resolve, reject });
      next();
    });
  }
  const summaryQueue = limiter(3);

  function errText(err) {
    if (!err) return '';
    if (err.status === 0) return t('err.network');
    const known = { 401: 1, 403: 1, 404: 1, 409: 1, 413: 1, 429: 1, 500: 1, 503: 1 };
    let msg = known[err.status] ? t('err.' + err.status) : t('err.generic', err.status);
    if (err.status === 400 || (!known[err.status] && err.message)) msg += ': ' + err.message;
    return msg;
  }

  // ===========================================================================
  // Toasts, announcements, sound
  // ===========================================================================

  function toast(msg, kind) {
    const box = $('toasts');
    const el = h('div', { class: 'toast' + (kind ? ' ' + kind : ''), role: kind === 'bad' ? 'alert' : 'status' },
      h('span', { class: 'toast-text', text: msg }),
      h('button', { type: 'button', class: 'toast-close', 'aria-label': t('common.close') }));
    el.dataset.kind = kind || 'info';
    const close = () => el.remove();
    el.querySelector('.toast-close').addEventListener('click', close);
    box.append(el);
    while (box.children.length > 4) box.firstElementChild.remove();
    setTimeout(close, kind === 'bad' ? 8000 : 4000);
  }

  function announce(msg) {
    const a = $('announcer');
    a.textContent = '';
    setTimeout(() => { a.textContent = msg; }, 50);
  }

  function unlockAudio() {
    if (st.audio || !(window.AudioContext || window.webkitAudioContext)) return;
    try {
      st.audio = new (window.AudioContext || window.webkitAudioContext)();
    } catch (e) {
      st.audio = null;
    }
  }

  // IEC 60601-1-8 style high-priority burst (3 + 2 pulses), and a vibration.
  function cue() {
    if (!st.soundOn) return;
    if (navigator.vibrate) {
      try { navigator.vibrate([300, 120, 300, 120, 300, 400, 300, 120, 300]); } catch (e) { /* not allowed */ }
    }
    if (!st.audio) return;
    if (st.audio.state === 'suspended') st.audio.resume().catch(() => {});
    const t0 = st.audio.currentTime + 0.05;
    for (const off of [0, 0.25, 0.5, 1.25, 1.5]) {
      const o = st.audio.createOscillator();
      const g = st.audio.createGain();
      o.type = 'square';
      o.frequency.value = 880;
      g.gain.setValueAtTime(0.0001, t0 + off);
      g.gain.exponentialRampToValueAtTime(0.2, t0 + off + 0.02);
      g.gain.setValueAtTime(0.2, t0 + off + 0.14);
      g.gain.exponentialRampToValueAtTime(0.0001, t0 + off + 0.18);
      o.connect(g).connect(st.audio.destination);
      o.start(t0 + off);
      o.stop(t0 + off + 0.2);
    }
  }

  function renderSoundButton() {
    const b = $('sound');
    b.hidden = !canCommand();
    b.textContent = st.soundOn ? t('sound.on') : t('sound.off');
    b.setAttribute('aria-pressed', String(st.soundOn));
  }

  // ===========================================================================
  // Language
  // ===========================================================================

  function initialLang() {
    const saved = localStorage.getItem(LANG_KEY);
    if (saved === 'zh' || saved === 'en') return saved;
    const nav = (navigator.languages && navigator.languages[0]) || navigator.language || '';
    return /^zh/i.test(nav) ? 'zh' : 'en';
  }

  function applyStaticLabels() {
    document.documentElement.lang = st.lang === 'zh' ? 'zh-CN' : 'en';
    for (const e of document.querySelectorAll('[data-i18n]')) e.textContent = t(e.dataset.i18n);
    for (const e of document.querySelectorAll('[data-i18n-attr]')) {
      for (const pair of e.dataset.i18nAttr.split(',')) {
        const [attr, key] = pair.split(':');
        e.setAttribute(attr.trim(), t(key.trim()));
      }
    }
    for (const b of document.querySelectorAll('[data-lang]')) {
      b.setAttribute('aria-pressed', String(b.dataset.lang === st.lang));
    }
  }

  function setLang(lang) {
    st.lang = lang;
    localStorage.setItem(LANG_KEY, lang);
    applyStaticLabels();
    setLive($('live').dataset.state);
    if (st.me) {
      renderUser();
      renderSoundButton();
      st.cards.forEach((c) => { c._sig = ''; });
      renderView();
    }
  }

  // ===========================================================================
  // Session
  // ===========================================================================

  function renderUser() {
    $('user-name').textContent = st.me.display || st.me.name || '';
    $('user-role').textContent = t('role.' + st.me.role) === 'role.' + st.me.role ? st.me.role : t('role.' + st.me.role);
    $('user-role').dataset.role = st.me.role;
  }

  function homeView() {
    return st.me && st.me.role === 'regulator' ? 'supervision' : 'alarms';
  }

  function showLoginView(message) {
    $('nav').hidden = true;
    $('user').hidden = true;
    $('logout').hidden = true;
    $('live').hidden = true;
    for (const v of document.querySelectorAll('.view')) v.hidden = v.id !== 'view-login';
    $('login-error').textContent = message || '';
    document.title = 'carehub';
    setTimeout(() => (st.loginWithToken ? $('token') : $('login-name')).focus(), 0);
  }

  // The login form's two ways: name and password (the default), or a token.
  function setLoginWay(withToken) {
    st.loginWithToken = withToken;
    $('password-box').hidden = withToken;
    $('token-box').hidden = !withToken;
    $('use-token').dataset.i18n = withToken ? 'login.use_password' : 'login.use_token';
    $('use-token').textContent = t($('use-token').dataset.i18n);
    $('login-hint').dataset.i18n = withToken ? 'login.hint' : 'login.hint_user';
    $('login-hint').textContent = t($('login-hint').dataset.i18n);
    $('login-error').textContent = '';
  }

  async function onPasswordLogin() {
    const name = $('login-name').value.trim();
    const password = $('password').value;
    if (!name || !password) {
      $('login-error').textContent = t('login.empty_user');
      return;
    }
    const btn = $('login');
    btn.disabled = true;
    $('login-error').textContent = '';
    try {
      const res = await fetch(API + '/login', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify({ name, password }),
        cache: 'no-store',
        credentials: 'same-origin',
      });
      noteServerTime(res);
      if (res.status === 429) {
        const ra = parseInt(res.headers.get('Retry-After') || '', 10);
        $('login-error').textContent = t('login.throttled', isNum(ra) ? ra : 60);
        return;
      }
      if (!res.ok) {
        let data = null;
        try { data = await res.json(); } catch (e) { /* not JSON */ }
        $('login-error').textContent = res.status === 401 ? t('login.bad_user')
          : errText(new ApiError(res.status, data && data.error, data && data.message));
        return;
      }
      const me = await res.json();
      $('password').value = '';
      st.token = null;
      st.auth = 'cookie';
      sessionStorage.removeItem(TOKEN_KEY);
      startSession(me);
    } catch (err) {
      $('login-error').textContent = t('err.network');
    } finally {
      $('password').value = '';
      btn.disabled = false;
    }
  }

  async function onLogin(ev) {
    ev.preventDefault();
    unlockAudio();
    const tok = $('token').value.trim();
    if (!tok && !st.loginWithToken) {
      onPasswordLogin();
      return;
    }
    if (!tok) {
      $('login-error').textContent = t('login.empty');
      return;
    }
    const btn = $('login');
    btn.disabled = true;
    $('login-error').textContent = '';
    st.token = tok;
    try {
      const me = await api('/me', { login: true });
      sessionStorage.setItem(TOKEN_KEY, tok);
      $('token').value = '';
      st.auth = 'token';
      startSession(me);
    } catch (err) {
      st.token = null;
      $('login-error').textContent = err.status === 401 ? t('login.bad') : errText(err);
    } finally {
      btn.disabled = false;
    }
  }

  function startSession(me) {
    st.me = me;
    renderUser();
    renderSoundButton();
    $('nav').hidden = false;
    $('user').hidden = false;
    $('logout').hidden = false;
    $('live').hidden = false;
    document.querySelector('[data-nav=supervision]').hidden = !canSupervise();
    document.querySelector('[data-nav=users]').hidden = !canManageUsers();
    $('alarms-readonly').hidden = canCommand();
    loadSites();
    startStream();
    if (!location.hash || location.hash === '#' || location.hash === '#/') location.replace('#/' + homeView());
    route();
  }

  function resetSession() {
    stopStream();
    for (const p of st.pending.values()) clearTimeout(p.timer);
    Object.assign(st, {
      token: null, auth: null, me: null, view: null, page: null, users: null,
      sites: new Map(), sitesLoaded: false, sitesError: null,
      alarms: new Map(), activeLoaded: false, activeError: null, buffered: null,
      seenRaise: new Set(), pending: new Map(), cards: new Map(), notes: new Map(), siteFilter: '',
    });
    st.sup.results = new Map();
    st.sup.gen++;
    sessionStorage.removeItem(TOKEN_KEY);
    $('alarm-groups').replaceChildren();
    $('site-grid').replaceChildren();
    $('sup-cards').replaceChildren();
    $('sup-overview').replaceChildren();
  }

  function logout() {
    // a session ends at the hub too (a token simply stops being used here)
    if (st.auth === 'cookie') {
      fetch(API + '/logout', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: '{}',
        cache: 'no-store',
        credentials: 'same-origin',
      }).catch(() => {});
    }
    resetSession();
    history.replaceState(null, '', location.pathname + location.search);
    showLoginView('');
  }

  function sessionEnded() {
    if (!st.me) return;
    const cookie = st.auth === 'cookie';
    resetSession();
    if (cookie) setLoginWay(false);
    showLoginView(t(cookie ? 'login.expired_user' : 'login.expired'));
  }

  // ===========================================================================
  // Routing
  // ===========================================================================

  function parseHash() {
    const parts = location.hash.replace(/^#\/?/, '').split('/');
    let arg = parts.slice(1).join('/');
    try { arg = decodeURIComponent(arg); } catch (e) { /* keep it as written */ }
    return { view: parts[0] || '', arg };
  }

  function route() {
    if (!st.me) {
      showLoginView($('login-error').textContent);
      return;
    }
    const r = parseHash();
    let view = r.view;
    if (view === 'supervision' && !canSupervise()) view = '';
    if (view === 'users' && !canManageUsers()) view = '';
    if (view === 'site' && !r.arg) view = 'sites';
    if (!['alarms', 'sites', 'site', 'supervision', 'users'].includes(view)) {
      location.replace('#/' + homeView());
      return;
    }
    const changed = st.view !== view || (view === 'site' && (!st.page || st.page.site !== r.arg));
    st.view = view;
    for (const v of document.querySelectorAll('.view')) v.hidden = v.id !== 'view-' + view;
    for (const a of document.querySelectorAll('[data-nav]')) {
      const on = a.dataset.nav === view || (view === 'site' && a.dataset.nav === 'sites');
      if (on) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    if (view === 'site' && changed) openSitePage(r.arg);
    if (view === 'users' && changed) loadUsers();
    // a fixed period ("last 7 days") moves on: reload what is older than 5 min
    const stale = st.sup.range !== 'custom' && now() - st.sup.to > 5 * 60e3;
    if (view === 'supervision' && changed && (!st.sup.results.size || stale)) loadSupervision();
    renderView();
    if (changed) window.scrollTo(0, 0);
  }

  function renderView() {
    switch (st.view) {
      case 'alarms': renderAlarms(); break;
      case 'sites': renderSites(); break;
      case 'site': renderSitePage(); break;
      case 'supervision': renderSupervision(); break;
      case 'users': renderUsers(); break;
      default: break;
    }
    updateTitle();
  }

  // ===========================================================================
  // Users (admins): GET/POST/PUT /api/v1/users
  // ===========================================================================

  async function loadUsers() {
    $('users-status').hidden = true;
    try {
      const data = await api('/users');
      st.users = data.users || [];
    } catch (err) {
      st.users = [];
      $('users-status').hidden = false;
      $('users-status').textContent = errText(err);
    }
    renderUsers();
  }

  function scopeText(u) {
    if (u.district) return t('users.district', u.district);
    const sites = u.sites || [];
    return sites.includes('*') ? t('users.all_sites') : sites.join(', ');
  }

  function renderUsers() {
    if (!st.users) return;
    $('users-summary').textContent = t('users.summary', st.users.length);
    if (!st.users.length && $('users-status').hidden) {
      $('users-status').hidden = false;
      $('users-status').textContent = t('users.none');
    }
    put($('users-rows'), st.users.map((u) => h('tr', {
      class: 'user-row', dataset: { user: u.name, disabled: !!u.disabled },
    },
    h('td', { class: 'user-name', text: u.name }),
    h('td', { text: u.display || '' }),
    h('td', { text: t('role.' + u.role) }),
    h('td', { text: scopeText(u) }),
    h('td', { class: u.disabled ? 'user-off' : 'user-on', text: t(u.disabled ? 'users.disabled' : 'users.active') }),
    h('td', { class: 'user-actions' },
      h('button', { type: 'button', class: 'user-disable', dataset: { user: u.name }, text: t(u.disabled ? 'users.enable' : 'users.disable') }),
      h('button', { type: 'button', class: 'user-reset', dataset: { user: u.name }, text: t('users.reset') })))));
  }

  const userPath = (name) => '/users/' + encodeURIComponent(name);

  async function onUserAction(ev) {
    const btn = ev.target.closest('button[data-user]');
    if (!btn) return;
    const name = btn.dataset.user;
    const u = (st.users || []).find((x) => x.name === name);
    if (!u) return;
    let body;
    if (btn.classList.contains('user-disable')) {
      body = { disabled: !u.disabled };
    } else {
      const pw = window.prompt(t('users.reset_prompt', name));
      if (!pw) return;
      body = { password: pw };
    }
    btn.disabled = true;
    try {
      await api(userPath(name), { method: 'PUT', body });
      toast(body.password ? t('users.reset_done', name) : t('users.saved', name), 'ok');
      await loadUsers();
    } catch (err) {
      toast(errText(err), 'bad');
    } finally {
      btn.disabled = false;
    }
  }

  async function onAddUser(ev) {
    ev.preventDefault();
    const name = $('new-user-name').value.trim();
    const display = $('new-user-display').value.trim();
    const role = $('new-user-role').value;
    const sites = $('new-user-sites').value.split(',').map((x) => x.trim()).filter(Boolean);
    const password = $('new-user-password').value;
    if (!name || !sites.length || [...password].length < 10) {
      $('user-add-error').textContent = t('users.need_fields');
      return;
    }
    const body = { name, role, sites, password };
    if (display) body.display = display;
    $('user-add').disabled = true;
    $('user-add-error').textContent = '';
    try {
      await api('/users', { method: 'POST', body });
      for (const id of ['new-user-name', 'new-user-display', 'new-user-sites', 'new-user-password']) $(id).value = '';
      toast(t('users.added', name), 'ok');
      await loadUsers();
    } catch (err) {
      $('user-add-error').textContent = err.message || errText(err);
    } finally {
      $('new-user-password').value = '';
      $('user-add').disabled = false;
    }
  }

  // ===========================================================================
  // Event stream
  // ===========================================================================

  function setLive(state) {
    const l = $('live');
    l.dataset.state = state;
    l.querySelector('.live-text').textContent = t(state === 'live' ? 'live.live' : 'live.connecting');
  }

  function stopStream() {
    const s0 = st.stream;
    s0.gen++;
    if (s0.ctrl) s0.ctrl.abort();
    s0.ctrl = null;
    clearTimeout(s0.idle);
    if (s0.wake) s0.wake();
    setLive('connecting');
  }

  function startStream() {
    stopStream();
    st.stream.backoff = 0;
    streamLoop(st.stream.gen);
  }

  function armIdle(ctrl) {
    clearTimeout(st.stream.idle);
    st.stream.idle = setTimeout(() => ctrl.abort(), STREAM_IDLE_MS);
  }

  async function streamLoop(gen) {
    const s0 = st.stream;
    while (gen === s0.gen && signedIn()) {
      setLive('connecting');
      const ctrl = new AbortController();
      s0.ctrl = ctrl;
      try {
        armIdle(ctrl);
        const res = await fetch(API + '/events', {
          headers: authHeaders({ Accept: 'text/event-stream' }),
          signal: ctrl.signal,
          cache: 'no-store',
          credentials: credentials(),
        });
        if (gen !== s0.gen) return;
        if (res.status === 401) {
          sessionEnded();
          return;
        }
        if (!res.ok || !res.body) throw new Error('HTTP ' + res.status);
        s0.backoff = 0;
        setLive('live');
        onStreamOpen();
        await readEvents(res.body.getReader(), ctrl, gen);
      } catch (e) {
        /* network error, abort or idle timeout: reconnect below */
      }
      clearTimeout(s0.idle);
      if (gen !== s0.gen) return;
      setLive('connecting');
      const delay = Math.min(30000, 1000 * 2 ** s0.backoff) * (0.75 + Math.random() * 0.5);
      s0.backoff = Math.min(s0.backoff + 1, 5);
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, delay);
        s0.wake = () => { clearTimeout(timer); resolve(); };
      });
      s0.wake = null;
    }
  }

  async function readEvents(reader, ctrl, gen) {
    const dec = new TextDecoder();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done || gen !== st.stream.gen) return;
      armIdle(ctrl);
      buf += dec.decode(value, { stream: true });
      let tail = '';
      if (buf.endsWith('\r')) { // a CR LF may be split between two chunks
        tail = '\r';
        buf = buf.slice(0, -1);
      }
      buf = buf.replace(/\r\n?/g, '\n');
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        handleSse(block);
      }
      buf += tail;
      if (buf.length > 1 << 20) buf = ''; // a runaway event: drop it
    }
  }

  function handleSse(block) {
    let type = 'message';
    const data = [];
    for (const line of block.split('\n')) {
      if (!line || line[0] === ':') continue;
      const c = line.indexOf(':');
      const field = c < 0 ? line : line.slice(0, c);
      let val = c < 0 ? '' : line.slice(c + 1);
      if (val[0] === ' ') val = val.slice(1);
      if (field === 'event') type = val;
      else if (field === 'data') data.push(val);
    }
    if (!data.length) return;
    let obj;
    try {
      obj = JSON.parse(data.join('\n'));
    } catch (e) {
      return; // one bad event is not the end of the stream
    }
    if (type === 'alarm') onAlarmEvent(obj);
    else if (type === 'site') onSiteEvent(obj);
  }

  function onStreamOpen() {
    loadActive();
    loadSites();
  }

  // ===========================================================================
  // Data: sites and active alarms
  // ===========================================================================

  async function loadSites() {
    try {
      const d = await api('/sites');
      const m = new Map();
      for (const site of (d && d.sites) || []) m.set(site.site, site);
      st.sites = m;
      st.sitesLoaded = true;
      st.sitesError = null;
    } catch (err) {
      if (err.status === 401) return;
      st.sitesError = err;
    }
    if (st.view === 'sites' || st.view === 'alarms') renderView();
    else if (st.view === 'site') renderSiteHead();
    else if (st.view === 'supervision') {
      if (!st.sup.results.size) loadSupervision();
      else renderSupervision();
    }
  }

  async function loadActive() {
    const seq = ++st.activeSeq;
    st.buffered = [];
    try {
      const d = await api('/alarms/active');
      if (seq !== st.activeSeq) return;
      const m = new Map();
      const list = ((d && d.alarms) || []).filter((a) => a && a.alarm_id && a.site && a.state !== 'normal');
      for (const a of list) m.set(alarmKey(a), a);
      // At the first load nothing is "new"; after a reconnect, what was
      // raised while the stream was down is.
      if (st.activeLoaded) noticeNew(list);
      else for (const a of list) st.seenRaise.add(alarmKey(a) + '@' + a.raised_ms);
      const replay = st.buffered || [];
      st.buffered = null;
      st.alarms = m;
      st.activeLoaded = true;
      st.activeError = null;
      for (const a of replay) applyAlarm(a);
    } catch (err) {
      if (seq !== st.activeSeq || err.status === 401) return;
      st.buffered = null;
      st.activeError = err;
      // The stream may stay up for hours: try again instead of waiting for a reconnect.
      const gen = st.stream.gen;
      setTimeout(() => { if (st.me && gen === st.stream.gen && seq === st.activeSeq) loadActive(); }, 5000);
    }
    if (st.view === 'alarms' || st.view === 'sites') renderView();
    else updateTitle();
  }

  // Applies one transition to the active set; false when it is older than
  // what is there already.
  function applyAlarm(a) {
    const k = alarmKey(a);
    const old = st.alarms.get(k);
    if (old && isNum(old.updated_ms) && isNum(a.updated_ms) && old.updated_ms > a.updated_ms) return false;
    if (a.state === 'normal') st.alarms.delete(k);
    else st.alarms.set(k, a);
    return true;
  }

  function onAlarmEvent(a) {
    if (!a || !a.alarm_id || !a.site) return;
    const k = alarmKey(a);
    if (a.event === 'notified') { // a line under the card, not a step of the alarm
      st.notes.set(k, a);
      if (st.view === 'alarms') renderAlarms();
      return;
    }
    if (st.buffered) st.buffered.push(a);
    if (!applyAlarm(a)) return;
    const p = st.pending.get(k);
    if (p) { // the gateway answered (or something else changed it): show the truth
      clearTimeout(p.timer);
      st.pending.delete(k);
    }
    if (a.state === 'unack') noticeNew([a]);
    if (st.view === 'alarms') renderAlarms();
    else if (st.view === 'sites') renderSites();
    else if (st.view === 'site' && st.page && st.page.site === a.site) renderSiteHead();
    updateTitle();
  }

  // Announces (and for high priority, sounds) occurrences not seen before.
  function noticeNew(list) {
    const fresh = [];
    for (const a of list) {
      const occ = alarmKey(a) + '@' + a.raised_ms;
      if (a.state !== 'unack' || st.seenRaise.has(occ)) continue;
      st.seenRaise.add(occ);
      fresh.push(a);
    }
    if (!fresh.length) return;
    fresh.sort(sortAlarms);
    const a = fresh[0];
    const text = a.site + ' · ' + where(a) + ' · ' + (a.message || a.rule || '');
    announce(a.priority === 'high' ? t('alarms.newHigh', text) : t('alarms.new', text));
    if (a.priority === 'high' && canCommand()) cue();
  }

  function onSiteEvent(site) {
    if (!site || !site.site) return;
    st.sites.set(site.site, site);
    if (st.view === 'sites' || st.view === 'alarms') renderView();
    else if (st.view === 'site' && st.page && st.page.site === site.site) renderSiteHead();
  }

  // Active alarm counts of one site: from the live set once it is loaded
  // (the site object's counts are only as fresh as its last status).
  function activeCounts(siteId) {
    const site = st.sites.get(siteId);
    if (!st.activeLoaded) {
      const c = (site && site.active_alarms) || {};
      return { high: c.high || 0, medium: c.medium || 0, low: c.low || 0 };
    }
    const c = { high: 0, medium: 0, low: 0 };
    for (const a of st.alarms.values()) if (a.site === siteId && a.priority in c) c[a.priority]++;
    return c;
  }

  function updateTitle() {
    let unack = 0;
    let high = 0;
    for (const a of st.alarms.values()) {
      if (a.state === 'unack' || a.state === 'rtn_unack') unack++;
      if (a.priority === 'high' && a.state === 'unack') high++;
    }
    const badge = $('nav-alarm-count');
    badge.hidden = !unack;
    badge.textContent = String(unack);
    badge.classList.toggle('has-high', high > 0);
    document.title = (unack ? '(' + unack + ') ' : '') + 'carehub';
  }

  // ===========================================================================
  // View: alarm board
  // ===========================================================================

  function sortAlarms(x, y) {
    const p = (PRIO_RANK[y.priority] || 0) - (PRIO_RANK[x.priority] || 0);
    if (p) return p;
    const s0 = (STATE_RANK[x.state] ?? 9) - (STATE_RANK[y.state] ?? 9);
    if (s0) return s0;
    const tx = x.raised_ms || x.updated_ms || 0;
    const ty = y.raised_ms || y.updated_ms || 0;
    if (tx !== ty) return tx - ty; // longest waiting first
    return alarmKey(x) < alarmKey(y) ? -1 : 1;
  }

  function renderSiteFilter() {
    const sel = $('alarm-site-filter');
    const ids = new Set(st.sites.keys());
    for (const a of st.alarms.values()) ids.add(a.site);
    if (st.siteFilter) ids.add(st.siteFilter);
    const sorted = Array.from(ids).sort();
    const sig = st.lang + '|' + sorted.join(',');
    if (sel._sig !== sig) {
      sel._sig = sig;
      put(sel, h('option', { value: '', text: t('alarms.allSites') }),
        ...sorted.map((id) => h('option', { value: id, text: id })));
    }
    sel.value = st.siteFilter;
    sel.closest('.field').hidden = sorted.length < 2 && !st.siteFilter;
  }

  function renderAlarms() {
    renderSiteFilter();
    const list = Array.from(st.alarms.values())
      .filter((a) => !st.siteFilter || a.site === st.siteFilter)
      .sort(sortAlarms);

    const totals = $('prio-totals');
    put(totals, ...PRIOS.map((p) => {
      const n = list.filter((a) => a.priority === p).length;
      return h('span', { class: 'prio-total prio-' + p + (n ? '' : ' zero'), dataset: { priority: p } },
        h('span', { class: 'n', text: String(n) }),
        h('span', { class: 'l l-long', text: t('prio.' + p + '.long') }),
        h('span', { class: 'l l-short', 'aria-hidden': 'true', text: t('prio.' + p) }));
    }));

    const status = $('alarms-status');
    const box = $('alarm-groups');
    if (!st.activeLoaded && !list.length) {
      status.hidden = false;
      status.className = st.activeError ? 'empty bad' : 'empty';
      status.textContent = st.activeError ? errText(st.activeError) : t('alarms.loading');
      box.replaceChildren();
      return;
    }
    status.hidden = list.length > 0;
    status.className = 'empty ok';
    status.textContent = '✓ ' + t('alarms.empty');

    const wanted = [];
    for (const p of PRIOS) {
      const group = list.filter((a) => a.priority === p);
      if (!group.length) continue;
      let sec = box.querySelector('section.prio-group[data-priority="' + p + '"]');
      if (!sec) {
        sec = h('section', { class: 'prio-group prio-' + p, dataset: { priority: p } },
          h('h2', { class: 'group-h' }), h('div', { class: 'card-grid' }));
      }
      sec.querySelector('.group-h').textContent = t('prio.' + p + '.long') + ' · ' + group.length;
      reorder(sec.querySelector('.card-grid'), group.map(cardFor));
      wanted.push(sec);
    }
    reorder(box, wanted);
    for (const k of Array.from(st.cards.keys())) if (!st.alarms.has(k)) st.cards.delete(k);
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

  function cardFor(a) {
    const k = alarmKey(a);
    let card = st.cards.get(k);
    if (!card) {
      card = h('article', { class: 'alarm-card' });
      card._shelve = String(SHELVE_CHOICES[0]);
      st.cards.set(k, card);
    }
    const p = st.pending.get(k);
    const site = st.sites.get(a.site);
    const offline = !!site && site.online === false;
    const note = st.notes.get(k);
    const sig = [st.lang, a.updated_ms, a.state, a.event, a.priority, p ? p.action + p.answered : '',
      offline, canCommand(), a.message, a.acked_by, a.shelved_until_ms, a.located_ms,
      note ? note.updated_ms : 0].join('|');
    if (card._sig !== sig) {
      card._sig = sig;
      fillCard(card, a, p, offline);
    }
    return card;
  }

  function fillCard(card, a, p, offline) {
    const k = alarmKey(a);
    card.className = 'alarm-card prio-' + a.priority;
    card.dataset.alarmId = a.alarm_id;
    card.dataset.site = a.site;
    card.dataset.gateway = a.gateway || '';
    card.dataset.state = a.state;
    card.dataset.priority = a.priority;
    if (p) card.dataset.pending = p.action;
    else delete card.dataset.pending;
    const hid = 'ah-' + k.replace(/[^A-Za-z0-9_-]/g, '_');
    card.setAttribute('aria-labelledby', hid);
    const since = a.raised_ms || a.updated_ms;

    // what happened, then where, then who (kinds.js: icon and title)
    const kind = window.CarehubKinds.of(a);
    card.dataset.kind = kind;
    const head = h('div', { class: 'card-head' },
      window.CarehubKinds.icon(kind),
      h('span', { class: 'kind', id: hid, text: window.CarehubKinds.title(kind, st.lang) }),
      h('span', { class: 'prio', text: prioLabel(a.priority) }),
      h('span', { class: 'age', dataset: { since, fmt: 'ago' }, title: fmtTime(since, true), text: ago(since) }));
    const located = isNum(a.located_ms) && a.located_ms > 0;
    const whereLine = h('div', { class: 'where' + (located ? ' located' : '') },
      located ? t('alarms.lastSeen', where(a), fmtTime(a.located_ms)) : where(a));
    const note = st.notes.get(k);
    const notified = note && note.raised_ms === a.raised_ms
      ? h('div', { class: 'notified', text: t('alarms.notified', note.notified_to || '', fmtTime(note.updated_ms, true), note.message) })
      : null;

    const siteLine = h('div', { class: 'site-line' },
      h('a', { href: '#/site/' + encodeURIComponent(a.site), class: 'site-link', text: a.site_name || a.site }),
      a.gateway ? h('span', { class: 'gw', text: a.gateway }) : null,
      offline ? h('span', { class: 'tag offline', text: t('alarms.gwOffline') }) : null);

    const meta = h('div', { class: 'meta' },
      h('span', { class: 'tag state state-' + a.state, text: stateLabel(a.state) }),
      isNum(since) ? h('span', { class: 'tag', text: t('alarms.raisedAt', fmtTime(since)) }) : null,
      a.escalation > 0 ? h('span', { class: 'tag esc', text: t('alarms.escalated', a.escalation) }) : null,
      a.acked_by && a.state !== 'unack' ? h('span', { class: 'tag', text: t('alarms.ackedBy', a.acked_by.replace(/^(hub|console):/, '')) }) : null,
      a.state === 'shelved' && isNum(a.shelved_until_ms) ? h('span', { class: 'tag', text: t('alarms.shelvedUntil', fmtTime(a.shelved_until_ms)) }) : null);

    put(card, head, whereLine,
      who(a) ? h('div', { class: 'resident', text: who(a) }) : null,
      siteLine,
      notified,
      h('div', { class: 'msg', text: a.message || (a.rule + ' · ' + a.device) }),
      meta,
      canCommand() ? actions(card, a, p) : null,
      p ? h('div', { class: 'pending', role: 'status', text: p.answered === 'late' ? t('alarms.noAnswer') : t('alarms.sending') }) : null);
  }

  function actions(card, a, p) {
    const box = h('div', { class: 'actions' });
    const busy = !!p && p.answered !== 'late';
    if (a.state === 'unack' || a.state === 'rtn_unack') {
      box.append(h('button', { type: 'button', class: 'ack-btn', disabled: busy, dataset: { action: 'ack' }, text: t('alarms.ack') }));
    }
    if (a.state === 'unack' || a.state === 'acked') {
      const id = 'sd-' + alarmKey(a).replace(/[^A-Za-z0-9_-]/g, '_');
      const sel = h('select', { class: 'shelve-dur', id, disabled: busy, 'aria-label': t('alarms.shelveFor') },
        SHELVE_CHOICES.map((sec) => h('option', { value: sec, text: dur(sec) })));
      sel.value = card._shelve;
      sel.addEventListener('change', () => { card._shelve = sel.value; });
      box.append(h('div', { class: 'shelve-group' },
        h('label', { for: id, class: 'sr-only', text: t('alarms.shelveFor') }),
        sel,
        h('button', { type: 'button', class: 'shelve-btn', disabled: busy, dataset: { action: 'shelve' }, text: t('alarms.shelve') })));
    }
    if (a.state === 'shelved') {
      box.append(h('button', { type: 'button', class: 'unshelve-btn', disabled: busy, dataset: { action: 'unshelve' }, text: t('alarms.unshelve') }));
    }
    return box.children.length ? box : null;
  }

  async function onCardClick(ev) {
    unlockAudio();
    const b = ev.target.closest('button[data-action]');
    if (!b || b.disabled) return;
    const card = b.closest('.alarm-card');
    const k = card.dataset.site + '/' + card.dataset.gateway + '/' + card.dataset.alarmId;
    const a = st.alarms.get(k);
    if (!a) return;
    const action = b.dataset.action;
    const body = { site: a.site, gateway: a.gateway, alarm_id: a.alarm_id, action };
    if (action === 'shelve') body.duration_s = Number(card._shelve) || SHELVE_CHOICES[0];
    setPending(k, { action, answered: '' });
    try {
      await api('/commands', { method: 'POST', body });
      const p = st.pending.get(k);
      if (p && p.action === action) { // still waiting for the transition
        p.timer = setTimeout(() => {
          const q = st.pending.get(k);
          if (q === p) {
            p.answered = 'late';
            renderAlarmsIfShown();
          }
        }, PENDING_TIMEOUT_MS);
      }
    } catch (err) {
      if (st.pending.get(k) && st.pending.get(k).action === action) st.pending.delete(k);
      renderAlarmsIfShown();
      if (err.status !== 401) toast(a.site + ' · ' + where(a) + ': ' + errText(err), 'bad');
    }
  }

  function setPending(k, p) {
    const old = st.pending.get(k);
    if (old) clearTimeout(old.timer);
    st.pending.set(k, p);
    renderAlarmsIfShown();
  }

  function renderAlarmsIfShown() {
    if (st.view === 'alarms') renderAlarms();
  }

  // ===========================================================================
  // View: site grid
  // ===========================================================================

  function renderSites() {
    const status = $('sites-status');
    const grid = $('site-grid');
    if (!st.sitesLoaded) {
      status.hidden = false;
      status.className = st.sitesError ? 'empty bad' : 'empty';
      status.textContent = st.sitesError ? errText(st.sitesError) : t('sup.loading');
      $('sites-summary').textContent = '';
      return;
    }
    const all = Array.from(st.sites.values()).sort((x, y) => (x.site < y.site ? -1 : 1));
    const online = all.filter((x) => x.online).length;
    $('sites-summary').textContent = t('sites.summary', all.length, online, all.length - online);
    const q = st.siteSearch.trim().toLowerCase();
    const shown = q ? all.filter((x) => x.site.toLowerCase().includes(q)) : all;
    status.hidden = shown.length > 0;
    status.className = 'empty';
    status.textContent = all.length ? t('sites.noMatch') : t('sites.empty');
    put(grid, ...shown.map(siteTile));
  }

  function siteTile(site) {
    const c = activeCounts(site.site);
    const online = site.online === true;
    const worst = c.high ? 'high' : c.medium ? 'medium' : c.low ? 'low' : '';
    const gws = site.gateways || [];
    return h('a', {
      class: 'site-tile' + (online ? '' : ' is-offline') + (worst ? ' worst-' + worst : ''),
      href: '#/site/' + encodeURIComponent(site.site),
      dataset: { site: site.site, online: String(online) },
    },
    h('div', { class: 'tile-head' },
      h('span', { class: 'site-id', text: site.site }),
      h('span', { class: 'badge ' + (online ? 'on' : 'off'), text: online ? t('sites.online') : t('sites.offline') })),
    h('div', { class: 'tile-alarms', 'aria-label': t('sites.alarms') },
      c.high + c.medium + c.low
        ? PRIOS.map((p) => h('span', { class: 'chip prio-' + p + (c[p] ? '' : ' zero'), dataset: { priority: p }, title: t('prio.' + p + '.long') },
          h('span', { class: 'chip-l', text: prioLabel(p) }), h('span', { class: 'chip-n', text: String(c[p]) })))
        : h('span', { class: 'quiet', text: '✓ ' + t('sites.noAlarms') })),
    h('dl', { class: 'tile-facts' },
      fact(t('sites.lastSeen'), h('span', { dataset: { since: site.last_seen_ms, fmt: 'ago' }, title: fmtTime(site.last_seen_ms, true), text: ago(site.last_seen_ms) })),
      fact(t('sites.devices'), deviceText(site)),
      fact(t('sites.version'), site.version || t('common.none')),
      gws.length > 1 ? fact(t('sites.gateways'), gws.filter((g) => g.online).length + ' / ' + gws.length) : null));
  }

  function fact(label, value) {
    return h('div', { class: 'fact' }, h('dt', { text: label }), h('dd', null, value));
  }

  function deviceText(x) {
    if (!isNum(x.devices_total)) return t('common.none');
    return (isNum(x.devices_online) ? x.devices_online : '?') + ' / ' + x.devices_total;
  }

  // ===========================================================================
  // View: one site
  // ===========================================================================

  function openSitePage(site) {
    st.page = {
      site,
      range: (st.page && st.page.range) || '24h',
      gen: 0,
      error: null,
      series: {}, // metric -> {status, data, err}
      alarms: { status: 'loading' },
      limits: null,
      historyShown: 100,
    };
    loadSitePage();
  }

  async function loadSitePage() {
    const page = st.page;
    const gen = ++page.gen;
    const to = now();
    const from = to - RANGES[page.range];
    page.from = from;
    page.to = to;
    page.error = null;
    page.series = {};
    for (const c of CHARTS) page.series[c.key] = { status: 'loading' };
    page.alarms = { status: 'loading' };
    page.historyShown = 100;
    renderSitePage();
    const q = 'site=' + encodeURIComponent(page.site) + '&from=' + Math.round(from) + '&to=' + Math.round(to);
    const stillHere = () => st.page === page && page.gen === gen;
    const fail = (err) => {
      if (err.status === 403 || err.status === 404) page.error = page.error || err;
    };

    const jobs = CHARTS.map((c) => loadSeries(q, c.meas, c.metric, page.range).then((d) => {
      if (stillHere()) page.series[c.key] = { status: 'ok', data: d };
    }, (err) => {
      if (!stillHere()) return;
      // a regulator without the grant of a resident's series: not shown
      if (c.box !== 'env-charts' && err.status === 403) {
        page.series[c.key] = { status: 'denied' };
        return;
      }
      fail(err);
      page.series[c.key] = { status: 'error', err };
    }).then(() => { if (stillHere()) renderCharts(); }));

    jobs.push(api('/alarms?' + q + '&limit=5000').then((d) => {
      if (stillHere()) page.alarms = { status: 'ok', list: (d && d.alarms) || [] };
    }, (err) => {
      if (!stillHere()) return;
      fail(err);
      page.alarms = { status: 'error', err };
    }).then(() => { if (stillHere()) { renderResponseChart(); renderHistory(); } }));

    // The compliance limits in force, from the summary (optional: defaults otherwise).
    jobs.push(api('/summary?' + q).then((d) => {
      if (!stillHere()) return;
      const lim = {};
      for (const e of (d && d.environment) || []) {
        if (!lim[e.metric] && (isNum(e.min) || isNum(e.max))) lim[e.metric] = { min: isNum(e.min) ? e.min : null, max: isNum(e.max) ? e.max : null };
      }
      page.limits = lim;
      renderCharts();
    }, () => { /* the defaults will do */ }));

    await Promise.allSettled(jobs);
    if (stillHere() && page.error) renderSitePage();
  }

  let everyRefused = false; // the hub refused our 'every': let it choose
  async function loadSeries(q, meas, metric, range) {
    const base = '/series?' + q + '&measurement=' + meas + '&metric=' + metric;
    if (!everyRefused) {
      try {
        return await api(base + '&every=' + EVERY_S[range]);
      } catch (err) {
        if (err.status !== 400) throw err;
        everyRefused = true;
      }
    }
    return api(base);
  }

  function renderSitePage() {
    const page = st.page;
    if (!page) return;
    for (const b of $('site-range').querySelectorAll('button')) b.setAttribute('aria-pressed', String(b.dataset.range === page.range));
    renderSiteHead();
    const status = $('site-status');
    if (page.error) {
      status.hidden = false;
      status.className = 'empty bad';
      status.textContent = errText(page.error);
      $('site-body').hidden = true;
      return;
    }
    status.hidden = true;
    $('site-body').hidden = false;
    renderCharts();
    renderResponseChart();
    renderHistory();
  }

  function renderSiteHead() {
    const page = st.page;
    if (!page) return;
    const site = st.sites.get(page.site);
    const c = activeCounts(page.site);
    const head = $('site-head');
    const online = site ? site.online === true : null;
    const gws = (site && site.gateways) || [];
    put(head,
      h('div', { class: 'site-title' },
        h('h1', { text: page.site }),
        site ? h('span', { class: 'badge ' + (online ? 'on' : 'off'), dataset: { online: String(online) }, text: online ? t('sites.online') : t('sites.offline') }) : null,
        h('a', { class: 'chips-link', href: '#/alarms', onclick: () => { st.siteFilter = page.site; } },
          PRIOS.map((p) => h('span', { class: 'chip prio-' + p + (c[p] ? '' : ' zero'), title: t('prio.' + p + '.long') },
            h('span', { class: 'chip-l', text: prioLabel(p) }), h('span', { class: 'chip-n', text: String(c[p]) }))),
          h('span', { class: 'chips-text', text: t('site.viewAlarms') }))),
      site ? h('dl', { class: 'site-facts' },
        fact(t('sites.lastSeen'), h('span', { dataset: { since: site.last_seen_ms, fmt: 'ago' }, title: fmtTime(site.last_seen_ms, true), text: ago(site.last_seen_ms) })),
        fact(t('sites.devices'), deviceText(site)),
        fact(t('sites.version'), site.version || t('common.none')),
        gws.length ? fact(t('sites.gateways'), h('span', { class: 'gw-list' }, gws.map((g) => h('span', {
          class: 'gw-pill ' + (g.online ? 'on' : 'off'),
          title: t('sites.lastSeen') + ' ' + fmtTime(g.last_seen_ms, true) + ' · ' + (g.version || '') + ' · ' + deviceText(g),
          text: g.gateway + ' ' + deviceText(g),
        })))) : null) : null);
  }

  function limitsFor(metric) {
    const page = st.page;
    return (page && page.limits && page.limits[metric]) || DEFAULT_LIMITS[metric] || { min: null, max: null };
  }

  function limitText(metric, lim) {
    const u = UNITS[metric] ? ' ' + UNITS[metric] : '';
    if (isNum(lim.min) && isNum(lim.max)) return lim.min + '–' + lim.max + u;
    if (isNum(lim.max)) return '≤ ' + lim.max + u;
    if (isNum(lim.min)) return '≥ ' + lim.min + u;
    return '';
  }

  function renderCharts() {
    const page = st.page;
    if (!page || st.view !== 'site') return;
    for (const boxId of ['env-charts', 'care-charts']) {
      const box = $(boxId);
      if (!box) continue;
      // a chart with nothing to show is left out: a site of beds and
      // bracelets has no empty environment charts, and the other way round
      const shown = CHARTS.filter((c) => c.box === boxId).filter((c) => {
        const sr = page.series[c.key] || { status: 'loading' };
        return sr.status === 'loading' || sr.status === 'error' || (sr.status === 'ok' && chartSeries(c, sr.data).length);
      });
      if (!shown.length) {
        put(box, h('div', { class: 'chart-msg', text: t('site.noData') }));
        continue;
      }
      put(box, ...shown.map((c) => renderChart(page, c)));
    }
  }

  // A chart's lines: per room for the environment, per device for residents.
  function chartSeries(c, data) {
    const env = c.meas === 'environment';
    const out = new Map(); // key -> series: a resident's device is one line wherever it was
    for (const x of ((data && data.series) || [])) {
      const key = env ? x.room || x.device || '' : x.device || x.room || '';
      if (!out.has(key)) out.set(key, { label: env && x.room ? t('alarms.room', x.room) : x.device || x.room || '?', key, points: [] });
      out.get(key).points.push(...(x.points || []).filter((p) => Array.isArray(p) && isNum(p[0]) && isNum(p[1])));
    }
    for (const se of out.values()) se.points.sort((p, q) => p[0] - q[0]);
    return [...out.values()].filter((x) => x.points.length);
  }

  function renderChart(page, c) {
    const env = c.meas === 'environment';
    const m = c.key;
    const title = env ? t('metric.' + m) : t('chart.' + m);
    const fig = h('figure', { class: 'chart', dataset: { metric: m } });
    const lim = env ? limitsFor(m) : { min: null, max: null };
    fig.append(h('figcaption', null,
      h('span', { class: 'chart-title', text: title }),
      h('span', { class: 'chart-unit', text: UNITS[m] || '' }),
      limitText(m, lim) ? h('span', { class: 'chart-limit', text: t('site.limit', limitText(m, lim)) }) : null));
    const sr = page.series[m] || { status: 'loading' };
    if (sr.status === 'loading') {
      fig.append(h('div', { class: 'chart-msg', text: t('sup.loading') }));
      return fig;
    }
    if (sr.status === 'error') {
      fig.append(h('div', { class: 'chart-msg bad', text: errText(sr.err) }));
      return fig;
    }
    const data = sr.data || {};
    if (c.timeline) {
      fig.classList.add('wide');
      fig.append(zoneTimeline(page, data));
      return fig;
    }
    const series = chartSeries(c, data);
    series.sort((x, y) => String(x.key).localeCompare(String(y.key), undefined, { numeric: true }));
    series.forEach((x, j) => { x.colour = LINE_COLOURS[j % LINE_COLOURS.length]; });
    const every = isNum(data.every_s) && data.every_s > 0 ? data.every_s * 1000 : EVERY_S[page.range] * 1000;
    // a gap is a gap in the device's own rhythm, not in steps shorter than it
    // (a meter read each minute in a 1 h chart of 15 s steps is one line)
    const steps = [];
    for (const se of series) for (let i = 1; i < se.points.length; i++) steps.push(se.points[i][0] - se.points[i - 1][0]);
    const rhythm = median(steps) || 0;
    // the figure is in the page before the chart measures its width
    queueMicrotask(() => fig.append(lineChart(fig, {
      series,
      from: page.from,
      to: page.to,
      limits: lim,
      gapMs: Math.max(every, rhythm) * 2.5,
      fmt: (v) => fmtValue(m, v),
      unit: UNITS[m] || '',
      label: t('site.chartLabel', title, series.length, t('range.' + page.range)),
    })));
    return fig;
  }

  // The zone timeline: one row per bracelet, a coloured band from each
  // reading's interval (a series per zone and device from /series) to the
  // next one of that bracelet, unless the bracelet was silent longer than
  // its rhythm allows (a gap), and a legend of the zones. A row is its
  // label and an SVG stretched to the width (SVG, no library).
  function zoneTimeline(page, data) {
    const every = isNum(data.every_s) && data.every_s > 0 ? data.every_s * 1000 : EVERY_S[page.range] * 1000;
    const rows = new Map(); // device -> [{zone, t}] in time order
    const zones = [];
    for (const se of (data.series || [])) {
      if (!se.device || !se.room) continue;
      if (!zones.includes(se.room)) zones.push(se.room);
      if (!rows.has(se.device)) rows.set(se.device, []);
      for (const p of se.points || []) if (Array.isArray(p) && isNum(p[0])) rows.get(se.device).push({ zone: se.room, t: p[0] });
    }
    zones.sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
    const devices = [...rows.keys()].sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
    const colour = (z) => LINE_COLOURS[zones.indexOf(z) % LINE_COLOURS.length];
    const W = 1000;
    const span = Math.max(1, page.to - page.from);
    const x = (t0) => Math.min(W, Math.max(0, ((t0 - page.from) / span) * W));
    const lines = devices.map((dev) => {
      const pts = rows.get(dev).sort((p, q) => p.t - q.t);
      const steps = [];
      for (let i = 1; i < pts.length; i++) steps.push(pts[i].t - pts[i - 1].t);
      const gap = Math.max(every, median(steps) || 0) * 2.5;
      const bars = pts.map((p, i) => {
        const next = i + 1 < pts.length && pts[i + 1].t - p.t <= gap ? pts[i + 1].t : p.t + every;
        return s('rect', {
          x: x(p.t).toFixed(1), y: 0, width: Math.max(1, x(next) - x(p.t)).toFixed(1), height: 10,
          fill: colour(p.zone), dataset: { zone: p.zone },
        }, s('title', { text: dev + ' · ' + p.zone + ' · ' + fmtTime(p.t, true) }));
      });
      return h('div', { class: 'tl-row' }, h('span', { class: 'tl-label', text: dev }),
        s('svg', { viewBox: `0 0 ${W} 10`, preserveAspectRatio: 'none', class: 'tl-bars' }, bars));
    });
    const legend = h('div', { class: 'tl-legend' }, zones.map((z) => h('span', { class: 'tl-zone', dataset: { zone: z } },
      s('svg', { viewBox: '0 0 10 10', class: 'tl-swatch' }, s('rect', { width: 10, height: 10, rx: 2, fill: colour(z) })), z)));
    return h('div', {
      class: 'tl-wrap', role: 'img',
      'aria-label': t('site.timelineLabel', devices.length, zones.length, t('range.' + page.range)),
    }, lines, h('div', { class: 'tl-axis' }, h('span', { text: fmtTime(page.from) }), h('span', { text: fmtTime(page.to) })), legend);
  }

  function renderResponseChart() {
    const page = st.page;
    if (!page || st.view !== 'site') return;
    const box = $('response-chart');
    const fig = h('figure', { class: 'chart wide' });
    const al = page.alarms;
    const cap = h('figcaption', null, h('span', { class: 'chart-hint', text: t('site.responseHint') }));
    fig.append(cap);
    put(box, fig);
    if (al.status === 'loading') {
      fig.append(h('div', { class: 'chart-msg', text: t('sup.loading') }));
      return;
    }
    if (al.status === 'error') {
      fig.append(h('div', { class: 'chart-msg bad', text: errText(al.err) }));
      return;
    }
    const acked = al.list.filter((a) => isNum(a.ack_s) && isNum(a.raised_ms));
    const never = al.list.filter((a) => !isNum(a.acked_ms) && !isNum(a.ack_s)).length;
    const med = median(acked.map((a) => a.ack_s));
    if (isNum(med)) cap.append(h('span', { class: 'chart-limit median', dataset: { figure: 'median_ack_s' }, text: t('site.median', dur(med)) }));
    if (never) cap.append(h('span', { class: 'chart-limit warn', text: t('site.neverAcked', never) }));
    if (!acked.length) {
      fig.append(h('div', { class: 'chart-msg', text: t('site.noAcks') }));
      return;
    }
    fig.append(scatterChart(fig, {
      points: acked.map((a) => ({ t: a.raised_ms, v: a.ack_s, priority: a.priority, title: fmtTime(a.raised_ms) + ' · ' + where(a) + ' · ' + (a.message || '') + ' · ' + dur(a.ack_s) })),
      from: page.from,
      to: page.to,
      median: med,
      label: t('site.response') + ': ' + t('site.median', dur(med)),
    }));
  }

  function median(vals) {
    const v = vals.filter(isNum).sort((x, y) => x - y);
    if (!v.length) return null;
    const mid = (v.length - 1) / 2;
    return (v[Math.floor(mid)] + v[Math.ceil(mid)]) / 2;
  }

  function renderHistory() {
    const page = st.page;
    if (!page || st.view !== 'site') return;
    const box = $('alarm-history');
    const al = page.alarms;
    if (al.status !== 'ok') {
      put(box, h('p', { class: al.status === 'error' ? 'empty bad' : 'empty', text: al.status === 'error' ? errText(al.err) : t('sup.loading') }));
      return;
    }
    if (!al.list.length) {
      put(box, h('p', { class: 'empty', text: t('site.noHistory') }));
      return;
    }
    const rows = al.list.slice(0, page.historyShown);
    const cols = ['raised', 'priority', 'where', 'resident', 'message', 'state', 'ack', 'by', 'resolved', 'cleared'];
    const table = h('table', { class: 'history' },
      h('thead', null, h('tr', null, cols.map((c) => h('th', { scope: 'col', text: t('col.' + c) })))),
      h('tbody', null, rows.map((a) => h('tr', { class: 'prio-' + a.priority, dataset: { alarmId: a.alarm_id, state: a.state } },
        h('td', { class: 'nowrap', text: fmtTime(a.raised_ms) }),
        h('td', null, h('span', { class: 'prio-dot' }), prioLabel(a.priority)),
        h('td', { text: where(a) }),
        h('td', { text: a.resident || t('common.none') }),
        h('td', { class: 'msg-cell', text: a.message || a.rule || '' }),
        h('td', null, h('span', { class: 'tag state state-' + a.state, text: stateLabel(a.state) })),
        h('td', { class: 'num', text: isNum(a.ack_s) ? dur(a.ack_s) : t('common.none') }),
        h('td', { text: a.acked_by ? a.acked_by.replace(/^(hub|console):/, '') : t('common.none') }),
        h('td', { class: 'num', text: isNum(a.resolved_s) ? dur(a.resolved_s) : t('common.none') }),
        h('td', { class: 'num', text: isNum(a.clear_s) ? dur(a.clear_s) : t('common.none') })))));
    const wrap = h('div', { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-label': t('site.history') }, table);
    const more = al.list.length - rows.length;
    put(box, wrap, more > 0 ? h('button', {
      type: 'button', class: 'more',
      onclick: () => { page.historyShown += 200; renderHistory(); },
      text: t('site.showMore', more),
    }) : null);
  }

  // ===========================================================================
  // Charts (inline SVG, no library)
  // ===========================================================================

  function niceTicks(lo, hi, n) {
    if (!(hi > lo)) {
      const pad = Math.abs(lo) * 0.1 || 1;
      lo -= pad;
      hi += pad;
    }
    const raw = (hi - lo) / n;
    const mag = 10 ** Math.floor(Math.log10(raw));
    const f = raw / mag;
    const step = (f >= 7.5 ? 10 : f >= 3.5 ? 5 : f >= 1.5 ? 2 : 1) * mag;
    const start = Math.floor(lo / step) * step;
    const end = Math.ceil(hi / step) * step;
    const ticks = [];
    for (let v = start; v <= end + step / 2; v += step) ticks.push(Math.round(v / step) * step);
    return { lo: start, hi: end, ticks, step };
  }

  // Local-time ticks: whole hours or local midnights.
  function timeTicks(from, to, width) {
    const span = to - from;
    const max = Math.max(2, Math.floor(width / 80));
    const steps = [HOUR, 2 * HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR, DAY, 2 * DAY, 7 * DAY, 14 * DAY];
    const step = steps.find((x) => span / x <= max) || 30 * DAY;
    const d = new Date(from);
    const ticks = [];
    if (step < DAY) {
      const hs = step / HOUR;
      d.setMinutes(0, 0, 0);
      while (d.getHours() % hs) d.setHours(d.getHours() + 1);
      for (let i = 0; i < 200; i++, d.setHours(d.getHours() + hs)) {
        const tt = d.getTime();
        if (tt > to) break;
        if (tt >= from) ticks.push({ t: tt, label: d.getHours() === 0 ? shortDate(d) : pad2(d.getHours()) + ':00' });
      }
    } else {
      d.setHours(0, 0, 0, 0);
      const ds = step / DAY;
      for (let i = 0; i < 200; i++, d.setDate(d.getDate() + ds)) {
        const tt = d.getTime();
        if (tt > to) break;
        if (tt >= from) ticks.push({ t: tt, label: shortDate(d) });
      }
    }
    return ticks;
  }

  const pad2 = (n) => String(n).padStart(2, '0');
  const shortDate = (d) => d.toLocaleDateString(locale(), { month: 'numeric', day: 'numeric' });

  // The frame shared by both charts: width from the container, axes, grid.
  function chartFrame(container, opts) {
    const W = Math.max(280, Math.floor(container.clientWidth || 600) - 2);
    const H = W < 480 ? 190 : 230;
    const m = { l: 54, r: 14, t: 12, b: 26 };
    const x = (tt) => m.l + ((tt - opts.from) / (opts.to - opts.from)) * (W - m.l - m.r);
    const y = (v) => m.t + (1 - (v - opts.y.lo) / (opts.y.hi - opts.y.lo)) * (H - m.t - m.b);
    const svg = s('svg', { class: 'plot-svg', viewBox: '0 0 ' + W + ' ' + H, width: W, height: H, role: 'img', 'aria-label': opts.label });
    const grid = s('g', { class: 'grid' });
    for (const v of opts.y.ticks) {
      grid.append(s('line', { x1: m.l, x2: W - m.r, y1: y(v), y2: y(v) }));
      grid.append(s('text', { x: m.l - 6, y: y(v) + 4, 'text-anchor': 'end', class: 'tick' }, opts.yFmt(v)));
    }
    for (const tk of timeTicks(opts.from, opts.to, W - m.l - m.r)) {
      grid.append(s('line', { x1: x(tk.t), x2: x(tk.t), y1: m.t, y2: H - m.b, class: 'vgrid' }));
      grid.append(s('text', { x: x(tk.t), y: H - 8, 'text-anchor': 'middle', class: 'tick' }, tk.label));
    }
    svg.append(grid);
    return { svg, W, H, m, x, y };
  }

  function lineChart(container, opts) {
    let lo = Infinity;
    let hi = -Infinity;
    for (const se of opts.series) for (const [, v] of se.points) { if (v < lo) lo = v; if (v > hi) hi = v; }
    const lim = opts.limits || {};
    for (const v of [lim.min, lim.max]) if (isNum(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    const pad = (hi - lo) * 0.06;
    const yr = niceTicks(lo >= 0 ? Math.max(0, lo - pad) : lo - pad, hi + pad, 4);
    const f = chartFrame(container, { from: opts.from, to: opts.to, y: yr, yFmt: (v) => String(+v.toPrecision(6)), label: opts.label });
    const { svg, x, y, W, H, m } = f;

    // out-of-limit bands, then the dashed limits
    if (isNum(lim.max) && lim.max < yr.hi) svg.append(s('rect', { class: 'out-band', x: m.l, width: W - m.l - m.r, y: y(yr.hi), height: y(lim.max) - y(yr.hi) }));
    if (isNum(lim.min) && lim.min > yr.lo) svg.append(s('rect', { class: 'out-band', x: m.l, width: W - m.l - m.r, y: y(lim.min), height: y(yr.lo) - y(lim.min) }));
    for (const v of [lim.min, lim.max]) {
      if (!isNum(v)) continue;
      svg.append(s('line', { class: 'limit', x1: m.l, x2: W - m.r, y1: y(v), y2: y(v) }));
      svg.append(s('text', { class: 'limit-label', x: W - m.r - 4, y: y(v) - 4, 'text-anchor': 'end' }, String(v)));
    }

    const lines = s('g', { class: 'lines' });
    for (const se of opts.series) {
      let d = '';
      let prev = null;
      for (const [tt, v] of se.points) {
        if (tt < opts.from - opts.gapMs || tt > opts.to + opts.gapMs) continue;
        d += (prev === null || tt - prev > opts.gapMs ? 'M' : 'L') + x(tt).toFixed(1) + ' ' + y(v).toFixed(1);
        prev = tt;
      }
      // a lone point still shows as a dot (round line caps)
      if (d) lines.append(s('path', { d: d.replace(/M([\d.]+) ([\d.]+)(?=M|$)/g, 'M$1 $2h0.01'), stroke: se.colour, class: 'series' }));
    }
    svg.append(lines);

    const wrap = h('div', { class: 'plot' }, svg);
    hover(wrap, svg, f, opts);
    const legend = h('ul', { class: 'legend' }, opts.series.map((se) => h('li', null,
      swatch(se.colour), h('span', { text: se.label }))));
    return h('div', null, wrap, opts.series.length > 1 || opts.series[0].label ? legend : null);
  }

  function swatch(colour) {
    const sw = h('span', { class: 'swatch', 'aria-hidden': 'true' });
    sw.style.background = colour; // CSSOM, allowed by the CSP
    return sw;
  }

  // Crosshair and a tooltip with each room's value at the nearest time.
  function hover(wrap, svg, f, opts) {
    const tip = h('div', { class: 'tip', hidden: true });
    const cross = s('line', { class: 'cross', y1: f.m.t, y2: f.H - f.m.b, visibility: 'hidden' });
    svg.append(cross);
    wrap.append(tip);
    const nearest = (pts, tt) => {
      let lo = 0;
      let hi = pts.length - 1;
      while (hi - lo > 1) {
        const mid = (lo + hi) >> 1;
        if (pts[mid][0] < tt) lo = mid; else hi = mid;
      }
      return Math.abs(pts[lo][0] - tt) <= Math.abs(pts[hi][0] - tt) ? pts[lo] : pts[hi];
    };
    const move = (ev) => {
      const r = svg.getBoundingClientRect();
      const px = ((ev.clientX - r.left) / r.width) * f.W;
      if (px < f.m.l || px > f.W - f.m.r) { leave(); return; }
      const tt = opts.from + ((px - f.m.l) / (f.W - f.m.l - f.m.r)) * (opts.to - opts.from);
      const rows = [];
      let at = null;
      for (const se of opts.series) {
        const p = nearest(se.points, tt);
        if (Math.abs(p[0] - tt) > opts.gapMs) continue;
        if (at === null) at = p[0];
        rows.push(h('div', { class: 'tip-row' }, swatch(se.colour), h('span', { text: se.label }), h('b', { text: opts.fmt(p[1]) + ' ' + opts.unit })));
      }
      if (!rows.length) { leave(); return; }
      cross.setAttribute('x1', f.x(at));
      cross.setAttribute('x2', f.x(at));
      cross.setAttribute('visibility', 'visible');
      put(tip, h('div', { class: 'tip-time', text: fmtTime(at) }), ...rows.slice(0, 12));
      tip.hidden = false;
      const left = ((f.x(at) / f.W) * r.width);
      tip.classList.toggle('left', left > r.width / 2);
      tip.style.left = left > r.width / 2 ? '' : (left + 12) + 'px';
      tip.style.right = left > r.width / 2 ? (r.width - left + 12) + 'px' : '';
    };
    const leave = () => {
      tip.hidden = true;
      cross.setAttribute('visibility', 'hidden');
    };
    svg.addEventListener('pointermove', move);
    svg.addEventListener('pointerdown', move);
    svg.addEventListener('pointerleave', leave);
  }

  // Ticks on whole seconds, minutes, hours or days.
  function durTicks(hi, n) {
    const steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800];
    const step = steps.find((x) => hi / x <= n) || 604800 * Math.ceil(hi / 604800 / n);
    const top = Math.max(step, Math.ceil(hi / step) * step);
    const ticks = [];
    for (let v = 0; v <= top; v += step) ticks.push(v);
    return { lo: 0, hi: top, ticks, step };
  }

  function scatterChart(container, opts) {
    const hi = Math.max(...opts.points.map((p) => p.v), opts.median || 0);
    const yr = durTicks(hi * 1.05, 4);
    const f = chartFrame(container, { from: opts.from, to: opts.to, y: yr, yFmt: shortDur, label: opts.label });
    const { svg, x, y, W, m } = f;
    const g = s('g', { class: 'dots' });
    for (const p of opts.points) {
      g.append(s('circle', { cx: x(p.t).toFixed(1), cy: y(p.v).toFixed(1), r: 5, class: 'dot prio-' + p.priority },
        s('title', null, p.title)));
    }
    svg.append(g);
    if (isNum(opts.median)) {
      svg.append(s('line', { class: 'limit median', x1: m.l, x2: W - m.r, y1: y(opts.median), y2: y(opts.median) }));
      svg.append(s('text', { class: 'limit-label median', x: W - m.r - 4, y: y(opts.median) - 5, 'text-anchor': 'end' }, t('site.median', dur(opts.median))));
    }
    const legend = h('ul', { class: 'legend' }, PRIOS.map((p) => h('li', null,
      h('span', { class: 'swatch round prio-' + p, 'aria-hidden': 'true' }), h('span', { text: t('prio.' + p + '.long') }))));
    return h('div', null, h('div', { class: 'plot' }, svg), legend);
  }

  // ===========================================================================
  // View: supervision
  // ===========================================================================

  function scopeSites() {
    const ids = new Set(st.sites.keys());
    if (st.me && Array.isArray(st.me.sites)) for (const x of st.me.sites) if (x && x !== '*') ids.add(x);
    return Array.from(ids).sort();
  }

  function supRange() {
    const sup = st.sup;
    if (sup.range === 'custom') return { from: sup.from, to: sup.to };
    const to = now();
    return { from: to - RANGES[sup.range], to };
  }

  function loadSupervision() {
    const sup = st.sup;
    const gen = ++sup.gen;
    const r = supRange();
    sup.from = r.from;
    sup.to = r.to;
    sup.results = new Map();
    if (!st.sitesLoaded) {
      renderSupervision();
      return; // loadSites() calls back when the list is in
    }
    const ids = scopeSites();
    for (const id of ids) sup.results.set(id, { status: 'loading' });
    renderSupervision();
    for (const id of ids) {
      summaryQueue(() => (gen === sup.gen
        ? api('/summary?site=' + encodeURIComponent(id) + '&from=' + Math.round(r.from) + '&to=' + Math.round(r.to))
        : Promise.resolve(null)))
        .then((d) => {
          if (gen === sup.gen) sup.results.set(id, { status: 'ok', data: d || {} });
        }, (err) => {
          if (gen === sup.gen) sup.results.set(id, { status: 'error', err });
        })
        .then(() => {
          if (gen === sup.gen && st.view === 'supervision') renderSummaryCard(id);
        });
    }
  }

  function renderSupervision() {
    const sup = st.sup;
    for (const b of $('sup-range').querySelectorAll('button')) b.setAttribute('aria-pressed', String(b.dataset.range === sup.range));
    $('sup-custom').hidden = sup.range !== 'custom';
    $('sup-period').textContent = sup.from ? t('sup.period', fmtDateTime(sup.from), fmtDateTime(sup.to)) : '';
    const status = $('sup-status');
    if (!st.sitesLoaded) {
      status.hidden = false;
      status.className = st.sitesError ? 'empty bad' : 'empty';
      status.textContent = st.sitesError ? errText(st.sitesError) : t('sup.loading');
      return;
    }
    const ids = Array.from(sup.results.keys());
    status.hidden = ids.length > 0;
    status.className = 'empty';
    status.textContent = t('sup.none');
    const box = $('sup-cards');
    const cards = ids.map((id) => {
      let c = box.querySelector('.summary-card[data-site="' + cssEsc(id) + '"]');
      if (!c) c = h('article', { class: 'summary-card', dataset: { site: id } });
      return c;
    });
    reorder(box, cards);
    ids.forEach((id) => renderSummaryCard(id));
  }

  function cssEsc(v) {
    return window.CSS && CSS.escape ? CSS.escape(v) : v.replace(/["\\]/g, '\\$&');
  }

  function fmtDateTime(ms) {
    return new Date(ms).toLocaleString(locale(), { year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', hour12: false });
  }

  function renderOverview() {
    const box = $('sup-overview');
    const res = Array.from(st.sup.results.values()).filter((r) => r.status === 'ok');
    if (!st.sup.results.size) {
      box.replaceChildren();
      return;
    }
    let raised = 0;
    let never = 0;
    let low = 0;
    for (const r of res) {
      const a = r.data.alarms || {};
      raised += a.raised || 0;
      never += a.never_acked || 0;
      if ((r.data.environment || []).some((e) => isNum(e.within_pct) && e.within_pct < 95)) low++;
    }
    const item = (label, value, cls) => h('div', { class: 'ov' + (cls ? ' ' + cls : '') }, h('span', { class: 'ov-n', text: value }), h('span', { class: 'ov-l', text: label }));
    put(box,
      item(t('sup.overview.sites'), String(st.sup.results.size)),
      item(t('sup.overview.raised'), fmtInt(raised)),
      item(t('sup.overview.never'), fmtInt(never), never ? 'warn' : ''),
      item(t('sup.overview.lowCompliance'), String(low), low ? 'warn' : ''));
  }

  function renderSummaryCard(id) {
    renderOverview();
    const card = $('sup-cards').querySelector('.summary-card[data-site="' + cssEsc(id) + '"]');
    if (!card) return;
    const r = st.sup.results.get(id) || { status: 'loading' };
    const site = st.sites.get(id);
    const head = h('div', { class: 'sc-head' },
      h('h2', null, h('a', { href: '#/site/' + encodeURIComponent(id), text: id })),
      site ? h('span', { class: 'badge ' + (site.online ? 'on' : 'off'), text: site.online ? t('sites.online') : t('sites.offline') }) : null);
    card.dataset.status = r.status;
    if (r.status === 'loading') {
      put(card, head, h('p', { class: 'sc-msg', text: t('sup.loading') }));
      return;
    }
    if (r.status === 'error') {
      put(card, head, h('p', { class: 'sc-msg bad', text: errText(r.err) }),
        r.err.status === 403 ? null : h('button', { type: 'button', class: 'retry', onclick: () => retrySummary(id), text: t('common.retry') }));
      return;
    }
    const d = r.data;
    const a = d.alarms || {};
    const bp = a.by_priority || {};
    const fig = (key, label, value, human, cls, def) => h('div', { class: 'fig' + (cls ? ' ' + cls : ''), title: def || null },
      h('span', { class: 'fig-l', text: label }),
      h('span', { class: 'fig-v', dataset: { figure: key, value: isNum(value) ? value : '' } }, human),
    );
    const secs = (key, label, v, def) => fig(key, label, v,
      [isNum(v) ? fmtFigure(v) + ' ' + t('unit.s') : t('common.none'),
        isNum(v) && v >= 60 ? h('small', { text: ' (' + dur(v) + ')' }) : null], '', def);

    const alarms = h('section', { class: 'sc-alarms' },
      h('h3', { text: t('sup.alarms') }),
      h('div', { class: 'figs' },
        fig('raised', t('sup.raised'), a.raised, fmtInt(a.raised), 'big'),
        h('div', { class: 'fig prio-split' }, PRIOS.map((p) => h('span', { class: 'chip prio-' + p + (bp[p] ? '' : ' zero'), title: t('prio.' + p + '.long') },
          h('span', { class: 'chip-l', text: prioLabel(p) }), h('span', { class: 'chip-n', dataset: { figure: 'by_priority.' + p }, text: fmtInt(bp[p] || 0) })))),
        fig('acked', t('sup.acked'), a.acked, fmtInt(a.acked)),
        fig('never_acked', t('sup.neverAcked'), a.never_acked, fmtInt(a.never_acked), a.never_acked ? 'warn' : ''),
        secs('ack_p50_s', t('sup.ackP50'), a.ack_p50_s, t('sup.ackP50.def')),
        secs('ack_p90_s', t('sup.ackP90'), a.ack_p90_s),
        secs('resolved_p50_s', t('sup.resolvedP50'), a.resolved_p50_s, t('sup.resolvedP50.def')),
        secs('clear_p50_s', t('sup.clearP50'), a.clear_p50_s, t('sup.clearP50.def'))));

    const devices = d.devices || {};
    const comp = d.completeness || {};
    const ops = h('section', { class: 'sc-ops' },
      pctBar('online_pct', t('sup.devices'), devices.online_pct, isNum(devices.total) ? t('sup.deviceCount', fmtInt(devices.total)) : ''),
      pctBar('completeness_pct', t('sup.completeness'), comp.pct, isNum(comp.received) ? t('sup.received', fmtInt(comp.received), fmtInt(comp.expected)) : ''),
      (comp.gateways || []).length > 1 ? h('ul', { class: 'gw-comp' }, comp.gateways.map((g) => h('li', { text: g.gateway + ': ' + fmtPct(g.pct) }))) : null);

    put(card, head, alarms, ops, envSection(d.environment || []), exportRow(id));
  }

  function retrySummary(id) {
    const sup = st.sup;
    const gen = sup.gen;
    sup.results.set(id, { status: 'loading' });
    renderSummaryCard(id);
    summaryQueue(() => api('/summary?site=' + encodeURIComponent(id) + '&from=' + Math.round(sup.from) + '&to=' + Math.round(sup.to)))
      .then((d) => { if (gen === sup.gen) sup.results.set(id, { status: 'ok', data: d || {} }); },
        (err) => { if (gen === sup.gen) sup.results.set(id, { status: 'error', err }); })
      .then(() => { if (gen === sup.gen && st.view === 'supervision') renderSummaryCard(id); });
  }

  function pctBar(key, label, v, sub) {
    const fill = h('span', { class: 'bar-fill ' + pctClass(v) });
    fill.style.width = (isNum(v) ? clamp(v, 0, 100) : 0) + '%';
    return h('div', { class: 'pct' },
      h('div', { class: 'pct-top' },
        h('span', { class: 'pct-l', text: label }),
        h('span', { class: 'pct-v', dataset: key ? { figure: key, value: isNum(v) ? v : '' } : null, text: fmtPct(v) })),
      h('span', { class: 'bar', role: 'meter', 'aria-label': label, 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': isNum(v) ? v : 0 }, fill),
      sub ? h('span', { class: 'pct-sub', text: sub }) : null);
  }

  function pctClass(v) {
    if (!isNum(v)) return 'na';
    return v >= 95 ? 'good' : v >= 80 ? 'fair' : 'poor';
  }

  // Compliance as a table: one row per room, one column per metric, each
  // cell the share of time within the limit as a number and a bar.
  function envSection(env) {
    const sec = h('section', { class: 'sc-env' }, h('h3', { text: t('sup.env') }));
    if (!env.length) {
      sec.append(h('p', { class: 'sc-msg', text: t('sup.noEnv') }));
      return sec;
    }
    const order = (mm) => { const i = ENV_METRICS.indexOf(mm); return i < 0 ? 99 : i; };
    const metrics = Array.from(new Set(env.map((e) => e.metric))).sort((x, y) => order(x) - order(y) || (x < y ? -1 : 1));
    const rooms = Array.from(new Set(env.map((e) => e.room || ''))).sort((x, y) => x.localeCompare(y, undefined, { numeric: true }));
    const cell = new Map(env.map((e) => [(e.room || '') + '\u0000' + e.metric, e]));
    const limitOf = (mm) => {
      const e = env.find((x) => x.metric === mm && (isNum(x.min) || isNum(x.max)));
      return e ? limitText(mm, { min: e.min, max: e.max }) : '';
    };
    const metricName = (mm) => (DICT.en['metric.' + mm] ? t('metric.' + mm) : mm);
    const table = h('table', { class: 'env-table' },
      h('thead', null, h('tr', null,
        h('th', { scope: 'col', text: t('sup.room') }),
        metrics.map((mm) => h('th', { scope: 'col', dataset: { metric: mm } },
          h('span', { class: 'env-m', text: metricName(mm) }), h('span', { class: 'env-lim', text: limitOf(mm) }))))),
      h('tbody', null, rooms.map((room) => h('tr', { dataset: { room } },
        h('th', { scope: 'row', text: room || t('common.none') }),
        metrics.map((mm) => {
          const e = cell.get(room + '\u0000' + mm);
          if (!e) return h('td', { class: 'na', text: t('common.none') });
          const v = e.within_pct;
          const fill = h('span', { class: 'bar-fill ' + pctClass(v) });
          fill.style.width = (isNum(v) ? clamp(v, 0, 100) : 0) + '%';
          return h('td', {
            dataset: { metric: mm, value: isNum(v) ? v : '' },
            title: metricName(mm) + ' · ' + t('alarms.room', room) + (isNum(e.samples) ? ' · ' + t('sup.samples', fmtInt(e.samples)) : ''),
          },
          h('span', { class: 'env-v ' + pctClass(v), text: fmtPct(v) }),
          h('span', { class: 'bar', 'aria-hidden': 'true' }, fill));
        })))));
    sec.append(h('div', { class: 'table-wrap env-wrap' }, table));
    return sec;
  }

  function exportRow(id) {
    const mk = (data, format) => h('button', {
      type: 'button', class: 'export-btn', dataset: { data, format, site: id },
      text: t(data === 'telemetry' ? 'sup.telemetry' : 'sup.alarmsData') + ' · ' + format.toUpperCase(),
    });
    return h('div', { class: 'sc-export' },
      h('span', { class: 'exp-l', text: t('sup.export') }),
      mk('telemetry', 'csv'), mk('telemetry', 'json'), mk('alarms', 'csv'), mk('alarms', 'json'));
  }

  function filenameFrom(disposition, fallback) {
    if (disposition) {
      const star = /filename\*\s*=\s*(?:UTF-8|utf-8)''([^;]+)/.exec(disposition);
      if (star) {
        try { return sanitizeName(decodeURIComponent(star[1].trim())); } catch (e) { /* fall through */ }
      }
      const plain = /filename\s*=\s*(?:"([^"]*)"|([^;]+))/.exec(disposition);
      if (plain) return sanitizeName((plain[1] || plain[2]).trim());
    }
    return fallback;
  }

  function sanitizeName(n) {
    return n.replace(/[\\/:*?"<>|\u0000-\u001f]/g, '_') || 'export';
  }

  async function doExport(btn) {
    const { data, format, site } = btn.dataset;
    const sup = st.sup;
    const q = '/export?site=' + encodeURIComponent(site) + '&from=' + Math.round(sup.from) + '&to=' + Math.round(sup.to) +
      '&data=' + data + '&format=' + format;
    const label = btn.textContent;
    btn.disabled = true;
    btn.setAttribute('aria-busy', 'true');
    btn.textContent = t('sup.exporting');
    try {
      const res = await api(q, { raw: true });
      const blob = await res.blob();
      const day = (ms) => new Date(ms).toISOString().slice(0, 10);
      const name = filenameFrom(res.headers.get('Content-Disposition'),
        site + '-' + data + '-' + day(sup.from) + '-' + day(sup.to) + '.' + format);
      const url = URL.createObjectURL(blob);
      const a = h('a', { href: url, download: name, hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
      toast(t('sup.exported', name));
    } catch (err) {
      if (err.status !== 401) toast(site + ': ' + errText(err), 'bad');
    } finally {
      btn.disabled = false;
      btn.removeAttribute('aria-busy');
      btn.textContent = label;
    }
  }

  function inputDate(ms) {
    const d = new Date(ms);
    return d.getFullYear() + '-' + pad2(d.getMonth() + 1) + '-' + pad2(d.getDate());
  }

  function onSupRange(range) {
    const sup = st.sup;
    if (range === 'custom') {
      sup.range = 'custom';
      if (!$('sup-from').value) {
        $('sup-from').value = inputDate(sup.from || now() - 7 * DAY);
        $('sup-to').value = inputDate(sup.to || now());
      }
      renderSupervision();
      $('sup-from').focus();
      return;
    }
    sup.range = range;
    loadSupervision();
  }

  function onSupCustom(ev) {
    ev.preventDefault();
    const parse = (v) => {
      const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(v || '');
      return m ? new Date(+m[1], +m[2] - 1, +m[3]).getTime() : NaN;
    };
    const from = parse($('sup-from').value);
    let to = parse($('sup-to').value);
    if (isNum(to)) to = Math.min(to + DAY, now()); // through the end of that day
    if (!isNum(from) || !isNum(to) || to <= from || to - from > 400 * DAY) {
      toast(t('sup.badRange'), 'bad');
      return;
    }
    st.sup.range = 'custom';
    st.sup.from = from;
    st.sup.to = to;
    loadSupervision();
  }

  // ===========================================================================
  // Start
  // ===========================================================================

  function tick() {
    for (const e of document.querySelectorAll('[data-fmt="ago"][data-since]')) {
      const v = Number(e.dataset.since);
      e.textContent = ago(isNum(v) && e.dataset.since !== '' ? v : null);
    }
  }

  function init() {
    st.lang = initialLang();
    applyStaticLabels();
    setLive('connecting');
    // no language chosen in this browser yet: the hub's (api.locale, e.g. a
    // hub of Chongqing's homes in Chinese) rather than the browser's
    if (!localStorage.getItem(LANG_KEY)) {
      fetch('/api/v1/console', { credentials: 'same-origin' }).then((r) => (r.ok ? r.json() : null)).then((d) => {
        const lang = d && /^zh/i.test(d.locale || '') ? 'zh' : d && d.locale === 'en' ? 'en' : null;
        if (lang && lang !== st.lang && !localStorage.getItem(LANG_KEY)) {
          st.lang = lang;
          applyStaticLabels();
          if (st.me) renderUser();
        }
      }, () => { /* the browser's language will do */ });
    }

    $('login-form').addEventListener('submit', onLogin);
    $('use-token').addEventListener('click', () => setLoginWay(!st.loginWithToken));
    $('user-add-form').addEventListener('submit', onAddUser);
    $('users-rows').addEventListener('click', onUserAction);
    $('logout').addEventListener('click', logout);
    for (const b of document.querySelectorAll('[data-lang]')) b.addEventListener('click', () => setLang(b.dataset.lang));
    $('alarm-groups').addEventListener('click', onCardClick);
    $('alarm-site-filter').addEventListener('change', (ev) => { st.siteFilter = ev.target.value; renderAlarms(); });
    $('sound').addEventListener('click', () => {
      unlockAudio();
      st.soundOn = !st.soundOn;
      localStorage.setItem(SOUND_KEY, st.soundOn ? 'on' : 'off');
      renderSoundButton();
    });
    $('site-search').addEventListener('input', (ev) => { st.siteSearch = ev.target.value; renderSites(); });
    $('site-range').addEventListener('click', (ev) => {
      const b = ev.target.closest('button[data-range]');
      if (!b || !st.page || st.page.range === b.dataset.range) return;
      st.page.range = b.dataset.range;
      loadSitePage();
    });
    $('sup-range').addEventListener('click', (ev) => {
      const b = ev.target.closest('button[data-range]');
      if (b) onSupRange(b.dataset.range);
    });
    $('sup-custom').addEventListener('submit', onSupCustom);
    $('sup-cards').addEventListener('click', (ev) => {
      const b = ev.target.closest('.export-btn');
      if (b && !b.disabled) doExport(b);
    });
    document.addEventListener('pointerdown', unlockAudio, { once: true });
    window.addEventListener('hashchange', route);
    let resizeTimer = null;
    let lastWidth = window.innerWidth;
    window.addEventListener('resize', () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => {
        if (window.innerWidth === lastWidth) return;
        lastWidth = window.innerWidth;
        if (st.view === 'site') { renderCharts(); renderResponseChart(); }
      }, 150);
    });
    document.addEventListener('visibilitychange', () => {
      // A phone that slept may hold a dead stream: wake the reconnect now.
      if (!document.hidden && st.me && $('live').dataset.state !== 'live' && st.stream.wake) st.stream.wake();
    });
    setInterval(tick, 1000);

    setLoginWay(false);
    st.token = sessionStorage.getItem(TOKEN_KEY);
    if (!st.token) {
      // perhaps a session cookie from before (a reload): ask who we are
      api('/me', { login: true }).then((me) => {
        st.auth = 'cookie';
        startSession(me);
      }, () => showLoginView(''));
      return;
    }
    st.auth = 'token';
    api('/me', { login: true }).then(startSession, (err) => {
      st.token = null;
      if (err.status === 401) sessionStorage.removeItem(TOKEN_KEY);
      showLoginView(err.status === 401 ? t('login.expired') : errText(err));
      if (err.status !== 401) {
        setLoginWay(true);
        $('token').value = sessionStorage.getItem(TOKEN_KEY) || '';
      }
    });
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
