# Installation: the C++ package (find_package(mxmoe) -> mxmoe::mxmoe) for a plain `cmake --install`,
# or the Python package's files when scikit-build-core drives the build (`pip install .`).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

if(SKBUILD)
  # The wheel: python/mxmoe (listed in pyproject.toml) + libmxmoe_c beside it + the mxmoe CLI.
  install(TARGETS mxmoe_c LIBRARY DESTINATION mxmoe)
  if(MXMOE_TOOLS)
    install(TARGETS mxmoe_cli RUNTIME DESTINATION ${SKBUILD_SCRIPTS_DIR})
  endif()
  return()
endif()

install(TARGETS mxmoe_core mxmoe_backend mxmoe EXPORT mxmoeTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(DIRECTORY include/mxmoe DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
if(TARGET mxmoe_c)
  install(TARGETS mxmoe_c LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
endif()
if(TARGET mxmoe_cli)
  install(TARGETS mxmoe_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()
set(MXMOE_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/mxmoe)
install(EXPORT mxmoeTargets NAMESPACE mxmoe:: DESTINATION ${MXMOE_CMAKE_DIR})
set(MXMOE_CONFIG_HAVE_CUDA ${MXMOE_HAVE_CUDA})
configure_package_config_file(cmake/mxmoeConfig.cmake.in ${CMAKE_CURRENT_BINARY_DIR}/mxmoeConfig.cmake
                              INSTALL_DESTINATION ${MXMOE_CMAKE_DIR})
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/mxmoeConfigVersion.cmake COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/mxmoeConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/mxmoeConfigVersion.cmake
        DESTINATION ${MXMOE_CMAKE_DIR})
