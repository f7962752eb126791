// A restricted unpickler for the data.pkl of a torch.save checkpoint. It interprets only the
// opcodes a state_dict uses and only these globals: collections.OrderedDict,
// torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter and the typed storage classes
// (torch.FloatStorage, ...). Anything else is rejected with a FormatError naming it; nothing is
// ever executed. Tensors come out as descriptions (storage key, offset, shape, stride): the
// caller finds the bytes in the archive.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "engine/dtype.h"
#include "engine/tensor.h"

namespace splitseg {

// A storage as a persistent id names it: the archive entry data/<key>, holding numel elements.
struct PickledStorage {
    std::string key;
    DType dtype = DType::F32;
    int64_t numel = 0;
};

// A tensor as _rebuild_tensor_v2 describes it; offset and strides count elements.
struct PickledTensor {
    PickledStorage storage;
    int64_t offset = 0;
    Shape shape;
    std::vector<int64_t> stride;
};

// Reads a data.pkl and returns the state_dict's tensors by name. The top level must be a dict;
// when it maps "model" or "state_dict" to a dict, that inner dict is the state_dict (SAM 2.1
// nests under "model"). Entries that are not tensors (step counters, nested dicts, ...) are
// skipped; nested dicts are not flattened. Throws FormatError.
std::map<std::string, PickledTensor> read_torch_state_dict(std::span<const uint8_t> pickle);

}  // namespace splitseg
