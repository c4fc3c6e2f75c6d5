//! The search space: which configuration keys a study varies, and over what.
//!
//! A space file is YAML. Each top-level key is a dotted configuration key (the one a stage's
//! `--set KEY=VALUE` takes) and its value names one distribution, as Optuna's `suggest_*`:
//!
//! ```yaml
//! distill.lambda: {float: [1e-3, 1e-1], log: true}    # suggest_float(low, high, log=True)
//! distill.temperature: {float: [1.0, 4.0], step: 0.5} # suggest_float(low, high, step=0.5)
//! distill.window: {int: [2, 8]}                       # suggest_int(low, high), step 1
//! training.batch: {int: [16, 128], step: 16}          # suggest_int(low, high, step=16)
//! optimizer.scheduler.name: {categorical: [cosine, constant]}
//! ```
//!
//! # Rules (Optuna's `FloatDistribution`, `IntDistribution`, `CategoricalDistribution`)
//!
//! * `float: [low, high]`: finite numbers, `low <= high` (`low == high` is allowed: the
//!   parameter is fixed). Options: `log: true` (log-uniform; needs `low > 0`) and `step: s`
//!   (`s > 0`; the values are `low, low + s, …`). `log` and `step` do not combine.
//! * `int: [low, high]`: integers, `low <= high`. Options: `step: n` (`n >= 1`, default 1) and
//!   `log: true` (needs `low >= 1` and `step` 1).
//! * `categorical: [a, b, …]`: a non-empty list of distinct YAML scalars (strings, numbers,
//!   booleans, `null`); no options.
//!
//! A `step` that does not divide `high - low` is handled as Optuna does: `high` is lowered to
//! the last grid point `low + floor((high - low) / step) * step`, and the adjustment is
//! recorded in [`SearchSpace::warnings`] (Optuna emits a warning) so the driver can print it.
//! A float quotient within `1e-9` (relative) of an integer counts as dividing, so
//! `{float: [0, 1], step: 0.1}` keeps `high = 1`.
//!
//! Every problem in a file is reported at once ([`SpaceError`]), each naming the file and the
//! key: an unknown distribution kind or option, an empty or inverted range, `log` with a
//! non-positive low, a bad `step`, an empty or repeated categorical list, a key given twice,
//! a non-finite number. (A field repeated inside one entry, `{int: [1, 2], int: [1, 3]}`, is
//! caught by the YAML reader itself and reported as one [`ProblemKind::Yaml`] problem naming
//! the field and its line.) Parsing never panics, whatever the input.
//!
//! # Parameter values
//!
//! A sampled value is a [`ParamValue`]; [`SearchSpace::to_override`] turns one into the
//! `KEY=VALUE` text of a `--set` flag (its [`Display`](std::fmt::Display) form is valid YAML
//! that reads back as the same value).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_yaml::Value;
use thiserror::Error;

/// One parameter's distribution. `high` is the adjusted upper bound (see the module docs).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Distribution {
    Float { low: f64, high: f64, log: bool, step: Option<f64> },
    Int { low: i64, high: i64, step: i64, log: bool },
    Categorical { choices: Vec<Value> },
}

impl Distribution {
    /// How many distinct values the distribution has, when it is discrete: `None` for a float
    /// without `step`. Saturates at `u128::MAX` (it cannot for the ranges accepted).
    pub fn grid_len(&self) -> Option<u128> {
        match self {
            Distribution::Float { step: None, .. } => None,
            Distribution::Float { low, high, .. } if low.partial_cmp(high).is_none_or(|o| o.is_gt()) => Some(0),
            Distribution::Int { low, high, .. } if low > high => Some(0),
            Distribution::Float { low, high, step: Some(step), .. } => {
                Some(float_steps(*low, *high, *step) as u128 + 1)
            }
            Distribution::Int { low, high, step, .. } => {
                Some(((*high as i128 - *low as i128) / (*step).max(1) as i128) as u128 + 1)
            }
            Distribution::Categorical { choices } => Some(choices.len() as u128),
        }
    }

