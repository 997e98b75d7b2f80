# care-hub's HTTP API (issue 6).
ch_unit_test(test_api_parts SOURCES unit/test_api_parts.c LIBS ch_hub)
# Every endpoint against real Mosquitto and InfluxDB with a scripted scenario:
# scope, roles, privacy, hostile input, commands, events, audit, summary figures.
ch_integration_test(hub_api hub_api.py TIMEOUT 120)
