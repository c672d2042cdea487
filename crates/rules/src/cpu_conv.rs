//! 2-D convolution on the CPU (burn's flex backend) as a few well-shaped matrix products: the
//! forward, the input gradient and the weight gradient that [`crate::ops`] runs for every
//! convolution of every model on `Device::flex()`.
//!
//! Why not burn's: burn-flex 0.22.1 runs the forward as im2col + gemm over 512-pixel tiles after
//! a single-threaded NCHW → NHWC copy, and has no backward of its own, so burn's generic ones
//! run: the input gradient is a transposed convolution with a scalar col2im, and the weight
//! gradient a convolution with batch and channel axes swapped (for a [32, 64, 32, 32] input and
//! a 3×3 kernel that is 64 products of 64 × 32768 × 9, each repacking an 8 MB operand). Here,
//! for each example n and group g, with cols(x_n) the [C_in·kh·kw, H_out·W_out] patch matrix
//! read straight from NCHW (row (c, i, j) is plane c shifted by the tap (i, j)):
//!
//! - forward: y_n = W · cols(x_n) + bias, written in place into y's NCHW layout (through a
//!   buffer where several examples share a product);
//! - input gradient: δx_n = col2im(Kᵀ · δy_n) for the kernel K the caller passes (W for
//!   backprop, B for the feedback rules);
//! - weight gradient: δW = Σ_n δy_n · cols(x_n)ᵀ.
//!
//! Small maps with many channels (the ConvRNNs' cells at 4×4 and 2×2), where most of a patch
//! matrix is padding, go through the products of the `taps` module instead: one per kernel tap,
//! over only the positions it reaches. 3×3 stride-1 kernels on larger maps (ResNet's, AlexNet's
//! and the convnet's) go through Winograd's F(2×2, 3×3) in the `winograd` module: 16 products
//! of transformed tiles, 2.25× fewer multiplies than the patch matrix's product; 5×5 ones of
//! ≥ 64 channels (AlexNet's second) through its F(2×2, 5×5), forward and input gradient.
//!
//! A 1×1 kernel with stride 1 and no padding uses x_n itself as its patch matrix. Where an
//! example has few output positions, several examples sit side by side in one product
//! ([`PRODUCT_COLUMNS`]). Groups of examples run in parallel on rayon's pool, each product
//! single-threaded (a single group parallelises inside its products instead); the weight
//! gradient sums the batch in [`WEIGHT_GRAD_CHUNKS`] fixed chunks in a fixed order, or whole
//! for a large kernel, so every result is the same whatever the number of threads. Its products
//! are written column-major, the layout gemm handles fast when both operands run along the
//! positions ([`matmul_col_major`]).

use burn::backend::tensor::FloatTensor;
use burn::backend::Backend;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Shape, TensorData};
use burn_flex::FlexTensor;
use gemm::Parallelism;
use rayon::prelude::*;
use std::mem::MaybeUninit;

mod taps;
mod winograd;

/// Batch chunks of the weight gradient: each sums its examples into its own buffer, then the
/// buffers are added in order. A constant, so the sum's order never depends on the threads.
pub const WEIGHT_GRAD_CHUNKS: usize = 8;

/// Weight gradients of this many elements or more are summed over the whole batch in one buffer
/// (see [`weight_grad`]).
pub const WHOLE_BATCH_WEIGHT_GRAD_FROM: usize = 1 << 17;

/// Blocks of input channels (per group) that a large kernel's weight gradient is split into
/// ([`weight_grad_by_channel_blocks`]): enough for the threads to balance, few enough that each
/// block's product stays wide (AlexNet's 192-channel 3 × 3 conv: 108 columns a block).
const WEIGHT_GRAD_CHANNEL_BLOCKS: usize = 16;

/// Products narrower than this many columns take several examples side by side (example e in
/// columns e·positions…), so the kernel is packed once for all of them: at ResNet-18's last
/// stage (4×4 positions at 32 px) one example's product is 512 × 16 × 4608, and packing the
/// 9 MB kernel for it cost as much as the product.
const PRODUCT_COLUMNS: usize = 256;

/// The shape of one convolution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geometry {
    pub batch: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    /// Padding before the first row and column (the end padding only sets the output size).
    pub pad: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
    pub oh: usize,
    pub ow: usize,
}

impl Geometry {
    /// The geometry of `conv2d(x, weight)`, or `None` when the shapes do not make one.
    pub fn new(x: &[usize], weight: &[usize], options: &ConvOptions<2>) -> Option<Self> {
        let (&[batch, c_in, h, w], &[c_out, c_per_group, kh, kw]) = (x, weight) else {
            return None;
        };
        let groups = options.groups;
        if groups == 0 || c_in != c_per_group * groups || c_out % groups != 0 {
            return None;
        }
        let out = |size: usize, k: usize, axis: usize| {
            let (begin, end) = options.padding[axis];
            let span = options.dilation[axis] * (k - 1) + 1;
            (size + begin + end).checked_sub(span).map(|s| s / options.stride[axis] + 1)
        };
        Some(Self {
            batch,
            c_in,
            h,
            w,
            c_out,
            kh,
            kw,
            stride: options.stride,
            pad: options.padding_begin(),
            dilation: options.dilation,
            groups,
            oh: out(h, kh, 0)?,
            ow: out(w, kw, 1)?,
        })
    }

    fn in_per_group(&self) -> usize {
        self.c_in / self.groups
    }
    fn out_per_group(&self) -> usize {
        self.c_out / self.groups
    }
    /// Rows of a group's patch matrix: C_in/g · kh · kw.
    fn patch_rows(&self) -> usize {
        self.in_per_group() * self.kh * self.kw
    }
    fn positions(&self) -> usize {
        self.oh * self.ow
    }
    /// Examples side by side in one product: enough for [`PRODUCT_COLUMNS`] columns. A
    /// function of the shape alone, so results never depend on the thread count.
    fn examples_per_product(&self) -> usize {
        PRODUCT_COLUMNS.div_ceil(self.positions().max(1)).clamp(1, self.batch.max(1))
    }
    /// [`Geometry::examples_per_product`] widened, up to twice, to split the batch into an even
    /// number of equal products where that is possible: the forward's tasks are products, and
    /// AlexNet's 7 × 7 layers at batch 64 made 11 (six examples each, one of four), so one
    /// thread ran a sixth product while the other waited. Only for products whose columns are
    /// independent sums (the forward and the input gradient): the result does not change.
    fn examples_per_task(&self) -> usize {
        let per = self.examples_per_product();
        let even = |p: usize| self.batch % p == 0 && (self.batch / p) % 2 == 0;
        if even(per) {
            return per;
        }
        (per..=(2 * per).min(self.batch)).find(|&p| even(p)).unwrap_or(per)
    }
    fn plane(&self) -> usize {
        self.h * self.w
    }
    /// Whether x_n is its own patch matrix (1×1, stride 1, no padding).
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == [1, 1] && self.pad == [0, 0] && self.oh == self.h && self.ow == self.w
    }
    /// The convolution whose forward is this one's input gradient, for stride 1: δy as the
    /// input, x's size as the output, the kernel flipped with its channel axes swapped
    /// ([`flipped_transpose`]), padding d·(k − 1) − p. `None` where that padding would be
    /// negative or the stride is not 1.
    fn transposed(&self) -> Option<Self> {
        if self.stride != [1, 1] {
            return None;
        }
        let pad = |axis: usize, k: usize| (self.dilation[axis] * (k - 1)).checked_sub(self.pad[axis]);
        Some(Self {
            batch: self.batch,
            c_in: self.c_out,
            h: self.oh,
            w: self.ow,
            c_out: self.c_in,
            kh: self.kh,
            kw: self.kw,
            stride: [1, 1],
            pad: [pad(0, self.kh)?, pad(1, self.kw)?],
            dilation: self.dilation,
            groups: self.groups,
            oh: self.h,
            ow: self.w,
        })
    }

    /// For the tap at kernel offset `k` on an axis of input size `size`: the output indices
    /// whose input index o·stride − pad + k·dilation lies inside, as a range, and that index's
    /// offset (input = o·stride + offset).
    fn valid(&self, axis: usize, k: usize, size: usize, out: usize) -> (std::ops::Range<usize>, isize) {
        let (s, offset) = (self.stride[axis] as isize, (k * self.dilation[axis]) as isize - self.pad[axis] as isize);
        // o·s + offset ≥ 0  ⇔  o ≥ ⌈−offset / s⌉;  o·s + offset < size  ⇔  o < ⌈(size − offset) / s⌉.
        let ceil_div = |a: isize, b: isize| (a + b - 1).div_euclid(b);
        let lo = ceil_div(-offset, s).clamp(0, out as isize) as usize;
        let hi = ceil_div(size as isize - offset, s).clamp(lo as isize, out as isize) as usize;
        (lo..hi, offset)
    }
}

/// Strided rows shorter than this are gathered through an index table instead of copied row by
/// row with their edges: at 8 or 4 output columns the per-row bookkeeping of the copy costs
/// more than the data.
const GATHER_BELOW_COLUMNS: usize = 16;

/// Stride-1 rows up to this long are read from a zero-padded copy of the plane: each tap's
/// row is then one copy, with no zero edges to write around it. Row by row, a 32-column
/// row's 2-element edges and 28-element run were three library calls (memset, memmove):
/// 13 % of knet4's step. Longer rows amortise those calls, and the padded copy is one more
/// pass over the plane.
const PADDED_UP_TO_COLUMNS: usize = 64;

/// How to read a patch matrix ([`Patches::build`]).
#[derive(Debug, Clone, Copy, PartialEq)]
enum PatchMode {
    Rows,
    Gather,
    Padded,
    Permute,
}

/// Whether [`Patches::Permute`] can read this convolution's patches: planes and outputs of at
/// most 16 values (one AVX-512 register), on a CPU with AVX-512F.
fn permute_serves(g: &Geometry) -> bool {
    #[cfg(target_arch = "x86_64")]
    if g.plane() <= 16 && g.positions() <= 16 && std::arch::is_x86_feature_detected!("avx512f") {
        return true;
    }
    let _ = g;
    false
}

