# Fuzz targets, one per parser. With -DCAREHUB_FUZZ=ON (and CC=clang) each is
# a libFuzzer binary (tests/fuzz/run.sh); otherwise each is linked with a
# replay main and its corpus runs as an ordinary test.
# SOURCE: another file than fuzz/<name>.c (one source, several targets told
# apart by DEFINES).
function(ch_fuzz_target name)
  cmake_parse_arguments(F "" "SOURCE" "LIBS;CORPUS;DEFINES" ${ARGN})
  if(NOT F_SOURCE)
    set(F_SOURCE fuzz/${name}.c)
  endif()
  if(CAREHUB_FUZZ)
    add_executable(${name} ${F_SOURCE})
    target_link_options(${name} PRIVATE -fsanitize=fuzzer)
  else()
    add_executable(${name} ${F_SOURCE} fuzz/replay.c)
    add_test(NAME fuzz.${name} COMMAND ${name} ${F_CORPUS})
    set_tests_properties(fuzz.${name} PROPERTIES LABELS fuzz TIMEOUT 120)
  endif()
  target_link_libraries(${name} PRIVATE ${F_LIBS})
  target_compile_definitions(${name} PRIVATE ${F_DEFINES} FUZZ_NAME="${name}")
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
# 60 GHz sleep radar frames (issue 5)
ch_fuzz_target(fuzz_radar_frame LIBS ch_drivers CORPUS ${FZ}/radar_frame)
# BLE receiver formats and the advertisement decoder (issue 5)
foreach(f omg minew ingics)
  string(TOUPPER ${f} F)
  ch_fuzz_target(fuzz_ble_${f} SOURCE fuzz/fuzz_ble_rx.c DEFINES RX_FORMAT=BLE_RX_${F}
    LIBS ch_ble CORPUS ${FZ}/ble_${f})
endforeach()
ch_fuzz_target(fuzz_ble_decode LIBS ch_ble CORPUS ${FZ}/ble_decode)
# Parsers issue 11 found without a target: care-hub's tokens file and
# configuration, care-sim's configuration and scenario files, device profiles
# and rule packs (fuzz_config mutates only the site file), the Wi-Fi bed JSON
# decoder. The shipped files replay too, so a change to them is fuzz-checked.
set(DEPLOY ${PROJECT_SOURCE_DIR}/deploy)
ch_fuzz_target(fuzz_tokens LIBS ch_hub CORPUS ${FZ}/tokens)
ch_fuzz_target(fuzz_hub_config LIBS ch_hub CORPUS ${FZ}/hub_config ${DEPLOY}/hub)
ch_fuzz_target(fuzz_sim_config LIBS ch_sim CORPUS ${FZ}/sim_config ${DEPLOY}/sim)
ch_fuzz_target(fuzz_profile LIBS ch_edge CORPUS ${FZ}/profile ${DEPLOY}/profiles)
ch_fuzz_target(fuzz_rulepack LIBS ch_edge DEFINES CAREHUB_PROFILES_DIR="${DEPLOY}/profiles"
  CORPUS ${FZ}/rulepack ${DEPLOY}/rules ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/config/rules)
ch_fuzz_target(fuzz_mqtt_json LIBS ch_drivers CORPUS ${FZ}/mqtt_json)
# The HTTP servers (issue 11): care-edge's console and care-hub's API, each
# started once in the target's process (LLVMFuzzerInitialize, which the
# replay calls too) and fed each input over a loopback connection; and their
# query parameters' parsers alone.
ch_fuzz_target(fuzz_http_console LIBS ch_edge CORPUS ${FZ}/http_console)
ch_fuzz_target(fuzz_http_hub LIBS ch_hub DEFINES FUZZ_WWW_DIR="${PROJECT_SOURCE_DIR}/hub/www"
  CORPUS ${FZ}/http_hub)
ch_fuzz_target(fuzz_api_params LIBS ch_hub CORPUS ${FZ}/api_params)
# the notifier's notify: section, as care-edge hands it over (a CFG_NODE)
ch_fuzz_target(fuzz_notify_config LIBS ch_notify
  CORPUS ${FZ}/notify_config)
