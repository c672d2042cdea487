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
/// summed cross-entropy). A prediction is a top-k hit only when the target's logit is finite
/// and fewer than k other logits are not strictly below it: a tie with the target, or a NaN
/// anywhere in the row, counts against it, so constant or NaN logits score 0 %, not 100 %.
pub fn score_logits(logits: &[f32], classes: usize, labels: &[u32]) -> (usize, usize, f64) {
    let mut top1 = 0;
    let mut top5 = 0;
    let mut loss = 0.0;
    for (row, &label) in logits.chunks_exact(classes).zip(labels) {
        let target = row[label as usize];
        // Other logits ≥ the target, or NaN (a NaN compares as "not below").
        let rivals = row.iter().enumerate().filter(|&(k, &v)| k != label as usize && !(v < target)).count();
        let finite = target.is_finite();
        top1 += (finite && rivals == 0) as usize;
        top5 += (finite && rivals < 5) as usize;
        let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let log_sum = row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
        loss += log_sum - target as f64;
    }
    (top1, top5, loss)
}

/// Top-1 hits of a batch, counted on the device under [`score_logits`]'s rule: every other
/// logit strictly below the target's, and the target finite. One comparison of the logits with
/// the target's broadcast logit, so the training loop reads back one integer per log line.
pub fn top1_hits(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1, Int> {
    let [n, classes] = logits.dims();
    let target = logits.clone().gather(1, targets.reshape([n, 1]));
    // The target is not below itself, so a hit has exactly `classes − 1` logits below it.
    let below = logits.lower(target.clone().expand([n, classes])).int().sum_dim(1);
    below.equal_elem((classes - 1) as i64).bool_and(target.is_finite()).int().sum()
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

    /// Rows, labels and whether each is a (top-1, top-5) hit, worked out by hand.
    fn tie_and_nan_cases() -> (Vec<f32>, Vec<u32>, Vec<(bool, bool)>) {
        let nan = f32::NAN;
        let rows: [([f32; 6], u32, (bool, bool)); 9] = [
            ([0.0; 6], 2, (false, false)),                     // constant logits: a 6-way tie
            ([nan; 6], 0, (false, false)),                     // all NaN
            ([1.0, 3.0, 3.0, 0.0, 0.0, 0.0], 1, (false, true)), // tied for the max with one other
            ([1.0, 3.0, 2.0, 0.0, 0.0, 0.0], 1, (true, true)),  // strictly the largest
            ([1.0, 3.0, nan, 0.0, 0.0, 0.0], 1, (false, true)), // a NaN rival
            ([1.0, nan, 2.0, 0.0, 0.0, 0.0], 1, (false, false)), // a NaN target
            ([2.0, 2.0, 2.0, 2.0, 2.0, 1.0], 5, (false, false)), // five others above: not top-5
            ([2.0, 2.0, 2.0, 2.0, 1.0, 1.0], 5, (false, false)), // four above and a tie: five rivals
            ([2.0, 2.0, 2.0, 2.0, 0.0, 1.0], 5, (false, true)), // four above: top-5
        ];
        (rows.iter().flat_map(|r| r.0).collect(), rows.iter().map(|r| r.1).collect(), rows.iter().map(|r| r.2).collect())
    }

    #[test]
    fn ties_and_nan_count_as_wrong() {
        let (logits, labels, expected) = tie_and_nan_cases();
        for (i, &(top1, top5)) in expected.iter().enumerate() {
            let (t1, t5, _) = score_logits(&logits[i * 6..(i + 1) * 6], 6, &labels[i..i + 1]);
            assert_eq!((t1 == 1, t5 == 1), (top1, top5), "row {i}: {:?}", &logits[i * 6..(i + 1) * 6]);
        }
    }

    #[test]
    fn the_training_window_counts_hits_like_score_logits() {
        let (logits, labels, expected) = tie_and_nan_cases();
        let device = Device::flex();
        let n = labels.len();
        let logits = Tensor::<2>::from_data(TensorData::new(logits, [n, 6]), &device);
        let targets = Tensor::<1, Int>::from_data(TensorData::new(labels.iter().map(|&l| l as i64).collect::<Vec<_>>(), [n]), &device);
        let hits = top1_hits(logits, targets).into_scalar::<i64>();
        assert_eq!(hits as usize, expected.iter().filter(|e| e.0).count());
        // Row by row, so a miscount cannot hide behind a compensating one.
        let (rows, labels, _) = tie_and_nan_cases();
        for (i, e) in expected.iter().enumerate() {
            let row = Tensor::<2>::from_data(TensorData::new(rows[i * 6..(i + 1) * 6].to_vec(), [1, 6]), &device);
            let target = Tensor::<1, Int>::from_data(TensorData::new(vec![labels[i] as i64], [1]), &device);
            assert_eq!(top1_hits(row, target).into_scalar::<i64>() == 1, e.0, "row {i}");
        }
    }
}
