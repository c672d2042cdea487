//! Max and average pooling with their own loops on flex.
//!
//! burn-flex 0.22.1 scans each window with scalar code (a compare, a NaN test and an index per
//! element) and writes an i64 index per output for the backward: some 10 cycles per window
//! element, 21 % of knet4's training step and 30 % of the convnet's (2 threads). Here the work
//! is laid out for the vector units: the pool is separable, a maximum over the window's columns,
//! then over its rows; the plane, padded with −∞, is first split by row and column stride phase
//! (for stride 2: even and odd rows and columns, [`Scratch`]), so that each window tap is the
//! same shift for every output and each pass is one contiguous compare-and-select loop over the
//! whole plane. (Row by row, as this module first did, a 32-px plane's 16-output rows were too
//! short for the compiler's vector loop and ran scalar: knet4's pools took 20 % of its step.)
//! The loops are compiled for AVX2 and AVX-512 besides baseline x86-64, chosen at run time.
//!
//! The outputs and the routing of gradients are burn's: the first maximum of a window in
//! row-major order wins ties (the column pass keeps a row's first, the row pass the first row),
//! a NaN wins over numbers (the last NaN, as PyTorch), padding never wins. The backward runs
//! the same passes with the winners' positions and adds δy there; nothing is stored between
//! forward and backward but the input.
//!
//! On other backends and dtypes the op is burn's own `max_pool2d` and its autodiff.

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::ModuleOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Cube, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::{IntDType, Tensor};

use crate::cpu_conv::{as_flex, filled_by_chunks, to_primitive, values};

/// A square max-pooling window: `kernel × kernel`, moved by `stride`, over an input padded by
/// `padding` on each side (floor mode, no dilation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolWindow {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl PoolWindow {
    /// Output length along an axis of length `input`.
    pub fn output_len(&self, input: usize) -> usize {
        (input + 2 * self.padding - self.kernel) / self.stride + 1
    }

    /// The input positions of output position `o` along an axis of length `input` (padding
    /// left out).
    fn span(&self, o: usize, input: usize) -> std::ops::Range<usize> {
        let start = (o * self.stride) as isize - self.padding as isize;
        let end = (start + self.kernel as isize).min(input as isize);
        start.max(0) as usize..end.max(0) as usize
    }
}

/// Whether `v` replaces `best` as a window's maximum when it comes later in row-major order:
/// larger, or a NaN (so the first of equal maxima stays, and the last NaN wins).
#[inline(always)]
fn takes(v: f32, best: f32) -> bool {
    v > best || v.is_nan()
}

/// Where a task's planes are laid out so that every pass is one long contiguous loop: the
/// plane, padded (−∞ for the maximum, 0 for the average), split by row and column stride phase.
///
/// With s the stride, p the padding and xp(r, c) = x(r − p, c − p) (padding outside the plane),
/// `phases[((q·s + qr)·T + t)·L + m] = xp(t·s + qr, m·s + q)`. Window column kc of output column
/// m is then phase q = kc mod s at m + kc div s, and window row kr of output row i is row phase
/// kr mod s at i + kr div s: every window tap is the same shift for every output. Rows of L ≥
/// ow columns (and T ≥ oh rows) hold the shifted reads; the columns past ow are never used.
struct Scratch {
    window: PoolWindow,
    /// Input plane and output sizes.
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    /// Rows per row phase and columns per row.
    rows: usize,
    len: usize,
    phases: Vec<f32>,
    /// Where each plane row's run of one column phase lies: its first cell in the plane (its
    /// columns every s-th from there) and its cells in `phases`. The same for every plane.
    runs: Vec<(usize, std::ops::Range<usize>)>,
    /// Column maxima, `[qr][t][m]`, and their window columns kc.
    values: Vec<f32>,
    columns: Vec<u32>,
    /// Window maxima `[i][m]`, and their taps kr·k + kc.
    best: Vec<f32>,
    taps: Vec<u32>,
}

impl Scratch {
    /// `pad`: the padding cells' value (−∞ for a maximum, 0 for a sum).
    fn new([h, w]: [usize; 2], window: PoolWindow, pad: f32) -> Self {
        let (oh, ow) = (window.output_len(h), window.output_len(w));
        let (s, reach) = (window.stride, (window.kernel - 1) / window.stride);
        let (rows, len) = (oh + reach, ow + reach);
        // Padding everywhere once: each plane overwrites only the cells inside it. The tail lets
        // the last phase's shifted reads run past its end (into columns that are never used).
        let phases = vec![pad; s * s * rows * len + reach];
        let (values, columns) = (vec![0.0; s * rows * len], vec![0; s * rows * len]);
        let (best, taps) = (vec![0.0; oh * len], vec![0; oh * len]);
        let p = window.padding;
        let mut runs = Vec::new();
        for q in 0..s {
            // Phase q's columns m with m·s + q − p inside the plane.
            let lo = p.saturating_sub(q).div_ceil(s);
            let hi = (w + p).saturating_sub(q).div_ceil(s).min(len);
            if lo >= hi {
                continue;
            }
            for qr in 0..s {
                for t in (0..rows).filter(|t| t * s + qr >= p && t * s + qr - p < h) {
                    let at = ((q * s + qr) * rows + t) * len;
                    runs.push(((t * s + qr - p) * w + lo * s + q - p, at + lo..at + hi));
                }
            }
        }
        Scratch { window, h, w, oh, ow, rows, len, phases, runs, values, columns, best, taps }
    }

