#include "service/mask_polygon.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

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

// Positive for loops clockwise on screen (y down).
double signed_area(const std::vector<Point>& loop) {
    double sum = 0;
    for (size_t i = 0; i < loop.size(); ++i) {
        const Point& a = loop[i];
        const Point& b = loop[(i + 1) % loop.size()];
        sum += static_cast<double>(a.x) * b.y - static_cast<double>(b.x) * a.y;
    }
    return sum / 2;
}

// A closed loop simplified and flattened to x0, y0, x1, y1, ...; empty when it is degenerate.
std::vector<float> simplified_ring(std::vector<Point> loop, float tolerance) {
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
    if (flat.size() < 6) flat.clear();
    return flat;
}

// Even-odd test; `p` never lies on the loop (pixel centres against pixel-corner loops).
bool contains(const std::vector<Point>& loop, const Point& p) {
    bool in = false;
    for (size_t i = 0, j = loop.size() - 1; i < loop.size(); j = i++) {
        const Point& a = loop[i];
        const Point& b = loop[j];
        if ((a.y > p.y) != (b.y > p.y) && p.x < (b.x - a.x) * (p.y - a.y) / (b.y - a.y) + a.x)
            in = !in;
    }
    return in;
}

struct Loop {
    std::vector<Point> corners;
    double area = 0;  // > 0: an outer outline; < 0: a hole
    Point inside;     // the centre of a mask pixel along the loop
};

}  // namespace

std::vector<MaskPolygon> mask_polygons(const uint8_t* mask, int width, int height,
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

    std::vector<Loop> loops;
    for (size_t start = 0; start < corners; ++start) {
        while (out[0][start] >= 0 || out[1][start] >= 0) {
            // Follow unused edges until the loop closes, keeping only the corners where the
            // direction changes.
            Loop loop;
            size_t at = start;
            int dx = 0, dy = 0;
            do {
                const int slot = out[0][at] >= 0 ? 0 : 1;
                const size_t next = static_cast<size_t>(out[slot][at]);
                out[slot][at] = -1;
                const int ndx = static_cast<int>(next % stride) - static_cast<int>(at % stride);
                const int ndy = static_cast<int>(next / stride) - static_cast<int>(at / stride);
                const Point corner{static_cast<float>(at % stride),
                                   static_cast<float>(at / stride)};
                if (at == start) {  // the inside pixel lies right of the edge (y down)
                    loop.inside = {corner.x + 0.5f * (ndx - ndy), corner.y + 0.5f * (ndx + ndy)};
                }
                if (ndx != dx || ndy != dy) loop.corners.push_back(corner);
                dx = ndx, dy = ndy;
                at = next;
            } while (at != start && (out[0][at] >= 0 || out[1][at] >= 0));
            if (loop.corners.size() < 3) continue;
            loop.area = signed_area(loop.corners);
            if (loop.area != 0) loops.push_back(std::move(loop));
        }
    }

    // Each hole belongs to the smallest outline around a mask pixel next to it.
    std::vector<MaskPolygon> polygons;
    std::vector<size_t> polygon_of(loops.size(), SIZE_MAX);
    for (size_t i = 0; i < loops.size(); ++i) {
        if (loops[i].area < 0) continue;
        std::vector<float> ring = simplified_ring(loops[i].corners, tolerance);
        if (ring.empty()) continue;
        polygon_of[i] = polygons.size();
        polygons.push_back({std::move(ring), {}});
    }
    for (const Loop& hole : loops) {
        if (hole.area > 0) continue;
        size_t owner = SIZE_MAX;
        for (size_t i = 0; i < loops.size(); ++i) {
            if (polygon_of[i] == SIZE_MAX || !contains(loops[i].corners, hole.inside)) continue;
            if (owner == SIZE_MAX || loops[i].area < loops[owner].area) owner = i;
        }
        if (owner == SIZE_MAX) continue;
        std::vector<float> ring = simplified_ring(hole.corners, tolerance);
        if (!ring.empty()) polygons[polygon_of[owner]].holes.push_back(std::move(ring));
    }
    return polygons;
}

}  // namespace splitseg
