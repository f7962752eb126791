// libFuzzer target: the restricted unpickler on arbitrary bytes (a data.pkl).
#include <cstddef>
#include <cstdint>

#include "engine/weights/format_error.h"
#include "engine/weights/pickle_reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        splitseg::read_torch_state_dict({data, size});
    } catch (const splitseg::FormatError&) {
    }
    return 0;
}