    /// `plane` (h × w) into `phases`.
    #[inline(always)]
    fn split(&mut self, plane: &[f32]) {
        let s = self.window.stride;
        for (at, range) in &self.runs {
            let (row, dst) = (&plane[*at..], &mut self.phases[range.clone()]);
            match s {
                1 => dst.copy_from_slice(&row[..dst.len()]),
                2 => every::<2>(row, dst),
                _ => dst.iter_mut().zip(row.iter().step_by(s)).for_each(|(d, &v)| *d = v),
            }
        }
    }

    /// The maxima of every window (and with `INDEX` their taps) into `best` (`taps`): a pass
    /// over the window's columns, then one over its rows, each tap one contiguous loop.
    #[inline(always)]
    fn pool<const INDEX: bool>(&mut self) {
        let PoolWindow { kernel: k, stride: s, .. } = self.window;
        let (block, len) = (self.rows * self.len, self.len);
        for qr in 0..s {
            let (values, columns) = (&mut self.values[qr * block..][..block], &mut self.columns[qr * block..][..block]);
            for kc in 0..k {
                let source = &self.phases[((kc % s) * s + qr) * block + kc / s..][..block];
                if kc == 0 {
                    values.copy_from_slice(source);
                    if INDEX {
                        columns.fill(0);
                    }
                } else if INDEX {
                    for ((b, c), &v) in values.iter_mut().zip(columns.iter_mut()).zip(source) {
                        let take = takes(v, *b);
                        *b = if take { v } else { *b };
                        *c = if take { kc as u32 } else { *c };
                    }
                } else {
                    for (b, &v) in values.iter_mut().zip(source) {
                        *b = if takes(v, *b) { v } else { *b };
                    }
                }
            }
        }
        let n = self.oh * len;
        for kr in 0..k {
            let at = (kr % s) * block + (kr / s) * len;
            let (source, columns) = (&self.values[at..][..n], &self.columns[at..][..n]);
            if kr == 0 {
                self.best.copy_from_slice(source);
                if INDEX {
                    self.taps.copy_from_slice(columns);
                }
            } else if INDEX {
                let first = (kr * k) as u32;
                for ((b, t), (&v, &c)) in self.best.iter_mut().zip(self.taps.iter_mut()).zip(source.iter().zip(columns)) {
                    let take = takes(v, *b);
                    *b = if take { v } else { *b };
                    *t = if take { first + c } else { *t };
                }
            } else {
                for (b, &v) in self.best.iter_mut().zip(source) {
                    *b = if takes(v, *b) { v } else { *b };
                }
            }
        }
    }

    /// The sum of every window into `best`, as [`Scratch::pool`] (0 padding).
    #[inline(always)]
    fn sum(&mut self) {
        let PoolWindow { kernel: k, stride: s, .. } = self.window;
        let (block, len) = (self.rows * self.len, self.len);
        for qr in 0..s {
            let values = &mut self.values[qr * block..][..block];
            for kc in 0..k {
                let source = &self.phases[((kc % s) * s + qr) * block + kc / s..][..block];
                if kc == 0 {
                    values.copy_from_slice(source);
                } else {
                    values.iter_mut().zip(source).for_each(|(b, v)| *b += v);
                }
            }
        }
        let n = self.oh * len;
        for kr in 0..k {
            let source = &self.values[(kr % s) * block + (kr / s) * len..][..n];
            if kr == 0 {
                self.best.copy_from_slice(source);
            } else {
                self.best.iter_mut().zip(source).for_each(|(b, v)| *b += v);
            }
        }
    }

    /// The adjoint of [`Scratch::split`] and [`Scratch::sum`]: from δ of each window's sum in
    /// `best` (0 in the columns past ow), δ of each plane cell, written into `dx` (h × w).
    #[inline(always)]
    fn sum_backward(&mut self, dx: &mut [f32]) {
        let PoolWindow { kernel: k, stride: s, .. } = self.window;
        let (block, len) = (self.rows * self.len, self.len);
        let n = self.oh * len;
        self.values.fill(0.0);
        for kr in 0..k {
            let target = &mut self.values[(kr % s) * block + (kr / s) * len..][..n];
            target.iter_mut().zip(&self.best).for_each(|(t, g)| *t += g);
        }
        self.phases.fill(0.0);
        for qr in 0..s {
            let values = &self.values[qr * block..][..block];
            for kc in 0..k {
                let target = &mut self.phases[((kc % s) * s + qr) * block + kc / s..][..block];
                target.iter_mut().zip(values).for_each(|(t, g)| *t += g);
            }
        }
        for (at, range) in &self.runs {
            let (src, row) = (&self.phases[range.clone()], &mut dx[*at..]);
            match s {
                1 => row[..src.len()].copy_from_slice(src),
                2 => every_into::<2>(src, row),
                _ => row.iter_mut().step_by(s).zip(src).for_each(|(d, &v)| *d = v),
            }
        }
    }

