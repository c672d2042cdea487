//! 3 × 3, stride-1 convolutions by Winograd's minimal filtering F(2×2, 3×3) (Lavin & Gray 2016,
//! "Fast algorithms for convolutional neural networks"): ResNet's and AlexNet's 3 × 3 layers,
//! and through [`super::input_grad`]'s transposed convolution their input gradients too.
//!
//! Each 2 × 2 block of outputs is read from a 4 × 4 tile d of the zero-padded input (tiles two
//! apart, overlapping by two), and, for one input and one output channel,
//!
//! y = Aᵀ [U ⊙ V] A,  U = G g Gᵀ (the 3 × 3 kernel g),  V = Bᵀ d B,
//!
//! so that summed over input channels each of the 16 elements ξ of a transformed tile is one
//! matrix product, M_ξ = V_ξ · U_ξ ([tiles, C_in] · [C_in, C_out]): 16 multiplies per 2 × 2
//! outputs where the patch matrix's product takes 36, and V holds 4 × the input's size where the
//! patch matrix holds 9 ×. Every transform is linear, so the weight gradient is the same
//! products transposed: δU_ξ = V_ξᵀ · δM_ξ with δM = A δy Aᵀ, and δg = Gᵀ δU G.
//!
//! The transforms work on channel vectors: x (and δy) are transposed to [positions, C] per
//! example, a tile's 16 pixels are 16 rows of that, and each of the transform's adds runs along
//! the channels, 16 lanes at a time. Along the tiles of one row instead (NCHW), the loops were
//! 4 to 16 long and their overheads made the transforms cost as much as the products saved.
//!
//! The transforms' entries are 0, ±1 and ±½, so the rounding stays that of a sum of a few more
//! terms (the tests hold it to a direct convolution's). Every sum runs in an order fixed by the
//! shape, so every result is the same whatever the number of threads.
//!
//! 5 × 5 kernels with ≥ 64 channels each side (AlexNet's second layer) take F(2×2, 5×5) the same
//! way, forward and input gradient: 6 × 6 tiles, 36 elements ξ ([`f2x5`]).

use gemm::Parallelism;
use rayon::prelude::*;

use super::{Geometry, Mat, at_least, filled_by_chunks, inner_parallelism, matmul, transpose_into, transpose_strided};

/// Elements of a transformed tile (4 × 4; ξ = 4·a + b).
const XI: usize = 16;

/// Channels per vector of the transforms (one AVX-512 register).
const LANES: usize = 16;

/// Most tiles per forward task (examples side by side): at 32 × 32 one example's 256.
const TILE_COLUMNS: usize = 256;

/// Floats of a forward task's V and M together (2 MiB), which bounds its tiles for wide layers:
/// a thread keeps its buffers between calls ([`TaskBuffers`]). At twice this, and twice
/// [`SLAB_FLOATS`], AlexNet's peak memory at 32 px was 297–309 MiB against PyTorch's 310, at
/// the same speed; here it is 277–284 (278–284 by patch matrices).
const TASK_FLOATS: usize = 1 << 19;

/// Floats of a weight-gradient slab's V and δM together (4 MiB): each slab's transforms, then
/// its 16 products, run in parallel, and the slabs add into δU in order.
const SLAB_FLOATS: usize = 1 << 20;

/// Fewest channels on each side: with fewer the products are too shallow (or too narrow) to pay
/// for the transforms' passes.
const MIN_CHANNELS: usize = 16;

/// Fewest channels on each side for 5 × 5: its transforms take 36 vectors a tile, 12 / C_out of
/// the products; at knet4's 32 channels the layers were slower than by patch matrices
/// (16 × 16: 5.0 → 7.2 ms forward).
const MIN_CHANNELS_5X5: usize = 64;

/// Fewest output positions: on the ConvRNN quick start's 4 × 4 and 2 × 2 cells (32 channels) the
/// transforms and per-example passes cost more than the products save (its step went from 66
/// to 77 ms).
const MIN_POSITIONS: usize = 17;

/// Whether [`forward`] (and so, through the transposed convolution, the input gradient) serves
/// this convolution: one group, a 3 × 3 or 5 × 5 kernel, stride 1, no dilation, enough channels
/// and positions. [`suits_weight_grad`] says the same for [`weight_grad`].
pub(super) fn suits(g: &Geometry) -> bool {
    let channels = if g.kh == 5 { MIN_CHANNELS_5X5 } else { MIN_CHANNELS };
    g.groups == 1 && matches!((g.kh, g.kw), (3, 3) | (5, 5)) && g.stride == [1, 1] && g.dilation == [1, 1] && g.c_in >= channels && g.c_out >= channels && g.positions() >= MIN_POSITIONS
}

/// Whether [`weight_grad`] serves this convolution: [`suits`]'s 3 × 3 ones. For 5 × 5 a slab
/// of its V and δM holds 2.4 MB per example of AlexNet's 64 → 192 layer, so the slabs held one
/// example each: its transforms ran on one thread, its products were 64 deep, and the layer's
/// weight gradient took 50 ms against the patch matrices' 37.
pub(super) fn suits_weight_grad(g: &Geometry) -> bool {
    suits(g) && g.kh == 3
}

/// Elements ξ of a transformed tile: (r + 1)² for an r × r kernel (16 for 3 × 3, 36 for 5 × 5).
fn tile_elements(g: &Geometry) -> usize {
    (g.kh + 1) * (g.kw + 1)
}

/// Tile rows and columns over the output: ⌈H_out / 2⌉ × ⌈W_out / 2⌉.
fn tile_grid(g: &Geometry) -> (usize, usize) {
    (g.oh.div_ceil(2), g.ow.div_ceil(2))
}

/// Examples side by side in one forward task: up to [`TILE_COLUMNS`] tiles within
/// [`TASK_FLOATS`], and at least four tasks where the batch allows (small batches of small
/// maps), so that the threads share the work. A function of the shape alone.
fn examples_per_task(g: &Geometry, tiles: usize) -> usize {
    let columns = TILE_COLUMNS.min(TASK_FLOATS / (tile_elements(g) * (g.c_in + g.c_out))).max(1);
    columns.div_ceil(tiles).min(g.batch.div_ceil(4)).clamp(1, g.batch.max(1))
}

/// U = G g Gᵀ of every kernel, as [ξ][C_in][C_out] (U_ξ row-major, the products' right operand).
/// G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]]. In U's order (input channel, then output
/// channel: 16 sequential streams of stores, W read 9·C_in apart); in W's order every store was
/// C_out apart, 5 ms a call for a 256-channel layer.
fn kernel_tiles(g: &Geometry, weight: &[f32]) -> Vec<f32> {
    if g.kh == 5 {
        return f2x5::kernel_tiles(g, weight);
    }
    let pairs = g.c_out * g.c_in;
    let mut u = vec![0.0f32; XI * pairs];
    for c in 0..g.c_in {
        for o in 0..g.c_out {
            let w = &weight[(o * g.c_in + c) * 9..][..9];
            // G g: column j of the 4 × 3 product is G times g's column j; then each of its rows
            // times Gᵀ.
            let columns = [times_g(w[0], w[3], w[6]), times_g(w[1], w[4], w[7]), times_g(w[2], w[5], w[8])];
            for a in 0..4 {
                for (b, v) in times_g(columns[0][a], columns[1][a], columns[2][a]).into_iter().enumerate() {
                    u[(4 * a + b) * pairs + c * g.c_out + o] = v;
                }
            }
        }
    }
    u
}

/// G times a 3-vector: (v0, ½(v0 + v1 + v2), ½(v0 − v1 + v2), v2).
fn times_g(v0: f32, v1: f32, v2: f32) -> [f32; 4] {
    [v0, 0.5 * (v0 + v1 + v2), 0.5 * (v0 - v1 + v2), v2]
}

