// Interleaved A/B of the prompt decoder between two source trees (decoder_ab.sh builds it): both
// engines live in one process and decode alternately, so that the drift of a shared machine hits
// both sides alike. Prints each side's median and the median of the per-pair ratios.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

void base_init(const char* model, bool bf16);
double base_click(int kind);
void new_init(const char* model, bool bf16);
double new_click(int kind);

static double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

// Two decodes at once, one thread each, as a loaded server runs them: they share the caches and
// the memory bandwidth, which one decode at a time does not show. The second runs on a helper
// thread that lives through the whole run (with a thread made per sample a pair took ~58 ms).
class Pair {
  public:
    Pair() : helper_([this] { serve(); }) {}
    ~Pair() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stop_ = true;
        }
        wake_.notify_all();
        helper_.join();
    }
    // Milliseconds until both decodes of `kind` end.
    double run(double (*click)(int), int kind) {
        const auto t0 = std::chrono::steady_clock::now();
        {
            std::lock_guard<std::mutex> lock(mutex_);
            click_ = click;
            kind_ = kind;
            ++issued_;
        }
        wake_.notify_all();
        click(kind);
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return done_ == issued_; });
        return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
            .count();
    }

  private:
    void serve() {
        omp_set_num_threads(1);
        std::unique_lock<std::mutex> lock(mutex_);
        for (;;) {
            wake_.wait(lock, [&] { return stop_ || issued_ > done_; });
            if (stop_) return;
            lock.unlock();
            click_(kind_);
            lock.lock();
            ++done_;
            wake_.notify_all();
        }
    }
    std::mutex mutex_;
    std::condition_variable wake_;
    double (*click_)(int) = nullptr;
    int kind_ = 0;
    long issued_ = 0, done_ = 0;
    bool stop_ = false;
    std::thread helper_;
};

int main(int argc, char** argv) {
    if (argc < 4) {
        std::fprintf(stderr, "usage: decoder_ab MODEL THREADS ROUNDS [bf16: 1|0] [pairs: 0|1]\n");
        return 2;
    }
    const int threads = std::atoi(argv[2]), rounds = std::atoi(argv[3]);
    const bool bf16 = argc > 4 ? std::atoi(argv[4]) != 0 : true;
    const bool pairs = argc > 5 && std::atoi(argv[5]) != 0;
    omp_set_num_threads(pairs ? 1 : threads);
    Pair pair;
    auto base_sample = [&](int kind) {
        return pairs ? pair.run(base_click, kind) : base_click(kind);
    };
    auto new_sample = [&](int kind) { return pairs ? pair.run(new_click, kind) : new_click(kind); };
    base_init(argv[1], bf16);
    new_init(argv[1], bf16);
    const char* names[] = {"3 masks", "best", "refine", "12th click", "5th click"};
    for (int kind = 0; kind < 5; ++kind) {
        for (int warm = 0; warm < 3; ++warm) base_click(kind), new_click(kind);
        std::vector<double> base, next, ratio;
        for (int r = 0; r < rounds; ++r) {  // the order alternates too
            double a, b;
            if (r % 2) {
                a = base_sample(kind);
                b = new_sample(kind);
            } else {
                b = new_sample(kind);
                a = base_sample(kind);
            }
            base.push_back(a);
            next.push_back(b);
            ratio.push_back(a / b);
        }
        std::printf("%-8s %s %s: base %.2f ms, new %.2f ms, median pair ratio base/new %.3f\n",
                    names[kind],
                    pairs          ? "2 at once"
                    : threads == 1 ? "1 thread "
                                   : "2 threads",
                    bf16 ? "bf16" : "f32", median(base), median(next), median(ratio));
    }
}
