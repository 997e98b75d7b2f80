# care-sim unit tests (sim/). Included by tests/CMakeLists.txt.
foreach(t frame value model slave scenario home)
  ch_unit_test(test_sim_${t} SOURCES ${CMAKE_CURRENT_LIST_DIR}/unit/test_sim_${t}.c LIBS ch_sim)
endforeach()