/// Gᵀ times 4-vectors, elementwise over slices: (d0 + ½(d1 + d2), ½(d1 − d2), ½(d1 + d2) + d3).
fn gt_times([d0, d1, d2, d3]: [&[f32]; 4], [y0, y1, y2]: [&mut [f32]; 3]) {
    for o in 0..y0.len() {
        y0[o] = d0[o] + 0.5 * (d1[o] + d2[o]);
        y1[o] = 0.5 * (d1[o] - d2[o]);
        y2[o] = 0.5 * (d1[o] + d2[o]) + d3[o];
    }
}

/// The loops every transform runs: over the tile grid's ty_n × tx_n tiles (2 × 2 outputs each,
/// in a padded plane `pw` pixels wide) and each tile's vectors of `lanes` channels, binding `t`
/// (the tile's row in a [tiles, C] block), `base` (its first pixel in the padded plane), `c0`
/// (the vector's first channel) and `width` (its channels). A macro, not a function taking a
/// closure: inside the target-feature copies a closure stayed compiled for baseline x86-64.
macro_rules! each_tile_vector {
    (($ty_n:expr, $tx_n:expr), $c:expr, $pw:expr, $lanes:expr, |$t:ident, $base:ident, $c0:ident, $width:pat_param| $body:block) => {
        for ty in 0..$ty_n {
            for tx in 0..$tx_n {
                let ($t, $base) = ((ty * $tx_n + tx) * $c, (2 * ty * $pw + 2 * tx) * $c);
                for $c0 in (0..$c).step_by($lanes) {
                    let $width = usize::min($lanes, $c - $c0);
                    $body
                }
            }
        }
    };
}

