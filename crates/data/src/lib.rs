//! Data sets and batching for `plastic`.
//!
//! Every source is read into an in-memory [`ImageSet`] of bytes, split into train /
//! validation / test, and served as normalised `f32` batches in a fixed, seeded order by a
//! [`TrainLoader`] whose background threads prepare batches ahead.
//!
//! ```
//! use plastic_data::{DataConfig, LoaderSeeds, open};
//! let splits = open(&DataConfig::default()).unwrap(); // the embedded digits set
//! assert_eq!(splits.train.shape, [1, 8, 8]);
//! let loader = splits.train_loader(32, LoaderSeeds { order: 0, augmentation: 1 });
//! let batch = loader.batch(0);
//! assert_eq!(batch.shape, [32, 1, 8, 8]);
//! ```
//!
//! Sources: `digits` (embedded UCI optical digits, 8×8), `cifar10` (binary batches), `mnist`
//! (IDX, raw or gzipped), `image_folder` (one sub-folder per class, JPEG/PNG) and
//! `synthetic` (procedural bars or shapes).

pub mod cifar;
pub mod digits;
mod error;
pub mod folder;
mod loader;
pub mod mnist;
mod preprocessing;
mod set;
mod stimuli;
pub mod synthetic;
mod transform;

use std::path::PathBuf;
use std::sync::Arc;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub use error::{DataError, Result};
pub use loader::{BatchStream, LoaderSeeds, TrainLoader, eval_batches};
pub use preprocessing::{PREPROCESSING_FILE, Preprocessing};
pub use set::ImageSet;
pub use stimuli::{Stimuli, npz_strings, npz_write_strings};
pub use synthetic::{Pattern, SyntheticConfig};
pub use transform::{Augmentation, Batch, Normalization, make_batch};

/// Which data set to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataKind {
    /// UCI optical digits, 1797 images of 8×8, embedded in the binary (or read from `path`).
    Digits,
    /// CIFAR-10 binary batches in the folder `path`.
    Cifar10,
    /// MNIST-format IDX files in the folder `path`.
    Mnist,
    /// One sub-folder of images per class under `path` (or `path/train` and `path/test`).
    ImageFolder,
    /// Procedural images, see `[data.synthetic]`.
    Synthetic,
}

/// The `[data]` section of a run config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    pub kind: DataKind,
    /// File or folder to read (`cifar10`, `mnist`, `image_folder`; optional for `digits`).
    pub path: Option<PathBuf>,
    /// Resize images to `resolution × resolution` pixels (e.g. 64 for low-resolution "mouse"
    /// models). `image_folder` defaults to 64; the others keep their native size.
    pub resolution: Option<usize>,
    /// Colour channels for `image_folder` (1 = greyscale, 3 = RGB).
    pub channels: usize,
    /// The number of classes the model is built for. Default: the data's (an `image_folder`'s
    /// sub-folders). When given, the data must have exactly that many (checked when it is
    /// read); it lets a model be sized and inspected without its data.
    pub classes: Option<usize>,
    /// Fraction of the training images held out for validation.
    pub validation_fraction: f64,
    /// Fraction held out for testing when the source has no test split of its own
    /// (`digits`, `synthetic`, an `image_folder` without `train/` and `test/`).
    pub test_fraction: f64,
    /// Seed of the (stratified) train / validation / test split.
    pub split_seed: u64,
    /// Normalise each channel by the training split's mean and standard deviation.
    pub normalize: bool,
    /// Random-crop augmentation: pad by this many pixels and crop back. 0 = off.
    pub crop_padding: usize,
    /// Random horizontal-flip augmentation.
    pub flip: bool,
    /// Background threads preparing training batches.
    pub workers: usize,
    /// Keep at most this many training images (quick experiments, tests).
    pub train_limit: Option<usize>,
    /// Settings of the `synthetic` source.
    pub synthetic: SyntheticConfig,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            kind: DataKind::Digits,
            path: None,
            resolution: None,
            channels: 3,
            classes: None,
            validation_fraction: 0.1,
            test_fraction: 0.2,
            split_seed: 0,
            normalize: true,
            crop_padding: 0,
            flip: false,
            workers: 2,
            train_limit: None,
            synthetic: SyntheticConfig::default(),
        }
    }
}

