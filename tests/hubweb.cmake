# care-hub's web console (hub/www) end to end in headless Chromium: care-sim
# raises alarms through a real care-edge and the central Mosquitto; staff see
# them arrive live and acknowledge one (the gateway's transition comes back
# over the hub's event stream); a regulator's supervision card matches
# /api/v1/summary and shows no acknowledge button. Screenshots kept in
# <build>/test-artifacts/ (or $CAREHUB_ARTIFACTS) as hub-browser-*.png.
ch_integration_test(hub_browser hub_browser.py TIMEOUT 120)