    /// The position in the plane of window (i, j)'s maximum. Only a window reaching into the
    /// leading padding can find it there (a −∞ padding cell tying real −∞'s before them); such
    /// a window is scanned again over its cells inside the plane, in row-major order.
    fn winner(&self, plane: &[f32], i: usize, j: usize, tap: u32) -> usize {
        let PoolWindow { kernel: k, stride: s, padding: p } = self.window;
        let (r, c) = (i * s + tap as usize / k, j * s + tap as usize % k);
        if r >= p && c >= p && r - p < self.h && c - p < self.w {
            return (r - p) * self.w + c - p;
        }
        let (rows, cols) = (self.window.span(i, self.h), self.window.span(j, self.w));
        let mut at = rows.start * self.w + cols.start;
        for r in rows {
            for c in cols.clone() {
                if takes(plane[r * self.w + c], plane[at]) {
                    at = r * self.w + c;
                }
            }
        }
        at
    }
}

/// `dst[m] = src[m·S]` (`src` holds at least (len − 1)·S + 1 elements): with the stride a
/// constant the compiler turns the reads into vector loads and shuffles.
#[inline(always)]
fn every<const S: usize>(src: &[f32], dst: &mut [f32]) {
    let full = (src.len() / S).min(dst.len());
    for (d, c) in dst[..full].iter_mut().zip(src.chunks_exact(S)) {
        *d = c[0];
    }
    if let Some(d) = dst.get_mut(full) {
        *d = src[full * S];
    }
}

/// `dst[m·S] = src[m]` (`dst` holds at least (len − 1)·S + 1 elements), as [`every`].
#[inline(always)]
fn every_into<const S: usize>(src: &[f32], dst: &mut [f32]) {
    let full = (dst.len() / S).min(src.len());
    for (d, &v) in dst.chunks_exact_mut(S).zip(&src[..full]) {
        d[0] = v;
    }
    if let Some(&v) = src.get(full) {
        dst[full * S] = v;
    }
}

/// What [`pool_planes`] computes (a const parameter, so each job's loops are compiled apart).
mod job {
    /// Window maxima of x into `out`.
    pub const MAX: u8 = 0;
    /// δy (`grad`) added into `dx` at each window's maximum of x.
    pub const MAX_BACKWARD: u8 = 1;
    /// Window means of x into `out`.
    pub const AVG: u8 = 2;
    /// δx of the mean (x unused) into `dx`.
    pub const AVG_BACKWARD: u8 = 3;
}

/// Pools a run of whole `h × w` planes for `JOB` ([`job`]); an average divides by the window's
/// cells inside the plane, or with `include_pad` by kernel².
#[inline(always)]
fn pool_planes<const JOB: u8>(x: &[f32], hw: [usize; 2], window: PoolWindow, include_pad: bool, out: &mut [f32], grad: &[f32], dx: &mut [f32]) {
    let average = JOB == job::AVG || JOB == job::AVG_BACKWARD;
    if !average && window == PAIRS {
        return max_pool_pairs::<JOB>(x, hw, out, grad, dx);
    }
    let mut scratch = Scratch::new(hw, window, if average { 0.0 } else { f32::NEG_INFINITY });
    let (oh, ow, len, plane_len) = (scratch.oh, scratch.ow, scratch.len, hw[0] * hw[1]);
    if oh == 0 || ow == 0 || plane_len == 0 {
        return;
    }
    let cells = |o: usize, input: usize| if include_pad { window.kernel } else { window.span(o, input).len() };
    let (row_cells, column_cells): (Vec<usize>, Vec<usize>) = ((0..oh).map(|i| cells(i, hw[0])).collect(), (0..ow).map(|j| cells(j, hw[1])).collect());
    let planes = if JOB == job::AVG_BACKWARD { dx.len() } else { x.len() } / plane_len;
    for p in 0..planes {
        if JOB != job::AVG_BACKWARD {
            scratch.split(&x[p * plane_len..][..plane_len]);
        }
        match JOB {
            job::MAX | job::AVG => {
                if JOB == job::MAX {
                    scratch.pool::<false>();
                } else {
                    scratch.sum();
                }
                for i in 0..oh {
                    let (dst, best) = (&mut out[(p * oh + i) * ow..][..ow], &scratch.best[i * len..][..ow]);
                    if JOB == job::MAX {
                        dst.copy_from_slice(best);
                    } else {
                        for ((d, &v), &c) in dst.iter_mut().zip(best).zip(&column_cells) {
                            *d = v / (row_cells[i] * c) as f32;
                        }
                    }
                }
            }
            job::MAX_BACKWARD => {
                scratch.pool::<true>();
                let (plane, d) = (&x[p * plane_len..][..plane_len], &mut dx[p * plane_len..][..plane_len]);
                for i in 0..oh {
                    for (j, (&tap, &g)) in scratch.taps[i * len..][..ow].iter().zip(&grad[(p * oh + i) * ow..][..ow]).enumerate() {
                        d[scratch.winner(plane, i, j, tap)] += g;
                    }
                }
            }
            _ => {
                for i in 0..oh {
                    let row = &mut scratch.best[i * len..][..len];
                    for ((b, &g), &c) in row.iter_mut().zip(&grad[(p * oh + i) * ow..][..ow]).zip(&column_cells) {
                        *b = g / (row_cells[i] * c) as f32;
                    }
                    row[ow..].fill(0.0);
                }
                scratch.sum_backward(&mut dx[p * plane_len..][..plane_len]);
            }
        }
    }
}

