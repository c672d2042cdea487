//! The search file (`configs/searches/NAME.toml`): a base run config, fixed overrides, the
//! space, the strategy and the executors' settings.
//!
//! ```toml
//! name = "demo"
//! base = "../convrnn_quickstart.toml"   # relative to this file, or an inline [base] table
//! strategy = "tpe"                      # random | evolutionary | tpe
//! trials = 24
//! seed = 0
//! trial_timeout_s = 900                 # local executor: kill and record `timeout` after this
//!
//! [set]                                 # fixed for every trial (dotted keys are key paths)
//! "train.epochs" = 2
//!
//! [[param]]
//! key = "model.convrnn.layers.{layer}.cell.gate_kernel"
//! layers = ["conv2", "conv3"]
//! int = [1, 5]
//! when = { "model.convrnn.layers.{layer}.cell.kind" = "rgc" }
//!
//! [edges]
//! candidates = "feedback"
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::{Table, Value};

use crate::error::{Result, SearchError, one_line};
use crate::slurm::SlurmConfig;
use crate::space::{EdgeSpec, ParamSpec, Space, set_path};
use crate::strategy::{EvolutionConfig, Strategy, StrategyKind, TpeConfig};

/// The base run config: a path (relative to the search file) or an inline table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Base {
    Path(String),
    Inline(Table),
}

/// The search file as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchFile {
    /// The search directory's name under `--out` (default `searches/`).
    pub name: String,
    pub base: Base,
    #[serde(default)]
    pub strategy: StrategyKind,
    /// How many trials in all.
    pub trials: usize,
    #[serde(default)]
    pub seed: u64,
    /// Local executor: a trial still running after this many seconds is killed (`timeout`).
    /// Slurm trials are limited by `slurm.time` instead.
    #[serde(default)]
    pub trial_timeout_s: Option<f64>,
    /// Overrides of the base applied to every trial: nested tables merge, dotted keys are key
    /// paths (`"model.convrnn.layers.conv2.channels" = 16`).
    #[serde(default)]
    pub set: Table,
    #[serde(default)]
    pub param: Vec<ParamSpec>,
    #[serde(default)]
    pub edges: Option<EdgeSpec>,
    #[serde(default)]
    pub evolutionary: EvolutionConfig,
    #[serde(default)]
    pub tpe: TpeConfig,
    #[serde(default)]
    pub slurm: SlurmConfig,
}

/// A loaded, checked search.
#[derive(Debug, Clone)]
pub struct Search {
    pub file: SearchFile,
    /// The base with `[set]` applied: what every trial starts from.
    pub base: Table,
    pub space: Space,
    pub strategy: Strategy,
}

impl Search {
    /// Reads a search file and applies `--set` overrides: `base.KEY=V` adds KEY to `[set]`, any
    /// other key sets a key of the search file (`trials=4`, `slurm.time=00:05:00`).
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| SearchError::Invalid(format!("cannot read {}: {e}", path.display())))?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&text, &dir, overrides).map_err(|e| SearchError::Invalid(format!("{}: {e}", path.display())))
    }

    /// Parses a search file's text; a relative `base` path is read from `dir`.
    pub fn parse(text: &str, dir: &Path, overrides: &[String]) -> std::result::Result<Self, String> {
        let table = parse_with_overrides(text, overrides)?;
        let file: SearchFile = deserialize(table, "search")?;
        check_name(&file.name, "search")?;
        if file.trials == 0 {
            return Err("trials must be at least 1".into());
        }
        check_timeout("trial_timeout_s", file.trial_timeout_s)?;
        file.slurm.validate().map_err(|e| format!("slurm: {e}"))?;
        let strategy = match file.strategy {
            StrategyKind::Random => Strategy::Random,
            StrategyKind::Evolutionary => {
                file.evolutionary.validate()?;
                Strategy::Evolutionary(file.evolutionary.clone())
            }
            StrategyKind::Tpe => {
                file.tpe.validate()?;
                Strategy::Tpe(file.tpe.clone())
            }
        };
        let mut base = file.base.table(dir)?;
        merge(&mut base, &file.set).map_err(|e| format!("set: {e}"))?;
        let space = Space::new(&file.param, file.edges.as_ref(), &base)?;
        Ok(Self { file, base, space, strategy })
    }

    /// What makes two searches the same search: the base, the space, the strategy and the seed
    /// (not the trial budget, which a resumed search may raise, nor where trials run).
    pub fn fingerprint(&self) -> String {
        let f = &self.file;
        serde_json::json!({
            "base": self.base, "param": f.param, "edges": f.edges, "strategy": f.strategy, "seed": f.seed,
            "evolutionary": f.evolutionary, "tpe": f.tpe,
        })
        .to_string()
    }
}

impl Base {
    /// The base run config as a table: the inline table, or the file a path names (relative to
    /// `dir`, the folder of the file that names it).
    pub fn table(&self, dir: &Path) -> std::result::Result<Table, String> {
        match self {
            Base::Inline(t) => Ok(t.clone()),
            Base::Path(p) => {
                let path = resolve(dir, p);
                let text = std::fs::read_to_string(&path).map_err(|e| format!("base = {p:?}: cannot read {}: {e}", path.display()))?;
                text.parse().map_err(|e: toml::de::Error| format!("base = {p:?}: {}", one_line(&e.to_string())))
            }
        }
    }
}