    /// The `index`-th value of a discrete distribution (`low + index * step`, or the
    /// `index`-th choice); `None` when out of range or for a float without `step`.
    pub fn grid_point(&self, index: u128) -> Option<ParamValue> {
        if index >= self.grid_len()? {
            return None;
        }
        Some(match self {
            Distribution::Float { low, high, step: Some(step), .. } => {
                ParamValue::Float((low + index as f64 * step).min(*high))
            }
            Distribution::Float { step: None, .. } => return None,
            Distribution::Int { low, step, .. } => {
                ParamValue::Int((*low as i128 + index as i128 * *step as i128) as i64)
            }
            Distribution::Categorical { choices } => {
                ParamValue::Categorical { index: index as usize, value: choices[index as usize].clone() }
            }
        })
    }

    /// Whether `value` is one the distribution can produce (kind, range and step).
    pub fn contains(&self, value: &ParamValue) -> bool {
        match (self, value) {
            (Distribution::Float { low, high, step, .. }, ParamValue::Float(v)) => {
                if !(v.is_finite() && low <= v && v <= high) {
                    return false;
                }
                match step {
                    None => true,
                    Some(step) => {
                        let q = (v - low) / step;
                        (q - q.round()).abs() <= 1e-6 * q.abs().max(1.0)
                    }
                }
            }
            (Distribution::Int { low, high, step, .. }, ParamValue::Int(v)) => {
                low <= v && v <= high && (*v as i128 - *low as i128) % (*step).max(1) as i128 == 0
            }
            (Distribution::Categorical { choices }, ParamValue::Categorical { index, value }) => {
                choices.get(*index) == Some(value)
            }
            _ => false,
        }
    }

    /// The parameter value a plain YAML value stands for (the inverse of
    /// [`ParamValue::to_yaml`], for values read back from a journal or a configuration):
    /// a number in range and on the step, or a choice equal to `value`. `None` otherwise.
    pub fn value_from_yaml(&self, value: &Value) -> Option<ParamValue> {
        let candidate = match self {
            Distribution::Float { .. } => ParamValue::Float(number(value)?),
            Distribution::Int { .. } => ParamValue::Int(value.as_i64()?),
            Distribution::Categorical { choices } => {
                let index = choices.iter().position(|c| c == value)?;
                ParamValue::Categorical { index, value: value.clone() }
            }
        };
        self.contains(&candidate).then_some(candidate)
    }

    /// Optuna's `to_internal_repr`: the float itself, the integer as a float, a choice's
    /// index. What a model-based sampler (TPE, CMA-ES) works with.
    pub fn to_internal(&self, value: &ParamValue) -> Option<f64> {
        if !self.contains(value) {
            return None;
        }
        Some(match value {
            ParamValue::Float(v) => *v,
            ParamValue::Int(v) => *v as f64,
            ParamValue::Categorical { index, .. } => *index as f64,
        })
    }

    /// The inverse of [`Distribution::to_internal`], snapping to the nearest valid value
    /// (clamped into range, rounded to the step or to an index). `None` for a non-finite input.
    pub fn from_internal(&self, x: f64) -> Option<ParamValue> {
        if !x.is_finite() {
            return None;
        }
        Some(match self {
            Distribution::Float { low, high, step: None, .. } => ParamValue::Float(x.max(*low).min(*high)),
            Distribution::Float { low, step: Some(step), .. } => {
                let n = float_steps(*low, self.high_f64(), *step) as f64;
                let i = ((x - low) / step).round().max(0.0).min(n);
                self.grid_point(i as u128)?
            }
            Distribution::Int { low, step, .. } => {
                let n = (self.grid_len()? - 1) as f64;
                let i = ((x - *low as f64) / *step as f64).round().max(0.0).min(n);
                self.grid_point(i as u128)?
            }
            Distribution::Categorical { choices } => {
                let i = x.round().max(0.0).min(choices.len().saturating_sub(1) as f64);
                self.grid_point(i as u128)?
            }
        })
    }

    fn high_f64(&self) -> f64 {
        match self {
            Distribution::Float { high, .. } => *high,
            Distribution::Int { high, .. } => *high as f64,
            Distribution::Categorical { choices } => choices.len() as f64,
        }
    }