/// The 2 × 2, stride 2 window without padding of the convnets and ConvRNNs.
const PAIRS: PoolWindow = PoolWindow { kernel: 2, stride: 2, padding: 0 };

/// [`pool_planes`] for [`PAIRS`] (`JOB` is [`job::MAX`] or [`job::MAX_BACKWARD`]). The windows
/// do not overlap, so there is no scratch to lay out: each pair of input rows is reduced to
/// its column pairs' winners (a row's first maximum, or its last NaN), then the two rows'
/// winners to the window's, the order of [`Scratch::pool`]. The backward writes every cell of
/// δx once, δy at the window's winner and 0 elsewhere, with nothing to scan again. On the 32 px
/// convnet the pools fell from 22 % of the training step to 6 % (step 13.9–14.6 → 11.4 ms).
#[inline(always)]
fn max_pool_pairs<const JOB: u8>(x: &[f32], [h, w]: [usize; 2], out: &mut [f32], grad: &[f32], dx: &mut [f32]) {
    let (oh, ow) = (h / 2, w / 2);
    let planes = x.len() / (h * w);
    // One row pair's column winners: (value, whether the right cell won).
    let pick = |a: f32, b: f32| if takes(b, a) { (b, true) } else { (a, false) };
    let mut cells = if JOB == job::MAX_BACKWARD { [(); 4].map(|_| vec![0.0f32; ow]) } else { Default::default() };
    for p in 0..planes {
        for i in 0..oh {
            let top = &x[(p * h + 2 * i) * w..][..2 * ow];
            let bottom = &x[(p * h + 2 * i + 1) * w..][..2 * ow];
            let at = (p * oh + i) * ow;
            if JOB == job::MAX {
                for ((o, t), b) in out[at..][..ow].iter_mut().zip(top.chunks_exact(2)).zip(bottom.chunks_exact(2)) {
                    let (upper, lower) = (pick(t[0], t[1]).0, pick(b[0], b[1]).0);
                    *o = pick(upper, lower).0;
                }
            } else {
                // δ of the window's four cells, then written out interleaved: two loops the
                // compiler vectorises, where one that did both ran scalar.
                let [c00, c01, c10, c11] = &mut cells;
                for (((((g, t), b), d00), d01), (d10, d11)) in grad[at..][..ow].iter().zip(top.chunks_exact(2)).zip(bottom.chunks_exact(2)).zip(c00.iter_mut()).zip(c01.iter_mut()).zip(c10.iter_mut().zip(c11.iter_mut())) {
                    let ((upper, upper_right), (lower, lower_right)) = (pick(t[0], t[1]), pick(b[0], b[1]));
                    let below = pick(upper, lower).1;
                    let (gt, gb) = if below { (0.0, *g) } else { (*g, 0.0) };
                    (*d00, *d01) = if upper_right { (0.0, gt) } else { (gt, 0.0) };
                    (*d10, *d11) = if lower_right { (0.0, gb) } else { (gb, 0.0) };
                }
                let (dx_top, dx_bottom) = dx[(p * h + 2 * i) * w..][..2 * w].split_at_mut(w);
                for (row, (left, right)) in [(dx_top, (&*c00, &*c01)), (dx_bottom, (&*c10, &*c11))] {
                    for ((d, &l), &r) in row.chunks_exact_mut(2).zip(left.iter()).zip(right.iter()) {
                        d[0] = l;
                        d[1] = r;
                    }
                }
            }
        }
    }
}

/// [`pool_planes`] compiled for the widest vector unit this CPU has.
fn pool_planes_dispatch<const JOB: u8>(x: &[f32], hw: [usize; 2], window: PoolWindow, include_pad: bool, out: &mut [f32], grad: &[f32], dx: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        fn avx512<const JOB: u8>(x: &[f32], hw: [usize; 2], window: PoolWindow, include_pad: bool, out: &mut [f32], grad: &[f32], dx: &mut [f32]) {
            pool_planes::<JOB>(x, hw, window, include_pad, out, grad, dx)
        }
        #[target_feature(enable = "avx2")]
        fn avx2<const JOB: u8>(x: &[f32], hw: [usize; 2], window: PoolWindow, include_pad: bool, out: &mut [f32], grad: &[f32], dx: &mut [f32]) {
            pool_planes::<JOB>(x, hw, window, include_pad, out, grad, dx)
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { avx512::<JOB>(x, hw, window, include_pad, out, grad, dx) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            return unsafe { avx2::<JOB>(x, hw, window, include_pad, out, grad, dx) };
        }
    }
    pool_planes::<JOB>(x, hw, window, include_pad, out, grad, dx)
}

/// Planes handed to one rayon task: enough work to amortise the task and its scratch.
fn planes_per_task(plane_len: usize) -> usize {
    (16384 / plane_len.max(1)).max(1)
}

/// The max pool of `x` (`[n, c, h, w]`, contiguous f32) with `window`; shape `[n, c, oh, ow]`.
pub fn max_pool_forward(x: &[f32], shape: [usize; 4], window: PoolWindow) -> Vec<f32> {
    pool_forward::<{ job::MAX }>(x, shape, window, false)
}

/// δx of [`max_pool_forward`]: each output's δy added at its window's maximum.
pub fn max_pool_backward(x: &[f32], grad: &[f32], shape: [usize; 4], window: PoolWindow) -> Vec<f32> {
    pool_backward::<{ job::MAX_BACKWARD }>(x, grad, shape, window, false)
}