/// `fn $name(…) $body` compiled three times, for AVX-512F, for AVX2 and for baseline x86-64, the
/// widest this CPU has picked at run time: baseline x86-64 runs the transforms' adds four lanes
/// wide. Elementwise adds round the same at any width, so the results are the same bits on every
/// CPU.
macro_rules! widest_vectors {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn avx512($($arg: $ty),*) {
                    body($($arg),*)
                }
                #[target_feature(enable = "avx2")]
                fn avx2($($arg: $ty),*) {
                    body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

/// One vector of [`LANES`] channels.
type Lanes = [f32; LANES];

// The vector helpers are loops, not `array::from_fn` or closures: inside the target-feature
// copies of [`widest_vectors!`] those stayed calls compiled for baseline x86-64, with their
// arrays passed through memory (the input transform ran at a tenth of its speed).

#[inline(always)]
fn add(a: &Lanes, b: &Lanes) -> Lanes {
    let mut r = [0.0; LANES];
    for i in 0..LANES {
        r[i] = a[i] + b[i];
    }
    r
}

#[inline(always)]
fn sub(a: &Lanes, b: &Lanes) -> Lanes {
    let mut r = [0.0; LANES];
    for i in 0..LANES {
        r[i] = a[i] - b[i];
    }
    r
}

/// Aᵀ times a 4-vector: (v0 + v1 + v2, v1 − v2 − v3).
#[inline(always)]
fn times_at(v0: &Lanes, v1: &Lanes, v2: &Lanes, v3: &Lanes) -> [Lanes; 2] {
    [add(&add(v0, v1), v2), sub(&sub(v1, v2), v3)]
}

/// A 2-vector times Aᵀ: (e, e + o, e − o, −o).
#[inline(always)]
fn times_a(e: &Lanes, o: &Lanes) -> [Lanes; 4] {
    [*e, add(e, o), sub(e, o), sub(&[0.0; LANES], o)]
}

/// The four values of a 4-vector times Bᵀ: (d0 − d2, d1 + d2, d2 − d1, d1 − d3).
#[inline(always)]
fn times_bt(d0: &Lanes, d1: &Lanes, d2: &Lanes, d3: &Lanes) -> [Lanes; 4] {
    [sub(d0, d2), add(d1, d2), sub(d2, d1), sub(d1, d3)]
}

/// `width` floats from `at` (zeros past them).
#[inline(always)]
fn load(src: &[f32], at: usize, width: usize) -> Lanes {
    if width == LANES {
        return src[at..][..LANES].try_into().expect("a full vector");
    }
    let mut v = [0.0; LANES];
    v[..width].copy_from_slice(&src[at..][..width]);
    v
}

#[inline(always)]
fn store(dst: &mut [f32], at: usize, width: usize, v: &Lanes) {
    if width == LANES {
        let out: &mut Lanes = (&mut dst[at..][..LANES]).try_into().expect("a full vector");
        *out = *v;
    } else {
        dst[at..][..width].copy_from_slice(&v[..width]);
    }
}

/// Column b of a transformed tile, its rows a = 0..4, stored at `at` in blocks 4·a + b.
#[inline(always)]
fn store_column(out: &mut [&mut [f32]], b: usize, at: usize, width: usize, column: &[Lanes; 4]) {
    for (a, value) in column.iter().enumerate() {
        store(out[4 * a + b], at, width, value);
    }
}

/// Floats from one of a buffer's blocks ξ to the next, for blocks of `len` floats: one cache
/// line more. At a power of two apart (16 tiles × 32 channels is 16 KiB) the transforms' 16
/// streams of stores all fell into the same few sets of the L1 cache and evicted each other: the
/// input transform of the ConvRNN quick start's 8 × 8 layer took a fifth of its forward.
fn block_stride(len: usize) -> usize {
    len + LANES
}

/// A [ξ][T][C] buffer (T = `count` examples' tiles, blocks [`block_stride`] apart) split into
/// each example's `xi` blocks of `run` = tiles·C floats, so that examples can be transformed in
/// parallel.
fn by_example(buffer: &mut [f32], xi: usize, count: usize, run: usize) -> Vec<Vec<&mut [f32]>> {
    let mut parts: Vec<Vec<&mut [f32]>> = (0..count).map(|_| Vec::with_capacity(xi)).collect();
    for block in buffer.chunks_mut(block_stride(count * run)).take(xi) {
        for (part, r) in parts.iter_mut().zip(block[..count * run].chunks_exact_mut(run)) {
            part.push(r);
        }
    }
    assert!(parts.iter().all(|p| p.len() == xi), "a [ξ][T][C] buffer has a block per ξ");
    parts
}

/// One example's [C, H, W] values (`src`) as [ph·pw, C] in `dst`: pixel (y, x) at row
/// (y + top)·pw + x + left, the rest zeros. With the padding written into it, every tile of the
/// transforms lies inside, and none needs a test for its edges.
fn padded_channels_last(src: &[f32], c: usize, [h, w]: [usize; 2], [top, left]: [usize; 2], [ph, pw]: [usize; 2], dst: &mut [f32]) {
    let dst = &mut dst[..ph * pw * c];
    dst[..top * pw * c].fill(0.0);
    dst[(top + h) * pw * c..].fill(0.0);
    for y in 0..h {
        let row = &mut dst[(top + y) * pw * c..][..pw * c];
        row[..left * c].fill(0.0);
        row[(left + w) * c..].fill(0.0);
        transpose_strided(&src[y * w..], h * w, c, w, &mut row[left * c..], c);
    }
}

/// Sizes of [`padded_channels_last`]'s x for the input transform: every tile's (r + 1)² pixels.
fn padded_input(g: &Geometry) -> [usize; 2] {
    let (ty_n, tx_n) = tile_grid(g);
    [2 * ty_n + g.kh - 1, 2 * tx_n + g.kw - 1]
}

/// Sizes of the output (and δy) rounded up to whole tiles.
fn padded_output(g: &Geometry) -> [usize; 2] {
    let (ty_n, tx_n) = tile_grid(g);
    [2 * ty_n, 2 * tx_n]
}

widest_vectors! {
    /// V = Bᵀ d B of every tile of one example (`xp`, its x padded by [`padded_channels_last`]
    /// to [`padded_input`]) into `v`, its 16 blocks of [tiles, C_in].
    fn example_inputs(g: &Geometry, xp: &[f32], v: &mut [&mut [f32]]) {
        let (ty_n, tx_n) = tile_grid(g);
        let (c, pw) = (g.c_in, padded_input(g)[1]);
        let mut offsets = [0; 16];
        for (i, o) in offsets.iter_mut().enumerate() {
            *o = ((i / 4) * pw + i % 4) * c;
        }
        each_tile_vector!((ty_n, tx_n), c, pw, LANES, |t, base, c0, width| {
            // Each row k of the tile times Bᵀ as it is read (four pixels live at a time),
            // then each column b of those down the rows, stored as it is made: V[a][b].
            macro_rules! row {
                ($k:expr) => {{
                    let at = base + c0;
                    let o = &offsets[4 * $k..4 * $k + 4];
                    times_bt(&load(xp, at + o[0], width), &load(xp, at + o[1], width), &load(xp, at + o[2], width), &load(xp, at + o[3], width))
                }};
            }
            let (s0, s1, s2, s3) = (row!(0), row!(1), row!(2), row!(3));
            for b in 0..4 {
                store_column(v, b, t + c0, width, &times_bt(&s0[b], &s1[b], &s2[b], &s3[b]));
            }
        });
    }
}

widest_vectors! {
    /// y = Aᵀ M A + bias of every tile of one example, from `m` (its 16 blocks of [tiles, C_out])
    /// into `yp` ([`padded_output`]'s pixels × C_out).
    fn example_outputs(g: &Geometry, m: &[&[f32]], bias: Option<&[f32]>, yp: &mut [f32]) {
        let (ty_n, tx_n) = tile_grid(g);
        let (c, pw) = (g.c_out, padded_output(g)[1]);
        each_tile_vector!((ty_n, tx_n), c, pw, LANES, |t, base, c0, width| {
            let mut mv = [[0.0; LANES]; 16];
            for (mv, m) in mv.iter_mut().zip(m) {
                *mv = load(m, t + c0, width);
            }
            let b0 = match bias {
                Some(b) => load(b, c0, width),
                None => [0.0; LANES],
            };
            let [y00, y01, y10, y11] = output_transform(&mv);
            store(yp, base + c0, width, &add(&y00, &b0));
            store(yp, base + c + c0, width, &add(&y01, &b0));
            store(yp, base + pw * c + c0, width, &add(&y10, &b0));
            store(yp, base + (pw + 1) * c + c0, width, &add(&y11, &b0));
        });
    }
}

/// Aᵀ m A of one tile of channel vectors (m row-major 4 × 4, the result 2 × 2): each column b's
/// rows combined, (m0 + m1 + m2, m1 − m2 − m3), then each of those rows' columns the same way.
#[inline(always)]
fn output_transform(m: &[Lanes; 16]) -> [Lanes; 4] {
    let r0 = times_at(&m[0], &m[4], &m[8], &m[12]);
    let r1 = times_at(&m[1], &m[5], &m[9], &m[13]);
    let r2 = times_at(&m[2], &m[6], &m[10], &m[14]);
    let r3 = times_at(&m[3], &m[7], &m[11], &m[15]);
    let y0 = times_at(&r0[0], &r1[0], &r2[0], &r3[0]);
    let y1 = times_at(&r0[1], &r1[1], &r2[1], &r3[1]);
    [y0[0], y0[1], y1[0], y1[1]]
}

widest_vectors! {
    /// δM = A δy Aᵀ of every tile of one example (`dp`, its δy padded to [`padded_output`], zeros
    /// past the edge) into `dm`, its 16 blocks of [tiles, C_out]: the transpose of
    /// [`example_outputs`].
    fn example_output_grads(g: &Geometry, dp: &[f32], dm: &mut [&mut [f32]]) {
        let (ty_n, tx_n) = tile_grid(g);
        let (c, pw) = (g.c_out, padded_output(g)[1]);
        each_tile_vector!((ty_n, tx_n), c, pw, LANES, |t, base, c0, width| {
            // Each row of δy times Aᵀ's columns, then each column b of those times A.
            let q0 = times_a(&load(dp, base + c0, width), &load(dp, base + c + c0, width));
            let q1 = times_a(&load(dp, base + pw * c + c0, width), &load(dp, base + (pw + 1) * c + c0, width));
            for b in 0..4 {
                store_column(dm, b, t + c0, width, &times_a(&q0[b], &q1[b]));
            }
        });
    }
}

/// The three transforms for channel counts that are multiples of 16, in AVX-512 registers. The
/// generic [`Lanes`] forms above compile to code that keeps a tile's vectors on the stack (the
/// input transform ran at 140 ns per 16 channels of a tile, a third of ResNet-18's 3 × 3 forward);
/// here every value of a tile stays in a register. Same operations in the same order, so the
/// same bits as the generic forms.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Geometry, XI, padded_input, padded_output, tile_grid};
    use std::arch::x86_64::*;

    /// (d0 − d2, d1 + d2, d2 − d1, d1 − d3): a 4-vector times Bᵀ.
    macro_rules! times_bt {
        ($d0:expr, $d1:expr, $d2:expr, $d3:expr) => {{
            let (d0, d1, d2, d3) = ($d0, $d1, $d2, $d3);
            [_mm512_sub_ps(d0, d2), _mm512_add_ps(d1, d2), _mm512_sub_ps(d2, d1), _mm512_sub_ps(d1, d3)]
        }};
    }
    /// (v0 + v1 + v2, v1 − v2 − v3): Aᵀ times a 4-vector.
    macro_rules! times_at {
        ($v0:expr, $v1:expr, $v2:expr, $v3:expr) => {{
            let (v0, v1, v2, v3) = ($v0, $v1, $v2, $v3);
            [_mm512_add_ps(_mm512_add_ps(v0, v1), v2), _mm512_sub_ps(_mm512_sub_ps(v1, v2), v3)]
        }};
    }
    /// (e, e + o, e − o, 0 − o): a 2-vector times Aᵀ.
    macro_rules! times_a {
        ($e:expr, $o:expr) => {{
            let (e, o) = ($e, $o);
            [e, _mm512_add_ps(e, o), _mm512_sub_ps(e, o), _mm512_sub_ps(_mm512_setzero_ps(), o)]
        }};
    }

    /// Column b of a transformed tile, its rows a = 0..4, stored at `at` in blocks 4·a + b.
    macro_rules! store_column {
        ($out:expr, $b:expr, $at:expr, $values:expr) => {{
            let [v0, v1, v2, v3] = $values;
            _mm512_storeu_ps($out[$b].add($at), v0);
            _mm512_storeu_ps($out[4 + $b].add($at), v1);
            _mm512_storeu_ps($out[8 + $b].add($at), v2);
            _mm512_storeu_ps($out[12 + $b].add($at), v3);
        }};
    }

    /// [`super::example_inputs`].
    #[target_feature(enable = "avx512f")]
    pub(super) fn example_inputs(g: &Geometry, xp: &[f32], v: &mut [&mut [f32]]) {
        let (ty_n, tx_n) = tile_grid(g);
        let ([ph, pw], c) = (padded_input(g), g.c_in);
        assert!(c % 16 == 0 && xp.len() >= ph * pw * c && v.len() == XI && v.iter().all(|v| v.len() >= ty_n * tx_n * c));
        let out: [*mut f32; XI] = std::array::from_fn(|xi| v[xi].as_mut_ptr());
        each_tile_vector!((ty_n, tx_n), c, pw, 16, |t, base, c0, _| {
            // SAFETY: the tile's pixels (2ty + k, 2tx + l), k, l < 4, lie inside the
            // padded [ph, pw] plane, and channels c0..c0 + 16 inside C; its row t + c0..+16
            // inside each of V's blocks (both asserted above).
            unsafe {
                let p = xp.as_ptr().add(base + c0);
                macro_rules! row {
                    ($k:expr) => {
                        times_bt!(_mm512_loadu_ps(p.add($k * pw * c)), _mm512_loadu_ps(p.add(($k * pw + 1) * c)), _mm512_loadu_ps(p.add(($k * pw + 2) * c)), _mm512_loadu_ps(p.add(($k * pw + 3) * c)))
                    };
                }
                let (s0, s1, s2, s3) = (row!(0), row!(1), row!(2), row!(3));
                store_column!(out, 0, t + c0, times_bt!(s0[0], s1[0], s2[0], s3[0]));
                store_column!(out, 1, t + c0, times_bt!(s0[1], s1[1], s2[1], s3[1]));
                store_column!(out, 2, t + c0, times_bt!(s0[2], s1[2], s2[2], s3[2]));
                store_column!(out, 3, t + c0, times_bt!(s0[3], s1[3], s2[3], s3[3]));
            }
        });
    }

    /// [`super::example_outputs`].
    #[target_feature(enable = "avx512f")]
    pub(super) fn example_outputs(g: &Geometry, m: &[&[f32]], bias: Option<&[f32]>, yp: &mut [f32]) {
        let (ty_n, tx_n) = tile_grid(g);
        let ([ph, pw], c) = (padded_output(g), g.c_out);
        assert!(c % 16 == 0 && yp.len() >= ph * pw * c && m.len() == XI && m.iter().all(|m| m.len() >= ty_n * tx_n * c) && bias.is_none_or(|b| b.len() >= c));
        let out = yp.as_mut_ptr();
        each_tile_vector!((ty_n, tx_n), c, pw, 16, |t, base, c0, _| {
            // SAFETY: row t + c0..+16 of each of M's blocks, the bias's channels, and the
            // tile's 2 × 2 outputs inside the padded [ph, pw] plane (asserted above).
            unsafe {
                let mv: [__m512; XI] = std::array::from_fn(|xi| _mm512_loadu_ps(m[xi].as_ptr().add(t + c0)));
                let b0 = match bias {
                    Some(b) => _mm512_loadu_ps(b.as_ptr().add(c0)),
                    None => _mm512_setzero_ps(),
                };
                let r0 = times_at!(mv[0], mv[4], mv[8], mv[12]);
                let r1 = times_at!(mv[1], mv[5], mv[9], mv[13]);
                let r2 = times_at!(mv[2], mv[6], mv[10], mv[14]);
                let r3 = times_at!(mv[3], mv[7], mv[11], mv[15]);
                let y0 = times_at!(r0[0], r1[0], r2[0], r3[0]);
                let y1 = times_at!(r0[1], r1[1], r2[1], r3[1]);
                let at = out.add(base + c0);
                _mm512_storeu_ps(at, _mm512_add_ps(y0[0], b0));
                _mm512_storeu_ps(at.add(c), _mm512_add_ps(y0[1], b0));
                _mm512_storeu_ps(at.add(pw * c), _mm512_add_ps(y1[0], b0));
                _mm512_storeu_ps(at.add((pw + 1) * c), _mm512_add_ps(y1[1], b0));
            }
        });
    }

    /// [`super::example_output_grads`].
    #[target_feature(enable = "avx512f")]
    pub(super) fn example_output_grads(g: &Geometry, dp: &[f32], dm: &mut [&mut [f32]]) {
        let (ty_n, tx_n) = tile_grid(g);
        let ([ph, pw], c) = (padded_output(g), g.c_out);
        assert!(c % 16 == 0 && dp.len() >= ph * pw * c && dm.len() == XI && dm.iter().all(|d| d.len() >= ty_n * tx_n * c));
        let out: [*mut f32; XI] = std::array::from_fn(|xi| dm[xi].as_mut_ptr());
        each_tile_vector!((ty_n, tx_n), c, pw, 16, |t, base, c0, _| {
            // SAFETY: the tile's 2 × 2 pixels inside the padded [ph, pw] plane, and row
            // t + c0..+16 inside each of δM's blocks (asserted above).
            unsafe {
                let p = dp.as_ptr().add(base + c0);
                let q0 = times_a!(_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(c)));
                let q1 = times_a!(_mm512_loadu_ps(p.add(pw * c)), _mm512_loadu_ps(p.add((pw + 1) * c)));
                store_column!(out, 0, t + c0, times_a!(q0[0], q1[0]));
                store_column!(out, 1, t + c0, times_a!(q0[1], q1[1]));
                store_column!(out, 2, t + c0, times_a!(q0[2], q1[2]));
                store_column!(out, 3, t + c0, times_a!(q0[3], q1[3]));
            }
        });
    }
}

