//! Convolution by kernel taps, for small feature maps with many channels: the ConvRNNs' cells
//! at 4×4 and 2×2 (`rgc_shallow`'s conv4 and conv5 at 64 px).
//!
//! There, most of a patch matrix is padding: at 2×2 with a 3×3 kernel, 20 of every 36 patch
//! entries are zeros, and the products of [`super::forward`] multiply them all (the 512-channel
//! cell's input gradient ran at a third of the cores' peak). Here each tap (i, j) of the kernel
//! is its own product over only the positions it reaches:
//!
//! y[:, o] += W[:, :, i, j] · x[:, o + (i, j) − pad] for every o with o + (i, j) − pad inside x.
//!
//! In a channel-major layout ([C, H, W, N]: each channel's plane holds, at every position, the
//! batch's values side by side) the positions a tap reaches on one output row are one run of
//! columns in both x and y, and rows whose runs meet merge into one. So a tap's product reads
//! x and writes y where they lie, no patch matrix is built, and nothing multiplies padding.
//! Moving x (and δy) to that layout and the result back is one transpose each.
//!
//! The products are split by blocks of [`BLOCK`] output rows (output channels; input channels
//! for δx), each block summing its taps in a fixed order on one thread, so every result is the
//! same whatever the number of threads.

use gemm::Parallelism;

use super::{Geometry, Mat, filled_by_chunks, gemm_raw, transpose_into, transpose_strided};

/// Rows (channels) of the result per task.
const BLOCK: usize = 64;

/// Largest output map (positions) taken by taps: at 4×4 with a 3×3 kernel a third of the patch
/// entries are padding, at 8×8 a sixth, where the patch matrix's products were as fast (rgc_shallow's
/// 256-channel conv3 at 64 px, one thread: forward 20.2 ms a call by taps against 18.6).
const SMALL_MAP: usize = 16;

/// Fewest channels on each side taken by taps: with fewer, each tap's product is too shallow
/// (its depth is C_in, or C_out for δx) to pay for its own pass over the result.
const MIN_CHANNELS: usize = 64;

/// Whether [`forward`], [`input_grad`] and [`weight_grad`] serve this convolution: one group,
/// stride 1, a small output map and many channels.
pub(super) fn suits(g: &Geometry) -> bool {
    g.groups == 1 && g.stride == [1, 1] && g.positions() <= SMALL_MAP && g.c_in >= MIN_CHANNELS && g.c_out >= MIN_CHANNELS
}

/// One product of one tap: the output columns `y0..y0 + len` read the input columns
/// `x0..x0 + len`. Columns are (position, example) pairs of the channel-major layout.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Run {
    tap: usize,
    y0: usize,
    x0: usize,
    len: usize,
}

/// Every tap's runs, in tap order: one per output row the tap reaches, merged where they meet.
fn runs(g: &Geometry) -> Vec<Run> {
    let n = g.batch;
    let mut runs: Vec<Run> = Vec::new();
    for i in 0..g.kh {
        for j in 0..g.kw {
            let tap = i * g.kw + j;
            // The tap reads input (oy + dy, ox + dx) for output (oy, ox).
            let dy = (i * g.dilation[0]) as isize - g.pad[0] as isize;
            let dx = (j * g.dilation[1]) as isize - g.pad[1] as isize;
            let ox0 = (-dx).max(0) as usize;
            let ox1 = (g.w as isize - dx).clamp(0, g.ow as isize) as usize;
            if ox0 >= ox1 {
                continue;
            }
            for oy in 0..g.oh {
                let iy = oy as isize + dy;
                if iy < 0 || iy >= g.h as isize {
                    continue;
                }
                let y0 = (oy * g.ow + ox0) * n;
                let x0 = (iy as usize * g.w + (ox0 as isize + dx) as usize) * n;
                let len = (ox1 - ox0) * n;
                match runs.last_mut() {
                    Some(r) if r.tap == tap && r.y0 + r.len == y0 && r.x0 + r.len == x0 => r.len += len,
                    _ => runs.push(Run { tap, y0, x0, len }),
                }
            }
        }
    }
    runs
}

/// The distance between the per-tap slices of a block's kernel (or δW) buffer holding `len`
/// elements each: one cache line more than `len`. Slices a multiple of 4 KiB apart (64 rows ×
/// 512 channels: 128 KiB) put the nine rows a transpose reads or writes together in the same
/// L1 sets; the 512-channel δW's transpose took 0.70 ms a block that way, eight times the
/// 256-channel one's for twice the data.
fn sliced(len: usize) -> usize {
    len + 16
}

/// `t` [N, C·P] (NCHW) as [C·P, N] (channel-major), or back with the roles swapped.
fn transposed(t: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; t.len()];
    transpose_into(t, rows, cols, &mut out);
    out
}

/// `conv2d(x, weight) + bias` for x [N, C_in, H, W] (see [`suits`]).
pub(super) fn forward(g: &Geometry, x: &[f32], weight: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let (n, taps) = (g.batch, g.kh * g.kw);
    let (x_cols, y_cols) = (g.plane() * n, g.positions() * n);
    let xt = transposed(x, n, g.c_in * g.plane());
    let runs = runs(g);
    let yt = filled_by_chunks(g.c_out * y_cols, BLOCK * y_cols, Vec::new, |by_tap, b, block| {
        let (c0, rows) = (b * BLOCK, block.len() / y_cols);
        // The block's kernel rows as [taps, rows, C_in]: each tap's slice runs along C_in, the
        // products' depth, as gemm reads it best.
        let slice = sliced(rows * g.c_in);
        by_tap.resize(taps * slice, 0.0);
        transpose_strided(&weight[c0 * g.c_in * taps..], taps, rows * g.c_in, taps, by_tap, slice);
        if let Some(bias) = bias {
            for (r, row) in block.chunks_mut(y_cols).enumerate() {
                row.fill(bias[c0 + r]);
            }
        }
        for r in &runs {
            let w = Mat { ptr: by_tap[r.tap * slice..].as_ptr(), rs: g.c_in as isize, cs: 1 };
            let xs = Mat { ptr: xt[r.x0..].as_ptr(), rs: x_cols as isize, cs: 1 };
            // SAFETY: dst is this block's rows × the run's columns (y0 + len ≤ y_cols); w is the
            // tap's [rows, C_in] slice; xs spans C_in rows of x_cols from x0, x0 + len ≤ x_cols.
            unsafe { gemm_raw(block[r.y0..].as_mut_ptr(), [y_cols as isize, 1], rows, r.len, g.c_in, w, xs, true, Parallelism::None) };
        }
    });
    transposed(&yt, g.c_out * g.positions(), n)
}

