# Benchmarks: built with the tree, run by hand (tests/bench/run.sh); they
# print figures and never pass or fail on a number.
add_executable(bench_coalesce bench/bench_coalesce.c)
target_link_libraries(bench_coalesce PRIVATE ch_edge)
carehub_defaults(bench_coalesce)
add_executable(bench_spool bench/bench_spool.c)
target_link_libraries(bench_spool PRIVATE ch_common)
carehub_defaults(bench_spool)
