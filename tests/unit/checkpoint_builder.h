// Test helpers that write torch.save checkpoints byte by byte: a protocol-2 pickle writer and a
// stored-entry zip writer, so tests can make valid and deliberately broken files in memory; and
// the check that a broken one is refused.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "engine/weights/weight_file.h"

namespace splitseg::testing {

using Bytes = std::vector<uint8_t>;

// Loading `bytes` as the file `name` fails with a FormatError that names the file and contains
// `fragment`.
inline void expect_format_error(const Bytes& bytes, const std::string& name,
                                const std::string& fragment) {
    try {
        WeightFile::from_bytes(bytes, name);
        ADD_FAILURE() << "loaded; expected an error containing '" << fragment << "'";
    } catch (const FormatError& e) {
        const std::string msg = e.what();
        EXPECT_EQ(msg.rfind(name + ": ", 0), 0u) << msg;
        EXPECT_NE(msg.find(fragment), std::string::npos) << msg;
    }
}

inline void put_le(Bytes& out, uint64_t v, int n) {
    for (int i = 0; i < n; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

// Emits pickle opcodes; the method names are the opcodes'.
class PickleWriter {
  public:
    PickleWriter() { op(0x80).byte(2); }  // PROTO 2

    PickleWriter& op(uint8_t code) { return byte(code); }
    PickleWriter& byte(uint8_t b) {
        bytes_.push_back(b);
        return *this;
    }
    PickleWriter& raw(const Bytes& b) {
        bytes_.insert(bytes_.end(), b.begin(), b.end());
        return *this;
    }
    PickleWriter& mark() { return op('('); }
    PickleWriter& str(const std::string& s) {
        op('X');
        put_le(bytes_, s.size(), 4);
        bytes_.insert(bytes_.end(), s.begin(), s.end());
        return *this;
    }
    PickleWriter& integer(int64_t v) {
        if (v >= 0 && v < 256) return op('K').byte(static_cast<uint8_t>(v));
        if (v >= INT32_MIN && v <= INT32_MAX) {
            op('J');
            put_le(bytes_, static_cast<uint64_t>(v), 4);
            return *this;
        }
        op(0x8a).byte(8);  // LONG1
        put_le(bytes_, static_cast<uint64_t>(v), 8);
        return *this;
    }
    PickleWriter& global(const std::string& module, const std::string& name) {
        op('c');
        bytes_.insert(bytes_.end(), module.begin(), module.end());
        byte('\n');
        bytes_.insert(bytes_.end(), name.begin(), name.end());
        return byte('\n');
    }
    PickleWriter& tuple() { return op('t'); }
    PickleWriter& empty_tuple() { return op(')'); }
    PickleWriter& empty_dict() { return op('}'); }
    PickleWriter& reduce() { return op('R'); }
    PickleWriter& setitem() { return op('s'); }
    PickleWriter& setitems() { return op('u'); }
    PickleWriter& binput(uint8_t i) { return op('q').byte(i); }
    PickleWriter& binget(uint8_t i) { return op('h').byte(i); }
    PickleWriter& stop() { return op('.'); }
    PickleWriter& ints(const std::vector<int64_t>& v) {
        mark();
        for (int64_t x : v) integer(x);
        return tuple();
    }
    PickleWriter& ordered_dict() {
        return global("collections", "OrderedDict").empty_tuple().reduce();
    }
    // A storage's persistent id: ("storage", torch.<type>, key, "cpu", numel), BINPERSID.
    PickleWriter& storage(const std::string& type, const std::string& key, int64_t numel) {
        mark().str("storage").global("torch", type).str(key).str("cpu").integer(numel).tuple();
        return op('Q');
    }
    // _rebuild_tensor_v2(<storage>, offset, shape, stride, False, OrderedDict()).
    PickleWriter& tensor(const std::string& type, const std::string& key, int64_t numel,
                         int64_t offset, const std::vector<int64_t>& shape,
                         const std::vector<int64_t>& stride) {
        global("torch._utils", "_rebuild_tensor_v2").mark();
        storage(type, key, numel).integer(offset).ints(shape).ints(stride).op(0x89);
        return ordered_dict().tuple().reduce();
    }

    Bytes bytes() const { return bytes_; }

  private:
    Bytes bytes_;
};

// A zip of stored entries, as torch.save writes it (without its 64-byte alignment padding).
class ZipWriter {
  public:
    // method 8 marks the entry deflated (its bytes are left as given).
    ZipWriter& add(const std::string& name, const Bytes& data, uint16_t method = 0) {
        Entry e{name, static_cast<uint32_t>(out_.size()), static_cast<uint32_t>(data.size()),
                method};
        put_le(out_, 0x04034b50, 4);
        put_le(out_, 20, 2);      // version needed
        put_le(out_, 0, 2);       // flags
        put_le(out_, method, 2);  // method
        put_le(out_, 0, 4);       // time, date
        put_le(out_, 0, 4);       // crc (not checked)
        put_le(out_, data.size(), 4);
        put_le(out_, data.size(), 4);
        put_le(out_, name.size(), 2);
        put_le(out_, 0, 2);  // extra
        out_.insert(out_.end(), name.begin(), name.end());
        out_.insert(out_.end(), data.begin(), data.end());
        entries_.push_back(e);
        return *this;
    }

    // zip64: saturated end record fields, the real values in a zip64 end record + locator.
    Bytes finish(bool zip64 = false) const {
        Bytes out = out_;
        const uint64_t cd_offset = out.size();
        for (const Entry& e : entries_) {
            put_le(out, 0x02014b50, 4);
            put_le(out, 20, 2);
            put_le(out, 20, 2);
            put_le(out, 0, 2);
            put_le(out, e.method, 2);
            put_le(out, 0, 8);  // time, date, crc
            put_le(out, e.size, 4);
            put_le(out, e.size, 4);
            put_le(out, e.name.size(), 2);
            put_le(out, 0, 2);  // extra
            put_le(out, 0, 2);  // comment
            put_le(out, 0, 2);  // disk
            put_le(out, 0, 6);  // attributes
            put_le(out, e.offset, 4);
            out.insert(out.end(), e.name.begin(), e.name.end());
        }
        const uint64_t cd_size = out.size() - cd_offset;
        if (zip64) {
            const uint64_t record = out.size();
            put_le(out, 0x06064b50, 4);
            put_le(out, 44, 8);
            put_le(out, 45, 2);
            put_le(out, 45, 2);
            put_le(out, 0, 8);  // disks
            put_le(out, entries_.size(), 8);
            put_le(out, entries_.size(), 8);
            put_le(out, cd_size, 8);
            put_le(out, cd_offset, 8);
            put_le(out, 0x07064b50, 4);
            put_le(out, 0, 4);
            put_le(out, record, 8);
            put_le(out, 1, 4);
        }
        put_le(out, 0x06054b50, 4);
        put_le(out, 0, 4);  // disks
        put_le(out, zip64 ? 0xffff : entries_.size(), 2);
        put_le(out, zip64 ? 0xffff : entries_.size(), 2);
        put_le(out, zip64 ? 0xffffffff : cd_size, 4);
        put_le(out, zip64 ? 0xffffffff : cd_offset, 4);
        put_le(out, 0, 2);  // comment
        return out;
    }

  private:
    struct Entry {
        std::string name;
        uint32_t offset, size;
        uint16_t method;
    };
    Bytes out_;
    std::vector<Entry> entries_;
};

template <typename T>
Bytes raw_bytes(const std::vector<T>& values) {
    Bytes b(values.size() * sizeof(T));
    if (!b.empty()) std::memcpy(b.data(), values.data(), b.size());
    return b;
}

}  // namespace splitseg::testing
