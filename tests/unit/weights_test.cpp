// WeightFile over torch.save checkpoints built byte by byte: the zip reader, the restricted
// unpickler and the tensor views, on good files and on broken or hostile ones.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <thread>

#include "checkpoint_builder.h"
#include "engine/mapped_file.h"
#include "engine/weights/pickle_reader.h"
#include "engine/weights/safetensors.h"
#include "engine/weights/weight_file.h"

namespace splitseg {
namespace {

using testing::Bytes;
using testing::PickleWriter;
using testing::raw_bytes;
using testing::ZipWriter;

struct Storage {
    std::string key;
    Bytes bytes;
};

Bytes checkpoint(const PickleWriter& pickle, const std::vector<Storage>& storages,
                 const std::string& dir = "archive/") {
    ZipWriter zip;
    zip.add(dir + "data.pkl", pickle.bytes());
    for (const Storage& s : storages) zip.add(dir + "data/" + s.key, s.bytes);
    zip.add(dir + "version", {'3', '\n'});
    return zip.finish();
}

WeightFile load(const Bytes& bytes) {
    return WeightFile::from_bytes(bytes, "test.pth");
}

// The load fails with a FormatError naming the file and containing `fragment`.
void expect_format_error(const Bytes& bytes, const std::string& fragment) {
    testing::expect_format_error(bytes, "test.pth", fragment);
}

const std::vector<float> kSix = {1, 2, 3, 4, 5, 6};

// {"w": float tensor [2, 3] over storage "0"} with the given view.
PickleWriter one_tensor(const std::string& type, int64_t numel, int64_t offset,
                        const std::vector<int64_t>& shape, const std::vector<int64_t>& stride) {
    PickleWriter p;
    p.ordered_dict().mark().str("w").tensor(type, "0", numel, offset, shape, stride);
    p.setitems().stop();
    return p;
}

Bytes six_floats(int64_t offset, const std::vector<int64_t>& shape,
                 const std::vector<int64_t>& stride) {
    return checkpoint(one_tensor("FloatStorage", 6, offset, shape, stride),
                      {{"0", raw_bytes(kSix)}});
}

std::vector<float> values(const Tensor& t) {
    return {t.data(), t.data() + t.numel()};
}

TEST(TorchCheckpoint, ReadsContiguousFloatTensorInPlace) {
    const Bytes file = six_floats(0, {2, 3}, {3, 1});
    const WeightFile w = load(file);
    EXPECT_EQ(w.names(), std::vector<std::string>{"w"});
    EXPECT_TRUE(w.has("w"));
    EXPECT_FALSE(w.has("v"));
    const Tensor t = w.get("w", {2, 3});
    EXPECT_EQ(values(t), kSix);
    EXPECT_EQ(w.ref("w").dtype, DType::F32);
    EXPECT_EQ(w.ref("w").nbytes, 24u);
    EXPECT_TRUE(w.metadata().empty());
    EXPECT_EQ(w.path(), "test.pth");
}

TEST(TorchCheckpoint, ReadsViewAtOffset) {
    const WeightFile w = load(six_floats(2, {2, 2}, {2, 1}));
    EXPECT_EQ(values(w.get("w")), (std::vector<float>{3, 4, 5, 6}));
}

TEST(TorchCheckpoint, MaterialisesNonContiguousView) {
    // The transpose of [[1, 2, 3], [4, 5, 6]].
    const WeightFile w = load(six_floats(0, {3, 2}, {1, 3}));
    EXPECT_EQ(values(w.get("w", {3, 2})), (std::vector<float>{1, 4, 2, 5, 3, 6}));
}

TEST(TorchCheckpoint, SizeOneDimensionsMayHaveAnyStride) {
    const WeightFile w = load(six_floats(0, {1, 6}, {99, 1}));
    EXPECT_EQ(values(w.get("w")), kSix);
}

TEST(TorchCheckpoint, ConvertsHalfAndBfloat16Storages) {
    const std::vector<uint16_t> half = {f32_to_f16(1.5f), f32_to_f16(-2.0f)};
    const std::vector<uint16_t> bf = {f32_to_bf16(0.25f), f32_to_bf16(3.0f)};
    PickleWriter p;
    p.ordered_dict().mark();
    p.str("h").tensor("HalfStorage", "0", 2, 0, {2}, {1});
    p.str("b").tensor("BFloat16Storage", "1", 2, 0, {2}, {1});
    p.setitems().stop();
    const WeightFile w = load(checkpoint(p, {{"0", raw_bytes(half)}, {"1", raw_bytes(bf)}}));
    EXPECT_EQ(w.ref("h").dtype, DType::F16);
    EXPECT_EQ(values(w.get("h")), (std::vector<float>{1.5f, -2.0f}));
    EXPECT_EQ(w.ref("b").dtype, DType::BF16);
    EXPECT_EQ(values(w.get("b")), (std::vector<float>{0.25f, 3.0f}));
}

TEST(TorchCheckpoint, ReadsInt64ScalarAndSkipsNonTensorValues) {
    // {"n": tensor(int64 7) shape [], "epoch": 3}, the storage in "weights/" as some exporters name
    // it.
    PickleWriter p;
    p.ordered_dict().mark();
    p.str("n").tensor("LongStorage", "0", 1, 0, {}, {});
    p.str("epoch").integer(3);
    p.setitems().stop();
    const WeightFile w =
        load(checkpoint(p, {{"0", raw_bytes(std::vector<int64_t>{7})}}, "weights/"));
    EXPECT_EQ(w.names(), std::vector<std::string>{"n"});
    const Tensor t = w.get("n");
    EXPECT_EQ(t.ndim(), 0);
    EXPECT_EQ(t[0], 7.0f);
}

TEST(TorchCheckpoint, UnwrapsModelAndStateDict) {
    for (const char* outer : {"model", "state_dict"}) {
        // {"epoch": 1, outer: {"w": tensor}} as a plain dict with SETITEM.
        PickleWriter p;
        p.empty_dict().binput(0).str("epoch").integer(1).setitem().str(outer);
        p.ordered_dict().mark().str("w").tensor("FloatStorage", "0", 6, 0, {6}, {1});
        p.setitems().setitem().stop();
        const WeightFile w = load(checkpoint(p, {{"0", raw_bytes(kSix)}}));
        EXPECT_EQ(w.names(), std::vector<std::string>{"w"}) << outer;
    }
}

TEST(TorchCheckpoint, SharedStorageThroughMemoAndParameters) {
    // Two views of one storage, the second through the memo; one wrapped as a Parameter; the
    // state_dict carries _metadata state applied by BUILD.
    PickleWriter p;
    p.ordered_dict().mark();
    p.str("a").global("torch._utils", "_rebuild_parameter").mark();
    p.global("torch._utils", "_rebuild_tensor_v2").mark();
    p.storage("FloatStorage", "0", 6).binput(1);
    p.integer(0).ints({3}).ints({1}).op(0x89).ordered_dict().tuple().reduce();
    p.op(0x88).ordered_dict().tuple().reduce();  // _rebuild_parameter(t, True, OrderedDict())
    p.str("b").global("torch._utils", "_rebuild_tensor_v2").mark();
    p.binget(1).integer(3).ints({3}).ints({1}).op(0x89).ordered_dict().tuple().reduce();
    p.setitems();
    p.empty_dict().str("_metadata").empty_dict().setitem().op('b');  // BUILD
    p.stop();
    const WeightFile w = load(checkpoint(p, {{"0", raw_bytes(kSix)}}));
    EXPECT_EQ(values(w.get("a")), (std::vector<float>{1, 2, 3}));
    EXPECT_EQ(values(w.get("b")), (std::vector<float>{4, 5, 6}));
}

TEST(TorchCheckpoint, ReadsZip64EndRecord) {
    ZipWriter zip;
    zip.add("archive/data.pkl", one_tensor("FloatStorage", 6, 0, {6}, {1}).bytes());
    zip.add("archive/data/0", raw_bytes(kSix));
    EXPECT_EQ(values(load(zip.finish(/*zip64=*/true)).get("w")), kSix);
}

TEST(TorchCheckpoint, ChecksByteOrder) {
    for (const std::string order : {"little", "big"}) {
        ZipWriter zip;
        zip.add("archive/data.pkl", one_tensor("FloatStorage", 6, 0, {6}, {1}).bytes());
        zip.add("archive/byteorder", Bytes(order.begin(), order.end()));
        zip.add("archive/data/0", raw_bytes(kSix));
        if (order == "little")
            EXPECT_TRUE(load(zip.finish()).has("w"));
        else
            expect_format_error(zip.finish(), "byteorder is 'big'");
    }
}

TEST(TorchCheckpoint, RejectsViewsPastTheirStorage) {
    expect_format_error(six_floats(1, {2, 3}, {3, 1}), "runs past the end of storage '0'");
    expect_format_error(six_floats(0, {3, 3}, {3, 1}), "runs past the end");
    expect_format_error(six_floats(0, {2, 3}, {4, 1}), "runs past the end");
    expect_format_error(six_floats(-1, {2}, {1}), "negative storage offset");
    expect_format_error(six_floats(0, {-2}, {1}), "negative size or stride");
    expect_format_error(six_floats(0, {INT64_MAX, 2}, {2, 1}), "overflows");
    // The storage's recorded size exceeds its bytes.
    expect_format_error(
        checkpoint(one_tensor("FloatStorage", 7, 0, {6}, {1}), {{"0", raw_bytes(kSix)}}),
        "shorter than its recorded size");
    // A broadcast (stride 0) bigger than its storage.
    expect_format_error(six_floats(0, {100}, {0}), "larger than its storage");
}

TEST(TorchCheckpoint, RejectsShapeStrideMismatch) {
    expect_format_error(six_floats(0, {2, 3}, {1}), "size and stride differ");
}

TEST(TorchCheckpoint, RejectsMissingPieces) {
    ZipWriter no_pickle;
    no_pickle.add("archive/data/0", raw_bytes(kSix));
    expect_format_error(no_pickle.finish(), "no data.pkl");
    expect_format_error(checkpoint(one_tensor("FloatStorage", 6, 0, {6}, {1}), {}),
                        "storage '0' missing");
}

TEST(TorchCheckpoint, RejectsDisallowedGlobals) {
    for (const auto& [module, name] : std::vector<std::pair<std::string, std::string>>{
             {"os", "system"}, {"builtins", "eval"}, {"torch.storage", "_load_from_bytes"}}) {
        PickleWriter p;
        p.global(module, name).mark().str("echo pwned").tuple().reduce().stop();
        expect_format_error(checkpoint(p, {}),
                            "global '" + module + "." + name + "' is not allowed");
    }
    PickleWriter stack_global;
    stack_global.str("posix").str("system").op(0x93).stop();
    expect_format_error(checkpoint(stack_global, {}), "'posix.system' is not allowed");
}

TEST(TorchCheckpoint, RejectsUnknownOpcodes) {
    for (uint8_t op : {uint8_t{'i'}, uint8_t{'o'}, uint8_t{'S'}, uint8_t{0x00}, uint8_t{0xff}}) {
        PickleWriter p;
        p.empty_dict().op(op).stop();
        expect_format_error(checkpoint(p, {}), "unsupported opcode");
    }
}

TEST(TorchCheckpoint, RejectsMalformedPickles) {
    const auto check = [](PickleWriter p, const std::string& fragment) {
        expect_format_error(checkpoint(p, {}), fragment);
    };
    check(PickleWriter().empty_dict(), "without a STOP");
    check(PickleWriter().stop(), "stack underflow");
    check(PickleWriter().mark().stop(), "stack underflow");  // a MARK hides the stack below
    check(PickleWriter().binget(3).stop(), "memo index 3 unset");
    check(PickleWriter().empty_tuple().stop(), "top-level object is not a dict");
    check(PickleWriter().empty_dict().str("k").setitems().stop(), "no MARK");
    check(PickleWriter().empty_tuple().mark().str("k").setitems().stop(), "not a dict");
    check(PickleWriter().global("torch", "FloatStorage").empty_tuple().reduce().stop(),
          "not callable");
    check(PickleWriter().str("x").empty_tuple().reduce().stop(), "REDUCE on a non-callable");
    check(PickleWriter().op(0x8a).byte(9).stop(), "wider than 64 bits");
    check(PickleWriter().op(0x8c).byte(2).byte(0xc3).byte(0x28).stop(), "not valid UTF-8");
    PickleWriter deep;
    for (int i = 0; i < 2000; ++i) deep.mark();
    check(deep, "nested too deep");
    PickleWriter huge_string;
    huge_string.op('X').byte(0xff).byte(0xff).byte(0xff).byte(0x7f);
    check(huge_string, "truncated string");
}

TEST(TorchCheckpoint, DecodesEveryIntegerOpcode) {
    // The storage offset of a byte tensor, written with each integer opcode.
    const std::vector<std::pair<Bytes, int64_t>> cases = {
        {{'K', 5}, 5},
        {{'M', 0x2c, 0x01}, 300},
        {{'J', 0x70, 0x11, 0x01, 0x00}, 70000},
        {{0x8a, 3, 0x70, 0x11, 0x01}, 70000},
        {{0x8a, 0}, 0},
        {{0x8a, 1, 0xff}, -1},
        {{'J', 0xfe, 0xff, 0xff, 0xff}, -2},
    };
    Bytes storage(70001);
    for (size_t i = 0; i < storage.size(); ++i) storage[i] = static_cast<uint8_t>(i % 251);
    for (const auto& [encoded, value] : cases) {
        PickleWriter p;
        p.ordered_dict().mark().str("w").global("torch._utils", "_rebuild_tensor_v2").mark();
        p.storage("ByteStorage", "0", 70001).raw(encoded);
        p.ints({1}).ints({1}).op(0x89).ordered_dict().tuple().reduce().setitems().stop();
        const Bytes file = checkpoint(p, {{"0", storage}});
        if (value < 0) {
            expect_format_error(file, "negative storage offset");
        } else {
            EXPECT_EQ(load(file).get("w")[0], static_cast<float>(value % 251)) << value;
        }
    }
}

TEST(TorchCheckpoint, RejectsBrokenZips) {
    const Bytes good = six_floats(0, {6}, {1});
    expect_format_error(Bytes(good.begin(), good.end() - 1), "end-of-central-directory");
    expect_format_error(Bytes(good.begin(), good.begin() + 40), "end-of-central-directory");

    Bytes bad_cd = good;
    const Bytes central_sig = {'P', 'K', 1, 2};
    bad_cd[std::search(bad_cd.begin(), bad_cd.end(), central_sig.begin(), central_sig.end()) -
           bad_cd.begin()] = 'X';
    expect_format_error(bad_cd, "bad central directory entry signature");

    ZipWriter deflated;
    deflated.add("archive/data.pkl", one_tensor("FloatStorage", 6, 0, {6}, {1}).bytes(), 8);
    expect_format_error(deflated.finish(), "compressed (method 8)");

    ZipWriter duplicate;
    duplicate.add("archive/data.pkl", {}).add("archive/data.pkl", {});
    expect_format_error(duplicate.finish(), "duplicate entry");
}

// Every truncation and every single-byte corruption of a small checkpoint either loads or fails
// with a FormatError: no crash, no other exception (ASan/UBSan in CI check the rest).
TEST(TorchCheckpoint, SurvivesEveryTruncationAndByteFlip) {
    const Bytes good = six_floats(0, {3, 2}, {1, 3});
    for (size_t n = 0; n < good.size(); ++n)
        EXPECT_THROW(load(Bytes(good.begin(), good.begin() + n)), FormatError) << n;
    for (size_t i = 0; i < good.size(); ++i) {
        for (uint8_t flip : {uint8_t{0x01}, uint8_t{0x80}, uint8_t{0xff}}) {
            Bytes bad = good;
            bad[i] ^= flip;
            try {
                const WeightFile w = load(bad);
                for (const std::string& name : w.names()) w.get(name);
            } catch (const FormatError&) {
            }
        }
    }
}

TEST(TorchCheckpoint, ReportsLegacyAndUnknownFormats) {
    Bytes legacy = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c,
                    0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
    expect_format_error(legacy, "legacy torch.save format");
    expect_format_error({'h', 'e', 'l', 'l', 'o'}, "neither a PyTorch zip checkpoint");
    expect_format_error({}, "neither");
}

TEST(WeightFile, ErrorsNameTheKeyAndShape) {
    const WeightFile w = load(six_floats(0, {2, 3}, {3, 1}));
    EXPECT_THROW(w.ref("missing"), FormatError);
    try {
        w.get("w", {3, 2});
        ADD_FAILURE() << "shape mismatch not reported";
    } catch (const FormatError& e) {
        EXPECT_STREQ(e.what(), "test.pth: tensor 'w' has shape [2, 3], expected [3, 2]");
    }
}

TEST(WeightFile, OpenReportsMissingFile) {
    try {
        WeightFile::open("/nonexistent/model.pth");
        ADD_FAILURE() << "opened a missing file";
    } catch (const FormatError& e) {
        EXPECT_NE(std::string(e.what()).find("/nonexistent/model.pth: cannot open"),
                  std::string::npos)
            << e.what();
    }
}

TEST(WeightFile, ContentHashIgnoresFormatButNotBytes) {
    const WeightFile pth = load(six_floats(0, {2, 3}, {3, 1}));
    const std::string hash = pth.content_hash();
    EXPECT_EQ(hash.size(), 16u);
    EXPECT_EQ(hash.find_first_not_of("0123456789abcdef"), std::string::npos);

    // The same tensor as safetensors, read from a real file through open().
    const std::string path = ::testing::TempDir() + "hash_test.safetensors";
    write_safetensors(path, {{"w", DType::F32, {2, 3}, kSix.data(), 24}}, {{"k", "v"}});
    const WeightFile st = WeightFile::open(path);
    EXPECT_EQ(st.content_hash(), hash);
    std::filesystem::remove(path);

    std::vector<float> changed = kSix;
    changed[5] = 7;
    const WeightFile other = load(
        checkpoint(one_tensor("FloatStorage", 6, 0, {2, 3}, {3, 1}), {{"0", raw_bytes(changed)}}));
    EXPECT_NE(other.content_hash(), hash);
}

TEST(WeightFile, ContentHashIsThreadSafe) {
    const WeightFile w = load(six_floats(0, {2, 3}, {3, 1}));
    std::vector<std::string> hashes(4);
    std::vector<std::thread> threads;
    for (size_t i = 0; i < hashes.size(); ++i)
        threads.emplace_back([&, i] { hashes[i] = w.content_hash(); });
    for (std::thread& t : threads) t.join();
    for (const std::string& h : hashes) EXPECT_EQ(h, hashes[0]);
}

TEST(WeightFile, MovedFileKeepsItsTensors) {
    WeightFile a = load(six_floats(0, {3, 2}, {1, 3}));  // materialised view
    WeightFile b = std::move(a);
    EXPECT_EQ(values(b.get("w")), (std::vector<float>{1, 4, 2, 5, 3, 6}));
}

TEST(MappedFile, MapsWholeFile) {
    const std::string path = ::testing::TempDir() + "mapped_file_test.bin";
    std::ofstream(path, std::ios::binary) << "hello";
    MappedFile m(path);
    ASSERT_EQ(m.size(), 5u);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(m.data()), m.size()), "hello");
    MappedFile moved = std::move(m);
    EXPECT_EQ(moved.size(), 5u);
    EXPECT_EQ(m.size(), 0u);
    std::ofstream(path, std::ios::binary | std::ios::trunc);
    EXPECT_EQ(MappedFile(path).size(), 0u);
    std::filesystem::remove(path);
    EXPECT_THROW(MappedFile("/nonexistent"), std::system_error);
}

}  // namespace
}  // namespace splitseg
