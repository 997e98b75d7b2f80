# Care alarms end to end (issue 4) and alerts ahead of a backlog (issue 3).
ch_integration_test(alarm_site alarm_site.py TIMEOUT 150)
ch_integration_test(alert_backlog alert_backlog.py TIMEOUT 180)
# Who may command what (issue 10, test 2): the identity the receiver
# authenticated, out_of_service for admins only, on every path.
ch_integration_test(command_authz command_authz.py TIMEOUT 90)
