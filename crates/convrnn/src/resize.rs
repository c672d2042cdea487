//! Resizing feature maps between layers of different size.
//!
//! A resize is written as two fixed matrix products, `out = A_h · X · A_wᵀ`, with the
//! interpolation weights in `A_h` (`[h_out, h_in]`) and `A_w` (`[w_out, w_in]`). It is exact
//! bilinear (align-corners, as tnn's `tf.image.resize_images(..., align_corners=True)`) or
//! nearest, has a backward on every backend (burn's bilinear `interpolate` has none on
//! wgpu / CUDA) and gives the same numbers everywhere.

use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ResizeMode {
    /// Bilinear with aligned corners.
    #[default]
    Bilinear,
    /// Nearest neighbour (the source pixel whose aligned-corner position is closest).
    Nearest,
}

/// The `[out, in]` interpolation matrix of one axis.
pub fn interpolation_matrix(n_in: usize, n_out: usize, mode: ResizeMode) -> Vec<f32> {
    let mut a = vec![0f32; n_out * n_in];
    for o in 0..n_out {
        // Aligned corners: output 0 ↦ input 0, output n_out−1 ↦ input n_in−1.
        let pos = if n_out == 1 { 0.0 } else { o as f64 * (n_in - 1) as f64 / (n_out - 1) as f64 };
        match mode {
            ResizeMode::Bilinear => {
                let lo = pos.floor() as usize;
                let hi = (lo + 1).min(n_in - 1);
                let t = (pos - lo as f64) as f32;
                a[o * n_in + lo] += 1.0 - t;
                a[o * n_in + hi] += t;
            }
            ResizeMode::Nearest => a[o * n_in + (pos.round() as usize).min(n_in - 1)] = 1.0,
        }
    }
    a
}

/// Resizes `[n, c, h, w]` to `[n, c, size[0], size[1]]` (identity when the size matches).
pub fn resize(x: Tensor<4>, size: [usize; 2], mode: ResizeMode) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    if [h, w] == size {
        return x;
    }
    let device = x.device().without_autodiff();
    let constant = |values: Vec<f32>, shape: [usize; 4], device: &Device| {
        let t = Tensor::<4>::from_data(TensorData::new(values, shape), device).cast(x.dtype());
        if x.is_autodiff() { Tensor::from_inner(t) } else { t }
    };
    let a_h = constant(interpolation_matrix(h, size[0], mode), [1, 1, size[0], h], &device);
    let a_w = constant(interpolation_matrix(w, size[1], mode), [1, 1, size[1], w], &device);
    a_h.matmul(x).matmul(a_w.swap_dims(2, 3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilinear_rows_sum_to_one_and_keep_corners() {
        let a = interpolation_matrix(4, 7, ResizeMode::Bilinear);
        for row in a.chunks(4) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        assert_eq!(a[0], 1.0);
        assert_eq!(a[6 * 4 + 3], 1.0);
    }

    #[test]
    fn bilinear_upsampling_of_a_ramp_is_a_ramp() {
        let device = Device::flex();
        let x = Tensor::<4>::from_data(TensorData::new(vec![0.0f32, 1.0, 2.0, 3.0], [1, 1, 1, 4]), &device);
        let y = resize(x, [1, 7], ResizeMode::Bilinear).into_data().try_into_vec_as::<f32>().unwrap();
        let expected = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0];
        assert!(y.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-6), "{y:?}");
    }

    #[test]
    fn nearest_picks_source_pixels() {
        let device = Device::flex();
        let x = Tensor::<4>::from_data(TensorData::new(vec![5.0f32, 7.0], [1, 1, 2, 1]), &device);
        let y = resize(x, [3, 2], ResizeMode::Nearest).into_data().try_into_vec_as::<f32>().unwrap();
        assert_eq!(y, vec![5.0, 5.0, 7.0, 7.0, 7.0, 7.0]);
    }
}