/// Whether the AVX-512 transforms serve `channels`.
fn avx512_for(channels: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    if channels % LANES == 0 && std::arch::is_x86_feature_detected!("avx512f") {
        return true;
    }
    let _ = channels;
    false
}

/// [`example_inputs`] through [`avx512`] where it serves.
fn inputs(g: &Geometry, xp: &[f32], v: &mut [&mut [f32]]) {
    if g.kh == 5 {
        return f2x5::inputs(g, xp, v);
    }
    #[cfg(target_arch = "x86_64")]
    if avx512_for(g.c_in) {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { avx512::example_inputs(g, xp, v) };
    }
    example_inputs(g, xp, v)
}

/// [`example_outputs`] through [`avx512`] where it serves.
fn outputs(g: &Geometry, m: &[&[f32]], bias: Option<&[f32]>, yp: &mut [f32]) {
    if g.kh == 5 {
        return f2x5::outputs(g, m, bias, yp);
    }
    #[cfg(target_arch = "x86_64")]
    if avx512_for(g.c_out) {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { avx512::example_outputs(g, m, bias, yp) };
    }
    example_outputs(g, m, bias, yp)
}

/// [`example_output_grads`] through [`avx512`] where it serves.
fn output_grads(g: &Geometry, dp: &[f32], dm: &mut [&mut [f32]]) {
    #[cfg(target_arch = "x86_64")]
    if avx512_for(g.c_out) {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { avx512::example_output_grads(g, dp, dm) };
    }
    example_output_grads(g, dp, dm)
}

/// A forward task's buffers, kept by each thread between tasks and calls (taken out while in
/// use, so a task that waits inside its products and runs another meanwhile allocates its own):
/// allocated per task, they were zero-filled each time, 6 % of ResNet-18's step in memset.
#[derive(Default)]
struct TaskBuffers {
    /// One example's x, padded channels-last.
    xp: Vec<f32>,
    v: Vec<f32>,
    m: Vec<f32>,
    /// One example's y, padded channels-last.
    yp: Vec<f32>,
}

thread_local! {
    static TASK_BUFFERS: std::cell::Cell<TaskBuffers> = std::cell::Cell::default();
    /// The weight gradient's V and δM, kept by the calling thread between calls where the whole
    /// batch is one slab (see [`weight_grad`]).
    static SLAB_BUFFERS: std::cell::Cell<(Vec<f32>, Vec<f32>)> = std::cell::Cell::default();
}

