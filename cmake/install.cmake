# cmake --install build --prefix P: the kernels library as a CMake package
# (find_package(LigerKernels) -> liger::kernels, component "kernels") and the
# executables in P/bin (component "apps"). docs/library.md says how to use it.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(LIGER_KERNELS_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/LigerKernels)

# The public headers only: the op API, the registry and the liger::nn modules,
# in the source tree's layout (#include "kernels/ops.h" from P/include).
install(FILES kernels/ops.h kernels/op_list.h kernels/op_table.h kernels/registry.h
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/kernels COMPONENT kernels)
install(FILES kernels/nn/nn.h kernels/nn/functional.h kernels/nn/rms_norm.h
              kernels/nn/layer_norm.h kernels/nn/glu_mlp.h kernels/nn/losses.h kernels/nn/rope.h
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/kernels/nn COMPONENT kernels)

set(liger_kernels_targets liger_kernels)
if(LIGER_WITH_CUDA)
  list(APPEND liger_kernels_targets liger_cuda_kernels)
endif()
install(TARGETS ${liger_kernels_targets} EXPORT LigerKernelsTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT kernels
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT LigerKernelsTargets NAMESPACE liger:: DESTINATION ${LIGER_KERNELS_CMAKE_DIR}
        COMPONENT kernels)

# The config records Torch_VERSION and LIGER_WITH_CUDA of this build.
configure_package_config_file(cmake/LigerKernelsConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/LigerKernelsConfig.cmake
                              INSTALL_DESTINATION ${LIGER_KERNELS_CMAKE_DIR})
# Minor versions may change the API while the project is at 0.x.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/LigerKernelsConfigVersion.cmake
                                 VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/LigerKernelsConfig.cmake
              ${PROJECT_BINARY_DIR}/LigerKernelsConfigVersion.cmake
        DESTINATION ${LIGER_KERNELS_CMAKE_DIR} COMPONENT kernels)

# The executables keep torch's library folder (and the CUDA runtime's) in their
# run path, so that P/bin/liger-train finds the libtorch.so it was built against.
set(liger_installed_apps liger-train liger-export liger-generate liger-bench liger-tokenize)
set(liger_apps_rpath "${TORCH_INSTALL_PREFIX}/lib")
if(LIGER_WITH_CUDA)
  find_package(CUDAToolkit REQUIRED)  # kernels/ found it in its own scope
  list(APPEND liger_apps_rpath "${CUDAToolkit_LIBRARY_DIR}")
endif()
# (liger-tokenize does not link torch: it has no run path to change.)
set_target_properties(liger-train liger-export liger-generate liger-bench
                      PROPERTIES INSTALL_RPATH "${liger_apps_rpath}")
install(TARGETS ${liger_installed_apps} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT apps)
