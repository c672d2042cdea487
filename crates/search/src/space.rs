//! A search space on top of a base run config, read from the search file's `[[param]]` and
//! `[edges]` sections. A trial is built by walking the parameters in file order over a copy of
//! the base config: a parameter whose `when` condition holds on the config built so far is
//! active and gets a value, one whose condition fails is left out (so a cell kind's own settings
//! exist only in the trials that use that cell). Every value lands at its key path, which is
//! what `--set` would write, so each trial is an ordinary run config.
//!
//! Key paths are dotted; inside an array of tables a segment selects the element by its `name`
//! (`model.convrnn.layers.conv2.cell.kind`) or by its index (`model.convrnn.layers.1.channels`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use toml::{Table, Value};

/// A trial's choices: the active parameters by name, in the form written into the config.
pub type Assignment = BTreeMap<String, Value>;

/// One `[[param]]` entry as written. Exactly one of `int`, `float`, `choices`, `boolean`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    /// The config key path the value is written to; `{layer}` is replaced by each of `layers`.
    pub key: String,
    /// One parameter per layer: the key (and the `when` keys) with `{layer}` replaced.
    #[serde(default)]
    pub layers: Option<Vec<String>>,
    /// Inclusive integer bounds.
    #[serde(default)]
    pub int: Option<[i64; 2]>,
    /// Float bounds.
    #[serde(default)]
    pub float: Option<[f64; 2]>,
    /// Sample `int` / `float` uniformly in the logarithm (both bounds > 0).
    #[serde(default)]
    pub log: bool,
    /// Categorical: one of these values (strings, numbers, booleans or tables).
    #[serde(default)]
    pub choices: Option<Vec<Value>>,
    /// `boolean = true`: true or false.
    #[serde(default)]
    pub boolean: bool,
    /// Active only when each of these config keys (after the parameters before this one are
    /// applied) holds the given value, or one of the given values when an array is given.
    #[serde(default)]
    pub when: BTreeMap<String, Value>,
}

/// `[edges]`: which long-range edges a ConvRNN trial has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeSpec {
    /// `"feedback"` (every pair from a deeper layer to a shallower one) or a list of
    /// `[from, to]` layer-name pairs.
    pub candidates: EdgeCandidates,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EdgeCandidates {
    All(String),
    Pairs(Vec<[String; 2]>),
}

/// A parameter's domain.
#[derive(Debug, Clone, PartialEq)]
pub enum Domain {
    Int { lo: i64, hi: i64, log: bool },
    Float { lo: f64, hi: f64, log: bool },
    Choice(Vec<Value>),
    Bool,
}

/// Where a parameter's value goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// A config key path.
    Key(String),
    /// A long-range edge `from → to` of `model.convrnn.edges`, present when the value is true.
    Edge { from: String, to: String },
}

/// A condition: the value at `key` is one of `values`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub key: String,
    pub values: Vec<Value>,
}

/// One resolved parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// The name in results and state: the key path, or `edge.FROM->TO`.
    pub name: String,
    pub target: Target,
    pub domain: Domain,
    pub when: Vec<Condition>,
}

impl Domain {
    /// The number of values of a categorical or boolean domain.
    pub fn cardinality(&self) -> Option<usize> {
        match self {
            Domain::Choice(c) => Some(c.len()),
            Domain::Bool => Some(2),
            _ => None,
        }
    }

    /// The value of category `i`.
    pub fn category(&self, i: usize) -> Value {
        match self {
            Domain::Choice(c) => c[i.min(c.len() - 1)].clone(),
            Domain::Bool => Value::Boolean(i == 1),
            _ => unreachable!("only categorical domains have categories"),
        }
    }

    /// The category index of `v`, if `v` is one of the domain's values.
    pub fn index_of(&self, v: &Value) -> Option<usize> {
        match self {
            Domain::Choice(c) => c.iter().position(|x| x == v),
            Domain::Bool => v.as_bool().map(usize::from),
            _ => None,
        }
    }

    /// Whether `v` lies in the domain.
    pub fn contains(&self, v: &Value) -> bool {
        match self {
            Domain::Int { lo, hi, .. } => v.as_integer().is_some_and(|x| (*lo..=*hi).contains(&x)),
            Domain::Float { lo, hi, .. } => v.as_float().is_some_and(|x| *lo <= x && x <= *hi),
            _ => self.index_of(v).is_some(),
        }
    }