impl DataConfig {
    /// Range checks; the message names the key (`data.<key>`).
    pub fn validate(&self) -> std::result::Result<(), String> {
        let frac = |name: &str, v: f64| {
            if (0.0..1.0).contains(&v) { Ok(()) } else { Err(format!("data.{name} = {v} must be in [0, 1)")) }
        };
        frac("validation_fraction", self.validation_fraction)?;
        frac("test_fraction", self.test_fraction)?;
        if self.validation_fraction + self.test_fraction >= 0.95 {
            return Err("data.validation_fraction + data.test_fraction leave under 5% for training".into());
        }
        if let Some(r) = self.resolution
            && !(4..=1024).contains(&r)
        {
            return Err(format!("data.resolution = {r} must be in 4..=1024"));
        }
        if self.kind == DataKind::ImageFolder && self.channels != 1 && self.channels != 3 {
            return Err(format!("data.channels = {} must be 1 or 3", self.channels));
        }
        if self.classes == Some(0) {
            return Err("data.classes must be ≥ 1".into());
        }
        if matches!(self.kind, DataKind::Cifar10 | DataKind::Mnist | DataKind::ImageFolder) && self.path.is_none() {
            return Err(format!("data.path is required for data.kind = {:?}", self.kind).to_lowercase());
        }
        if self.kind == DataKind::Synthetic {
            let s = &self.synthetic;
            if s.samples < 10 || !(4..=512).contains(&s.size) || !(1..=3).contains(&s.channels) || s.classes < 2 || !(0.0..=1.0).contains(&s.noise) {
                return Err("data.synthetic needs samples ≥ 10, size in 4..=512, channels in 1..=3, classes ≥ 2, noise in [0, 1]".into());
            }
        }
        if self.workers > 64 {
            return Err(format!("data.workers = {} must be at most 64", self.workers));
        }
        Ok(())
    }

    /// `[channels, height, width]` of the images and the number of classes, as [`open`] would
    /// give them, without reading the images: from the config where it says (`data.classes`,
    /// `image_folder`'s resolution and channels, `synthetic`, `digits`, `cifar10`), from the
    /// class sub-folders' names (`image_folder` without `classes`) or from the IDX header and
    /// label file (`mnist`).
    pub fn shape_and_classes(&self) -> Result<([usize; 3], usize)> {
        self.validate().map_err(DataError::Config)?;
        let square = |c: usize, native: usize| [c, self.resolution.unwrap_or(native), self.resolution.unwrap_or(native)];
        let (shape, classes) = match self.kind {
            // The digits format is 8×8 with digit labels, embedded or from a file.
            DataKind::Digits => (square(1, 8), 10),
            DataKind::Cifar10 => (square(3, 32), cifar::CLASSES.len()),
            DataKind::Synthetic => (square(self.synthetic.shape()[0], self.synthetic.shape()[1]), self.synthetic.num_classes()),
            DataKind::Mnist => {
                let ([c, h, w], classes) = mnist::shape_and_classes(self.path.as_deref().expect("validated"))?;
                (self.resolution.map_or([c, h, w], |r| [c, r, r]), classes)
            }
            DataKind::ImageFolder => {
                let shape = square(self.channels, 64);
                if let Some(classes) = self.classes {
                    return Ok((shape, classes));
                }
                let root = self.path.as_deref().expect("validated");
                let train = root.join("train");
                let root = if train.is_dir() && root.join("test").is_dir() { train } else { root.to_path_buf() };
                let names = folder::class_names(&root).map_err(|e| DataError::Config(format!("{e} (set data.classes to size the model without the data)")))?;
                (shape, names.len())
            }
        };
        Ok((shape, self.classes.unwrap_or(classes)))
    }
}