fn resolve(dir: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() { p.to_path_buf() } else { dir.join(p) }
}

/// A search or sweep file's text as a table with `--set` overrides applied: `base.KEY=V` adds
/// KEY to `[set]`, any other key sets a key of the file itself (`trials=4`, `slurm.time=…`).
pub(crate) fn parse_with_overrides(text: &str, overrides: &[String]) -> std::result::Result<Table, String> {
    let mut table: Table = text.parse().map_err(|e: toml::de::Error| one_line(&e.to_string()))?;
    for spec in overrides {
        let (key, raw) = spec.split_once('=').ok_or_else(|| format!("--set {spec:?}: expected key=value"))?;
        let (key, value) = (key.trim(), parse_value(raw.trim()));
        match key.strip_prefix("base.") {
            Some(k) => {
                let set = table.entry("set").or_insert_with(|| Value::Table(Table::new()));
                set.as_table_mut().ok_or("`set` is not a table")?.insert(k.to_string(), value);
            }
            None => set_path(&mut table, key, value).map_err(|e| format!("--set {key}: {e}"))?,
        }
    }
    Ok(table)
}

/// Reads a file's table into its struct; an error names the key path at fault (`what` when it
/// is the file as a whole).
pub(crate) fn deserialize<T: serde::de::DeserializeOwned>(table: Table, what: &str) -> std::result::Result<T, String> {
    serde_path_to_error::deserialize(Value::Table(table)).map_err(|e| {
        let path = e.path().to_string();
        format!("{}: {}", if path == "." { what.into() } else { path }, one_line(&e.inner().to_string()))
    })
}

/// A search's or sweep's name is the name of its directory under `--out`.
pub(crate) fn check_name(name: &str, what: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        return Err(format!("name = {name:?}: a {what} name is one folder name"));
    }
    Ok(())
}

/// A local executor's time limit, when given, is a positive number of seconds.
pub(crate) fn check_timeout(key: &str, t: Option<f64>) -> std::result::Result<(), String> {
    match t {
        Some(t) if !(t > 0.0 && t.is_finite()) => Err(format!("{key} must be > 0, got {t}")),
        _ => Ok(()),
    }
}

/// Applies `[set]`: dotted keys are key paths, tables merge into tables, anything else replaces.
pub(crate) fn merge(base: &mut Table, set: &Table) -> std::result::Result<(), String> {
    for (k, v) in set {
        if k.contains('.') {
            set_path(base, k, v.clone())?;
            continue;
        }
        match (base.get_mut(k), v) {
            (Some(Value::Table(b)), Value::Table(s)) => merge(b, s).map_err(|e| format!("{k}.{e}"))?,
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(())
}

/// A TOML value, or the raw text as a string (so `--set strategy=tpe` needs no quotes).
fn parse_value(raw: &str) -> Value {
    toml::from_str::<Table>(&format!("v = {raw}")).ok().and_then(|mut t| t.remove("v")).unwrap_or_else(|| Value::String(raw.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
        name = "t"
        trials = 4
        strategy = "tpe"
        [base]
        seed = 3
        [base.train]
        epochs = 9
        lr = 0.1
        [set]
        "train.epochs" = 1
        train = { batch_size = 8 }
        [[param]]
        key = "train.lr"
        float = [0.001, 0.1]
        log = true
    "#;

    #[test]
    fn set_merges_into_the_base_and_overrides_reach_both() {
        let s = Search::parse(FILE, Path::new("."), &["trials=6".into(), "base.seed=5".into(), "tpe.startup=2".into()]).unwrap();
        assert_eq!(s.file.trials, 6);
        assert_eq!(s.file.tpe.startup, 2);
        let train = s.base["train"].as_table().unwrap();
        assert_eq!((train["epochs"].as_integer(), train["batch_size"].as_integer(), train["lr"].as_float()), (Some(1), Some(8), Some(0.1)));
        assert_eq!(s.base["seed"].as_integer(), Some(5));
        // The budget is not part of what makes a search the same search; the seed is.
        let again = Search::parse(FILE, Path::new("."), &["base.seed=5".into(), "tpe.startup=2".into()]).unwrap();
        assert_eq!(s.fingerprint(), again.fingerprint());
        assert_ne!(s.fingerprint(), Search::parse(FILE, Path::new("."), &[]).unwrap().fingerprint());
    }

    #[test]
    fn bad_files_name_what_is_wrong() {
        for (edit, says) in [
            (FILE.replace("trials = 4", "trials = 0"), "trials must be at least 1"),
            (FILE.replace("strategy = \"tpe\"", "strategy = \"grid\""), "strategy"),
            (FILE.replace("name = \"t\"", "name = \"a/b\""), "one folder name"),
            (FILE.replace("log = true", "log = true\nsteps = 3"), "param[0]"),
            ("name = \"t\"\ntrials = 1\nbase = \"missing.toml\"\n[[param]]\nkey = \"seed\"\nint = [0, 3]".to_string(), "cannot read"),
        ] {
            let e = Search::parse(&edit, Path::new("/nonexistent"), &[]).unwrap_err();
            assert!(e.contains(says), "{says}: {e}");
        }
    }
}