    /// A numeric domain mapped to the line the strategies work on: the logarithm for log
    /// domains, and for integers the half-open `[lo, hi + 1)` that flooring maps back.
    pub fn numeric_range(&self) -> Option<(f64, f64)> {
        match *self {
            Domain::Int { lo, hi, log: false } => Some((lo as f64, hi as f64 + 1.0)),
            Domain::Int { lo, hi, log: true } => Some(((lo as f64).ln(), (hi as f64 + 1.0).ln())),
            Domain::Float { lo, hi, log: false } => Some((lo, hi)),
            Domain::Float { lo, hi, log: true } => Some((lo.ln(), hi.ln())),
            _ => None,
        }
    }

    /// A point of [`numeric_range`](Self::numeric_range) as a value of the domain.
    pub fn from_numeric(&self, u: f64) -> Value {
        match *self {
            Domain::Int { lo, hi, log } => {
                let x = if log { u.exp() } else { u };
                Value::Integer((x.floor() as i64).clamp(lo, hi))
            }
            Domain::Float { lo, hi, log } => Value::Float((if log { u.exp() } else { u }).clamp(lo, hi)),
            _ => unreachable!("only numeric domains map from the line"),
        }
    }

    /// A numeric value of the domain on the strategies' line (the inverse of `from_numeric`,
    /// at the middle of an integer's cell).
    pub fn to_numeric(&self, v: &Value) -> Option<f64> {
        match *self {
            Domain::Int { log, .. } => v.as_integer().map(|x| if log { (x as f64 + 0.5).ln() } else { x as f64 + 0.5 }),
            Domain::Float { log, .. } => v.as_float().map(|x| if log { x.ln() } else { x }),
            _ => None,
        }
    }
}

/// The whole space: parameters in the order they are applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Space {
    pub params: Vec<Param>,
    /// The candidate edges (also among `params`), removed from the base before a trial's own
    /// edges are added.
    pub edge_candidates: Vec<(String, String)>,
}

impl Space {
    /// Resolves the `[[param]]` and `[edges]` sections against the base config. Every error
    /// names the parameter and says what is wrong.
    pub fn new(specs: &[ParamSpec], edges: Option<&EdgeSpec>, base: &Table) -> Result<Self, String> {
        let mut params = Vec::new();
        for spec in specs {
            let layers: Vec<Option<&str>> = match &spec.layers {
                Some(l) if l.is_empty() => return Err(format!("param {:?}: `layers` is empty", spec.key)),
                Some(l) => {
                    if !spec.key.contains("{layer}") {
                        return Err(format!("param {:?}: `layers` is given but the key has no {{layer}}", spec.key));
                    }
                    l.iter().map(|s| Some(s.as_str())).collect()
                }
                None if spec.key.contains("{layer}") => return Err(format!("param {:?}: the key has {{layer}} but no `layers` list", spec.key)),
                None => vec![None],
            };
            let domain = domain(spec)?;
            for layer in layers {
                let sub = |s: &str| layer.map_or_else(|| s.to_string(), |l| s.replace("{layer}", l));
                let name = sub(&spec.key);
                if name.is_empty() || name.split('.').any(str::is_empty) {
                    return Err(format!("param {name:?}: not a key path (dotted, no empty segments)"));
                }
                if name == "name" || name.starts_with("edge.") {
                    return Err(format!("param {name:?}: this key cannot be searched"));
                }
                let when = spec
                    .when
                    .iter()
                    .map(|(k, v)| Condition { key: sub(k), values: if let Value::Array(a) = v { a.clone() } else { vec![v.clone()] } })
                    .collect();
                params.push(Param { name, target: Target::Key(sub(&spec.key)), domain: domain.clone(), when });
            }
        }
        let edge_candidates = match edges {
            None => Vec::new(),
            Some(e) => edge_candidates(&e.candidates, base)?,
        };
        for (from, to) in &edge_candidates {
            params.push(Param { name: format!("edge.{from}->{to}"), target: Target::Edge { from: from.clone(), to: to.clone() }, domain: Domain::Bool, when: Vec::new() });
        }
        let mut seen = std::collections::BTreeSet::new();
        for p in &params {
            if !seen.insert(p.name.as_str()) {
                return Err(format!("param {:?} is defined twice", p.name));
            }
        }
        if params.is_empty() {
            return Err("the search has no [[param]] and no [edges]: nothing to search".into());
        }
        // Each key must be writable into the base (its parents exist or can be made).
        for p in &params {
            if let Target::Key(key) = &p.target {
                let mut t = base.clone();
                set_path(&mut t, key, p.domain.from_default()).map_err(|e| format!("param {:?}: {e}", p.name))?;
            }
        }
        Ok(Self { params, edge_candidates })
    }

