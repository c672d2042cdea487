//! The statistics of the observables, exactly as the original's
//! `tensorflow/Metrics/functions.py::stats` defines them, computed in f64 over f32 input.
//!
//! For a vector x of n values and a transform v = f(x) (raw x, sq x², abs |x|):
//! - `mean` μ = (1/n) Σ v and `var` σ² = (1/n) Σ (v − μ)² (population, as `tf.nn.moments`);
//! - `norm` = ‖v‖₂ = √(Σ v²) over **all** values of the vector. For activations this is the
//!   original's per-example norm. For weights the original, without subsampling, reshapes the
//!   kernel to `[shape[0], rest]` and gets one norm per slice along axis 0 (a vector, whose
//!   reduction to a scalar is not in its code); with subsampling it flattens the kernel to
//!   `[1, n_sub]` and gets one L2 norm over all the sampled synapses. We always take the
//!   latter: one L2 norm over all values, so the statistic means the same with and without a
//!   realism view;
//! - `median` and `thirdquartile`: TF 1.x `percentile(v, q, interpolation='nearest')` with
//!   q = 50 and 75: sort v **descending**, take the value at index
//!   round-half-to-even((n − 1)·(1 − q/100)), clipped to [0, n − 1] ([`percentile_index`]);
//! - `skew` = 3(μ − median)/σ (Pearson's second coefficient, population σ);
//! - `kurtosis` = E[(v − μ)⁴]/σ⁴ (not excess).
//!
//! Weights are summarised over all their values at once ([`weight_statistics`]); activations
//! per example and then averaged over the probe batch ([`activation_statistics`]; the
//! original's reduction to one number per recording point is not in its code, and averaging
//! over examples is what its sister repository Neural-Alignment does); the activity change
//! keeps the mean over the batch of g_b, g_b² and |g_b| ([`activity_change_statistics`]).
//!
//! Non-finite input is reported, never dropped: a NaN anywhere in a vector makes every
//! statistic of it NaN; ±∞ follows IEEE arithmetic (the mean is ±∞, the variance NaN) and
//! sorts as the largest / smallest value, as TF's `top_k` does, so a percentile may stay
//! finite. An empty vector gives NaN. Nothing here panics on values.
//!
//! Cost per vector: one pass for the sums (Σx, Σ|x|, Σx², Σx⁴), one more per transform whose
//! variance, skew or kurtosis is asked for (central moments about the exact mean, so a
//! constant vector has a variance of exactly 0), and two selections (`select_nth_unstable`,
//! the second on the upper half) per transform whose percentiles are asked for. The
//! percentiles of sq are the squares of those of abs (x ↦ x² is increasing on |x|, so both
//! sort alike), so sq never needs its own selection; a vector with no sign bit set (a layer
//! after a ReLU) is its own abs, so raw and abs share one, made among its positive values
//! only. The examples of an activation batch are spread over the available cores.

use rayon::prelude::*;

use crate::names::{Measure, ObservableName, Statistic, Transform};

/// Activation values (examples × units) summarised by one rayon task: enough to amortise the
/// task, few enough that a layer of the quickstart's 32-example probe batch (65,536 values)
/// is shared out between the cores instead of keeping one of them busy while the others wait.
const VALUES_PER_TASK: usize = 1 << 13;

/// The index, in the descending order of n values, of TF 1.x's `percentile(…, q,
/// interpolation='nearest')`: round-half-to-even((n − 1)·(1 − q/100)), clipped to
/// [0, n − 1]. For n = 4 and q = 50: 1.5 → 2; for n = 6: 2.5 → 2.
///
/// # Panics
/// If `n` is 0.
pub fn percentile_index(n: usize, q: f64) -> usize {
    assert!(n > 0, "the percentile of an empty vector has no index");
    let last = (n - 1) as f64;
    (last * (1.0 - q / 100.0)).round_ties_even().clamp(0.0, last) as usize
}

/// TF 1.x's `percentile(values, q, interpolation='nearest')` ([`percentile_index`] in the
/// descending order). NaN when `values` is empty or holds a NaN.
pub fn percentile(values: &[f32], q: f64) -> f64 {
    if values.is_empty() || values.iter().any(|v| v.is_nan()) {
        return f64::NAN;
    }
    let mut scratch = values.to_vec();
    let (_, &mut value, _) = scratch.select_nth_unstable_by(percentile_index(values.len(), q), descending);
    value as f64
}

