//! Showing a run's progress: an indicatif bar on a terminal, plain lines otherwise.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value};

use crate::trainer::{RunInfo, Summary, TrainObserver};

/// Reports to stderr: a progress bar with loss, accuracy and images/s when stderr is a
/// terminal, one line per logged step otherwise (CI logs, `nohup`, pipes).
pub struct ProgressReporter {
    bar: Option<ProgressBar>,
    total: usize,
}

impl ProgressReporter {
    pub fn new() -> Self {
        Self { bar: None, total: 0 }
    }
}

impl Default for ProgressReporter {
    fn default() -> Self {
        Self::new()
    }
}

fn get(record: &Map<String, Value>, key: &str) -> Option<f64> {
    record.get(key).and_then(Value::as_f64)
}

impl TrainObserver for ProgressReporter {
    fn started(&mut self, info: &RunInfo) {
        self.total = info.total_steps;
        eprintln!("run {} → {}", info.name, info.dir.display());
        eprintln!("device: {}", info.device);
        eprintln!("model: {} parameters, {} units", info.params, info.units);
        if info.start_step > 0 {
            eprintln!("resuming at step {} of {}", info.start_step, info.total_steps);
        }
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(info.total_steps as u64);
            bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}").expect("a valid template"));
            bar.set_position(info.start_step as u64);
            self.bar = Some(bar);
        }
    }

    fn logged(&mut self, record: &Map<String, Value>) {
        let step = record.get("step").and_then(Value::as_u64).unwrap_or(0);
        let mut parts = Vec::new();
        if let Some(l) = get(record, "loss") {
            parts.push(format!("loss {l:.4}"));
        }
        if let Some(a) = get(record, "accuracy") {
            parts.push(format!("acc {:.1}%", 100.0 * a));
        }
        if let Some(a) = get(record, "val_accuracy") {
            parts.push(format!("val {:.1}%", 100.0 * a));
        }
        if let Some(i) = get(record, "images_per_second") {
            parts.push(format!("{i:.0} img/s"));
        }
        let msg = parts.join("  ");
        match &self.bar {
            Some(bar) => {
                bar.set_position(step);
                bar.set_message(msg);
            }
            None => eprintln!("step {step}/{}  {msg}", self.total),
        }
    }

    fn finished(&mut self, summary: &Summary) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        eprintln!(
            "done: {} steps in {:.1} s; test accuracy {:.2}% (top-5 {:.2}%), test loss {:.4}",
            summary.steps,
            summary.wall_seconds,
            100.0 * summary.test_accuracy,
            100.0 * summary.test_top5,
            summary.test_loss
        );
    }

    fn diverged(&mut self, _summary: &Summary) {
        // The CLI prints the one line that says why; the bar stays where training stopped.
        if let Some(bar) = self.bar.take() {
            bar.abandon();
        }
    }

    fn already_finished(&mut self, summary: &Summary) {
        eprintln!(
            "run {} already finished at step {} (test accuracy {:.2}%); summary.json left as it was — raise train.steps or train.epochs to train on",
            summary.name,
            summary.steps,
            100.0 * summary.test_accuracy
        );
    }
}
