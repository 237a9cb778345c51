# Install rules: the programs to bin/, the libraries to lib/, the public
# headers (never */src) to include/, the CMake package to lib/cmake/drover/
# (targets drover::common, ::client, ::worker, ::broker, ::cluster,
# ::worker_main, ::producer_main) and lib/pkgconfig/drover.pc.
# Components: "runtime" (programs, shared libraries), "dev" (the rest), the
# two Debian packages of cmake/package.cmake.
include(CMakePackageConfigHelpers)

set(drover_libraries drover_worker_main drover_producer_main drover_cluster drover_client drover_broker
    drover_worker drover_common)  # in link order: each before what it needs
foreach(lib IN LISTS drover_libraries)
  string(REGEX REPLACE "^drover_" "" export_name ${lib})
  # 0.x: every minor release may change the ABI, so the SONAME carries it (libdrover_common.so.0.1).
  set_target_properties(${lib} PROPERTIES EXPORT_NAME ${export_name} VERSION ${PROJECT_VERSION}
                        SOVERSION ${PROJECT_VERSION_MAJOR}.${PROJECT_VERSION_MINOR})
endforeach()

install(TARGETS ${drover_libraries} EXPORT droverTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT runtime NAMELINK_COMPONENT dev
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS drover-broker drover-worker drover-producer drover-sink drover-keygen
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT runtime)

# Public headers only: each library's include/ (src/ and src/internal/ stay behind).
foreach(dir common broker worker producer cluster programs)
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/${dir}/include/drover DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
          COMPONENT dev FILES_MATCHING PATTERN "*.hpp")
endforeach()
install(FILES ${PROJECT_BINARY_DIR}/include/drover/common/version.hpp
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/drover/common COMPONENT dev)

# find_package(drover): droverConfig.cmake finds the dependencies the
# installed targets name, then includes droverTargets.cmake.
set(drover_cmake_dir ${CMAKE_INSTALL_LIBDIR}/cmake/drover)
get_target_property(drover_common_type drover_common TYPE)
if(drover_common_type STREQUAL "STATIC_LIBRARY")
  set(DROVER_STATIC ON)  # the private dependencies (libsodium, zlib) are linked by the user's program
else()
  set(DROVER_STATIC OFF)
endif()
install(EXPORT droverTargets NAMESPACE drover:: DESTINATION ${drover_cmake_dir} COMPONENT dev)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/droverConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/droverConfig.cmake INSTALL_DESTINATION ${drover_cmake_dir})
# SameMinorVersion: in 0.x a minor release may break the API and the protocol, a patch release does not.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/droverConfigVersion.cmake COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/droverConfig.cmake ${PROJECT_BINARY_DIR}/droverConfigVersion.cmake
        DESTINATION ${drover_cmake_dir} COMPONENT dev)

# drover.pc, relocatable: prefix is found from the .pc file's own directory.
file(RELATIVE_PATH drover_pc_to_prefix "/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/")
string(REGEX REPLACE "/$" "" drover_pc_to_prefix "${drover_pc_to_prefix}")
set(drover_pc_libs "")
foreach(lib IN LISTS drover_libraries)
  string(APPEND drover_pc_libs " -l${lib}")
endforeach()
if(DROVER_STATIC)
  set(drover_pc_requires "cppzmq spdlog nlohmann_json libsodium zlib simdjson")
  set(drover_pc_requires_private "")
else()
  set(drover_pc_requires "cppzmq spdlog nlohmann_json")
  set(drover_pc_requires_private "libsodium zlib simdjson")
endif()
configure_file(${PROJECT_SOURCE_DIR}/cmake/drover.pc.in ${PROJECT_BINARY_DIR}/drover.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/drover.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT dev)
