//! MNIST (and Fashion-MNIST, KMNIST…) in IDX format, raw or gzipped:
//! `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`,
//! `t10k-labels-idx1-ubyte`, each optionally with a `.gz` suffix.

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::set::ImageSet;

/// Loads the train and test splits from `dir`.
pub fn load(dir: &Path) -> Result<(ImageSet, ImageSet)> {
    if !dir.is_dir() {
        return Err(DataError::format(dir, "not a folder (expected MNIST IDX files)"));
    }
    let train = load_pair(&find(dir, "train-images-idx3-ubyte")?, &find(dir, "train-labels-idx1-ubyte")?)?;
    let test = load_pair(&find(dir, "t10k-images-idx3-ubyte")?, &find(dir, "t10k-labels-idx1-ubyte")?)?;
    Ok((train, test))
}

/// `[1, rows, cols]` and the class count of the training split, from the image file's IDX
/// header and the (small) label file, without reading the images.
pub fn shape_and_classes(dir: &Path) -> Result<([usize; 3], usize)> {
    if !dir.is_dir() {
        return Err(DataError::format(dir, "not a folder (expected MNIST IDX files)"));
    }
    let images = find(dir, "train-images-idx3-ubyte")?;
    let mut reader = std::io::BufReader::new(std::fs::File::open(&images).map_err(|e| DataError::io(&images, e))?);
    let gz = reader.fill_buf().map_err(|e| DataError::io(&images, e))?.starts_with(&[0x1f, 0x8b]);
    let mut head = [0u8; 16];
    let read = if gz { flate2::bufread::GzDecoder::new(reader).read_exact(&mut head) } else { reader.read_exact(&mut head) };
    if read.is_err() || head[..4] != [0, 0, 0x08, 3] {
        return Err(DataError::format(&images, "not an IDX file of unsigned-byte images (or a truncated header)"));
    }
    let dim = |i: usize| u32::from_be_bytes(head[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize;
    let labels = find(dir, "train-labels-idx1-ubyte")?;
    let (_, raw) = parse_idx(&labels, &read_maybe_gz(&labels)?, 1)?;
    Ok(([1, dim(1), dim(2)], class_count(&raw)))
}

/// Classes of a split: at least the ten digits, more if a label says so.
fn class_count(labels: &[u8]) -> usize {
    (labels.iter().copied().max().unwrap_or(0) as usize + 1).max(10)
}

fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    [stem.to_string(), format!("{stem}.gz")]
        .into_iter()
        .map(|name| dir.join(name))
        .find(|p| p.exists())
        .ok_or_else(|| DataError::format(dir, format!("missing {stem} (or {stem}.gz)")))
}

fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .map_err(|e| DataError::format(path, format!("corrupt gzip data ({e})")))?;
        Ok(out)
    } else {
        Ok(bytes)
    }
}

/// Parses an IDX file of unsigned bytes; returns its dimensions and data.
fn parse_idx(path: &Path, bytes: &[u8], dims_expected: usize) -> Result<(Vec<usize>, Vec<u8>)> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 {
        return Err(DataError::format(path, "not an IDX file of unsigned bytes"));
    }
    let dims = bytes[3] as usize;
    if dims != dims_expected {
        return Err(DataError::format(path, format!("IDX file has {dims} dimensions, expected {dims_expected}")));
    }
    let header = 4 + 4 * dims;
    if bytes.len() < header {
        return Err(DataError::format(path, "truncated IDX header"));
    }
    let shape: Vec<usize> = (0..dims)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let expected = shape.iter().product::<usize>();
    let data = &bytes[header..];
    if data.len() != expected {
        return Err(DataError::format(
            path,
            format!("IDX header promises {expected} bytes of data, file holds {} (truncated?)", data.len()),
        ));
    }
    Ok((shape, data.to_vec()))
}

fn load_pair(images: &Path, labels: &Path) -> Result<ImageSet> {
    let (shape, pixels) = parse_idx(images, &read_maybe_gz(images)?, 3)?;
    let (lshape, labels_raw) = parse_idx(labels, &read_maybe_gz(labels)?, 1)?;
    if lshape[0] != shape[0] {
        return Err(DataError::format(labels, format!("{} labels for {} images", lshape[0], shape[0])));
    }
    let classes = class_count(&labels_raw);
    ImageSet::new(
        pixels,
        labels_raw.into_iter().map(u32::from).collect(),
        [1, shape[1], shape[2]],
        (0..classes).map(|c| c.to_string()).collect(),
    )
}

/// Writes a single-channel set as an IDX image file and an IDX label file (gzipped if the
/// path ends in `.gz`); used by tests and tools.
pub fn write_pair(set: &ImageSet, images: &Path, labels: &Path) -> Result<()> {
    let [c, h, w] = set.shape;
    if c != 1 {
        return Err(DataError::Config("IDX images are single-channel".into()));
    }
    let mut img = vec![0, 0, 8, 3];
    for d in [set.len(), h, w] {
        img.extend_from_slice(&(d as u32).to_be_bytes());
    }
    img.extend_from_slice(&set.pixels);
    let mut lab = vec![0, 0, 8, 1];
    lab.extend_from_slice(&(set.len() as u32).to_be_bytes());
    lab.extend(set.labels.iter().map(|&l| l as u8));
    for (path, bytes) in [(images, img), (labels, lab)] {
        let bytes = if path.extension().is_some_and(|e| e == "gz") {
            use std::io::Write;
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(&bytes).and_then(|_| enc.finish()).map_err(|e| DataError::io(path, e))?
        } else {
            bytes
        };
        std::fs::write(path, bytes).map_err(|e| DataError::io(path, e))?;
    }
    Ok(())
}
