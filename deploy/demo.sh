#!/usr/bin/env bash
# Runs a whole simulated care site on this machine, on loopback, in a
# temporary directory: Mosquitto (central and the gateways' local one),
# InfluxDB, care-sim (Modbus TCP and RTU over a socat pseudo-terminal pair,
# and a care home's bracelets and Wi-Fi beds over MQTT), care-hub with its
# API and web console (demo accounts, printed), two care-edge gateways with
# their alarm consoles, and a stand-in for the carers' phones.
#
#   deploy/demo.sh                    run until Ctrl-C
#   deploy/demo.sh --duration 120     run 120 s (every scripted alarm), then
#                                     print what was stored
#   deploy/demo.sh --keep             keep the temporary directory (logs, data)
#
# Installs missing Debian packages first (needs root for that) and builds.
# Prints each alarm as it is raised and each notification as the phone shows
# it. The last line printed is the number of readings stored per
# measurement, residents' and rooms' apart from the programs' own; the exit
# status is non-zero if none were stored.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=0
KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=${2:?--duration needs seconds}; shift 2 ;;
    --duration=*) DURATION=${1#*=}; shift ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done
case "$DURATION" in ''|*[!0-9]*) echo "demo.sh: --duration takes whole seconds" >&2; exit 2 ;; esac

say() { printf '\033[1m[demo]\033[0m %s\n' "$*"; }

"$ROOT/deploy/install-deps.sh"

BUILD="$ROOT/build"
say "building in $BUILD"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target care-edge care-hub care-sim >/dev/null
BIN="$BUILD/bin"