    pub fn param(&self, name: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.name == name)
    }

    /// Builds a trial: walks the parameters in order over a copy of `base`, asks `choose` for the
    /// value of each active one, and writes it. Returns the assignment and the trial's config.
    pub fn build(&self, base: &Table, mut choose: impl FnMut(&Param) -> Value) -> Result<(Assignment, Table), String> {
        let mut table = base.clone();
        if !self.edge_candidates.is_empty() {
            remove_edges(&mut table, &self.edge_candidates);
        }
        let mut assignment = Assignment::new();
        for p in &self.params {
            if !self.active(p, &table) {
                continue;
            }
            let v = choose(p);
            debug_assert!(p.domain.contains(&v), "{} = {v} lies outside its domain", p.name);
            self.write(p, &v, &mut table).map_err(|e| format!("param {:?}: {e}", p.name))?;
            assignment.insert(p.name.clone(), v);
        }
        Ok((assignment, table))
    }

    /// Rebuilds the config of a recorded assignment (every active parameter must be in it).
    pub fn apply(&self, base: &Table, assignment: &Assignment) -> Result<Table, String> {
        let (rebuilt, table) = self.build(base, |p| assignment.get(&p.name).cloned().unwrap_or_else(|| p.domain.from_default()))?;
        if &rebuilt != assignment {
            return Err("the recorded assignment does not match the space (was the search file changed?)".into());
        }
        Ok(table)
    }

    fn active(&self, p: &Param, table: &Table) -> bool {
        p.when.iter().all(|c| get_path(table, &c.key).is_some_and(|v| c.values.iter().any(|x| loosely_equal(x, v))))
    }

    fn write(&self, p: &Param, v: &Value, table: &mut Table) -> Result<(), String> {
        match &p.target {
            Target::Key(key) => set_path(table, key, v.clone()),
            Target::Edge { from, to } => {
                if v.as_bool() == Some(true) {
                    let edges = table_at(table, &["model", "convrnn"])?.entry("edges").or_insert_with(|| Value::Array(Vec::new()));
                    let Value::Array(edges) = edges else { return Err("model.convrnn.edges is not an array".into()) };
                    let mut e = Table::new();
                    e.insert("from".into(), Value::String(from.clone()));
                    e.insert("to".into(), Value::String(to.clone()));
                    edges.push(Value::Table(e));
                }
                Ok(())
            }
        }
    }
}

impl Domain {
    /// A value of the domain (its first choice or lower bound): what checks that a key is
    /// writable write, and what [`Space::apply`] fills in to detect a mismatched assignment.
    fn from_default(&self) -> Value {
        match self {
            Domain::Choice(c) => c[0].clone(),
            Domain::Bool => Value::Boolean(false),
            d => d.from_numeric(d.numeric_range().expect("numeric").0),
        }
    }
}

/// Integers and floats compare by value in conditions (`when = { "x" = 3 }` matches 3.0).
fn loosely_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Integer(x), Value::Float(y)) | (Value::Float(y), Value::Integer(x)) => (*x as f64) == *y,
        _ => a == b,
    }
}

fn domain(spec: &ParamSpec) -> Result<Domain, String> {
    let key = &spec.key;
    let given = [spec.int.is_some(), spec.float.is_some(), spec.choices.is_some(), spec.boolean].iter().filter(|b| **b).count();
    if given != 1 {
        return Err(format!("param {key:?}: give exactly one of int = [lo, hi], float = [lo, hi], choices = [...] or boolean = true"));
    }
    if spec.log && spec.int.is_none() && spec.float.is_none() {
        return Err(format!("param {key:?}: log = true needs int or float bounds"));
    }
    if let Some([lo, hi]) = spec.int {
        if lo > hi {
            return Err(format!("param {key:?}: int bounds [{lo}, {hi}] are reversed"));
        }
        if spec.log && lo <= 0 {
            return Err(format!("param {key:?}: a log scale needs bounds above 0, got [{lo}, {hi}]"));
        }
        return Ok(Domain::Int { lo, hi, log: spec.log });
    }
    if let Some([lo, hi]) = spec.float {
        if !(lo.is_finite() && hi.is_finite()) || lo >= hi {
            return Err(format!("param {key:?}: float bounds [{lo}, {hi}] must be finite with lo < hi"));
        }
        if spec.log && lo <= 0.0 {
            return Err(format!("param {key:?}: a log scale needs bounds above 0, got [{lo}, {hi}]"));
        }
        return Ok(Domain::Float { lo, hi, log: spec.log });
    }
    if let Some(c) = &spec.choices {
        if c.is_empty() {
            return Err(format!("param {key:?}: `choices` is empty"));
        }
        for (i, a) in c.iter().enumerate() {
            if c[..i].contains(a) {
                return Err(format!("param {key:?}: choice {a} is listed twice"));
            }
        }
        return Ok(Domain::Choice(c.clone()));
    }
    Ok(Domain::Bool)
}

