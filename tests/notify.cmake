# The notifier (common/notify.c): config errors naming file, line and key,
# templates, the robots' signatures against vectors computed independently,
# rosters across midnight, dedupe per occurrence (unit); and delivery end to
# end against loopback stand-ins for WeCom, DingTalk, Feishu and an SMS
# gateway, through a small driver program (integration).
ch_unit_test(test_notify SOURCES unit/test_notify.c LIBS ch_notify)
add_executable(notify_driver integration/notify_driver.c)
target_link_libraries(notify_driver PRIVATE ch_notify)
carehub_defaults(notify_driver)
ch_integration_test(notify_delivery notify_delivery.py TIMEOUT 120)
