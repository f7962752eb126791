// safetensors: the writer, the reader, and the reader's checks on hostile headers.
#include "engine/weights/safetensors.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "checkpoint_builder.h"
#include "engine/weights/byte_reader.h"
#include "engine/weights/weight_file.h"

namespace splitseg {
namespace {

using testing::Bytes;

// A file with the given header text and `data_size` bytes of data (value i % 256).
Bytes file_with_header(const std::string& header, size_t data_size) {
    Bytes b;
    testing::put_le(b, header.size(), 8);
    b.insert(b.end(), header.begin(), header.end());
    for (size_t i = 0; i < data_size; ++i) b.push_back(static_cast<uint8_t>(i));
    return b;
}

WeightFile load(const Bytes& bytes) {
    return WeightFile::from_bytes(bytes, "test.safetensors");
}

void expect_format_error(const Bytes& bytes, const std::string& fragment) {
    testing::expect_format_error(bytes, "test.safetensors", fragment);
}

// One U8 tensor "t" with the given shape and offsets, over `data_size` bytes.
Bytes one_tensor(const std::string& dtype, const std::string& shape, const std::string& offsets,
                 size_t data_size) {
    return file_with_header(R"({"t":{"dtype":")" + dtype + R"(","shape":)" + shape +
                                R"(,"data_offsets":)" + offsets + "}}",
                            data_size);
}

const std::vector<float> kFloats = {1.5f, -2.0f, 0.0f, 1e-8f, 3.25f, 65504.0f};
const std::vector<uint16_t> kHalves = {f32_to_f16(0.5f), f32_to_f16(-1.0f)};
const std::vector<int64_t> kLongs = {-3, 1LL << 40};
const std::vector<uint8_t> kBools = {0, 1, 1};

std::vector<SafetensorsEntry> sample_entries() {
    return {
        {"a.weight", DType::F32, {2, 3}, kFloats.data(), 24},
        {"b.half", DType::F16, {2}, kHalves.data(), 4},
        {"c.long", DType::I64, {2, 1}, kLongs.data(), 16},
        {"d.bool", DType::BOOL, {3}, kBools.data(), 3},
        {"e.empty", DType::F32, {0, 4}, nullptr, 0},
    };
}

void expect_sample(const WeightFile& w) {
    EXPECT_EQ(w.names(),
              (std::vector<std::string>{"a.weight", "b.half", "c.long", "d.bool", "e.empty"}));
    const Tensor a = w.get("a.weight", {2, 3});
    EXPECT_EQ(std::vector<float>(a.data(), a.data() + 6), kFloats);
    EXPECT_EQ(w.get("b.half")[1], -1.0f);
    EXPECT_EQ(w.ref("c.long").dtype, DType::I64);
    EXPECT_EQ(w.get("c.long")[1], static_cast<float>(1LL << 40));
    EXPECT_EQ(w.get("d.bool")[2], 1.0f);
    EXPECT_EQ(w.get("e.empty").numel(), 0);
    EXPECT_EQ(w.metadata(), (std::map<std::string, std::string>{{"format", "pt"}, {"v", "1"}}));
}

TEST(Safetensors, RoundTripsInMemory) {
    const Bytes bytes = serialize_safetensors(sample_entries(), {{"format", "pt"}, {"v", "1"}});
    const uint64_t header_size = load_le<uint64_t>(bytes.data());
    EXPECT_EQ(header_size % 8, 0u);  // the data area starts 8-byte aligned
    EXPECT_EQ(bytes.size(), 8 + header_size + 24 + 4 + 16 + 3);
    expect_sample(load(bytes));
}

TEST(Safetensors, WriterAlignsEveryTensorToItsElementSize) {
    const Bytes bytes = serialize_safetensors(sample_entries(), {});
    const TensorSet set = read_safetensors(bytes);
    ASSERT_EQ(set.tensors.size(), 5u);
    for (const auto& [name, ref] : set.tensors)
        EXPECT_EQ(static_cast<size_t>(ref.data - bytes.data()) % dtype_size(ref.dtype), 0u) << name;
}

TEST(Safetensors, RoundTripsThroughAtomicFile) {
    const std::string dir = ::testing::TempDir() + "safetensors_test";
    std::filesystem::create_directories(dir);
    const std::string path = dir + "/model.safetensors";
    write_safetensors(path, sample_entries(), {{"format", "pt"}, {"v", "1"}});
    write_safetensors(path, sample_entries(), {{"format", "pt"}, {"v", "1"}});  // replaces it
    expect_sample(WeightFile::open(path));
    // No temporary file is left beside it.
    EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir), {}), 1);
    std::filesystem::remove_all(dir);
}

