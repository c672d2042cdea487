//! Each on-disk format, written by the test into a temporary folder and read back through
//! `open`, plus the damaged-file cases that must fail with a message naming the file.

use std::path::{Path, PathBuf};

use plastic_data::{DataConfig, DataKind, ImageSet, cifar, mnist, open};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("plastic-data-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A set whose every image encodes its own index, so order and content can be checked.
fn numbered(n: usize, shape: [usize; 3], classes: usize) -> ImageSet {
    let len: usize = shape.iter().product();
    let pixels = (0..n).flat_map(|i| (0..len).map(move |p| ((i * 7 + p) % 256) as u8)).collect();
    let labels = (0..n as u32).map(|i| i % classes as u32).collect();
    ImageSet::new(pixels, labels, shape, (0..classes).map(|c| c.to_string()).collect()).unwrap()
}

fn config(kind: DataKind, path: &Path) -> DataConfig {
    DataConfig { kind, path: Some(path.to_path_buf()), validation_fraction: 0.0, ..DataConfig::default() }
}

fn sorted_images(set: &ImageSet) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = (0..set.len()).map(|i| set.image(i).to_vec()).collect();
    v.sort();
    v
}

#[test]
fn cifar10_batches_round_trip() {
    let dir = temp_dir("cifar");
    let train = numbered(40, [3, 32, 32], 10);
    let test = numbered(12, [3, 32, 32], 10);
    cifar::write_batch(&train.select(&(0..20).collect::<Vec<_>>()), &dir.join("data_batch_1.bin")).unwrap();
    cifar::write_batch(&train.select(&(20..40).collect::<Vec<_>>()), &dir.join("data_batch_2.bin")).unwrap();
    cifar::write_batch(&test, &dir.join("test_batch.bin")).unwrap();
    let s = open(&config(DataKind::Cifar10, &dir)).unwrap();
    assert_eq!(s.train.len(), 40);
    assert_eq!(sorted_images(&s.train), sorted_images(&train));
    assert_eq!(s.test, ImageSet { class_names: s.test.class_names.clone(), ..test });
    assert_eq!(s.test.class_names[0], "airplane");
}

#[test]
fn cifar10_truncated_batch_is_rejected_with_its_path() {
    let dir = temp_dir("cifar-trunc");
    cifar::write_batch(&numbered(3, [3, 32, 32], 10), &dir.join("data_batch_1.bin")).unwrap();
    cifar::write_batch(&numbered(3, [3, 32, 32], 10), &dir.join("test_batch.bin")).unwrap();
    let bytes = std::fs::read(dir.join("data_batch_1.bin")).unwrap();
    std::fs::write(dir.join("data_batch_1.bin"), &bytes[..bytes.len() - 100]).unwrap();
    let err = open(&config(DataKind::Cifar10, &dir)).unwrap_err().to_string();
    assert!(err.contains("data_batch_1.bin") && err.contains("truncated"), "{err}");
    assert!(!err.contains('\n'));
}

#[test]
fn mnist_idx_raw_and_gzipped_round_trip() {
    for gz in [false, true] {
        let dir = temp_dir(if gz { "mnist-gz" } else { "mnist" });
        let ext = if gz { ".gz" } else { "" };
        let train = numbered(30, [1, 28, 28], 10);
        let test = numbered(10, [1, 28, 28], 10);
        mnist::write_pair(&train, &dir.join(format!("train-images-idx3-ubyte{ext}")), &dir.join(format!("train-labels-idx1-ubyte{ext}"))).unwrap();
        mnist::write_pair(&test, &dir.join(format!("t10k-images-idx3-ubyte{ext}")), &dir.join(format!("t10k-labels-idx1-ubyte{ext}"))).unwrap();
        let s = open(&config(DataKind::Mnist, &dir)).unwrap();
        assert_eq!(sorted_images(&s.train), sorted_images(&train));
        assert_eq!(s.test.pixels, test.pixels);
        assert_eq!(s.test.labels, test.labels);
    }
}

#[test]
fn mnist_missing_and_truncated_files_are_named() {
    let dir = temp_dir("mnist-bad");
    let err = open(&config(DataKind::Mnist, &dir)).unwrap_err().to_string();
    assert!(err.contains("train-images-idx3-ubyte"), "{err}");
    let set = numbered(5, [1, 28, 28], 10);
    mnist::write_pair(&set, &dir.join("train-images-idx3-ubyte"), &dir.join("train-labels-idx1-ubyte")).unwrap();
    mnist::write_pair(&set, &dir.join("t10k-images-idx3-ubyte"), &dir.join("t10k-labels-idx1-ubyte")).unwrap();
    let path = dir.join("t10k-images-idx3-ubyte");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
    let err = open(&config(DataKind::Mnist, &dir)).unwrap_err().to_string();
    assert!(err.contains("t10k-images-idx3-ubyte") && err.contains("truncated"), "{err}");
}

fn write_folder(root: &Path, classes: &[&str], per_class: usize) {
    for (c, name) in classes.iter().enumerate() {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            // A 20×10 image whose brightness encodes the class: resizing keeps it.
            let v = (40 + 80 * c) as u8;
            let img = image::RgbImage::from_fn(20, 10, |x, _| image::Rgb([v, v, (x * 5) as u8]));
            let path = dir.join(format!("{i}.{}", if i % 2 == 0 { "png" } else { "jpg" }));
            img.save(&path).unwrap();
        }
    }
}

#[test]
fn image_folder_decodes_png_and_jpeg_and_resizes() {
    let root = temp_dir("folder");
    write_folder(&root, &["cat", "ant"], 6);
    let mut cfg = config(DataKind::ImageFolder, &root);
    cfg.resolution = Some(8);
    cfg.test_fraction = 0.34;
    let s = open(&cfg).unwrap();
    assert_eq!(s.train.class_names, vec!["ant", "cat"]);
    assert_eq!(s.train.shape, [3, 8, 8]);
    assert_eq!(s.train.len() + s.test.len(), 12);
    for set in [&*s.train, &s.test] {
        for i in 0..set.len() {
            let red = set.image(i)[27] as i32; // red plane, centre pixel
            let expected = if set.labels[i] == 0 { 120 } else { 40 }; // "ant" was written second
            assert!((red - expected).abs() <= 6, "label {} red {red}", set.labels[i]);
        }
    }
    // Greyscale.
    cfg.channels = 1;
    assert_eq!(open(&cfg).unwrap().train.shape, [1, 8, 8]);
}

#[test]
fn image_folder_with_train_and_test_subfolders() {
    let root = temp_dir("folder-split");
    write_folder(&root.join("train"), &["a", "b", "c"], 4);
    write_folder(&root.join("test"), &["a", "b", "c"], 2);
    let mut cfg = config(DataKind::ImageFolder, &root);
    cfg.resolution = Some(6);
    let s = open(&cfg).unwrap();
    assert_eq!((s.train.len(), s.test.len()), (12, 6));
}

#[test]
fn corrupt_image_is_rejected_with_its_path() {
    let root = temp_dir("folder-corrupt");
    write_folder(&root, &["a", "b"], 2);
    std::fs::write(root.join("b").join("broken.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let err = open(&config(DataKind::ImageFolder, &root)).unwrap_err().to_string();
    assert!(err.contains("broken.png") && err.contains("cannot decode"), "{err}");
}

#[test]
fn synthetic_source_needs_no_files() {
    let cfg = DataConfig { kind: DataKind::Synthetic, ..DataConfig::default() };
    let s = open(&cfg).unwrap();
    assert_eq!(s.shape(), [1, 16, 16]);
    assert_eq!(s.num_classes(), 4);
}
