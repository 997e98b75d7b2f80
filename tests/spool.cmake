# The crash-safe spool (common/spool.c): unit tests on checked-in fixtures,
# a power-cut simulation, a fuzz target (registered in fuzz.cmake).
ch_unit_test(test_spool SOURCES unit/test_spool.c LIBS ch_common)
# A few hundred simulated power cuts (about 20 s at most).
ch_unit_test(test_spool_powercut SOURCES unit/test_spool_powercut.c LIBS ch_common)