/// How one example's patch matrix is read from its NCHW planes; built once per convolution call
/// and shared by every example and group.
enum Patches {
    /// Row by row: for each kernel row i and column j, the valid output range and the input
    /// offset ([`Geometry::valid`]), copied as contiguous runs.
    Rows { rows: Vec<(std::ops::Range<usize>, isize)>, columns: Vec<(std::ops::Range<usize>, isize)> },
    /// For each tap (i, j) and output position, the input's offset within a channel plane; a
    /// tap that reads the zero padding points one past the plane, where
    /// [`Patches::channel`] puts a zero, so the gather has no branch.
    Gather(Vec<u32>),
    /// Stride 1: the plane copied once into a zero-padded [rows, columns] block, from which
    /// every tap's patch row is a shifted window, copied in fixed-width rows of the output's
    /// width (vector moves at 32, 16, 8, 4 and 2 columns, not a library call per row).
    Padded { rows: usize, columns: usize },
    /// Planes and outputs of at most 16 values ([`permute_serves`]): the plane is one AVX-512
    /// register, and each tap's patch row one permutation of it, the padding's lanes zeroed by
    /// a mask: for each tap, the input index of every output position and the mask of those
    /// inside. The 4 × 4 cells of the ConvRNN quick start spent a quarter of their forward
    /// copying 4-value rows through a padded 6 × 6 plane per example and channel.
    Permute(Vec<([u32; 16], u16)>),
}

impl Patches {
    fn new(g: &Geometry) -> Self {
        if permute_serves(g) {
            return Self::build(g, PatchMode::Permute);
        }
        let mode = match g.stride == [1, 1] {
            true if g.ow <= PADDED_UP_TO_COLUMNS => PatchMode::Padded,
            false if g.ow < GATHER_BELOW_COLUMNS && g.plane() < u32::MAX as usize => PatchMode::Gather,
            _ => PatchMode::Rows,
        };
        Self::build(g, mode)
    }

    fn build(g: &Geometry, mode: PatchMode) -> Self {
        if mode == PatchMode::Padded {
            assert_eq!(g.stride, [1, 1], "a padded plane serves stride 1 only");
            return Patches::Padded { rows: g.oh + (g.kh - 1) * g.dilation[0], columns: g.ow + (g.kw - 1) * g.dilation[1] };
        }
        let rows: Vec<_> = (0..g.kh).map(|i| g.valid(0, i, g.h, g.oh)).collect();
        let columns: Vec<_> = (0..g.kw).map(|j| g.valid(1, j, g.w, g.ow)).collect();
        if mode == PatchMode::Rows {
            return Patches::Rows { rows, columns };
        }
        let positions = g.positions();
        let mut index = vec![g.plane() as u32; g.kh * g.kw * positions];
        for (i, (oys, row_offset)) in rows.iter().enumerate() {
            for (j, (oxs, col_offset)) in columns.iter().enumerate() {
                let tap = &mut index[(i * g.kw + j) * positions..][..positions];
                for oy in oys.clone() {
                    let iy = ((oy * g.stride[0]) as isize + row_offset) as usize;
                    for ox in oxs.clone() {
                        let ix = ((ox * g.stride[1]) as isize + col_offset) as usize;
                        tap[oy * g.ow + ox] = (iy * g.w + ix) as u32;
                    }
                }
            }
        }
        if mode == PatchMode::Gather {
            return Patches::Gather(index);
        }
        assert!(permute_serves(g), "a permuted plane serves planes and outputs of at most 16 values");
        let taps = index
            .chunks_exact(positions)
            .map(|tap| {
                let (mut lanes, mut inside) = ([0u32; 16], 0u16);
                for (p, &k) in tap.iter().enumerate() {
                    if (k as usize) < g.plane() {
                        lanes[p] = k;
                        inside |= 1 << p;
                    }
                }
                (lanes, inside)
            })
            .collect();
        Patches::Permute(taps)
    }

    /// Group `group`'s patch matrix of `count` consecutive examples of `x`, [patch_rows,
    /// count·positions]: one example's own channels for a 1×1 stride-1 unpadded convolution,
    /// otherwise built in `cols` (its channels side by side for a pointwise one, through
    /// [`Patches::fill`] otherwise).
    fn matrix<'a>(&self, g: &Geometry, x: &'a [f32], count: usize, group: usize, cols: &'a mut Vec<f32>, parallel: bool) -> &'a [f32] {
        let (rows, positions) = (g.patch_rows(), g.positions());
        if g.is_pointwise() {
            return side_by_side(x, g.c_in, group * rows, rows, positions, count, cols);
        }
        let cols = at_least(cols, rows * count * positions);
        self.fill(g, x, count, group * g.in_per_group(), cols, parallel);
        cols
    }

    /// The patch matrix of `count` consecutive examples of `x` ([C, H, W] each; the group's
    /// channels from `c0`) side by side: `cols` becomes [patch_rows, count·positions], example
    /// e in columns e·positions…, so that one product serves them all. With `parallel`, one
    /// channel's rows per task.
    fn fill(&self, g: &Geometry, x: &[f32], count: usize, c0: usize, cols: &mut [f32], parallel: bool) {
        let taps = g.kh * g.kw;
        let width = count * g.positions();
        let cols = &mut cols[..g.patch_rows() * width];
        if parallel {
            cols.par_chunks_mut(taps * width).enumerate().for_each_init(Vec::new, |padded, (c, rows)| self.channel_dispatch(g, x, count, c0 + c, rows, padded));
        } else {
            let mut padded = Vec::new();
            cols.chunks_mut(taps * width).enumerate().for_each(|(c, rows)| self.channel_dispatch(g, x, count, c0 + c, rows, &mut padded));
        }
    }