/// The average pool of `x` (`[n, c, h, w]`, contiguous f32) with `window`, over the window's
/// cells inside the plane (or with `include_pad` over kernel² cells); shape `[n, c, oh, ow]`.
pub fn avg_pool_forward(x: &[f32], shape: [usize; 4], window: PoolWindow, include_pad: bool) -> Vec<f32> {
    pool_forward::<{ job::AVG }>(x, shape, window, include_pad)
}

/// δx of [`avg_pool_forward`] (shape `[n, c, h, w]`) for δy.
pub fn avg_pool_backward(grad: &[f32], shape: [usize; 4], window: PoolWindow, include_pad: bool) -> Vec<f32> {
    pool_backward::<{ job::AVG_BACKWARD }>(&[], grad, shape, window, include_pad)
}

fn pool_forward<const JOB: u8>(x: &[f32], shape: [usize; 4], window: PoolWindow, include_pad: bool) -> Vec<f32> {
    let [n, c, h, w] = shape;
    let (oh, ow) = (window.output_len(h), window.output_len(w));
    let len = n * c * oh * ow;
    if len == 0 {
        return Vec::new();
    }
    let per_task = planes_per_task(h * w);
    filled_by_chunks(len, oh * ow * per_task, || (), |_, task, out| {
        let x = &x[task * per_task * h * w..][..out.len() / (oh * ow) * h * w];
        pool_planes_dispatch::<JOB>(x, [h, w], window, include_pad, out, &[], &mut []);
    })
}

/// `x` is only read by the max pool's backward (the average's passes `&[]`).
fn pool_backward<const JOB: u8>(x: &[f32], grad: &[f32], shape: [usize; 4], window: PoolWindow, include_pad: bool) -> Vec<f32> {
    let [n, c, h, w] = shape;
    let (oh, ow) = (window.output_len(h), window.output_len(w));
    let len = n * c * h * w;
    if len == 0 || oh * ow == 0 {
        return vec![0.0; len];
    }
    let per_task = planes_per_task(h * w);
    // Zeroed by each task (see `filled_by_chunks`): the backward scatters into it.
    filled_by_chunks(len, h * w * per_task, || (), |_, task, dx| {
        let planes = dx.len() / (h * w);
        let grad = &grad[task * per_task * oh * ow..][..planes * oh * ow];
        let x = if x.is_empty() { x } else { &x[task * per_task * h * w..][..dx.len()] };
        pool_planes_dispatch::<JOB>(x, [h, w], window, include_pad, &mut [], grad, dx);
    })
}

#[backend_extension(Autodiff, Cube, Flex, NdArray: cfg(feature = "ndarray"))]
pub trait PoolBackend: Backend {
    /// Square max pooling (floor mode, no dilation).
    fn max_pool(x: FloatTensor<Self>, kernel: usize, stride: usize, padding: usize) -> FloatTensor<Self> {
        Self::max_pool2d(x, [kernel; 2], [stride; 2], [padding; 2], [1, 1], false)
    }

    /// δx of [`PoolBackend::max_pool`] from its input and δy.
    fn max_pool_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>, kernel: usize, stride: usize, padding: usize) -> FloatTensor<Self> {
        backend_max_pool_backward::<Self>(x, grad, PoolWindow { kernel, stride, padding })
    }

    /// Square average pooling (floor mode): the mean over the window's cells inside the input,
    /// or with `include_pad` over kernel² cells.
    fn avg_pool(x: FloatTensor<Self>, kernel: usize, stride: usize, padding: usize, include_pad: bool) -> FloatTensor<Self> {
        Self::avg_pool2d(x, [kernel; 2], [stride; 2], [padding; 2], include_pad, false)
    }

    /// δx of [`PoolBackend::avg_pool`] (x is read for its shape).
    fn avg_pool_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>, kernel: usize, stride: usize, padding: usize, include_pad: bool) -> FloatTensor<Self> {
        Self::avg_pool2d_backward(x, grad, [kernel; 2], [stride; 2], [padding; 2], include_pad, false)
    }
}

/// The backend's own max-pool backward (its forward run again for the indices).
fn backend_max_pool_backward<B: Backend>(x: FloatTensor<B>, grad: FloatTensor<B>, w: PoolWindow) -> FloatTensor<B> {
    let (k, s, p) = ([w.kernel; 2], [w.stride; 2], [w.padding; 2]);
    let indices = B::max_pool2d_with_indices(x.clone(), k, s, p, [1, 1], false, IntDType::I64).indices;
    B::max_pool2d_with_indices_backward(x, k, s, p, [1, 1], false, grad, indices).x_grad
}

impl PoolBackend for Cube {}
#[cfg(feature = "ndarray")]
#[allow(deprecated)]
impl PoolBackend for burn::backend::NdArray {}

/// f32 through this module's loops; other dtypes through burn-flex's.
impl PoolBackend for Flex {
    fn max_pool(x: FloatTensor<Self>, kernel: usize, stride: usize, padding: usize) -> FloatTensor<Self> {
        let window = PoolWindow { kernel, stride, padding };
        match as_flex::<Self>(&x) {
            Some(xf) => {
                let shape = dims::<Self>(&x);
                let y = max_pool_forward(&values(xf), shape, window);
                to_primitive::<Self>(y, [shape[0], shape[1], window.output_len(shape[2]), window.output_len(shape[3])])
            }
            None => Self::max_pool2d(x, [kernel; 2], [stride; 2], [padding; 2], [1, 1], false),
        }
    }

