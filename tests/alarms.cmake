# Care alarms end to end (issue 4) and alerts ahead of a backlog (issue 3).
ch_integration_test(alarm_site alarm_site.py TIMEOUT 150)
ch_integration_test(alert_backlog alert_backlog.py TIMEOUT 180)
