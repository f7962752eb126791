#include "store/postgres_job_queue.h"

#include <libpq-fe.h>

#include "store/sql_job_queue.h"

namespace splitseg {
namespace {

// Type OIDs of the parameters we send (pg_type.h); 0 lets the server infer a NULL's type.
constexpr Oid kInt8Oid = 20;
constexpr Oid kTextOid = 25;
// Serialises schema creation across processes: "splitseg" in ASCII.
constexpr int64_t kSchemaLockKey = 0x73706c6974736567;

struct FinishConnection {
    void operator()(PGconn* conn) const { PQfinish(conn); }
};
struct ClearResult {
    void operator()(PGresult* result) const { PQclear(result); }
};
using Result = std::unique_ptr<PGresult, ClearResult>;

class PostgresConnection final : public SqlConnection {
  public:
    explicit PostgresConnection(const std::string& conninfo) {
        // Keywords before "dbname" are defaults that the expanded conninfo may override.
        const char* const keys[] = {"connect_timeout", "dbname", nullptr};
        const char* const values[] = {"10", conninfo.c_str(), nullptr};
        conn_.reset(PQconnectdbParams(keys, values, /*expand_dbname=*/1));
        if (!conn_) throw JobQueueError("postgres: out of memory while connecting");
        if (PQstatus(conn_.get()) != CONNECTION_OK) {
            throw JobQueueError("postgres: cannot connect: " + last_error());
        }
        configure();
    }

    void begin() override {
        reconnect_if_dropped();
        run("BEGIN");
        in_transaction_ = true;
    }
    void commit() override {
        in_transaction_ = false;
        run("COMMIT");
    }
    void rollback() noexcept override {
        in_transaction_ = false;
        PQclear(PQexec(conn_.get(), "ROLLBACK"));
    }

    std::vector<SqlRow> query(const std::string& sql,
                              const std::vector<SqlValue>& params) override {
        if (!in_transaction_) reconnect_if_dropped();
        std::vector<std::string> integers;  // text of the integer parameters
        integers.reserve(params.size());
        std::vector<const char*> values;
        std::vector<Oid> types;
        for (const SqlValue& p : params) {
            if (const auto* i = std::get_if<int64_t>(&p)) {
                values.push_back(integers.emplace_back(std::to_string(*i)).c_str());
                types.push_back(kInt8Oid);
            } else if (const auto* s = std::get_if<std::string>(&p)) {
                values.push_back(s->c_str());
                types.push_back(kTextOid);
            } else {
                values.push_back(nullptr);
                types.push_back(0);
            }
        }
        Result result(PQexecParams(conn_.get(), sql.c_str(), static_cast<int>(params.size()),
                                   types.data(), values.data(), nullptr, nullptr, 0));
        check(result.get(), sql);
        return read_rows(result.get());
    }

    std::string id_column() const override {
        return "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY";
    }
    std::string skip_locked() const override { return " FOR UPDATE SKIP LOCKED"; }
    std::string integers_of_json(const std::string& param) const override {
        return "SELECT value::bigint FROM json_array_elements_text(" + param + "::json)";
    }
    // CREATE ... IF NOT EXISTS is not safe against a concurrent identical CREATE.
    void lock_schema() override { query("SELECT pg_advisory_xact_lock($1)", {kSchemaLockKey}); }

  private:
    std::string last_error() const { return PQerrorMessage(conn_.get()); }

    // Bounded waits on the server side too; "relation already exists" notices are expected.
    void configure() {
        PQsetNoticeProcessor(
            conn_.get(), [](void*, const char*) {}, nullptr);
        run("SET statement_timeout = 30000; SET lock_timeout = 10000");
    }

    void reconnect_if_dropped() {
        if (PQstatus(conn_.get()) == CONNECTION_OK) return;
        PQreset(conn_.get());
        if (PQstatus(conn_.get()) != CONNECTION_OK) {
            throw JobQueueError("postgres: connection lost and reconnecting failed: " +
                                last_error());
        }
        configure();
    }

    void run(const char* sql) {
        Result result(PQexec(conn_.get(), sql));
        check(result.get(), sql);
    }

    void check(const PGresult* result, const std::string& sql) const {
        const ExecStatusType status = PQresultStatus(result);
        if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return;
        const std::string message = result ? PQresultErrorMessage(result) : last_error();
        throw JobQueueError("postgres: " + message + " in: " + sql);
    }

    static std::vector<SqlRow> read_rows(const PGresult* result) {
        std::vector<SqlRow> rows(static_cast<size_t>(PQntuples(result)));
        const int columns = PQnfields(result);
        for (size_t r = 0; r < rows.size(); ++r) {
            const int tuple = static_cast<int>(r);
            for (int c = 0; c < columns; ++c) {
                if (PQgetisnull(result, tuple, c)) {
                    rows[r].values.emplace_back(std::monostate{});
                } else {
                    rows[r].values.emplace_back(
                        std::string(PQgetvalue(result, tuple, c),
                                    static_cast<size_t>(PQgetlength(result, tuple, c))));
                }
            }
        }
        return rows;
    }

    std::unique_ptr<PGconn, FinishConnection> conn_;
    bool in_transaction_ = false;
};

}  // namespace

std::unique_ptr<JobQueue> open_postgres_job_queue(const std::string& conninfo,
                                                  JobQueueOptions options) {
    return std::make_unique<SqlJobQueue>(std::make_unique<PostgresConnection>(conninfo),
                                         std::move(options));
}

}  // namespace splitseg
