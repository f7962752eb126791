// A fixed team of threads for gemm_portable's column parts in the threaded WASM module
// (splitseg_decoder_mt): started by the constructor, joined by the destructor. run() hands the
// tasks out from a shared counter, the calling thread taking its share, and returns when all
// are done. Header-only so that the native unit tests run it too.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "engine/gemm_portable.h"

namespace splitseg {

class WorkerPool final : public TaskRunner {
  public:
    // threads counts the caller: threads - 1 are started.
    explicit WorkerPool(int threads) {
        for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { work(); });
    }

    ~WorkerPool() override {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stop_ = true;
        }
        wake_.notify_all();
        for (std::thread& t : workers_) t.join();
    }

    WorkerPool(const WorkerPool&) = delete;
    WorkerPool& operator=(const WorkerPool&) = delete;

    int threads() const override { return static_cast<int>(workers_.size()) + 1; }

    void run(int n, const std::function<void(int64_t)>& task) override {
        std::unique_lock<std::mutex> lock(mutex_);
        // A worker still inside the previous run's drain() would otherwise take a task of this
        // one against a counter being reset.
        changed_.wait(lock, [&] { return busy_ == 0; });
        task_ = &task;
        count_ = n;
        next_ = 0;
        pending_ = n;
        ++generation_;
        lock.unlock();
        wake_.notify_all();
        drain();
        lock.lock();
        changed_.wait(lock, [&] { return pending_ == 0; });
    }

  private:
    void work() {
        uint64_t seen = 0;
        for (;;) {
            {
                std::unique_lock<std::mutex> lock(mutex_);
                wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
                if (stop_) return;
                seen = generation_;
                ++busy_;
            }
            drain();
            std::lock_guard<std::mutex> lock(mutex_);
            if (--busy_ == 0) changed_.notify_all();
        }
    }

    // Takes tasks until none is left; the last one to finish wakes run().
    void drain() {
        for (int64_t i = next_.fetch_add(1); i < count_; i = next_.fetch_add(1)) {
            (*task_)(i);
            if (pending_.fetch_sub(1) == 1) {
                std::lock_guard<std::mutex> lock(mutex_);
                changed_.notify_all();
            }
        }
    }

    std::vector<std::thread> workers_;
    std::mutex mutex_;
    std::condition_variable wake_, changed_;
    bool stop_ = false;
    uint64_t generation_ = 0;
    int busy_ = 0;  // workers inside drain()
    // Set by run() under the mutex while no worker is inside drain().
    const std::function<void(int64_t)>* task_ = nullptr;
    int64_t count_ = 0;
    std::atomic<int64_t> next_{0}, pending_{0};
};

}  // namespace splitseg
