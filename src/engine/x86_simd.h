// <immintrin.h> for the AVX-512 paths. GCC 12's intrinsics trip its -Wmaybe-uninitialized (GCC
// bug 105593) in code that uses them correctly, and warnings are errors here: the header comes
// in with those warnings off. Include it under an #ifdef of the instruction set used.
#pragma once

#if defined(__GNUC__) && !defined(__clang__)  // clang knows no such warning group
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#else
#include <immintrin.h>
#endif
