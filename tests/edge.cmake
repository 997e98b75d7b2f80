# Unit tests of the gateway: register maps and decoding, configuration.
ch_unit_test(test_regmap SOURCES unit/test_regmap.c LIBS ch_drivers)
ch_unit_test(test_modbus_reply SOURCES unit/test_modbus_reply.c LIBS ch_drivers)
# Modbus TCP replies: MBAP header and PDU against the request (issue 11)
ch_unit_test(test_modbus_tcp SOURCES unit/test_modbus_tcp.c LIBS ch_drivers)
ch_unit_test(test_config SOURCES unit/test_config.c LIBS ch_edge)

# The command line: every bad configuration exits 2 naming file, line, key.
ch_integration_test(edge_config_cli edge_config_cli.py TIMEOUT 60)
ch_integration_test(config_schema config_schema.py TIMEOUT 60)
ch_integration_test(e2e_site e2e_site.py TIMEOUT 120)
# a hostile Modbus TCP peer: bad frames refused, counted, logged (issue 11)
ch_integration_test(modbus_tcp_hostile modbus_tcp_hostile.py TIMEOUT 60)
ch_integration_test(uplink_tls_reconnect uplink_tls_reconnect.py TIMEOUT 120)
ch_integration_test(spool_outage spool_outage.py TIMEOUT 180)
ch_integration_test(edge_reload edge_reload.py TIMEOUT 90)
ch_integration_test(mqtt_bed mqtt_bed.py TIMEOUT 60)
ch_integration_test(ble_wearable ble_wearable.py TIMEOUT 60)
ch_integration_test(site_zh site_zh.py TIMEOUT 120)
