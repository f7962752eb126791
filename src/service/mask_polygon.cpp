#include "service/mask_polygon.h"

#include <algorithm>
#include <cmath>

namespace splitseg {

namespace {

struct Point {
    float x, y;
};

float distance_to_segment(const Point& p, const Point& a, const Point& b) {
    const float dx = b.x - a.x, dy = b.y - a.y;
    const float len2 = dx * dx + dy * dy;
    float t = len2 > 0 ? ((p.x - a.x) * dx + (p.y - a.y) * dy) / len2 : 0;
    t = std::fmax(0.0f, std::fmin(1.0f, t));
    return std::hypot(p.x - a.x - t * dx, p.y - a.y - t * dy);
}

// Douglas-Peucker on points[first..last]: marks the points to keep (the ends are kept). An
// explicit stack, not recursion: a long outline must not exhaust the thread's stack.
void simplify(const std::vector<Point>& points, size_t first, size_t last, float tolerance,
              std::vector<bool>& keep) {
    std::vector<std::pair<size_t, size_t>> spans = {{first, last}};
    while (!spans.empty()) {
        const auto [a, b] = spans.back();
        spans.pop_back();
        float worst = -1;
        size_t at = a;
        for (size_t i = a + 1; i < b; ++i) {
            const float d = distance_to_segment(points[i], points[a], points[b]);
            if (d > worst) worst = d, at = i;
        }
        if (at == a || worst <= tolerance) continue;
        keep[at] = true;
        spans.push_back({a, at});
        spans.push_back({at, b});
    }
}

double signed_area(const std::vector<Point>& loop) {
    double sum = 0;
    for (size_t i = 0; i < loop.size(); ++i) {
        const Point& a = loop[i];
        const Point& b = loop[(i + 1) % loop.size()];
        sum += static_cast<double>(a.x) * b.y - static_cast<double>(b.x) * a.y;
    }
    return sum / 2;
}

}  // namespace

std::vector<std::vector<float>> mask_polygons(const uint8_t* mask, int width, int height,
                                              float tolerance) {
    // Every pixel side between inside and outside is a directed edge between pixel corners,
    // going clockwise around the inside pixel; a corner has at most two outgoing edges.
    const int stride = width + 1;
    const size_t corners = static_cast<size_t>(stride) * (height + 1);
    std::vector<int32_t> out[2] = {std::vector<int32_t>(corners, -1),
                                   std::vector<int32_t>(corners, -1)};
    auto inside = [&](int x, int y) {
        return x >= 0 && y >= 0 && x < width && y < height &&
               mask[static_cast<size_t>(y) * width + x] != 0;
    };
    auto add_edge = [&](int x0, int y0, int x1, int y1) {
        const size_t from = static_cast<size_t>(y0) * stride + x0;
        out[out[0][from] < 0 ? 0 : 1][from] = y1 * stride + x1;
    };
    for (int y = 0; y < height; ++y) {
        for (int x = 0; x < width; ++x) {
            if (!inside(x, y)) continue;
            if (!inside(x, y - 1)) add_edge(x, y, x + 1, y);
            if (!inside(x + 1, y)) add_edge(x + 1, y, x + 1, y + 1);
            if (!inside(x, y + 1)) add_edge(x + 1, y + 1, x, y + 1);
            if (!inside(x - 1, y)) add_edge(x, y + 1, x, y);
        }
    }

    std::vector<std::vector<float>> polygons;
    for (size_t start = 0; start < corners; ++start) {
        while (out[0][start] >= 0 || out[1][start] >= 0) {
            // Follow unused edges until the loop closes, keeping only the corners where the
            // direction changes.
            std::vector<Point> loop;
            size_t at = start;
            int dx = 0, dy = 0;
            do {
                const int slot = out[0][at] >= 0 ? 0 : 1;
                const size_t next = static_cast<size_t>(out[slot][at]);
                out[slot][at] = -1;
                const int ndx = static_cast<int>(next % stride) - static_cast<int>(at % stride);
                const int ndy = static_cast<int>(next / stride) - static_cast<int>(at / stride);
                if (ndx != dx || ndy != dy) {
                    loop.push_back(
                        {static_cast<float>(at % stride), static_cast<float>(at / stride)});
                }
                dx = ndx, dy = ndy;
                at = next;
            } while (at != start && (out[0][at] >= 0 || out[1][at] >= 0));
            if (loop.size() < 3 || signed_area(loop) <= 0) continue;  // holes run the other way
            std::vector<bool> keep(loop.size() + 1, false);
            loop.push_back(loop.front());  // simplify the closed loop as an open path
            keep.front() = keep.back() = true;
            simplify(loop, 0, loop.size() - 1, tolerance, keep);
            if (std::count(keep.begin(), keep.end() - 1, true) < 3) {
                std::fill(keep.begin(), keep.end(), true);  // too small to simplify
            }
            std::vector<float> flat;
            for (size_t i = 0; i + 1 < loop.size(); ++i) {
                if (!keep[i]) continue;
                flat.push_back(loop[i].x);
                flat.push_back(loop[i].y);
            }
            if (flat.size() >= 6) polygons.push_back(std::move(flat));
        }
    }
    return polygons;
}

}  // namespace splitseg
