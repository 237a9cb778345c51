# The Debian packages, built by `cpack -G DEB` in the build directory from
# the install rules (cmake/install.cmake):
#   drover_VERSION_ARCH.deb      the programs (component runtime) and the
#                                services (packaging/); Depends from
#                                dpkg-shlibdeps.
#   drover-dev_VERSION_ARCH.deb  headers, static libraries, the CMake package
#                                and drover.pc (component dev).
#   python3-drover_VERSION_all.deb  the Python package `drover` (component
#                                python), on Debian's python3-zmq and
#                                python3-msgpack.
# The programs do not need the headers nor the libraries do the programs:
# a worker host installs drover alone.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME drover)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "the drover authors")
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "drover maintainers <maintainers@users.noreply.r-seed-ad311282.example>")
set(CPACK_STRIP_FILES ON)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL runtime dev python)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)  # NAME_VERSION_ARCH.deb
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)

set(CPACK_DEBIAN_RUNTIME_PACKAGE_NAME drover)
set(CPACK_DEBIAN_RUNTIME_PACKAGE_SECTION net)
# Each description's first line is its synopsis (CPACK_PACKAGE_DESCRIPTION_SUMMARY
# is left unset: CPack would put it before every description).
set(CPACK_DEBIAN_RUNTIME_DESCRIPTION "task system on ZeroMQ: broker, workers and producers
drover runs tasks, functions registered in a worker, submitted by
producers through a broker, over ZeroMQ with optional CurveZMQ security.
This package holds the programs: drover-broker, drover-worker,
drover-producer, drover-sink and drover-keygen.")

set(CPACK_DEBIAN_DEV_PACKAGE_NAME drover-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
# What the installed CMake package and drover.pc find.
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS
    "libzmq3-dev, cppzmq-dev, libmsgpack-cxx-dev, libspdlog-dev, nlohmann-json3-dev, libsodium-dev, zlib1g-dev, libsimdjson-dev")
set(CPACK_DEBIAN_DEV_PACKAGE_RECOMMENDS "drover (= ${PROJECT_VERSION}), cmake | pkg-config")
set(CPACK_DEBIAN_DEV_DESCRIPTION "task system on ZeroMQ: development files
drover runs tasks, functions registered in a worker, submitted by
producers through a broker, over ZeroMQ with optional CurveZMQ security.
This package holds the C++ headers, the static libraries, the CMake
package (find_package(drover)) and drover.pc, to build one's own workers
and producers.")

set(CPACK_DEBIAN_PYTHON_PACKAGE_NAME python3-drover)
set(CPACK_DEBIAN_PYTHON_PACKAGE_SECTION python)
set(CPACK_DEBIAN_PYTHON_PACKAGE_ARCHITECTURE all)
set(CPACK_DEBIAN_PYTHON_PACKAGE_SHLIBDEPS OFF)
# libsodium23: task secrets and tokens (SipHash), called through ctypes.
set(CPACK_DEBIAN_PYTHON_PACKAGE_DEPENDS "python3 (>= 3.11), python3-zmq, python3-msgpack, libsodium23")
set(CPACK_DEBIAN_PYTHON_PACKAGE_RECOMMENDS "drover (= ${PROJECT_VERSION})")
set(CPACK_DEBIAN_PYTHON_DESCRIPTION "task system on ZeroMQ: Python client and workers
drover runs tasks, functions registered in a worker, submitted by
producers through a broker, over ZeroMQ with optional CurveZMQ security.
This package holds the Python module drover: a Client that submits tasks
and returns futures, and a Worker that runs Python functions as tasks in
a pool of threads or of processes.")
install(DIRECTORY ${PROJECT_SOURCE_DIR}/python/drover DESTINATION lib/python3/dist-packages COMPONENT python
        EXCLUDE_FROM_ALL FILES_MATCHING PATTERN "*.py" PATTERN "__pycache__" EXCLUDE)

# Debian's policy files in each package: copyright and changelog.gz.
string(TIMESTAMP drover_changelog_date "%a, %d %b %Y %H:%M:%S +0000" UTC)  # honours SOURCE_DATE_EPOCH
configure_file(${PROJECT_SOURCE_DIR}/packaging/debian/changelog.in ${PROJECT_BINARY_DIR}/packaging/changelog @ONLY)
execute_process(COMMAND gzip -9nf ${PROJECT_BINARY_DIR}/packaging/changelog)
foreach(pair runtime:drover dev:drover-dev python:python3-drover)
  string(REPLACE ":" ";" pair ${pair})
  list(GET pair 0 component)
  list(GET pair 1 package)
  install(FILES ${PROJECT_SOURCE_DIR}/packaging/debian/copyright ${PROJECT_BINARY_DIR}/packaging/changelog.gz
          DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/${package} COMPONENT ${component} EXCLUDE_FROM_ALL)
endforeach()

# The services, in the drover package only (not in a `cmake --install`):
# systemd units, the drover user (sysusers.d), /etc/default/drover (a
# conffile), a pool's example config, and the maintainer scripts that make
# the user and tell systemd.
set(drover_packaging ${PROJECT_SOURCE_DIR}/packaging)
file(GLOB drover_units CONFIGURE_DEPENDS ${drover_packaging}/systemd/*.service)
install(FILES ${drover_units} DESTINATION lib/systemd/system COMPONENT runtime EXCLUDE_FROM_ALL)
install(FILES ${drover_packaging}/systemd/drover.sysusers DESTINATION lib/sysusers.d RENAME drover.conf
        COMPONENT runtime EXCLUDE_FROM_ALL)
install(FILES ${drover_packaging}/config/drover.default DESTINATION /etc/default RENAME drover COMPONENT runtime
        EXCLUDE_FROM_ALL)
install(FILES ${drover_packaging}/config/worker-POOL.conf DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/drover/examples
        COMPONENT runtime EXCLUDE_FROM_ALL)
set(CPACK_DEBIAN_RUNTIME_PACKAGE_CONTROL_EXTRA
    ${drover_packaging}/debian/postinst ${drover_packaging}/debian/postrm ${drover_packaging}/debian/conffiles)
set(CPACK_DEBIAN_RUNTIME_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_DEBIAN_RUNTIME_PACKAGE_DEPENDS "adduser")  # postinst, where systemd-sysusers is missing

include(CPack)
