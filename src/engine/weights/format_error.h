// FormatError: every failure to read a weight or bundle file. The parsers throw it with what is
// wrong; WeightFile prefixes the file name, so the final message reads "<path>: <what>".
#pragma once

#include <stdexcept>

namespace splitseg {

struct FormatError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

}  // namespace splitseg