    /// `"float"`, `"int"` or `"categorical"`: the kind as written in a space file.
    pub fn kind(&self) -> &'static str {
        match self {
            Distribution::Float { .. } => "float",
            Distribution::Int { .. } => "int",
            Distribution::Categorical { .. } => "categorical",
        }
    }
}

/// The number of whole steps in `[low, high]` (a quotient within 1e-9 of an integer rounds).
fn float_steps(low: f64, high: f64, step: f64) -> u64 {
    let q = (high - low) / step;
    let r = q.round();
    let n = if (q - r).abs() <= 1e-9 * r.abs().max(1.0) { r } else { q.floor() };
    if n.is_finite() && n >= 0.0 { n as u64 } else { 0 }
}

/// A sampled parameter value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamValue {
    Float(f64),
    Int(i64),
    /// The choice's position in the list and the YAML scalar itself.
    Categorical {
        index: usize,
        value: Value,
    },
}

impl ParamValue {
    /// The value as YAML (what the configuration receives).
    pub fn to_yaml(&self) -> Value {
        match self {
            ParamValue::Float(v) => Value::from(*v),
            ParamValue::Int(v) => Value::from(*v),
            ParamValue::Categorical { value, .. } => value.clone(),
        }
    }
}

/// Valid single-line YAML that reads back as the same value: floats always carry a `.` (so
/// `1.0` stays a float, `1e20` is written `1.0e20`) and round-trip exactly; strings are quoted
/// when YAML would read them as something else (`'true'`, `'1'`).
impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Float(v) => f.write_str(&yaml_float(*v)),
            ParamValue::Int(v) => write!(f, "{v}"),
            ParamValue::Categorical { value, .. } => f.write_str(&yaml_scalar(value)),
        }
    }
}

fn yaml_float(v: f64) -> String {
    if v.is_nan() {
        return ".nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { ".inf".into() } else { "-.inf".into() };
    }
    let s = format!("{v:?}");
    if s.contains('.') {
        return s;
    }
    match s.find('e') {
        Some(e) => format!("{}.0{}", &s[..e], &s[e..]),
        None => format!("{s}.0"),
    }
}

fn yaml_scalar(value: &Value) -> String {
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => yaml_float(f),
            _ => n.to_string(),
        },
        Value::String(s) => {
            let plain = serde_yaml::to_string(value).unwrap_or_default();
            let plain = plain.strip_suffix('\n').unwrap_or(&plain);
            let back: Option<Value> = serde_yaml::from_str(plain).ok();
            let printable =
                plain.chars().all(|c| !c.is_control() && !matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}'));
            if printable && back.as_ref() == Some(value) { plain.to_string() } else { double_quoted(s) }
        }
        other => {
            let text = serde_yaml::to_string(other).unwrap_or_default();
            text.trim_end().to_string()
        }
    }
}

fn double_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || (0x7f..0xa0).contains(&(c as u32)) => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            // Line and paragraph separators and the byte-order mark: escaped so the text stays
            // one line of plain characters.
            '\u{2028}' | '\u{2029}' | '\u{feff}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The parameters of a study, validated.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SearchSpace {
    params: BTreeMap<String, Distribution>,
    order: Vec<String>,
    warnings: Vec<String>,
}

impl SearchSpace {
    /// Reads and validates a space file.
    pub fn load(path: &Path) -> Result<Self, SpaceError> {
        let (text, file) = read_space_file(path)?;
        Self::from_yaml_str(&text, &file)
    }

    /// Parses and validates space-file text; `file` names it in errors and warnings.
    pub fn from_yaml_str(text: &str, file: &str) -> Result<Self, SpaceError> {
        let entries = match serde_yaml::from_str::<Entries>(text) {
            Ok(entries) => entries.0,
            Err(e) => {
                return Err(SpaceError {
                    file: file.to_string(),
                    problems: vec![Problem::new("", ProblemKind::Yaml(e.to_string()))],
                });
            }
        };
        Self::from_entries(entries, file)
    }

