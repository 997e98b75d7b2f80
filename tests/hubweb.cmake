# care-hub's web console (hub/www) end to end in headless Chromium: care-sim
# raises alarms through a real care-edge and the central Mosquitto; staff see
# them arrive live and acknowledge one (the gateway's transition comes back
# over the hub's event stream); a regulator's supervision card matches
# /api/v1/summary and shows no acknowledge button. Screenshots kept in
# <build>/test-artifacts/ (or $CAREHUB_ARTIFACTS) as hub-browser-*.png.
ch_integration_test(hub_browser hub_browser.py TIMEOUT 120)
# People's accounts (hub/API.md, "Users and sessions"): `care-hub users` makes
# a Chinese-named nurse of one site, who signs in with her password in
# Chromium and sees only that site; wrong passwords are locked per name and
# limited per address; CSRF, logout, password change, the admins' /users,
# SIGHUP and idle expiry. Screenshots as hub-accounts-*.png.
ch_integration_test(hub_accounts hub_accounts.py TIMEOUT 180)
