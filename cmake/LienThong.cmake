# Helpers that keep each module's CMakeLists to a few lines, in the manner of
# absl_cc_library().

set(LIENTHONG_WARNINGS -Wall -Wextra -Wno-unused-parameter)

# lienthong_cc_library(NAME n SRCS ... [PUBLIC_INCLUDE dir] DEPS ...)
function(lienthong_cc_library)
  cmake_parse_arguments(L "" "NAME;PUBLIC_INCLUDE" "SRCS;DEPS" ${ARGN})
  add_library(${L_NAME} STATIC ${L_SRCS})
  target_compile_options(${L_NAME} PRIVATE ${LIENTHONG_WARNINGS})
  if(L_PUBLIC_INCLUDE)
    target_include_directories(${L_NAME} PUBLIC ${L_PUBLIC_INCLUDE})
  endif()
  target_include_directories(${L_NAME} PRIVATE ${CMAKE_SOURCE_DIR})
  target_link_libraries(${L_NAME} PUBLIC ${L_DEPS})
endfunction()

# lienthong_cc_binary(NAME n SRCS ... DEPS ...)
function(lienthong_cc_binary)
  cmake_parse_arguments(L "" "NAME" "SRCS;DEPS" ${ARGN})
  add_executable(${L_NAME} ${L_SRCS})
  target_compile_options(${L_NAME} PRIVATE ${LIENTHONG_WARNINGS})
  target_include_directories(${L_NAME} PRIVATE ${CMAKE_SOURCE_DIR})
  target_link_libraries(${L_NAME} PRIVATE ${L_DEPS})
endfunction()

# lienthong_cc_test(NAME n SRCS ... DEPS ... [LABELS ...] [TIMEOUT s])
function(lienthong_cc_test)
  cmake_parse_arguments(L "" "NAME;TIMEOUT" "SRCS;DEPS;LABELS" ${ARGN})
  add_executable(${L_NAME} ${L_SRCS})
  target_compile_options(${L_NAME} PRIVATE ${LIENTHONG_WARNINGS})
  target_include_directories(${L_NAME} PRIVATE ${CMAKE_SOURCE_DIR})
  target_link_libraries(${L_NAME} PRIVATE ${L_DEPS} GTest::gtest GTest::gmock
                                          GTest::gtest_main)
  add_test(NAME ${L_NAME} COMMAND ${L_NAME})
  if(NOT L_TIMEOUT)
    set(L_TIMEOUT 300)
  endif()
  set_tests_properties(${L_NAME} PROPERTIES TIMEOUT ${L_TIMEOUT}
                       LABELS "${L_LABELS}")
endfunction()
