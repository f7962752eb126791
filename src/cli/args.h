// Command-line arguments: "--name value" options, "--flag" switches, repeated options.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace splitseg::cli {

class Args {
  public:
    // argv holds the words after the subcommand. `flags` are the options that take no value.
    Args(const std::vector<std::string>& argv, const std::set<std::string>& flags);

    bool flag(const std::string& name) const { return flags_.count(name) > 0; }
    std::optional<std::string> get(const std::string& name) const;  // last occurrence
    std::string require(const std::string& name) const;             // throws UsageError
    std::vector<std::string> all(const std::string& name) const;    // every occurrence
    int get_int(const std::string& name, int fallback, int lo, int hi) const;
    const std::vector<std::string>& positional() const { return positional_; }
    // Throws UsageError if an option outside `known` was given.
    void allow_only(const std::set<std::string>& known) const;

  private:
    std::multimap<std::string, std::string> values_;
    std::vector<std::string> order_;
    std::set<std::string> flags_;
    std::vector<std::string> positional_;
};

struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// "1.5,2,3" -> {1.5, 2, 3}; exactly n numbers or UsageError naming `what`.
std::vector<float> parse_numbers(const std::string& text, size_t n, const std::string& what);

}  // namespace splitseg::cli