/// The statistics of the weight names among `names` for one weight tensor (all its values at
/// once, any layout): one value per weight name, in the order the names come in.
pub fn weight_statistics(values: &[f32], names: &[ObservableName]) -> Vec<f64> {
    let plan = Plan::new(names, Measure::Weight);
    let mut out = vec![f64::NAN; plan.outputs.len()];
    plan.summarize(values, &mut Vec::new(), &mut out);
    out
}

/// The statistics of the activation names among `names` for a probe batch of activations,
/// `values` laid out `[batch, units]` (row-major; `units` = every non-batch element, so a conv
/// output's (h, w, c) positions are all units): each statistic per example, then the mean
/// over the examples. One value per activation name, in the order the names come in.
///
/// # Panics
/// If `batch` is not 0 and does not divide `values.len()`.
pub fn activation_statistics(values: &[f32], batch: usize, names: &[ObservableName]) -> Vec<f64> {
    let plan = Plan::new(names, Measure::Act);
    let k = plan.outputs.len();
    if batch == 0 || k == 0 || values.is_empty() {
        return vec![f64::NAN; k];
    }
    assert!(values.len().is_multiple_of(batch), "{} activation values do not split into {batch} examples", values.len());
    let units = values.len() / batch;

    // One row of statistics per example, filled by contiguous chunks of examples (one per
    // task), then averaged in example order: the result does not depend on the threads.
    let mut rows = vec![0.0; batch * k];
    let per_task = (VALUES_PER_TASK / units).max(1);
    rows.par_chunks_mut(per_task * k).zip(values.par_chunks(per_task * units)).for_each(|(rows, examples)| {
        let mut scratch = Vec::with_capacity(units);
        for (x, row) in examples.chunks_exact(units).zip(rows.chunks_exact_mut(k)) {
            plan.summarize(x, &mut scratch, row);
        }
    });
    let mut out = vec![0.0; k];
    for row in rows.chunks_exact(k) {
        for (o, r) in out.iter_mut().zip(row) {
            *o += r;
        }
    }
    out.iter_mut().for_each(|o| *o /= batch as f64);
    out
}

/// The activity-change names among `names` given g_b for every example of the probe batch:
/// `gradavg{raw,sq,abs}_id` = the mean over examples of g_b, g_b², |g_b|. One value per
/// activity-change name, in the order the names come in.
pub fn activity_change_statistics(g: &[f32], names: &[ObservableName]) -> Vec<f64> {
    let n = g.len() as f64;
    names
        .iter()
        .filter(|name| name.measure() == Measure::Gradavg)
        .map(|name| {
            let t = name.transform();
            g.iter().map(|&x| t.apply(x as f64)).sum::<f64>() / n
        })
        .collect()
}

/// The full row of one layer for `names` (any mix of measures), in their order: W's values
/// (any layout), the activations `[batch, units]` and g_b per example. What
/// [`weight_statistics`], [`activation_statistics`] and [`activity_change_statistics`] give,
/// put back in column order.
///
/// # Panics
/// As [`activation_statistics`].
pub fn observable_row(names: &[ObservableName], weights: &[f32], activations: &[f32], batch: usize, activity_change: &[f32]) -> Vec<f64> {
    let mut parts = [
        weight_statistics(weights, names).into_iter(),
        activation_statistics(activations, batch, names).into_iter(),
        activity_change_statistics(activity_change, names).into_iter(),
    ];
    names
        .iter()
        .map(|name| {
            let part = match name.measure() {
                Measure::Weight => &mut parts[0],
                Measure::Act => &mut parts[1],
                Measure::Gradavg => &mut parts[2],
            };
            part.next().expect("one value per name of each measure")
        })
        .collect()
}

/// The descending total order of TF's `top_k` (NaNs are handled before any selection).
fn descending(a: &f32, b: &f32) -> std::cmp::Ordering {
    b.total_cmp(a)
}