    fn max_pool_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>, kernel: usize, stride: usize, padding: usize) -> FloatTensor<Self> {
        let window = PoolWindow { kernel, stride, padding };
        match (as_flex::<Self>(&x), as_flex::<Self>(&grad)) {
            (Some(xf), Some(gf)) => {
                let shape = dims::<Self>(&x);
                to_primitive::<Self>(max_pool_backward(&values(xf), &values(gf), shape, window), shape)
            }
            _ => backend_max_pool_backward::<Self>(x, grad, window),
        }
    }

    fn avg_pool(x: FloatTensor<Self>, kernel: usize, stride: usize, padding: usize, include_pad: bool) -> FloatTensor<Self> {
        let window = PoolWindow { kernel, stride, padding };
        match as_flex::<Self>(&x) {
            Some(xf) => {
                let shape = dims::<Self>(&x);
                let y = avg_pool_forward(&values(xf), shape, window, include_pad);
                to_primitive::<Self>(y, [shape[0], shape[1], window.output_len(shape[2]), window.output_len(shape[3])])
            }
            None => Self::avg_pool2d(x, [kernel; 2], [stride; 2], [padding; 2], include_pad, false),
        }
    }

    fn avg_pool_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>, kernel: usize, stride: usize, padding: usize, include_pad: bool) -> FloatTensor<Self> {
        let window = PoolWindow { kernel, stride, padding };
        match (as_flex::<Self>(&x), as_flex::<Self>(&grad)) {
            (Some(_), Some(gf)) => {
                let shape = dims::<Self>(&x);
                to_primitive::<Self>(avg_pool_backward(&values(gf), shape, window, include_pad), shape)
            }
            _ => Self::avg_pool2d_backward(x, grad, [kernel; 2], [stride; 2], [padding; 2], include_pad, false),
        }
    }
}

fn dims<B: Backend>(x: &FloatTensor<B>) -> [usize; 4] {
    let s = x.shape();
    [s[0], s[1], s[2], s[3]]
}

impl<B: PoolBackend, C: CheckpointStrategy> PoolBackend for Autodiff<B, C> {
    fn max_pool(x: FloatTensor<Self>, kernel: usize, stride: usize, padding: usize) -> FloatTensor<Self> {
        if as_flex::<B>(&x.clone().into_primitive()).is_none() {
            return <Self as ModuleOps<Self>>::max_pool2d(x, [kernel; 2], [stride; 2], [padding; 2], [1, 1], false);
        }
        let window = PoolWindow { kernel, stride, padding };
        match MaxPoolBackward(window).prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let x = x.into_primitive();
                prep.finish(x.clone(), B::max_pool(x, kernel, stride, padding))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::max_pool(x.into_primitive(), kernel, stride, padding)),
        }
    }

    fn avg_pool(x: FloatTensor<Self>, kernel: usize, stride: usize, padding: usize, include_pad: bool) -> FloatTensor<Self> {
        if as_flex::<B>(&x.clone().into_primitive()).is_none() {
            return <Self as ModuleOps<Self>>::avg_pool2d(x, [kernel; 2], [stride; 2], [padding; 2], include_pad, false);
        }
        let window = PoolWindow { kernel, stride, padding };
        match AvgPoolBackward(window, include_pad).prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let x = x.into_primitive();
                prep.finish(x.clone(), B::avg_pool(x, kernel, stride, padding, include_pad))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::avg_pool(x.into_primitive(), kernel, stride, padding, include_pad)),
        }
    }
}

/// Keeps the pool's input (for its shape, as burn's own average pool).
#[derive(Debug)]
struct AvgPoolBackward(PoolWindow, bool);

impl<B: PoolBackend> Backward<B, 1> for AvgPoolBackward {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = &ops.parents[0] {
            let PoolWindow { kernel, stride, padding } = self.0;
            grads.register::<B>(node.id, B::avg_pool_backward(ops.state, grad, kernel, stride, padding, self.1));
        }
    }
}

/// Keeps the pool's input (the maxima are found again from it).
#[derive(Debug)]
struct MaxPoolBackward(PoolWindow);

impl<B: PoolBackend> Backward<B, 1> for MaxPoolBackward {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = &ops.parents[0] {
            let PoolWindow { kernel, stride, padding } = self.0;
            grads.register::<B>(node.id, B::max_pool_backward(ops.state, grad, kernel, stride, padding));
        }
    }
}

/// Square max pooling of `x` (`[n, c, h, w]`; floor mode, no dilation), as burn's `max_pool2d`.
pub fn max_pool2d(x: Tensor<4>, kernel: usize, stride: usize, padding: usize) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as PoolBackend>::max_pool(x.into_dispatch(), kernel, stride, padding))
}

/// Square average pooling of `x` (`[n, c, h, w]`; floor mode), as burn's `avg_pool2d`: the mean
/// over the window's cells inside the input, or with `include_pad` over kernel² cells.
pub fn avg_pool2d(x: Tensor<4>, kernel: usize, stride: usize, padding: usize, include_pad: bool) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as PoolBackend>::avg_pool(x.into_dispatch(), kernel, stride, padding, include_pad))
}

