//! `plastic search` and `plastic trial` driven as a user drives them, on the 4-trial
//! `configs/searches/tiny.toml`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

mod common;
use common::{assert_one_line_error, plastic, stderr, temp_dir};

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
    // A time limit no trial meets, and data no trial can read: each trial fails its own way.
    let o = plastic()
        .args(["search", "--config", "configs/searches/tiny.toml", "--set", "trials=2", "--set", "trial_timeout_s=0.5", "--out"])
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