/// `conv2d(x, weight) + bias` (see [`super::forward`]). Each task takes a few examples side by
/// side: their V ([ξ][tiles, C_in]), the products (one per ξ) into M ([ξ][tiles, C_out]), M's output
/// transform, and y back to NCHW.
pub(super) fn forward(g: &Geometry, x: &[f32], weight: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let (ty_n, tx_n) = tile_grid(g);
    let tiles = ty_n * tx_n;
    let (plane, positions) = (g.plane(), g.positions());
    let (x_size, y_size) = (g.c_in * plane, g.c_out * positions);
    let len = g.batch * y_size;
    if len == 0 {
        return Vec::new();
    }
    let u = kernel_tiles(g, weight);
    let per = examples_per_task(g, tiles);
    let parallelism = inner_parallelism(g.batch.div_ceil(per));
    let (input_sizes, output_sizes) = (padded_input(g), padded_output(g));
    let xi_n = tile_elements(g);
    filled_by_chunks(
        len,
        per * y_size,
        || (),
        |_, chunk, y_chunk| {
            let count = y_chunk.len() / y_size;
            let columns = count * tiles;
            let x_chunk = &x[chunk * per * x_size..][..count * x_size];
            let mut buffers = TASK_BUFFERS.take();
            let TaskBuffers { xp, v, m, yp } = &mut buffers;
            let xp = at_least(xp, input_sizes[0] * input_sizes[1] * g.c_in);
            let (v_stride, m_stride) = (block_stride(columns * g.c_in), block_stride(columns * g.c_out));
            let v = at_least(v, xi_n * v_stride);
            for (e, mut v_e) in by_example(v, xi_n, count, tiles * g.c_in).into_iter().enumerate() {
                padded_channels_last(&x_chunk[e * x_size..][..x_size], g.c_in, [g.h, g.w], g.pad, input_sizes, xp);
                inputs(g, xp, &mut v_e);
            }
            let m = at_least(m, xi_n * m_stride);
            for xi in 0..xi_n {
                let lhs = Mat::rows(&v[xi * v_stride..][..columns * g.c_in], g.c_in);
                let rhs = Mat::rows(&u[xi * g.c_in * g.c_out..][..g.c_in * g.c_out], g.c_out);
                matmul(&mut m[xi * m_stride..][..columns * g.c_out], columns, g.c_out, g.c_in, lhs, rhs, false, parallelism);
            }
            let yp = at_least(yp, output_sizes[0] * output_sizes[1] * g.c_out);
            for (e, y_e) in y_chunk.chunks_exact_mut(y_size).enumerate() {
                let m_e: [&[f32]; 36] = std::array::from_fn(|xi| if xi < xi_n { &m[xi * m_stride + e * tiles * g.c_out..][..tiles * g.c_out] } else { &[] });
                outputs(g, &m_e[..xi_n], bias, yp);
                // The padded [pixels, C_out] rows back into y's [C_out, H_out·W_out], row by row.
                for oy in 0..g.oh {
                    transpose_strided(&yp[oy * output_sizes[1] * g.c_out..], g.c_out, g.ow, g.c_out, &mut y_e[oy * g.ow..], positions);
                }
            }
            TASK_BUFFERS.set(buffers);
        },
    )
}

/// δW of `conv2d(x, W)` (see [`super::weight_grad`]): δU_ξ = Σ V_ξᵀ · δM_ξ over slabs of
/// examples (within [`SLAB_FLOATS`]), then δg = Gᵀ δU G. Per slab the transforms run in
/// parallel by example, then the 16 products, one per task, each adding into its own δU_ξ; the
/// slabs add in order.
pub(super) fn weight_grad(g: &Geometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (ty_n, tx_n) = tile_grid(g);
    let tiles = ty_n * tx_n;
    let (plane, positions) = (g.plane(), g.positions());
    let (x_size, y_size) = (g.c_in * plane, g.c_out * positions);
    let (ci, co) = (g.c_in, g.c_out);
    let pairs = co * ci;
    assert!(suits_weight_grad(g), "Winograd's weight gradient serves 3 × 3 kernels only");
    if g.batch == 0 || pairs == 0 {
        return vec![0.0; pairs * 9];
    }
    let per = (SLAB_FLOATS / (XI * tiles * (ci + co))).clamp(1, g.batch);
    let (input_sizes, output_sizes) = (padded_input(g), padded_output(g));
    // δU_ξ as [C_in, C_out] row-major.
    let mut du = vec![0.0f32; XI * pairs];
    let mut slab = SLAB_BUFFERS.take();
    let (v, dm) = &mut slab;
    for (step, n0) in (0..g.batch).step_by(per).enumerate() {
        let count = per.min(g.batch - n0);
        let columns = count * tiles;
        let (x_slab, dy_slab) = (&x[n0 * x_size..][..count * x_size], &dy[n0 * y_size..][..count * y_size]);
        let (v_stride, dm_stride) = (block_stride(columns * ci), block_stride(columns * co));
        let (v, dm) = (at_least(v, XI * v_stride), at_least(dm, XI * dm_stride));
        by_example(v, XI, count, tiles * ci).into_par_iter().zip(by_example(dm, XI, count, tiles * co)).enumerate().for_each(|(e, (mut v_e, mut dm_e))| {
            let mut buffers = TASK_BUFFERS.take();
            let xp = at_least(&mut buffers.xp, input_sizes[0] * input_sizes[1] * ci);
            padded_channels_last(&x_slab[e * x_size..][..x_size], ci, [g.h, g.w], g.pad, input_sizes, xp);
            inputs(g, xp, &mut v_e);
            let dp = at_least(&mut buffers.yp, output_sizes[0] * output_sizes[1] * co);
            padded_channels_last(&dy_slab[e * y_size..][..y_size], co, [g.oh, g.ow], [0, 0], output_sizes, dp);
            output_grads(g, dp, &mut dm_e);
            TASK_BUFFERS.set(buffers);
        });
        let (v, dm) = (&*v, &*dm);
        du.par_chunks_exact_mut(pairs).enumerate().for_each(|(xi, du_xi)| {
            let lhs = Mat::rows(&v[xi * v_stride..][..columns * ci], ci).t();
            let rhs = Mat::rows(&dm[xi * dm_stride..][..columns * co], co);
            matmul(du_xi, ci, co, columns, lhs, rhs, step > 0, Parallelism::None);
        });
    }
    // Kept only for a small convolution, whose batch is one slab: allocated per call, the ConvRNN
    // quick start's 8 × 8 weight gradient was 812 µs, half of it zero-filling and page-faulting
    // in 2 MiB; kept, 340. Large ones are freed: kept, AlexNet's 4 MiB slab raised its peak
    // memory at 32 px by 5–15 MiB (to within 10 of PyTorch's), for no speed.
    if per == g.batch {
        SLAB_BUFFERS.set(slab);
    }
    // δg = Gᵀ δU G for every pair, as [C_in][9][C_out] (vectors along C_out), then transposed
    // into W's [C_out][C_in·9].
    let mut by_input = vec![0.0f32; ci * 9 * co];
    by_input.par_chunks_exact_mut(9 * co).enumerate().for_each_init(Vec::new, |dug, (c, out)| {
        let d = |xi: usize| &du[xi * pairs + c * co..][..co];
        // (δU G)[a][j], each a vector over C_out: row a of δU times G (Gᵀ times it, as columns).
        dug.resize(12 * co, 0.0);
        for a in 0..4 {
            let (v0, rest) = dug[a * 3 * co..][..3 * co].split_at_mut(co);
            let (v1, v2) = rest.split_at_mut(co);
            gt_times([d(4 * a), d(4 * a + 1), d(4 * a + 2), d(4 * a + 3)], [v0, v1, v2]);
        }
        // δg[i][j] = Gᵀ's row i over the column j of δU G, at out[(3·i + j)·C_out + o].
        let (rows_0, rest) = out.split_at_mut(3 * co);
        let (rows_1, rows_2) = rest.split_at_mut(3 * co);
        for j in 0..3 {
            let r = |a: usize| &dug[(a * 3 + j) * co..][..co];
            gt_times([r(0), r(1), r(2), r(3)], [&mut rows_0[j * co..][..co], &mut rows_1[j * co..][..co], &mut rows_2[j * co..][..co]]);
        }
    });
    let mut dw = vec![0.0f32; pairs * 9];
    transpose_into(&by_input, ci * 9, co, &mut dw);
    dw
}

/// F(2 × 2, 5 × 5): 6 × 6 tiles, points 0, ±1, ±2 and ∞ (the matrices of Lavin & Gray's
/// construction, derived exactly in rationals), for the forward and, through the transposed
/// convolution, the input gradient: 36 multiplies per 2 × 2 outputs where the patch matrix's
/// product takes 100 (AlexNet's 64 → 192 layer at 15 × 15). Its entries run to 5 and 1/24, so it
/// rounds more than F(2 × 2, 3 × 3) (the tests hold it to a direct convolution within 2e-5 of
/// the largest value). As for 3 × 3, the transforms run along channel vectors, with an
/// AVX-512 form for channel counts that are multiples of 16: written as loops over the
/// matrices, the generic form spilled its 36 vectors a tile and took 8 % of AlexNet's step.
mod f2x5 {
    use super::{Geometry, LANES, Lanes, add, avx512_for, load, padded_input, padded_output, store, sub, tile_grid, transpose_into};