/// The names of the base config's ConvRNN layers, in order.
fn layer_names(base: &Table) -> Result<Vec<String>, String> {
    let layers = get_path(base, "model.convrnn.layers").and_then(Value::as_array).ok_or("[edges] needs a ConvRNN base config (model.convrnn.layers)")?;
    Ok(layers.iter().filter_map(|l| l.get("name").and_then(Value::as_str).map(String::from)).collect())
}

fn edge_candidates(c: &EdgeCandidates, base: &Table) -> Result<Vec<(String, String)>, String> {
    let names = layer_names(base)?;
    let index = |n: &str| names.iter().position(|x| x == n);
    match c {
        EdgeCandidates::All(s) if s == "feedback" => {
            let mut out = Vec::new();
            for (i, from) in names.iter().enumerate().rev() {
                for to in names[..i].iter().rev() {
                    out.push((from.clone(), to.clone()));
                }
            }
            if out.is_empty() {
                return Err("[edges] candidates = \"feedback\": the base has fewer than two layers".into());
            }
            Ok(out)
        }
        EdgeCandidates::All(s) => Err(format!("[edges] candidates = {s:?}: expected \"feedback\" or a list of [from, to] pairs")),
        EdgeCandidates::Pairs(pairs) => {
            if pairs.is_empty() {
                return Err("[edges] candidates is empty".into());
            }
            let mut out: Vec<(String, String)> = Vec::new();
            for [from, to] in pairs {
                let (Some(f), Some(t)) = (index(from), index(to)) else {
                    return Err(format!("[edges] {from} -> {to}: the base has no layer named {:?} (layers: {})", if index(from).is_none() { from } else { to }, names.join(", ")));
                };
                if f == t {
                    return Err(format!("[edges] {from} -> {to}: an edge joins two different layers"));
                }
                if f + 1 == t {
                    return Err(format!("[edges] {from} -> {to}: the feed-forward edge between adjacent layers always exists"));
                }
                if out.iter().any(|(a, b)| a == from && b == to) {
                    return Err(format!("[edges] {from} -> {to} is listed twice"));
                }
                out.push((from.clone(), to.clone()));
            }
            Ok(out)
        }
    }
}

fn remove_edges(table: &mut Table, candidates: &[(String, String)]) {
    if let Some(Value::Array(edges)) = table.get_mut("model").and_then(|m| m.get_mut("convrnn")).and_then(|c| c.get_mut("edges")) {
        edges.retain(|e| {
            let pair = (e.get("from").and_then(Value::as_str), e.get("to").and_then(Value::as_str));
            !candidates.iter().any(|(f, t)| pair == (Some(f.as_str()), Some(t.as_str())))
        });
    }
}

/// The table at `path` (made where missing).
fn table_at<'a>(table: &'a mut Table, path: &[&str]) -> Result<&'a mut Table, String> {
    let mut t = table;
    for p in path {
        t = t.entry(p.to_string()).or_insert_with(|| Value::Table(Table::new())).as_table_mut().ok_or_else(|| format!("{p} is not a table"))?;
    }
    Ok(t)
}

/// The value at a dotted key path (array elements by `name` or index).
pub fn get_path<'a>(table: &'a Table, path: &str) -> Option<&'a Value> {
    let mut segments = path.split('.');
    let mut v = table.get(segments.next()?)?;
    for s in segments {
        v = match v {
            Value::Table(t) => t.get(s)?,
            Value::Array(a) => element(a, s)?,
            _ => return None,
        };
    }
    Some(v)
}

