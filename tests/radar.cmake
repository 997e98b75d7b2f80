# The 60 GHz sleep radar (issue 5): frame parser unit test, the end-to-end
# bed-exit test over a socat PTY, and the parser benchmark (run by hand).
ch_unit_test(test_radar_frame SOURCES unit/test_radar_frame.c LIBS ch_drivers)
ch_integration_test(radar_bed radar_bed.py TIMEOUT 120)

add_executable(bench_radar bench/bench_radar.c)
target_link_libraries(bench_radar PRIVATE ch_drivers)
carehub_defaults(bench_radar)
