# Alarm transitions through the hub into InfluxDB (issue 4).
ch_integration_test(hub_alerts hub_alerts.py TIMEOUT 120)
ch_integration_test(hub_notify hub_notify.py TIMEOUT 60)
