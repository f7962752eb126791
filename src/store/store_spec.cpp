#include "store/store_spec.h"

#include <cctype>
#include <cstdlib>
#include <map>
#include <set>
#include <stdexcept>

#include "store/azure_blob_store.h"
#include "store/disk_store.h"
#include "store/memory_store.h"
#include "store/s3_store.h"

namespace splitseg {

namespace {

constexpr uint64_t kDefaultMemoryBytes = uint64_t{256} << 20;

std::string percent_decode(const std::string& s) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
        const bool escape = s[i] == '%' && i + 2 < s.size() &&
                            std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
                            std::isxdigit(static_cast<unsigned char>(s[i + 2]));
        if (escape) {
            out.push_back(static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16)));
            i += 2;
        } else {
            out.push_back(s[i]);
        }
    }
    return out;
}

// One tier's spec taken apart: "scheme:rest?name=value&...".
struct TierSpec {
    std::string shown;  // the spec without its options, for messages (options may hold secrets)
    std::string rest;   // after the scheme, before '?'
    std::map<std::string, std::string> options;
    std::set<std::string> used;

    [[noreturn]] void fail(const std::string& what) const {
        throw std::invalid_argument("store '" + shown + "': " + what);
    }
    // The option's value, or the environment variable's, or the fallback; marks it as known.
    std::string option(const std::string& name, const char* env = nullptr,
                       const std::string& fallback = "") {
        used.insert(name);
        if (auto it = options.find(name); it != options.end()) return it->second;
        if (env)
            if (const char* v = std::getenv(env); v && *v) return v;
        return fallback;
    }
    void check_all_used() const {
        for (const auto& [name, value] : options)
            if (!used.count(name)) fail("unknown option '" + name + "'");
    }
};

TierSpec split_spec(const std::string& spec, size_t scheme_len) {
    TierSpec t;
    const size_t q = spec.find('?');
    t.shown = spec.substr(0, q);
    t.rest = spec.substr(scheme_len, q == std::string::npos ? std::string::npos : q - scheme_len);
    if (q == std::string::npos) return t;
    const std::string query = spec.substr(q + 1);
    size_t pos = 0;
    while (pos <= query.size()) {
        size_t end = query.find('&', pos);
        if (end == std::string::npos) end = query.size();
        const std::string item = query.substr(pos, end - pos);
        pos = end + 1;
        if (item.empty()) continue;
        const size_t eq = item.find('=');
        if (eq == std::string::npos) t.fail("option '" + item + "' has no value");
        const std::string name = item.substr(0, eq);
        if (!t.options.emplace(name, percent_decode(item.substr(eq + 1))).second)
            t.fail("option '" + name + "' given twice");
    }
    return t;
}

uint64_t size_option(TierSpec& t, const std::string& name, uint64_t fallback) {
    const std::string v = t.option(name);
    if (v.empty()) return fallback;
    try {
        return parse_byte_size(v);
    } catch (const std::invalid_argument& e) {
        t.fail(e.what());
    }
}

bool is_loopback(const std::string& host) {
    const std::string name = host.substr(0, host.rfind(':'));
    return name == "localhost" || name.starts_with("127.") || host.starts_with("[::1]");
}

// "host[:port]/path..." -> endpoint and the path's segments.
Endpoint parse_endpoint(TierSpec& t, std::vector<std::string>* segments) {
    const size_t slash = t.rest.find('/');
    Endpoint e;
    e.host = t.rest.substr(0, slash);
    if (e.host.empty()) t.fail("no host");
    for (char c : e.host)
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != ':' &&
            c != '[' && c != ']')
            t.fail("invalid host '" + e.host + "'");
    e.scheme = t.option("scheme", nullptr, is_loopback(e.host) ? "http" : "https");
    if (e.scheme != "http" && e.scheme != "https") t.fail("scheme must be http or https");
    std::string path = slash == std::string::npos ? "" : t.rest.substr(slash + 1);
    size_t pos = 0;
    while (pos < path.size()) {
        size_t end = path.find('/', pos);
        if (end == std::string::npos) end = path.size();
        if (end > pos) segments->push_back(path.substr(pos, end - pos));
        pos = end + 1;
    }
    return e;
}