/// What a vector's summary must contain, derived once from the requested names.
struct Plan {
    /// The requested (transform, statistic) pairs of one measure, in output order.
    outputs: Vec<(Transform, Statistic)>,
    /// Per transform (by [`Transform::index`]): are σ² and E[(v − μ)⁴] needed?
    central: [bool; 3],
    /// Per transform: are the median and third quartile needed?
    percentiles: [bool; 3],
}

/// One transform's summary of one vector.
#[derive(Clone, Copy)]
struct Summary {
    mean: f64,
    norm: f64,
    var: f64,
    fourth: f64,
    median: f64,
    third_quartile: f64,
}

impl Summary {
    fn get(&self, statistic: Statistic) -> f64 {
        match statistic {
            Statistic::Mean => self.mean,
            Statistic::Median => self.median,
            Statistic::Norm => self.norm,
            Statistic::ThirdQuartile => self.third_quartile,
            Statistic::Var => self.var,
            Statistic::Skew => 3.0 * (self.mean - self.median) / self.var.sqrt(),
            Statistic::Kurtosis => self.fourth / (self.var * self.var),
        }
    }
}

impl Plan {
    fn new(names: &[ObservableName], measure: Measure) -> Self {
        let mut plan = Plan { outputs: Vec::new(), central: [false; 3], percentiles: [false; 3] };
        for name in names.iter().filter(|n| n.measure() == measure) {
            let (t, s) = (name.transform(), name.statistic().expect("weights and activations have a statistic"));
            plan.outputs.push((t, s));
            let i = t.index();
            plan.central[i] |= matches!(s, Statistic::Var | Statistic::Skew | Statistic::Kurtosis);
            plan.percentiles[i] |= matches!(s, Statistic::Median | Statistic::ThirdQuartile | Statistic::Skew);
        }
        plan
    }

    /// Writes the planned statistics of `x` into `out` (one per output). `scratch` is reused
    /// between calls for the selections.
    fn summarize(&self, x: &[f32], scratch: &mut Vec<f32>, out: &mut [f64]) {
        if x.is_empty() {
            out.fill(f64::NAN);
            return;
        }
        let n = x.len() as f64;
        let [sum, sum_abs, sum_sq, sum_fourth] = power_sums(x);
        let has_nan = sum_abs.is_nan();
        let nan = Summary { mean: f64::NAN, norm: f64::NAN, var: f64::NAN, fourth: f64::NAN, median: f64::NAN, third_quartile: f64::NAN };
        let mut summaries = [nan; 3];
        summaries[Transform::Raw.index()].mean = sum / n;
        summaries[Transform::Raw.index()].norm = sum_sq.sqrt();
        summaries[Transform::Sq.index()].mean = sum_sq / n;
        summaries[Transform::Sq.index()].norm = sum_fourth.sqrt();
        summaries[Transform::Abs.index()].mean = sum_abs / n;
        summaries[Transform::Abs.index()].norm = sum_sq.sqrt();

        for t in Transform::ALL {
            if self.central[t.index()] {
                let s = &mut summaries[t.index()];
                let (m2, m4) = match t {
                    Transform::Raw => central_sums(x, s.mean, |v| v),
                    Transform::Sq => central_sums(x, s.mean, |v| v * v),
                    Transform::Abs => central_sums(x, s.mean, f64::abs),
                };
                s.var = m2 / n;
                s.fourth = m4 / n;
            }
        }

        let (raw, abs) = (self.percentiles[Transform::Raw.index()], self.percentiles[Transform::Abs.index()] || self.percentiles[Transform::Sq.index()]);
        // With no sign bit set (no negative value, no −0: a layer after a ReLU, the absolute
        // values of anything), x is its own absolute value: one selection serves both.
        if !has_nan && (raw || abs) && x.iter().fold(0u32, |bits, v| bits | v.to_bits()) >> 31 == 0 {
            let (median, q3) = nonnegative_median_and_third_quartile(x, scratch);
            for t in [Transform::Raw, Transform::Abs] {
                summaries[t.index()].median = median;
                summaries[t.index()].third_quartile = q3;
            }
            summaries[Transform::Sq.index()].median = median * median;
            summaries[Transform::Sq.index()].third_quartile = q3 * q3;
        } else if !has_nan {
            if raw {
                scratch.clear();
                scratch.extend_from_slice(x);
                let (median, q3) = median_and_third_quartile(scratch);
                summaries[Transform::Raw.index()].median = median;
                summaries[Transform::Raw.index()].third_quartile = q3;
            }
            if abs {
                scratch.clear();
                scratch.extend(x.iter().map(|v| v.abs()));
                let (median, q3) = median_and_third_quartile(scratch);
                summaries[Transform::Abs.index()].median = median;
                summaries[Transform::Abs.index()].third_quartile = q3;
                summaries[Transform::Sq.index()].median = median * median;
                summaries[Transform::Sq.index()].third_quartile = q3 * q3;
            }
        }

        for (o, &(t, s)) in out.iter_mut().zip(&self.outputs) {
            *o = summaries[t.index()].get(s);
        }
    }
}

