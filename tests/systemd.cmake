# systemd (issue 12): Type=notify readiness, reload and stop, the watchdog
# fed from the main loops (a fake NOTIFY_SOCKET), and the journal's fields.
ch_integration_test(sd_notify sd_notify.py TIMEOUT 120)