std::unique_ptr<BlobStore> open_azure(TierSpec& t) {
    std::vector<std::string> segments;
    AzureConfig c;
    c.endpoint = parse_endpoint(t, &segments);
    if (segments.size() == 2) {  // /account/container
        c.path_style = true;
        c.account = segments[0];
        c.container = segments[1];
    } else if (segments.size() == 1 && !is_loopback(c.endpoint.host)) {
        // account.blob.core.windows.net/container
        c.account = c.endpoint.host.substr(0, c.endpoint.host.find('.'));
        c.container = segments[0];
    } else {
        t.fail("expected azure://HOST/ACCOUNT/CONTAINER or azure://ACCOUNT.HOST/CONTAINER");
    }
    c.account_key = t.option("key", "AZURE_STORAGE_KEY");
    if (c.account_key.empty()) t.fail("no account key (key= or AZURE_STORAGE_KEY)");
    t.check_all_used();
    try {
        return std::make_unique<AzureBlobStore>(std::move(c));
    } catch (const std::invalid_argument& e) {
        t.fail(e.what());
    }
}

std::unique_ptr<BlobStore> open_s3(TierSpec& t) {
    std::vector<std::string> segments;
    S3Config c;
    c.endpoint = parse_endpoint(t, &segments);
    if (segments.size() != 1) t.fail("expected s3://HOST[:PORT]/BUCKET");
    c.bucket = segments[0];
    c.region = t.option("region", "AWS_REGION", "us-east-1");
    c.access_key = t.option("access", "AWS_ACCESS_KEY_ID");
    c.secret_key = t.option("secret", "AWS_SECRET_ACCESS_KEY");
    t.check_all_used();
    try {
        return std::make_unique<S3Store>(std::move(c));
    } catch (const std::invalid_argument& e) {
        t.fail(e.what());
    }
}

}  // namespace

uint64_t parse_byte_size(const std::string& text) {
    size_t used = 0;
    uint64_t n = 0;
    try {
        if (!text.empty() && std::isdigit(static_cast<unsigned char>(text[0])))
            n = std::stoull(text, &used);
    } catch (const std::exception&) {
        used = 0;
    }
    if (used == 0) throw std::invalid_argument("size '" + text + "' is not a number");
    static const std::map<std::string, int> kShifts = {
        {"", 0},     {"B", 0},  {"K", 10},  {"KB", 10},  {"KiB", 10}, {"M", 20},  {"MB", 20},
        {"MiB", 20}, {"G", 30}, {"GB", 30}, {"GiB", 30}, {"T", 40},   {"TB", 40}, {"TiB", 40}};
    auto it = kShifts.find(text.substr(used));
    if (it == kShifts.end())
        throw std::invalid_argument("size '" + text + "' has an unknown unit (K, M, G or T)");
    if (n > (UINT64_MAX >> it->second))
        throw std::invalid_argument("size '" + text + "' too large");
    return n << it->second;
}

std::unique_ptr<BlobStore> open_tier(const std::string& spec) {
    for (const std::string scheme : {"mem:", "memory:"}) {
        if (!spec.starts_with(scheme)) continue;
        TierSpec t = split_spec(spec, scheme.size());
        if (!t.rest.empty()) t.fail("a memory tier takes no path");
        const uint64_t max_bytes = size_option(t, "max_bytes", kDefaultMemoryBytes);
        if (max_bytes == 0) t.fail("a memory tier needs max_bytes > 0");
        t.check_all_used();
        return std::make_unique<MemoryStore>(max_bytes);
    }
    if (spec.starts_with("disk:")) {
        TierSpec t = split_spec(spec, 5);
        if (t.rest.empty()) t.fail("no directory");
        const uint64_t max_bytes = size_option(t, "max_bytes", 0);
        t.check_all_used();
        return std::make_unique<DiskStore>(t.rest, max_bytes);
    }
    if (spec.starts_with("azure://")) {
        TierSpec t = split_spec(spec, 8);
        return open_azure(t);
    }
    if (spec.starts_with("s3://")) {
        TierSpec t = split_spec(spec, 5);
        return open_s3(t);
    }
    throw std::invalid_argument("store '" + spec.substr(0, spec.find('?')) +
                                "': expected mem:, disk:, azure:// or s3://");
}

std::unique_ptr<TieredStore> open_store(const std::string& spec) {
    std::vector<std::unique_ptr<BlobStore>> tiers;
    size_t pos = 0;
    while (pos <= spec.size()) {
        size_t end = spec.find(',', pos);
        if (end == std::string::npos) end = spec.size();
        if (end == pos) throw std::invalid_argument("store spec has an empty tier");
        tiers.push_back(open_tier(spec.substr(pos, end - pos)));
        pos = end + 1;
    }
    return std::make_unique<TieredStore>(std::move(tiers));
}

}  // namespace splitseg