    /// G (6 × 5): the kernel g becomes U = G g Gᵀ. Bᵀ and Aᵀ are written out in [`times_bt`]
    /// and [`times_at`].
    const G: [[f32; 5]; 6] = [
        [1.0 / 4.0, 0.0, 0.0, 0.0, 0.0],
        [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
        [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
        [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0, 1.0 / 3.0, 2.0 / 3.0],
        [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0, -1.0 / 3.0, 2.0 / 3.0],
        [0.0, 0.0, 0.0, 0.0, 1.0],
    ];

    #[inline(always)]
    fn scaled(a: f32, v: &Lanes) -> Lanes {
        let mut r = [0.0; LANES];
        for i in 0..LANES {
            r[i] = a * v[i];
        }
        r
    }

    /// A 6-vector times Bᵀ, Bᵀ = [[4, 0, −5, 0, 1, 0], [0, −4, −4, 1, 1, 0], [0, 4, −4, −1, 1, 0],
    /// [0, −2, −1, 2, 1, 0], [0, 2, −1, −2, 1, 0], [0, 4, 0, −5, 0, 1]].
    #[inline(always)]
    fn times_bt(d: &[Lanes; 6]) -> [Lanes; 6] {
        let (s12, d12, s34, d34, d42, d31) = (add(&d[1], &d[2]), sub(&d[1], &d[2]), add(&d[3], &d[4]), sub(&d[4], &d[3]), sub(&d[4], &d[2]), sub(&d[3], &d[1]));
        [
            add(&sub(&scaled(4.0, &d[0]), &scaled(5.0, &d[2])), &d[4]),
            sub(&s34, &scaled(4.0, &s12)),
            add(&d34, &scaled(4.0, &d12)),
            add(&d42, &scaled(2.0, &d31)),
            sub(&d42, &scaled(2.0, &d31)),
            add(&sub(&scaled(4.0, &d[1]), &scaled(5.0, &d[3])), &d[5]),
        ]
    }

    /// Aᵀ times a 6-vector, Aᵀ = [[1, 1, 1, 1, 1, 0], [0, 1, −1, 2, −2, 1]].
    #[inline(always)]
    fn times_at(m: &[Lanes; 6]) -> [Lanes; 2] {
        [add(&add(&m[0], &add(&m[1], &m[2])), &add(&m[3], &m[4])), add(&add(&sub(&m[1], &m[2]), &scaled(2.0, &sub(&m[3], &m[4]))), &m[5])]
    }

    widest_vectors! {
        /// V = Bᵀ d B of every tile of one example (`xp` padded to [`padded_input`]) into its 36
        /// blocks of [tiles, C_in]: each row of the tile times Bᵀ, then each column of those.
        pub(super) fn example_inputs(g: &Geometry, xp: &[f32], v: &mut [&mut [f32]]) {
            let (ty_n, tx_n) = tile_grid(g);
            let (c, pw) = (g.c_in, padded_input(g)[1]);
            assert_eq!(v.len(), 36);
            each_tile_vector!((ty_n, tx_n), c, pw, LANES, |t, base, c0, width| {
                let mut rows = [[[0.0; LANES]; 6]; 6];
                for k in 0..6 {
                    let at = base + k * pw * c + c0;
                    let d = [load(xp, at, width), load(xp, at + c, width), load(xp, at + 2 * c, width), load(xp, at + 3 * c, width), load(xp, at + 4 * c, width), load(xp, at + 5 * c, width)];
                    rows[k] = times_bt(&d);
                }
                for j in 0..6 {
                    let column = times_bt(&[rows[0][j], rows[1][j], rows[2][j], rows[3][j], rows[4][j], rows[5][j]]);
                    for i in 0..6 {
                        store(v[6 * i + j], t + c0, width, &column[i]);
                    }
                }
            });
        }
    }

    widest_vectors! {
        /// y = Aᵀ M A + bias of every tile of one example, from `m` (its 36 blocks of [tiles,
        /// C_out]) into `yp` ([`padded_output`]'s pixels × C_out).
        pub(super) fn example_outputs(g: &Geometry, m: &[&[f32]], bias: Option<&[f32]>, yp: &mut [f32]) {
            let (ty_n, tx_n) = tile_grid(g);
            let (c, pw) = (g.c_out, padded_output(g)[1]);
            assert_eq!(m.len(), 36);
            each_tile_vector!((ty_n, tx_n), c, pw, LANES, |t, base, c0, width| {
                // Aᵀ along each row a of M, then down the two columns.
                let mut r = [[[0.0; LANES]; 2]; 6];
                for a in 0..6 {
                    let row = [load(m[6 * a], t + c0, width), load(m[6 * a + 1], t + c0, width), load(m[6 * a + 2], t + c0, width), load(m[6 * a + 3], t + c0, width), load(m[6 * a + 4], t + c0, width), load(m[6 * a + 5], t + c0, width)];
                    r[a] = times_at(&row);
                }
                let b0 = match bias {
                    Some(b) => load(b, c0, width),
                    None => [0.0; LANES],
                };
                for j in 0..2 {
                    let [y0, y1] = times_at(&[r[0][j], r[1][j], r[2][j], r[3][j], r[4][j], r[5][j]]);
                    store(yp, base + j * c + c0, width, &add(&y0, &b0));
                    store(yp, base + (pw + j) * c + c0, width, &add(&y1, &b0));
                }
            });
        }
    }

    /// The two transforms in AVX-512 registers, for channel counts that are multiples of 16: the
    /// same operations in the same order as the generic forms, so the same bits.
    #[cfg(target_arch = "x86_64")]
    mod avx512 {
        use super::super::{Geometry, padded_input, padded_output, tile_grid};
        use std::arch::x86_64::*;

        /// [`super::times_bt`].
        macro_rules! times_bt {
            ($d:expr) => {{
                let d: [__m512; 6] = $d;
                let (four, five, two) = (_mm512_set1_ps(4.0), _mm512_set1_ps(5.0), _mm512_set1_ps(2.0));
                let (s12, d12, s34, d34, d42, d31) = (_mm512_add_ps(d[1], d[2]), _mm512_sub_ps(d[1], d[2]), _mm512_add_ps(d[3], d[4]), _mm512_sub_ps(d[4], d[3]), _mm512_sub_ps(d[4], d[2]), _mm512_sub_ps(d[3], d[1]));
                [
                    _mm512_add_ps(_mm512_sub_ps(_mm512_mul_ps(four, d[0]), _mm512_mul_ps(five, d[2])), d[4]),
                    _mm512_sub_ps(s34, _mm512_mul_ps(four, s12)),
                    _mm512_add_ps(d34, _mm512_mul_ps(four, d12)),
                    _mm512_add_ps(d42, _mm512_mul_ps(two, d31)),
                    _mm512_sub_ps(d42, _mm512_mul_ps(two, d31)),
                    _mm512_add_ps(_mm512_sub_ps(_mm512_mul_ps(four, d[1]), _mm512_mul_ps(five, d[3])), d[5]),
                ]
            }};
        }

        /// [`super::times_at`].
        macro_rules! times_at {
            ($m:expr) => {{
                let m: [__m512; 6] = $m;
                [
                    _mm512_add_ps(_mm512_add_ps(m[0], _mm512_add_ps(m[1], m[2])), _mm512_add_ps(m[3], m[4])),
                    _mm512_add_ps(_mm512_add_ps(_mm512_sub_ps(m[1], m[2]), _mm512_mul_ps(_mm512_set1_ps(2.0), _mm512_sub_ps(m[3], m[4]))), m[5]),
                ]
            }};
        }

        /// [`super::example_inputs`].
        #[target_feature(enable = "avx512f")]
        pub(super) fn example_inputs(g: &Geometry, xp: &[f32], v: &mut [&mut [f32]]) {
            let (ty_n, tx_n) = tile_grid(g);
            let ([ph, pw], c) = (padded_input(g), g.c_in);
            assert!(c % 16 == 0 && xp.len() >= ph * pw * c && v.len() == 36 && v.iter().all(|v| v.len() >= ty_n * tx_n * c));
            let out: [*mut f32; 36] = std::array::from_fn(|xi| v[xi].as_mut_ptr());
            each_tile_vector!((ty_n, tx_n), c, pw, 16, |t, base, c0, _| {
                // SAFETY: the tile's pixels (2ty + k, 2tx + l), k, l < 6, lie inside the
                // padded [ph, pw] plane, and channels c0..c0 + 16 inside C; its row
                // t + c0..+16 inside each of V's blocks (both asserted above).
                unsafe {
                    let p = xp.as_ptr().add(base + c0);
                    let mut rows = [[_mm512_setzero_ps(); 6]; 6];
                    for (k, row) in rows.iter_mut().enumerate() {
                        let q = p.add(k * pw * c);
                        *row = times_bt!([_mm512_loadu_ps(q), _mm512_loadu_ps(q.add(c)), _mm512_loadu_ps(q.add(2 * c)), _mm512_loadu_ps(q.add(3 * c)), _mm512_loadu_ps(q.add(4 * c)), _mm512_loadu_ps(q.add(5 * c))]);
                    }
                    for j in 0..6 {
                        let column = times_bt!([rows[0][j], rows[1][j], rows[2][j], rows[3][j], rows[4][j], rows[5][j]]);
                        for (i, value) in column.into_iter().enumerate() {
                            _mm512_storeu_ps(out[6 * i + j].add(t + c0), value);
                        }
                    }
                }
            });
        }

        /// [`super::example_outputs`].
        #[target_feature(enable = "avx512f")]
        pub(super) fn example_outputs(g: &Geometry, m: &[&[f32]], bias: Option<&[f32]>, yp: &mut [f32]) {
            let (ty_n, tx_n) = tile_grid(g);
            let ([ph, pw], c) = (padded_output(g), g.c_out);
            assert!(c % 16 == 0 && yp.len() >= ph * pw * c && m.len() == 36 && m.iter().all(|m| m.len() >= ty_n * tx_n * c) && bias.is_none_or(|b| b.len() >= c));
            let out = yp.as_mut_ptr();
            each_tile_vector!((ty_n, tx_n), c, pw, 16, |t, base, c0, _| {
                // SAFETY: row t + c0..+16 of each of M's blocks, the bias's channels, and
                // the tile's 2 × 2 outputs inside the padded [ph, pw] plane (asserted).
                unsafe {
                    let mut r = [[_mm512_setzero_ps(); 2]; 6];
                    for (a, r) in r.iter_mut().enumerate() {
                        let row = &m[6 * a..][..6];
                        macro_rules! at {
                            ($b:expr) => {
                                _mm512_loadu_ps(row[$b].as_ptr().add(t + c0))
                            };
                        }
                        *r = times_at!([at!(0), at!(1), at!(2), at!(3), at!(4), at!(5)]);
                    }
                    let b0 = match bias {
                        Some(b) => _mm512_loadu_ps(b.as_ptr().add(c0)),
                        None => _mm512_setzero_ps(),
                    };
                    for j in 0..2 {
                        let [y0, y1] = times_at!([r[0][j], r[1][j], r[2][j], r[3][j], r[4][j], r[5][j]]);
                        _mm512_storeu_ps(out.add(base + j * c + c0), _mm512_add_ps(y0, b0));
                        _mm512_storeu_ps(out.add(base + (pw + j) * c + c0), _mm512_add_ps(y1, b0));
                    }
                }
            });
        }
    }

    /// [`example_inputs`] through [`avx512`] where it serves.
    pub(super) fn inputs(g: &Geometry, xp: &[f32], v: &mut [&mut [f32]]) {
        #[cfg(target_arch = "x86_64")]
        if avx512_for(g.c_in) {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { avx512::example_inputs(g, xp, v) };
        }
        example_inputs(g, xp, v)
    }

    /// [`example_outputs`] through [`avx512`] where it serves.
    pub(super) fn outputs(g: &Geometry, m: &[&[f32]], bias: Option<&[f32]>, yp: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if avx512_for(g.c_out) {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { avx512::example_outputs(g, m, bias, yp) };
        }
        example_outputs(g, m, bias, yp)
    }

    /// U = G g Gᵀ of every kernel as [ξ][C_in][C_out], through W transposed to [C_in][25][C_out]
    /// so that every sum runs along C_out.
    pub(super) fn kernel_tiles(g: &Geometry, weight: &[f32]) -> Vec<f32> {
        let (ci, co) = (g.c_in, g.c_out);
        let mut by_input = vec![0.0f32; ci * 25 * co];
        transpose_into(weight, co, ci * 25, &mut by_input);
        let mut u = vec![0.0f32; 36 * ci * co];
        let mut gg = vec![0.0f32; 30 * co];
        for c in 0..ci {
            let w = |k: usize, l: usize| &by_input[(c * 25 + k * 5 + l) * co..][..co];
            // (G g)[a][l] = Σ_k G[a][k] g[k][l].
            for a in 0..6 {
                for l in 0..5 {
                    let out = &mut gg[(a * 5 + l) * co..][..co];
                    out.fill(0.0);
                    for k in (0..5).filter(|&k| G[a][k] != 0.0) {
                        out.iter_mut().zip(w(k, l)).for_each(|(o, v)| *o += G[a][k] * v);
                    }
                }
            }
            // U[a][b] = Σ_l (G g)[a][l] G[b][l].
            for a in 0..6 {
                for b in 0..6 {
                    let out = &mut u[((6 * a + b) * ci + c) * co..][..co];
                    for l in (0..5).filter(|&l| G[b][l] != 0.0) {
                        out.iter_mut().zip(&gg[(a * 5 + l) * co..][..co]).for_each(|(o, v)| *o += G[b][l] * v);
                    }
                }
            }
        }
        u
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::ops::ConvOptions;

    /// A direct convolution in f64: y, and for δy the gradients δx and δW.
    fn reference(g: &Geometry, x: &[f32], w: &[f32], dy: &[f32]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let mut y = vec![0.0f64; g.batch * g.c_out * g.positions()];
        let (mut dx, mut dw) = (vec![0.0f64; x.len()], vec![0.0f64; w.len()]);
        for n in 0..g.batch {
            for o in 0..g.c_out {
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let yi = ((n * g.c_out + o) * g.oh + oy) * g.ow + ox;
                        for c in 0..g.c_in {
                            for i in 0..g.kh {
                                for j in 0..g.kw {
                                    let (iy, ix) = ((oy + i) as isize - g.pad[0] as isize, (ox + j) as isize - g.pad[1] as isize);
                                    if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                        continue;
                                    }
                                    let xi = ((n * g.c_in + c) * g.h + iy as usize) * g.w + ix as usize;
                                    let wi = ((o * g.c_in + c) * g.kh + i) * g.kw + j;
                                    y[yi] += x[xi] as f64 * w[wi] as f64;
                                    dx[xi] += dy[yi] as f64 * w[wi] as f64;
                                    dw[wi] += dy[yi] as f64 * x[xi] as f64;
                                }
                            }
                        }
                    }
                }
            }
        }
        (y, dx, dw)
    }