fn element<'a>(a: &'a [Value], s: &str) -> Option<&'a Value> {
    match s.parse::<usize>() {
        Ok(i) => a.get(i),
        Err(_) => a.iter().find(|e| e.get("name").and_then(Value::as_str) == Some(s)),
    }
}

/// Writes `value` at a dotted key path, making missing tables on the way. An array element
/// must exist (by `name` or index): a search changes layers, it does not invent them.
pub fn set_path(table: &mut Table, path: &str, value: Value) -> Result<(), String> {
    let segments: Vec<&str> = path.split('.').collect();
    let (last, parents) = segments.split_last().ok_or("empty key")?;
    let mut cur: &mut Value = {
        let first = parents.first().copied().unwrap_or(last);
        if parents.is_empty() {
            table.insert(last.to_string(), value);
            return Ok(());
        }
        table.entry(first.to_string()).or_insert_with(|| Value::Table(Table::new()))
    };
    let mut walked = vec![parents[0]];
    for s in &parents[1..] {
        cur = match cur {
            Value::Table(t) => t.entry(s.to_string()).or_insert_with(|| Value::Table(Table::new())),
            Value::Array(a) => {
                let names: Vec<String> = a.iter().filter_map(|e| e.get("name").and_then(Value::as_str).map(String::from)).collect();
                let at = match s.parse::<usize>() {
                    Ok(i) if i < a.len() => i,
                    _ => a.iter().position(|e| e.get("name").and_then(Value::as_str) == Some(s)).ok_or_else(|| {
                        format!("{} has no element {s:?} (by name: {})", walked.join("."), if names.is_empty() { "none".into() } else { names.join(", ") })
                    })?,
                };
                &mut a[at]
            }
            other => return Err(format!("{} is a {}, not a table", walked.join("."), other.type_str())),
        };
        walked.push(s);
    }
    match cur {
        Value::Table(t) => {
            t.insert(last.to_string(), value);
            Ok(())
        }
        Value::Array(a) => {
            let at = last.parse::<usize>().ok().filter(|i| *i < a.len()).ok_or_else(|| format!("{} has no element {last:?}", walked.join(".")))?;
            a[at] = value;
            Ok(())
        }
        other => Err(format!("{} is a {}, not a table", walked.join("."), other.type_str())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Table {
        r#"
        name = "b"
        [model]
        kind = "convrnn"
        [model.convrnn]
        times = 7
        [[model.convrnn.layers]]
        name = "conv1"
        channels = 16
        [[model.convrnn.layers]]
        name = "conv2"
        channels = 32
        cell = { kind = "rgc" }
        [[model.convrnn.layers]]
        name = "conv3"
        channels = 32
        [[model.convrnn.edges]]
        from = "conv3"
        to = "conv2"
        [[model.convrnn.edges]]
        from = "conv3"
        to = "conv1"
        "#
        .parse()
        .unwrap()
    }

    fn specs(text: &str) -> Vec<ParamSpec> {
        #[derive(Deserialize)]
        struct F {
            param: Vec<ParamSpec>,
        }
        toml::from_str::<F>(text).unwrap().param
    }

    #[test]
    fn paths_address_array_elements_by_name_and_index() {
        let mut t = base();
        set_path(&mut t, "model.convrnn.layers.conv3.cell.kind", Value::String("gru".into())).unwrap();
        set_path(&mut t, "model.convrnn.layers.0.channels", Value::Integer(8)).unwrap();
        assert_eq!(get_path(&t, "model.convrnn.layers.2.cell.kind").and_then(Value::as_str), Some("gru"));
        assert_eq!(get_path(&t, "model.convrnn.layers.conv1.channels").and_then(Value::as_integer), Some(8));
        let e = set_path(&mut t, "model.convrnn.layers.conv9.channels", Value::Integer(1)).unwrap_err();
        assert!(e.contains("no element \"conv9\"") && e.contains("conv1, conv2, conv3"), "{e}");
        let e = set_path(&mut t, "model.kind.x", Value::Integer(1)).unwrap_err();
        assert!(e.contains("model.kind is a string"), "{e}");
    }

    #[test]
    fn per_layer_params_expand_and_conditions_follow_earlier_choices() {
        let s = specs(
            r#"
            [[param]]
            key = "model.convrnn.layers.{layer}.cell.kind"
            layers = ["conv2", "conv3"]
            choices = ["rgc", "time_decay"]
            [[param]]
            key = "model.convrnn.layers.{layer}.cell.gate_kernel"
            layers = ["conv2", "conv3"]
            int = [1, 5]
            when = { "model.convrnn.layers.{layer}.cell.kind" = "rgc" }
            "#,
        );
        let space = Space::new(&s, None, &base()).unwrap();
        let names: Vec<&str> = space.params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["model.convrnn.layers.conv2.cell.kind", "model.convrnn.layers.conv3.cell.kind", "model.convrnn.layers.conv2.cell.gate_kernel", "model.convrnn.layers.conv3.cell.gate_kernel"]);
        // conv2 rgc, conv3 time decay: only conv2's gate kernel is active.
        let (a, t) = space
            .build(&base(), |p| match p.name.as_str() {
                "model.convrnn.layers.conv2.cell.kind" => Value::String("rgc".into()),
                "model.convrnn.layers.conv3.cell.kind" => Value::String("time_decay".into()),
                _ => Value::Integer(3),
            })
            .unwrap();
        assert_eq!(a.len(), 3);
        assert!(!a.contains_key("model.convrnn.layers.conv3.cell.gate_kernel"));
        assert_eq!(get_path(&t, "model.convrnn.layers.conv2.cell.gate_kernel"), Some(&Value::Integer(3)));
        assert_eq!(get_path(&t, "model.convrnn.layers.conv3.cell.gate_kernel"), None);
        assert_eq!(space.apply(&base(), &a).unwrap(), t);
    }

    #[test]
    fn edges_are_booleans_over_allowed_pairs_only() {
        let e: EdgeSpec = toml::from_str(r#"candidates = "feedback""#).unwrap();
        let space = Space::new(&[], Some(&e), &base()).unwrap();
        assert_eq!(space.edge_candidates, [("conv3".into(), "conv2".into()), ("conv3".into(), "conv1".into()), ("conv2".into(), "conv1".into())]);
        // Only conv2 → conv1 switched on: the base's two candidate edges are dropped.
        let (_, t) = space.build(&base(), |p| Value::Boolean(p.name == "edge.conv2->conv1")).unwrap();
        let edges = get_path(&t, "model.convrnn.edges").unwrap().as_array().unwrap();
        assert_eq!(edges.len(), 1);
        assert_eq!(edges[0].get("from").and_then(Value::as_str), Some("conv2"));
        for (bad, says) in [
            (r#"candidates = [["conv3", "conv4"]]"#, "no layer named \"conv4\""),
            (r#"candidates = [["conv2", "conv2"]]"#, "two different layers"),
            (r#"candidates = [["conv1", "conv2"]]"#, "always exists"),
            (r#"candidates = "all""#, "expected \"feedback\""),
        ] {
            let e: EdgeSpec = toml::from_str(bad).unwrap();
            let err = Space::new(&[], Some(&e), &base()).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn bad_params_are_one_clear_error() {
        for (text, says) in [
            ("key = \"train.lr\"\nfloat = [0.1, 0.01]", "lo < hi"),
            ("key = \"train.lr\"\nfloat = [0.0, 0.1]\nlog = true", "above 0"),
            ("key = \"train.lr\"\nfloat = [0.0, 0.1]\nint = [1, 2]", "exactly one"),
            ("key = \"train.lr\"", "exactly one"),
            ("key = \"model.convrnn.layers.{layer}.channels\"\nint = [1, 2]", "no `layers`"),
            ("key = \"model.convrnn.layers.conv7.channels\"\nint = [1, 2]", "no element \"conv7\""),
            ("key = \"train.optimizer\"\nchoices = []", "empty"),
            ("key = \"train..lr\"\nint = [1, 2]", "not a key path"),
        ] {
            let err = Space::new(&specs(&format!("[[param]]\n{text}")), None, &base()).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn numeric_line_round_trips_and_stays_in_bounds() {
        let d = Domain::Int { lo: 2, hi: 64, log: true };
        let (a, b) = d.numeric_range().unwrap();
        assert_eq!(d.from_numeric(a), Value::Integer(2));
        assert_eq!(d.from_numeric(b), Value::Integer(64));
        for x in [2, 3, 17, 64] {
            assert_eq!(d.from_numeric(d.to_numeric(&Value::Integer(x)).unwrap()), Value::Integer(x));
        }
        let f = Domain::Float { lo: 1e-4, hi: 1e-1, log: true };
        let v = f.from_numeric(f.to_numeric(&Value::Float(3e-3)).unwrap()).as_float().unwrap();
        assert!((v - 3e-3).abs() < 1e-12);
    }
}
