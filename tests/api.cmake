# care-hub's HTTP API (issue 6).
ch_unit_test(test_api_parts SOURCES unit/test_api_parts.c LIBS ch_hub)
# The rate limits alone, on a fake clock: what an export or a summary pays and
# the reserve it leaves; requests without a token per address, blocks that
# other addresses cannot evict, a full table failing closed (issue 11).
ch_unit_test(test_ratelimit SOURCES unit/test_ratelimit.c LIBS ch_hub)
# Every endpoint against real Mosquitto and InfluxDB with a scripted scenario:
# scope, roles, privacy, hostile input, commands, events, audit, summary figures.
ch_integration_test(hub_api hub_api.py TIMEOUT 120)
# Tenants sharing a hub (issue 11): event streams per token and site, requests
# without a token limited per address and aggregated in a bounded, rotated
# audit log, exports and summaries charged by their queries.
ch_integration_test(hub_tenants hub_tenants.py TIMEOUT 150)
# What a regulator reads (an allow-list per measurement and field, alarm records
# of sensitive kinds without value or message), district scopes by whole id
# segments, CSV cells a spreadsheet would evaluate (issue 11).
ch_integration_test(hub_privacy hub_privacy.py TIMEOUT 90)
# InfluxDB for years (issue 12): the retention policies made on the first
# start, readings in raw and the rest in the default policy, the hourly
# history made and made again after a backlog, and a summary and a chart of
# a day past the raw retention answered from what was kept.
ch_integration_test(hub_retention hub_retention.py TIMEOUT 120)
