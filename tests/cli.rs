//! The `plastic` binary driven the way a user drives it.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

mod common;
use common::{assert_one_line_error, json, plastic, run, stderr, temp_dir};

#[test]
fn quickstart_config_learns_digits_on_a_reduced_budget() {
    let out = temp_dir("learn");
    let o = run(plastic().args(["train", "--config", "configs/quickstart.toml", "--device", "cpu", "--set", "train.epochs=4", "--out"]).arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    let summary = json(&out.join("quickstart/summary.json"));
    let acc = summary["test_accuracy"].as_f64().unwrap();
    assert!(acc > 0.85, "test accuracy {acc} after 4 epochs");
    for key in ["test_accuracy", "train_loss", "steps", "device", "rule", "params", "wall_seconds"] {
        assert!(summary.get(key).is_some(), "summary.json lacks {key}");
    }
    assert_eq!(summary["device"], "cpu");
    let metrics = std::fs::read_to_string(out.join("quickstart/metrics.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(metrics.lines().next().unwrap()).unwrap();
    for key in ["step", "epoch", "loss", "accuracy", "lr", "images_per_second"] {
        assert!(first.get(key).is_some(), "metrics.jsonl line lacks {key}: {first}");
    }
    // The saved config reads back and describes the same run.
    assert!(std::fs::read_to_string(out.join("quickstart/config.toml")).unwrap().contains("epochs = 4"));

    // eval re-evaluates the final checkpoint and agrees with the summary.
    let o = run(plastic().args(["eval", "--run"]).arg(out.join("quickstart")));
    assert!(o.status.success(), "{}", stderr(&o));
    let line: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!((line["accuracy"].as_f64().unwrap() - acc).abs() < 1e-9);

    // export writes PyTorch layouts: Linear weights as [out, in].
    let o = run(plastic().args(["export", "--run"]).arg(out.join("quickstart")));
    assert!(o.status.success(), "{}", stderr(&o));
    let bytes = std::fs::read(out.join("quickstart/model.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    assert_eq!(header["stages.3.linear.weight"]["shape"], serde_json::json!([10, 128]));
    assert_eq!(header["stages.0.conv.weight"]["shape"], serde_json::json!([32, 1, 3, 3]));
    // The export says how to prepare an image for the model: the run's preprocessing.json.
    let prep: serde_json::Value = serde_json::from_str(header["__metadata__"]["plastic.preprocessing"].as_str().unwrap()).unwrap();
    assert_eq!(prep, json(&out.join("quickstart/preprocessing.json")));
    assert_eq!((prep["channels"].as_u64(), prep["height"].as_u64(), prep["class_names"].as_array().map(Vec::len)), (Some(1), Some(8), Some(10)));

    // Running the same config again without --resume refuses and leaves the run untouched.
    let before = std::fs::read(out.join("quickstart/summary.json")).unwrap();
    let o = run(plastic().args(["train", "--config", "configs/quickstart.toml", "--device", "cpu", "--out"]).arg(&out));
    assert_one_line_error(&o, "already exists");
    assert_eq!(std::fs::read(out.join("quickstart/summary.json")).unwrap(), before);
}

/// Mixed precision from the CLI: bf16 activations with f32 parameters learn the quickstart
/// as f32 does on the same budget (`quickstart_config_learns_digits_on_a_reduced_budget`), the
/// checkpoint keeps f32 weights, and a precision the device lacks or no one knows is one line.
#[test]
fn bf16_mixed_precision_learns_the_quickstart() {
    let out = temp_dir("bf16");
    let o = run(plastic().args(["train", "--config", "configs/quickstart.toml", "--device", "cpu", "--set", "train.epochs=4", "--set", "train.precision=bf16", "--out"]).arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    let acc = json(&out.join("quickstart/summary.json"))["test_accuracy"].as_f64().unwrap();
    assert!(acc > 0.85, "bf16 test accuracy {acc} after 4 epochs");
    assert!(std::fs::read_to_string(out.join("quickstart/config.toml")).unwrap().contains("precision = \"bf16\""));
    let last = std::fs::read_dir(out.join("quickstart/checkpoints")).unwrap().map(|e| e.unwrap().path()).max().unwrap();
    let bytes = std::fs::read(last).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    assert!(header.iter().filter(|(k, _)| *k != "__metadata__").all(|(_, v)| v["dtype"] == "F32"), "master weights stay f32");

    let o = run(plastic().args(["train", "--device", "cpu", "--set", "train.precision=fp8", "--out"]).arg(&out));
    assert_one_line_error(&o, "precision");
}

const RESUME_CONFIG: &str = r#"
name = "resume"
seed = 3
[model]
kind = "convnet"
channels = [8, 16]
hidden = [32]
batch_norm = true
dropout = 0.2
[data]
kind = "digits"
crop_padding = 1
[train]
steps = 1500
batch_size = 16
lr = 0.02
weight_decay = 1e-3
log_every = 50
eval_every = 250
checkpoint_every = 100
true_grad_every = 50
[rule]
kind = "kolen_pollack"
"#;

fn tensors(path: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let data = &bytes[8 + header_len..];
    let mut out: Vec<(String, Vec<u8>)> = header
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, v)| {
            let [a, b] = [0, 1].map(|i| v["data_offsets"][i].as_u64().unwrap() as usize);
            (k.clone(), data[a..b].to_vec())
        })
        .collect();
    out.sort();
    out
}

fn metrics_without_speed(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("images_per_second");
            v
        })
        .collect()
}

/// A tiny ConvRNN (feedback edge, an RGC) with Adam and noise-driven weight mirror, whose
/// log, checkpoint, validation and true-gradient intervals divide neither each other nor the
/// budget: a resume starts inside a logging window with a measurement pending.
const RESUME_CONVRNN_CONFIG: &str = r#"
name = "resume-convrnn"
seed = 7
[model]
kind = "convrnn"
[model.convrnn]
times = 4
[[model.convrnn.layers]]
name = "conv1"
channels = 4
kernel = 3
[[model.convrnn.layers]]
name = "conv2"
channels = 8
kernel = 3
pool = 2
cell = { kind = "rgc" }
[[model.convrnn.edges]]
from = "conv2"
to = "conv1"
[data]
kind = "digits"
crop_padding = 1
[train]
steps = 120
batch_size = 8
optimizer = "adam"
lr = 0.003
log_every = 7
eval_every = 13
checkpoint_every = 11
true_grad_every = 5
[observe]
points = 13
time_step = 2
views = [{ unit_fraction = 1.0, noise_std = 0.0 }, { unit_fraction = 0.3, noise_std = 0.5 }]
[rule]
kind = "weight_mirror"
source = "noise"
mirror_batch = 4
"#;

/// `summary.json` without the fields that measure speed.
fn summary_without_speed(path: &Path) -> serde_json::Value {
    let mut v = json(path);
    for key in ["wall_seconds", "images_per_second", "observe_seconds"] {
        v.as_object_mut().unwrap().remove(key);
    }
    v
}

/// Trains `config_text` (run `name`, `total` steps) once uninterrupted and once killed with
/// SIGKILL after its first checkpoint (step `first`) and resumed: the final checkpoints must
/// be bitwise equal, and metrics.jsonl and summary.json equal but for speed.
fn assert_resume_ends_bitwise(config_text: &str, name: &str, first: usize, total: usize) {
    let dir = temp_dir(name);
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(&config, config_text).unwrap();
    let (whole, broken) = (dir.join("whole"), dir.join("broken"));
    let train = |out: &Path| {
        let mut c = plastic();
        c.args(["train", "--device", "cpu", "--config"]).arg(&config).arg("--out").arg(out);
        c
    };
    let o = run(&mut train(&whole));
    assert!(o.status.success(), "{}", stderr(&o));

    // Start again and kill -9 as soon as the first checkpoint exists.
    let mut child = train(&broken).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let first = broken.join(format!("{name}/checkpoints/step-{first:08}.safetensors"));
    let t0 = Instant::now();
    while !first.exists() {
        assert!(t0.elapsed() < Duration::from_secs(120), "no checkpoint appeared");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!broken.join(format!("{name}/summary.json")).exists(), "the run finished before it could be killed");

    let o = run(train(&broken).arg("--resume"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("resuming at step"), "{}", stderr(&o));
    let last = |root: &Path| root.join(format!("{name}/checkpoints/step-{total:08}.safetensors"));
    let (a, b) = (tensors(&last(&whole)), tensors(&last(&broken)));
    assert_eq!(a.len(), b.len());
    for ((name_a, bytes_a), (name_b, bytes_b)) in a.iter().zip(&b) {
        assert_eq!(name_a, name_b);
        assert!(bytes_a == bytes_b, "{name_a} differs after resume");
    }
    let metrics = metrics_without_speed(&whole.join(format!("{name}/metrics.jsonl")));
    assert_eq!(metrics, metrics_without_speed(&broken.join(format!("{name}/metrics.jsonl"))));
    let summary = whole.join(format!("{name}/summary.json"));
    assert_eq!(summary_without_speed(&summary), summary_without_speed(&broken.join(format!("{name}/summary.json"))));
    // summary.json reports the validation of the last step, which the last line logs.
    let last_line = metrics.last().unwrap();
    assert_eq!(last_line["step"].as_u64(), Some(total as u64));
    assert_eq!(json(&summary)["validation_accuracy"], last_line["val_accuracy"], "{last_line}");
    assert_eq!(json(&summary)["status"], "completed");
    // The resumed run's observables are the uninterrupted run's, value for value.
    let observables = |root: &Path, file: &str| std::fs::read(root.join(format!("{name}/{file}"))).unwrap();
    for file in ["observables.csv", "observables.npz"] {
        assert!(observables(&whole, file) == observables(&broken, file), "{file} differs after resume");
    }

    // Resuming a finished run leaves its summary as it was.
    let before = std::fs::read(&summary).unwrap();
    let o = run(train(&whole).arg("--resume"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("already finished"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&summary).unwrap(), before);
}

#[test]
fn resume_after_kill_ends_bitwise_where_an_uninterrupted_run_ends() {
    assert_resume_ends_bitwise(RESUME_CONFIG, "resume", 100, 1500);
    assert_resume_ends_bitwise(RESUME_CONVRNN_CONFIG, "resume-convrnn", 11, 120);
    // f16 mixed precision: its dynamic loss scale travels with the checkpoint. Starting at 2²⁴,
    // the first steps overflow and halve it before the first checkpoint, so a resume that
    // forgot the scale would not end where the whole run does.
    let f16 = RESUME_CONVRNN_CONFIG.replace("name = \"resume-convrnn\"", "name = \"resume-f16\"").replace("[train]\n", "[train]\nprecision = \"f16\"\nloss_scale = 16777216\n");
    assert_resume_ends_bitwise(&f16, "resume-f16", 11, 120);
    let metrics = metrics_without_speed(&std::env::temp_dir().join(format!("plastic-cli-resume-f16-{}/whole/resume-f16/metrics.jsonl", std::process::id())));
    let scales: Vec<f64> = metrics.iter().filter_map(|l| l["loss_scale"].as_f64()).collect();
    assert!(scales[0] < 16777216.0 && scales.iter().all(|s| s.log2().fract() == 0.0), "{scales:?}");
    // Every line of the ConvRNN run carries the latest true_grad_angle, though only every
    // 35th step is both a log and a measurement step.
    let metrics = metrics_without_speed(&std::env::temp_dir().join(format!("plastic-cli-resume-convrnn-{}/whole/resume-convrnn/metrics.jsonl", std::process::id())));
    for line in metrics.iter().filter(|l| l.get("loss").is_some()) {
        assert!(line.as_object().unwrap().keys().any(|k| k.ends_with(".true_grad_angle")), "{line}");
    }
}

#[test]
fn a_diverging_run_exits_3_with_one_line_and_a_diverged_summary() {
    let out = temp_dir("diverge");
    // The first line logs step 1's loss (before any update); lr = 1e4 sends it far above 10×.
    let o = run(plastic().args(["train", "--device", "cpu", "--set", "train.lr=1e4", "--set", "train.steps=200", "--set", "train.log_every=1", "--out"]).arg(&out));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "stderr: {err}");
    assert_eq!(err.lines().filter(|l| l.starts_with("error:")).count(), 1, "{err}");
    let line = err.trim_end().lines().last().unwrap();
    assert!(line.starts_with("error: training diverged at step "), "{err}");
    assert!(line.contains("weights of") && line.contains("train.lr") && line.contains("train.grad_clip"), "{line}");
    assert!(!err.contains("panicked"), "{err}");
    let summary = json(&out.join("run/summary.json"));
    assert_eq!(summary["status"], "diverged");
    assert_eq!(summary["message"].as_str(), line.strip_prefix("error: "));
    let step = summary["steps"].as_u64().unwrap();
    assert!(line.contains(&format!("at step {step}:")) && step < 20, "{line}");
    // Nothing after the divergence was checkpointed.
    assert!(std::fs::read_dir(out.join("run/checkpoints")).unwrap().next().is_none());
}

#[test]
fn bad_inputs_fail_with_one_line_and_exit_code_2() {
    let dir = temp_dir("bad");
    let o = run(plastic().args(["train", "--config"]).arg(dir.join("nope.toml")));
    assert_one_line_error(&o, "nope.toml");

    let typo = dir.join("typo.toml");
    std::fs::write(&typo, "[train]\nlearnig_rate = 0.1\n").unwrap();
    let o = run(plastic().args(["train", "--config"]).arg(&typo));
    assert_one_line_error(&o, "learnig_rate");

    let o = run(plastic().args(["inspect", "--set", "model.kind=vgg16"]));
    assert_one_line_error(&o, "model.kind");

    let o = run(plastic().args(["train", "--set", "train.batch_size=0", "--out"]).arg(&dir));
    assert_one_line_error(&o, "train.batch_size");

    let o = run(plastic().args(["train", "--set", "data.kind=cifar10", "--set"]).arg(format!("data.path={}", dir.join("missing").display())).arg("--out").arg(&dir));
    assert_one_line_error(&o, "missing");

    // A truncated MNIST file.
    let mnist = dir.join("mnist");
    std::fs::create_dir_all(&mnist).unwrap();
    let set = plastic_data::ImageSet::new(vec![7; 20 * 28 * 28], vec![1; 20], [1, 28, 28], (0..10).map(|c| c.to_string()).collect()).unwrap();
    for split in ["train", "t10k"] {
        plastic_data::mnist::write_pair(&set, &mnist.join(format!("{split}-images-idx3-ubyte")), &mnist.join(format!("{split}-labels-idx1-ubyte"))).unwrap();
    }
    let images = mnist.join("train-images-idx3-ubyte");
    let bytes = std::fs::read(&images).unwrap();
    std::fs::write(&images, &bytes[..bytes.len() / 2]).unwrap();
    let o = run(plastic().args(["train", "--set", "data.kind=mnist", "--set"]).arg(format!("data.path={}", mnist.display())).arg("--out").arg(&dir));
    assert_one_line_error(&o, "truncated");

    // A corrupt image in an image folder.
    let folder = dir.join("images");
    for class in ["a", "b"] {
        std::fs::create_dir_all(folder.join(class)).unwrap();
        image::RgbImage::from_pixel(4, 4, image::Rgb([9, 9, 9])).save(folder.join(class).join("ok.png")).unwrap();
    }
    std::fs::write(folder.join("b/bad.jpg"), b"\xff\xd8\xff garbage").unwrap();
    let o = run(plastic().args(["train", "--set", "data.kind=image_folder", "--set"]).arg(format!("data.path={}", folder.display())).arg("--out").arg(&dir));
    assert_one_line_error(&o, "bad.jpg");

    let o = run(plastic().args(["eval", "--run"]).arg(dir.join("no-such-run")));
    assert_one_line_error(&o, "not a run directory");

    // What clap rejects reads the same: one line, with the possible values or the suggestion.
    let o = run(plastic().args(["export", "--run"]).arg(&dir).args(["--format", "onnx"]));
    assert_one_line_error(&o, "possible values: safetensors, pytorch");
    let o = run(plastic().args(["trian"]));
    assert_one_line_error(&o, "'train'");
    let o = run(plastic().args(["export"]));
    assert_one_line_error(&o, "--run");
    // A bare `plastic` still shows the whole help (exit 2), not a squashed line.
    let o = run(&mut plastic());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).lines().count() > 10 && stderr(&o).contains("Commands:"), "{}", stderr(&o));
}

#[test]
fn every_rule_learns_digits_well_above_chance() {
    // The quickstart exactly as README has a user try it (SGD, lr 0.05, momentum 0.9), only
    // `rule.kind` changed, on a reduced budget. Accuracy alone would not catch a rule whose B
    // silently stays random: the final weight angles must say which rules aligned B to W.
    let out = temp_dir("rules");
    let angle = |summary: &serde_json::Value, rule: &str| -> f64 {
        let a: Vec<f64> = summary["alignment"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.ends_with(".weight_angle") && !k.starts_with("alignment.conv1."))
            .filter_map(|(_, v)| v.as_f64())
            .collect();
        assert!(!a.is_empty(), "{rule}: no weight angles in {summary}");
        a.iter().sum::<f64>() / a.len() as f64
    };
    for rule in [
        "backprop",
        "feedback_alignment",
        "sign_symmetry",
        "kolen_pollack",
        "weight_mirror",
        "information_alignment",
        "symmetric_alignment",
        "activation_alignment",
        "direct_feedback_alignment",
    ] {
        let o = run(plastic()
            .args(["train", "--device", "cpu", "--config", "configs/quickstart.toml", "--set", "train.epochs=6", "--set"])
            .arg(format!("name={rule}"))
            .args(["--set"])
            .arg(format!("rule.kind={rule}"))
            .arg("--out")
            .arg(&out));
        assert!(o.status.success(), "{rule}: {}", stderr(&o));
        let summary = json(&out.join(rule).join("summary.json"));
        assert_eq!(summary["status"], "completed", "{rule}");
        let acc = summary["test_accuracy"].as_f64().unwrap();
        assert!(acc > 0.85, "{rule}: test accuracy {acc} (chance is 0.1)");
        let loss = summary["test_loss"].as_f64().unwrap();
        assert!(loss < 1.0, "{rule}: test loss {loss}: the logits grew");
        match rule {
            "backprop" => assert!(summary["alignment"].as_object().unwrap().is_empty()),
            "direct_feedback_alignment" => {
                let last = std::fs::read_to_string(out.join(rule).join("metrics.jsonl")).unwrap();
                assert!(last.contains("alignment.fc3.true_grad_angle") && !last.contains("weight_angle"), "{rule}");
            }
            "symmetric_alignment" => assert!(angle(&summary, rule) < 5.0, "{rule}: {}", angle(&summary, rule)),
            "kolen_pollack" | "weight_mirror" => assert!(angle(&summary, rule) < 30.0, "{rule}: {}", angle(&summary, rule)),
            "feedback_alignment" => assert!(angle(&summary, rule) > 60.0, "{rule}: {}", angle(&summary, rule)),
            _ => {}
        }
    }
}

#[test]
fn wgpu_trains_a_step() {
    let required = std::env::var("PLASTIC_REQUIRE_WGPU").is_ok_and(|v| v == "1");
    let out = temp_dir("wgpu");
    let o = run(plastic()
        .env("CUBECL_AUTOTUNE_LEVEL", "minimal")
        .args(["train", "--device", "wgpu", "--set", "model.kind=mlp", "--set", "model.hidden=[16]", "--set", "train.steps=2", "--set", "train.log_every=1", "--out"])
        .arg(&out));
    if o.status.code() == Some(2) && stderr(&o).contains("no wgpu adapter") && !required {
        eprintln!("SKIPPED: no wgpu adapter on this machine (set PLASTIC_REQUIRE_WGPU=1 to make this a failure)");
        return;
    }
    assert!(o.status.success(), "{}", stderr(&o));
    let summary = json(&out.join("run/summary.json"));
    assert_eq!(summary["device"], "wgpu");
    assert_eq!(summary["steps"], 2);

    // Mixed precision on the GPU path: f16 runs where the adapter has shader f16 (lavapipe
    // has; its first loss, before any update, is f32's to f16's rounding), bf16 is refused in
    // one line where the adapter lacks it (WGSL has no bf16).
    let first_loss = |dir: &Path| -> f64 {
        let metrics = std::fs::read_to_string(dir.join("run/metrics.jsonl")).unwrap();
        serde_json::from_str::<serde_json::Value>(metrics.lines().next().unwrap()).unwrap()["loss"].as_f64().unwrap()
    };
    let f32_loss = first_loss(&out);
    for precision in ["f16", "bf16"] {
        let dir = out.join(precision);
        let o = run(plastic()
            .env("CUBECL_AUTOTUNE_LEVEL", "minimal")
            .args(["train", "--device", "wgpu", "--set", "model.kind=mlp", "--set", "model.hidden=[16]", "--set", "train.steps=2", "--set", "train.log_every=1"])
            .args(["--set", &format!("train.precision={precision}"), "--out"])
            .arg(&dir));
        if o.status.success() {
            let loss = first_loss(&dir);
            assert!((loss - f32_loss).abs() < 0.01 * f32_loss, "{precision}: first loss {loss}, f32's {f32_loss}");
        } else {
            assert!(!(required && precision == "f16"), "lavapipe has shader f16: {}", stderr(&o));
            assert_one_line_error(&o, &format!("has no {precision} arithmetic"));
        }
    }
}

#[test]
fn convrnn_quickstart_learns_on_a_reduced_budget_and_writes_per_step_outputs() {
    let out = temp_dir("convrnn");
    let o = run(plastic()
        .args(["train", "--device", "cpu", "--config", "configs/convrnn_quickstart.toml", "--set", "train.steps=100", "--set", "train.warmup_steps=10", "--out"])
        .arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    let run_dir = out.join("convrnn-quickstart");
    let acc = json(&run_dir.join("summary.json"))["test_accuracy"].as_f64().unwrap();
    assert!(acc > 0.5, "ConvRNN test accuracy {acc} after 100 steps (chance 0.1)");

    let o = run(plastic().args(["eval", "--per-step", "--examples", "4", "--run"]).arg(&run_dir));
    assert!(o.status.success(), "{}", stderr(&o));
    let csv = std::fs::read_to_string(run_dir.join("per_step.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows[0], "example,label,step,prediction,confidence,p_label");
    assert_eq!(rows.len(), 1 + 4 * 7, "4 examples × 7 steps");
    // Before the signal reaches the readout (step 3) the output cannot depend on the image.
    let p_label = |example: usize, step: usize| -> f64 { rows[1 + example * 7 + step].split(',').nth(5).unwrap().parse().unwrap() };
    let conf = |example: usize, step: usize| -> f64 { rows[1 + example * 7 + step].split(',').nth(4).unwrap().parse().unwrap() };
    assert_eq!(conf(0, 2), conf(1, 2));
    assert!((0..4).any(|e| p_label(e, 6) > 0.5));

    let o = run(plastic().args(["plot", "--run"]).arg(&run_dir));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(run_dir.join("plots/loss.png").exists() && run_dir.join("plots/accuracy.png").exists());

    compares_the_trained_convrnn_with_synthetic_neural_data(&run_dir, &out);
}

/// Reads a features NPZ's array as (shape, values).
fn npz_f32(path: &Path, name: &str) -> (Vec<u64>, Vec<f32>) {
    let mut npz = npyz::npz::NpzArchive::open(path).unwrap();
    let a = npz.by_name(name).unwrap().unwrap_or_else(|| panic!("{name} in {}", path.display()));
    let shape = a.shape().to_vec();
    (shape, a.into_vec::<f32>().unwrap())
}

fn write_responses(path: &Path, shape: &[u64], values: &[f64], ids: &[String], regions: Option<&[&str]>) {
    use npyz::WriterBuilder;
    let mut npz = npyz::npz::NpzWriter::create(path).unwrap();
    let mut w = npz.array::<f64>("responses", Default::default()).unwrap().default_dtype().shape(shape).begin_nd().unwrap();
    w.extend(values.iter().copied()).unwrap();
    w.finish().unwrap();
    let strings = |npz: &mut npyz::npz::NpzWriter<std::io::BufWriter<std::fs::File>>, name: &str, v: &[String]| plastic_data::npz_write_strings(npz, name, v, Default::default()).unwrap();
    strings(&mut npz, "stimulus_id", ids);
    if let Some(r) = regions {
        strings(&mut npz, "region", &r.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    }
}

/// `features`, `ost` and `neural-fit` on the trained ConvRNN, with test digits as stimuli in
/// class sub-folders, and neural responses made from the model itself: a random linear map of
/// conv2's channel means at step 4, plus repetition noise of a known size.
fn compares_the_trained_convrnn_with_synthetic_neural_data(run_dir: &Path, out: &Path) {
    use rand::{Rng, SeedableRng};
    // 200 digits (the last of the set) as PNGs: <class>/<index>.png.
    let digits = plastic_data::digits::embedded();
    let stimuli = out.join("stimuli");
    let n = 200;
    for i in 0..n {
        let k = digits.len() - 1 - i;
        let class = &digits.class_names[digits.labels[k] as usize];
        std::fs::create_dir_all(stimuli.join(class)).unwrap();
        image::GrayImage::from_raw(8, 8, digits.image(k).to_vec()).unwrap().save(stimuli.join(class).join(format!("{k:04}.png"))).unwrap();
    }
    // The run needs no training data to see them: its preprocessing is in the run directory.
    assert!(run_dir.join("preprocessing.json").exists());

    // Features: every layer × step, channel means.
    let features = out.join("features.npz");
    let o = run(plastic().args(["features", "--pool", "avg", "--run"]).arg(run_dir).arg("--stimuli").arg(&stimuli).arg("--out").arg(&features));
    assert!(o.status.success(), "{}", stderr(&o));
    let (shape, conv2) = npz_f32(&features, "conv2.t04");
    assert_eq!(shape, [n as u64, 32]);
    let mut npz = npyz::npz::NpzArchive::open(&features).unwrap();
    let ids: Vec<String> = npz.by_name("stimulus_id").unwrap().unwrap().into_vec::<String>().unwrap();
    let arrays: Vec<String> = npz.by_name("arrays").unwrap().unwrap().into_vec::<String>().unwrap();
    assert_eq!(arrays.len(), 3 * 7, "3 layers × 7 steps");
    assert!(ids[0].contains('/'), "ids are class/file: {}", ids[0]);
    // conv3 at step 0 has had no input yet: the same for every stimulus.
    let (_, early) = npz_f32(&features, "conv3.t00");
    assert!(early.chunks(32).all(|row| row == &early[..32]));

    // Solution times: the readout's p(label) ≥ 0.5 from some step to the end.
    let o = run(plastic().args(["ost", "--run"]).arg(run_dir).arg("--stimuli").arg(&stimuli).arg("--out").arg(out));
    assert!(o.status.success(), "{}", stderr(&o));
    let ost = std::fs::read_to_string(out.join("ost.csv")).unwrap();
    let solved: Vec<usize> = ost.lines().skip(1).filter_map(|l| l.split(',').nth(2).and_then(|t| t.parse().ok())).collect();
    assert_eq!(ost.lines().count(), 1 + n);
    assert!(solved.len() > n / 2, "{} of {n} solved", solved.len());
    // The readout first sees the image after conv3 has it: no image is solved before step 2.
    assert!(solved.iter().all(|&t| t >= 2), "{solved:?}");
    assert!(out.join("ost_hist.png").exists());
    // Logistic decoders of conv2's channel means (5-fold over images): conv2 has the image
    // from step 1, so nothing is decoded before that; at step 0 its features are constant.
    let decoded = out.join("decoded");
    let o = run(plastic().args(["ost", "--decoder", "logistic", "--layer", "conv2", "--run"]).arg(run_dir).arg("--stimuli").arg(&stimuli).arg("--out").arg(&decoded));
    assert!(o.status.success(), "{}", stderr(&o));
    let ost = std::fs::read_to_string(decoded.join("ost.csv")).unwrap();
    let solved: Vec<usize> = ost.lines().skip(1).filter_map(|l| l.split(',').nth(2).and_then(|t| t.parse().ok())).collect();
    assert!(solved.len() > n / 2, "decoder: {} of {n} solved", solved.len());
    assert!(solved.iter().all(|&t| t >= 1), "{solved:?}");
    let o = run(plastic().args(["ost", "--decoder", "logistic", "--run"]).arg(run_dir).arg("--stimuli").arg(&stimuli));
    assert_one_line_error(&o, "needs --layer");

    // Responses: 6 repetitions × n × 12 neuroids (two regions), signal + noise of variance
    // σ² per repetition.
    let (reps, neuroids, sigma2) = (6usize, 12usize, 0.5f64);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let mut normal = || {
        let (u, v): (f64, f64) = (rng.random_range(1e-12..1.0), rng.random_range(0.0..1.0));
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    };
    let map: Vec<f64> = (0..32 * neuroids).map(|_| normal()).collect();
    let mut signal: Vec<f64> = (0..n * neuroids).map(|k| (0..32).map(|c| conv2[(k / neuroids) * 32 + c] as f64 * map[c * neuroids + k % neuroids]).sum()).collect();
    // Unit signal variance per neuroid, so the reliability of 6 repetitions is 1 / (1 + σ²/6).
    for j in 0..neuroids {
        let col: Vec<f64> = (0..n).map(|i| signal[i * neuroids + j]).collect();
        let mean = col.iter().sum::<f64>() / n as f64;
        let sd = (col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
        for i in 0..n {
            signal[i * neuroids + j] = (signal[i * neuroids + j] - mean) / sd;
        }
    }
    let values: Vec<f64> = (0..reps).flat_map(|_| signal.clone()).map(|s| s + sigma2.sqrt() * normal()).collect();
    let regions: Vec<&str> = (0..neuroids).map(|j| if j % 2 == 0 { "V4" } else { "IT" }).collect();
    let responses = out.join("responses.npz");
    write_responses(&responses, &[reps as u64, n as u64, neuroids as u64], &values, &ids, Some(&regions));
    let fit_dir = out.join("fit");
    let o = run(plastic()
        .args(["neural-fit", "--folds", "5", "--run"])
        .arg(run_dir)
        .arg("--stimuli")
        .arg(&stimuli)
        .arg("--responses")
        .arg(&responses)
        .arg("--out")
        .arg(&fit_dir));
    assert!(o.status.success(), "{}", stderr(&o));
    let report = json(&fit_dir.join("neural_fit.json"))["report"].clone();
    let expected = 1.0 / (1.0 + sigma2 / reps as f64);
    for (r, region) in report["regions"].as_array().unwrap().iter().enumerate() {
        let ceiling = report["ceilings"][r][0].as_f64().unwrap();
        assert!((ceiling - expected).abs() < 0.03, "{region}: ceiling {ceiling:.3}, expected {expected:.3}");
    }
    let score = |layer: &str, step: u64, region: &str| {
        report["scores"].as_array().unwrap().iter().find(|s| s["layer"] == layer && s["step"] == step && s["region"] == region).unwrap()["score"].as_f64()
    };
    for region in ["V4", "IT"] {
        let source = score("conv2", 4, region).unwrap();
        // r / ceiling (Brain-Score's convention): a perfect model scores 1/√ceiling ≈ 1.04.
        assert!(source > 0.85 && source < 1.0 / expected.sqrt() + 0.03, "{region}: conv2 t4 ceiled score {source:.3}");
        // Constant features predict nothing.
        assert!(score("conv3", 0, region).is_none_or(|s| s.abs() < 0.2), "{region}: conv3 t0 {:?}", score("conv3", 0, region));
        let best = report["best"].as_array().unwrap().iter().find(|b| b["region"] == region).unwrap()["score"].as_f64().unwrap();
        assert!(best >= source - 1e-9, "{region}: best {best} below the source's {source}");
    }
    let commitment = json(&fit_dir.join("commitment.json"));
    assert!(commitment["V4"]["layer"].is_string() && commitment["IT"]["step"].is_u64(), "{commitment}");
    assert!(fit_dir.join("neural_fit_V4.png").exists() && fit_dir.join("neural_fit.csv").exists());

    // PCA fitted once on 150 other digits (top-level files: unlabelled) instead of per fold.
    let pca_stimuli = out.join("pca_stimuli");
    std::fs::create_dir_all(&pca_stimuli).unwrap();
    for k in 0..150 {
        image::GrayImage::from_raw(8, 8, digits.image(k).to_vec()).unwrap().save(pca_stimuli.join(format!("{k:04}.png"))).unwrap();
    }
    let pca_dir = out.join("fit-pca");
    let o = run(plastic()
        .args(["neural-fit", "--folds", "5", "--layers", "conv2", "--times", "4", "--run"])
        .arg(run_dir)
        .args([Path::new("--stimuli"), &stimuli, Path::new("--responses"), &responses, Path::new("--pca-stimuli"), &pca_stimuli, Path::new("--out"), &pca_dir]));
    assert!(o.status.success(), "{}", stderr(&o));
    let fitted = json(&pca_dir.join("neural_fit.json"));
    assert_eq!(fitted["pca_stimuli"], pca_stimuli.display().to_string());
    for s in fitted["report"]["scores"].as_array().unwrap() {
        assert!(s["score"].as_f64().unwrap() > 0.85, "conv2 t4 with PCA on other stimuli: {s}");
    }
    let o = run(plastic().args(["neural-fit", "--run"]).arg(run_dir).args([Path::new("--stimuli"), &stimuli, Path::new("--responses"), &responses, Path::new("--pca-stimuli"), &out.join("nowhere")]));
    assert_one_line_error(&o, "nowhere");

    // Bad inputs: one line, exit 2, nothing half-written.
    let fit = |responses: &Path| {
        run(plastic().args(["neural-fit", "--folds", "5", "--run"]).arg(run_dir).arg("--stimuli").arg(&stimuli).arg("--responses").arg(responses).arg("--out").arg(out.join("bad")))
    };
    let wrong_ids: Vec<String> = ids.iter().map(|id| format!("x{id}")).collect();
    let path = out.join("wrong_ids.npz");
    write_responses(&path, &[reps as u64, n as u64, neuroids as u64], &values, &wrong_ids, None);
    assert_one_line_error(&fit(&path), "stimulus ids are not in");
    let path = out.join("rank5.npz");
    write_responses(&path, &[1, 1, reps as u64, n as u64, neuroids as u64], &values, &ids, None);
    assert_one_line_error(&fit(&path), "has shape [1, 1, 6, 200, 12]");
    let mut with_nan = values.clone();
    with_nan[5] = f64::NAN;
    let path = out.join("nan.npz");
    write_responses(&path, &[reps as u64, n as u64, neuroids as u64], &with_nan, &ids, None);
    assert_one_line_error(&fit(&path), "holds NaN at bin 0, repetition 0, stimulus 0, neuroid 5");
    assert!(!out.join("bad").join("neural_fit.json").exists());
    let o = run(plastic().args(["features", "--pool", "max", "--run"]).arg(run_dir).arg("--stimuli").arg(&stimuli));
    assert_one_line_error(&o, "--pool \"max\"");
    let o = run(plastic().args(["features", "--layers", "v1", "--run"]).arg(run_dir).arg("--stimuli").arg(&stimuli));
    assert_one_line_error(&o, "no layer \"v1\"");
    let o = run(plastic().args(["ost", "--run"]).arg(run_dir).arg("--stimuli").arg(out.join("missing")));
    assert_one_line_error(&o, "missing");
}

#[test]
fn bench_prints_one_json_line_per_case_with_ratios_to_backprop() {
    let o = run(plastic().args(["bench", "--device", "cpu", "--model", "mlp", "--rules", "feedback_alignment,kolen_pollack", "--batch", "8", "--resolution", "8", "--steps", "1", "--rounds", "2"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    let rules: Vec<&str> = lines.iter().map(|l| l["rule"].as_str().unwrap()).collect();
    assert_eq!(rules, ["backprop", "feedback_alignment", "kolen_pollack"]);
    assert!(lines[0]["ratio_to_backprop"].is_null());
    for l in &lines {
        assert_eq!((l["model"].as_str(), l["device"].as_str(), l["batch"].as_u64()), (Some("mlp"), Some("cpu"), Some(8)), "{l}");
        assert!(l["step_ms"].as_f64().unwrap() > 0.0 && l["images_per_second"].as_f64().unwrap() > 0.0, "{l}");
        assert!(l["peak_memory_mib"].as_f64().unwrap() > 0.0, "{l}");
    }
    assert!(lines[1]["ratio_to_backprop"].as_f64().unwrap() > 0.0);
    // A ConvRNN preset: named, with its unroll length.
    let o = run(plastic().args(["bench", "--device", "cpu", "--config", "configs/convrnn_quickstart.toml", "--batch", "2", "--steps", "1", "--rounds", "1", "--warmup", "1"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let line: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().next().unwrap()).unwrap();
    assert_eq!((line["name"].as_str(), line["model"].as_str(), line["times"].as_u64()), (Some("convrnn-quickstart"), Some("convrnn"), Some(7)), "{line}");
    assert_eq!((line["batches"].as_str(), line["precision"].as_str()), (Some("memory"), Some("f32")));
    // Fed by the training loader, in bf16: the data set's input size, the config's precision.
    let o = run(plastic().args(["bench", "--device", "cpu", "--config", "configs/quickstart.toml", "--data", "--set", "train.precision=bf16", "--batch", "4", "--steps", "2", "--rounds", "1", "--warmup", "1"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let line: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().next().unwrap()).unwrap();
    assert_eq!((line["batches"].as_str(), line["precision"].as_str(), line["input"].clone()), (Some("loader"), Some("bf16"), serde_json::json!([1, 8, 8])), "{line}");
    let o = run(plastic().args(["bench", "--device", "cpu", "--config", "configs/quickstart.toml", "--data", "--resolution", "16"]));
    assert_one_line_error(&o, "data.resolution");
    // An empty batch would time nothing and report 0 images/s.
    let o = run(plastic().args(["bench", "--device", "cpu", "--model", "mlp", "--batch", "0"]));
    assert_one_line_error(&o, "--batch 0");
}

/// Inspecting a model needs its config, not its data: the ImageNet preset's folder does not
/// exist here (the command runs in an empty directory), yet the model is sized from `[data]`.
#[test]
fn inspect_sizes_the_model_from_the_config_without_reading_the_data() {
    let dir = temp_dir("inspect");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/rgc_intermediate.toml");
    let o = run(plastic().current_dir(&dir).args(["inspect", "--config"]).arg(&config));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("input [3, 224, 224], 1000 classes"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("readout ") && l.ends_with(&format!(" {}", 512 * 1000 + 1000))), "{out}");
    let params: usize = out.lines().find_map(|l| l.strip_prefix("parameters: ")).expect("a parameter count").trim().parse().unwrap();
    // reference/convrnn.md counts ≈ 15.4 M for the TF original (whose input-to-cell kernel is 2×2, 3×3 here).
    assert!((14_000_000..18_000_000).contains(&params), "{params} parameters");
}

/// The Python interpreter for the PyTorch bridge's test (`PLASTIC_PYTHON`, else `python3`) if
/// it imports torch. Without one the test fails under `PLASTIC_REQUIRE_TORCH=1` (as `.ci/run`
/// sets) and reports a skip otherwise.
fn torch_python() -> Option<String> {
    let python = std::env::var("PLASTIC_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = std::process::Command::new(&python).args(["-c", "import torch"]).output().is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    let required = std::env::var("PLASTIC_REQUIRE_TORCH").is_ok_and(|v| v == "1");
    assert!(!required, "PLASTIC_REQUIRE_TORCH=1 but {python} cannot import torch (set PLASTIC_PYTHON to an interpreter that can)");
    eprintln!("SKIPPED the PyTorch comparison: {python} cannot import torch (set PLASTIC_PYTHON, or PLASTIC_REQUIRE_TORCH=1 to make this a failure)");
    None
}

/// Every zoo CNN (each resolution-dependent variant, LRN, BatchNorm, both ResNet stems and
/// versions, dropout in evaluation mode, rules that store B or magnitudes, DFA) and every
/// ConvRNN preset, at reduced width and resolution and trained for two steps, exported with
/// `--format pytorch`: `plastic_torch.py` rebuilds each in PyTorch and reproduces plastic's
/// outputs on the probe batch at every step (max |Δ| ≤ 1e-4 · max |y|). A model.json that lies
/// about one activation makes the check fail.
#[test]
fn pytorch_export_reproduces_every_zoo_model_and_convrnn_preset() {
    let out = temp_dir("pytorch");
    let synthetic = |channels: usize, size: usize| -> Vec<String> {
        vec![
            "data.kind=synthetic".into(),
            "data.classes=4".into(),
            format!("data.resolution={size}"),
            format!("data.synthetic.size={size}"),
            format!("data.synthetic.channels={channels}"),
            "data.synthetic.samples=24".into(),
            "data.synthetic.classes=4".into(),
        ]
    };
    let mut cases: Vec<(String, Option<String>, Vec<String>)> = Vec::new();
    for (name, channels, size, sets) in [
        ("mlp_frsf", 1, 8, "model.kind=mlp model.hidden=[16] rule.kind=sign_symmetry rule.variant=frsf"),
        ("convnet_bn_dfa", 1, 8, "model.kind=convnet model.batch_norm=true model.channels=[4,8] model.hidden=[16] rule.kind=direct_feedback_alignment"),
        ("knet4_lrn_fa", 3, 32, "model.kind=knet4 model.lrn=true model.width=0.25 rule.kind=feedback_alignment"),
        ("knet5", 3, 32, "model.kind=knet5 model.width=0.25"),
        ("alexnet_lrn_32", 3, 32, "model.kind=alexnet model.lrn=true model.width=0.0625"),
        ("alexnet_64", 3, 64, "model.kind=alexnet model.width=0.0625"),
        ("alexnet_112", 3, 112, "model.kind=alexnet model.width=0.0625"),
        ("resnet18", 3, 32, "model.kind=resnet18 model.width=0.125"),
        ("resnet34_imagenet_stem", 3, 64, "model.kind=resnet34 model.stem=imagenet model.width=0.125"),
        ("resnet18v2", 3, 32, "model.kind=resnet18v2 model.width=0.125"),
        ("resnet34v2", 3, 32, "model.kind=resnet34v2 model.width=0.125"),
        ("shallownet_bn_64", 3, 64, "model.kind=shallownet model.batch_norm=true model.width=0.125"),
        ("shallownet_32", 3, 32, "model.kind=shallownet model.width=0.125"),
    ] {
        let mut sets: Vec<String> = sets.split(' ').map(String::from).collect();
        sets.extend(synthetic(channels, size));
        sets.push(format!("name={name}"));
        cases.push((name.into(), None, sets));
    }
    let mut presets: Vec<_> = std::fs::read_dir("configs").unwrap().map(|e| e.unwrap().path()).filter(|p| p.to_str().is_some_and(|s| s.ends_with("_shallow.toml") || s.ends_with("_intermediate.toml"))).collect();
    presets.sort();
    assert_eq!(presets.len(), 14, "seven cells × shallow and intermediate");
    for path in presets {
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        let mut sets = synthetic(3, 64);
        sets.extend(["model.convrnn.width=0.125".into(), format!("name={name}")]);
        cases.push((name, Some(path.to_str().unwrap().into()), sets));
    }
    // The quickstart as it is, and with what no preset uses: a skip edge, nearest resizing, a blank
    // after step 4, and the other three readouts (a threshold some images reach and some do not).
    for (name, sets) in [
        ("convrnn_quickstart", ""),
        ("convrnn_skip_threshold", r#"model.convrnn.edges=[{from="conv1",to="conv3"},{from="conv3",to="conv2"}] model.convrnn.resize=nearest model.convrnn.image_off=4 model.convrnn.readout=threshold model.convrnn.threshold=0.104"#),
        ("convrnn_max_confidence", "model.convrnn.readout=max_confidence model.convrnn.image_off=5"),
        ("convrnn_mean", "model.convrnn.readout=mean"),
    ] {
        let mut sets: Vec<String> = sets.split(' ').filter(|s| !s.is_empty()).map(String::from).collect();
        sets.push(format!("name={name}"));
        cases.push((name.into(), Some("configs/convrnn_quickstart.toml".into()), sets));
    }

    // Cell options no preset uses: GroupNorm in simple_rnn and rgc, other RGC feedback entries,
    // tanh τ gates, separable gates with a narrower cell, the residual projection with a stride.
    let custom = out.join("cells.toml");
    std::fs::write(
        &custom,
        r#"
[model]
kind = "convrnn"
[model.convrnn]
times = 7
image_off = 5
[[model.convrnn.layers]]
name = "conv1"
channels = 6
cell = { kind = "simple_rnn", norm = true }
[[model.convrnn.layers]]
name = "conv2"
channels = 8
stride = 2
cell = { kind = "rgc", norm = true, cell_depth = 4, depth_separable = true, residual = true, input_to_out = true, feedback_entry = "cell", tau_nonlinearity = "tanh" }
[[model.convrnn.layers]]
name = "conv3"
channels = 8
pool = 2
cell = { kind = "rgc", feedback_entry = "input", gate_nonlinearity = "tanh" }
[[model.convrnn.layers]]
name = "conv4"
channels = 8
cell = { kind = "lstm", forget_bias = 0.5 }
[[model.convrnn.edges]]
from = "conv3"
to = "conv2"
[[model.convrnn.edges]]
from = "conv4"
to = "conv3"
[[model.convrnn.edges]]
from = "conv4"
to = "conv1"
[data]
kind = "digits"
"#,
    )
    .unwrap();
    cases.push(("cells".into(), Some(custom.to_str().unwrap().into()), vec!["name=cells".into()]));

    let mut exports = Vec::new();
    for (name, config, sets) in &cases {
        let mut cmd = plastic();
        cmd.args(["train", "--device", "cpu"]);
        if let Some(c) = config {
            cmd.args(["--config", c]);
        }
        for s in sets.iter().map(String::as_str).chain(["train.steps=2", "train.batch_size=4", "train.eval_batch_size=8", "train.warmup_steps=0"]) {
            cmd.args(["--set", s]);
        }
        let o = run(cmd.arg("--out").arg(&out));
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let export = out.join(format!("{name}-pytorch"));
        let o = run(plastic().args(["export", "--format", "pytorch", "--run"]).arg(out.join(name)).arg("--output").arg(&export));
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        for file in ["model.safetensors", "model.json", "config.toml", "preprocessing.json", "probe.safetensors"] {
            assert!(export.join(file).is_file(), "{name}: no {file}");
        }
        assert_eq!(std::fs::read(export.join("plastic_torch.py")).unwrap(), std::fs::read("python/plastic_torch.py").unwrap(), "the export ships the repository's module");
        exports.push(export);
    }
    // A file where the folder should go is refused in one line.
    let o = run(plastic().args(["export", "--format", "pytorch", "--run"]).arg(out.join("knet5")).arg("--output").arg(exports[0].join("model.json")));
    assert_one_line_error(&o, "a folder");

    // The same knet4 export, but its model.json claims conv1's ReLU is a tanh.
    let lying = out.join("knet4-lying");
    std::fs::create_dir_all(&lying).unwrap();
    let source = exports.iter().find(|p| p.ends_with("knet4_lrn_fa-pytorch")).unwrap();
    for entry in std::fs::read_dir(source).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, lying.join(path.file_name().unwrap())).unwrap();
    }
    let text = std::fs::read_to_string(lying.join("model.json")).unwrap();
    let mut arch: serde_json::Value = serde_json::from_str(&text).unwrap();
    let post = arch["model"]["stages"][0]["Conv"]["post"].as_array_mut().unwrap();
    let relu = post.iter_mut().find(|p| p["Activation"] == "relu").expect("conv1 has a ReLU");
    *relu = serde_json::json!({ "Activation": "tanh" });
    std::fs::write(lying.join("model.json"), serde_json::to_string(&arch).unwrap()).unwrap();

    let Some(python) = torch_python() else { return };
    let o = run(std::process::Command::new(&python).args(["python/plastic_torch.py", "check"]).args(&exports));
    let report = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{report}{}", stderr(&o));
    assert_eq!(report.lines().filter(|l| l.starts_with("ok ")).count(), cases.len(), "{report}");
    eprint!("{report}");
    let o = run(std::process::Command::new(&python).args(["python/plastic_torch.py", "check"]).arg(&lying));
    assert_eq!(o.status.code(), Some(1), "a wrong graph must fail the check: {}", String::from_utf8_lossy(&o.stdout));
}