#[cfg(test)]
mod tests {
    use burn::tensor::module::{avg_pool2d as burn_avg_pool2d, max_pool2d as burn_max_pool2d};
    use burn::tensor::ops::{AvgPoolOptions, MaxPoolOptions};
    use burn::tensor::{Device, Distribution, Tensor, TensorData, Tolerance};

    use super::*;

    /// burn's max pool and its gradient, as the reference.
    fn reference(x: Tensor<4>, w: PoolWindow, g: Tensor<4>) -> (TensorData, TensorData) {
        let x = x.require_grad();
        let y = burn_max_pool2d(x.clone(), MaxPoolOptions::new([w.kernel; 2]).with_stride([w.stride; 2]).with_padding([w.padding; 2]));
        let grads = (y.clone() * g).sum().backward();
        (y.into_data(), x.grad(&grads).unwrap().into_data())
    }

    fn ours(x: Tensor<4>, w: PoolWindow, g: Tensor<4>) -> (TensorData, TensorData) {
        let x = x.require_grad();
        let y = max_pool2d(x.clone(), w.kernel, w.stride, w.padding);
        let grads = (y.clone() * g).sum().backward();
        (y.into_data(), x.grad(&grads).unwrap().into_data())
    }

    #[test]
    fn max_pool_matches_burn_in_value_and_gradient_with_ties_and_nan() {
        let device = Device::flex().autodiff();
        // Windows of the models (2×2/2, 3×3/2 with and without padding, 3×3/1) and a 5×5/3 on odd and even
        // sizes, and the 3×3/2, 2×2/2 at CIFAR's 32 px; values rounded to a few levels so that windows hold ties.
        for (w, h, wd) in [(PoolWindow { kernel: 2, stride: 2, padding: 0 }, 8, 8), (PoolWindow { kernel: 3, stride: 2, padding: 1 }, 9, 8), (PoolWindow { kernel: 3, stride: 2, padding: 0 }, 11, 7), (PoolWindow { kernel: 3, stride: 1, padding: 1 }, 5, 6), (PoolWindow { kernel: 5, stride: 3, padding: 2 }, 10, 13), (PoolWindow { kernel: 3, stride: 2, padding: 1 }, 32, 32), (PoolWindow { kernel: 2, stride: 2, padding: 0 }, 31, 32), (PoolWindow { kernel: 3, stride: 2, padding: 0 }, 30, 29)] {
            let x = Tensor::<4>::random([3, 5, h, wd], Distribution::Uniform(-2.0, 2.0), &device).mul_scalar(2.0).round();
            let g = Tensor::<4>::random([3, 5, w.output_len(h), w.output_len(wd)], Distribution::Normal(0.0, 1.0), &device);
            let (y_ref, dx_ref) = reference(x.clone(), w, g.clone());
            let (y, dx) = ours(x, w, g);
            assert_eq!(y.shape(), y_ref.shape(), "{w:?}");
            y.assert_eq(&y_ref, true);
            // Overlapping windows add δy's in another order than burn's.
            dx.assert_approx_eq::<f32>(&dx_ref, Tolerance::absolute(1e-6));
        }
        // The 2 × 2 path: two NaNs in one window (the later wins the gradient), a NaN among ties,
        // two tied maxima (the first wins), ties alone.
        let mut values = vec![1.0f32; 32];
        (values[0], values[5], values[3], values[17], values[20]) = (f32::NAN, f32::NAN, f32::NAN, 5.0, 5.0);
        let (x, g) = (Tensor::<4>::from_data(TensorData::new(values, [1, 2, 4, 4]), &device), Tensor::<4>::random([1, 2, 2, 2], Distribution::Normal(0.0, 1.0), &device));
        let w = PoolWindow { kernel: 2, stride: 2, padding: 0 };
        let ((y_ref, dx_ref), (y, dx)) = (reference(x.clone(), w, g.clone()), ours(x, w, g));
        let same = |a: TensorData, b: TensorData| {
            let (a, b) = (a.try_to_vec::<f32>().unwrap(), b.try_to_vec::<f32>().unwrap());
            assert!(a.iter().zip(&b).all(|(a, b)| a == b || (a.is_nan() && b.is_nan())), "{a:?} vs {b:?}");
        };
        same(y, y_ref);
        same(dx, dx_ref);
        // A NaN wins its window in the value; padding never wins, even over −∞.
        let mut values = vec![-f32::INFINITY; 16];
        values[5] = f32::NAN;
        let x = Tensor::<4>::from_data(TensorData::new(values, [1, 1, 4, 4]), &device);
        let y: Vec<f32> = max_pool2d(x, 3, 2, 1).into_data().try_to_vec::<f32>().unwrap();
        assert!(y[0].is_nan() && y[1].is_nan() && y[2].is_nan() && y[3].is_nan(), "{y:?}");
        let x = Tensor::<4>::full([1, 1, 3, 3], -f32::INFINITY, &device);
        let y: Vec<f32> = max_pool2d(x, 3, 2, 1).into_data().try_to_vec::<f32>().unwrap();
        assert!(y.iter().all(|v| *v == -f32::INFINITY), "{y:?}");
        // The gradient of an all −∞ plane goes to each window's first cell inside the plane.
        let w = PoolWindow { kernel: 3, stride: 2, padding: 1 };
        let x = Tensor::<4>::full([1, 2, 5, 6], -f32::INFINITY, &device);
        let g = Tensor::<4>::random([1, 2, 3, 3], Distribution::Normal(0.0, 1.0), &device);
        let ((_, dx_ref), (_, dx)) = (reference(x.clone(), w, g.clone()), ours(x, w, g));
        dx.assert_approx_eq::<f32>(&dx_ref, Tolerance::absolute(1e-6));
    }

