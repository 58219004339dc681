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
#include <limits>
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

// _series_tail: log P(X >= high) from kSeriesTerms terms and the bracketed rest; false where the
// bracket is wider than float64 resolution (or not finite).
bool series_tail(double at_high, double alpha, double beta, double beta_c, int64_t high, double* log_high) {
  double term = 1.0, partial = 0.0, last = 0.0;
  for (int j = 0; j < kSeriesTerms; ++j) {
    const double k = static_cast<double>(high + j);
    double ratio = (beta * k + alpha) * (1.0 / (k + 1.0));
    ratio = ratio < 0.0 ? 0.0 : ratio;  // clamp_min(0): exactly 0 past a binomial's support, NaN kept
    term *= ratio;
    if (j < kSeriesTerms - 1) partial += term; else last = term;
  }
  partial += 1.0;
  const double next_k1 = static_cast<double>(high + kSeriesTerms) + 1.0;
  double slope = (alpha - beta) / (next_k1 * next_k1);
  const double ratio_c = nan_min(beta_c + slope * -next_k1, 1.0);
  const double inv_c = ratio_c > 0.0 ? 1.0 / ratio_c : kInf;
  const double inv_beta_c = 1.0 / beta_c;
  const double inv_high = nan_max(inv_c, inv_beta_c);
  slope = nan_max(slope, 0.0);
  double inv_low = inv_c - slope * (1.0 - ratio_c) * (inv_c * inv_c * inv_c);
  inv_low = nan_max(nan_max(inv_low, nan_min(inv_c, inv_beta_c)), 1.0);
  const double value = partial + last * ((inv_high + inv_low) * 0.5);
  const double error = (inv_high - inv_low) * last * 0.5;
  *log_high = at_high + std::log(value);
  return error <= kTolerance * value && value < kInf;
}

template <typename Out>
int64_t forward(int64_t rows, int64_t low, int64_t high, const double* eta, const double* log_norm,
                const double* alpha, const double* beta, const double* beta_c, const double* h, int64_t h_stride,
                Out* table, double* at_high, double* log_high, double* mean_low, double* mean_high,
                double* log_below, double* log_head, double* mean_head, double* outside, uint8_t* exact) {
  const int64_t m = high + 1, n = high - low + 1;
  int64_t inexact = 0;
  std::vector<double> grid(m);
  double* th = grid.data();
  for (int64_t r = 0; r < rows; ++r) {
    const double* hr = h + r * h_stride;
    for (int64_t k = 0; k < m; ++k) th[k] = (eta[r] * static_cast<double>(k) + hr[k]) - log_norm[r];
    Out* row = table + r * n;
    for (int64_t j = 0; j < n; ++j) row[j] = static_cast<Out>(th[low + j]);
    at_high[r] = th[high];
    const bool ok = series_tail(th[high], alpha[r], beta[r], beta_c[r], high, &log_high[r]);
    exact[r] = ok;
    mean_high[r] = (std::exp(th[high] - log_high[r]) * static_cast<double>(high) + alpha[r]) / beta_c[r];
    if (low > 0 || !ok) {
      const RangeSums s = range_sums(th, low, high);
      log_head[r] = s.log_head;
      mean_head[r] = s.mean_head;
      if (low > 0) {
        row[0] = static_cast<Out>(s.log_low);
        mean_low[r] = s.mean_low;
        log_below[r] = s.log_below;
      }
    }
    if (low == 0) {  // the lower edge is the outcome 0 itself: P(X <= 0) = p_0, E[X | X <= 0] = 0
      mean_low[r] = 0.0;
      log_below[r] = -kInf;
    }
    const double below = low > 0 ? std::exp(log_below[r]) : 0.0;
    outside[r] = below + nan_max(std::exp(log_high[r]) - std::exp(th[high]), 0.0);
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

extern "C" {

// Forward pass of grid._FoldedTable for `rows` rows: the table (float32 if `out_double` is 0, else
// float64), the outside mass, the edge means and, for the rows it returns as inexact (exact[r] == 0),
// log p_high, log P(X < high) and E[X | X < high] for the caller's other routes. `h` holds the base
// measure on 0 .. high, one row per `h_stride` doubles (0: shared). Returns the number of inexact rows.
int64_t gengs_folded_forward(int64_t rows, int64_t low, int64_t high, const double* eta, const double* log_norm,
                             const double* alpha, const double* beta, const double* beta_c, const double* h,
                             int64_t h_stride, int32_t out_double, void* table, double* at_high,
                             double* log_high, double* mean_low, double* mean_high, double* log_below,
                             double* log_head, double* mean_head, double* outside, uint8_t* exact) {
  if (out_double)
    return forward(rows, low, high, eta, log_norm, alpha, beta, beta_c, h, h_stride,
                   static_cast<double*>(table), at_high, log_high, mean_low, mean_high, log_below, log_head,
                   mean_head, outside, exact);
  return forward(rows, low, high, eta, log_norm, alpha, beta, beta_c, h, h_stride,
                 static_cast<float*>(table), at_high, log_high, mean_low, mean_high, log_below, log_head, mean_head,
                 outside, exact);
}

// Backward pass of grid._FoldedTable: d/d eta and d/d A of sum(grad * table), per row.
void gengs_folded_backward(int64_t rows, int64_t low, int64_t high, int32_t grad_double, const void* grad,
                           const double* mean_low, const double* mean_high, double* grad_eta, double* grad_norm) {
  if (grad_double)
    backward(rows, low, high, static_cast<const double*>(grad), mean_low, mean_high, grad_eta, grad_norm);
  else
    backward(rows, low, high, static_cast<const float*>(grad), mean_low, mean_high, grad_eta, grad_norm);
}

}  // extern "C"
