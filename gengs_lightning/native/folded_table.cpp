// The folded log-PMF table of a count family on a window [low, high], one row at a time, on CPU.
//
// The same maths, in the same order, as the eager route of gengs_lightning/distributions/grid.py
// (see its module docstring): the grid theta_k = eta k + h_k - A, the upper edge by the tail series
// with its bracketed rest (_series_tail), the range sums of the terms below the window's top
// (_range_sums) where a row needs them, and the closed-form backward pass. A row whose series is not
// exact is flagged and finished by the caller (the complement or the continued fraction). Every row
// is computed alone, so a row's result never depends on the batch. Compiled with -ffp-contract=off:
// no fused multiply-add, each operation rounded as PyTorch rounds it.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <algorithm>
#include <limits>
#include <thread>
#include <vector>

namespace {

constexpr int kSeriesTerms = 24;                                        // grid.SERIES_TERMS
constexpr double kTolerance = std::numeric_limits<double>::epsilon();   // grid.SERIES_TOLERANCE
constexpr double kTiny = std::numeric_limits<double>::min();            // smallest normal float64
const double kLogTiny = std::log(kTiny);
constexpr double kInf = std::numeric_limits<double>::infinity();

// torch.maximum / torch.minimum / clamp: NaN in, NaN out.
inline double nan_max(double a, double b) { return (a != a || b != b) ? a + b : (a > b ? a : b); }
inline double nan_min(double a, double b) { return (a != a || b != b) ? a + b : (a < b ? a : b); }

struct RangeSums {
  double log_low, mean_low, log_below, log_head, mean_head;
};

// _range_sums: log P(X <= low), E[X | X <= low], log P(X < low), log P(X < high), E[X | X < high],
// each range scaled by its own maximum so that none underflows.
RangeSums range_sums(const double* theta, int64_t low, int64_t high) {
  double low_max = theta[0];
  for (int64_t k = 1; k <= low; ++k) low_max = nan_max(low_max, theta[k]);
  double head_max = low_max;
  if (high > low + 1) {
    double middle_max = theta[low + 1];
    for (int64_t k = low + 2; k < high; ++k) middle_max = nan_max(middle_max, theta[k]);
    head_max = nan_max(low_max, middle_max);
  }
  double s_low = 0.0, s_below = 0.0, s_middle = 0.0, m_low = 0.0, m_middle = 0.0;
  for (int64_t k = 0; k <= low; ++k) {
    const double term = std::exp(nan_max(theta[k] - low_max, kLogTiny));
    if (k < low) s_below += term;
    s_low += term;
    m_low += term * static_cast<double>(k);
  }
  for (int64_t k = low + 1; k < high; ++k) {
    const double term = std::exp(nan_max(theta[k] - head_max, kLogTiny));
    s_middle += term;
    m_middle += term * static_cast<double>(k);
  }
  const double low_scale = std::exp(low_max - head_max);
  const double s_head = s_middle + s_low * low_scale;
  const double head_moment = m_middle + m_low * low_scale;
  return {std::log(s_low) + low_max, m_low / s_low, std::log(s_below) + low_max, std::log(s_head) + head_max,
          head_moment / s_head};
}

// The points k = high .. high + J - 1 of the tail series and 1 / (k + 1), shared by every row
// (grid._series_points).
struct SeriesPoints {
  double k[kSeriesTerms], inv_k1[kSeriesTerms];
  explicit SeriesPoints(int64_t high) {
    for (int j = 0; j < kSeriesTerms; ++j) {
      k[j] = static_cast<double>(high + j);
      inv_k1[j] = 1.0 / (k[j] + 1.0);
    }
  }
};

// Rows whose tail series are summed side by side, as one vector of lanes (GCC/Clang vector extension:
// the compiler maps it onto whatever SIMD registers the target has).
constexpr int kBlock = 8;
typedef double Lanes __attribute__((vector_size(kBlock * sizeof(double))));

// _series_tail for kBlock rows: F = P(X >= high) / p_high from kSeriesTerms terms and the bracketed
// rest, returned as F - 1 (the mass beyond high relative to p_high, without cancellation) with whether
// the bracket is within float64 resolution of F (false where it is wider or not finite).
void series_tail(const SeriesPoints& points, const double* alpha, const double* beta, const double* beta_c,
                 int64_t high, double* beyond, bool* exact) {
  Lanes a, c, zero = {}, term = zero + 1.0, partial = zero;
  std::memcpy(&a, alpha, sizeof a);
  std::memcpy(&c, beta, sizeof c);
  for (int j = 0; j < kSeriesTerms; ++j) {
    const Lanes ratio = (c * points.k[j] + a) * points.inv_k1[j];
    term *= ratio < zero ? zero : ratio;  // clamp_min(0): exactly 0 past a binomial's support, NaN kept
    if (j < kSeriesTerms - 1) partial += term;
  }
  const Lanes last = term;
  const double next_k1 = static_cast<double>(high + kSeriesTerms) + 1.0;
  for (int b = 0; b < kBlock; ++b) {
    double slope = (alpha[b] - beta[b]) / (next_k1 * next_k1);
    const double ratio_c = nan_min(beta_c[b] + slope * -next_k1, 1.0);
    const double inv_c = ratio_c > 0.0 ? 1.0 / ratio_c : kInf;
    const double inv_beta_c = 1.0 / beta_c[b];
    const double inv_high = nan_max(inv_c, inv_beta_c);
    slope = nan_max(slope, 0.0);
    double inv_low = inv_c - slope * (1.0 - ratio_c) * (inv_c * inv_c * inv_c);
    inv_low = nan_max(nan_max(inv_low, nan_min(inv_c, inv_beta_c)), 1.0);
    beyond[b] = partial[b] + last[b] * ((inv_high + inv_low) * 0.5);
    const double value = 1.0 + beyond[b];
    const double error = (inv_high - inv_low) * last[b] * 0.5;
    exact[b] = error <= kTolerance * value && value < kInf;
  }
}

template <typename Out>
int64_t forward(int64_t rows, int64_t low, int64_t high, const double* eta, const double* log_norm,
                const double* alpha, const double* beta, const double* beta_c, const double* h, int64_t h_stride,
                Out* table, double* at_high, double* log_high, double* mean_low, double* mean_high,
                double* log_below, double* log_head, double* mean_head, double* outside, uint8_t* exact) {
  const int64_t m = high + 1, n = high - low + 1;
  const SeriesPoints points(high);
  std::vector<double> grid(m), ks(m);
  for (int64_t k = 0; k < m; ++k) ks[k] = static_cast<double>(k);
  double* th = grid.data();
  int64_t inexact = 0;
  double block_alpha[kBlock], block_beta[kBlock], block_beta_c[kBlock], block_beyond[kBlock];
  bool block_exact[kBlock];
  for (int64_t r = 0; r < rows; ++r) {
    const int b = static_cast<int>(r % kBlock);
    if (b == 0) {  // the next kBlock rows' series (the last block padded with its first row)
      for (int i = 0; i < kBlock; ++i) {
        const int64_t row = r + i < rows ? r + i : r;
        block_alpha[i] = alpha[row], block_beta[i] = beta[row], block_beta_c[i] = beta_c[row];
      }
      series_tail(points, block_alpha, block_beta, block_beta_c, high, block_beyond, block_exact);
    }
    const double* hr = h + r * h_stride;
    for (int64_t k = 0; k < m; ++k) th[k] = (eta[r] * ks[k] + hr[k]) - log_norm[r];
    Out* row = table + r * n;
    for (int64_t j = 0; j < n; ++j) row[j] = static_cast<Out>(th[low + j]);
    at_high[r] = th[high];
    const double beyond = block_beyond[b];
    const bool ok = block_exact[b];
    exact[r] = ok;
    const double value = 1.0 + beyond;
    log_high[r] = th[high] + std::log(value);
    // E[X | X >= b] = (alpha + b / F) / (1 - beta), and the mass beyond b is p_b (F - 1)
    mean_high[r] = (static_cast<double>(high) / value + alpha[r]) / beta_c[r];
    double outside_mass = std::exp(th[high]) * beyond;  // P(X > b), plus P(X < a) below
    if (low > 0 || !ok) {
      const RangeSums s = range_sums(th, low, high);
      log_head[r] = s.log_head;
      mean_head[r] = s.mean_head;
      if (low > 0) {
        row[0] = static_cast<Out>(s.log_low);
        mean_low[r] = s.mean_low;
        log_below[r] = s.log_below;
        outside_mass += std::exp(s.log_below);
      }
    }
    if (low == 0) {  // the lower edge is the outcome 0 itself: P(X <= 0) = p_0, E[X | X <= 0] = 0
      mean_low[r] = 0.0;
      log_below[r] = -kInf;
    }
    outside[r] = outside_mass;
    if (ok) row[n - 1] = static_cast<Out>(log_high[r]); else ++inexact;
  }
  return inexact;
}

template <typename Grad>
void backward(int64_t rows, int64_t low, int64_t high, const Grad* grad, const double* mean_low,
              const double* mean_high, double* grad_eta, double* grad_norm) {
  const int64_t n = high - low + 1;
  for (int64_t r = 0; r < rows; ++r) {
    const Grad* g = grad + r * n;
    double inner = 0.0, total = 0.0;
    for (int64_t j = 0; j < n; ++j) {
      const double gj = static_cast<double>(g[j]);
      total += gj;
      if (j > 0 && j < n - 1) inner += gj * static_cast<double>(low + j);
    }
    grad_eta[r] = inner + static_cast<double>(g[0]) * mean_low[r] + static_cast<double>(g[n - 1]) * mean_high[r];
    grad_norm[r] = -total;
  }
}

}  // namespace

