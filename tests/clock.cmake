# Wall-clock steps (issue 10, "Time"): the clockshift LD_PRELOAD shim, which
# steps care-edge's view of CLOCK_REALTIME at run time, and the test that
# steps it by -1 h and +1 h while on-delays, escalation and shelving run.
# The shim gets no sanitizer flags (it is preloaded ahead of the ASan
# runtime; the test tells ASan that is fine) and is put next to the programs.
add_library(clockshift MODULE integration/clockshift.c)
target_compile_options(clockshift PRIVATE -Wall -Wextra -Wshadow -Wconversion
  -Wstrict-prototypes -Wmissing-prototypes -Wno-sign-conversion)
if(CAREHUB_WERROR)
  target_compile_options(clockshift PRIVATE -Werror)
endif()
set_target_properties(clockshift PROPERTIES PREFIX "" LIBRARY_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
ch_integration_test(edge_clock_step clock_step.py TIMEOUT 150)