/// (Σx, Σ|x|, Σx², Σx⁴) in f64, over four interleaved accumulators so the adds pipeline.
fn power_sums(x: &[f32]) -> [f64; 4] {
    let mut acc = [[0.0f64; 4]; 4];
    let mut add = |lane: usize, v: f32| {
        let v = v as f64;
        let v2 = v * v;
        acc[0][lane] += v;
        acc[1][lane] += v.abs();
        acc[2][lane] += v2;
        acc[3][lane] += v2 * v2;
    };
    let chunks = x.chunks_exact(4);
    let rest = chunks.remainder();
    for c in chunks {
        for lane in 0..4 {
            add(lane, c[lane]);
        }
    }
    for (lane, &v) in rest.iter().enumerate() {
        add(lane, v);
    }
    acc.map(|a| (a[0] + a[1]) + (a[2] + a[3]))
}

/// (Σ(v − μ)², Σ(v − μ)⁴) for v = f(x), in f64, over four interleaved accumulators.
#[inline]
fn central_sums(x: &[f32], mean: f64, f: impl Fn(f64) -> f64) -> (f64, f64) {
    let mut m2 = [0.0f64; 4];
    let mut m4 = [0.0f64; 4];
    let mut add = |lane: usize, v: f32| {
        let d = f(v as f64) - mean;
        let d2 = d * d;
        m2[lane] += d2;
        m4[lane] += d2 * d2;
    };
    let chunks = x.chunks_exact(4);
    let rest = chunks.remainder();
    for c in chunks {
        for lane in 0..4 {
            add(lane, c[lane]);
        }
    }
    for (lane, &v) in rest.iter().enumerate() {
        add(lane, v);
    }
    ((m2[0] + m2[1]) + (m2[2] + m2[3]), (m4[0] + m4[1]) + (m4[2] + m4[3]))
}

/// [`median_and_third_quartile`] of a non-empty vector of positive values and +0's, which it
/// leaves as it is. In the descending order the zeros come last, so only the positive values
/// are copied and selected among; a percentile that falls among the zeros is 0. After a ReLU
/// half of a layer's units or more are 0: the selections, a quarter of the recorder's time,
/// then run over half the values or less.
fn nonnegative_median_and_third_quartile(x: &[f32], positive: &mut Vec<f32>) -> (f64, f64) {
    let n = x.len();
    let (i50, i75) = (percentile_index(n, 50.0), percentile_index(n, 75.0));
    positive.clear();
    positive.extend(x.iter().copied().filter(|&v| v > 0.0));
    if i50 < positive.len() {
        return median_and_third_quartile_at(positive, i50, i75);
    }
    let third_quartile = if i75 < positive.len() { *positive.select_nth_unstable_by(i75, descending).1 as f64 } else { 0.0 };
    (0.0, third_quartile)
}

/// The 50th and 75th percentiles of a non-empty, NaN-free vector, reordering it: one selection
/// for the median, a second one for the third quartile among the values above it (its
/// descending index is never larger than the median's).
fn median_and_third_quartile(values: &mut [f32]) -> (f64, f64) {
    let n = values.len();
    median_and_third_quartile_at(values, percentile_index(n, 50.0), percentile_index(n, 75.0))
}

