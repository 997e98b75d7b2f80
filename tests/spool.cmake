# The crash-safe spool (common/spool.c): unit tests on checked-in fixtures,
# a power-cut simulation, a fuzz target (registered in fuzz.cmake).
ch_unit_test(test_spool SOURCES unit/test_spool.c LIBS ch_common)
# A few hundred simulated power cuts (about 20 s at most).
ch_unit_test(test_spool_powercut SOURCES unit/test_spool_powercut.c LIBS ch_common)
# Delivered means stored (issue 10, tests 3 and 4): a record leaves care-edge's
# spool only when a hub acknowledges storing it; an empty broker, a late hub
# and the spool's bound with no hub lose nothing unaccounted.
ch_integration_test(delivery delivery.py TIMEOUT 240)
# A failing disk never silences a site (issue 10, test 6): the spool on a
# tmpfs of the test's own, read-only at start, then full during the run.
# Needs root to mount it (exit 77: skipped otherwise).
ch_integration_test(disk_failure disk_failure.py TIMEOUT 150)
set_tests_properties(integration.disk_failure PROPERTIES SKIP_RETURN_CODE 77)
