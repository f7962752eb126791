#include <gtest/gtest.h>

#include "engine/tensor.h"

namespace splitseg {
namespace {

TEST(Tensor, CopyOfDefaultConstructedStaysEmpty) {
    // Regression: copying an empty tensor (e.g. an Embedding's absent SAM 2.1 features) used to
    // read 4 bytes from a null pointer because the empty shape counted as a scalar.
    const Tensor empty;
    const Tensor copy = empty;
    EXPECT_TRUE(copy.empty());
    EXPECT_EQ(copy.data(), nullptr);
    Tensor assigned = Tensor::filled({2}, 1.0f);
    assigned = empty;
    EXPECT_TRUE(assigned.empty());
}

TEST(Tensor, CopyIsDeepAndScalarsKeepTheirValue) {
    Tensor a = Tensor::filled({2, 3}, 2.5f);
    Tensor b = a;
    b[0] = -1.0f;
    EXPECT_EQ(a[0], 2.5f);
    EXPECT_EQ(b.shape(), (Shape{2, 3}));
    const Tensor scalar = Tensor::filled({}, 7.0f);
    const Tensor scalar_copy = scalar;
    ASSERT_EQ(scalar_copy.numel(), 1);
    EXPECT_EQ(scalar_copy[0], 7.0f);
}

TEST(Tensor, ReshapeInfersOneDimensionAndRejectsMismatch) {
    Tensor t = Tensor::zeros({4, 6});
    t.reshape({2, -1, 3});
    EXPECT_EQ(t.shape(), (Shape{2, 4, 3}));
    EXPECT_THROW(t.reshape({5, -1}), std::invalid_argument);
    EXPECT_THROW(t.reshape({-1, -1}), std::invalid_argument);
    EXPECT_THROW(Tensor({-2, 3}), std::invalid_argument);
}

}  // namespace
}  // namespace splitseg
