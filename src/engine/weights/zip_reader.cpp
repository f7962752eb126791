#include "engine/weights/zip_reader.h"

#include <algorithm>

#include "engine/weights/byte_reader.h"

namespace splitseg {

namespace {

constexpr uint32_t kLocalHeaderSig = 0x04034b50;
constexpr uint32_t kCentralHeaderSig = 0x02014b50;
constexpr uint32_t kEndSig = 0x06054b50;
constexpr uint32_t kEnd64Sig = 0x06064b50;
constexpr uint32_t kEnd64LocatorSig = 0x07064b50;
constexpr size_t kEndSize = 22;
constexpr size_t kEnd64LocatorSize = 20;
constexpr size_t kMaxCommentSize = 0xffff;
constexpr size_t kCentralHeaderSize = 46;
constexpr size_t kLocalHeaderSize = 30;
constexpr uint16_t kZip64ExtraId = 0x0001;

struct CentralDirectory {
    uint64_t offset = 0;
    uint64_t size = 0;
    uint64_t count = 0;
};

// The end-of-central-directory record: the last signature whose comment reaches the file end.
size_t find_end_record(std::span<const uint8_t> zip) {
    if (zip.size() < kEndSize) throw FormatError("zip: too short for an end-of-directory record");
    const size_t lowest = zip.size() - kEndSize - std::min(kMaxCommentSize, zip.size() - kEndSize);
    for (size_t pos = zip.size() - kEndSize + 1; pos-- > lowest;) {
        if (load_le<uint32_t>(zip.data() + pos) != kEndSig) continue;
        const size_t comment = load_le<uint16_t>(zip.data() + pos + 20);
        if (pos + kEndSize + comment == zip.size()) return pos;
    }
    throw FormatError("zip: no end-of-central-directory record (truncated or not a zip)");
}

CentralDirectory read_zip64_end(std::span<const uint8_t> zip, size_t end_pos) {
    if (end_pos < kEnd64LocatorSize) throw FormatError("zip: missing zip64 locator");
    ByteReader locator(zip, end_pos - kEnd64LocatorSize);
    if (locator.u32("zip64 locator") != kEnd64LocatorSig)
        throw FormatError("zip: missing zip64 locator");
    if (locator.u32("zip64 locator") != 0) throw FormatError("zip: multi-disk archive");
    const uint64_t record_pos = locator.u64("zip64 locator");
    if (record_pos > zip.size()) throw FormatError("zip: zip64 record offset past the end");
    ByteReader r(zip, static_cast<size_t>(record_pos));
    if (r.u32("zip64 end record") != kEnd64Sig) throw FormatError("zip: bad zip64 end record");
    r.u64("zip64 end record");  // record size
    r.u32("zip64 end record");  // versions made by / needed
    if (r.u32("zip64 end record") != 0 || r.u32("zip64 end record") != 0)
        throw FormatError("zip: multi-disk archive");
    CentralDirectory cd;
    const uint64_t count_this_disk = r.u64("zip64 end record");
    cd.count = r.u64("zip64 end record");
    if (count_this_disk != cd.count) throw FormatError("zip: multi-disk archive");
    cd.size = r.u64("zip64 end record");
    cd.offset = r.u64("zip64 end record");
    return cd;
}

CentralDirectory read_central_directory_location(std::span<const uint8_t> zip) {
    const size_t end_pos = find_end_record(zip);
    ByteReader r(zip, end_pos + 4);
    const uint16_t disk = r.u16("end record");
    const uint16_t cd_disk = r.u16("end record");
    const uint16_t count_this_disk = r.u16("end record");
    CentralDirectory cd;
    cd.count = r.u16("end record");
    cd.size = r.u32("end record");
    cd.offset = r.u32("end record");
    // Any saturated field means the real values are in the zip64 record.
    if (count_this_disk == 0xffff || cd.count == 0xffff || cd.size == 0xffffffff ||
        cd.offset == 0xffffffff)
        return read_zip64_end(zip, end_pos);
    if (disk != 0 || cd_disk != 0 || count_this_disk != cd.count)
        throw FormatError("zip: multi-disk archive");
    return cd;
}

struct CentralEntry {
    std::string name;
    uint16_t flags = 0;
    uint16_t method = 0;
    uint64_t compressed_size = 0;
    uint64_t size = 0;
    uint64_t local_offset = 0;
};

// Replaces saturated 32-bit fields by their 64-bit values from the zip64 extra field, which
// holds only the saturated ones, in this order.
void apply_zip64_extra(std::span<const uint8_t> extra, CentralEntry& e) {
    ByteReader r(extra);
    while (r.remaining() >= 4) {
        const uint16_t id = r.u16("extra field");
        const uint16_t len = r.u16("extra field");
        ByteReader field(r.take(len, "extra field"));
        if (id != kZip64ExtraId) continue;
        for (uint64_t* v : {&e.size, &e.compressed_size, &e.local_offset})
            if (*v == 0xffffffff) *v = field.u64("zip64 extra field");
        return;
    }
}

CentralEntry read_central_entry(ByteReader& r) {
    if (r.u32("central directory") != kCentralHeaderSig)
        throw FormatError("zip: bad central directory entry signature");
    CentralEntry e;
    r.take(4, "central directory");  // versions made by, needed
    e.flags = r.u16("central directory");
    e.method = r.u16("central directory");
    r.take(8, "central directory");  // time, date, crc
    e.compressed_size = r.u32("central directory");
    e.size = r.u32("central directory");
    const uint16_t name_len = r.u16("central directory");
    const uint16_t extra_len = r.u16("central directory");
    const uint16_t comment_len = r.u16("central directory");
    const uint16_t disk = r.u16("central directory");
    r.take(6, "central directory");  // attributes
    e.local_offset = r.u32("central directory");
    e.name = r.take_string(name_len, "entry name");
    apply_zip64_extra(r.take(extra_len, "extra field"), e);
    r.take(comment_len, "entry comment");
    if (disk != 0 && disk != 0xffff) throw FormatError("zip: multi-disk archive");
    return e;
}

// Checks that the entry is stored and in bounds, and returns its bytes (after the local header).
std::span<const uint8_t> entry_bytes(std::span<const uint8_t> zip, const CentralEntry& e,
                                     uint64_t cd_offset) {
    const std::string what = "zip entry '" + e.name + "': ";
    if (e.flags & 1) throw FormatError(what + "encrypted entries are not supported");
    if (e.method != 0)
        throw FormatError(what + "compressed (method " + std::to_string(e.method) +
                          "); only stored entries are supported");
    if (e.compressed_size != e.size) throw FormatError(what + "stored size mismatch");
    if (e.local_offset >= cd_offset) throw FormatError(what + "local header past the directory");
    ByteReader r(zip, static_cast<size_t>(e.local_offset));
    if (r.u32("local header") != kLocalHeaderSig) throw FormatError(what + "bad local header");
    r.take(kLocalHeaderSize - 8, "local header");  // versions, flags, ..., sizes
    const uint16_t name_len = r.u16("local header");
    const uint16_t extra_len = r.u16("local header");
    if (r.take_string(name_len, "local header") != e.name)
        throw FormatError(what + "local header names another entry");
    r.take(extra_len, "local header");
    if (r.pos() > cd_offset || e.size > cd_offset - r.pos())
        throw FormatError(what + "data runs past the directory");
    return zip.subspan(r.pos(), static_cast<size_t>(e.size));
}

}  // namespace

ZipReader::ZipReader(std::span<const uint8_t> zip) {
    const CentralDirectory cd = read_central_directory_location(zip);
    if (cd.offset > zip.size() || cd.size > zip.size() - cd.offset)
        throw FormatError("zip: central directory past the end of the file");
    if (cd.count > cd.size / kCentralHeaderSize)
        throw FormatError("zip: entry count does not fit the central directory");
    ByteReader r(zip.subspan(static_cast<size_t>(cd.offset), static_cast<size_t>(cd.size)));
    for (uint64_t i = 0; i < cd.count; ++i) {
        const CentralEntry e = read_central_entry(r);
        if (!entries_.emplace(e.name, entry_bytes(zip, e, cd.offset)).second)
            throw FormatError("zip: duplicate entry '" + e.name + "'");
    }
}

const std::span<const uint8_t>* ZipReader::find(const std::string& name) const {
    auto it = entries_.find(name);
    return it == entries_.end() ? nullptr : &it->second;
}

}  // namespace splitseg
