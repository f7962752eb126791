#include "engine/weights/pickle_reader.h"

#include <cstdio>
#include <deque>
#include <string_view>
#include <unordered_map>

#include "engine/weights/byte_reader.h"

namespace splitseg {

namespace {

// Bounds on what a malicious pickle can make us hold; real checkpoints stay far below them.
constexpr size_t kMaxMarkDepth = 1024;
constexpr size_t kMaxMemo = size_t{1} << 22;
constexpr size_t kMaxGlobalLine = 256;

enum class Kind { None, Bool, Int, Float, String, Tuple, List, Dict, Global, Storage, Tensor };

// The globals a state_dict may name. Calling a storage class is not allowed: storages only
// appear as type tags inside persistent ids.
enum class Callable { OrderedDict, RebuildTensor, RebuildParameter, StorageType };

struct AllowedGlobal {
    std::string_view module, name;
    Callable callable;
    DType dtype;  // StorageType only
};

constexpr AllowedGlobal kAllowedGlobals[] = {
    {"collections", "OrderedDict", Callable::OrderedDict, DType::F32},
    {"torch._utils", "_rebuild_tensor_v2", Callable::RebuildTensor, DType::F32},
    {"torch._utils", "_rebuild_parameter", Callable::RebuildParameter, DType::F32},
    {"torch", "FloatStorage", Callable::StorageType, DType::F32},
    {"torch", "HalfStorage", Callable::StorageType, DType::F16},
    {"torch", "BFloat16Storage", Callable::StorageType, DType::BF16},
    {"torch", "DoubleStorage", Callable::StorageType, DType::F64},
    {"torch", "LongStorage", Callable::StorageType, DType::I64},
    {"torch", "IntStorage", Callable::StorageType, DType::I32},
    {"torch", "ShortStorage", Callable::StorageType, DType::I16},
    {"torch", "CharStorage", Callable::StorageType, DType::I8},
    {"torch", "ByteStorage", Callable::StorageType, DType::U8},
    {"torch", "BoolStorage", Callable::StorageType, DType::BOOL},
};

struct Object {
    Kind kind = Kind::None;
    int64_t integer = 0;                    // Int, Bool
    std::string text;                       // String
    std::vector<Object*> items;             // Tuple, List; Dict: key, value, key, value, ...
    const AllowedGlobal* global = nullptr;  // Global
    PickledTensor tensor;                   // Storage: tensor.storage; Tensor
};

enum Opcode : uint8_t {
    kMark = '(',
    kStop = '.',
    kBinFloat = 'G',
    kBinInt = 'J',
    kBinInt1 = 'K',
    kBinInt2 = 'M',
    kNone = 'N',
    kBinPersId = 'Q',
    kReduce = 'R',
    kBinUnicode = 'X',
    kEmptyList = ']',
    kAppend = 'a',
    kBuild = 'b',
    kGlobal = 'c',
    kAppends = 'e',
    kBinGet = 'h',
    kLongBinGet = 'j',
    kBinPut = 'q',
    kLongBinPut = 'r',
    kSetItem = 's',
    kTuple = 't',
    kSetItems = 'u',
    kEmptyDict = '}',
    kEmptyTuple = ')',
    kProto = 0x80,
    kLong1 = 0x8a,
    kTuple1 = 0x85,
    kTuple2 = 0x86,
    kTuple3 = 0x87,
    kNewTrue = 0x88,
    kNewFalse = 0x89,
    kShortBinUnicode = 0x8c,
    kBinUnicode8 = 0x8d,
    kStackGlobal = 0x93,
    kMemoize = 0x94,
    kFrame = 0x95,
};

bool valid_utf8(std::string_view s) {
    static constexpr uint32_t kMinCodePoint[] = {0, 0, 0x80, 0x800, 0x10000};
    for (size_t i = 0; i < s.size();) {
        const auto lead = static_cast<uint8_t>(s[i]);
        size_t len = 1;
        uint32_t cp = lead;
        if (lead >= 0x80) {
            if ((lead >> 5) == 0x6)
                len = 2, cp = lead & 0x1f;
            else if ((lead >> 4) == 0xe)
                len = 3, cp = lead & 0x0f;
            else if ((lead >> 3) == 0x1e)
                len = 4, cp = lead & 0x07;
            else
                return false;
            if (len > s.size() - i) return false;
            for (size_t k = 1; k < len; ++k) {
                const auto cont = static_cast<uint8_t>(s[i + k]);
                if ((cont >> 6) != 0x2) return false;
                cp = (cp << 6) | (cont & 0x3f);
            }
            if (cp < kMinCodePoint[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
                return false;
        }
        i += len;
    }
    return true;
}

std::string opcode_str(uint8_t op) {
    char buf[16];
    if (op >= 0x20 && op < 0x7f)
        std::snprintf(buf, sizeof buf, "0x%02x '%c'", op, op);
    else
        std::snprintf(buf, sizeof buf, "0x%02x", op);
    return buf;
}

class Unpickler {
  public:
    explicit Unpickler(std::span<const uint8_t> bytes) : in_(bytes) {}

    // Runs to STOP and returns the unpickled object.
    const Object& run() {
        for (;;) {
            const size_t at = in_.pos();
            if (in_.remaining() == 0) throw FormatError("pickle: ends without a STOP opcode");
            const uint8_t op = in_.u8("opcode");
            try {
                if (op == kStop) return *pop();
                step(op);
            } catch (const FormatError& e) {
                throw FormatError("pickle: " + std::string(e.what()) + " (opcode " +
                                  opcode_str(op) + " at offset " + std::to_string(at) + ")");
            }
        }
    }

  private:
    void step(uint8_t op) {
        switch (op) {
            case kProto:
                if (in_.u8("protocol") > 5) throw FormatError("unsupported pickle protocol");
                return;
            case kFrame:  // framing is only a read-ahead hint
                in_.u64("frame length");
                return;
            case kMark:
                if (marks_.size() >= kMaxMarkDepth) throw FormatError("MARKs nested too deep");
                marks_.push_back(stack_.size());
                return;
            case kEmptyDict:
                push(make(Kind::Dict));
                return;
            case kEmptyList:
                push(make(Kind::List));
                return;
            case kEmptyTuple:
                push(make(Kind::Tuple));
                return;
            case kTuple:
                push(make_tuple(pop_mark()));
                return;
            case kTuple1:
                push(make_tuple(pop_n(1)));
                return;
            case kTuple2:
                push(make_tuple(pop_n(2)));
                return;
            case kTuple3:
                push(make_tuple(pop_n(3)));
                return;
            case kNone:
                push(make(Kind::None));
                return;
            case kNewTrue:
                push(make_int(Kind::Bool, 1));
                return;
            case kNewFalse:
                push(make_int(Kind::Bool, 0));
                return;
            case kBinInt:
                push(make_int(Kind::Int, static_cast<int32_t>(in_.u32("int"))));
                return;
            case kBinInt1:
                push(make_int(Kind::Int, in_.u8("int")));
                return;
            case kBinInt2:
                push(make_int(Kind::Int, in_.u16("int")));
                return;
            case kLong1:
                push(make_int(Kind::Int, read_long1()));
                return;
            case kBinFloat:  // a float's value is never needed (e.g. a learning rate)
                in_.take(8, "float");
                push(make(Kind::Float));
                return;
            case kShortBinUnicode:
                push(make_string(in_.u8("string length")));
                return;
            case kBinUnicode:
                push(make_string(in_.u32("string length")));
                return;
            case kBinUnicode8:
                push(make_string(in_.u64("string length")));
                return;
            case kBinPut:
                memo_put(in_.u8("memo index"));
                return;
            case kLongBinPut:
                memo_put(in_.u32("memo index"));
                return;
            case kMemoize:
                memo_put(memo_.size());
                return;
            case kBinGet:
                push(memo_get(in_.u8("memo index")));
                return;
            case kLongBinGet:
                push(memo_get(in_.u32("memo index")));
                return;
            case kAppend:
                add_items(Kind::List, pop_n(1));
                return;
            case kAppends:
                add_items(Kind::List, pop_mark());
                return;
            case kSetItem:
                add_items(Kind::Dict, pop_n(2));
                return;
            case kSetItems:
                add_items(Kind::Dict, pop_mark());
                return;
            case kGlobal: {
                const std::string module = read_line();
                push(make_global(module, read_line()));
                return;
            }
            case kStackGlobal: {
                const Object* name = pop();
                const Object* module = pop();
                push(make_global(as_string(*module, "module"), as_string(*name, "name")));
                return;
            }
            case kReduce: {
                const Object* args = pop();
                const Object* callable = pop();
                push(reduce(*callable, *args));
                return;
            }
            case kBuild:
                // Attribute state of an OrderedDict (state_dict._metadata): not needed.
                pop();
                if (top()->kind != Kind::Dict) throw FormatError("BUILD on a non-dict");
                return;
            case kBinPersId:
                push(make_storage(*pop()));
                return;
            default:
                throw FormatError("unsupported opcode");
        }
    }

    // ---- the stack; a MARK hides what lies below it until the mark is popped.
    size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
    void push(Object* o) { stack_.push_back(o); }
    Object* top() const {
        if (stack_.size() <= floor()) throw FormatError("stack underflow");
        return stack_.back();
    }
    Object* pop() {
        Object* o = top();
        stack_.pop_back();
        return o;
    }
    std::vector<Object*> pop_n(size_t n) {
        if (stack_.size() < floor() + n) throw FormatError("stack underflow");
        std::vector<Object*> items(stack_.end() - static_cast<ptrdiff_t>(n), stack_.end());
        stack_.resize(stack_.size() - n);
        return items;
    }
    std::vector<Object*> pop_mark() {
        if (marks_.empty()) throw FormatError("no MARK to pop to");
        const size_t mark = marks_.back();
        marks_.pop_back();
        std::vector<Object*> items(stack_.begin() + static_cast<ptrdiff_t>(mark), stack_.end());
        stack_.resize(mark);
        return items;
    }

    void memo_put(size_t index) {
        if (memo_.size() >= kMaxMemo && !memo_.contains(index)) throw FormatError("memo too large");
        memo_[index] = top();
    }
    Object* memo_get(size_t index) const {
        auto it = memo_.find(index);
        if (it == memo_.end()) throw FormatError("memo index " + std::to_string(index) + " unset");
        return it->second;
    }

    // ---- reading arguments
    int64_t read_long1() {
        const uint8_t n = in_.u8("long length");
        if (n > 8) throw FormatError("integer wider than 64 bits");
        std::span<const uint8_t> bytes = in_.take(n, "long");
        uint64_t v = 0;
        for (size_t i = 0; i < n; ++i) v |= static_cast<uint64_t>(bytes[i]) << (8 * i);
        if (n > 0 && n < 8 && (bytes[n - 1] & 0x80)) v |= ~uint64_t{0} << (8 * n);  // sign
        return static_cast<int64_t>(v);
    }
    std::string read_line() {
        std::string line;
        for (char c; (c = static_cast<char>(in_.u8("GLOBAL"))) != '\n';) {
            if (line.size() >= kMaxGlobalLine) throw FormatError("GLOBAL name too long");
            line += c;
        }
        return line;
    }

    // ---- making objects; the arena owns them all, so memo cycles cannot leak.
    Object* make(Kind kind) {
        Object& o = arena_.emplace_back();
        o.kind = kind;
        return &o;
    }
    Object* make_int(Kind kind, int64_t v) {
        Object* o = make(kind);
        o->integer = v;
        return o;
    }
    Object* make_string(uint64_t length) {
        std::string_view s = in_.take_string(length, "string");
        if (!valid_utf8(s)) throw FormatError("string is not valid UTF-8");
        Object* o = make(Kind::String);
        o->text = s;
        return o;
    }
    Object* make_tuple(std::vector<Object*> items) {
        Object* o = make(Kind::Tuple);
        o->items = std::move(items);
        return o;
    }
    Object* make_global(const std::string& module, const std::string& name) {
        for (const AllowedGlobal& g : kAllowedGlobals) {
            if (g.module == module && g.name == name) {
                Object* o = make(Kind::Global);
                o->global = &g;
                return o;
            }
        }
        throw FormatError("global '" + module + "." + name + "' is not allowed");
    }

    // APPEND(S), SETITEM(S): the items were popped first; the list or dict is now on top.
    void add_items(Kind kind, const std::vector<Object*>& items) {
        Object* target = top();
        if (target->kind != kind) throw FormatError("target is not a " + kind_name(kind));
        if (kind == Kind::Dict && items.size() % 2) throw FormatError("odd count of dict items");
        target->items.insert(target->items.end(), items.begin(), items.end());
    }

    // ---- calls: only the allowed globals, each with the argument shapes torch writes.
    Object* reduce(const Object& callable, const Object& args) {
        if (callable.kind != Kind::Global) throw FormatError("REDUCE on a non-callable");
        const std::vector<Object*>& a = as_kind(args, Kind::Tuple, "arguments").items;
        const std::string what =
            std::string(callable.global->module) + "." + std::string(callable.global->name);
        switch (callable.global->callable) {
            case Callable::OrderedDict:
                if (!a.empty()) throw FormatError(what + " with arguments");
                return make(Kind::Dict);
            case Callable::RebuildTensor:
                return rebuild_tensor(a);
            case Callable::RebuildParameter:
                if (a.empty() || a[0]->kind != Kind::Tensor)
                    throw FormatError(what + " without a tensor");
                return a[0];
            case Callable::StorageType:
                break;
        }
        throw FormatError(what + " is not callable");
    }

    // _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, hooks[, meta])
    Object* rebuild_tensor(const std::vector<Object*>& a) {
        if (a.size() != 6 && a.size() != 7)
            throw FormatError("_rebuild_tensor_v2 takes 6 or 7 arguments");
        Object* o = make(Kind::Tensor);
        o->tensor.storage = as_kind(*a[0], Kind::Storage, "tensor storage").tensor.storage;
        o->tensor.offset = as_int(*a[1], "storage offset");
        o->tensor.shape = as_ints(*a[2], "tensor size");
        o->tensor.stride = as_ints(*a[3], "tensor stride");
        if (o->tensor.shape.size() != o->tensor.stride.size())
            throw FormatError("tensor size and stride differ in length");
        return o;
    }

    // Persistent id ("storage", storage type, key, location, numel).
    Object* make_storage(const Object& pid) {
        const std::vector<Object*>& t = as_kind(pid, Kind::Tuple, "persistent id").items;
        if (t.size() != 5 || as_string(*t[0], "persistent id tag") != "storage")
            throw FormatError("persistent id is not a storage");
        const Object& type = as_kind(*t[1], Kind::Global, "storage type");
        if (type.global->callable != Callable::StorageType)
            throw FormatError("persistent id names no storage type");
        Object* o = make(Kind::Storage);
        o->tensor.storage = {.key = as_string(*t[2], "storage key"),
                             .dtype = type.global->dtype,
                             .numel = as_int(*t[4], "storage size")};
        as_string(*t[3], "storage location");
        return o;
    }

    static std::string kind_name(Kind k) {
        static constexpr const char* kNames[] = {"None",   "bool",    "int",   "float",
                                                 "str",    "tuple",   "list",  "dict",
                                                 "global", "storage", "tensor"};
        return kNames[static_cast<int>(k)];
    }
    static const Object& as_kind(const Object& o, Kind k, const char* what) {
        if (o.kind != k) throw FormatError(std::string(what) + " is not a " + kind_name(k));
        return o;
    }
    static int64_t as_int(const Object& o, const char* what) {
        return as_kind(o, Kind::Int, what).integer;
    }
    static const std::string& as_string(const Object& o, const char* what) {
        return as_kind(o, Kind::String, what).text;
    }
    static std::vector<int64_t> as_ints(const Object& o, const char* what) {
        std::vector<int64_t> v;
        for (const Object* item : as_kind(o, Kind::Tuple, what).items)
            v.push_back(as_int(*item, what));
        return v;
    }

    ByteReader in_;
    std::deque<Object> arena_;
    std::vector<Object*> stack_;
    std::vector<size_t> marks_;
    std::unordered_map<size_t, Object*> memo_;
};

// The value of a str key in a pickled dict (the last one, as Python keeps), or nullptr.
const Object* dict_get(const Object& dict, std::string_view key) {
    const Object* found = nullptr;
    for (size_t i = 0; i + 1 < dict.items.size(); i += 2) {
        const Object& k = *dict.items[i];
        if (k.kind == Kind::String && k.text == key) found = dict.items[i + 1];
    }
    return found;
}

const Object& find_state_dict(const Object& root) {
    if (root.kind != Kind::Dict) throw FormatError("data.pkl: top-level object is not a dict");
    for (std::string_view key : {"model", "state_dict"}) {
        const Object* inner = dict_get(root, key);
        if (inner && inner->kind == Kind::Dict) return *inner;
    }
    return root;
}

}  // namespace

std::map<std::string, PickledTensor> read_torch_state_dict(std::span<const uint8_t> pickle) {
    Unpickler unpickler(pickle);
    const Object& state_dict = find_state_dict(unpickler.run());
    std::map<std::string, PickledTensor> tensors;
    for (size_t i = 0; i + 1 < state_dict.items.size(); i += 2) {
        const Object& key = *state_dict.items[i];
        const Object& value = *state_dict.items[i + 1];
        if (value.kind != Kind::Tensor) continue;
        if (key.kind != Kind::String) throw FormatError("data.pkl: tensor under a non-str key");
        tensors.insert_or_assign(key.text, value.tensor);
    }
    return tensors;
}

}  // namespace splitseg
