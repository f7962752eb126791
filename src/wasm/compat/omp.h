// The OpenMP runtime calls the engine makes, for a build without OpenMP (the single-threaded WASM
// module): one thread. The engine's `#pragma omp` lines are then ignored by the compiler
// (-fopenmp-simd keeps only the `simd` ones).
#pragma once

inline int omp_get_num_procs() {
    return 1;
}
inline int omp_get_max_threads() {
    return 1;
}
inline int omp_get_num_threads() {
    return 1;
}
inline int omp_get_thread_num() {
    return 0;
}
inline int omp_in_parallel() {
    return 0;
}
inline int omp_get_level() {
    return 0;
}
inline void omp_set_num_threads(int) {}
