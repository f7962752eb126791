// Interleaved A/B of the prompt decoder between two source trees (decoder_ab.sh builds it): both
// engines live in one process and decode alternately, so that the drift of a shared machine hits
// both sides alike. Prints each side's median and the median of the per-pair ratios.
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

void base_init(const char* model, bool bf16);
double base_click(int kind);
void new_init(const char* model, bool bf16);
double new_click(int kind);

static double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

int main(int argc, char** argv) {
    if (argc < 4) {
        std::fprintf(stderr, "usage: decoder_ab MODEL THREADS ROUNDS [bf16: 1|0]\n");
        return 2;
    }
    const int threads = std::atoi(argv[2]), rounds = std::atoi(argv[3]);
    const bool bf16 = argc > 4 ? std::atoi(argv[4]) != 0 : true;
    omp_set_num_threads(threads);
    base_init(argv[1], bf16);
    new_init(argv[1], bf16);
    const char* names[] = {"3 masks", "best", "refine", "12th click", "5th click"};
    for (int kind = 0; kind < 5; ++kind) {
        for (int warm = 0; warm < 3; ++warm) base_click(kind), new_click(kind);
        std::vector<double> base, next, ratio;
        for (int r = 0; r < rounds; ++r) {  // the order alternates too
            double a, b;
            if (r % 2) {
                a = base_click(kind);
                b = new_click(kind);
            } else {
                b = new_click(kind);
                a = base_click(kind);
            }
            base.push_back(a);
            next.push_back(b);
            ratio.push_back(a / b);
        }
        std::printf(
            "%-8s %d threads %s: base %.2f ms, new %.2f ms, median pair ratio base/new %.3f\n",
            names[kind], threads, bf16 ? "bf16" : "f32", median(base), median(next), median(ratio));
    }
}
