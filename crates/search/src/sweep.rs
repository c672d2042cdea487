//! Sweeps: every point of a grid over run-config keys, trained as its own run. A sweep file
//! (`configs/sweeps/NAME.toml`) names a base run config, fixed overrides (`[set]`, as in a
//! search file) and the grid's axes; each run's config is the base with `[set]` and one value of
//! every axis applied, written at the same key paths `--set` writes ([`crate::space::set_path`]),
//! so each run is an ordinary run config. [`driver`] runs the missing runs through the search's
//! trial executors and keeps `results.csv` current; the CLI then gathers the runs' observables
//! into one data set for learning-rule identification.
//!
//! ```toml
//! name = "rules"
//! base = "../rules_mlp.toml"          # relative to this file, or an inline [base] table
//! run_timeout_s = 900                 # local executor: kill and record `timeout` after this
//!
//! [set]                               # fixed for every run (dotted keys are key paths)
//! "train.steps" = 200
//!
//! [[axis]]                            # a key and its values
//! key = "rule.kind"
//! values = ["backprop", "feedback_alignment", "kolen_pollack"]
//!
//! [[axis]]                            # per-value overrides, keyed by the value as written
//! key = "train.optimizer"
//! values = ["sgd", "adam"]
//! with = { sgd = { "train.lr" = 0.05, "train.momentum" = 0.9 }, adam = { "train.lr" = 0.002 } }
//!
//! [[axis]]                            # named variants, each a set of overrides
//! name = "architecture"
//! [axis.variants.mlp]
//! "model.kind" = "mlp"
//! [axis.variants.convnet]
//! model = { kind = "convnet", channels = [16, 32] }
//!
//! [[axis]]
//! key = "seed"
//! values = [0, 1]
//! ```
//!
//! The grid is the cartesian product of the axes, the first axis varying slowest; variants come
//! in the order of their names. A run is named after its values in axis order
//! (`feedback_alignment-adam-convnet-seed0`): strings and variant names as they are, numbers
//! and booleans after the last segment of the axis' name (`seed0`, `batch_size32`), anything
//! but letters, digits and `_ . +` replaced by `_`. Names depend on the values only, so they
//! stay the same across restarts and when axes gain values.

pub mod driver;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};
use toml::{Table, Value};

use crate::error::{Result, SearchError};
use crate::file::{Base, check_name, check_timeout, deserialize, merge, parse_with_overrides};
use crate::slurm::SlurmConfig;
use crate::space::set_path;

/// The columns of `results.csv` besides the axes; no axis may take one of their names.
pub const RESULT_COLUMNS: [&str; 8] = ["run", "status", "validation_accuracy", "test_accuracy", "params", "units", "wall_s", "error"];

/// At most this many runs in one sweep: a larger grid is almost certainly a mistake.
pub const MAX_RUNS: usize = 100_000;

/// The sweep file as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepFile {
    /// The sweep directory's name under `--out` (default `sweeps/`).
    pub name: String,
    pub base: Base,
    /// Local executor: a run still going after this many seconds is killed (`timeout`). Slurm
    /// runs are limited by `slurm.time` instead.
    #[serde(default)]
    pub run_timeout_s: Option<f64>,
    /// Overrides of the base applied to every run: nested tables merge, dotted keys are key
    /// paths (`"train.steps" = 200`).
    #[serde(default)]
    pub set: Table,
    /// The grid, one entry per axis.
    #[serde(default)]
    pub axis: Vec<AxisSpec>,
    #[serde(default)]
    pub slurm: SlurmConfig,
}

/// One `[[axis]]` as written: `key` + `values` (+ `with`), or `name` + `variants`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AxisSpec {
    /// The config key path each value is written to.
    #[serde(default)]
    pub key: Option<String>,
    /// The axis' name in `results.csv` and the data set's meta data (default: `key`).
    #[serde(default)]
    pub name: Option<String>,
    /// The values of `key`: strings, numbers or booleans (tables and arrays go in variants).
    #[serde(default)]
    pub values: Option<Vec<Value>>,
    /// More overrides for some values, keyed by the value as written (`adam`, `32`, `true`),
    /// applied after the value itself (each optimiser's own learning rate).
    #[serde(default)]
    pub with: BTreeMap<String, Table>,
    /// Named variants, each a table of overrides with `[set]`'s meaning (a ConvRNN needs
    /// `model.kind` and a `model.convrnn` table at once).
    #[serde(default)]
    pub variants: Option<Table>,
}