TEST(Safetensors, WriterFailsCleanly) {
    EXPECT_THROW(write_safetensors("/nonexistent/dir/x.safetensors", sample_entries(), {}),
                 std::system_error);
    std::vector<SafetensorsEntry> bad = sample_entries();
    bad[0].nbytes = 20;
    EXPECT_THROW(serialize_safetensors(bad, {}), std::invalid_argument);
    std::vector<SafetensorsEntry> dup = sample_entries();
    dup[1].name = "a.weight";
    EXPECT_THROW(serialize_safetensors(dup, {}), std::invalid_argument);
    std::vector<SafetensorsEntry> reserved = sample_entries();
    reserved[0].name = "__metadata__";
    EXPECT_THROW(serialize_safetensors(reserved, {}), std::invalid_argument);
}

TEST(Safetensors, ReadsPaddedHeaderAndEmptyFile) {
    const WeightFile w = load(one_tensor("U8", "[2, 2]", "[0, 4]", 4));
    EXPECT_EQ(w.get("t")[3], 3.0f);
    const WeightFile padded =
        load(file_with_header(R"({"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}   )", 1));
    EXPECT_TRUE(padded.has("t"));
    EXPECT_TRUE(load(file_with_header("{}      ", 0)).names().empty());
}

TEST(Safetensors, RejectsBadLengthsAndOffsets) {
    Bytes too_long = one_tensor("U8", "[4]", "[0, 4]", 4);
    too_long[0] = 0xff;  // header length past the end of the file
    expect_format_error(too_long, "exceeds the file size");
    Bytes huge = one_tensor("U8", "[4]", "[0, 4]", 4);
    for (int i = 0; i < 8; ++i) huge[i] = 0xff;
    expect_format_error(huge, "exceeds the file size");
    expect_format_error(one_tensor("U8", "[8]", "[0, 8]", 4), "outside the data area");
    expect_format_error(one_tensor("U8", "[2]", "[3, 1]", 4), "outside the data area");
    expect_format_error(one_tensor("U8", "[3]", "[0, 4]", 4), "4 bytes for shape [3] of U8");
    expect_format_error(one_tensor("F32", "[2]", "[0, 4]", 4), "4 bytes for shape [2] of F32");
    expect_format_error(one_tensor("U8", "[4]", "[0]", 4), "data_offsets is not [begin, end]");
    expect_format_error(one_tensor("U8", "[4]", "[-1, 3]", 4), "non-negative integer");
    expect_format_error(file_with_header(R"({"a":{"dtype":"U8","shape":[3],"data_offsets":[0,3]},)"
                                         R"("b":{"dtype":"U8","shape":[3],"data_offsets":[1,4]}})",
                                         4),
                        "overlaps");
}

TEST(Safetensors, RejectsBadShapesAndDtypes) {
    expect_format_error(one_tensor("Q4", "[4]", "[0, 4]", 4), "unknown dtype \"Q4\"");
    expect_format_error(one_tensor("U8", "[-4]", "[0, 4]", 4), "non-negative integer");
    expect_format_error(one_tensor("U8", "[2.0, 2]", "[0, 4]", 4), "non-negative integer");
    expect_format_error(one_tensor("U8", "4", "[0, 4]", 4), "shape is not an array");
    expect_format_error(one_tensor("F32", "[4294967296, 4294967296]", "[0, 4]", 4), "overflows");
    expect_format_error(one_tensor("U8", "[18446744073709551615]", "[0, 4]", 4), "too large");
    expect_format_error(file_with_header(R"({"t":{"dtype":"U8","shape":[4]}})", 4),
                        "needs dtype, shape and data_offsets");
    expect_format_error(file_with_header(R"({"t":[1]})", 4), "not an object");
}

TEST(Safetensors, RejectsBadJson) {
    expect_format_error(file_with_header(R"({"t":{"dtype":"U8",)", 4), "not valid JSON");
    expect_format_error(file_with_header(R"({"t":{"dtype":"U8","shape":[NaN]}})", 4),
                        "not valid JSON");
    expect_format_error(file_with_header("{\"t\xff\":1}", 4), "not valid JSON");
    expect_format_error(file_with_header(R"({"t":1} trailing)", 4), "not valid JSON");
    expect_format_error(file_with_header(R"({"__metadata__":{"k":1}})", 0),
                        "__metadata__ value 'k' is not a string");
    // Not starting with '{' is not recognised as safetensors at all.
    expect_format_error(file_with_header("[1, 2]", 0), "neither");
}

TEST(Safetensors, SurvivesEveryTruncationAndByteFlip) {
    const Bytes good = serialize_safetensors(sample_entries(), {{"format", "pt"}});
    for (size_t n = 0; n < good.size(); ++n) {
        try {
            load(Bytes(good.begin(), good.begin() + n));
        } catch (const FormatError&) {
        }
    }
    for (size_t i = 0; i < good.size(); ++i) {
        Bytes bad = good;
        bad[i] ^= 0x5a;
        try {
            const WeightFile w = load(bad);
            for (const std::string& name : w.names()) w.get(name);
        } catch (const FormatError&) {
        }
    }
}

}  // namespace
}  // namespace splitseg
