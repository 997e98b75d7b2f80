# The local alarm console (issue 4, local annunciation): the HTTP API, the
# event stream and the embedded page, against fake alarm ops.
ch_unit_test(test_console SOURCES unit/test_console.c LIBS ch_edge PkgConfig::CURL)
set_tests_properties(unit.test_console PROPERTIES TIMEOUT 120)

# A console with fake alarms fed on stdin, for browser tests of the page.
add_executable(console_fixture integration/console_fixture.c)
target_link_libraries(console_fixture PRIVATE ch_edge)
carehub_defaults(console_fixture)

# The page in headless Chromium: log in, see an alarm, acknowledge it.
ch_integration_test(console_browser_unit console_browser_unit.py TIMEOUT 300)

# The console end to end in headless Chromium: care-sim raises alarms through
# care-edge (central Mosquitto), a carer signs in, sees and acknowledges them;
# screenshots kept in <build>/test-artifacts/ (or $CAREHUB_ARTIFACTS).
ch_integration_test(console_browser console_browser.py TIMEOUT 120)

# The login throttle alone, on a fake clock and from racing threads: limits,
# check-and-reserve, blocks that other addresses cannot evict, a full table.
ch_unit_test(test_throttle SOURCES unit/test_throttle.c LIBS ch_edge)