    /// The space of a mapping's entries (in file order, duplicates kept so they are reported).
    pub(crate) fn from_entries(entries: Vec<(Value, Value)>, file: &str) -> Result<Self, SpaceError> {
        let fail = |problems| SpaceError { file: file.to_string(), problems };
        let mut problems = Vec::new();
        let mut parsed = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for (key, value) in entries {
            let key = match key {
                Value::String(s) => s,
                other => {
                    problems.push(Problem::new(&short(&other), ProblemKind::BadKey));
                    continue;
                }
            };
            if !seen.insert(key.clone()) {
                problems.push(Problem::new(&key, ProblemKind::DuplicateKey));
                continue;
            }
            match parse_distribution(&value) {
                Ok(dist) => parsed.push((key, dist)),
                Err(kinds) => problems.extend(kinds.into_iter().map(|k| Problem::new(&key, k))),
            }
        }
        if problems.is_empty() && parsed.is_empty() {
            problems.push(Problem::new("", ProblemKind::Empty));
        }
        match Self::build(parsed, file) {
            Ok(space) if problems.is_empty() => Ok(space),
            Ok(_) => Err(fail(problems)),
            Err(mut e) => {
                problems.append(&mut e.problems);
                Err(fail(problems))
            }
        }
    }

    /// A space built in code, checked by the same rules as a file (`source` names it in
    /// errors). Keys keep the given order.
    pub fn from_params(
        params: impl IntoIterator<Item = (String, Distribution)>,
        source: &str,
    ) -> Result<Self, SpaceError> {
        let params: Vec<_> = params.into_iter().collect();
        if params.is_empty() {
            return Err(SpaceError { file: source.into(), problems: vec![Problem::new("", ProblemKind::Empty)] });
        }
        Self::build(params, source)
    }

    fn build(params: Vec<(String, Distribution)>, file: &str) -> Result<Self, SpaceError> {
        let mut space = SearchSpace { params: BTreeMap::new(), order: Vec::new(), warnings: Vec::new() };
        let mut problems = Vec::new();
        for (key, dist) in params {
            let mut bad = false;
            if !valid_key(&key) {
                problems.push(Problem::new(&key, ProblemKind::BadKey));
                bad = true;
            }
            if space.params.contains_key(&key) || space.order.contains(&key) {
                problems.push(Problem::new(&key, ProblemKind::DuplicateKey));
                continue;
            }
            space.order.push(key.clone());
            match validate(dist) {
                Ok((dist, warning)) if !bad => {
                    if let Some(w) = warning {
                        space.warnings.push(format!("{file}: {key}: {w}"));
                    }
                    space.params.insert(key, dist);
                }
                Ok(_) => {}
                Err(kinds) => problems.extend(kinds.into_iter().map(|k| Problem::new(&key, k))),
            }
        }
        if problems.is_empty() { Ok(space) } else { Err(SpaceError { file: file.into(), problems }) }
    }

    /// The parameters by key.
    pub fn params(&self) -> &BTreeMap<String, Distribution> {
        &self.params
    }

    /// The keys in the order the file gave them.
    pub fn order(&self) -> &[String] {
        &self.order
    }

    /// Adjustments made while loading (a `high` lowered to the last step), one line each,
    /// naming the file and the key.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    pub fn get(&self, key: &str) -> Option<&Distribution> {
        self.params.get(key)
    }

    /// The `KEY=VALUE` text of a `--set` flag giving parameter `key` the value `value`
    /// (checked against the parameter's distribution).
    pub fn to_override(&self, key: &str, value: &ParamValue) -> Result<String, ValueError> {
        let dist = self.params.get(key).ok_or_else(|| ValueError::UnknownKey { key: key.into() })?;
        if !dist.contains(value) {
            return Err(ValueError::OutOfSpace { key: key.into(), value: value.to_string(), kind: dist.kind() });
        }
        Ok(format!("{key}={value}"))
    }
}

/// A space or study file's text and its name for messages (a read error is a [`SpaceError`]).
pub(crate) fn read_space_file(path: &Path) -> Result<(String, String), SpaceError> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => Ok((text, file)),
        Err(e) => Err(SpaceError { file, problems: vec![Problem::new("", ProblemKind::Io(e.to_string()))] }),
    }
}

/// A value that does not belong to the space.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ValueError {
    #[error("{key}: not a parameter of the search space")]
    UnknownKey { key: String },
    #[error("{key}: {value} is not a value of its {kind} distribution")]
    OutOfSpace { key: String, value: String, kind: &'static str },
}

