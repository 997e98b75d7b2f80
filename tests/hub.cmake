# The wire contract and the central hub.
ch_unit_test(test_codec SOURCES unit/test_codec.c LIBS ch_schemas)
ch_unit_test(test_lineproto SOURCES unit/test_lineproto.c LIBS ch_hub)
ch_unit_test(test_ingest SOURCES unit/test_ingest.c LIBS ch_hub)
ch_unit_test(test_influx SOURCES unit/test_influx.c LIBS ch_hub)
ch_unit_test(test_hubconfig SOURCES unit/test_hubconfig.c LIBS ch_hub)
ch_unit_test(test_users SOURCES unit/test_users.c LIBS ch_hub)
ch_unit_test(test_presence SOURCES unit/test_presence.c LIBS ch_hub)
ch_unit_test(test_registry SOURCES unit/test_registry.c LIBS ch_hub)
ch_unit_test(test_ingestq SOURCES unit/test_ingestq.c LIBS ch_hub)

# Every example payload against the JSON Schemas, independently of the C code.
ch_integration_test(contract_examples contract_examples.py TIMEOUT 60)
ch_integration_test(hub_smoke hub_smoke.py TIMEOUT 120)
# InfluxDB outages under load, a field type conflict, SIGKILL: nothing lost (issue 3).
ch_integration_test(hub_influx_outage hub_influx_outage.py TIMEOUT 60)
# One gateway never degrades another site (issue 11): invented device ids
# refused and acknowledged, a 100 MB message refused by the broker, another
# site's alarms in /alarms/active during a flood, memory bounded.
ch_integration_test(hub_isolation hub_isolation.py TIMEOUT 120)