/// A data set split three ways, with the normalisation computed on the training split.
#[derive(Debug, Clone)]
pub struct Splits {
    pub train: Arc<ImageSet>,
    pub validation: ImageSet,
    pub test: ImageSet,
    pub normalization: Normalization,
    pub augmentation: Augmentation,
    pub workers: usize,
}

impl Splits {
    /// The training loader: batches of `batch_size` in an order fixed by `seeds`.
    pub fn train_loader(&self, batch_size: usize, seeds: LoaderSeeds) -> TrainLoader {
        TrainLoader::new(self.train.clone(), batch_size, seeds, self.normalization.clone(), self.augmentation, self.workers)
    }

    pub fn num_classes(&self) -> usize {
        self.train.num_classes()
    }

    /// `[channels, height, width]` of every image.
    pub fn shape(&self) -> [usize; 3] {
        self.train.shape
    }
}

/// Reads the configured source and splits it.
pub fn open(config: &DataConfig) -> Result<Splits> {
    config.validate().map_err(DataError::Config)?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let (pool, test) = match config.kind {
        DataKind::Digits => (config.path.as_deref().map_or_else(|| Ok(digits::embedded()), digits::load)?, None),
        DataKind::Cifar10 => {
            let (train, test) = cifar::load(config.path.as_deref().unwrap())?;
            (train, Some(test))
        }
        DataKind::Mnist => {
            let (train, test) = mnist::load(config.path.as_deref().unwrap())?;
            (train, Some(test))
        }
        DataKind::ImageFolder => {
            let root = config.path.as_deref().unwrap();
            let resolution = config.resolution.unwrap_or(64);
            if root.join("train").is_dir() && root.join("test").is_dir() {
                let train = folder::load(&root.join("train"), None, resolution, config.channels, threads)?;
                let test = folder::load(&root.join("test"), Some(&train.class_names), resolution, config.channels, threads)?;
                (train, Some(test))
            } else {
                (folder::load(root, None, resolution, config.channels, threads)?, None)
            }
        }
        DataKind::Synthetic => (synthetic::generate(&config.synthetic, config.split_seed), None),
    };
    let (pool, test) = match config.resolution {
        Some(r) if config.kind != DataKind::ImageFolder => (pool.resized(r), test.map(|t| t.resized(r))),
        _ => (pool, test),
    };
    if let Some(classes) = config.classes
        && classes != pool.num_classes()
    {
        let source = config.path.as_ref().map_or_else(|| format!("the {:?} set", config.kind).to_lowercase(), |p| p.display().to_string());
        return Err(DataError::Config(format!("data.classes = {classes}, but {source} has {} classes", pool.num_classes())));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(config.split_seed);
    let (train, validation, test) = match test {
        Some(test) => {
            let [train, validation] = stratified_split(&pool, &[config.validation_fraction], &mut rng);
            (train, validation, test)
        }
        None => {
            let [train, validation, test] = stratified_split(&pool, &[config.validation_fraction, config.test_fraction], &mut rng);
            (train, validation, test)
        }
    };
    let train = match config.train_limit {
        Some(limit) if limit < train.len() => train.select(&(0..limit).collect::<Vec<_>>()),
        _ => train,
    };
    if train.is_empty() {
        return Err(DataError::Config("the training split is empty".into()));
    }
    let normalization = if config.normalize {
        let (mean, std) = train.channel_stats();
        Normalization { mean, std }
    } else {
        Normalization::identity(train.shape[0])
    };
    Ok(Splits {
        train: Arc::new(train),
        validation,
        test,
        normalization,
        augmentation: Augmentation { crop_padding: config.crop_padding, flip: config.flip },
        workers: config.workers.max(1),
    })
}

/// Splits `set` per class: for fractions `[f1, f2, …]` returns `[rest, part1, part2, …]` where
/// part k holds round(f_k · n_c) images of each class c. The training part is shuffled, so a
/// `train_limit` keeps a class-balanced prefix.
fn stratified_split<const N: usize>(set: &ImageSet, fractions: &[f64], rng: &mut ChaCha8Rng) -> [ImageSet; N] {
    debug_assert_eq!(fractions.len() + 1, N);
    let mut parts: Vec<Vec<usize>> = vec![Vec::new(); N];
    for class in 0..set.num_classes() as u32 {
        let mut idx: Vec<usize> = (0..set.len()).filter(|&i| set.labels[i] == class).collect();
        idx.shuffle(rng);
        let mut start = 0;
        for (k, f) in fractions.iter().enumerate() {
            let take = ((idx.len() as f64) * f).round() as usize;
            let end = (start + take).min(idx.len());
            parts[k + 1].extend_from_slice(&idx[start..end]);
            start = end;
        }
        parts[0].extend_from_slice(&idx[start..]);
    }
    parts[0].shuffle(rng);
    for p in &mut parts[1..] {
        p.sort_unstable();
    }
    let sets: Vec<ImageSet> = parts.iter().map(|p| set.select(p)).collect();
    sets.try_into().unwrap_or_else(|_| unreachable!())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_split_is_disjoint_complete_and_stratified() {
        let s = open(&DataConfig::default()).unwrap();
        assert_eq!(s.train.len() + s.validation.len() + s.test.len(), 1797);
        let t = (s.test.len() as f64 / 1797.0 - 0.2).abs();
        assert!(t < 0.01, "test fraction off by {t}");
        // Every class is present in every split.
        for split in [&*s.train, &s.validation, &s.test] {
            for c in 0..10 {
                assert!(split.labels.contains(&c));
            }
        }
        // No image of the test split appears in the training split (digits has a few exact
        // duplicates, so compare counts of the pooled pixels instead of membership).
        let pooled: usize = [&*s.train, &s.validation, &s.test].iter().map(|x| x.pixels.len()).sum();
        assert_eq!(pooled, 1797 * 64);
    }

    #[test]
    fn split_seed_changes_the_split_deterministically() {
        let a = open(&DataConfig::default()).unwrap();
        let b = open(&DataConfig::default()).unwrap();
        let c = open(&DataConfig { split_seed: 1, ..DataConfig::default() }).unwrap();
        assert_eq!(a.test, b.test);
        assert_ne!(a.test, c.test);
    }

    #[test]
    fn normalised_training_batches_are_centred() {
        let s = open(&DataConfig::default()).unwrap();
        let all: Vec<usize> = (0..s.train.len()).collect();
        let b = make_batch(&s.train, &all, &s.normalization, None);
        let mean = b.images.iter().map(|&v| v as f64).sum::<f64>() / b.images.len() as f64;
        let var = b.images.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / b.images.len() as f64;
        assert!(mean.abs() < 1e-4 && (var - 1.0).abs() < 1e-3, "mean {mean} var {var}");
    }

    /// What `shape_and_classes` says without reading equals what `open` finds by reading.
    #[test]
    fn shape_and_classes_agree_with_the_opened_set() {
        let synthetic = |pattern, resolution| DataConfig {
            kind: DataKind::Synthetic,
            resolution,
            synthetic: SyntheticConfig { pattern, samples: 40, classes: 3, size: 12, channels: 3, ..Default::default() },
            ..DataConfig::default()
        };
        for config in [DataConfig::default(), DataConfig { resolution: Some(12), ..DataConfig::default() }, synthetic(Pattern::Bars, None), synthetic(Pattern::Shapes, Some(8))] {
            let splits = open(&config).unwrap();
            assert_eq!(config.shape_and_classes().unwrap(), (splits.shape(), splits.num_classes()), "{config:?}");
        }
        // A folder that does not exist: with data.classes the model can still be sized.
        let missing = DataConfig { kind: DataKind::ImageFolder, path: Some("/nonexistent/imagenet".into()), resolution: Some(224), ..DataConfig::default() };
        let err = missing.shape_and_classes().unwrap_err().to_string();
        assert!(err.contains("/nonexistent/imagenet") && err.contains("data.classes"), "{err}");
        assert_eq!(DataConfig { classes: Some(1000), ..missing.clone() }.shape_and_classes().unwrap(), ([3, 224, 224], 1000));
        // Given classes size the model; the data must then agree when it is read.
        let digits = DataConfig { classes: Some(7), ..DataConfig::default() };
        assert_eq!(digits.shape_and_classes().unwrap(), ([1, 8, 8], 7));
        let err = open(&digits).unwrap_err().to_string();
        assert!(err.contains("data.classes = 7") && err.contains("10 classes"), "{err}");
        assert!(open(&DataConfig { classes: Some(10), ..DataConfig::default() }).is_ok());
        assert!(DataConfig { classes: Some(0), ..DataConfig::default() }.validate().unwrap_err().contains("data.classes"));
    }

    /// Image folders and MNIST files on disk: classes from the sub-folders (no image decoded),
    /// the shape from the IDX header; a wrong `data.classes` is caught when the folder is read.
    #[test]
    fn shape_and_classes_read_folder_names_and_idx_headers() {
        let dir = std::env::temp_dir().join(format!("plastic-data-shape-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let folder = dir.join("images");
        for class in ["a", "b", "c"] {
            std::fs::create_dir_all(folder.join(class)).unwrap();
            image::RgbImage::from_pixel(6, 5, image::Rgb([9, 90, 200])).save(folder.join(class).join("x.png")).unwrap();
            // Not an image: shape_and_classes must not decode it; open must.
            std::fs::write(folder.join(class).join("y.png"), b"not a png").unwrap();
        }
        let config = DataConfig { kind: DataKind::ImageFolder, path: Some(folder.clone()), resolution: Some(16), channels: 1, ..DataConfig::default() };
        assert_eq!(config.shape_and_classes().unwrap(), ([1, 16, 16], 3));
        assert!(open(&config).is_err());
        for class in ["a", "b", "c"] {
            std::fs::remove_file(folder.join(class).join("y.png")).unwrap();
        }
        assert_eq!(open(&config).unwrap().num_classes(), 3);
        let err = open(&DataConfig { classes: Some(4), ..config }).unwrap_err().to_string();
        assert!(err.contains("data.classes = 4") && err.contains("3 classes"), "{err}");

        let mnist = dir.join("mnist");
        std::fs::create_dir_all(&mnist).unwrap();
        let set = ImageSet::new(vec![7; 12 * 5 * 7], (0..12).collect(), [1, 5, 7], (0..12).map(|c| c.to_string()).collect()).unwrap();
        for (split, ext) in [("train", ".gz"), ("t10k", "")] {
            mnist::write_pair(&set, &mnist.join(format!("{split}-images-idx3-ubyte{ext}")), &mnist.join(format!("{split}-labels-idx1-ubyte{ext}"))).unwrap();
        }
        let config = DataConfig { kind: DataKind::Mnist, path: Some(mnist), ..DataConfig::default() };
        let splits = open(&config).unwrap();
        assert_eq!(config.shape_and_classes().unwrap(), (splits.shape(), splits.num_classes()));
        assert_eq!(config.shape_and_classes().unwrap(), ([1, 5, 7], 12));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn validation_names_the_key() {
        let bad = DataConfig { validation_fraction: 1.5, ..DataConfig::default() };
        assert!(bad.validate().unwrap_err().contains("data.validation_fraction"));
        let missing = DataConfig { kind: DataKind::Cifar10, ..DataConfig::default() };
        assert!(missing.validate().unwrap_err().contains("data.path"));
    }
}
