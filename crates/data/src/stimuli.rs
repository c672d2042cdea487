//! Stimulus sets: the images a trained network is shown to compare it with neural recordings
//! or behaviour, read from an image folder or an NPZ file and brought to the run's geometry.
//!
//! - A folder: image files at its top level (no label) and in sub-folders (labelled by the
//!   sub-folder's name). A stimulus's id is its path below the folder without the extension
//!   (`cat/im0042`), the key that neural responses and reference times are matched on.
//! - An NPZ file: `images` as bytes (0–255) or floats (0–1) in `[n, h, w]`, `[n, h, w, c]` or
//!   `[n, c, h, w]` with c ∈ {1, 3} (channels-last when the last axis is 1 or 3);
//!   optionally `stimulus_id` (strings, default `0`, `1`, …) and `labels` (strings).
//!
//! Every image goes through the geometry of training ([`crate::folder`]'s shorter side to the
//! resolution, centre crop, luma or RGB), so a stimulus is seen as training images were.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::folder::{decode_all, fit};
use crate::preprocessing::Preprocessing;
use crate::set::ImageSet;
use crate::transform::Batch;

const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// A stimulus set in the run's geometry, as bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Stimuli {
    /// One id per stimulus, unique.
    pub ids: Vec<String>,
    /// A class name per stimulus where the source gives one.
    pub labels: Vec<Option<String>>,
    /// `[n, channels, height, width]`, 0..=255.
    pub pixels: Vec<u8>,
    /// `[channels, height, width]`.
    pub shape: [usize; 3],
    /// Where they were read from (for messages and file metadata).
    pub source: PathBuf,
}

impl Stimuli {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Reads `path` (a folder or an `.npz`) in the geometry of `prep`.
    pub fn load(path: &Path, prep: &Preprocessing) -> Result<Self> {
        if prep.height != prep.width {
            return Err(DataError::Config(format!("the run's images are {}×{}; stimuli are only fitted to square inputs", prep.height, prep.width)));
        }
        let stimuli = if path.is_dir() {
            load_folder(path, prep)?
        } else if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npz")) {
            load_npz(path, prep)?
        } else if path.exists() {
            return Err(DataError::format(path, "stimuli must be a folder of images or an .npz file"));
        } else {
            return Err(DataError::io(path, std::io::Error::from(std::io::ErrorKind::NotFound)));
        };
        if stimuli.is_empty() {
            return Err(DataError::format(path, "holds no stimulus"));
        }
        let mut seen = HashSet::new();
        if let Some(dup) = stimuli.ids.iter().find(|id| !seen.insert(id.as_str())) {
            return Err(DataError::format(path, format!("stimulus id {dup:?} appears twice")));
        }
        Ok(stimuli)
    }

    /// The stimuli `range` as a normalised batch (labels 0: a stimulus batch has none).
    pub fn batch(&self, range: std::ops::Range<usize>, prep: &Preprocessing) -> Batch {
        let n = range.len();
        let [c, h, w] = self.shape;
        let plane = h * w;
        let mut images = Vec::with_capacity(n * c * plane);
        for i in range {
            let image = &self.pixels[i * c * plane..(i + 1) * c * plane];
            for ch in 0..c {
                let (m, s) = (prep.mean[ch], prep.std[ch]);
                images.extend(image[ch * plane..(ch + 1) * plane].iter().map(|&b| (b as f32 / 255.0 - m) / s));
            }
        }
        Batch { images, labels: vec![0; n], shape: [n, c, h, w] }
    }

    /// An [`ImageSet`] of the stimuli labelled with the run's classes; stimuli without a label
    /// or with a class the run does not know are an error naming the first.
    pub fn labelled(&self, class_names: &[String]) -> Result<ImageSet> {
        let labels = self
            .labels
            .iter()
            .zip(&self.ids)
            .map(|(label, id)| match label {
                Some(name) => class_names
                    .iter()
                    .position(|c| c == name)
                    .map(|k| k as u32)
                    .ok_or_else(|| DataError::format(&self.source, format!("stimulus {id:?}: class {name:?} is not one of the run's classes ({})", class_names.join(", ")))),
                None => Err(DataError::format(&self.source, format!("stimulus {id:?} has no label (put it in a class sub-folder, or give a labels CSV)"))),
            })
            .collect::<Result<Vec<_>>>()?;
        ImageSet::new(self.pixels.clone(), labels, self.shape, class_names.to_vec())
    }
}

