//! The UCI optical-digits set (8×8, 1797 images), embedded in the binary.

use std::io::Read;
use std::path::Path;

use crate::error::{DataError, Result};
use crate::set::ImageSet;

/// `digits.csv.gz`: 64 comma-separated integers in 0..=16 then the label, one image per line.
static DIGITS_CSV_GZ: &[u8] = include_bytes!("../../../datasets/digits.csv.gz");

/// The embedded digits set: no file, no download.
pub fn embedded() -> ImageSet {
    parse(DIGITS_CSV_GZ, Path::new("<embedded digits.csv.gz>")).expect("the embedded digits set is valid")
}

/// Reads a digits file in the same format from disk (plain or gzipped CSV).
pub fn load(path: &Path) -> Result<ImageSet> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    parse(&bytes, path)
}

fn parse(bytes: &[u8], path: &Path) -> Result<ImageSet> {
    let text = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = String::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_string(&mut out)
            .map_err(|e| DataError::format(path, format!("not a valid gzip file ({e})")))?;
        out
    } else {
        String::from_utf8(bytes.to_vec()).map_err(|_| DataError::format(path, "not UTF-8 text"))?
    };
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for (line_no, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let values: Vec<&str> = line.split(',').collect();
        if values.len() != 65 {
            return Err(DataError::format(path, format!("line {}: expected 65 values, found {}", line_no + 1, values.len())));
        }
        for v in &values[..64] {
            let v: u32 = v.trim().parse().ok().filter(|&v| v <= 16).ok_or_else(|| {
                DataError::format(path, format!("line {}: pixel {v:?} is not an integer in 0..=16", line_no + 1))
            })?;
            // 0..=16 counts of on-pixels, spread over the byte range.
            pixels.push(((v * 255 + 8) / 16) as u8);
        }
        let label: u32 = values[64].trim().parse().ok().filter(|&l| l < 10).ok_or_else(|| {
            DataError::format(path, format!("line {}: label {:?} is not a digit", line_no + 1, values[64]))
        })?;
        labels.push(label);
    }
    if labels.is_empty() {
        return Err(DataError::format(path, "no images"));
    }
    ImageSet::new(pixels, labels, [1, 8, 8], (0..10).map(|d| d.to_string()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_set_has_all_images_and_balanced_labels() {
        let set = embedded();
        assert_eq!(set.len(), 1797);
        assert_eq!(set.shape, [1, 8, 8]);
        let mut counts = [0; 10];
        set.labels.iter().for_each(|&l| counts[l as usize] += 1);
        assert!(counts.iter().all(|&c| (170..=190).contains(&c)), "{counts:?}");
        assert_eq!(*set.pixels.iter().max().unwrap(), 255);
    }

    #[test]
    fn truncated_line_is_a_format_error_naming_the_line() {
        let err = parse(b"1,2,3\n", Path::new("x.csv")).unwrap_err().to_string();
        assert!(err.contains("x.csv") && err.contains("line 1"), "{err}");
    }
}
