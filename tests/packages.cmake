# The Debian packages (issue 12): built, installed into a clean Debian 12
# root, upgraded and purged. Needs root and Debian's mirror and takes minutes,
# so it is registered only with -DCAREHUB_PACKAGE_TESTS=ON; CI runs it as
# tests/run-packages.sh.
if(CAREHUB_PACKAGE_TESTS)
  ch_integration_test(packages packages.py TIMEOUT 1800)
  set_tests_properties(integration.packages PROPERTIES LABELS packages RUN_SERIAL TRUE)
endif()