/// The values at descending indices `i50` ≥ `i75` of `values` (reordered; `i50` in range).
fn median_and_third_quartile_at(values: &mut [f32], i50: usize, i75: usize) -> (f64, f64) {
    let (_, &mut median, _) = values.select_nth_unstable_by(i50, descending);
    let third_quartile = if i75 == i50 { median } else { *values[..i50].select_nth_unstable_by(i75, descending).1 };
    (median as f64, third_quartile as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{ADMISSIBLE, ObservableName::*, StatisticSet, Transform::*};

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1.0)
    }

    #[track_caller]
    fn assert_close(got: &[f64], want: &[f64]) {
        assert_eq!(got.len(), want.len());
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(close(g, w), "value {i}: got {g}, want {w} (all: {got:?})");
        }
    }

    #[test]
    fn percentile_index_rounds_half_to_even_in_descending_order() {
        // (n, q, index): (n − 1)(1 − q/100) by hand.
        for (n, q, index) in [
            (1, 50.0, 0),
            (2, 50.0, 0),  // 0.5 → 0
            (3, 75.0, 0),  // 0.5 → 0
            (4, 50.0, 2),  // 1.5 → 2
            (4, 75.0, 1),  // 0.75 → 1
            (5, 75.0, 1),  // 1.0
            (6, 50.0, 2),  // 2.5 → 2
            (6, 75.0, 1),  // 1.25 → 1
            (7, 75.0, 2),  // 1.5 → 2
            (8, 50.0, 4),  // 3.5 → 4
            (10, 50.0, 4), // 4.5 → 4
            (11, 75.0, 2), // 2.5 → 2
            (5, 0.0, 4),
            (5, 100.0, 0),
            (5, 150.0, 0), // clipped
        ] {
            assert_eq!(percentile_index(n, q), index, "n = {n}, q = {q}");
        }
    }

    #[test]
    fn percentile_takes_the_nearest_rank_from_the_top() {
        // Shuffled 1..=n; descending order is n, n−1, …, so index i holds n − i.
        assert_eq!(percentile(&[3.0, 1.0, 4.0, 2.0], 50.0), 2.0); // index 2 of [4,3,2,1]
        assert_eq!(percentile(&[3.0, 1.0, 4.0, 2.0], 75.0), 3.0);
        assert_eq!(percentile(&[5.0, 2.0, 6.0, 1.0, 4.0, 3.0], 50.0), 4.0); // index 2 of [6,5,4,…]
        assert_eq!(percentile(&[5.0, 2.0, 6.0, 1.0, 4.0, 3.0], 75.0), 5.0);
        assert_eq!(percentile(&[2.0, 5.0, 1.0, 4.0, 3.0], 50.0), 3.0);
        assert_eq!(percentile(&[2.0, 5.0, 1.0, 4.0, 3.0], 75.0), 4.0);
        assert_eq!(percentile(&[1.0, 2.0], 50.0), 2.0); // the upper of two
        assert_eq!(percentile(&[4.0, 7.0, 1.0, 6.0, 2.0, 5.0, 3.0], 75.0), 5.0); // index 2 of [7,6,5,…]
        assert_eq!(percentile(&[8.0, 1.0, 9.0, 2.0, 10.0, 3.0, 7.0, 4.0, 6.0, 5.0], 50.0), 6.0); // index 4
        assert_eq!(percentile(&[8.0, 1.0, 9.0, 2.0, 10.0, 3.0, 7.0, 4.0, 6.0, 5.0], 75.0), 8.0); // index 2
        assert_eq!(percentile(&[7.0], 75.0), 7.0);
        // Ties: [3,3,3,2,1,1] and [5,5,1,1].
        assert_eq!(percentile(&[3.0, 1.0, 3.0, 2.0, 3.0, 1.0], 50.0), 3.0);
        assert_eq!(percentile(&[3.0, 1.0, 3.0, 2.0, 3.0, 1.0], 75.0), 3.0);
        assert_eq!(percentile(&[1.0, 5.0, 1.0, 5.0], 50.0), 1.0);
        assert_eq!(percentile(&[1.0, 5.0, 1.0, 5.0], 75.0), 5.0);
        assert!(percentile(&[], 50.0).is_nan());
        assert!(percentile(&[1.0, f32::NAN, 2.0], 50.0).is_nan());
    }

    #[test]
    fn two_selections_agree_with_the_rule_on_many_lengths() {
        // For every n up to 40, values n−1, …, 0 scrambled by a stride: the descending index i
        // holds n − 1 − i, so both percentiles are known from percentile_index alone.
        for n in 1..=40usize {
            let stride = (1..).map(|s| 2 * s + 1).find(|s| gcd(*s, n) == 1).unwrap();
            let mut values: Vec<f32> = (0..n).map(|i| ((i * stride) % n) as f32).collect();
            let (median, q3) = median_and_third_quartile(&mut values);
            assert_eq!(median, (n - 1 - percentile_index(n, 50.0)) as f64, "n = {n}");
            assert_eq!(q3, (n - 1 - percentile_index(n, 75.0)) as f64, "n = {n}");
        }
    }

    /// Vectors with no sign bit set take one selection among their positive values for raw,
    /// abs and sq: it agrees with a whole selection of each whatever share of them is 0 (none,
    /// some, past the median, past the third quartile, all), and a −0 or a negative value
    /// still takes the signed path.
    #[test]
    fn nonnegative_vectors_select_among_their_positive_values_as_a_whole_selection_does() {
        let names: Vec<ObservableName> = [Raw, Abs, Sq].into_iter().flat_map(|t| [Weight(t, Statistic::Median), Weight(t, Statistic::ThirdQuartile)]).collect();
        for n in 1..=24usize {
            for zeros in 0..=n {
                // n − zeros distinct positive values, scrambled among the zeros.
                let mut x: Vec<f32> = (0..n).map(|i| if i < zeros { 0.0 } else { (i - zeros + 1) as f32 * 0.5 }).collect();
                x.rotate_left(n / 3);
                for signed in [None, Some(-0.0f32), Some(-1.0)] {
                    let mut x = x.clone();
                    if let Some(v) = signed {
                        x[n / 2] = v;
                    }
                    let abs: Vec<f32> = x.iter().map(|v| v.abs()).collect();
                    let sq: Vec<f32> = x.iter().map(|v| v * v).collect();
                    let want: Vec<f64> = [&x, &abs, &sq].into_iter().flat_map(|v| [percentile(v, 50.0), percentile(v, 75.0)]).collect();
                    assert_eq!(weight_statistics(&x, &names), want, "n = {n}, zeros = {zeros}, {signed:?}");
                }
            }
        }
    }

    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 { a } else { gcd(b, a % b) }
    }

    fn all_of(t: Transform, measure: fn(Transform, Statistic) -> ObservableName) -> Vec<ObservableName> {
        [Statistic::Mean, Statistic::Var, Statistic::Norm, Statistic::Median, Statistic::ThirdQuartile, Statistic::Skew, Statistic::Kurtosis]
            .into_iter()
            .map(|s| measure(t, s))
            .collect()
    }

    #[test]
    fn weight_statistics_of_a_small_vector_match_the_hand_computation() {
        let x = [10.0, 2.0, 4.0, 1.0, 3.0];
        // raw: μ = 4, deviations −3,−2,−1,0,6 → σ² = 50/5 = 10, Σd⁴ = 81+16+1+0+1296 = 1394;
        // ‖x‖ = √130; descending [10,4,3,2,1]: median (index 2) 3, q3 (index 1) 4.
        let want = [4.0, 10.0, 130f64.sqrt(), 3.0, 4.0, 3.0 * (4.0 - 3.0) / 10f64.sqrt(), (1394.0 / 5.0) / 100.0];
        assert_close(&weight_statistics(&x, &all_of(Raw, Weight)), &want);
        // sq: [100,4,16,1,9]: μ = 26, deviations 74,−22,−10,−25,−17 → σ² = 6974/5;
        // ‖v‖ = √10354; descending [100,16,9,4,1]: median 9, q3 16.
        let var = 6974.0 / 5.0;
        let fourth = (74f64.powi(4) + 22f64.powi(4) + 10f64.powi(4) + 25f64.powi(4) + 17f64.powi(4)) / 5.0;
        let want = [26.0, var, 10354f64.sqrt(), 9.0, 16.0, 3.0 * (26.0 - 9.0) / var.sqrt(), fourth / (var * var)];
        assert_close(&weight_statistics(&x, &all_of(Sq, Weight)), &want);
    }

    #[test]
    fn abs_and_sq_of_signed_values_match_the_hand_computation() {
        let x = [3.0, -1.0, 0.0, -4.0, 2.0];
        // raw: μ = 0, σ² = (9+1+0+16+4)/5 = 6, Σx⁴ = 81+1+0+256+16 = 354; descending
        // [3,2,0,−1,−4]: median 0, q3 2.
        assert_close(&weight_statistics(&x, &all_of(Raw, Weight)), &[0.0, 6.0, 30f64.sqrt(), 0.0, 2.0, 0.0, (354.0 / 5.0) / 36.0]);
        // abs [3,1,0,4,2]: μ = 2, deviations 1,−1,−2,2,0 → σ² = 2, Σd⁴ = 34; descending
        // [4,3,2,1,0]: median 2, q3 3.
        assert_close(&weight_statistics(&x, &all_of(Abs, Weight)), &[2.0, 2.0, 30f64.sqrt(), 2.0, 3.0, 0.0, (34.0 / 5.0) / 4.0]);
        // sq [9,1,0,16,4]: μ = 6, deviations 3,−5,−6,10,−2 → σ² = 174/5; ‖v‖ = √354;
        // descending [16,9,4,1,0]: median 4 = 2², q3 9 = 3² (the squares of abs's).
        let var = 174.0 / 5.0;
        let fourth = (81.0 + 625.0 + 1296.0 + 10000.0 + 16.0) / 5.0;
        assert_close(&weight_statistics(&x, &all_of(Sq, Weight)), &[6.0, var, 354f64.sqrt(), 4.0, 9.0, 3.0 * (6.0 - 4.0) / var.sqrt(), fourth / (var * var)]);
    }

    #[test]
    fn sq_percentiles_are_those_of_its_own_sort() {
        // Ties between −3 and 3, and a large negative: sorting x² directly by hand, descending
        // [36, 9, 9, 4, 1, 0]: n = 6, median index 2 → 9, q3 index 1 → 9; with n = 7 (add 25)
        // [36, 25, 9, 9, 4, 1, 0]: median index 3 → 9, q3 index round(1.5) = 2 → 9.
        let names = [Weight(Sq, Statistic::Median), Weight(Sq, Statistic::ThirdQuartile)];
        assert_eq!(weight_statistics(&[-3.0, 1.0, 3.0, 0.0, -6.0, 2.0], &names), [9.0, 9.0]);
        assert_eq!(weight_statistics(&[-3.0, 1.0, 3.0, 0.0, -6.0, 2.0, 5.0], &names), [9.0, 9.0]);
        // [−5, 4, 1, −2] → x² descending [25, 16, 4, 1]: median index 2 → 4, q3 index 1 → 16.
        assert_eq!(weight_statistics(&[-5.0, 4.0, 1.0, -2.0], &names), [4.0, 16.0]);
    }

    #[test]
    fn a_constant_vector_has_zero_variance_and_undefined_shape() {
        let names = all_of(Raw, Weight);
        let got = weight_statistics(&[2.5; 7], &names);
        assert_eq!(&got[..5], [2.5, 0.0, (7.0f64 * 6.25).sqrt(), 2.5, 2.5]);
        assert!(got[5].is_nan() && got[6].is_nan(), "skew and kurtosis are 0/0: {got:?}");
    }

    #[test]
    fn nan_and_empty_input_give_nan_and_infinity_is_not_hidden() {
        let all = StatisticSet::All.names();
        let weight_names = all.iter().filter(|n| n.measure() == Measure::Weight).count();
        let got = weight_statistics(&[1.0, f32::NAN, 3.0, 0.5], &all);
        assert_eq!(got.len(), weight_names);
        assert!(got.iter().all(|v| v.is_nan()), "{got:?}");
        assert!(weight_statistics(&[], &all).iter().all(|v| v.is_nan()));
        assert!(activation_statistics(&[], 0, &all).iter().all(|v| v.is_nan()));
        assert!(activity_change_statistics(&[], &all).iter().all(|v| v.is_nan()));
        // One NaN example poisons the batch mean.
        let got = activation_statistics(&[1.0, 2.0, f32::NAN, 4.0], 2, &all);
        assert!(got.iter().all(|v| v.is_nan()), "{got:?}");
        // ∞: the mean is ∞ and the variance NaN; the median of [∞, 2, 1] stays 2 (TF's order).
        let got = weight_statistics(&[1.0, f32::INFINITY, 2.0], &[Weight(Raw, Statistic::Mean), Weight(Raw, Statistic::Var), Weight(Raw, Statistic::Median)]);
        assert_eq!(got[0], f64::INFINITY);
        assert!(got[1].is_nan());
        assert_eq!(got[2], 2.0);
        assert!(activity_change_statistics(&[1.0, f32::NEG_INFINITY], &[Gradavg(Raw)])[0] == f64::NEG_INFINITY);
    }

    #[test]
    fn activations_are_summarised_per_example_then_averaged() {
        // Example 0 = [10,2,4,1,3] (μ 4, σ² 10, median 3, q3 4, ‖‖ √130), example 1 =
        // [3,−1,0,−4,2] (μ 0, σ² 6, median 0, q3 2, ‖‖ √30; abs: μ 2, median 2, q3 3).
        let values = [10.0, 2.0, 4.0, 1.0, 3.0, 3.0, -1.0, 0.0, -4.0, 2.0];
        let names = [Act(Raw, Statistic::Mean), Act(Raw, Statistic::Var), Act(Raw, Statistic::Median), Act(Raw, Statistic::ThirdQuartile), Act(Abs, Statistic::Norm), Act(Abs, Statistic::Median)];
        // abs of example 0 = example 0: median 3.
        let want = [2.0, 8.0, 1.5, 3.0, (130f64.sqrt() + 30f64.sqrt()) / 2.0, (3.0 + 2.0) / 2.0];
        assert_close(&activation_statistics(&values, 2, &names), &want);
    }

    #[test]
    fn a_large_batch_split_over_threads_matches_the_closed_form() {
        // Example b holds b, b+1, …, b+16383 in a scrambled order (stride 3 mod 16384): per
        // example μ = 8191.5 + b, σ² = (16384² − 1)/12, descending median index
        // round(16383/2 = 8191.5) = 8192 → value 8191 + b, q3 index round(4095.75) = 4096 →
        // 12287 + b. Averaged over b = 0..63 (mean 31.5).
        let (batch, units) = (64usize, 16384usize);
        assert!(batch * units >= 2 * VALUES_PER_TASK);
        let values: Vec<f32> = (0..batch).flat_map(|b| (0..units).map(move |j| ((j * 3) % units + b) as f32)).collect();
        let names = [Act(Raw, Statistic::Mean), Act(Raw, Statistic::Var), Act(Raw, Statistic::Median), Act(Raw, Statistic::ThirdQuartile)];
        let want = [8191.5 + 31.5, (16384.0f64 * 16384.0 - 1.0) / 12.0, 8191.0 + 31.5, 12287.0 + 31.5];
        assert_close(&activation_statistics(&values, batch, &names), &want);
    }

    #[test]
    fn activity_change_keeps_the_batch_means_of_g_its_square_and_abs() {
        let names = StatisticSet::Admissible.names();
        // Admissible order: gradavgabs, gradavgraw, gradavgsq.
        assert_close(&activity_change_statistics(&[-1.0, 2.0, -3.0], &names), &[2.0, -2.0 / 3.0, 14.0 / 3.0]);
    }

    #[test]
    fn observable_row_puts_each_measure_back_in_column_order() {
        let names = [Gradavg(Raw), Weight(Raw, Statistic::Mean), Act(Raw, Statistic::Mean), Weight(Abs, Statistic::Median)];
        let row = observable_row(&names, &[-2.0, 1.0, 4.0], &[1.0, 3.0, 5.0, 7.0], 2, &[0.5, 1.5]);
        // W: μ = 1, |W| descending [4,2,1] median 2; acts: (2 + 6)/2 = 4; g: 1.
        assert_close(&row, &[1.0, 1.0, 4.0, 2.0]);
        assert_eq!(observable_row(&ADMISSIBLE, &[1.0], &[1.0], 1, &[1.0]).len(), 24);
    }
}
