//! Evaluation: loss, top-1 and top-5 accuracy of a model on a split, without autodiff.

use burn::tensor::{Device, Int, Tensor, TensorData};
use plastic_data::{Batch, ImageSet, Normalization, eval_batches};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::network::Network;

/// Results on one split.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    pub loss: f64,
    pub accuracy: f64,
    pub top5: f64,
    pub examples: usize,
}

/// Uploads a batch: images `[n, c, h, w]` and integer targets.
pub fn batch_tensors(batch: &Batch, device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
    let images = Tensor::<4>::from_data(TensorData::new(batch.images.clone(), batch.shape), device);
    let labels: Vec<i64> = batch.labels.iter().map(|&l| l as i64).collect();
    let targets = Tensor::<1, Int>::from_data(TensorData::new(labels, [batch.len()]), device);
    (images, targets)
}

/// Per-example correctness counts from host logits `[n, classes]`: (top-1 hits, top-5 hits,
/// summed cross-entropy).
pub fn score_logits(logits: &[f32], classes: usize, labels: &[u32]) -> (usize, usize, f64) {
    let mut top1 = 0;
    let mut top5 = 0;
    let mut loss = 0.0;
    for (row, &label) in logits.chunks_exact(classes).zip(labels) {
        let target = row[label as usize];
        let better = row.iter().filter(|&&v| v > target).count();
        top1 += (better == 0) as usize;
        top5 += (better < 5) as usize;
        let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let log_sum = row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
        loss += log_sum - target as f64;
    }
    (top1, top5, loss)
}

/// Evaluates `model` (switched to evaluation mode: no autodiff, norms use running statistics).
pub fn evaluate(model: &Network, set: &ImageSet, norm: &Normalization, batch_size: usize, device: &Device) -> EvalResult {
    let model = burn::module::Module::valid(model);
    let device = device.clone().without_autodiff();
    let classes = set.num_classes();
    let (mut top1, mut top5, mut loss) = (0, 0, 0.0);
    for batch in eval_batches(set, batch_size, norm) {
        let (images, _) = batch_tensors(&batch, &device);
        let logits = model.forward(images).logits.into_data().try_into_vec_as::<f32>().expect("logits are floats");
        let (a, b, l) = score_logits(&logits, classes, &batch.labels);
        top1 += a;
        top5 += b;
        loss += l;
    }
    let n = set.len().max(1) as f64;
    EvalResult { loss: loss / n, accuracy: top1 as f64 / n, top5: top5 as f64 / n, examples: set.len() }
}

/// Per-step readout outputs of a ConvRNN on the first `limit` images of `set`, as CSV rows
/// `example,label,step,prediction,confidence,p_label` (softmax probabilities), so users can
/// compute object solution times (the first step at which an image is solved and stays so).
pub fn per_step_csv(model: &Network, set: &ImageSet, norm: &Normalization, batch_size: usize, limit: usize, device: &Device) -> Result<String> {
    let Network::ConvRnn(rnn) = burn::module::Module::valid(model) else {
        return Err(TrainError::Run("--per-step needs a ConvRNN (model.kind = \"convrnn\")".into()));
    };
    let device = device.clone().without_autodiff();
    let probe = set.select(&(0..limit.min(set.len())).collect::<Vec<_>>());
    let classes = probe.num_classes();
    let mut csv = String::from("example,label,step,prediction,confidence,p_label\n");
    let mut example = 0;
    for batch in eval_batches(&probe, batch_size, norm) {
        let (images, _) = batch_tensors(&batch, &device);
        let unrolled = rnn.forward(images, false);
        let steps: Vec<Vec<f32>> = unrolled
            .logits
            .into_iter()
            .map(|l| burn::tensor::activation::softmax(l, 1).into_data().try_into_vec_as::<f32>().expect("floats"))
            .collect();
        for (i, &label) in batch.labels.iter().enumerate() {
            for (t, probs) in steps.iter().enumerate() {
                let row = &probs[i * classes..(i + 1) * classes];
                let (pred, conf) = row.iter().enumerate().fold((0, f32::MIN), |best, (k, &p)| if p > best.1 { (k, p) } else { best });
                csv.push_str(&format!("{},{label},{t},{pred},{conf},{}\n", example + i, row[label as usize]));
            }
        }
        example += batch.len();
    }
    Ok(csv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_match_a_hand_computation() {
        // Two examples, 6 classes. The first is right; the second's target ranks 3rd.
        let logits = [5.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 3.0, 2.0, 1.0, 4.0, 0.0];
        let (t1, t5, loss) = score_logits(&logits, 6, &[0, 3]);
        assert_eq!((t1, t5), (1, 2));
        let ce = |row: &[f32], k: usize| row.iter().map(|v| (*v as f64).exp()).sum::<f64>().ln() - row[k] as f64;
        assert!((loss - ce(&logits[..6], 0) - ce(&logits[6..], 3)).abs() < 1e-9);
    }
}
