//! The classifiers on a synthetic data set whose classes are separable by construction: each
//! learning rule gives every statistic its own trajectory shape, plus noise. They must reach
//! ≥ 95 %, fall to chance when the training labels are shuffled, and `identify` must write
//! its files and refuse bad input in one line.

use std::path::PathBuf;

use plastic_identify::conv1d::{Conv1dMethod, Conv1dParams, Pool};
use plastic_identify::cv::{CvOptions, Method, Pools, mean_sd, nested_cv, outer_splits};
use plastic_identify::dataset::META_COLUMNS;
use plastic_identify::features::Features;
use plastic_identify::forest::{Forest, ForestParams};
use plastic_identify::svm::{Svm, SvmParams};
use plastic_identify::{ClassifierKind, Dataset, FeatureSet, HoldOut, IdentifyOptions, LabelKind, identify, load};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const RULES: [&str; 3] = ["backprop", "feedback_alignment", "kolen_pollack"];
const KEYS: [&str; 6] = ["weightabs_mean", "weightraw_norm", "actabs_mean", "actraw_norm", "gradavgabs_id", "gradavgraw_id"];

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let (u, v): (f64, f64) = (rng.random_range(1e-12..1.0), rng.random());
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

/// `per_class` samples of each rule; P = 11 points, S = 6 statistics, two views (the second
/// with 25 % of the units and more noise). Statistic s of a sample of class c follows
/// offset + slope[c][s]·t + bend[c][s]·t² with noise of σ = 0.15 per point and a per-sample
/// offset of σ = 0.1; the classes' curves differ by about one unit at the end.
fn synthetic(per_class: usize, seed: u64) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (p, s, v) = (11, KEYS.len(), 2);
    let n = per_class * RULES.len();
    let mut x_views = vec![0.0; v * n * p * s];
    let (mut rule, mut optimizer, mut x_cat, mut meta) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let meta_columns: Vec<String> = META_COLUMNS.iter().map(|c| c.to_string()).collect();
    for i in 0..n {
        let c = i % RULES.len();
        let offset = 0.1 * normal(&mut rng);
        for t in 0..p {
            let tt = t as f64 / (p - 1) as f64;
            for st in 0..s {
                let slope = (c as f64 - 1.0) * (1.0 + 0.1 * st as f64);
                let bend = if c == 1 { 0.8 } else { -0.4 } * if st % 2 == 0 { 1.0 } else { -1.0 };
                let clean = 1.0 + offset + slope * tt + bend * tt * tt;
                x_views[(i * p + t) * s + st] = clean + 0.15 * normal(&mut rng);
                x_views[n * p * s + (i * p + t) * s + st] = clean + 0.6 * normal(&mut rng);
            }
        }
        // Not tied to the class (i % 3): the position alone must not give the rule away.
        let position = (i / 3) % 3;
        let mut cat = [0.0; 3];
        cat[position] = 1.0;
        x_cat.push(cat);
        rule.push(RULES[c].to_string());
        optimizer.push(if (i / 3) % 2 == 0 { "sgdm" } else { "adam" }.to_string());
        let arch = if (i / 6) % 4 == 3 { "resnet18" } else { "knet" };
        meta.push(
            meta_columns
                .iter()
                .map(|col| match col.as_str() {
                    "sample" => i.to_string(),
                    "run" => format!("run-{}", i / 3),
                    "layer" => format!("layer{position}"),
                    "position" => ["early", "middle", "deep"][position].to_string(),
                    "rule" => RULES[c].to_string(),
                    "optimizer" => optimizer[i].clone(),
                    "architecture" => arch.to_string(),
                    "dataset" => "digits".to_string(),
                    "batch_size" => "32".to_string(),
                    _ => "0".to_string(),
                })
                .collect(),
        );
    }
    Dataset {
        n,
        p,
        s,
        x_views,
        views: vec![(1.0, 0.0), (0.25, 0.5)],
        x_cat,
        obs_keys: KEYS.iter().map(|k| k.to_string()).collect(),
        rule,
        optimizer,
        point_fraction: (0..p).map(|t| t as f64 / (p - 1) as f64).collect(),
        meta_columns,
        meta,
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("plastic-identify-test-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Mean test accuracy of the nested CV, and of its shuffled-label control.
fn accuracy<M: Method>(method: &M, grid: &[M::Setting], d: &Dataset, splits: usize) -> (f64, f64) {
    let (classes, y) = LabelKind::Rule.labels(d);
    let names: Vec<String> = classes.clone();
    let splits = outer_splits(&y, classes.len(), &Pools::Shared { samples: (0..y.len()).collect(), test_fraction: 0.25 }, splits, 5, 1, &names).unwrap();
    let x = Features::build(d, 0, &(0..d.s).collect::<Vec<_>>(), &(0..d.p).collect::<Vec<_>>());
    let cv = CvOptions { inner_folds: 5, zscore: false, threads: 2, seed: 3 };
    let real = nested_cv(method, grid, &x, &y, classes.len(), &splits, false, &cv).unwrap();
    let shuffled = nested_cv(method, grid, &x, &y, classes.len(), &splits, true, &cv).unwrap();
    let acc = |o: &[plastic_identify::cv::SplitOutcome]| mean_sd(&o.iter().map(|r| r.test_accuracy).collect::<Vec<_>>()).0;
    (acc(&real), acc(&shuffled))
}

#[test]
fn the_forest_separates_separable_classes_and_not_shuffled_labels() {
    let d = synthetic(24, 11);
    let (real, shuffled) = accuracy(&Forest, &ForestParams::default_grid(), &d, 6);
    eprintln!("forest: {real:.3}, shuffled {shuffled:.3}");
    assert!(real >= 0.95, "forest {real}");
    assert!(shuffled < 1.0 / 3.0 + 0.2, "forest with shuffled labels {shuffled}");
}

#[test]
fn the_svm_separates_separable_classes_and_not_shuffled_labels() {
    let d = synthetic(24, 12);
    let (real, shuffled) = accuracy(&Svm, &SvmParams::default_grid(), &d, 6);
    eprintln!("svm: {real:.3}, shuffled {shuffled:.3}");
    assert!(real >= 0.95, "svm {real}");
    assert!(shuffled < 1.0 / 3.0 + 0.2, "svm with shuffled labels {shuffled}");
}

#[test]
fn the_conv_net_separates_separable_classes_and_not_shuffled_labels() {
    let d = synthetic(24, 13);
    let grid = [Conv1dParams { kernel_size: 3, stride: 1, filters: 16, pool: Pool::Max, lr: 1e-2, weight_decay: 1e-4, batch_size: 32 }];
    let (real, shuffled) = accuracy(&Conv1dMethod { epochs: 60 }, &grid, &d, 5);
    eprintln!("conv1d: {real:.3}, shuffled {shuffled:.3}");
    assert!(real >= 0.95, "conv1d {real}");
    assert!(shuffled < 1.0 / 3.0 + 0.25, "conv1d with shuffled labels {shuffled}");
}

#[test]
fn identify_writes_its_report_splits_and_figures() {
    let dir = temp_dir("pipeline");
    let data = dir.join("data");
    synthetic(12, 21).write(&data).unwrap();
    let out = dir.join("out");
    let options = IdentifyOptions {
        dataset: data.clone(),
        out: Some(out.clone()),
        classifiers: vec![ClassifierKind::Forest, ClassifierKind::Svm],
        feature_sets: vec![FeatureSet::Weights, FeatureSet::All],
        splits: 4,
        points: Some(6),
        sweep_noise: true,
        ..Default::default()
    };
    let report = identify(&options).unwrap();
    assert_eq!(report.classes, RULES);
    assert!((report.chance - 1.0 / 3.0).abs() < 1e-12);
    assert_eq!((report.samples, report.splits, report.test_per_split, report.train_per_split), (36, 4, 9, 27));
    assert_eq!(report.points, [0, 2, 4, 6, 8, 10]);
    for classifier in ["forest", "svm"] {
        for set in ["weights", "all"] {
            let r = &report.classifiers[classifier][set];
            assert!(r.test_accuracy_mean >= 0.9, "{classifier} {set}: {}", r.test_accuracy_mean);
            assert_eq!(r.best_params.len(), 4);
            assert_eq!(r.confusion.iter().flatten().sum::<u64>(), 4 * 9);
            assert!(out.join(format!("confusion_{classifier}_{set}.csv")).is_file());
            assert!(out.join(format!("confusion_{classifier}_{set}.png")).is_file());
        }
    }
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("identify.json")).unwrap()).unwrap();
    for key in ["chance", "samples", "classes", "label", "hold_out"] {
        assert!(json.get(key).is_some(), "identify.json lacks {key}");
    }
    for key in ["test_accuracy_mean", "test_accuracy_sd", "shuffled_accuracy_mean", "train_accuracy_mean", "best_params"] {
        assert!(json["classifiers"]["forest"]["all"].get(key).is_some(), "identify.json lacks {key}");
    }
    let splits: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("splits.json")).unwrap()).unwrap();
    assert_eq!(splits["splits"].as_array().unwrap().len(), 4);
    assert_eq!(splits["feature_sets"]["weights"], serde_json::json!([0, 1]));
    assert_eq!(splits["chosen"]["svm"]["all"].as_array().unwrap().len(), 4);
    let csv = std::fs::read_to_string(out.join("confusion_forest_all.csv")).unwrap();
    assert!(csv.starts_with("true \\ predicted,backprop,feedback_alignment,kolen_pollack\nbackprop,"), "{csv}");
    let sweep = std::fs::read_to_string(out.join("noise_sweep.csv")).unwrap();
    assert_eq!(sweep.lines().count(), 1 + 2 * 2, "{sweep}");
    assert!(sweep.starts_with("view,unit_fraction,noise_std,feature_set,accuracy_mean,accuracy_sd\n0,1,0,weights,"), "{sweep}");
    assert!(out.join("noise_sweep.png").is_file());
    let leftovers: Vec<_> = std::fs::read_dir(&out).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().starts_with('.')).collect();
    assert!(leftovers.is_empty());
    // The data set itself is untouched and still loads.
    assert_eq!(load(&data).unwrap().n, 36);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_held_out_architecture_is_all_the_test_set() {
    let dir = temp_dir("holdout");
    let d = synthetic(12, 31);
    d.write(&dir).unwrap();
    let arch = d.meta_column("architecture").unwrap();
    let options = IdentifyOptions {
        dataset: dir.clone(),
        classifiers: vec![ClassifierKind::Svm],
        feature_sets: vec![FeatureSet::All],
        splits: 3,
        hold_out: Some(HoldOut::parse("arch=resnet18").unwrap()),
        ..Default::default()
    };
    let report = identify(&options).unwrap();
    let h = report.hold_out.as_ref().unwrap();
    assert_eq!((h.key.as_str(), h.kept_samples + h.held_samples), ("architecture", 36));
    let splits: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("splits.json")).unwrap()).unwrap();
    for s in splits["splits"].as_array().unwrap() {
        let test: Vec<usize> = s["test"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        let train: Vec<usize> = s["train"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        assert!(test.iter().all(|&i| d.meta[i][arch] == "resnet18"), "a kept sample in the test set");
        assert!(train.iter().all(|&i| d.meta[i][arch] != "resnet18"), "a held-out sample in the training set");
        assert_eq!(test.len(), h.held_samples, "the held-out set is balanced, so all of it is tested");
    }
    assert!(report.classifiers["svm"]["all"].test_accuracy_mean >= 0.9);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn runs_below_the_accuracy_bar_never_enter_a_split() {
    let dir = temp_dir("min-accuracy");
    let mut d = synthetic(12, 51);
    // Every fourth run "never learned": test accuracy 0.1, the others 0.9.
    d.meta_columns.push("test_accuracy".into());
    for (i, row) in d.meta.iter_mut().enumerate() {
        row.push(if (i / 3) % 4 == 1 { "0.1" } else { "0.9" }.into());
    }
    d.write(&dir).unwrap();
    let options = IdentifyOptions { dataset: dir.clone(), classifiers: vec![ClassifierKind::Svm], feature_sets: vec![FeatureSet::All], splits: 3, min_test_accuracy: Some(0.5), ..Default::default() };
    let report = identify(&options).unwrap();
    let dead: Vec<String> = (0..12).filter(|r| r % 4 == 1).map(|r| format!("run-{r}")).collect();
    assert_eq!(report.excluded_runs, dead);
    assert_eq!(report.min_test_accuracy, Some(0.5));
    let splits: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("splits.json")).unwrap()).unwrap();
    for s in splits["splits"].as_array().unwrap() {
        for part in ["train", "test"] {
            let used: Vec<usize> = s[part].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
            assert!(!used.is_empty() && used.iter().all(|&i| (i / 3) % 4 != 1), "a left-out run's sample in {part}: {used:?}");
        }
    }
    // Without the bar, the same data set uses them.
    let report = identify(&IdentifyOptions { min_test_accuracy: None, ..options.clone() }).unwrap();
    assert!(report.excluded_runs.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_input_is_a_one_line_error() {
    let dir = temp_dir("errors");
    synthetic(4, 41).write(&dir).unwrap();
    let run = |f: &dyn Fn(&mut IdentifyOptions)| {
        let mut o = IdentifyOptions { dataset: dir.clone(), classifiers: vec![ClassifierKind::Svm], feature_sets: vec![FeatureSet::All], splits: 2, inner_folds: 2, ..Default::default() };
        f(&mut o);
        let e = identify(&o).unwrap_err().to_string();
        assert!(!e.contains('\n'), "{e}");
        e
    };
    let e = run(&|o| o.dataset = dir.join("missing"));
    assert!(e.contains("no such directory"), "{e}");
    let e = run(&|o| o.hold_out = Some(HoldOut::parse("optimiser=adam").unwrap()));
    assert!(e.contains("no such column") && e.contains("architecture") && e.contains("optimizer"), "{e}");
    let e = run(&|o| o.hold_out = Some(HoldOut::parse("arch=alexnet").unwrap()));
    assert!(e.contains("no sample has it (values of architecture: knet)"), "{e}");
    let e = run(&|o| o.hold_out = Some(HoldOut::parse("dataset=digits").unwrap()));
    assert!(e.contains("nothing is left to train on"), "{e}");
    // 4 samples per class: 1 test and 3 training samples, fewer than 5 inner folds.
    let e = run(&|o| o.inner_folds = 5);
    assert!(e.contains("3 training samples per class") && e.contains("--inner-folds"), "{e}");
    let e = run(&|o| o.points = Some(50));
    assert!(e.contains("--points 50"), "{e}");
    let e = run(&|o| o.min_test_accuracy = Some(0.5));
    assert!(e.contains("no test_accuracy column"), "{e}");
    let e = run(&|o| o.min_test_accuracy = Some(50.0));
    assert!(e.contains("--min-test-accuracy 50"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
