#include "store/sqlite_job_queue.h"

#include <sqlite3.h>

#include <unordered_map>

#include "store/sql_job_queue.h"

namespace splitseg {
namespace {

// How long a writer waits for another connection's write transaction before giving up.
constexpr int kBusyTimeoutMs = 10'000;

struct CloseDatabase {
    void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
struct FinalizeStatement {
    void operator()(sqlite3_stmt* stmt) const { sqlite3_finalize(stmt); }
};

class SqliteConnection final : public SqlConnection {
  public:
    explicit SqliteConnection(const std::string& path) {
        sqlite3* db = nullptr;
        const int rc = sqlite3_open_v2(
            path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
            nullptr);
        db_.reset(db);
        if (rc != SQLITE_OK) {
            throw JobQueueError("cannot open job database " + path + ": " +
                                (db ? sqlite3_errmsg(db) : sqlite3_errstr(rc)));
        }
        sqlite3_busy_timeout(db, kBusyTimeoutMs);
        // WAL lets readers run beside the writer; NORMAL sync keeps WAL commits durable across
        // process crashes (a power cut may lose the last commits, never corrupt the file).
        const std::vector<SqlRow> mode = query("PRAGMA journal_mode = WAL", {});
        if (mode.empty() || mode[0].text(0) != "wal") {
            throw JobQueueError("job database " + path + " cannot use WAL mode");
        }
        query("PRAGMA synchronous = NORMAL", {});
        query("PRAGMA foreign_keys = ON", {});
    }

    void begin() override { query("BEGIN IMMEDIATE", {}); }
    void commit() override { query("COMMIT", {}); }
    void rollback() noexcept override {
        sqlite3_exec(db_.get(), "ROLLBACK", nullptr, nullptr, nullptr);
    }

    std::vector<SqlRow> query(const std::string& sql,
                              const std::vector<SqlValue>& params) override {
        sqlite3_stmt* stmt = prepare(sql);
        // Resetting releases the statement's read snapshot and any lock it holds.
        struct Reset {
            sqlite3_stmt* stmt;
            ~Reset() {
                sqlite3_reset(stmt);
                sqlite3_clear_bindings(stmt);
            }
        } reset{stmt};
        for (size_t i = 0; i < params.size(); ++i) bind(stmt, sql, i + 1, params[i]);
        std::vector<SqlRow> rows;
        for (;;) {
            const int rc = sqlite3_step(stmt);
            if (rc == SQLITE_DONE) return rows;
            if (rc != SQLITE_ROW) throw error(sql);
            rows.push_back(read_row(stmt));
        }
    }

    std::string id_column() const override { return "INTEGER PRIMARY KEY AUTOINCREMENT"; }
    std::string skip_locked() const override { return ""; }
    std::string integers_of_json(const std::string& param) const override {
        return "SELECT value FROM json_each(" + param + ")";
    }
    // BEGIN IMMEDIATE already excludes every other writer.
    void lock_schema() override {}

  private:
    JobQueueError error(const std::string& sql) const {
        return JobQueueError(std::string("sqlite: ") + sqlite3_errmsg(db_.get()) + " in: " + sql);
    }

    // Statements are prepared once per connection and reused.
    sqlite3_stmt* prepare(const std::string& sql) {
        auto it = statements_.find(sql);
        if (it != statements_.end()) return it->second.get();
        sqlite3_stmt* stmt = nullptr;
        if (sqlite3_prepare_v3(db_.get(), sql.c_str(), static_cast<int>(sql.size()),
                               SQLITE_PREPARE_PERSISTENT, &stmt, nullptr) != SQLITE_OK) {
            throw error(sql);
        }
        return statements_.emplace(sql, stmt).first->second.get();
    }

    // $N is a named parameter to SQLite; binding by name keeps $N meaning params[N - 1] however
    // the statement orders them.
    void bind(sqlite3_stmt* stmt, const std::string& sql, size_t n, const SqlValue& value) {
        std::string name = "$";
        name += std::to_string(n);
        const int index = sqlite3_bind_parameter_index(stmt, name.c_str());
        if (index == 0) throw JobQueueError("statement has no parameter " + name + ": " + sql);
        int rc = SQLITE_OK;
        if (const auto* i = std::get_if<int64_t>(&value)) {
            rc = sqlite3_bind_int64(stmt, index, *i);
        } else if (const auto* s = std::get_if<std::string>(&value)) {
            rc = sqlite3_bind_text(stmt, index, s->data(), static_cast<int>(s->size()),
                                   SQLITE_TRANSIENT);
        } else {
            rc = sqlite3_bind_null(stmt, index);
        }
        if (rc != SQLITE_OK) throw error(sql);
    }

    static SqlRow read_row(sqlite3_stmt* stmt) {
        SqlRow row;
        const int columns = sqlite3_column_count(stmt);
        for (int c = 0; c < columns; ++c) {
            switch (sqlite3_column_type(stmt, c)) {
                case SQLITE_NULL:
                    row.values.emplace_back(std::monostate{});
                    break;
                case SQLITE_INTEGER:
                    row.values.emplace_back(sqlite3_column_int64(stmt, c));
                    break;
                default: {
                    const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt, c));
                    const auto size = static_cast<size_t>(sqlite3_column_bytes(stmt, c));
                    row.values.emplace_back(text ? std::string(text, size) : std::string());
                }
            }
        }
        return row;
    }

    std::unique_ptr<sqlite3, CloseDatabase> db_;
    std::unordered_map<std::string, std::unique_ptr<sqlite3_stmt, FinalizeStatement>> statements_;
};

}  // namespace

std::unique_ptr<JobQueue> open_sqlite_job_queue(const std::string& path, JobQueueOptions options) {
    return std::make_unique<SqlJobQueue>(std::make_unique<SqliteConnection>(path),
                                         std::move(options));
}

}  // namespace splitseg