/// Everything wrong with a space file, each problem naming the key.
#[derive(Clone, Debug, PartialEq, Error)]
pub struct SpaceError {
    pub file: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for SpaceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "search space {}: {} problem(s)", self.file, self.problems.len())?;
        for p in &self.problems {
            write!(f, "\n  {}: {p}", self.file)?;
        }
        Ok(())
    }
}

/// One problem: the key (as written; empty for the file as a whole) and what is wrong.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    pub key: String,
    pub kind: ProblemKind,
}

impl Problem {
    pub(crate) fn new(key: &str, kind: ProblemKind) -> Self {
        Problem { key: key.to_string(), kind }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() { write!(f, "{}", self.kind) } else { write!(f, "{}: {}", self.key, self.kind) }
    }
}

/// What is wrong with one entry of a space file.
#[derive(Clone, Debug, PartialEq, Error)]
pub enum ProblemKind {
    #[error("cannot read the file: {0}")]
    Io(String),
    #[error("not a YAML mapping of keys to distributions: {0}")]
    Yaml(String),
    #[error("the space has no parameters")]
    Empty,
    #[error("{0}")]
    Study(String),
    #[error("not a dotted configuration key (a non-empty string like `a.b.c`, no spaces or `=`)")]
    BadKey,
    #[error("key given more than once")]
    DuplicateKey,
    #[error("expected a mapping naming one distribution, e.g. {{float: [0.0, 1.0]}}, found {found}")]
    NotADistribution { found: String },
    #[error("unknown distribution `{kind}` (expected float, int or categorical)")]
    UnknownKind { kind: String },
    #[error("no distribution named (expected one of float, int, categorical)")]
    MissingKind,
    #[error("several distributions given ({kinds}); give exactly one")]
    SeveralKinds { kinds: String },
    #[error("unknown option `{option}` for a {kind} distribution{}", if *kind == "categorical" { " (it takes none)" } else { " (expected log, step)" })]
    UnknownOption { option: String, kind: &'static str },
    #[error("{kind}: expected [low, high], two {what}, found {found}")]
    BadBounds { kind: &'static str, what: &'static str, found: String },
    #[error("{option}: {value} is not a finite number")]
    NonFinite { option: &'static str, value: String },
    #[error("empty range: low {low} is above high {high}")]
    InvertedRange { low: String, high: String },
    #[error("log: true needs low > 0 (low >= 1 for int), found low {low}")]
    LogNonPositive { low: String },
    #[error("log: true does not combine with step {step}")]
    LogWithStep { step: String },
    #[error("step: {step} {requirement}")]
    BadStep { step: String, requirement: &'static str },
    #[error("log: expected true or false, found {found}")]
    BadLog { found: String },
    #[error("categorical: expected a non-empty list of values")]
    EmptyChoices,
    #[error("categorical: expected a list of YAML scalars, found {found}")]
    BadChoices { found: String },
    #[error("categorical: {value} is not a scalar (string, number, boolean or null)")]
    NonScalarChoice { value: String },
    #[error("categorical: {value} appears more than once")]
    DuplicateChoice { value: String },
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && !key.split('.').any(str::is_empty)
        && !key.chars().any(|c| c.is_whitespace() || c == '=' || c.is_control())
}

/// The top-level mapping, entries in file order, duplicates kept (so they can be reported).
pub(crate) struct Entries(pub(crate) Vec<(Value, Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of configuration keys to distributions")
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Entries, E> {
                Ok(Entries(Vec::new()))
            }
            fn visit_none<E: serde::de::Error>(self) -> Result<Entries, E> {
                Ok(Entries(Vec::new()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut out = Vec::new();
                while let Some(key) = map.next_key::<Value>()? {
                    out.push((key, map.next_value::<Value>()?));
                }
                Ok(Entries(out))
            }
        }
        deserializer.deserialize_any(V)
    }
}

fn short(value: &Value) -> String {
    let text = match value {
        Value::Mapping(_) | Value::Sequence(_) | Value::Tagged(_) => {
            serde_json_like(value).unwrap_or_else(|| "a complex value".into())
        }
        other => yaml_scalar(other),
    };
    if text.chars().count() > 60 { format!("{}…", text.chars().take(60).collect::<String>()) } else { text }
}

fn serde_json_like(value: &Value) -> Option<String> {
    let text = serde_yaml::to_string(value).ok()?;
    Some(text.trim_end().replace('\n', " "))
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

const KINDS: [&str; 3] = ["float", "int", "categorical"];
const OPTIONS: [&str; 2] = ["log", "step"];

/// Syntax: the mapping's shape and the types of its fields. Ranges are checked by `validate`.
fn parse_distribution(value: &Value) -> Result<Distribution, Vec<ProblemKind>> {
    let Value::Mapping(map) = value else {
        return Err(vec![ProblemKind::NotADistribution { found: short(value) }]);
    };
    let mut kinds = Vec::new();
    let mut problems = Vec::new();
    let mut options: BTreeMap<&str, &Value> = BTreeMap::new();
    let mut unknown = Vec::new();
    for (k, v) in map {
        match k.as_str() {
            Some(name) if KINDS.contains(&name) => kinds.push((name, v)),
            Some(name) if OPTIONS.contains(&name) => {
                options.insert(name, v);
            }
            _ => unknown.push(match k.as_str() {
                Some(s) => s.to_string(),
                None => short(k),
            }),
        }
    }
    let (kind, body) = match kinds.as_slice() {
        [] => {
            if unknown.is_empty() {
                return Err(vec![ProblemKind::MissingKind]);
            }
            return Err(unknown.into_iter().map(|kind| ProblemKind::UnknownKind { kind }).collect());
        }
        [one] => *one,
        many => {
            let kinds = many.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ");
            return Err(vec![ProblemKind::SeveralKinds { kinds }]);
        }
    };
    let kind: &'static str = KINDS.iter().find(|k| **k == kind).copied().unwrap_or("float");
    for option in unknown {
        problems.push(ProblemKind::UnknownOption { option, kind });
    }
    if kind == "categorical" {
        for option in options.keys() {
            problems.push(ProblemKind::UnknownOption { option: option.to_string(), kind });
        }
    }
    let log = match options.get("log") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            problems.push(ProblemKind::BadLog { found: short(other) });
            false
        }
    };
    let bounds = |what: &'static str| -> Result<(Value, Value), ProblemKind> {
        match body {
            Value::Sequence(items) if items.len() == 2 => Ok((items[0].clone(), items[1].clone())),
            other => Err(ProblemKind::BadBounds { kind, what, found: short(other) }),
        }
    };
    let dist = match kind {
        "float" => {
            let step = match options.get("step") {
                None => None,
                Some(v) => match number(v) {
                    Some(s) => Some(s),
                    None => {
                        problems.push(ProblemKind::BadStep { step: short(v), requirement: "must be a number" });
                        None
                    }
                },
            };
            match bounds("numbers") {
                Ok((l, h)) => match (number(&l), number(&h)) {
                    (Some(low), Some(high)) => Some(Distribution::Float { low, high, log, step }),
                    _ => {
                        problems.push(ProblemKind::BadBounds { kind, what: "numbers", found: short(body) });
                        None
                    }
                },
                Err(p) => {
                    problems.push(p);
                    None
                }
            }
        }
        "int" => {
            let step = match options.get("step") {
                None => 1,
                Some(v) => match v.as_i64() {
                    Some(s) => s,
                    None => {
                        problems.push(ProblemKind::BadStep { step: short(v), requirement: "must be an integer >= 1" });
                        1
                    }
                },
            };
            match bounds("integers") {
                Ok((l, h)) => match (l.as_i64(), h.as_i64()) {
                    (Some(low), Some(high)) => Some(Distribution::Int { low, high, step, log }),
                    _ => {
                        problems.push(ProblemKind::BadBounds { kind, what: "integers", found: short(body) });
                        None
                    }
                },
                Err(p) => {
                    problems.push(p);
                    None
                }
            }
        }
        _ => match body {
            Value::Sequence(items) => Some(Distribution::Categorical { choices: items.clone() }),
            other => {
                problems.push(ProblemKind::BadChoices { found: short(other) });
                None
            }
        },
    };
    match dist {
        Some(d) if problems.is_empty() => Ok(d),
        _ => Err(problems),
    }
}

/// Semantics: ranges, steps, choices. Returns the distribution with `high` adjusted to the
/// last step and, when it was, a warning saying so.
fn validate(dist: Distribution) -> Result<(Distribution, Option<String>), Vec<ProblemKind>> {
    let mut problems = Vec::new();
    let mut warning = None;
    let dist = match dist {
        Distribution::Float { low, mut high, log, step } => {
            let mut finite = true;
            for (option, v) in [("low", low), ("high", high)].into_iter().chain(step.map(|s| ("step", s))) {
                if !v.is_finite() {
                    problems.push(ProblemKind::NonFinite { option, value: yaml_float(v) });
                    finite = false;
                }
            }
            if finite {
                if low > high {
                    problems.push(ProblemKind::InvertedRange { low: yaml_float(low), high: yaml_float(high) });
                }
                if log && low <= 0.0 {
                    problems.push(ProblemKind::LogNonPositive { low: yaml_float(low) });
                }
                if let Some(s) = step {
                    if log {
                        problems.push(ProblemKind::LogWithStep { step: yaml_float(s) });
                    }
                    if s <= 0.0 {
                        problems.push(ProblemKind::BadStep { step: yaml_float(s), requirement: "must be > 0" });
                    } else if low <= high {
                        let q = (high - low) / s;
                        if !q.is_finite() || q > 2f64.powi(53) {
                            problems.push(ProblemKind::BadStep {
                                step: yaml_float(s),
                                requirement: "is too small for the range (more than 2^53 steps)",
                            });
                        } else {
                            let n = float_steps(low, high, s);
                            let last = low + n as f64 * s;
                            let r = q.round();
                            if (q - r).abs() > 1e-9 * r.abs().max(1.0) {
                                warning = Some(format!(
                                    "step {} does not divide [{}, {}]: high lowered to {} (as Optuna)",
                                    yaml_float(s),
                                    yaml_float(low),
                                    yaml_float(high),
                                    yaml_float(last)
                                ));
                                high = last.min(high);
                            }
                        }
                    }
                }
            }
            Distribution::Float { low, high, log, step }
        }
        Distribution::Int { low, mut high, step, log } => {
            if low > high {
                problems.push(ProblemKind::InvertedRange { low: low.to_string(), high: high.to_string() });
            }
            if log && low < 1 {
                problems.push(ProblemKind::LogNonPositive { low: low.to_string() });
            }
            if log && step != 1 {
                problems.push(ProblemKind::LogWithStep { step: step.to_string() });
            }
            if step < 1 {
                problems.push(ProblemKind::BadStep { step: step.to_string(), requirement: "must be an integer >= 1" });
            } else if low <= high {
                let span = high as i128 - low as i128;
                if span % step as i128 != 0 {
                    let last = (low as i128 + span / step as i128 * step as i128) as i64;
                    warning = Some(format!(
                        "step {step} does not divide [{low}, {high}]: high lowered to {last} (as Optuna)"
                    ));
                    high = last;
                }
            }
            Distribution::Int { low, high, step, log }
        }
        Distribution::Categorical { choices } => {
            if choices.is_empty() {
                problems.push(ProblemKind::EmptyChoices);
            }
            for (i, c) in choices.iter().enumerate() {
                match c {
                    Value::Null | Value::Bool(_) | Value::String(_) => {}
                    Value::Number(n) => {
                        if n.as_f64().is_some_and(|f| !f.is_finite()) {
                            problems.push(ProblemKind::NonFinite { option: "categorical", value: short(c) });
                        }
                    }
                    other => problems.push(ProblemKind::NonScalarChoice { value: short(other) }),
                }
                // Reported at its second occurrence only, however often it repeats.
                if choices[..i].iter().filter(|d| *d == c).count() == 1 {
                    problems.push(ProblemKind::DuplicateChoice { value: short(c) });
                }
            }
            Distribution::Categorical { choices }
        }
    };
    if problems.is_empty() { Ok((dist, warning)) } else { Err(problems) }
}