/// One resolved axis.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Axis {
    pub name: String,
    /// The key a key axis writes; `None` for a variant axis.
    pub key: Option<String>,
    pub levels: Vec<Level>,
}

/// One value of an axis.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Level {
    /// Its part of run names.
    pub label: String,
    /// The value (a variant axis: the variant's name, as a string).
    pub value: Value,
    /// What it sets besides `key = value`: the `with` table of the value, or the variant.
    pub set: Table,
}

/// One point of the grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// Its place in the grid (the trial number the executors know it by).
    pub index: usize,
    pub name: String,
    /// Each axis' value, in axis order.
    pub values: Vec<Value>,
    /// Its run config, `name` included.
    pub config: Table,
}

/// A loaded, checked sweep with its grid expanded.
#[derive(Debug, Clone)]
pub struct Sweep {
    pub file: SweepFile,
    /// The base with `[set]` applied: what every run starts from.
    pub base: Table,
    pub axes: Vec<Axis>,
    pub runs: Vec<Run>,
}

impl Sweep {
    /// Reads a sweep file and applies `--set` overrides: `base.KEY=V` adds KEY to `[set]`, any
    /// other key sets a key of the sweep file (`run_timeout_s=60`, `slurm.time=00:05:00`).
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| SearchError::Invalid(format!("cannot read {}: {e}", path.display())))?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&text, &dir, overrides).map_err(|e| SearchError::Invalid(format!("{}: {e}", path.display())))
    }

    /// Parses a sweep file's text; a relative `base` path is read from `dir`.
    pub fn parse(text: &str, dir: &Path, overrides: &[String]) -> std::result::Result<Self, String> {
        let file: SweepFile = deserialize(parse_with_overrides(text, overrides)?, "sweep")?;
        check_name(&file.name, "sweep")?;
        check_timeout("run_timeout_s", file.run_timeout_s)?;
        file.slurm.validate().map_err(|e| format!("slurm: {e}"))?;
        let mut base = file.base.table(dir)?;
        merge(&mut base, &file.set).map_err(|e| format!("set: {e}"))?;
        if file.axis.is_empty() {
            return Err("the sweep has no [[axis]]: nothing to sweep".into());
        }
        let axes = file.axis.iter().enumerate().map(|(i, a)| resolve_axis(i, a)).collect::<std::result::Result<Vec<_>, _>>()?;
        let mut names = BTreeSet::new();
        for a in &axes {
            if !names.insert(a.name.as_str()) {
                return Err(format!("axis {:?} is defined twice", a.name));
            }
        }
        let runs = grid(&base, &axes)?;
        Ok(Self { file, base, axes, runs })
    }

    /// The resolved sweep (base, axes and their overrides), as written to `sweep.json`: two
    /// sweeps are the same sweep when this is the same (where and how long runs run is not part
    /// of it).
    pub fn fingerprint(&self) -> String {
        serde_json::to_string_pretty(&serde_json::json!({ "name": self.file.name, "base": self.base, "axes": self.axes })).expect("plain data")
    }

    pub fn run(&self, name: &str) -> Option<&Run> {
        self.runs.iter().find(|r| r.name == name)
    }

    /// Each axis' value of `run`, by axis name, as text (strings without their quotes).
    pub fn values_of(&self, run: &Run) -> Vec<(String, String)> {
        self.axes.iter().zip(&run.values).map(|(a, v)| (a.name.clone(), value_text(v))).collect()
    }
}

impl Run {
    /// `config.toml` of the run's directory.
    pub fn config_text(&self, sweep: &str) -> String {
        format!("# run {:?} of sweep {sweep:?}, written by `plastic sweep`\n{}", self.name, toml::to_string(&self.config).expect("a TOML table serialises"))
    }
}

/// A value as text: strings without their TOML quotes (`adam`), anything else as TOML writes it.
pub fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `s` as part of a run name: letters, digits and `_ . +`, everything else `_`, no leading `.`.
fn sanitise(s: &str) -> String {
    let mut out: String = s.chars().map(|c| if c.is_ascii_alphanumeric() || "_.+".contains(c) { c } else { '_' }).collect();
    if out.starts_with('.') {
        out.replace_range(..1, "_");
    }
    out
}

