# The CPU backend (runtime/cpu/), included after the attnjit target is defined.
#
# Its products are its own micro-kernels (runtime/cpu/cpu_kernels.cpp), compiled here for
# AVX-512, AVX2 + FMA and SSE2 and picked at run time, so the library stays built for any
# x86-64 and needs no BLAS. (OpenBLAS's sgemm, tile by tile, measured 10-15% slower
# end to end on the development machine: it packs both operands on every call.)
#
# The tile loops: -O3 to vectorize, FMA contraction (the default C++20 mode turns it off).
set_source_files_properties(${PROJECT_SOURCE_DIR}/runtime/cpu/cpu_kernels.cpp
  ${PROJECT_SOURCE_DIR}/runtime/cpu/cpu_kernels_bf16.cpp PROPERTIES COMPILE_OPTIONS "-O3;-ffp-contract=fast")
