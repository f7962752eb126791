// AMX: whether this process may use the CPU's tile unit (Intel AMX-TILE + AMX-BF16), and the tile
// configuration our kernels use. oneDNN 2.6 runs its own AMX kernels only on dense operands of
// its matmul; the kernels that need the unit for other shapes (attention.cpp) ask here first and
// fall back to oneDNN where the answer is no.
#pragma once

namespace splitseg::amx {

// The CPU has AMX-TILE and AMX-BF16, the kernel granted this process the tile state, and no one
// switched it off (SPLITSEG_AMX=0 in the environment, or set_enabled(false)).
bool usable();
// For A/B measurements and for tests of the fallback path. Returns the previous setting.
bool set_enabled(bool enabled);

// Loads the calling thread's tile configuration our kernels use: all 8 tiles 16 rows x 64
// bytes (16 x 32 bf16, or 16 x 16 f32). Each thread configures before its first tile
// instruction and releases after its last (oneDNN configures its own for each of its calls).
// Only where usable().
void configure_tiles();
void release_tiles();

}  // namespace splitseg::amx