fn is_image(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    v.sort();
    Ok(v)
}

fn load_folder(root: &Path, prep: &Preprocessing) -> Result<Stimuli> {
    // (file, id, label): top-level files first, then each sub-folder's, all sorted by name.
    let mut items: Vec<(PathBuf, String, Option<String>)> = Vec::new();
    let entries = sorted_entries(root)?;
    let stem = |p: &Path| p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    for p in entries.iter().filter(|p| p.is_file() && is_image(p)) {
        items.push((p.clone(), stem(p), None));
    }
    for dir in entries.iter().filter(|p| p.is_dir()) {
        let class = dir.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        for p in sorted_entries(dir)?.into_iter().filter(|p| p.is_file() && is_image(p)) {
            items.push((p.clone(), format!("{class}/{}", stem(&p)), Some(class.clone())));
        }
    }
    if items.is_empty() {
        return Err(DataError::format(root, "no .png/.jpg/.jpeg image in the folder or its sub-folders"));
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let files: Vec<&Path> = items.iter().map(|(p, ..)| p.as_path()).collect();
    let pixels = decode_all(&files, prep.height, prep.channels, threads)?;
    let shape = prep.shape();
    let (ids, labels) = items.into_iter().map(|(_, id, label)| (id, label)).unzip();
    Ok(Stimuli { ids, labels, pixels, shape, source: root.to_path_buf() })
}

fn load_npz(path: &Path, prep: &Preprocessing) -> Result<Stimuli> {
    let bad = |m: String| DataError::format(path, m);
    let mut npz = npyz::npz::NpzArchive::open(path).map_err(|e| bad(format!("not an npz archive ({e})")))?;
    let array = npz.by_name("images").map_err(|e| bad(e.to_string()))?.ok_or_else(|| bad("no `images` array".into()))?;
    let shape: Vec<usize> = array.shape().iter().map(|&d| d as usize).collect();
    let fortran = array.order() == npyz::Order::Fortran;
    let dtype = array.dtype();
    let values: Vec<f32> = match &dtype {
        npyz::DType::Plain(t) if t.type_char() == npyz::TypeChar::Uint && t.size_field() == 1 => {
            array.into_vec::<u8>().map_err(|e| bad(format!("array `images`: {e}")))?.into_iter().map(f32::from).collect()
        }
        npyz::DType::Plain(t) if t.type_char() == npyz::TypeChar::Float && t.size_field() == 4 => {
            array.into_vec::<f32>().map_err(|e| bad(format!("array `images`: {e}")))?.into_iter().map(|v| v * 255.0).collect()
        }
        npyz::DType::Plain(t) if t.type_char() == npyz::TypeChar::Float && t.size_field() == 8 => {
            array.into_vec::<f64>().map_err(|e| bad(format!("array `images`: {e}")))?.into_iter().map(|v| (v * 255.0) as f32).collect()
        }
        other => return Err(bad(format!("array `images` has dtype {}; expected uint8 (0–255) or float32/float64 (0–1)", other.descr()))),
    };
    if fortran && shape.len() > 1 {
        return Err(bad("array `images` is stored in Fortran order; save it C-contiguous".into()));
    }
    if let Some(v) = values.iter().find(|v| !v.is_finite()) {
        return Err(bad(format!("array `images` holds {v}")));
    }
    // (n, h, w, c, channels_last)
    let (n, h, w, c, last) = match shape[..] {
        [n, h, w] => (n, h, w, 1, true),
        [n, h, w, c] if c == 1 || c == 3 => (n, h, w, c, true),
        [n, c, h, w] if c == 1 || c == 3 => (n, h, w, c, false),
        _ => return Err(bad(format!("array `images` has shape {shape:?}; expected [n, h, w], [n, h, w, c] or [n, c, h, w] with c = 1 or 3"))),
    };
    let out_shape = prep.shape();
    let len = out_shape.iter().product::<usize>();
    let mut pixels = vec![0u8; n * len];
    for (i, out) in pixels.chunks_exact_mut(len).enumerate() {
        let src = &values[i * h * w * c..(i + 1) * h * w * c];
        let at = |y: usize, x: usize, ch: usize| if last { src[(y * w + x) * c + ch] } else { src[(ch * h + y) * w + x] };
        let byte = |v: f32| v.round().clamp(0.0, 255.0) as u8;
        let img = if c == 1 {
            image::DynamicImage::ImageLuma8(image::GrayImage::from_fn(w as u32, h as u32, |x, y| image::Luma([byte(at(y as usize, x as usize, 0))])))
        } else {
            image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
                image::Rgb([0, 1, 2].map(|ch| byte(at(y as usize, x as usize, ch))))
            }))
        };
        fit(&img, prep.height, prep.channels, out).map_err(&bad)?;
    }
    let ids = npz_strings(&mut npz, "stimulus_id", n, path)?.unwrap_or_else(|| (0..n).map(|i| i.to_string()).collect());
    let labels = npz_strings(&mut npz, "labels", n, path)?.map_or_else(|| vec![None; n], |v| v.into_iter().map(Some).collect());
    Ok(Stimuli { ids, labels, pixels, shape: out_shape, source: path.to_path_buf() })
}