    /// Channel `c`'s patch rows of `count` examples side by side, through [`Patches::channel`]
    /// compiled for the widest vector unit this CPU has: the rows' copies are short (2 to 64
    /// values), and in baseline x86-64 each is a run of 16-byte moves.
    fn channel_dispatch(&self, g: &Geometry, x: &[f32], count: usize, c: usize, rows: &mut [f32], padded: &mut Vec<f32>) {
        #[cfg(target_arch = "x86_64")]
        if let Patches::Permute(taps) = self {
            // SAFETY: a permuted plane is built only where the CPU has AVX-512F (`permute_serves`).
            return unsafe { permuted_rows(taps, g, x, count, c, rows) };
        }
        #[inline(always)]
        fn examples(p: &Patches, g: &Geometry, x: &[f32], count: usize, c: usize, rows: &mut [f32], padded: &mut Vec<f32>) {
            let (plane, positions) = (g.plane(), g.positions());
            for e in 0..count {
                p.channel(g, &x[(e * g.c_in + c) * plane..][..plane], rows, count * positions, e * positions, padded);
            }
        }
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f")]
            fn avx512(p: &Patches, g: &Geometry, x: &[f32], count: usize, c: usize, rows: &mut [f32], padded: &mut Vec<f32>) {
                examples(p, g, x, count, c, rows, padded)
            }
            #[target_feature(enable = "avx2")]
            fn avx2(p: &Patches, g: &Geometry, x: &[f32], count: usize, c: usize, rows: &mut [f32], padded: &mut Vec<f32>) {
                examples(p, g, x, count, c, rows, padded)
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F.
                return unsafe { avx512(self, g, x, count, c, rows, padded) };
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2.
                return unsafe { avx2(self, g, x, count, c, rows, padded) };
            }
        }
        examples(self, g, x, count, c, rows, padded)
    }

    /// One channel's patch rows (kh·kw rows of `ld` in `cols`) from its plane `xc`, in columns
    /// `col0..col0 + positions`; `padded` is scratch.
    #[inline(always)]
    fn channel(&self, g: &Geometry, xc: &[f32], cols: &mut [f32], ld: usize, col0: usize, padded: &mut Vec<f32>) {
        let positions = g.positions();
        let row = |t: usize| t * ld + col0;
        match self {
            Patches::Gather(index) => {
                padded.clear();
                padded.extend_from_slice(xc);
                padded.push(0.0);
                for (t, index) in index.chunks_exact(positions).enumerate() {
                    for (v, &k) in cols[row(t)..][..positions].iter_mut().zip(index) {
                        *v = padded[k as usize];
                    }
                }
            }
            &Patches::Padded { rows: hp, columns: wp } => {
                padded.clear();
                padded.resize(hp * wp, 0.0);
                let (top, left) = (g.pad[0], g.pad[1]);
                let width = g.w.min(wp.saturating_sub(left));
                for y in 0..g.h.min(hp.saturating_sub(top)) {
                    padded[(y + top) * wp + left..][..width].copy_from_slice(&xc[y * g.w..][..width]);
                }
                for i in 0..g.kh {
                    for j in 0..g.kw {
                        let block = &padded[i * g.dilation[0] * wp + j * g.dilation[1]..];
                        let dst = &mut cols[row(i * g.kw + j)..][..positions];
                        match g.ow {
                            32 => shifted_rows::<32>(block, wp, dst),
                            16 => shifted_rows::<16>(block, wp, dst),
                            8 => shifted_rows::<8>(block, wp, dst),
                            4 => shifted_rows::<4>(block, wp, dst),
                            2 => shifted_rows::<2>(block, wp, dst),
                            ow => {
                                for (oy, out) in dst.chunks_exact_mut(ow).enumerate() {
                                    out.copy_from_slice(&block[oy * wp..][..ow]);
                                }
                            }
                        }
                    }
                }
            }
            Patches::Permute(_) => unreachable!("a permuted plane is read by `permuted_rows`"),
            Patches::Rows { rows, columns } => {
                for (i, (oys, row_offset)) in rows.iter().enumerate() {
                    for (j, (oxs, col_offset)) in columns.iter().enumerate() {
                        let dst = &mut cols[row(i * g.kw + j)..][..positions];
                        for oy in 0..g.oh {
                            let out_row = &mut dst[oy * g.ow..(oy + 1) * g.ow];
                            if !oys.contains(&oy) || oxs.is_empty() {
                                out_row.fill(0.0);
                                continue;
                            }
                            let iy = (oy * g.stride[0]) as isize + row_offset;
                            let src = &xc[iy as usize * g.w..(iy as usize + 1) * g.w];
                            out_row[..oxs.start].fill(0.0);
                            out_row[oxs.end..].fill(0.0);
                            let first = ((oxs.start * g.stride[1]) as isize + col_offset) as usize;
                            if g.stride[1] == 1 {
                                out_row[oxs.clone()].copy_from_slice(&src[first..first + oxs.len()]);
                            } else {
                                for (k, v) in out_row[oxs.clone()].iter_mut().enumerate() {
                                    *v = src[first + k * g.stride[1]];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Channel `c`'s patch rows of `count` examples side by side (see [`Patches::channel_dispatch`])
/// from [`Patches::Permute`]'s `taps`: per example, the plane loaded into one register, and per
/// tap one masked permutation of it stored as the tap's row.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn permuted_rows(taps: &[([u32; 16], u16)], g: &Geometry, x: &[f32], count: usize, c: usize, rows: &mut [f32]) {
    use std::arch::x86_64::*;
    let (plane, positions) = (g.plane(), g.positions());
    let ld = count * positions;
    assert!(plane <= 16 && positions <= 16 && rows.len() >= taps.len() * ld && x.len() >= ((count - 1) * g.c_in + c + 1) * plane);
    let (plane_lanes, row_lanes) = (((1u32 << plane) - 1) as u16, ((1u32 << positions) - 1) as u16);
    for e in 0..count {
        // SAFETY: the masked load reads the plane's `plane` values, inside x (asserted above);
        // each masked store writes `positions` values of row t at column e·positions, inside
        // `rows` ([taps, ld], asserted above).
        unsafe {
            let values = _mm512_maskz_loadu_ps(plane_lanes, x.as_ptr().add((e * g.c_in + c) * plane));
            for (t, (lanes, inside)) in taps.iter().enumerate() {
                let index = _mm512_loadu_si512(lanes.as_ptr().cast());
                _mm512_mask_storeu_ps(rows.as_mut_ptr().add(t * ld + e * positions), row_lanes, _mm512_maskz_permutexvar_ps(*inside, index, values));
            }
        }
    }
}

/// `dst`'s rows of W values, each from the next row (of `stride` values) of `block`: W a
/// constant so that each row is a few vector moves.
#[inline(always)]
fn shifted_rows<const W: usize>(block: &[f32], stride: usize, dst: &mut [f32]) {
    for (oy, out) in dst.chunks_exact_mut(W).enumerate() {
        let src: &[f32; W] = block[oy * stride..][..W].try_into().expect("W values");
        out.copy_from_slice(src);
    }
}

/// Adds the patches in columns `col0..col0 + positions` of `cols` (a [patch_rows, ld] matrix)
/// back into `dx` (one example's [C, H, W], the group's channels starting at `c0`): the
/// transpose of [`Patches::fill`].
fn col2im(g: &Geometry, cols: &[f32], ld: usize, col0: usize, c0: usize, dx: &mut [f32]) {
    let (plane, positions) = (g.plane(), g.positions());
    for c in 0..g.in_per_group() {
        let dxc = &mut dx[(c0 + c) * plane..(c0 + c + 1) * plane];
        for i in 0..g.kh {
            let (rows, row_offset) = g.valid(0, i, g.h, g.oh);
            for j in 0..g.kw {
                let (columns, col_offset) = g.valid(1, j, g.w, g.ow);
                if columns.is_empty() {
                    continue;
                }
                let src = &cols[((c * g.kh + i) * g.kw + j) * ld + col0..][..positions];
                for oy in rows.clone() {
                    let iy = ((oy * g.stride[0]) as isize + row_offset) as usize;
                    let dst = &mut dxc[iy * g.w..(iy + 1) * g.w];
                    let from = &src[oy * g.ow + columns.start..oy * g.ow + columns.end];
                    let first = ((columns.start * g.stride[1]) as isize + col_offset) as usize;
                    if g.stride[1] == 1 {
                        for (d, v) in dst[first..first + from.len()].iter_mut().zip(from) {
                            *d += v;
                        }
                    } else {
                        for (k, v) in from.iter().enumerate() {
                            dst[first + k * g.stride[1]] += v;
                        }
                    }
                }
            }
        }
    }
}

/// Channels `c0..c0 + rows` of `count` consecutive [C, positions] examples in `src`, side by
/// side as a [rows, count·positions] matrix (example e in columns e·positions…): one example's
/// own rows in place, several laid out in `buffer`.
fn side_by_side<'a>(src: &'a [f32], channels: usize, c0: usize, rows: usize, positions: usize, count: usize, buffer: &'a mut Vec<f32>) -> &'a [f32] {
    if count == 1 {
        return &src[c0 * positions..][..rows * positions];
    }
    let width = count * positions;
    let buffer = at_least(buffer, rows * width);
    for (r, row) in buffer.chunks_exact_mut(width).enumerate() {
        for (e, part) in row.chunks_exact_mut(positions).enumerate() {
            part.copy_from_slice(&src[(e * channels + c0 + r) * positions..][..positions]);
        }
    }
    buffer
}

/// The inverse of [`side_by_side`]: a [rows, count·positions] matrix written back into
/// channels `c0..c0 + rows` of `count` [C, positions] examples, plus each channel's bias.
fn apart(src: &[f32], channels: usize, c0: usize, rows: usize, positions: usize, count: usize, bias: Option<&[f32]>, dst: &mut [f32]) {
    let width = count * positions;
    for (r, row) in src[..rows * width].chunks_exact(width).enumerate() {
        let b = bias.map_or(0.0, |b| b[c0 + r]);
        for (e, part) in row.chunks_exact(positions).enumerate() {
            let out = &mut dst[(e * channels + c0 + r) * positions..][..positions];
            if bias.is_some() {
                out.iter_mut().zip(part).for_each(|(o, v)| *o = v + b);
            } else {
                out.copy_from_slice(part);
            }
        }
    }
}

/// A row-major [rows, cols] matrix view (or its transpose) for `gemm`.
#[derive(Clone, Copy)]
struct Mat {
    ptr: *const f32,
    /// Strides of (row, column).
    rs: isize,
    cs: isize,
}

// SAFETY: a read-only view of a slice that outlives every product reading it.
unsafe impl Send for Mat {}
unsafe impl Sync for Mat {}

impl Mat {
    fn rows(slice: &[f32], cols: usize) -> Self {
        Self { ptr: slice.as_ptr(), rs: cols as isize, cs: 1 }
    }
    fn t(self) -> Self {
        Self { ptr: self.ptr, rs: self.cs, cs: self.rs }
    }
    /// The view from column `j` on.
    fn from_column(self, j: usize) -> Self {
        Self { ptr: self.ptr.wrapping_offset(j as isize * self.cs), ..self }
    }
}

/// dst [m, n] (row-major, `accumulate`: += instead of =) = lhs [m, k] · rhs [k, n].
fn matmul(dst: &mut [f32], m: usize, n: usize, k: usize, lhs: Mat, rhs: Mat, accumulate: bool, parallelism: Parallelism) {
    gemm_into(dst, [n as isize, 1], m, n, k, lhs, rhs, accumulate, parallelism);
}

/// [`matmul`] with dst written column-major (element (i, j) at j·m + i): the layout to ask for
/// when both operands run along k. gemm works on a column-major dst (it swaps the operands of
/// a row-major one) and copies its left operand into m-contiguous panels, element by element
/// where that operand runs along k. With a row-major dst the copied one would be rhs: for a
/// weight gradient (δy [64, 1024] · cols [576, 1024]ᵀ) the patch matrix, nine times δy's size,
/// at 1.63 ms a product against 0.40 ms this way (one thread).
fn matmul_col_major(dst: &mut [f32], m: usize, n: usize, k: usize, lhs: Mat, rhs: Mat, accumulate: bool, parallelism: Parallelism) {
    gemm_into(dst, [1, m as isize], m, n, k, lhs, rhs, accumulate, parallelism);
}

/// dst (strides `[row, column]`) = lhs · rhs, as gemm computes it.
fn gemm_into(dst: &mut [f32], [dst_rs, dst_cs]: [isize; 2], m: usize, n: usize, k: usize, lhs: Mat, rhs: Mat, accumulate: bool, parallelism: Parallelism) {
    assert!(dst.len() >= m * n);
    // SAFETY: every view was built from a slice holding its [rows, cols] extent (checked by the
    // callers' slicing), and dst is an exclusive buffer of m·n elements in those strides.
    unsafe { gemm_raw(dst.as_mut_ptr(), [dst_rs, dst_cs], m, n, k, lhs, rhs, accumulate, parallelism) }
}

/// `gemm` on raw views.
///
/// # Safety
/// `dst` must be valid for writes (and reads, with `accumulate`) over its m × n extent in its
/// strides, with no other access meanwhile; `lhs` and `rhs` valid for reads over theirs.
unsafe fn gemm_raw(dst: *mut f32, [dst_rs, dst_cs]: [isize; 2], m: usize, n: usize, k: usize, lhs: Mat, rhs: Mat, accumulate: bool, parallelism: Parallelism) {
    // SAFETY: as the caller promises.
    unsafe { gemm::gemm(m, n, k, dst, dst_cs, dst_rs, accumulate, lhs.ptr, lhs.cs, lhs.rs, rhs.ptr, rhs.cs, rhs.rs, 1.0f32, 1.0f32, false, false, false, parallelism) }
}

/// `src` ([rows, cols], row-major) transposed into `dst` ([cols, rows]). With AVX, in 8 × 8
/// tiles (eight row loads, an in-register transpose, eight stores): the element-by-element
/// form was 4 % of ResNet-18's step, mostly the weight gradient's per-example δy transposes.
/// Edges, and CPUs without AVX, go through [`transpose_part`].
fn transpose_into(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    transpose_strided(&src[..rows * cols], cols, rows, cols, &mut dst[..rows * cols], rows);
}

/// [`transpose_into`] of a block: `src` [rows, cols] with rows `src_rs` apart into `dst`
/// [cols, rows] with rows `dst_rs` apart (the taps' per-block kernel layouts, [`taps`]).
fn transpose_strided(src: &[f32], src_rs: usize, rows: usize, cols: usize, dst: &mut [f32], dst_rs: usize) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(src.len() >= (rows - 1) * src_rs + cols && dst.len() >= (cols - 1) * dst_rs + rows && src_rs >= cols && dst_rs >= rows);
    #[cfg(target_arch = "x86_64")]
    if rows >= 8 && cols >= 8 && std::arch::is_x86_feature_detected!("avx") {
        let (r8, c8) = (rows / 8 * 8, cols / 8 * 8);
        // SAFETY: the CPU has AVX; every tile lies inside both blocks (r8 ≤ rows, c8 ≤ cols),
        // which lie inside the slices (asserted above).
        unsafe { transpose_tiles_avx(src, src_rs, r8, c8, dst, dst_rs) };
        // The last columns of the tiled rows, then the last rows whole.
        transpose_part(src, src_rs, 0..r8, c8..cols, dst, dst_rs);
        transpose_part(src, src_rs, r8..rows, 0..cols, dst, dst_rs);
        return;
    }
    // Without vector shuffles: in bands of 64 source rows, each destination row's run written
    // in order while the band's source lines stay in L1.
    const BAND: usize = 64;
    for r0 in (0..rows).step_by(BAND) {
        transpose_part(src, src_rs, r0..(r0 + BAND).min(rows), 0..cols, dst, dst_rs);
    }
}

/// The source rows `rs` × columns `cs` of [`transpose_strided`], one destination run at a time.
fn transpose_part(src: &[f32], src_rs: usize, rs: std::ops::Range<usize>, cs: std::ops::Range<usize>, dst: &mut [f32], dst_rs: usize) {
    if rs.is_empty() {
        return;
    }
    for c in cs {
        let run = &mut dst[c * dst_rs + rs.start..][..rs.len()];
        for (v, r) in run.iter_mut().zip(rs.clone()) {
            *v = src[r * src_rs + c];
        }
    }
}

/// The 8 × 8 tiles of rows `..r8` and columns `..c8` (multiples of 8) of [`transpose_strided`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn transpose_tiles_avx(src: &[f32], src_rs: usize, r8: usize, c8: usize, dst: &mut [f32], dst_rs: usize) {
    use std::arch::x86_64::*;
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    for r0 in (0..r8).step_by(8) {
        for c0 in (0..c8).step_by(8) {
            // SAFETY (all pointer arithmetic): rows r0..r0 + 8 ≤ r8 and columns c0..c0 + 8 ≤ c8
            // of the src block, and the same transposed of the dst block, both inside the slices.
            let at = unsafe { s.add(r0 * src_rs + c0) };
            let r = unsafe { [0, 1, 2, 3, 4, 5, 6, 7].map(|i| _mm256_loadu_ps(at.add(i * src_rs))) };
            // Pairs of rows interleaved, then pairs of pairs: lane halves hold columns j and j + 4.
            let t = [
                _mm256_unpacklo_ps(r[0], r[1]),
                _mm256_unpackhi_ps(r[0], r[1]),
                _mm256_unpacklo_ps(r[2], r[3]),
                _mm256_unpackhi_ps(r[2], r[3]),
                _mm256_unpacklo_ps(r[4], r[5]),
                _mm256_unpackhi_ps(r[4], r[5]),
                _mm256_unpacklo_ps(r[6], r[7]),
                _mm256_unpackhi_ps(r[6], r[7]),
            ];
            let q = [
                _mm256_shuffle_ps::<0x44>(t[0], t[2]),
                _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
                _mm256_shuffle_ps::<0x44>(t[1], t[3]),
                _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
                _mm256_shuffle_ps::<0x44>(t[4], t[6]),
                _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
                _mm256_shuffle_ps::<0x44>(t[5], t[7]),
                _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
            ];
            let columns = [
                _mm256_permute2f128_ps::<0x20>(q[0], q[4]),
                _mm256_permute2f128_ps::<0x20>(q[1], q[5]),
                _mm256_permute2f128_ps::<0x20>(q[2], q[6]),
                _mm256_permute2f128_ps::<0x20>(q[3], q[7]),
                _mm256_permute2f128_ps::<0x31>(q[0], q[4]),
                _mm256_permute2f128_ps::<0x31>(q[1], q[5]),
                _mm256_permute2f128_ps::<0x31>(q[2], q[6]),
                _mm256_permute2f128_ps::<0x31>(q[3], q[7]),
            ];
            for (j, column) in columns.into_iter().enumerate() {
                unsafe { _mm256_storeu_ps(d.add((c0 + j) * dst_rs + r0), column) };
            }
        }
    }
}

/// Whether the products inside one example should use the pool (a batch of one).
fn inner_parallelism(batch: usize) -> Parallelism {
    if batch == 1 && rayon::current_num_threads() > 1 { Parallelism::Rayon(0) } else { Parallelism::None }
}

/// A `len`-element output filled by parallel tasks, `chunk` elements each (the last may be
/// shorter): `fill` gets the task's scratch (from `init`), the chunk's index and the chunk,
/// zeroed.
///
/// The output is allocated uninitialised and each task zeroes its own chunk as it starts,
/// instead of `vec![0.0; len]`: that zero-fill ran on one thread over the whole output, out of
/// cache (the convnet's first convolution: 8 MB, memsets were 10 % of an information-alignment
/// step), while a task's chunk is zeroed in parallel and is still in cache when its products
/// write it.
pub(crate) fn filled_by_chunks<S>(len: usize, chunk: usize, init: impl Fn() -> S + Sync + Send, fill: impl Fn(&mut S, usize, &mut [f32]) + Sync + Send) -> Vec<f32> {
    if len == 0 {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len].par_chunks_mut(chunk).enumerate().for_each_init(init, |scratch, (i, c)| fill(scratch, i, zeroed(c)));
    // SAFETY: the chunks cover all `len` elements, and `zeroed` initialised each.
    unsafe { out.set_len(len) };
    out
}

/// `chunk` filled with zeros, as the initialised slice it then is.
fn zeroed(chunk: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    for v in chunk.iter_mut() {
        v.write(0.0);
    }
    // SAFETY: every element was just written, and MaybeUninit<f32> has f32's layout.
    unsafe { &mut *(chunk as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// `buffer`'s first `len` floats, grown (never shrunk) to hold them: with a kept buffer the
/// zero-fill of growing it is paid once, not on every call.
pub(super) fn at_least(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    &mut buffer[..len]
}

/// Largest scratch buffer a thread keeps (512 KiB): what the small convolutions need, whose
/// calls the allocation dominated. Larger ones are freed, as their products outweigh their
/// allocation, and kept they add to every later peak of memory: with no bound knet4's peak at
/// 32 px rose from 28 to 34.5 MiB; with this one it is 29.5–30.
const KEPT_SCRATCH_FLOATS: usize = 1 << 17;

thread_local! {
    static SCRATCH: std::cell::Cell<[Vec<f32>; 3]> = std::cell::Cell::default();
}

/// A task's scratch buffers (patch matrices, products before they are written apart, δy side by
/// side), kept by each thread between tasks and calls: taken from the thread as a task starts
/// and given back when dropped. Allocated per task, each was zero-filled on every call, and
/// page-faulted in where it was large: a quarter of the ConvRNN quick start's 4 × 4 weight
/// gradient. A task that runs inside another's wait on the same thread finds none and
/// allocates its own.
pub(super) struct Scratch(pub(super) [Vec<f32>; 3]);

impl Scratch {
    pub(super) fn take() -> Self {
        Self(SCRATCH.take())
    }
}

impl Drop for Scratch {
    /// Gives the buffers back to the thread, all but those over [`KEPT_SCRATCH_FLOATS`].
    fn drop(&mut self) {
        let mut kept = std::mem::take(&mut self.0);
        for buffer in &mut kept {
            if buffer.capacity() > KEPT_SCRATCH_FLOATS {
                *buffer = Vec::new();
            }
        }
        SCRATCH.set(kept);
    }
}

/// `conv2d(x, weight) + bias` with x [N, C_in, H, W], weight [C_out, C_in/g, kh, kw].
pub fn forward(g: &Geometry, x: &[f32], weight: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    if taps::suits(g) {
        return taps::forward(g, x, weight, bias);
    }
    if winograd::suits(g) {
        return winograd::forward(g, x, weight, bias);
    }
    let (positions, rows, opg) = (g.positions(), g.patch_rows(), g.out_per_group());
    let (x_size, y_size) = (g.c_in * g.plane(), g.c_out * positions);
    let len = g.batch * y_size;
    if len == 0 {
        return Vec::new();
    }
    let per = g.examples_per_task();
    let parallelism = inner_parallelism(g.batch.div_ceil(per));
    let parallel = matches!(parallelism, Parallelism::Rayon(_));
    let patches = Patches::new(g);
    filled_by_chunks(
        len,
        per * y_size,
        Scratch::take,
        |Scratch([cols, out, _]), chunk, y_chunk| {
            let count = y_chunk.len() / y_size;
            let width = count * positions;
            let x_chunk = &x[chunk * per * x_size..][..count * x_size];
            if let (1, Some(b)) = (count, bias) {
                for (c, out) in y_chunk.chunks_mut(positions).enumerate() {
                    out.fill(b[c]);
                }
            }
            for group in 0..g.groups {
                let w = Mat::rows(&weight[group * opg * rows..][..opg * rows], rows);
                let patch_matrix = Mat::rows(patches.matrix(g, x_chunk, count, group, cols, parallel), width);
                if count == 1 {
                    let out = &mut y_chunk[group * opg * positions..][..opg * positions];
                    matmul(out, opg, positions, rows, w, patch_matrix, bias.is_some(), parallelism);
                } else {
                    let out = at_least(out, opg * width);
                    matmul(out, opg, width, rows, w, patch_matrix, false, parallelism);
                    apart(out, g.c_out, group * opg, opg, positions, count, bias, y_chunk);
                }
            }
        },
    )
}

/// The kernel of [`Geometry::transposed`]: K'[g·C_in/g + c, o, i, j] = K[g·C_out/g + o, c,
/// kh − 1 − i, kw − 1 − j] for every group g.
fn flipped_transpose(g: &Geometry, kernel: &[f32]) -> Vec<f32> {
    let (ipg, opg, taps) = (g.in_per_group(), g.out_per_group(), g.kh * g.kw);
    let mut out = vec![0.0f32; kernel.len()];
    for group in 0..g.groups {
        for o in 0..opg {
            for c in 0..ipg {
                let src = &kernel[((group * opg + o) * ipg + c) * taps..][..taps];
                let dst = &mut out[((group * ipg + c) * opg + o) * taps..][..taps];
                for (t, v) in src.iter().enumerate() {
                    dst[taps - 1 - t] = *v;
                }
            }
        }
    }
    out
}

/// δx of `conv2d(x, kernel)` for δy [N, C_out, H_out, W_out]: the transposed convolution of δy
/// with `kernel`, shaped like x. With stride 1 it is a forward convolution of δy (one product
/// of depth C_out·kh·kw per example); otherwise Kᵀ·δy_n (depth C_out) scattered back by col2im.
pub fn input_grad(g: &Geometry, kernel: &[f32], dy: &[f32]) -> Vec<f32> {
    if taps::suits(g) {
        return taps::input_grad(g, kernel, dy);
    }
    // As a convolution of δy, the patch matrices hold C_out·k² rows per input position; col2im's
    // columns hold C_in·k² per output position. Where C_out > 2·C_in col2im moves the fewer
    // floats: the image layer's Bᵀŷ of information alignment (32 → 3 channels at 32 px) fell
    // from 3.0 to 1.1 ms a call, AlexNet's second layer's δx (192 → 64 channels, 5×5) from 50
    // to 38 ms; at equal widths the convolution is faster (ResNet-18 at 16×16: 18.2 against
    // 21.3 ms). The flipped kernel is a copy of the kernel: where it outweighs δy's patch
    // matrices (C_out > N·H_out·W_out, the ConvRNNs' 512-channel cells at 2×2) col2im costs
    // less too. Where Winograd serves the transposed convolution it is taken at any widths:
    // AlexNet's second layer's δx went from col2im's 42 ms to 26.
    if let Some(t) = g.transposed().filter(|t| winograd::suits(t) || g.c_out <= 2 * g.c_in && g.c_out <= g.batch * g.positions()) {
        return forward(&t, dy, &flipped_transpose(g, kernel), None);
    }
    input_grad_col2im(g, kernel, dy)
}

/// [`input_grad`] as Kᵀ·δy_n and col2im, for every stride.
fn input_grad_col2im(g: &Geometry, kernel: &[f32], dy: &[f32]) -> Vec<f32> {
    let (positions, rows, opg) = (g.positions(), g.patch_rows(), g.out_per_group());
    let (x_size, y_size) = (g.c_in * g.plane(), g.c_out * positions);
    let len = g.batch * x_size;
    if positions == 0 || len == 0 {
        return vec![0.0; len];
    }
    let per = g.examples_per_task();
    let parallelism = inner_parallelism(g.batch.div_ceil(per));
    filled_by_chunks(
        len,
        per * x_size,
        Scratch::take,
        |Scratch([cols, dy_side, _]), chunk, dx_chunk| {
            let count = dx_chunk.len() / x_size;
            let width = count * positions;
            let dy_chunk = &dy[chunk * per * y_size..][..count * y_size];
            for group in 0..g.groups {
                let k = Mat::rows(&kernel[group * opg * rows..][..opg * rows], rows).t();
                let d = Mat::rows(side_by_side(dy_chunk, g.c_out, group * opg, opg, positions, count, dy_side), width);
                if g.is_pointwise() && count == 1 {
                    let out = &mut dx_chunk[group * rows * positions..][..rows * positions];
                    matmul(out, rows, positions, opg, k, d, false, parallelism);
                    continue;
                }
                let cols = at_least(cols, rows * width);
                matmul(cols, rows, width, opg, k, d, false, parallelism);
                if g.is_pointwise() {
                    apart(cols, g.c_in, group * rows, rows, positions, count, None, dx_chunk);
                } else {
                    for e in 0..count {
                        col2im(g, cols, width, e * positions, group * g.in_per_group(), &mut dx_chunk[e * x_size..][..x_size]);
                    }
                }
            }
        },
    )
}

/// δW of `conv2d(x, W)` for δy [N, C_out, H_out, W_out]: Σ_n δy_n · cols(x_n)ᵀ, shaped like W.
/// A small δW sums the batch in [`WEIGHT_GRAD_CHUNKS`] chunks in parallel, each into its own
/// buffer, added in order at the end; one of [`WHOLE_BATCH_WEIGHT_GRAD_FROM`] elements or more
/// sums the whole batch into one buffer, the threads splitting δW's columns instead
/// ([`weight_grad_by_channel_blocks`]; eight copies of ResNet-18's 9 MB last-stage kernel would
/// cost more to add than to compute);
/// where that kernel also outweighs a product's patch matrix, the patch matrix is transposed
/// rather than the result (for the RGC cells' 512-channel kernels at 2×2 a call took 4.65 ms
/// against the forward's 2.26, the result's transpose and second 9 MB buffer included).
pub fn weight_grad(g: &Geometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    if taps::suits(g) {
        return taps::weight_grad(g, x, dy);
    }
    if winograd::suits_weight_grad(g) {
        return winograd::weight_grad(g, x, dy);
    }
    let (positions, rows, opg) = (g.positions(), g.patch_rows(), g.out_per_group());
    let (x_size, y_size) = (g.c_in * g.plane(), g.c_out * positions);
    let size = g.c_out * rows;
    if positions == 0 || g.batch == 0 || size == 0 {
        return vec![0.0; size];
    }
    let chunks = if size >= WHOLE_BATCH_WEIGHT_GRAD_FROM { 1 } else { WEIGHT_GRAD_CHUNKS.min(g.batch) };
    let chunk = g.batch.div_ceil(chunks);
    let per = g.examples_per_product().min(chunk);
    let parallelism = inner_parallelism(g.batch.div_ceil(chunk));
    let parallel = matches!(parallelism, Parallelism::Rayon(_));
    // Where the kernel outweighs a product's patch matrix (C_out/g > its columns: a large kernel
    // over few positions, as the ConvRNNs' 512-channel cells at 2×2) the patch matrix is
    // transposed instead of the result: the product is written straight in δW's layout.
    let patches_transposed = chunks == 1 && opg > per * positions;
    let patches = Patches::new(g);
    if chunks == 1 && !patches_transposed {
        return weight_grad_by_channel_blocks(g, x, dy, &patches);
    }
    let partial: Vec<Vec<f32>> = (0..g.batch.div_ceil(chunk))
        .into_par_iter()
        .map(|c| {
            let mut dw = vec![0.0f32; size];
            let mut scratch = Scratch::take();
            let Scratch([cols, dy_side, cols_t]) = &mut scratch;
            let end = ((c + 1) * chunk).min(g.batch);
            for (step, n0) in (c * chunk..end).step_by(per).enumerate() {
                let count = per.min(end - n0);
                let width = count * positions;
                let (x_chunk, dy_chunk) = (&x[n0 * x_size..][..count * x_size], &dy[n0 * y_size..][..count * y_size]);
                for group in 0..g.groups {
                    let patch_matrix = patches.matrix(g, x_chunk, count, group, cols, parallel);
                    if patches_transposed {
                        // δW_g [C_out/g, rows] row-major is [rows, C_out/g] column-major: cols · δyᵀ,
                        // with cols read from its transpose [width, rows] (m-contiguous for gemm).
                        let cols_t = at_least(cols_t, rows * width);
                        transpose_into(patch_matrix, rows, width, cols_t);
                        let d = side_by_side(dy_chunk, g.c_out, group * opg, opg, positions, count, dy_side);
                        let out = &mut dw[group * opg * rows..(group + 1) * opg * rows];
                        matmul_col_major(out, rows, opg, width, Mat::rows(&cols_t, rows).t(), Mat::rows(d, width).t(), step > 0, parallelism);
                        continue;
                    }
                    // δy transposed ([width, C_out/g]), so that it runs along C_out, and the
                    // product column-major: with both operands along the positions gemm would
                    // copy one into shape element by element (see matmul_col_major).
                    let dy_side = at_least(dy_side, opg * width);
                    for e in 0..count {
                        transpose_into(&dy_chunk[(e * g.c_out + group * opg) * positions..][..opg * positions], opg, positions, &mut dy_side[e * positions * opg..][..positions * opg]);
                    }
                    let d = Mat::rows(dy_side, opg).t();
                    let out = &mut dw[group * opg * rows..(group + 1) * opg * rows];
                    matmul_col_major(out, opg, rows, width, d, Mat::rows(patch_matrix, width).t(), step > 0, parallelism);
                }
            }
            dw
        })
        .collect();
    let mut parts = partial.into_iter();
    let mut total = parts.next().expect("at least one chunk");
    if patches_transposed {
        return total;
    }
    for part in parts {
        total.iter_mut().zip(&part).for_each(|(t, p)| *t += p);
    }
    // Each group's block back from [rows, C_out/g] to [C_out/g, rows].
    let mut dw = vec![0.0f32; size];
    for (src, dst) in total.chunks_exact(opg * rows).zip(dw.chunks_exact_mut(opg * rows)) {
        transpose_into(src, rows, opg, dst);
    }
    dw
}

/// [`weight_grad`] of a large kernel in one parallel region: its columns (the patch rows) split
/// into [`WEIGHT_GRAD_CHANNEL_BLOCKS`] blocks of input channels per group, each task summing the
/// whole batch into its own block of δW from that block's patch rows, with δy transposed once for
/// all of them. Summed with the threads splitting each example's product instead (one fork-join
/// per product, with the patch matrix and δy's transposes between them on one thread), the
/// second thread slept through a fifth of AlexNet's step: each product woke it again.
fn weight_grad_by_channel_blocks(g: &Geometry, x: &[f32], dy: &[f32], patches: &Patches) -> Vec<f32> {
    let (positions, rows, opg, ipg, taps) = (g.positions(), g.patch_rows(), g.out_per_group(), g.in_per_group(), g.kh * g.kw);
    let (x_size, y_size) = (g.c_in * g.plane(), g.c_out * positions);
    let per = g.examples_per_product();
    // δy transposed, group by group: [groups][batch · positions, C_out/g], so that a product's
    // examples are consecutive rows (as `side_by_side` would lay them out).
    let dy_t = filled_by_chunks(g.batch * y_size, positions * opg, || (), |_, i, dst| {
        let (group, n) = (i / g.batch, i % g.batch);
        transpose_into(&dy[(n * g.c_out + group * opg) * positions..][..opg * positions], opg, positions, dst);
    });
    // δW's groups as [rows, C_out/g] (column-major [C_out/g, rows]); a block of channels owns a
    // contiguous run of its rows. The blocks depend on the shape alone, never on the threads.
    let block = ipg.div_ceil(WEIGHT_GRAD_CHANNEL_BLOCKS);
    let mut total = vec![0.0f32; g.c_out * rows];
    let parts: Vec<(usize, usize, &mut [f32])> = total
        .chunks_mut(opg * rows)
        .enumerate()
        .flat_map(|(group, of_group)| of_group.chunks_mut(block * taps * opg).enumerate().map(move |(b, part)| (group, b * block, part)))
        .collect();
    parts.into_par_iter().for_each_init(
        Scratch::take,
        |Scratch([cols, padded, _]), (group, c_lo, out)| {
            let channels = out.len() / (taps * opg);
            let block_rows = channels * taps;
            let c0 = group * ipg + c_lo;
            for (step, n0) in (0..g.batch).step_by(per).enumerate() {
                let count = per.min(g.batch - n0);
                let width = count * positions;
                let x_chunk = &x[n0 * x_size..][..count * x_size];
                let patch_rows: &[f32] = if g.is_pointwise() {
                    side_by_side(x_chunk, g.c_in, c0, block_rows, positions, count, cols)
                } else {
                    let cols = at_least(cols, block_rows * width);
                    for (c, rows_of_c) in cols.chunks_exact_mut(taps * width).enumerate() {
                        patches.channel_dispatch(g, x_chunk, count, c0 + c, rows_of_c, padded);
                    }
                    cols
                };
                let d = &dy_t[(group * g.batch + n0) * positions * opg..][..width * opg];
                matmul_col_major(out, opg, block_rows, width, Mat::rows(d, opg).t(), Mat::rows(patch_rows, width).t(), step > 0, Parallelism::None);
            }
        },
    );
    // Each group's block back from [rows, C_out/g] to [C_out/g, rows].
    let mut dw = vec![0.0f32; total.len()];
    for (src, dst) in total.chunks_exact(opg * rows).zip(dw.chunks_exact_mut(opg * rows)) {
        transpose_into(src, rows, opg, dst);
    }
    dw
}

/// The flex tensor behind a backend primitive, when the backend is flex and the tensor f32.
pub(crate) fn as_flex<B: Backend>(t: &FloatTensor<B>) -> Option<&FlexTensor> {
    (t as &dyn std::any::Any).downcast_ref::<FlexTensor>().filter(|t| t.dtype() == DType::F32)
}

/// Whether `t` is an f32 flex tensor (whose convolutions [`try_forward`] and kin run).
pub fn is_flex<B: Backend>(t: &FloatTensor<B>) -> bool {
    as_flex::<B>(t).is_some()
}

/// A contiguous f32 copy-free view, or a contiguous copy.
pub(crate) fn values(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    match t.layout().contiguous_offsets() {
        Some((start, end)) => std::borrow::Cow::Borrowed(&t.storage::<f32>()[start..end]),
        None => std::borrow::Cow::Owned(t.to_contiguous().storage::<f32>().to_vec()),
    }
}

pub(crate) fn to_primitive<B: Backend>(values: Vec<f32>, shape: impl Into<Shape>) -> FloatTensor<B> {
    let t = FlexTensor::from_data(TensorData::new(values, shape.into()));
    *(Box::new(t) as Box<dyn std::any::Any>).downcast::<FloatTensor<B>>().expect("called only when B is flex")
}

/// `op(lhs) · op(rhs)` for two f32 flex matrices, op being the transpose where asked, or
/// `None` for another backend or dtype. The transposes are read in place (gemm takes any
/// strides): burn-flex's matmul first copies a transposed operand into a contiguous one, which
/// for a dense layer's backward (δy·Bᵀ, xᵀ·δy) cost as much as the products.
pub fn try_dense_product<B: Backend>(lhs: &FloatTensor<B>, lhs_transposed: bool, rhs: &FloatTensor<B>, rhs_transposed: bool) -> Option<FloatTensor<B>> {
    let (lf, rf) = (as_flex::<B>(lhs)?, as_flex::<B>(rhs)?);
    let (ls, rs) = (lf.layout().shape(), rf.layout().shape());
    if ls.num_dims() != 2 || rs.num_dims() != 2 {
        return None;
    }
    let (lhs_values, rhs_values) = (values(lf), values(rf));
    let view = |v: &[f32], cols: usize, transposed: bool| {
        if transposed { Mat::rows(v, cols).t() } else { Mat::rows(v, cols) }
    };
    let (m, k) = if lhs_transposed { (ls[1], ls[0]) } else { (ls[0], ls[1]) };
    let (k_rhs, n) = if rhs_transposed { (rs[1], rs[0]) } else { (rs[0], rs[1]) };
    if k != k_rhs {
        return None;
    }
    let mut out = vec![0.0f32; m * n];
    if m * n > 0 && k > 0 {
        let (lhs, rhs) = (view(&lhs_values, ls[1], lhs_transposed), view(&rhs_values, rs[1], rhs_transposed));
        if !lhs_transposed && rhs_transposed {
            // Both run along k (δy·Bᵀ): column-major, then transposed (see matmul_col_major).
            let mut col_major = vec![0.0f32; m * n];
            product_by_columns(&mut col_major, [1, m as isize], m, n, k, lhs, rhs);
            transpose_into(&col_major, n, m, &mut out);
        } else {
            product_by_columns(&mut out, [n as isize, 1], m, n, k, lhs, rhs);
        }
    }
    Some(to_primitive::<B>(out, [m, n]))
}

/// Columns of a dense product per task in [`product_by_columns`].
const DENSE_COLUMN_BLOCK: usize = 256;

/// dst (strides `[row, column]`) = lhs · rhs, its columns in blocks of [`DENSE_COLUMN_BLOCK`],
/// each block one single-threaded product on the pool. A dense layer's forward at batch 64
/// (AlexNet's fc7: 64 × 4096 · 4096 × 4096) is bound by reading W: split inside gemm, both
/// threads read all of W for half the outputs each, and the dense forwards took longer on two
/// threads than on one (29 against 23 ms a step); by columns each task reads its own columns of
/// W. The blocks depend on the shape alone, so the threads never change the result.
fn product_by_columns(dst: &mut [f32], [dst_rs, dst_cs]: [isize; 2], m: usize, n: usize, k: usize, lhs: Mat, rhs: Mat) {
    assert!(dst.len() >= m * n);
    if n < 2 * DENSE_COLUMN_BLOCK {
        let parallelism = if rayon::current_num_threads() > 1 { Parallelism::Rayon(0) } else { Parallelism::None };
        return gemm_into(dst, [dst_rs, dst_cs], m, n, k, lhs, rhs, false, parallelism);
    }
    let out = SharedOutput(dst.as_mut_ptr());
    (0..n.div_ceil(DENSE_COLUMN_BLOCK)).into_par_iter().for_each(|b| {
        let (j0, width) = (b * DENSE_COLUMN_BLOCK, DENSE_COLUMN_BLOCK.min(n - b * DENSE_COLUMN_BLOCK));
        // SAFETY: dst holds the m × n extent in these strides (checked above); block b writes
        // only its columns j0..j0 + width, which no other block touches; lhs and rhs are views of
        // slices that outlive the call, only read.
        unsafe { gemm_raw(out.at(j0 as isize * dst_cs), [dst_rs, dst_cs], m, width, k, lhs, rhs.from_column(j0), false, Parallelism::None) }
    });
}

/// A product's output shared by tasks that write disjoint parts of it ([`product_by_columns`]).
#[derive(Clone, Copy)]
struct SharedOutput(*mut f32);

// SAFETY: the tasks holding it write disjoint elements, and the buffer outlives them.
unsafe impl Send for SharedOutput {}
unsafe impl Sync for SharedOutput {}

impl SharedOutput {
    fn at(self, offset: isize) -> *mut f32 {
        self.0.wrapping_offset(offset)
    }
}

/// `conv2d(x, weight, bias)` on flex, or `None` for another backend or dtype.
pub fn try_forward<B: Backend>(x: &FloatTensor<B>, weight: &FloatTensor<B>, bias: Option<&FloatTensor<B>>, options: &ConvOptions<2>) -> Option<FloatTensor<B>> {
    let (xf, wf) = (as_flex::<B>(x)?, as_flex::<B>(weight)?);
    let bias = match bias {
        Some(b) => Some(values(as_flex::<B>(b)?)),
        None => None,
    };
    let g = Geometry::new(xf.layout().shape(), wf.layout().shape(), options)?;
    let y = forward(&g, &values(xf), &values(wf), bias.as_deref());
    Some(to_primitive::<B>(y, [g.batch, g.c_out, g.oh, g.ow]))
}

/// The flex tensors of a gradient's operands and their geometry, when all are flex f32 and δy
/// has the output's shape.
fn gradient_operands<'a, B: Backend>(x: &'a FloatTensor<B>, kernel: &'a FloatTensor<B>, dy: &'a FloatTensor<B>, options: &ConvOptions<2>) -> Option<(Geometry, [&'a FlexTensor; 3])> {
    let (xf, kf, df) = (as_flex::<B>(x)?, as_flex::<B>(kernel)?, as_flex::<B>(dy)?);
    let g = Geometry::new(xf.layout().shape(), kf.layout().shape(), options)?;
    (df.layout().shape().as_slice() == [g.batch, g.c_out, g.oh, g.ow]).then_some((g, [xf, kf, df]))
}

/// δx through `kernel` on flex, or `None` for another backend or dtype.
pub fn try_input_grad<B: Backend>(x: &FloatTensor<B>, kernel: &FloatTensor<B>, dy: &FloatTensor<B>, options: &ConvOptions<2>) -> Option<FloatTensor<B>> {
    let (g, [_, kf, df]) = gradient_operands::<B>(x, kernel, dy, options)?;
    Some(to_primitive::<B>(input_grad(&g, &values(kf), &values(df)), [g.batch, g.c_in, g.h, g.w]))
}

/// δW (shaped like `kernel`) on flex, or `None` for another backend or dtype.
pub fn try_weight_grad<B: Backend>(x: &FloatTensor<B>, kernel: &FloatTensor<B>, dy: &FloatTensor<B>, options: &ConvOptions<2>) -> Option<FloatTensor<B>> {
    let (g, [xf, _, df]) = gradient_operands::<B>(x, kernel, dy, options)?;
    Some(to_primitive::<B>(weight_grad(&g, &values(xf), &values(df)), [g.c_out, g.in_per_group(), g.kh, g.kw]))
}

/// The bias gradient Σ_{n, y, x} δy[n, c, y, x] of an f32 flex δy [N, C, H, W], or `None` for
/// another backend, dtype or rank. burn's generic one swaps δy's first two axes into a
/// contiguous copy before it sums (burn-flex's `copy_2d_tiled`, 4.6 % of the convnet's step);
/// here each channel's planes are summed where they lie, as the batch norm sums them
/// ([`crate::norm::channel_sums`]).
pub fn try_bias_grad<B: Backend>(dy: &FloatTensor<B>) -> Option<FloatTensor<B>> {
    let df = as_flex::<B>(dy)?;
    let shape = df.layout().shape().clone();
    if shape.num_dims() != 4 {
        return None;
    }
    let (batch, channels, plane) = (shape[0], shape[1], shape[2] * shape[3]);
    Some(to_primitive::<B>(crate::norm::channel_sums(&values(df), (batch, channels, plane)), [channels]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution, Tensor};

    /// The tiled transpose (and its scalar edges) against the definition, on shapes with and
    /// without whole 8 × 8 tiles, thin and wide.
    #[test]
    fn transpose_into_transposes_every_shape() {
        let shapes = (1..=19).flat_map(|r| (1..=19).map(move |c| (r, c))).chain([(64, 33), (512, 16), (13, 1024), (16, 4), (100, 9)]);
        for (rows, cols) in shapes {
            let src: Vec<f32> = (0..rows * cols).map(|i| i as f32 * 0.5 - 3.0).collect();
            let mut dst = vec![f32::NAN; rows * cols];
            transpose_into(&src, rows, cols, &mut dst);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(dst[c * rows + r], src[r * cols + c], "{rows}×{cols} at ({r}, {c})");
                }
            }
            // A block of a wider matrix into a block of a taller one; the rest stays untouched.
            let (src_rs, dst_rs) = (cols + 3, rows + 5);
            let wide: Vec<f32> = (0..rows * src_rs).map(|i| i as f32 * 0.25 + 1.0).collect();
            let mut tall = vec![f32::NAN; cols * dst_rs];
            transpose_strided(&wide, src_rs, rows, cols, &mut tall, dst_rs);
            for c in 0..cols {
                for r in 0..dst_rs {
                    let got = tall[c * dst_rs + r];
                    if r < rows {
                        assert_eq!(got, wide[r * src_rs + c], "{rows}×{cols} strided at ({r}, {c})");
                    } else {
                        assert!(got.is_nan(), "{rows}×{cols} strided: ({r}, {c}) written");
                    }
                }
            }
        }
    }

    /// Every kernel of the zoo's shapes against burn's own conv2d and its generic backward
    /// (which run on flex when these return `None`), on random data.
    #[test]
    fn matches_burns_convolution_forward_and_both_gradients() {
        let device = Device::flex().autodiff();
        // (batch, c_in, h, w, c_out, kh, kw, stride, padding (begin, end), dilation, groups)
        let cases: &[(usize, usize, usize, usize, usize, usize, usize, [usize; 2], [(usize, usize); 2], [usize; 2], usize)] = &[
            (2, 3, 9, 8, 4, 3, 3, [1, 1], [(1, 1), (1, 1)], [1, 1], 1),
            (3, 4, 10, 10, 6, 1, 1, [1, 1], [(0, 0), (0, 0)], [1, 1], 1),
            (1, 4, 10, 9, 6, 1, 1, [2, 2], [(0, 0), (0, 0)], [1, 1], 1),
            (2, 3, 17, 15, 5, 5, 5, [2, 2], [(2, 2), (2, 2)], [1, 1], 1),
            (2, 3, 23, 23, 4, 11, 11, [4, 4], [(2, 2), (2, 2)], [1, 1], 1),
            (2, 4, 12, 11, 4, 3, 3, [1, 1], [(2, 2), (2, 2)], [2, 2], 1),
            (2, 6, 8, 8, 4, 3, 3, [1, 1], [(1, 1), (1, 1)], [1, 1], 2),
            (2, 5, 9, 7, 5, 3, 3, [2, 1], [(1, 1), (1, 1)], [1, 1], 5),
            (1, 2, 7, 7, 3, 1, 3, [1, 1], [(0, 0), (1, 1)], [1, 1], 1),
            (2, 2, 6, 7, 3, 3, 3, [1, 2], [(0, 1), (1, 0)], [1, 1], 1),
            (2, 2, 5, 5, 3, 3, 3, [3, 3], [(0, 0), (0, 0)], [1, 1], 1),
            // Padding wider than the kernel's reach: no stride-1 transposed form.
            (2, 2, 5, 5, 3, 3, 3, [1, 1], [(3, 3), (3, 3)], [1, 1], 1),
            (2, 4, 9, 9, 4, 3, 3, [1, 1], [(1, 1), (1, 1)], [1, 1], 4),
            // Several examples side by side in one product (4×4 and 2×2 positions), a batch
            // that does not divide evenly, and a kernel large enough to be summed whole.
            (37, 3, 4, 4, 5, 3, 3, [1, 1], [(1, 1), (1, 1)], [1, 1], 1),
            (19, 4, 4, 4, 6, 3, 3, [2, 2], [(1, 1), (1, 1)], [1, 1], 2),
            (21, 4, 4, 4, 6, 1, 1, [1, 1], [(0, 0), (0, 0)], [1, 1], 2),
            (5, 128, 4, 4, 128, 3, 3, [1, 1], [(1, 1), (1, 1)], [1, 1], 1),
            // Large kernels summed whole by blocks of input channels: in groups (the blocks
            // start again in each group), and 1×1 (the patch rows are x's own channels).
            (2, 256, 8, 8, 256, 3, 3, [1, 1], [(1, 1), (1, 1)], [1, 1], 2),
            (3, 512, 16, 16, 256, 1, 1, [1, 1], [(0, 0), (0, 0)], [1, 1], 1),
            // A large kernel over 2×2 positions, in groups: the weight gradient from the
            // transposed patch matrix.
            (6, 64, 2, 2, 512, 3, 3, [1, 1], [(1, 1), (1, 1)], [1, 1], 2),
            // By kernel taps (taps::suits): 2×2 and 4×4 maps, channels that leave a partial
            // block, a 1×1 map, uneven padding with dilation, a 3×3 map, a 1×1 kernel.
            (3, 64, 2, 2, 96, 3, 3, [1, 1], [(1, 1), (1, 1)], [1, 1], 1),
            (2, 80, 4, 4, 64, 3, 3, [1, 1], [(1, 1), (1, 1)], [1, 1], 1),
            (4, 64, 1, 1, 72, 3, 3, [1, 1], [(1, 1), (1, 1)], [1, 1], 1),
            (2, 64, 4, 3, 70, 3, 2, [1, 1], [(2, 1), (0, 1)], [2, 1], 1),
            (3, 65, 3, 3, 64, 3, 3, [1, 1], [(1, 1), (1, 1)], [1, 1], 1),
            (2, 64, 4, 4, 130, 1, 1, [1, 1], [(0, 0), (0, 0)], [1, 1], 1),
            // Stride 1 with C_out > 2·C_in: the input gradient by col2im (an image layer, a
            // widening 5×5 with uneven padding, a widening layer in groups).
            (3, 1, 8, 8, 32, 3, 3, [1, 1], [(1, 1), (1, 1)], [1, 1], 1),
            (2, 3, 9, 8, 16, 5, 5, [1, 1], [(2, 1), (2, 2)], [1, 1], 1),
            (2, 4, 6, 6, 12, 3, 3, [1, 1], [(1, 1), (1, 1)], [1, 1], 2),
        ];
        for &(n, c_in, h, w, c_out, kh, kw, stride, padding, dilation, groups) in cases {
            let options = ConvOptions::new_with_padding(stride, padding, dilation, groups);
            let x = Tensor::<4>::random([n, c_in, h, w], Distribution::Normal(0.0, 1.0), &device);
            let weight = Tensor::<4>::random([c_out, c_in / groups, kh, kw], Distribution::Normal(0.0, 1.0), &device);
            let bias = Tensor::<1>::random([c_out], Distribution::Normal(0.0, 1.0), &device);
            let expected = burn::tensor::module::conv2d(x.clone(), weight.clone(), Some(bias.clone()), options.clone());
            let [_, _, oh, ow] = expected.dims();
            let dy = Tensor::<4>::random([n, c_out, oh, ow], Distribution::Normal(0.0, 1.0), &device);
            let g = Geometry::new(&x.dims(), &weight.dims(), &options).unwrap();
            assert_eq!((g.oh, g.ow), (oh, ow));
            let v = |t: &Tensor<4>| t.to_data().try_to_vec::<f32>().unwrap();
            let close = |got: Vec<f32>, want: Vec<f32>, what: &str| {
                assert_eq!(got.len(), want.len(), "{what}");
                let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert!((a - b).abs() <= 1e-4 * scale, "{what} of case {:?}: element {i}: {a} against {b}", (n, c_in, h, w, c_out, kh, kw, stride, padding, dilation, groups));
                }
            };
            close(forward(&g, &v(&x), &v(&weight), Some(&bias.to_data().try_to_vec::<f32>().unwrap())), v(&expected), "forward");
            // burn's gradients, through its autodiff of conv2d: ⟨y, δy⟩'s gradients are δx, δW.
            let (xa, wa) = (x.clone().require_grad(), weight.clone().require_grad());
            let y = burn::tensor::module::conv2d(xa.clone(), wa.clone(), None, options.clone());
            let grads = (y * dy.clone()).sum().backward();
            let dx = v(&xa.grad(&grads).unwrap());
            close(input_grad(&g, &v(&weight), &v(&dy)), dx.clone(), "input gradient");
            close(input_grad_col2im(&g, &v(&weight), &v(&dy)), dx, "input gradient by col2im");
            close(weight_grad(&g, &v(&x), &v(&dy)), v(&wa.grad(&grads).unwrap()), "weight gradient");
        }
    }

    /// Both ways of reading a patch matrix give the same matrix, padding, strides, dilation
    /// and groups included.
    #[test]
    fn every_way_of_reading_patches_gives_the_same_matrix() {
        for (x, w, stride, padding, dilation, groups) in [
            ([2, 3, 9, 8], [4, 3, 3, 3], [1, 1], [(1, 1), (1, 1)], [1, 1], 1),
            ([1, 3, 17, 15], [5, 3, 5, 5], [2, 2], [(2, 2), (2, 2)], [1, 1], 1),
            ([1, 2, 12, 11], [4, 1, 3, 3], [1, 2], [(2, 2), (0, 3)], [2, 2], 2),
            ([1, 4, 2, 2], [4, 4, 3, 3], [1, 1], [(1, 1), (1, 1)], [1, 1], 1),
            ([1, 3, 40, 37], [4, 3, 11, 11], [4, 4], [(2, 2), (2, 2)], [1, 1], 1),
            // Stride 1 at the padded plane's fixed widths (32, 16, 8, 4, 2 columns) and others, with
            // uneven, missing and oversized padding, dilation and a 1×1 kernel.
            ([2, 3, 32, 32], [4, 3, 5, 5], [1, 1], [(2, 2), (2, 2)], [1, 1], 1),
            ([2, 3, 16, 16], [4, 3, 3, 3], [1, 1], [(1, 1), (1, 1)], [1, 1], 1),
            ([2, 3, 8, 8], [4, 3, 3, 3], [1, 1], [(1, 1), (1, 1)], [1, 1], 1),
            ([2, 2, 4, 4], [3, 2, 3, 3], [1, 1], [(1, 1), (1, 1)], [1, 1], 1),
            ([2, 2, 2, 2], [3, 2, 3, 3], [1, 1], [(1, 1), (1, 1)], [1, 1], 1),
            ([1, 2, 7, 6], [3, 2, 3, 2], [1, 1], [(0, 2), (1, 0)], [1, 1], 1),
            ([1, 2, 9, 9], [3, 2, 3, 3], [1, 1], [(2, 2), (2, 2)], [2, 2], 1),
            ([1, 2, 5, 5], [3, 2, 3, 3], [1, 1], [(3, 3), (3, 3)], [1, 1], 1),
            ([1, 4, 6, 6], [2, 4, 1, 1], [1, 1], [(0, 0), (0, 0)], [1, 1], 1),
            ([1, 4, 6, 11], [4, 2, 5, 3], [1, 1], [(2, 1), (1, 0)], [1, 1], 2),
            // Planes and outputs of at most 16 values (one register): strided, uneven, grouped.
            ([2, 3, 4, 3], [4, 3, 3, 2], [2, 1], [(1, 0), (1, 1)], [1, 1], 1),
            ([1, 4, 3, 5], [4, 2, 2, 3], [1, 2], [(0, 1), (2, 2)], [1, 2], 2),
            ([2, 2, 1, 1], [3, 2, 3, 3], [1, 1], [(1, 1), (1, 1)], [1, 1], 1),
        ] {
            let g = Geometry::new(&x, &w, &ConvOptions::new_with_padding(stride, padding, dilation, groups)).unwrap();
            let input: Vec<f32> = (0..x.iter().product::<usize>()).map(|i| i as f32 + 1.0).collect();
            let read = |mode: PatchMode, c0: usize| {
                let mut cols = vec![f32::NAN; 2 * g.patch_rows() * g.positions()];
                // Two examples side by side (the same one twice), as the products read them.
                let both: Vec<f32> = [&input[..g.c_in * g.plane()]; 2].concat();
                Patches::build(&Geometry { batch: 2, ..g }, mode).fill(&g, &both, 2, c0, &mut cols, false);
                cols
            };
            for c0 in (0..g.c_in).step_by(g.in_per_group()) {
                let rows = read(PatchMode::Rows, c0);
                assert!(rows.iter().all(|v| !v.is_nan()), "{g:?}: every element written");
                assert_eq!(read(PatchMode::Gather, c0), rows, "{g:?}, group at channel {c0}: gathered");
                if g.stride == [1, 1] {
                    assert_eq!(read(PatchMode::Padded, c0), rows, "{g:?}, group at channel {c0}: from a padded plane");
                }
                if permute_serves(&g) {
                    assert_eq!(read(PatchMode::Permute, c0), rows, "{g:?}, group at channel {c0}: permuted");
                }
            }
        }
    }

    #[test]
    fn the_weight_gradient_does_not_depend_on_the_thread_count() {
        let g = Geometry::new(&[13, 3, 9, 9], &[4, 3, 3, 3], &ConvOptions::new([1, 1], [1, 1], [1, 1], 1)).unwrap();
        let x: Vec<f32> = (0..13 * 3 * 81).map(|i| ((i * 7919) % 1000) as f32 / 997.0 - 0.5).collect();
        let dy: Vec<f32> = (0..13 * 4 * 81).map(|i| ((i * 104729) % 1000) as f32 / 991.0 - 0.5).collect();
        let with = |threads: usize| rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| (weight_grad(&g, &x, &dy), forward(&g, &x, &dy[..4 * 27], None)));
        let one = with(1);
        assert_eq!(one, with(3));
        assert_eq!(one, with(8));
        // A batch of one parallelises inside the products instead.
        let g1 = Geometry { batch: 1, ..g };
        let single = |threads: usize| rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| (weight_grad(&g1, &x[..3 * 81], &dy[..4 * 81]), input_grad(&g1, &dy[..4 * 27], &dy[..4 * 81])));
        assert_eq!(single(1), single(3));
        // A kernel summed over the whole batch at once, the threads splitting δW's columns.
        let big = Geometry::new(&[23, 64, 5, 5], &[256, 64, 3, 3], &ConvOptions::new([1, 1], [1, 1], [1, 1], 1)).unwrap();
        assert!(big.c_out * big.patch_rows() >= WHOLE_BATCH_WEIGHT_GRAD_FROM);
        let xb: Vec<f32> = (0..23 * 64 * 25).map(|i| ((i * 7919) % 1000) as f32 / 997.0 - 0.5).collect();
        let dyb: Vec<f32> = (0..23 * 256 * 25).map(|i| ((i * 104729) % 1000) as f32 / 991.0 - 0.5).collect();
        let whole = |threads: usize| rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| weight_grad(&big, &xb, &dyb));
        assert_eq!(whole(1), whole(3));
        // By kernel taps, in blocks of channels (a partial one included).
        let small = Geometry::new(&[5, 160, 2, 2], &[144, 160, 3, 3], &ConvOptions::new([1, 1], [1, 1], [1, 1], 1)).unwrap();
        assert!(taps::suits(&small));
        let xs: Vec<f32> = (0..5 * 160 * 4).map(|i| ((i * 7919) % 1000) as f32 / 997.0 - 0.5).collect();
        let ws: Vec<f32> = (0..144 * 160 * 9).map(|i| ((i * 104729) % 1000) as f32 / 991.0 - 0.5).collect();
        let dys: Vec<f32> = (0..5 * 144 * 4).map(|i| ((i * 15485863) % 1000) as f32 / 983.0 - 0.5).collect();
        let by_taps = |threads: usize| rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| (forward(&small, &xs, &ws, None), input_grad(&small, &ws, &dys), weight_grad(&small, &xs, &dys)));
        assert_eq!(by_taps(1), by_taps(3));
    }

    #[test]
    fn shapes_that_make_no_convolution_are_refused() {
        let o = ConvOptions::new([1, 1], [0, 0], [1, 1], 1);
        assert!(Geometry::new(&[1, 3, 2, 2], &[4, 3, 3, 3], &o).is_none());
        assert!(Geometry::new(&[1, 3, 5, 5], &[4, 2, 3, 3], &o).is_none());
        assert!(Geometry::new(&[1, 4, 5, 5], &[3, 2, 3, 3], &ConvOptions::new([1, 1], [0, 0], [1, 1], 2)).is_none());
        // No output channels is a shape, if an empty one: empty results, no panic.
        let empty = Geometry::new(&[2, 3, 5, 5], &[0, 3, 3, 3], &o).unwrap();
        let x = vec![1.0; 2 * 3 * 25];
        assert!(forward(&empty, &x, &[], None).is_empty() && weight_grad(&empty, &x, &[]).is_empty());
        assert_eq!(input_grad(&empty, &[], &[]), vec![0.0; x.len()]);
        // An empty batch by kernel taps: empty activations, a zero weight gradient.
        let no_examples = Geometry::new(&[0, 64, 2, 2], &[64, 64, 3, 3], &ConvOptions::new([1, 1], [1, 1], [1, 1], 1)).unwrap();
        assert!(taps::suits(&no_examples));
        let w = vec![1.0; 64 * 64 * 9];
        assert!(forward(&no_examples, &[], &w, None).is_empty() && input_grad(&no_examples, &w, &[]).is_empty());
        assert_eq!(weight_grad(&no_examples, &[], &[]), vec![0.0; w.len()]);
    }
}
