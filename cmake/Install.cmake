# `cmake --install` produces a package that find_package(attnjit CONFIG REQUIRED) finds.
include(CMakePackageConfigHelpers)

install(TARGETS attnjit EXPORT attnjitTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(TARGETS attnjit_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(FILES attnjit.hpp DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/attnjit)
foreach(module dsl compiler compiler/passes compiler/codegen runtime/api runtime/driver runtime/cache runtime/reference runtime/tuning)
  file(GLOB headers ${PROJECT_SOURCE_DIR}/${module}/*.hpp)
  install(FILES ${headers} DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/attnjit/${module})
endforeach()
install(FILES templates/abi.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/attnjit/templates OPTIONAL)

install(EXPORT attnjitTargets NAMESPACE attnjit:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/attnjit)
configure_package_config_file(cmake/attnjitConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/attnjitConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/attnjit)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/attnjitConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES
  ${CMAKE_CURRENT_BINARY_DIR}/attnjitConfig.cmake
  ${CMAKE_CURRENT_BINARY_DIR}/attnjitConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/attnjit)
