// libFuzzer target: a whole torch.save checkpoint (zip reader, unpickler, tensor views) from
// memory, converting every tensor it yields.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "engine/weights/format_error.h"
#include "engine/weights/torch_checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        const splitseg::TensorSet set = splitseg::read_torch_checkpoint({data, size});
        for (const auto& [name, ref] : set.tensors) {
            std::vector<float> values(ref.nbytes / splitseg::dtype_size(ref.dtype));
            splitseg::convert_to_f32(ref.dtype, ref.data, values.size(), values.data());
        }
    } catch (const splitseg::FormatError&) {
    }
    return 0;
}
