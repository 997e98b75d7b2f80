# A night in a care home played by care-sim over MQTT (issue 5): BLE bracelets through
# receivers in three formats and Wi-Fi beds, through care-edge's rules to the central broker.
ch_integration_test(care_day care_day.py TIMEOUT 120)