fn resolve_axis(i: usize, spec: &AxisSpec) -> std::result::Result<Axis, String> {
    let what = spec.name.as_deref().or(spec.key.as_deref()).map_or_else(|| format!("axis[{i}]"), |n| format!("axis {n:?}"));
    let (name, key, levels) = match (&spec.key, &spec.values, &spec.variants) {
        (Some(key), Some(values), None) => {
            if key.is_empty() || key.split('.').any(str::is_empty) {
                return Err(format!("{what}: key {key:?} is not a key path (dotted, no empty segments)"));
            }
            if key == "name" {
                return Err(format!("{what}: run names are made by the sweep; `name` cannot be an axis"));
            }
            if values.is_empty() {
                return Err(format!("{what}: `values` is empty"));
            }
            let name = spec.name.clone().unwrap_or_else(|| key.clone());
            let stem = name.rsplit('.').next().unwrap_or(&name).to_string();
            let mut levels = Vec::new();
            for v in values {
                let label = match v {
                    Value::String(s) => sanitise(s),
                    Value::Integer(_) | Value::Float(_) | Value::Boolean(_) => sanitise(&format!("{stem}{v}")),
                    other => return Err(format!("{what}: value {other} is neither a string, a number nor a boolean; give tables and arrays as variants ([axis.variants.NAME])")),
                };
                let set = spec.with.get(&value_text(v)).cloned().unwrap_or_default();
                levels.push(Level { label, value: v.clone(), set });
            }
            let written: Vec<String> = values.iter().map(value_text).collect();
            if let Some(k) = spec.with.keys().find(|k| !written.contains(k)) {
                return Err(format!("{what}: with.{k} names no value of the axis (values: {})", written.join(", ")));
            }
            (name, Some(key.clone()), levels)
        }
        (None, None, Some(variants)) => {
            let name = spec.name.clone().ok_or_else(|| format!("{what}: an axis of variants needs a `name`"))?;
            if !spec.with.is_empty() {
                return Err(format!("{what}: `with` belongs to an axis of values; put a variant's overrides in its own table"));
            }
            if variants.is_empty() {
                return Err(format!("{what}: `variants` is empty"));
            }
            let mut levels = Vec::new();
            for (variant, set) in variants {
                let Value::Table(set) = set else { return Err(format!("{what}: variants.{variant} is a {}, not a table of overrides", set.type_str())) };
                levels.push(Level { label: sanitise(variant), value: Value::String(variant.clone()), set: set.clone() });
            }
            (name, None, levels)
        }
        (Some(_), _, Some(_)) | (None, Some(_), Some(_)) => return Err(format!("{what}: give either key + values or name + variants, not both")),
        (Some(_), None, None) => return Err(format!("{what}: a key axis needs `values`")),
        (None, Some(_), None) => return Err(format!("{what}: `values` needs the `key` they are written to")),
        (None, None, None) => return Err(format!("{what}: give key + values, or name + variants")),
    };
    if name.is_empty() || RESULT_COLUMNS.contains(&name.as_str()) {
        return Err(format!("{what}: {name:?} cannot name an axis (results.csv has its own column of that name)"));
    }
    for (j, l) in levels.iter().enumerate() {
        if l.label.is_empty() {
            return Err(format!("{what}: value {} gives an empty run name", l.value));
        }
        if let Some(other) = levels[..j].iter().find(|o| o.label == l.label) {
            return Err(format!("{what}: values {} and {} both name their runs {:?}", other.value, l.value, l.label));
        }
    }
    Ok(Axis { name, key, levels })
}

