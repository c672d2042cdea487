//! Image folders: one sub-folder per class holding JPEG or PNG files, decoded with the `image`
//! crate, resized (shorter side to `resolution`, then a centre crop) and kept in memory.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;

use crate::error::{DataError, Result};
use crate::set::ImageSet;

const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// The class names under `root`: its sub-folders, sorted by name so class indices do not
/// depend on the file system's order. Lists no files, decodes no image.
pub fn class_names(root: &Path) -> Result<Vec<String>> {
    let entries = std::fs::read_dir(root).map_err(|e| DataError::io(root, e))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| DataError::io(root, e))?;
        if entry.path().is_dir() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    if names.is_empty() {
        return Err(DataError::format(root, "no class sub-folders (expected one folder of images per class)"));
    }
    Ok(names)
}

/// Lists `(class name, files)` for each class sub-folder of `root`, in [`class_names`] order.
pub fn list_classes(root: &Path) -> Result<Vec<(String, Vec<PathBuf>)>> {
    let mut classes = Vec::new();
    for name in class_names(root)? {
        let dir = root.join(&name);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| DataError::io(&dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            })
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(DataError::format(dir, "class folder holds no .png/.jpg/.jpeg file"));
        }
        classes.push((name, files));
    }
    Ok(classes)
}

/// Loads every image under `root` with the given class names (a class missing from `root` is
/// an error, so train and test folders agree on indices).
pub fn load(root: &Path, class_names: Option<&[String]>, resolution: usize, channels: usize, threads: usize) -> Result<ImageSet> {
    let classes = list_classes(root)?;
    let names: Vec<String> = match class_names {
        Some(names) => {
            for (name, _) in &classes {
                if !names.contains(name) {
                    return Err(DataError::format(root.join(name), "class not present in the training folder"));
                }
            }
            names.to_vec()
        }
        None => classes.iter().map(|(n, _)| n.clone()).collect(),
    };
    let items: Vec<(PathBuf, u32)> = classes
        .iter()
        .flat_map(|(name, files)| {
            let label = names.iter().position(|n| n == name).unwrap() as u32;
            files.iter().map(move |f| (f.clone(), label))
        })
        .collect();
    let files: Vec<&Path> = items.iter().map(|(p, _)| p.as_path()).collect();
    let pixels = decode_all(&files, resolution, channels, threads)?;
    ImageSet::new(pixels, items.iter().map(|(_, l)| *l).collect(), [channels, resolution, resolution], names)
}

/// Decodes `files` into `[files, channels, resolution, resolution]` bytes on `threads` threads.
pub(crate) fn decode_all(files: &[&Path], resolution: usize, channels: usize, threads: usize) -> Result<Vec<u8>> {
    let image_len = channels * resolution * resolution;
    let mut pixels = vec![0u8; files.len() * image_len];
    let chunk = files.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .zip(pixels.chunks_mut(chunk * image_len))
            .map(|(files, out)| {
                scope.spawn(move || -> Result<()> {
                    for (path, out) in files.iter().zip(out.chunks_exact_mut(image_len)) {
                        decode(path, resolution, channels, out)?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| h.join().expect("image decoding thread panicked"))
    })?;
    Ok(pixels)
}

/// Decodes one file into `out` (`[channels, resolution, resolution]`).
fn decode(path: &Path, resolution: usize, channels: usize, out: &mut [u8]) -> Result<()> {
    fit(&open_image(path)?, resolution, channels, out).map_err(|m| DataError::format(path, m))
}

/// Decodes one image file.
fn open_image(path: &Path) -> Result<image::DynamicImage> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    image::load_from_memory(&bytes).map_err(|e| DataError::format(path, format!("cannot decode image ({e})")))
}

/// Resizes `img`'s shorter side to `resolution` (triangle filter), centre-crops it square and
/// writes it to `out` as `[channels, resolution, resolution]` (luma for 1 channel, RGB for 3):
/// the one geometry every image a network sees goes through, in training and afterwards.
pub(crate) fn fit(img: &image::DynamicImage, resolution: usize, channels: usize, out: &mut [u8]) -> std::result::Result<(), String> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let scale = resolution as f64 / w.min(h) as f64;
    let (nw, nh) = (((w as f64 * scale).round() as u32).max(resolution as u32), ((h as f64 * scale).round() as u32).max(resolution as u32));
    let resized = img.resize_exact(nw, nh, FilterType::Triangle);
    let (x0, y0) = ((nw as usize - resolution) / 2, (nh as usize - resolution) / 2);
    let plane = resolution * resolution;
    match channels {
        1 => {
            let grey = resized.to_luma8();
            for y in 0..resolution {
                for x in 0..resolution {
                    out[y * resolution + x] = grey.get_pixel((x0 + x) as u32, (y0 + y) as u32)[0];
                }
            }
        }
        3 => {
            let rgb = resized.to_rgb8();
            for y in 0..resolution {
                for x in 0..resolution {
                    let p = rgb.get_pixel((x0 + x) as u32, (y0 + y) as u32);
                    for c in 0..3 {
                        out[c * plane + y * resolution + x] = p[c];
                    }
                }
            }
        }
        other => return Err(format!("channels must be 1 or 3, not {other}")),
    }
    Ok(())
}