    /// Forward, input gradient (through the transposed convolution, which these geometries
    /// send here too) and weight gradient against a direct f64 convolution: even and odd output
    /// sizes (a last tile half outside), no, uneven and wide padding, channels that leave a
    /// partial vector, one example (the products parallel inside), several slabs of the weight
    /// gradient with a partial last one.
    #[test]
    fn winograd_matches_a_direct_convolution() {
        // (batch, c_in, h, w, c_out, kernel side, padding (begin, end) per axis)
        let cases: &[(usize, usize, usize, usize, usize, usize, [(usize, usize); 2])] = &[
            (2, 16, 8, 8, 16, 3, [(1, 1), (1, 1)]),
            (3, 17, 7, 9, 20, 3, [(1, 1), (1, 1)]),
            (2, 16, 9, 6, 24, 3, [(0, 0), (0, 0)]),
            (2, 20, 6, 7, 16, 3, [(2, 1), (0, 2)]),
            (1, 32, 12, 11, 32, 3, [(1, 1), (1, 1)]),
            (3, 16, 32, 30, 16, 3, [(1, 1), (1, 1)]),
            (9, 64, 32, 32, 64, 3, [(1, 1), (1, 1)]),
            // F(2 × 2, 5 × 5) (forward and input gradient): AlexNet's 15 × 15 layer, odd sizes,
            // no and uneven padding, partial vectors on either side, one example.
            (2, 64, 15, 15, 96, 5, [(2, 2), (2, 2)]),
            (3, 72, 9, 8, 64, 5, [(2, 2), (2, 2)]),
            (2, 64, 10, 9, 80, 5, [(0, 0), (0, 0)]),
            (1, 64, 7, 11, 72, 5, [(3, 1), (0, 2)]),
        ];
        for &(n, c_in, h, w, c_out, k, padding) in cases {
            let g = Geometry::new(&[n, c_in, h, w], &[c_out, c_in, k, k], &ConvOptions::new_with_padding([1, 1], padding, [1, 1], 1)).unwrap();
            assert!(suits(&g), "{g:?}");
            let values = |len: usize, seed: usize| -> Vec<f32> { (0..len).map(|i| (((i * 7919 + seed * 104729) % 2003) as f32 / 1001.0 - 1.0) + 0.25).collect() };
            let (x, weight, dy) = (values(n * c_in * h * w, 1), values(c_out * c_in * k * k, 2), values(n * c_out * g.oh * g.ow, 3));
            let bias: Vec<f32> = (0..c_out).map(|o| o as f32 * 0.1 - 0.5).collect();
            let (y, dx, dw) = reference(&g, &x, &weight, &dy);
            // F(2 × 2, 5 × 5)'s transforms (entries to 5 and 1/24) round more than F(2 × 2, 3 × 3)'s.
            let tolerance = if k == 3 { 2e-6 } else { 2e-5 };
            let close = |got: &[f32], want: &[f64], what: &str| {
                assert_eq!(got.len(), want.len(), "{what}");
                let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
                for (i, (a, b)) in got.iter().zip(want).enumerate() {
                    assert!((*a as f64 - b).abs() <= tolerance * scale * (c_in.max(c_out) as f64).sqrt(), "{what} of {g:?}: element {i}: {a} against {b} (scale {scale})");
                }
            };
            let with_bias: Vec<f64> = y.iter().enumerate().map(|(i, v)| v + bias[(i / g.positions()) % c_out] as f64).collect();
            close(&forward(&g, &x, &weight, Some(&bias)), &with_bias, "forward");
            close(&super::super::input_grad(&g, &weight, &dy), &dx, "input gradient");
            // 5 × 5 weight gradients go by patch matrices (see `suits_weight_grad`).
            close(&super::super::weight_grad(&g, &x, &dy), &dw, "weight gradient");
            let at = |threads: usize| rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| (forward(&g, &x, &weight, None), super::super::weight_grad(&g, &x, &dy)));
            assert_eq!(at(1), at(3), "{g:?}: the same bits at any thread count");
        }
    }

    /// F(2 × 2, 5 × 5)'s AVX-512 transforms and its generic ones give the same bits.
    #[test]
    fn the_5x5_vector_transforms_match_the_generic_ones() {
        let g = Geometry::new(&[1, 64, 9, 10], &[80, 64, 5, 5], &ConvOptions::new([1, 1], [2, 2], [1, 1], 1)).unwrap();
        assert!(suits(&g));
        let (ty_n, tx_n) = tile_grid(&g);
        let tiles = ty_n * tx_n;
        let values = |len: usize, seed: usize| -> Vec<f32> { (0..len).map(|i| ((i * 7919 + seed * 104729) % 2003) as f32 / 1001.0 - 1.0).collect() };
        let [ph, pw] = padded_input(&g);
        let mut xp = vec![0.0; ph * pw * g.c_in];
        padded_channels_last(&values(g.c_in * g.plane(), 1), g.c_in, [g.h, g.w], g.pad, [ph, pw], &mut xp);
        let (mut v_generic, mut v_vector) = (vec![0.0; 36 * block_stride(tiles * g.c_in)], vec![0.0; 36 * block_stride(tiles * g.c_in)]);
        f2x5::example_inputs(&g, &xp, &mut by_example(&mut v_generic, 36, 1, tiles * g.c_in).pop().unwrap());
        f2x5::inputs(&g, &xp, &mut by_example(&mut v_vector, 36, 1, tiles * g.c_in).pop().unwrap());
        assert_eq!(v_generic, v_vector, "input transform");
        let m = values(36 * tiles * g.c_out, 2);
        let blocks: Vec<&[f32]> = (0..36).map(|xi| &m[xi * tiles * g.c_out..][..tiles * g.c_out]).collect();
        let bias = values(g.c_out, 3);
        let [oh, ow] = padded_output(&g);
        let (mut y_generic, mut y_vector) = (vec![0.0; oh * ow * g.c_out], vec![0.0; oh * ow * g.c_out]);
        f2x5::example_outputs(&g, &blocks, Some(&bias), &mut y_generic);
        f2x5::outputs(&g, &blocks, Some(&bias), &mut y_vector);
        assert_eq!(y_generic, y_vector, "output transform");
    }

    /// The AVX-512 transforms and the generic ones give the same bits (where the CPU has no
    /// AVX-512 both sides are the generic ones).
    #[test]
    fn the_vector_transforms_match_the_generic_ones() {
        let g = Geometry::new(&[1, 32, 9, 10], &[48, 32, 3, 3], &ConvOptions::new([1, 1], [1, 1], [1, 1], 1)).unwrap();
        let (ty_n, tx_n) = tile_grid(&g);
        let tiles = ty_n * tx_n;
        let values = |len: usize, seed: usize| -> Vec<f32> { (0..len).map(|i| ((i * 7919 + seed * 104729) % 2003) as f32 / 1001.0 - 1.0).collect() };
        let [ph, pw] = padded_input(&g);
        let mut xp = vec![0.0; ph * pw * g.c_in];
        padded_channels_last(&values(g.c_in * g.plane(), 1), g.c_in, [g.h, g.w], g.pad, [ph, pw], &mut xp);
        let (mut v_generic, mut v_vector) = (vec![0.0; XI * block_stride(tiles * g.c_in)], vec![0.0; XI * block_stride(tiles * g.c_in)]);
        example_inputs(&g, &xp, &mut by_example(&mut v_generic, XI, 1, tiles * g.c_in).pop().unwrap());
        inputs(&g, &xp, &mut by_example(&mut v_vector, XI, 1, tiles * g.c_in).pop().unwrap());
        assert_eq!(v_generic, v_vector, "input transform");
        let m = values(XI * tiles * g.c_out, 2);
        let blocks: [&[f32]; XI] = std::array::from_fn(|xi| &m[xi * tiles * g.c_out..][..tiles * g.c_out]);
        let bias = values(g.c_out, 3);
        let [oh, ow] = padded_output(&g);
        let (mut y_generic, mut y_vector) = (vec![0.0; oh * ow * g.c_out], vec![0.0; oh * ow * g.c_out]);
        example_outputs(&g, &blocks, Some(&bias), &mut y_generic);
        outputs(&g, &blocks, Some(&bias), &mut y_vector);
        assert_eq!(y_generic, y_vector, "output transform");
        let (mut dm_generic, mut dm_vector) = (vec![0.0; XI * block_stride(tiles * g.c_out)], vec![0.0; XI * block_stride(tiles * g.c_out)]);
        example_output_grads(&g, &y_generic, &mut by_example(&mut dm_generic, XI, 1, tiles * g.c_out).pop().unwrap());
        output_grads(&g, &y_generic, &mut by_example(&mut dm_vector, XI, 1, tiles * g.c_out).pop().unwrap());
        assert_eq!(dm_generic, dm_vector, "output gradient transform");
    }
}