/// δx through `kernel` for δy [N, C_out, H_out, W_out], shaped like x (see [`suits`]).
pub(super) fn input_grad(g: &Geometry, kernel: &[f32], dy: &[f32]) -> Vec<f32> {
    let (n, taps) = (g.batch, g.kh * g.kw);
    let (x_cols, y_cols) = (g.plane() * n, g.positions() * n);
    let dyt = transposed(dy, n, g.c_out * g.positions());
    let runs = runs(g);
    let dxt = filled_by_chunks(g.c_in * x_cols, BLOCK * x_cols, Vec::new, |transposed_kernel, b, block| {
        let (c0, rows) = (b * BLOCK, block.len() / x_cols);
        // Kᵀ of the block's input channels as [rows, taps, C_out]: each tap's [rows, C_out]
        // runs along C_out, the products' depth.
        transposed_kernel.resize(rows * taps * g.c_out, 0.0);
        transpose_strided(&kernel[c0 * taps..], g.c_in * taps, g.c_out, rows * taps, transposed_kernel, g.c_out);
        for r in &runs {
            let k = Mat { ptr: transposed_kernel[r.tap * g.c_out..].as_ptr(), rs: (taps * g.c_out) as isize, cs: 1 };
            let d = Mat { ptr: dyt[r.y0..].as_ptr(), rs: y_cols as isize, cs: 1 };
            // SAFETY: dst is this block's rows × the run's columns (x0 + len ≤ x_cols); k's last
            // element is Kᵀ[rows − 1, tap, C_out − 1]; d spans C_out rows of y_cols from y0.
            unsafe { gemm_raw(block[r.x0..].as_mut_ptr(), [x_cols as isize, 1], rows, r.len, g.c_out, k, d, true, Parallelism::None) };
        }
    });
    transposed(&dxt, g.c_in * g.plane(), n)
}

/// δW for δy [N, C_out, H_out, W_out], shaped like W (see [`suits`]): each block of output
/// channels sums every tap's [rows, C_in] slice over its runs, then transposes the slices into
/// its rows of δW.
pub(super) fn weight_grad(g: &Geometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (n, taps) = (g.batch, g.kh * g.kw);
    let (x_cols, y_cols) = (g.plane() * n, g.positions() * n);
    // x position-major ([H, W, N, C_in]: each column's channels contiguous) and δy
    // channel-major: the layouts in which gemm reads both operands of δW's products in place.
    let xp = transposed(&transposed(x, n, g.c_in * g.plane()), g.c_in, x_cols);
    let dyt = transposed(dy, n, g.c_out * g.positions());
    let runs = runs(g);
    filled_by_chunks(g.c_out * g.c_in * taps, BLOCK * g.c_in * taps, Vec::new, |by_tap, b, block| {
        let (c0, rows) = (b * BLOCK, block.len() / (g.c_in * taps));
        let slice = sliced(rows * g.c_in);
        by_tap.clear();
        by_tap.resize(taps * slice, 0.0);
        for r in &runs {
            let d = Mat { ptr: dyt[c0 * y_cols + r.y0..].as_ptr(), rs: y_cols as isize, cs: 1 };
            let xs = Mat { ptr: xp[r.x0 * g.c_in..].as_ptr(), rs: g.c_in as isize, cs: 1 };
            let dst = &mut by_tap[r.tap * slice..][..rows * g.c_in];
            // SAFETY: dst is the tap's [rows, C_in] slice; d spans `rows` rows of δy from c0 and
            // xs the run's columns of x, each with all its C_in channels.
            unsafe { gemm_raw(dst.as_mut_ptr(), [g.c_in as isize, 1], rows, g.c_in, r.len, d, xs, true, Parallelism::None) };
        }
        transpose_strided(by_tap, slice, taps, rows * g.c_in, block, taps);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::ops::ConvOptions;

    /// At 2×2 with a 3×3 kernel and padding 1 every tap reaches some output, the centre tap all
    /// four in one run (its rows meet), a corner tap one position.
    #[test]
    fn runs_cover_exactly_the_positions_each_tap_reaches() {
        let g = Geometry::new(&[3, 64, 2, 2], &[64, 64, 3, 3], &ConvOptions::new([1, 1], [1, 1], [1, 1], 1)).unwrap();
        let runs = runs(&g);
        assert_eq!(runs.iter().filter(|r| r.tap == 4).collect::<Vec<_>>(), [&Run { tap: 4, y0: 0, x0: 0, len: 12 }]);
        assert_eq!(runs.iter().filter(|r| r.tap == 0).collect::<Vec<_>>(), [&Run { tap: 0, y0: 9, x0: 0, len: 3 }]);
        // 16 (output, input) position pairs in all, 3 examples each.
        assert_eq!(runs.iter().map(|r| r.len).sum::<usize>(), 16 * 3);
    }
}
