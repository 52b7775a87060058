# The consumer built both ways (tests/consumer/run.sh).
add_test(NAME consumer_find_package COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/run.sh package ${PROJECT_BINARY_DIR})
add_test(NAME consumer_add_subdirectory COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/run.sh subdirectory)
set_tests_properties(consumer_find_package consumer_add_subdirectory PROPERTIES LABELS consumer TIMEOUT 1200 RUN_SERIAL TRUE)
