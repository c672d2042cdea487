//! The commands of many runs driven as a user drives them: `plastic search` and `plastic trial`
//! on the 4-trial `configs/searches/tiny.toml`, `plastic sweep` on a sweep of four 20-step
//! runs, and `plastic identify` on a small data set in the format `plastic sweep` gathers (its
//! report, splits and figures; bad input is one line on stderr and exit code 2). One test
//! binary for all of them: each links the whole training stack.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

mod common;
use common::{assert_one_line_error, json, plastic, run, stderr, temp_dir};
use plastic_identify::Dataset;
use plastic_identify::dataset::META_COLUMNS;

/// results.csv as (header, rows).
fn results(dir: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(dir.join("results.csv")).unwrap();
    let mut lines = text.lines();
    // The tiny search's cells hold no commas or quotes except the error column, which is last.
    let header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    let rows = lines.map(|l| l.splitn(header.len(), ',').map(String::from).collect()).collect();
    (header, rows)
}

fn column<'a>(header: &[String], rows: &'a [Vec<String>], name: &str) -> Vec<&'a str> {
    let i = header.iter().position(|h| h == name).unwrap_or_else(|| panic!("results.csv has no {name} column: {header:?}"));
    rows.iter().map(|r| r[i].as_str()).collect()
}

#[test]
fn tiny_search_runs_two_workers_and_resumes_after_sigkill_without_rerunning_trials() {
    let out = temp_dir("resume");
    let dir = out.join("tiny");
    let mut child = plastic()
        .args(["search", "--config", "configs/searches/tiny.toml", "--workers", "2", "--out"])
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill the driver (SIGKILL: no chance to save anything) once a trial has finished.
    let start = Instant::now();
    let first = loop {
        let done: Vec<PathBuf> = (0..4).map(|t| dir.join(format!("trials/{t:04}/result.json"))).filter(|p| p.exists()).collect();
        if let Some(p) = done.first() {
            break p.clone();
        }
        assert!(start.elapsed() < Duration::from_secs(240), "no trial finished in 4 minutes");
        assert!(child.try_wait().unwrap().is_none(), "the search ended before any trial finished");
        std::thread::sleep(Duration::from_millis(100));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let first_result = std::fs::read_to_string(&first).unwrap();

    // Without --resume the directory is refused: two searches never share it by accident.
    let o = plastic().args(["search", "--config", "configs/searches/tiny.toml", "--out"]).arg(&out).output().unwrap();
    assert_one_line_error(&o, "--resume");
    // A different search (another seed) is refused even with --resume.
    let o = plastic().args(["search", "--config", "configs/searches/tiny.toml", "--resume", "--set", "seed=1", "--out"]).arg(&out).output().unwrap();
    assert_one_line_error(&o, "different search");

    let o = plastic().args(["search", "--config", "configs/searches/tiny.toml", "--workers", "2", "--resume", "--out"]).arg(&out).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // The trial that had finished was not run again.
    assert_eq!(std::fs::read_to_string(&first).unwrap(), first_result);
    let (header, rows) = results(&dir);
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert!(column(&header, &rows, "status").iter().all(|s| *s == "ok"), "{rows:?}");
    for acc in column(&header, &rows, "validation_accuracy") {
        let a: f64 = acc.parse().unwrap();
        assert!((0.0..=1.0).contains(&a), "{acc}");
    }
    for p in column(&header, &rows, "params") {
        assert!(p.parse::<usize>().unwrap() > 1000, "{p}");
    }
    // The conditional parameter is filled exactly where the cell is a Reciprocal Gated Cell.
    let kinds = column(&header, &rows, "model.convrnn.layers.conv2.cell.kind");
    let gates = column(&header, &rows, "model.convrnn.layers.conv2.cell.gate_kernel");
    for (k, g) in kinds.iter().zip(&gates) {
        assert_eq!(*k == "rgc", !g.is_empty(), "kind {k}, gate_kernel {g:?}");
    }
    assert!(column(&header, &rows, "pareto_params").contains(&"true"));
    assert!(dir.join("accuracy_vs_params.png").exists() && dir.join("accuracy_vs_units.png").exists());
    // Every trial is an ordinary run config that `plastic train` accepts.
    let config = std::fs::read_to_string(dir.join("trials/0000/config.toml")).unwrap();
    assert!(config.contains("[model.convrnn]"), "{config}");
    let o = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.contains("rank") && o.lines().count() >= 5, "leaderboard: {o}");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn a_bad_space_is_one_clear_error_before_any_trial_runs() {
    let out = temp_dir("bad");
    // Every trial would be invalid: caught by the run config's own checks up front.
    let o = plastic().args(["search", "--config", "configs/searches/tiny.toml", "--set", "base.train.batch_size=0", "--out"]).arg(&out).output().unwrap();
    assert_one_line_error(&o, "invalid run config");
    assert!(!out.join("tiny/trials").exists(), "no trial may start");
    let o = plastic().args(["search", "--config", "configs/searches/tiny.toml", "--set", "strategy=grid", "--out"]).arg(&out).output().unwrap();
    assert_one_line_error(&o, "strategy");
    let o = plastic().args(["search", "--config", "configs/searches/tiny.toml", "--executor", "cloud", "--out"]).arg(&out).output().unwrap();
    assert_one_line_error(&o, "expected local or slurm");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn failing_and_timed_out_trials_are_recorded_and_the_search_goes_on() {
    let out = temp_dir("fail");
    // A time limit no trial meets (100,000 steps in half a second: the tiny search's own 12
    // steps of a time-decay ConvRNN now finish inside it), and data no trial can read: each
    // trial fails its own way.
    let o = plastic()
        .args(["search", "--config", "configs/searches/tiny.toml", "--set", "trials=2", "--set", "trial_timeout_s=0.5", "--set", "base.train.steps=100000", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "a failing trial must not kill the search: {}", stderr(&o));
    let (header, rows) = results(&out.join("tiny"));
    assert_eq!(column(&header, &rows, "status"), ["timeout", "timeout"]);
    let o = plastic()
        .args(["search", "--config", "configs/searches/tiny.toml", "--set", "trials=1", "--set", "name=missing", "--set", "base.data.kind=cifar10", "--set", "base.data.path=/nonexistent", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let (header, rows) = results(&out.join("missing"));
    assert_eq!(column(&header, &rows, "status"), ["failed"]);
    assert!(rows[0].last().unwrap().contains("nonexistent"), "{rows:?}");
    let _ = std::fs::remove_dir_all(&out);
}

/// A sweep of four MLP runs: two rules × a data-set axis whose `missing` variant names data no
/// run can read (it passes the configs' checks and fails as soon as its run starts). The runs on
/// digits take a few seconds (8000 steps of a 128-unit MLP), checkpointing every 500 steps.
fn tiny_sweep(dir: &Path) -> PathBuf {
    let path = dir.join("sweep.toml");
    std::fs::write(
        &path,
        r#"
name = "mini"
run_timeout_s = 300

[base]
seed = 0
model = { kind = "mlp", hidden = [128] }
data = { kind = "digits" }
train = { steps = 8000, batch_size = 32, optimizer = "adam", lr = 0.003, schedule = "cosine", warmup_steps = 2, log_every = 500, eval_every = 0, checkpoint_every = 500, threads = 1 }
observe = { points = 5, probe_batch = 32 }

[[axis]]
key = "rule.kind"
values = ["backprop", "feedback_alignment"]

[[axis]]
name = "dataset"
[axis.variants.digits]
"data.kind" = "digits"
[axis.variants.missing]
data = { kind = "cifar10", path = "/nonexistent/cifar" }
"#,
    )
    .unwrap();
    path
}

#[test]
fn a_sweep_killed_with_sigkill_resumes_without_rerunning_finished_runs_and_gathers_its_data_set() {
    let out = temp_dir("sweep");
    let file = tiny_sweep(&out);
    let dir = out.join("mini");
    let names = ["backprop-digits", "backprop-missing", "feedback_alignment-digits", "feedback_alignment-missing"];
    let run = |n: &str| dir.join("runs").join(n);
    let mut child = plastic().args(["sweep", "--workers", "2", "--config"]).arg(&file).arg("--out").arg(&out).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    // Kill the driver (SIGKILL: no chance to save anything) once a run has finished and the
    // first run is half-way, with a checkpoint and no result yet.
    let start = Instant::now();
    let half_way = run(names[0]);
    loop {
        let one_done = names.iter().any(|n| run(n).join("result.json").exists());
        let checkpointed = std::fs::read_dir(half_way.join("run/checkpoints")).is_ok_and(|d| {
            d.flatten().any(|e| e.file_name().to_str().is_some_and(|n| n.starts_with("step-") && n.ends_with(".safetensors")))
        });
        assert!(!half_way.join("result.json").exists(), "{} ended before the driver could be killed mid-way", names[0]);
        if one_done && checkpointed {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(240), "no run finished in 4 minutes");
        assert!(child.try_wait().unwrap().is_none(), "the sweep ended before any run finished");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let finished: Vec<(PathBuf, String, std::time::SystemTime, String)> = names
        .iter()
        .map(|n| dir.join("runs").join(n))
        .filter(|d| d.join("result.json").exists())
        .map(|d| {
            let r = d.join("result.json");
            (d.clone(), std::fs::read_to_string(&r).unwrap(), std::fs::metadata(&r).unwrap().modified().unwrap(), std::fs::read_to_string(d.join("trial.log")).unwrap())
        })
        .collect();
    assert!(!finished.is_empty());

    // Without --resume the directory is refused; a changed sweep is refused even with it.
    let o = plastic().args(["sweep", "--config"]).arg(&file).arg("--out").arg(&out).output().unwrap();
    assert_one_line_error(&o, "--resume");
    let o = plastic().args(["sweep", "--resume", "--set", "base.seed=1", "--config"]).arg(&file).arg("--out").arg(&out).output().unwrap();
    assert_one_line_error(&o, "different sweep");

    let o = plastic().args(["sweep", "--workers", "2", "--resume", "--config"]).arg(&file).arg("--out").arg(&out).output().unwrap();
    let err = stderr(&o);
    assert!(o.status.success(), "a failing run must not fail the sweep: {err}");
    // What had finished was not run again: its result and its log are as they were.
    for (d, result, modified, log) in &finished {
        let r = d.join("result.json");
        assert_eq!((&std::fs::read_to_string(&r).unwrap(), &std::fs::metadata(&r).unwrap().modified().unwrap()), (result, modified), "{}", d.display());
        assert_eq!(&std::fs::read_to_string(d.join("trial.log")).unwrap(), log, "{} ran again", d.display());
    }
    // The run killed half-way continued from its checkpoint.
    let log = std::fs::read_to_string(half_way.join("trial.log")).unwrap();
    assert!(log.contains("resuming at step"), "{log}");
    // Every run is listed; the unreadable data set's runs failed, saying why.
    let (header, rows) = results(&dir);
    assert_eq!(column(&header, &rows, "run"), names);
    assert_eq!(column(&header, &rows, "rule.kind"), ["backprop", "backprop", "feedback_alignment", "feedback_alignment"]);
    assert_eq!(column(&header, &rows, "dataset"), ["digits", "missing", "digits", "missing"]);
    assert_eq!(column(&header, &rows, "status"), ["ok", "failed", "ok", "failed"]);
    assert!(rows[1].last().unwrap().contains("nonexistent"), "{rows:?}");
    for acc in [column(&header, &rows, "validation_accuracy")[0], column(&header, &rows, "validation_accuracy")[2]] {
        assert!((0.5..=1.0).contains(&acc.parse::<f64>().unwrap()), "{acc}");
    }
    // The data set of the two runs that ended ok: its path on stdout, a summary on stderr.
    let dataset = dir.join("dataset.npz");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), dataset.display().to_string());
    assert!(err.contains(&format!("wrote {} (", dataset.display())) && err.contains(" samples from 2 runs; 2 runs left out)"), "{err}");
    assert!(err.contains("left out backprop-missing: failed:"), "{err}");
    let meta = std::fs::read_to_string(dir.join("meta.csv")).unwrap();
    let mut lines = meta.lines();
    let head: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(&head[..10], ["sample", "run", "layer", "position", "rule", "optimizer", "architecture", "dataset", "batch_size", "seed"], "{meta}");
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    // One sample per observed layer of each of the two runs, in run order, with its settings.
    let mut runs: Vec<(&str, &str, &str, &str, &str, &str, &str)> = rows.iter().map(|r| (r[1], r[4], r[5], r[6], r[7], r[8], r[9])).collect();
    assert!(rows.len() >= 4 && rows.len() % 2 == 0, "{meta}");
    runs.dedup();
    assert_eq!(runs, [("backprop-digits", "backprop", "adam", "mlp", "digits", "32", "0"), ("feedback_alignment-digits", "feedback_alignment", "adam", "mlp", "digits", "32", "0")]);
    assert!(rows.iter().all(|r| ["early", "middle", "deep"].contains(&r[3])), "{meta}");
    // How well each run learned, for `identify --min-test-accuracy`.
    let acc = head.iter().position(|&c| c == "test_accuracy").expect("a test_accuracy column");
    assert!(rows.iter().all(|r| (0.0..=1.0).contains(&r[acc].parse::<f64>().unwrap())), "{meta}");
    // A second --resume has nothing to run and gathers the same data set again.
    let o = plastic().args(["sweep", "--resume", "--config"]).arg(&file).arg("--out").arg(&out).output().unwrap();
    assert!(o.status.success() && stderr(&o).lines().all(|l| !l.contains("started")), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn a_bad_sweep_is_one_clear_error_before_any_run_starts() {
    let out = temp_dir("bad-sweep");
    let file = tiny_sweep(&out);
    // Every run would be invalid: caught by the run configs' own checks up front.
    let o = plastic().args(["sweep", "--set", "base.train.batch_size=0", "--config"]).arg(&file).arg("--out").arg(&out).output().unwrap();
    assert_one_line_error(&o, "no valid run config");
    assert!(!out.join("mini/runs").exists(), "no run may start");
    let o = plastic().args(["sweep", "--set", "axis.0.with.adamw={}", "--config"]).arg(&file).arg("--out").arg(&out).output().unwrap();
    assert_one_line_error(&o, "with.adamw names no value");
    let o = plastic().args(["sweep", "--executor", "cloud", "--config"]).arg(&file).arg("--out").arg(&out).output().unwrap();
    assert_one_line_error(&o, "expected local or slurm");
    let o = plastic().args(["sweep", "--config", "configs/sweeps/none.toml", "--out"]).arg(&out).output().unwrap();
    assert_one_line_error(&o, "cannot read");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn the_sweep_files_in_configs_are_valid_grids_of_valid_run_configs() {
    for (file, runs) in [("configs/sweeps/tiny.toml", 24), ("configs/sweeps/demo.toml", 240)] {
        let o = plastic().args(["sweep", "--dry-run", "--config", file]).output().unwrap();
        assert!(o.status.success(), "{file}: {}", stderr(&o));
        let listed = String::from_utf8_lossy(&o.stdout).lines().count();
        assert_eq!(listed, runs, "{file}");
    }
    // The demo's per-run budgets: 300 ConvRNN steps, 1000 for the CNNs; the first run's line.
    let o = plastic().args(["sweep", "--dry-run", "--config", "configs/sweeps/demo.toml"]).output().unwrap();
    let first = String::from_utf8_lossy(&o.stdout).lines().next().unwrap().to_string();
    assert_eq!(first, "seed0-backprop-sgd-convnet-digits-batch_size32 seed=0 rule.kind=backprop train.optimizer=sgd architecture=convnet dataset=digits train.batch_size=32");
}

// `plastic identify`.

/// 3 rules × `per_class` layers, 5 points, 3 statistics: each rule's trajectories rise at
/// their own rate (clearly apart), with a little deterministic jitter.
fn dataset(per_class: usize) -> Dataset {
    let rules = ["backprop", "feedback_alignment", "sign_symmetry"];
    let keys = ["weightabs_mean", "actraw_norm", "gradavgraw_id"];
    let (p, s) = (5, keys.len());
    let n = per_class * rules.len();
    let jitter = |i: usize| ((i as f64 * 12.9898).sin() * 43758.5453).fract() * 0.1;
    let x_views = (0..n * p * s).map(|i| {
        let (sample, t) = (i / (p * s), (i / s) % p);
        1.0 + (sample % 3) as f64 * 0.5 * t as f64 + jitter(i)
    });
    let meta_columns: Vec<String> = META_COLUMNS.iter().map(|c| c.to_string()).collect();
    let meta = (0..n)
        .map(|i| {
            meta_columns
                .iter()
                .map(|c| match c.as_str() {
                    "sample" => i.to_string(),
                    "rule" => rules[i % 3].to_string(),
                    "architecture" => (if i < n / 2 { "knet" } else { "mlp" }).to_string(),
                    _ => "x".to_string(),
                })
                .collect()
        })
        .collect();
    Dataset {
        n,
        p,
        s,
        x_views: x_views.collect(),
        views: vec![(1.0, 0.0)],
        x_cat: (0..n).map(|i| [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]][(i / 3) % 3]).collect(),
        obs_keys: keys.iter().map(|k| k.to_string()).collect(),
        rule: (0..n).map(|i| rules[i % 3].to_string()).collect(),
        optimizer: vec!["sgdm".to_string(); n],
        point_fraction: (0..p).map(|t| t as f64 / (p - 1) as f64).collect(),
        meta_columns,
        meta,
    }
}

#[test]
fn identify_writes_its_report_and_figures() {
    let dir = temp_dir("identify");
    dataset(8).write(&dir).unwrap();
    let out = dir.join("results");
    let o = run(plastic().args(["identify", "--classifiers", "forest,svm", "--features", "all,weights", "--splits", "3", "--inner-folds", "3", "--dataset"]).arg(&dir).arg("--out").arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), out.join("identify.json").display().to_string());
    assert!(stderr(&o).contains("forest · all: test "), "{}", stderr(&o));
    let report = json(&out.join("identify.json"));
    assert_eq!(report["samples"], 24);
    assert_eq!(report["classes"], serde_json::json!(["backprop", "feedback_alignment", "sign_symmetry"]));
    assert!((report["chance"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-12);
    for classifier in ["forest", "svm"] {
        let r = &report["classifiers"][classifier]["all"];
        assert!(r["test_accuracy_mean"].as_f64().unwrap() >= 0.95, "{classifier}: {r}");
        assert!(r["shuffled_accuracy_mean"].as_f64().is_some());
        for file in [format!("confusion_{classifier}_all.csv"), format!("confusion_{classifier}_weights.png")] {
            assert!(out.join(&file).is_file(), "{file} missing");
        }
    }
    let splits = json(&out.join("splits.json"));
    assert_eq!(splits["splits"].as_array().unwrap().len(), 3);
    assert_eq!(splits["chosen"]["forest"]["all"].as_array().unwrap().len(), 3);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn identify_refuses_bad_input_in_one_line() {
    let dir = temp_dir("identify-bad");
    dataset(4).write(&dir).unwrap();
    let base = || {
        let mut c = plastic();
        c.args(["identify", "--classifiers", "svm", "--features", "all", "--splits", "2", "--dataset"]).arg(&dir);
        c
    };
    assert_one_line_error(&run(plastic().args(["identify", "--dataset"]).arg(dir.join("nowhere"))), "no such directory");
    // 4 samples per class: 1 tested and 3 for training in each split.
    assert_one_line_error(&run(base().args(["--inner-folds", "2", "--hold-out", "arch=resnet18"])), "values of architecture: knet, mlp");
    assert_one_line_error(&run(base().args(["--inner-folds", "2", "--hold-out", "task=cifar"])), "no such column in meta.csv");
    assert_one_line_error(&run(base().args(["--label", "rules"])), "expected rule, optimizer or both");
    assert_one_line_error(&run(base().args(["--classifiers", "knn"])), "expected forest, svm or conv1d");
    assert_one_line_error(&run(&mut base()), "fewer than the 5 inner folds");
    assert_one_line_error(&run(base().args(["--inner-folds", "2", "--label", "optimizer"])), "nothing to tell apart");
    let _ = std::fs::remove_dir_all(&dir);
}