    #[test]
    fn avg_pool_matches_burn_in_value_and_gradient() {
        let device = Device::flex().autodiff();
        // The models' 3×3/2 with padding (knet4, at 32 and 16 px), 2×2/2, 3×3/1, 5×5/3 with padding, odd sizes.
        let windows = [(3, 2, 1, 32, 32), (3, 2, 1, 16, 15), (2, 2, 0, 9, 8), (3, 1, 1, 5, 6), (5, 3, 2, 10, 13), (3, 2, 0, 11, 7)];
        for ((kernel, stride, padding, h, w), include_pad) in windows.into_iter().flat_map(|c| [(c, false), (c, true)]) {
            let window = PoolWindow { kernel, stride, padding };
            let x = Tensor::<4>::random([3, 5, h, w], Distribution::Normal(0.0, 1.0), &device).require_grad();
            let g = Tensor::<4>::random([3, 5, window.output_len(h), window.output_len(w)], Distribution::Normal(0.0, 1.0), &device);
            let options = AvgPoolOptions::new([kernel; 2]).with_stride([stride; 2]).with_padding([padding; 2]).with_count_include_pad(include_pad);
            let y_ref = burn_avg_pool2d(x.clone(), options);
            let dx_ref = x.grad(&(y_ref.clone() * g.clone()).sum().backward()).unwrap();
            let y = avg_pool2d(x.clone(), kernel, stride, padding, include_pad);
            let dx = x.grad(&(y.clone() * g).sum().backward()).unwrap();
            let case = format!("{window:?} {h}×{w} include_pad {include_pad}");
            assert_eq!(y.dims(), y_ref.dims(), "{case}");
            // Sums in another order than burn's.
            y.into_data().assert_approx_eq::<f32>(&y_ref.into_data(), Tolerance::absolute(1e-5));
            dx.into_data().assert_approx_eq::<f32>(&dx_ref.into_data(), Tolerance::absolute(1e-5));
        }
    }

    /// Inputs of many planes are split into tasks, the last one short, on the 2 × 2, stride 2
    /// path (an odd width too) and the padded window's.
    #[test]
    fn pools_split_over_tasks_match_burn() {
        let device = Device::flex().autodiff();
        for (window, h, w) in [(PoolWindow { kernel: 2, stride: 2, padding: 0 }, 48, 48), (PoolWindow { kernel: 2, stride: 2, padding: 0 }, 48, 47), (PoolWindow { kernel: 3, stride: 2, padding: 1 }, 48, 48)] {
            let shape = [4, 16, h, w];
            assert!(64 % planes_per_task(h * w) != 0, "several tasks, the last one short");
            let x = Tensor::<4>::random(shape, Distribution::Uniform(-2.0, 2.0), &device).mul_scalar(2.0).round();
            let g = Tensor::<4>::random([4, 16, window.output_len(h), window.output_len(w)], Distribution::Normal(0.0, 1.0), &device);
            let ((y_ref, dx_ref), (y, dx)) = (reference(x.clone(), window, g.clone()), ours(x.clone(), window, g.clone()));
            y.assert_eq(&y_ref, true);
            dx.assert_approx_eq::<f32>(&dx_ref, Tolerance::absolute(1e-6));
            let x = x.require_grad();
            let y_ref = burn_avg_pool2d(x.clone(), AvgPoolOptions::new([window.kernel; 2]).with_stride([window.stride; 2]).with_padding([window.padding; 2]).with_count_include_pad(false));
            let dx_ref = x.grad(&(y_ref.clone() * g.clone()).sum().backward()).unwrap();
            let y = avg_pool2d(x.clone(), window.kernel, window.stride, window.padding, false);
            let dx = x.grad(&(y.clone() * g).sum().backward()).unwrap();
            y.into_data().assert_approx_eq::<f32>(&y_ref.into_data(), Tolerance::absolute(1e-5));
            dx.into_data().assert_approx_eq::<f32>(&dx_ref.into_data(), Tolerance::absolute(1e-5));
        }
    }

    #[test]
    fn max_pool_is_burns_own_on_half_precision() {
        let device = Device::flex().autodiff();
        let w = PoolWindow { kernel: 3, stride: 2, padding: 1 };
        let x = Tensor::<4>::random([2, 3, 6, 6], Distribution::Normal(0.0, 1.0), &device).cast(burn::tensor::DType::BF16);
        let g = Tensor::<4>::random([2, 3, 3, 3], Distribution::Normal(0.0, 1.0), &device).cast(burn::tensor::DType::BF16);
        let (y_ref, dx_ref) = reference(x.clone(), w, g.clone());
        let (y, dx) = ours(x, w, g);
        y.assert_eq(&y_ref, true);
        dx.assert_eq(&dx_ref, true);
    }
}
