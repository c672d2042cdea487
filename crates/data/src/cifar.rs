//! CIFAR-10 in its binary distribution: `data_batch_{1..5}.bin` and `test_batch.bin`, each
//! record one label byte then 3072 pixel bytes (R, G, B planes of 32×32).

use std::path::Path;

use crate::error::{DataError, Result};
use crate::set::ImageSet;

const RECORD: usize = 1 + 3 * 32 * 32;
pub(crate) const CLASSES: [&str; 10] = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// Loads the training batches and the test batch from `dir` (the `cifar-10-batches-bin` folder).
/// Training batches that are absent are skipped, so a subset (say `data_batch_1.bin` only)
/// works; at least one must exist.
pub fn load(dir: &Path) -> Result<(ImageSet, ImageSet)> {
    if !dir.is_dir() {
        return Err(DataError::format(dir, "not a folder (expected the CIFAR-10 binary batches)"));
    }
    let mut train = empty();
    let mut found = 0;
    for i in 1..=5 {
        let path = dir.join(format!("data_batch_{i}.bin"));
        if path.exists() {
            train.extend(&load_batch(&path)?);
            found += 1;
        }
    }
    if found == 0 {
        return Err(DataError::format(dir, "no data_batch_*.bin file"));
    }
    let test = load_batch(&dir.join("test_batch.bin"))?;
    Ok((train, test))
}

fn empty() -> ImageSet {
    ImageSet { pixels: Vec::new(), labels: Vec::new(), shape: [3, 32, 32], class_names: CLASSES.map(String::from).to_vec() }
}

/// Reads one batch file.
pub fn load_batch(path: &Path) -> Result<ImageSet> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    if bytes.is_empty() || bytes.len() % RECORD != 0 {
        return Err(DataError::format(
            path,
            format!("{} bytes is not a whole number of {RECORD}-byte CIFAR-10 records (truncated?)", bytes.len()),
        ));
    }
    let mut set = empty();
    for record in bytes.chunks_exact(RECORD) {
        if record[0] >= 10 {
            return Err(DataError::format(path, format!("label byte {} is not a CIFAR-10 class", record[0])));
        }
        set.labels.push(record[0] as u32);
        set.pixels.extend_from_slice(&record[1..]);
    }
    Ok(set)
}

/// Writes a set as one CIFAR-10 binary batch (3×32×32 images only); used by tests and tools.
pub fn write_batch(set: &ImageSet, path: &Path) -> Result<()> {
    if set.shape != [3, 32, 32] {
        return Err(DataError::Config(format!("CIFAR-10 batches hold 3×32×32 images, not {:?}", set.shape)));
    }
    let mut bytes = Vec::with_capacity(set.len() * RECORD);
    for i in 0..set.len() {
        bytes.push(set.labels[i] as u8);
        bytes.extend_from_slice(set.image(i));
    }
    std::fs::write(path, bytes).map_err(|e| DataError::io(path, e))
}
