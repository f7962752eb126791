// Trace: a named-intermediate callback, as llama.cpp's cb(cur, "name", il). Models call
// trace("enc.block3", t) as each intermediate is produced; tests and debug flags dump or compare
// them against the golden vectors. Names and memory layouts follow the golden files.
#pragma once

#include <functional>
#include <string>

#include "engine/tensor.h"

namespace splitseg {

struct Trace {
    std::function<void(const std::string& name, const Tensor& t)> fn;
    void operator()(const std::string& name, const Tensor& t) const {
        if (fn) fn(name, t);
    }
};

}  // namespace splitseg
