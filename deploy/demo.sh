#!/usr/bin/env bash
# Runs a whole simulated care site on this machine, on loopback, in a
# temporary directory: Mosquitto (central and the gateway's local one),
# InfluxDB, care-sim (Modbus TCP and RTU over a socat pseudo-terminal pair),
# care-hub and care-edge with the elderly-care rule pack and its local alarm
# console (open the URL it prints in a browser).
#
#   deploy/demo.sh                    run until Ctrl-C
#   deploy/demo.sh --duration 60      run 60 s, then print what was stored
#   deploy/demo.sh --keep             keep the temporary directory (logs, data)
#
# Installs missing Debian packages first (needs root for that) and builds.
# The last line printed is the number of readings stored per measurement;
# the exit status is non-zero if none were stored.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=0
KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=${2:?--duration needs seconds}; shift 2 ;;
    --duration=*) DURATION=${1#*=}; shift ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
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
self_metrics_interval: 10s
CONF
start care-hub "$BIN/care-hub" -c "$WORK/hub.yaml"
sleep 0.5

CONSOLE_PASSWORD=carehub-demo
HASH=$(printf '%s\n' "$CONSOLE_PASSWORD" | "$BIN/care-edge" --hash-password)
cat >"$WORK/site.yaml" <<CONF
site: demo-home-001
gateway: gw-01
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
  - {id: R-0417, room: "203", bed: 203-A, devices: [panel-203, bed-203a], params: {hr_low: 45}}
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

# A day in a care home on a second gateway: 8 residents' bracelets heard by
# BLE receivers of three makes, and Wi-Fi bed sensors, all publishing to the
# local broker; the events of a night compressed into the first 5 minutes.
sed -e "s#tcp://127.0.0.1:1883#tcp://127.0.0.1:$LOCAL_PORT#" \
  "$ROOT/deploy/sim/care-day.yaml" >"$WORK/care-day.yaml"
sed -e "s#broker: tcp://127.0.0.1:1883#broker: tcp://127.0.0.1:$MQTT_PORT#" \
  -e "s#port: 1883#port: $LOCAL_PORT#" -e "s#dir: /tmp/carehub-demo/care-day-spool#dir: \"$WORK/care-day-spool\"#" \
  -e "s#profiles: \[../profiles\]#profiles: [$ROOT/deploy/profiles]#" \
  "$ROOT/deploy/sim/care-day-site.yaml" >"$WORK/care-day-site.yaml"
"$BIN/care-edge" --check -c "$WORK/care-day-site.yaml"
start care-sim-day "$BIN/care-sim" -c "$WORK/care-day.yaml" --scenario "$ROOT/deploy/sim/care-day-demo.yaml"
wait_log "$WORK/care-sim-day.log" "connected to" 10
start care-edge-day "$BIN/care-edge" -c "$WORK/care-day-site.yaml"
say "gateway gw-day: 8 residents' bracelets and bed sensors; stairs receiver offline at 20 s, a fall at 30 s, SOS at 50 s, a bed exit at 70 s, a resident with dementia walking out at 90 s, heart rate rising at 2 min, a bracelet taken off at 2:30, a battery dying from 3 min"
say "alarm console: http://127.0.0.1:$CONSOLE_PORT/  (user demo, password $CONSOLE_PASSWORD); SOS is pulled in room 203 at 25 s"
if [ "$DURATION" -gt 0 ]; then say "running for $DURATION s"; else say "running until Ctrl-C"; fi

# the gateway's and hub's own reports, as they happen
tail -n +1 -F "$WORK/care-edge.log" "$WORK/care-hub.log" "$WORK/care-sim.log" "$WORK/care-edge-day.log" 2>/dev/null \
  | grep --line-buffered -E ' [EW] \[|\[edge:|\[presence|\[alarm:|\[annunciator|offline|online again|rejected' &
TAILPID=$!
PIDS=("$TAILPID" "${PIDS[@]}")

t0=$(date +%s)
next=$((t0 + 10))
while [ $INTERRUPTED -eq 0 ]; do
  now=$(date +%s)
  if [ "$DURATION" -gt 0 ] && [ $((now - t0)) -ge "$DURATION" ]; then break; fi
  for p in "$PID_care_edge" "$PID_care_hub" "$PID_care_sim" "$PID_care_edge_day" "$PID_care_sim_day"; do
    if ! kill -0 "$p" 2>/dev/null; then echo "demo.sh: a program stopped unexpectedly; see $WORK" >&2; KEEP=1; exit 1; fi
  done
  if [ "$now" -ge "$next" ]; then
    say "stored in InfluxDB after $((now - t0)) s:"
    python3 "$ROOT/deploy/demo_status.py" "$INFLUX" carehub table "$WORK/status.json" || true
    next=$((now + 10))
  fi
  sleep 1
done

say "stopping the gateways (they deliver what they hold, then say goodbye)"
stop_pid "$PID_care_edge" 15
stop_pid "$PID_care_edge_day" 15
sleep 2   # one hub flush interval and a margin
stop_pid "$PID_care_hub" 15
grep -E '\[edge:.*stopped|\[hub' "$WORK/care-edge.log" "$WORK/care-hub.log" | tail -3 || true
python3 "$ROOT/deploy/demo_status.py" "$INFLUX" carehub table "$WORK/status.json" || true
set +e
final=$(python3 "$ROOT/deploy/demo_status.py" "$INFLUX" carehub final)
rc=$?
set -e
cleanup
echo "$final"
exit $rc
