#include "engine/amx.h"

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif
#if defined(__x86_64__) && defined(__linux__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace splitseg::amx {

namespace {

bool cpu_and_os_allow() {
#if defined(__x86_64__) && defined(__linux__)
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
    const bool amx_bf16 = edx & (1u << 22), amx_tile = edx & (1u << 24);
    if (!amx_bf16 || !amx_tile) return false;
    // Linux hands out the 8 KB tile state only to processes that ask (arch_prctl
    // ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA); without it the first tile instruction faults.
    constexpr int kReqXcompPerm = 0x1023, kXtileData = 18;
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXtileData) == 0;
#else
    return false;
#endif
}

bool switched_off_by_env() {
    const char* v = std::getenv("SPLITSEG_AMX");
    return v && std::strcmp(v, "0") == 0;
}

std::atomic<bool> g_enabled{!switched_off_by_env()};

}  // namespace

bool usable() {
    static const bool allowed = cpu_and_os_allow();
    return allowed && g_enabled.load(std::memory_order_relaxed);
}

bool set_enabled(bool enabled) {
    return g_enabled.exchange(enabled);
}

#if defined(__x86_64__)
namespace {

struct alignas(64) TileConfig {
    uint8_t palette, start_row, reserved[14];
    uint16_t bytes_per_row[16];
    uint8_t rows[16];
};

// A constant: GCC's _tile_loadconfig tells the compiler it reads 8 bytes, so the stores that
// fill a local configuration could be dropped (and the next tile instruction faults).
constexpr TileConfig kTiles = {
    1, 0, {}, {64, 64, 64, 64, 64, 64, 64, 64}, {16, 16, 16, 16, 16, 16, 16, 16}};

}  // namespace

__attribute__((target("amx-tile"))) void configure_tiles() {
    _tile_loadconfig(&kTiles);
}

__attribute__((target("amx-tile"))) void release_tiles() {
    _tile_release();
}
#else
void configure_tiles() {}
void release_tiles() {}
#endif

}  // namespace splitseg::amx