/// Every point of the grid, the first axis varying slowest, each with its config.
fn grid(base: &Table, axes: &[Axis]) -> std::result::Result<Vec<Run>, String> {
    let total = axes.iter().try_fold(1usize, |n, a| n.checked_mul(a.levels.len()).filter(|&n| n <= MAX_RUNS));
    let total = total.ok_or_else(|| format!("the grid has more than {MAX_RUNS} runs ({})", axes.iter().map(|a| a.levels.len().to_string()).collect::<Vec<_>>().join(" × ")))?;
    let mut runs = Vec::with_capacity(total);
    for index in 0..total {
        // Mixed radix, the last axis fastest.
        let mut rest = index;
        let mut choice = vec![0; axes.len()];
        for (a, axis) in axes.iter().enumerate().rev() {
            choice[a] = rest % axis.levels.len();
            rest /= axis.levels.len();
        }
        let mut config = base.clone();
        let mut labels = Vec::new();
        let mut values = Vec::new();
        for (axis, &c) in axes.iter().zip(&choice) {
            let level = &axis.levels[c];
            let at = |e: String| format!("axis {:?}, {}: {e}", axis.name, value_text(&level.value));
            if let Some(key) = &axis.key {
                set_path(&mut config, key, level.value.clone()).map_err(at)?;
            }
            merge(&mut config, &level.set).map_err(at)?;
            labels.push(level.label.as_str());
            values.push(level.value.clone());
        }
        let name = labels.join("-");
        if name.len() > 200 {
            return Err(format!("run name {name:?} is longer than 200 characters: shorten the values or variant names"));
        }
        config.insert("name".into(), Value::String(name.clone()));
        runs.push(Run { index, name, values, config });
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::get_path;

    const FILE: &str = r#"
        name = "t"
        [base]
        seed = 3
        [base.train]
        steps = 900
        lr = 0.1
        [base.model]
        kind = "mlp"
        [set]
        "train.steps" = 20
        [[axis]]
        key = "rule.kind"
        values = ["backprop", "feedback_alignment"]
        [[axis]]
        key = "train.optimizer"
        values = ["sgd", "adam"]
        with = { adam = { "train.lr" = 0.001, train = { epsilon = 1e-6 } } }
        [[axis]]
        name = "architecture"
        [axis.variants.mlp]
        "model.kind" = "mlp"
        [axis.variants.convrnn]
        model = { kind = "convrnn", convrnn = { times = 4 } }
        [[axis]]
        key = "seed"
        values = [0, 1]
    "#;

    fn parse(text: &str, overrides: &[&str]) -> std::result::Result<Sweep, String> {
        Sweep::parse(text, Path::new("/nonexistent"), &overrides.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn the_grid_is_the_product_of_the_axes_with_each_values_overrides() {
        let s = parse(FILE, &[]).unwrap();
        assert_eq!(s.runs.len(), 2 * 2 * 2 * 2);
        // The first axis varies slowest, the last fastest; variants in the order of their names.
        let names: Vec<&str> = s.runs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(&names[..4], ["backprop-sgd-convrnn-seed0", "backprop-sgd-convrnn-seed1", "backprop-sgd-mlp-seed0", "backprop-sgd-mlp-seed1"]);
        assert_eq!(names[15], "feedback_alignment-adam-mlp-seed1");
        assert!(s.runs.iter().enumerate().all(|(i, r)| r.index == i));
        for r in &s.runs {
            let c = &r.config;
            let get = |k: &str| get_path(c, k).cloned();
            // Every run: [set], the base it does not override, its own name.
            assert_eq!(get("train.steps"), Some(Value::Integer(20)));
            assert_eq!(get("name"), Some(Value::String(r.name.clone())));
            let [rule, opt, arch, seed] = [0, 1, 2, 3].map(|i| value_text(&r.values[i]));
            assert_eq!(get("rule.kind"), Some(Value::String(rule.clone())));
            assert_eq!(get("seed").unwrap().to_string(), seed);
            // Adam's own learning rate and epsilon, SGD the base's.
            let adam = opt == "adam";
            assert_eq!(get("train.lr"), Some(Value::Float(if adam { 0.001 } else { 0.1 })), "{}", r.name);
            assert_eq!(get("train.epsilon").is_some(), adam);
            // A variant sets several keys at once and merges into the base's tables.
            assert_eq!(get("model.kind").and_then(|v| v.as_str().map(String::from)), Some(arch.clone()));
            assert_eq!(get("model.convrnn.times").is_some(), arch == "convrnn");
            assert_eq!(r.name, format!("{rule}-{opt}-{arch}-seed{seed}"));
        }
        // --set reaches both the base (base.K) and the sweep file's own keys.
        let s2 = parse(FILE, &["base.train.steps=5", "run_timeout_s=60"]).unwrap();
        assert_eq!(get_path(&s2.runs[0].config, "train.steps"), Some(&Value::Integer(5)));
        assert_eq!(s2.file.run_timeout_s, Some(60.0));
        assert_ne!(s.fingerprint(), s2.fingerprint());
        assert_eq!(s.fingerprint(), parse(FILE, &["run_timeout_s=60"]).unwrap().fingerprint(), "where runs run is not part of the sweep");
    }

    #[test]
    fn names_are_unique_readable_and_do_not_move_when_an_axis_grows() {
        let s = parse(FILE, &[]).unwrap();
        let names: BTreeSet<&str> = s.runs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names.len(), s.runs.len());
        assert!(names.iter().all(|n| n.chars().all(|c| c.is_ascii_alphanumeric() || "_.+-".contains(c))), "{names:?}");
        // A third seed and a third rule: every earlier run keeps its name and its config.
        let grown = parse(&FILE.replace("values = [0, 1]", "values = [0, 1, 2]").replace("\"feedback_alignment\"]", "\"feedback_alignment\", \"kolen_pollack\"]"), &[]).unwrap();
        assert_eq!(grown.runs.len(), 3 * 2 * 2 * 3);
        for r in &s.runs {
            assert_eq!(grown.run(&r.name).map(|g| &g.config), Some(&r.config), "{}", r.name);
        }
        // Values are made into names: floats keep their point, odd characters become `_`.
        let t = "name = \"t\"\nbase = {}\n[[axis]]\nkey = \"train.lr\"\nvalues = [0.001, 0.01]\n[[axis]]\nkey = \"data.path\"\nvalues = [\"/data/a b\", \".hidden\"]";
        let names: Vec<String> = parse(t, &[]).unwrap().runs.into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["lr0.001-_data_a_b", "lr0.001-_hidden", "lr0.01-_data_a_b", "lr0.01-_hidden"]);
    }

    #[test]
    fn bad_sweep_files_name_what_is_wrong() {
        for (edit, says) in [
            (FILE.replace("key = \"seed\"", "key = \"seed\"\nnaem = \"s\""), "axis[3].naem: unknown field `naem`"),
            (FILE.replace("values = [0, 1]", "values = []"), "axis \"seed\": `values` is empty"),
            (FILE.replace("values = [0, 1]", "values = [[0], [1]]"), "axis \"seed\": value [0] is neither"),
            (FILE.replace("adam = {", "adamw = {"), "axis \"train.optimizer\": with.adamw names no value of the axis (values: sgd, adam)"),
            (FILE.replace("name = \"architecture\"", ""), "axis[2]: an axis of variants needs a `name`"),
            (FILE.replace("name = \"architecture\"", "name = \"architecture\"\nkey = \"model.kind\""), "not both"),
            (FILE.replace("key = \"seed\"\n", ""), "axis[3]: `values` needs the `key`"),
            (FILE.replace("\"feedback_alignment\"", "\"backprop\""), "axis \"rule.kind\": values \"backprop\" and \"backprop\" both name their runs"),
            (FILE.replace("\"feedback_alignment\"", "\"back-prop\"").replace("\"backprop\"", "\"back_prop\""), "both name their runs \"back_prop\""),
            (FILE.replace("key = \"seed\"", "key = \"rule.kind\""), "axis \"rule.kind\" is defined twice"),
            (FILE.replace("key = \"seed\"", "key = \"seed\"\nname = \"status\""), "results.csv has its own column"),
            (FILE.replace("key = \"seed\"", "key = \"train..seed\""), "not a key path"),
            (FILE.replace("\"model.kind\" = \"mlp\"", "\"model.kind.x\" = \"mlp\""), "axis \"architecture\", mlp: model.kind is a string, not a table"),
            (FILE.replace("[[axis]]", "[[axes]]"), "unknown field `axes`"),
            ("name = \"t\"\nbase = {}\n".to_string(), "no [[axis]]"),
            ("name = \"a/b\"\nbase = {}\n[[axis]]\nkey = \"seed\"\nvalues = [1]".to_string(), "a sweep name is one folder name"),
            ("name = \"t\"\nbase = \"missing.toml\"\n[[axis]]\nkey = \"seed\"\nvalues = [1]".to_string(), "cannot read"),
            (FILE.replace("name = \"t\"", "name = \"t\"\nrun_timeout_s = 0"), "run_timeout_s must be > 0"),
        ] {
            let e = parse(&edit, &[]).err().unwrap_or_else(|| panic!("{says}: accepted"));
            assert!(e.contains(says), "{says}: {e}");
        }
        let e = parse(FILE, &["base"]).unwrap_err();
        assert!(e.contains("expected key=value"), "{e}");
    }
}
