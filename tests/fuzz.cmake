# Fuzz targets, one per parser. With -DCAREHUB_FUZZ=ON (and CC=clang) each is
# a libFuzzer binary (tests/fuzz/run.sh); otherwise each is linked with a
# replay main and its corpus runs as an ordinary test.
function(ch_fuzz_target name)
  cmake_parse_arguments(F "" "" "LIBS;CORPUS" ${ARGN})
  if(CAREHUB_FUZZ)
    add_executable(${name} fuzz/${name}.c)
    target_link_options(${name} PRIVATE -fsanitize=fuzzer)
  else()
    add_executable(${name} fuzz/${name}.c fuzz/replay.c)
    add_test(NAME fuzz.${name} COMMAND ${name} ${F_CORPUS})
    set_tests_properties(fuzz.${name} PROPERTIES LABELS fuzz TIMEOUT 120)
  endif()
  target_link_libraries(${name} PRIVATE ${F_LIBS})
  carehub_defaults(${name})
endfunction()

set(FZ ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/corpus)
ch_fuzz_target(fuzz_payload LIBS ch_schemas m CORPUS ${FZ}/payload)
# alert and command payloads (and an alert's line protocol): issue 4
ch_fuzz_target(fuzz_alert LIBS ch_hub CORPUS ${FZ}/alert)
ch_fuzz_target(fuzz_modbus_reply LIBS ch_drivers CORPUS ${FZ}/modbus_reply)
ch_fuzz_target(fuzz_rtu_framer LIBS ch_sim CORPUS ${FZ}/rtu_framer)
ch_fuzz_target(fuzz_config LIBS ch_edge
  CORPUS ${FZ}/config ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/config)
ch_fuzz_target(fuzz_spool LIBS ch_common CORPUS ${FZ}/spool)
