# The BLE wearable pipeline (drivers/ble, issue 5): unit tests and benchmark.
ch_unit_test(test_ble_rx SOURCES unit/test_ble_rx.c LIBS ch_ble)
ch_unit_test(test_ble_decode SOURCES unit/test_ble_decode.c LIBS ch_ble)
ch_unit_test(test_ble_table SOURCES unit/test_ble_table.c LIBS ch_ble)

add_executable(bench_ble bench/bench_ble.c)
target_link_libraries(bench_ble PRIVATE ch_ble)
carehub_defaults(bench_ble)