WORK=$(mktemp -d /tmp/carehub-demo.XXXXXX)
PIDS=()
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start() { # name, command...: runs in the background, output to $WORK/name.log
  local name=$1; shift
  "$@" >"$WORK/$name.log" 2>&1 &
  PIDS+=("$!")
  eval "PID_${name//-/_}=$!"
}
stop_pid() { # pid [seconds]
  local pid=$1 t=${2:-10}
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq $((t * 10))); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}
FINISHED=0
cleanup() {
  [ $FINISHED -eq 1 ] && return
  FINISHED=1
  trap - INT TERM
  for ((i=${#PIDS[@]}-1; i>=0; i--)); do stop_pid "${PIDS[$i]}"; done
  if [ $KEEP -eq 1 ]; then say "logs and data kept in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'echo; say "Ctrl-C"; INTERRUPTED=1' INT TERM
INTERRUPTED=0

wait_port() { # port seconds
  for _ in $(seq $(($2 * 10))); do
    (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1
  done
  echo "demo.sh: nothing listens on port $1 after $2 s" >&2; return 1
}
wait_log() { # file pattern seconds
  for _ in $(seq $(($3 * 10))); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "demo.sh: $1 never said '$2':" >&2; tail -20 "$1" >&2; return 1
}

MQTT_PORT=$(free_port); INFLUX_PORT=$(free_port); MODBUS_PORT=$(free_port)
LOCAL_PORT=$(free_port); CONSOLE_PORT=${CAREHUB_CONSOLE_PORT:-$(free_port)}
HUB_PORT=$(free_port); DAY_CONSOLE_PORT=$(free_port); PHONE_PORT=$(free_port)
INFLUX="http://127.0.0.1:$INFLUX_PORT"

say "working in $WORK"
cat >"$WORK/mosquitto.conf" <<CONF
per_listener_settings false
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
max_queued_messages 1000000
persistence false
log_dest stderr
user root
CONF
start mosquitto mosquitto -c "$WORK/mosquitto.conf"
wait_port "$MQTT_PORT" 10
sed -e "s/^listener $MQTT_PORT /listener $LOCAL_PORT /" "$WORK/mosquitto.conf" >"$WORK/mosquitto-local.conf"
start mosquitto-local mosquitto -c "$WORK/mosquitto-local.conf"
wait_port "$LOCAL_PORT" 10
say "Mosquitto on 127.0.0.1:$MQTT_PORT (central), 127.0.0.1:$LOCAL_PORT (the gateway's local broker)"
# every alarm as the gateways raise it, from the central broker's alert topics
DEMO_T0=$(date +%s.%N)
start alarms python3 -u "$ROOT/deploy/demo_alarms.py" "$MQTT_PORT" "$DEMO_T0" "$WORK/alarms.json"

mkdir -p "$WORK/influx"
sed -e "s|@DIR@|$WORK/influx|g" -e "s|@HTTP_PORT@|$INFLUX_PORT|" -e "s|@RPC_PORT@|$(free_port)|" \
  "$ROOT/deploy/influxdb/loopback.conf.in" >"$WORK/influxdb.conf"
start influxd influxd -config "$WORK/influxdb.conf"
for _ in $(seq 300); do curl -sf -o /dev/null "$INFLUX/ping" && break; sleep 0.1; done
curl -sf -o /dev/null "$INFLUX/ping" || { echo "demo.sh: InfluxDB did not start" >&2; tail "$WORK/influxd.log" >&2; exit 1; }
say "InfluxDB on $INFLUX"

start socat socat -d -d "pty,raw,echo=0,link=$WORK/rs485-edge" "pty,raw,echo=0,link=$WORK/rs485-sim"
for _ in $(seq 50); do [ -e "$WORK/rs485-sim" ] && [ -e "$WORK/rs485-edge" ] && break; sleep 0.1; done

cat >"$WORK/sim.yaml" <<CONF
seed: 2026
endpoints:
  - {id: lan, tcp: "127.0.0.1:$MODBUS_PORT"}
  - {id: rs485, rtu: "$WORK/rs485-sim", baud: 9600}
slaves:
  - {name: th-101, endpoint: rs485, unit: 1, model: jxct-th}
  - {name: th-102, endpoint: rs485, unit: 2, model: xy-md02}
  - {name: co2-nap, endpoint: rs485, unit: 254, model: co2-s8}
  - {name: th-103, endpoint: rs485, unit: 3, model: jxct-th}
  - {name: air-hall, endpoint: lan, unit: 1, model: air-board}
  - {name: air-nursery, endpoint: lan, unit: 2, model: air-board}
  - {name: gas-kitchen, endpoint: lan, unit: 3, model: gas-lel}
  - {name: panel-203, endpoint: lan, unit: 4, model: call-panel}
  - {name: bed-203a, endpoint: lan, unit: 5, model: bed-mb}
  - {name: relay-9, endpoint: lan, unit: 9, model: relay-4ch}
scenario:
  - {at: 25s, slave: panel-203, set: {metric: sos, value: 1}}
  - {at: 28s, slave: panel-203, set: {metric: sos, value: 0}}
  - {at: 5s, slave: co2-nap, set: {metric: co2, ramp_to: 2400, over: 60s}}
  - {at: 20s, slave: th-103, fault: silent}
  - {at: 40s, slave: th-103, fault: none}
  - {at: 30s, slave: air-nursery, fault: exception}
  - {at: 45s, slave: air-nursery, fault: none}
CONF
start care-sim "$BIN/care-sim" -c "$WORK/sim.yaml"
wait_log "$WORK/care-sim.log" "care-sim ready" 10
say "care-sim: 4 meters on a simulated RS-485 line; 3 meters, a nurse-call panel, a bed sensor and a sounder relay on Modbus TCP 127.0.0.1:$MODBUS_PORT"

cat >"$WORK/hub.yaml" <<CONF
mqtt:
  broker: tcp://127.0.0.1:$MQTT_PORT
  client_id: care-hub-demo
influx:
  url: $INFLUX
  version: 1
  database: carehub
  flush_interval: 1s
spool: {dir: "$WORK/hub-spool"}
api:
  bind: 127.0.0.1
  port: $HUB_PORT
  tokens_file: "$WORK/tokens.yaml"
  users_file: "$WORK/users.yaml"
self_metrics_interval: 10s
CONF
echo "tokens: []" >"$WORK/tokens.yaml"
# people's accounts, made as an installer makes them (password on stdin)
DEMO_SITES=demo-home-001,care-day
HUB_ACCOUNTS=(
  "admin|admin-demo-2026|admin|*|管理员"
  "护士小王|xiaowang-demo|staff|$DEMO_SITES|王护士"
  "民政局检查员|regulator-demo|regulator|$DEMO_SITES|渝中区民政局"
)
for acct in "${HUB_ACCOUNTS[@]}"; do
  IFS='|' read -r name password role sites display <<<"$acct"
  printf '%s\n' "$password" | "$BIN/care-hub" users -c "$WORK/hub.yaml" add "$name" \
    --role "$role" --sites "$sites" --display "$display" >>"$WORK/users-cli.log" 2>&1 \
    || { cat "$WORK/users-cli.log" >&2; exit 1; }
done
start care-hub "$BIN/care-hub" -c "$WORK/hub.yaml"
wait_log "$WORK/care-hub.log" "serving the API" 10
wait_log "$WORK/care-hub.log" "care-hub-demo subscribed to carehub/v1/+/+/#" 10
say "care-hub: API and web console on http://127.0.0.1:$HUB_PORT/ , accounts (name / password / role):"
for acct in "${HUB_ACCOUNTS[@]}"; do
  IFS='|' read -r name password role sites display <<<"$acct"
  printf '    %s / %s / %s (%s)\n' "$name" "$password" "$role" "${sites//\*/every site}"
done

CONSOLE_PASSWORD=carehub-demo
HASH=$(printf '%s\n' "$CONSOLE_PASSWORD" | "$BIN/care-edge" --hash-password)
cat >"$WORK/site.yaml" <<CONF
site: demo-home-001
gateway: gw-01
site_name: 阳光养老院
locale: zh-CN
rooms:
  - {id: "101", name: 101室}
  - {id: "102", name: 102室}
  - {id: "103", name: 103室}
  - {id: nap-room, name: 午休室}
  - {id: hall, name: 大厅}
  - {id: nursery, name: 活动室}
  - {id: kitchen, name: 厨房}
  - {id: "203", name: 203室, beds: [{id: 203-A, name: 1床}]}
uplink:
  broker: tcp://127.0.0.1:$MQTT_PORT
  batch_interval: 1s
spool: {dir: "$WORK/spool"}
profiles: [$ROOT/deploy/profiles]
buses:
  - {id: rs485-1, type: modbus-rtu, device: "$WORK/rs485-edge", baud: 9600, timeout: 300ms, backoff_max: 10s}
  - {id: lan, type: modbus-tcp, host: 127.0.0.1, port: $MODBUS_PORT, timeout: 1s}
devices:
  - {id: th-101, bus: rs485-1, slave: 1, profile: jxct-th, interval: 2s, room: "101"}
  - {id: th-102, bus: rs485-1, slave: 2, profile: xy-md02, interval: 2s, room: "102"}
  - {id: co2-nap, bus: rs485-1, slave: 0xFE, profile: co2-s8, interval: 2s, room: nap-room}
  - {id: th-103, bus: rs485-1, slave: 3, profile: jxct-th, interval: 2s, room: "103"}
  - {id: air-hall, bus: lan, slave: 1, profile: air-board, interval: 2s, room: hall}
  - {id: air-nursery, bus: lan, slave: 2, profile: air-board, interval: 2s, room: nursery}
  - {id: gas-kitchen, bus: lan, slave: 3, profile: gas-lel, interval: 1s, room: kitchen}
  - {id: panel-203, bus: lan, slave: 4, profile: call-panel, interval: 500ms, room: "203"}
  - {id: bed-203a, bus: lan, slave: 5, profile: bed-mb, interval: 2s, room: "203"}
timezone: Asia/Shanghai
rule_packs: [$ROOT/deploy/rules/elderly-care.yaml]
residents:
  - {id: R-0417, name: 孙奶奶, room: "203", bed: 203-A, devices: [panel-203, bed-203a], params: {hr_low: 45}}
annunciators:
  - {id: sounder, bus: lan, slave: 9, coil: 0, priorities: [high]}
console:
  enabled: true
  bind: 127.0.0.1
  port: $CONSOLE_PORT
  users: [{name: demo, password_hash: "$HASH"}]
local_mqtt: {broker: "tcp://127.0.0.1:$LOCAL_PORT"}
self_metrics_interval: 10s
CONF
"$BIN/care-edge" --check -c "$WORK/site.yaml"
say "what an installer sees with care-edge --once:"
"$BIN/care-edge" --once -c "$WORK/site.yaml" || true
start care-edge "$BIN/care-edge" -c "$WORK/site.yaml"
say "care-edge polling 9 devices; care-hub writing to InfluxDB database 'carehub'"

# A day in a care home on a second gateway, 幸福里养老院 (care-day): 8
# residents' bracelets heard by BLE receivers of three makes, and Wi-Fi bed
# sensors, all publishing to the local broker; the events of a night within
# the first 90 s (care-day-demo.yaml), its rules' delays shortened to match.
# Its notifications go to the phones' stand-in; its night window is moved to
# now, so that the bed exit counts as at night whenever the demo runs.
NIGHT=$(TZ=Asia/Shanghai python3 -c 'import time; t=time.time(); f=lambda s: time.strftime("%H:%M", time.localtime(s)); print(f(t-3600)+"-"+f(t+3*3600))')
DAY_PASSWORD=xiaowang-demo   # console user 护士小王 of care-day-site.yaml
sed -e "s#tcp://127.0.0.1:1883#tcp://127.0.0.1:$LOCAL_PORT#" \
  "$ROOT/deploy/sim/care-day.yaml" >"$WORK/care-day.yaml"
sed -e "s#broker: tcp://127.0.0.1:1883#broker: tcp://127.0.0.1:$MQTT_PORT#" \
  -e "s#port: 1883#port: $LOCAL_PORT#" -e "s#dir: /tmp/carehub-demo/care-day-spool#dir: \"$WORK/care-day-spool\"#" \
  -e "s#profiles: \[../profiles\]#profiles: [$ROOT/deploy/profiles]#" \
  -e "s#port: 8081#port: $DAY_CONSOLE_PORT#" -e "s#http://127.0.0.1:8099/#http://127.0.0.1:$PHONE_PORT/#" \
  -e "s#window: \"22:00-06:00\"#window: \"$NIGHT\"#" \
  "$ROOT/deploy/sim/care-day-site.yaml" >"$WORK/care-day-site.yaml"
"$BIN/care-edge" --check -c "$WORK/care-day-site.yaml"
start phone env TZ=Asia/Shanghai python3 -u "$ROOT/deploy/demo_phone.py" "$PHONE_PORT" "$WORK/phone.jsonl"
wait_port "$PHONE_PORT" 10
say "carers' phones: a webhook receiver on 127.0.0.1:$PHONE_PORT stands in for the WeCom group 值班护理员群, the head nurse's SMS and maintenance's webhook"
DAY_T0=$(date +%s)
start care-sim-day "$BIN/care-sim" -c "$WORK/care-day.yaml" --scenario "$ROOT/deploy/sim/care-day-demo.yaml"
wait_log "$WORK/care-sim-day.log" "connected to" 10
start care-edge-day "$BIN/care-edge" -c "$WORK/care-day-site.yaml"
say "gateway gw-day (幸福里养老院, care-day) from +$(( DAY_T0 - ${DEMO_T0%.*} )) s: 8 residents' bracelets and Wi-Fi beds; its scenario (s after that): stairs receiver offline 10 (back 80), 李爷爷 falls 15, 张爷爷 presses SOS 25, 赵奶奶 out of bed at night 30, 王奶奶 (dementia) walks to the east exit 35, 刘奶奶's heart rate rising 40, 陈奶奶 takes her bracelet off 45, 杨爷爷's battery dying from 50; 护士小王 acknowledges the fall at 90"
say "alarm consoles: 阳光养老院 (demo-home-001) http://127.0.0.1:$CONSOLE_PORT/ (user demo, password $CONSOLE_PASSWORD; SOS pulled in room 203 at 25 s); 幸福里养老院 (care-day) http://127.0.0.1:$DAY_CONSOLE_PORT/ (user 护士小王, password $DAY_PASSWORD)"
python3 "$ROOT/deploy/demo_alarms.py" --hub-login "$HUB_PORT" 护士小王 xiaowang-demo || true
if [ "$DURATION" -gt 0 ]; then say "running for $DURATION s"; else say "running until Ctrl-C"; fi

# the gateways' and hub's own reports, as they happen; the alarms and the
# phones' messages (demo_alarms.py, demo_phone.py) whole
# (tail's own pid is kept, so that stopping it ends its grep too)
tail -n +1 -F "$WORK/care-edge.log" "$WORK/care-hub.log" "$WORK/care-sim.log" "$WORK/care-edge-day.log" 2>/dev/null \
  > >(grep --line-buffered -E ' [EW] \[|\[edge:|\[presence|\[annunciator|\] offline|offline after|online again|rejected|out of range|in range again' \
       | grep --line-buffered -v -E '\[alarm:|\[notify:') &
PIDS=("$!" "${PIDS[@]}")
tail -q -n +1 -F "$WORK/alarms.log" "$WORK/phone.log" 2>/dev/null > >(grep --line-buffered -v '^listening on') &
PIDS=("$!" "${PIDS[@]}")
ACKED=0

t0=$(date +%s)
next=$((t0 + 10))
while [ $INTERRUPTED -eq 0 ]; do
  now=$(date +%s)
  if [ "$DURATION" -gt 0 ] && [ $((now - t0)) -ge "$DURATION" ]; then break; fi
  for p in "$PID_care_edge" "$PID_care_hub" "$PID_care_sim" "$PID_care_edge_day" "$PID_care_sim_day" "$PID_phone" "$PID_alarms"; do
    if ! kill -0 "$p" 2>/dev/null; then echo "demo.sh: a program stopped unexpectedly; see $WORK" >&2; KEEP=1; exit 1; fi
  done
  if [ "$now" -ge "$next" ]; then
    say "stored in InfluxDB after $((now - t0)) s:"
    python3 "$ROOT/deploy/demo_status.py" "$INFLUX" carehub table "$WORK/status.json" || true
    next=$((now + 10))
  fi
  if [ $ACKED -eq 0 ] && [ $((now - DAY_T0)) -ge 90 ]; then
    ACKED=1
    python3 "$ROOT/deploy/demo_alarms.py" --ack "$DAY_CONSOLE_PORT" 护士小王 "$DAY_PASSWORD" fall:band-li || true
  fi
  sleep 1
done

say "stopping the gateways (they deliver what they hold, then say goodbye)"
stop_pid "$PID_care_edge" 15
stop_pid "$PID_care_edge_day" 15
sleep 2   # one hub flush interval and a margin
stop_pid "$PID_care_hub" 15
sleep 1   # the last notifications and alerts
stop_pid "$PID_phone" 5
stop_pid "$PID_alarms" 5
sleep 0.5 # the tail shows what they printed last
grep -E '\[edge:.*stopped|\[hub' "$WORK/care-edge.log" "$WORK/care-hub.log" | tail -3 || true
python3 "$ROOT/deploy/demo_status.py" "$INFLUX" carehub table "$WORK/status.json" || true
say "alarms raised (s since the demo started):"
python3 "$ROOT/deploy/demo_alarms.py" --summary "$WORK/alarms.json" \
  device_offline fall sos bed_exit wandering vital_signs device_battery other || true
say "$(python3 "$ROOT/deploy/demo_phone.py" --count "$WORK/phone.jsonl")"
set +e
final=$(python3 "$ROOT/deploy/demo_status.py" "$INFLUX" carehub final)
rc=$?
set -e
cleanup
echo "$final"
exit $rc