/// Writes `values` as the 1-D unicode array `name` (`<U{longest}`, as numpy stores
/// `np.array(list_of_str)`), the counterpart of [`npz_strings`]; every NPZ plastic writes
/// stores its strings this way.
pub fn npz_write_strings<W: std::io::Write + std::io::Seek>(
    npz: &mut npyz::npz::NpzWriter<W>,
    name: &str,
    values: &[impl AsRef<str>],
    options: npyz::zip::write::FileOptions,
) -> std::io::Result<()> {
    use npyz::WriterBuilder;
    let longest = values.iter().map(|s| s.as_ref().chars().count()).max().unwrap_or(0).max(1);
    let type_str = format!("<U{longest}").parse::<npyz::TypeStr>().map_err(std::io::Error::other)?;
    let mut writer = npz.array::<str>(name, options)?.dtype(npyz::DType::new_scalar(type_str)).shape(&[values.len() as u64]).begin_nd()?;
    for v in values {
        writer.push(v.as_ref())?;
    }
    writer.finish()
}

/// The string array `name` of an open NPZ at `path`, which must hold `len` entries; `None`
/// when the archive has no such array.
pub fn npz_strings(npz: &mut npyz::npz::NpzArchive<std::io::BufReader<std::fs::File>>, name: &str, len: usize, path: &Path) -> Result<Option<Vec<String>>> {
    let bad = |m: String| DataError::format(path, m);
    match npz.by_name(name).map_err(|e| bad(e.to_string()))? {
        None => Ok(None),
        Some(a) => {
            let v = a.into_vec::<String>().map_err(|e| bad(format!("array `{name}` must hold strings ({e})")))?;
            if v.len() != len {
                return Err(bad(format!("array `{name}` has {} entries for {len} rows", v.len())));
            }
            Ok(Some(v))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use npyz::WriterBuilder;

    fn prep(channels: usize, size: usize) -> Preprocessing {
        Preprocessing {
            channels,
            height: size,
            width: size,
            mean: vec![0.5; channels],
            std: vec![0.25; channels],
            class_names: vec!["a".into(), "b".into()],
            source: "test".into(),
        }
    }

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("plastic-stimuli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_folder_gives_ids_from_paths_and_labels_from_sub_folders() {
        let dir = temp("folder");
        std::fs::create_dir_all(dir.join("b")).unwrap();
        let grey = |v: u8| image::GrayImage::from_pixel(16, 12, image::Luma([v]));
        grey(10).save(dir.join("loose.png")).unwrap();
        grey(200).save(dir.join("b").join("x1.png")).unwrap();
        std::fs::write(dir.join("notes.txt"), "ignored").unwrap();
        let s = Stimuli::load(&dir, &prep(1, 8)).unwrap();
        assert_eq!(s.ids, ["loose", "b/x1"]);
        assert_eq!(s.labels, [None, Some("b".to_string())]);
        assert_eq!(s.shape, [1, 8, 8]);
        assert!(s.pixels[..64].iter().all(|&p| p == 10) && s.pixels[64..].iter().all(|&p| p == 200));
        // Normalised as the run: (200/255 − 0.5) / 0.25.
        let batch = s.batch(1..2, &prep(1, 8));
        assert!((batch.images[0] - (200.0 / 255.0 - 0.5) / 0.25).abs() < 1e-6);
        // The loose image has no label: labelling names it.
        let e = s.labelled(&["a".into(), "b".into()]).unwrap_err().to_string();
        assert!(e.contains("\"loose\"") && e.contains("no label"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_npz_in_any_layout_gives_the_same_images() {
        let dir = temp("npz");
        // Two 4×4 RGB images with a gradient, stored channels-last and channels-first.
        let (n, h, w, c) = (2usize, 4usize, 4usize, 3usize);
        let value = |i: usize, y: usize, x: usize, ch: usize| (i * 100 + y * 20 + x * 5 + ch * 2) as u8;
        let last: Vec<u8> = (0..n).flat_map(|i| (0..h).flat_map(move |y| (0..w).flat_map(move |x| (0..c).map(move |ch| value(i, y, x, ch))))).collect();
        let first: Vec<u8> = (0..n).flat_map(|i| (0..c).flat_map(move |ch| (0..h).flat_map(move |y| (0..w).map(move |x| value(i, y, x, ch))))).collect();
        let write = |name: &str, shape: &[u64], values: &[u8], ids: Option<&[&str]>| {
            let path = dir.join(name);
            let mut npz = npyz::npz::NpzWriter::create(&path).unwrap();
            let mut a = npz.array::<u8>("images", Default::default()).unwrap().default_dtype().shape(shape).begin_nd().unwrap();
            a.extend(values.iter().copied()).unwrap();
            a.finish().unwrap();
            if let Some(ids) = ids {
                let t = "<U8".parse::<npyz::TypeStr>().unwrap();
                let mut a = npz.array::<str>("stimulus_id", Default::default()).unwrap().dtype(npyz::DType::new_scalar(t)).shape(&[ids.len() as u64]).begin_nd().unwrap();
                for id in ids {
                    a.push(id).unwrap();
                }
                a.finish().unwrap();
            }
            path
        };
        let a = Stimuli::load(&write("last.npz", &[2, 4, 4, 3], &last, Some(&["s1", "s2"])), &prep(3, 4)).unwrap();
        let b = Stimuli::load(&write("first.npz", &[2, 3, 4, 4], &first, None), &prep(3, 4)).unwrap();
        assert_eq!(a.ids, ["s1", "s2"]);
        assert_eq!(b.ids, ["0", "1"]);
        assert_eq!(a.pixels, b.pixels);
        assert_eq!(a.pixels, first, "already at the run's size: unchanged, channel-major");
        // Refused: a rank-2 array, duplicate ids.
        let e = Stimuli::load(&write("flat.npz", &[2, 48], &last, None), &prep(3, 4)).unwrap_err().to_string();
        assert!(e.contains("flat.npz") && e.contains("shape [2, 48]"), "{e}");
        let e = Stimuli::load(&write("dup.npz", &[2, 4, 4, 3], &last, Some(&["s", "s"])), &prep(3, 4)).unwrap_err().to_string();
        assert!(e.contains("\"s\" appears twice"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
