# Scaling out: care-hub instances on one shared subscription, and an
# InfluxDB-compatible store other than InfluxDB.
# Two hubs on $share/carehub/...: the load split, one SIGKILLed under load and
# restarted; every reading stored exactly once.
ch_integration_test(hub_shared hub_shared.py TIMEOUT 120)
# care-hub writing to VictoriaMetrics as InfluxDB 1.x: what is kept, what is
# lost (string fields). Skipped (77) only when victoria-metrics is missing.
ch_integration_test(hub_victoria hub_victoria.py TIMEOUT 90)
set_tests_properties(integration.hub_victoria PROPERTIES SKIP_RETURN_CODE 77)