// Below this many grid entries (rows x (high + 1)) a call runs on the calling thread alone: starting a
// thread costs about as much as computing this many entries.
constexpr int64_t kParallelWork = 1 << 16;

// body(first, last) over [0, rows) in up to `threads` contiguous chunks, one thread each; returns the
// sum of what the chunks return. Rows are independent, so the result does not depend on the split.
template <typename Body>
int64_t parallel_rows(int64_t rows, int64_t width, int64_t threads, Body body) {
  if (threads > rows) threads = rows;
  if (threads <= 1 || rows * width < kParallelWork) return body(int64_t{0}, rows);
  const int64_t chunk = (rows + threads - 1) / threads;
  std::vector<int64_t> results(threads, 0);
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < threads && t * chunk < rows; ++t)
    pool.emplace_back([&, t] { results[t] = body(t * chunk, std::min(rows, (t + 1) * chunk)); });
  results[0] = body(int64_t{0}, chunk);
  for (auto& thread : pool) thread.join();
  int64_t total = 0;
  for (const int64_t result : results) total += result;
  return total;
}

extern "C" {

// Forward pass of grid._FoldedTable for `rows` rows: the table (float32 if `out_double` is 0, else
// float64) and, in `per_row` (8 x rows, in the order of grid_native.ROW_OUTPUTS), the edge means, the
// outside mass and, for the rows it returns as inexact (exact[r] == 0), log p_high, log P(X < high) and
// E[X | X < high] for the caller's other routes. `h` holds the base
// measure on 0 .. high, one row per `h_stride` doubles (0: shared). Large calls use up to `threads`
// threads. Returns the number of inexact rows.
int64_t gengs_folded_forward(int64_t rows, int64_t low, int64_t high, const double* eta, const double* log_norm,
                             const double* alpha, const double* beta, const double* beta_c, const double* h,
                             int64_t h_stride, int32_t out_double, void* table, double* per_row, uint8_t* exact,
                             int64_t threads) {
  const int64_t n = high - low + 1;
  return parallel_rows(rows, high + 1, threads, [&](int64_t first, int64_t last) {
    double* out[8];  // grid_native.ROW_OUTPUTS, each `rows` long
    for (int i = 0; i < 8; ++i) out[i] = per_row + i * rows + first;
    const auto run = [&](auto* values) {
      return forward(last - first, low, high, eta + first, log_norm + first, alpha + first, beta + first,
                     beta_c + first, h + first * h_stride, h_stride, values + first * n, out[3], out[4], out[0],
                     out[1], out[5], out[6], out[7], out[2], exact + first);
    };
    return out_double ? run(static_cast<double*>(table)) : run(static_cast<float*>(table));
  });
}

// Backward pass of grid._FoldedTable: d/d eta and d/d A of sum(grad * table), per row.
void gengs_folded_backward(int64_t rows, int64_t low, int64_t high, int32_t grad_double, const void* grad,
                           const double* mean_low, const double* mean_high, double* grad_eta, double* grad_norm,
                           int64_t threads) {
  const int64_t n = high - low + 1;
  parallel_rows(rows, n, threads, [&](int64_t first, int64_t last) {
    const auto run = [&](const auto* g) {
      backward(last - first, low, high, g + first * n, mean_low + first, mean_high + first, grad_eta + first,
               grad_norm + first);
    };
    grad_double ? run(static_cast<const double*>(grad)) : run(static_cast<const float*>(grad));
    return int64_t{0};
  });
}

}  // extern "C"
