# Care rules and the alarm life cycle (issue 4): unit tests on a fake clock,
# and the rule evaluation benchmark (run by hand; prints figures, never fails
# on a number).
ch_unit_test(test_rules SOURCES unit/test_rules.c LIBS ch_edge)
ch_unit_test(test_alarm SOURCES unit/test_alarm.c LIBS ch_edge)

add_executable(bench_rules bench/bench_rules.c)
target_link_libraries(bench_rules PRIVATE ch_edge)
carehub_defaults(bench_rules)
