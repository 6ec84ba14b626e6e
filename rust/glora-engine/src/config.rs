//! The settings of a search as a user gives them, checked, with their defaults: the one place both live.

use std::fmt;

use crate::error::{py_repr, EngineError, Result};
use crate::search::{check_count, NonFinite, Objective, Operators, Params};

/// The most threads a search may ask for; a run uses at most as many as the machine has.
pub const MAX_THREADS: usize = 1024;

/// A value as the user gave it, before checking.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i128),
    /// An integer beyond `i128`, as written.
    BigInt(String),
    Float(f64),
    Text(String),
    /// Anything else, shown as written (its Python `repr`).
    Other(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(v) => write!(f, "{v}"),
            Value::BigInt(v) => write!(f, "{v}"),
            Value::Float(v) => write!(f, "{v:?}"),
            Value::Text(v) => write!(f, "{}", py_repr(v)),
            Value::Other(v) => write!(f, "{v}"),
        }
    }
}

/// The settings a user may give; `None` takes the default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    pub population: Option<Value>,
    pub parents: Option<Value>,
    pub mutants: Option<Value>,
    pub crossovers: Option<Value>,
    pub mutation_prob: Option<Value>,
    pub generations: Option<Value>,
    pub objective: Option<Value>,
    pub nonfinite: Option<Value>,
    pub operators: Option<Value>,
    pub threads: Option<Value>,
    pub metric: Option<Value>,
    pub racing: Option<Value>,
}

/// Checked settings: the algorithm's numbers (logged), the thread count (not logged: it changes nothing) and the
/// name of the metric the scores are (logged when given).
#[derive(Debug, Clone, PartialEq)]
pub struct SearchConfig {
    pub params: Params,
    pub threads: Option<usize>,
    pub metric: Option<String>,
}

fn refuse(name: &str, value: &Value, allowed: &str) -> EngineError {
    EngineError::BadParameter { name: name.into(), value: value.to_string(), allowed: allowed.into() }
}

impl Value {
    /// The value as an integer, an integer beyond `i128` clamped to its range (every limit lies far inside it).
    pub fn integer(&self) -> Option<i128> {
        match self {
            Value::Int(v) => Some(*v),
            Value::BigInt(v) => Some(if v.starts_with('-') { i128::MIN } else { i128::MAX }),
            _ => None,
        }
    }
}

fn count(name: &str, value: &Value, least: usize) -> Result<usize> {
    match value.integer() {
        Some(v) => check_count(name, v, least, &value.to_string()),
        None => Err(refuse(name, value, if least > 0 { "a positive integer" } else { "a non-negative integer" })),
    }
}

fn word<T: Copy>(name: &str, value: &Value, words: &[(&str, T)]) -> Result<T> {
    let allowed = words.iter().map(|(w, _)| py_repr(w)).collect::<Vec<_>>().join(" or ");
    match value {
        Value::Text(text) => words.iter().find(|(w, _)| w == text).map(|&(_, t)| t).ok_or_else(|| refuse(name, value, &allowed)),
        _ => Err(refuse(name, value, &allowed)),
    }
}

/// A search seed: an integer in [0, 2**64).
pub fn seed(value: &Value) -> Result<u64> {
    match value.integer() {
        Some(v) if v >= 0 && v <= i128::from(u64::MAX) => Ok(v as u64),
        Some(v) if v >= 0 => Err(refuse("seed", value, "a non-negative integer below 2**64")),
        _ => Err(refuse("seed", value, "a non-negative integer")),
    }
}

fn threads(value: &Value) -> Result<usize> {
    let allowed = "a positive integer or None";
    match value.integer() {
        Some(v) if v > MAX_THREADS as i128 => {
            Err(refuse("threads", value, &format!("at most {MAX_THREADS} (a run uses at most the machine's cores)")))
        }
        Some(v) if v >= 1 => Ok(v as usize),
        _ => Err(refuse("threads", value, allowed)),
    }
}

fn metric(value: &Value) -> Result<String> {
    match value {
        Value::Text(text) if !text.is_empty() && text.len() <= 200 && !text.chars().any(char::is_control) => Ok(text.clone()),
        _ => Err(refuse("metric", value, "a name of at most 200 printable characters, or None")),
    }
}

impl SearchConfig {
    /// Check `settings`, filling what is not given with the reference's defaults (population 50, parents 10,
    /// half the population mutants and the other half crossovers, mutation probability 0.2, 20 generations, no
    /// racing; `racing` is the number of examples the fitness scores each subnet on).
    pub fn from_settings(settings: &Settings) -> Result<SearchConfig> {
        let d = Params::default();
        let get =
            |value: &Option<Value>, name: &str, least: usize, default: usize| value.as_ref().map_or(Ok(default), |v| count(name, v, least));
        let population = get(&settings.population, "population", 1, d.population)?;
        let mutation_prob = match &settings.mutation_prob {
            None => d.mutation_prob,
            Some(Value::Int(v @ (0 | 1))) => *v as f64,
            Some(Value::Float(v)) if (0.0..=1.0).contains(v) => *v,
            Some(v) => return Err(refuse("mutation_prob", v, "a number in [0, 1]")),
        };
        let params = Params {
            population,
            parents: get(&settings.parents, "parents", 1, d.parents)?,
            mutants: get(&settings.mutants, "mutants", 0, population / 2)?,
            crossovers: get(&settings.crossovers, "crossovers", 0, population - population / 2)?,
            mutation_prob,
            generations: get(&settings.generations, "generations", 1, d.generations)?,
            objective: settings
                .objective
                .as_ref()
                .map_or(Ok(d.objective), |v| word("objective", v, &[("fitness", Objective::Fitness), ("pareto", Objective::Pareto)]))?,
            nonfinite: settings
                .nonfinite
                .as_ref()
                .map_or(Ok(d.nonfinite), |v| word("nonfinite", v, &[("error", NonFinite::Error), ("worst", NonFinite::Worst)]))?,
            attempts_per_candidate: d.attempts_per_candidate,
            operators: settings
                .operators
                .as_ref()
                .map_or(Ok(d.operators), |v| word("operators", v, &[("guided", Operators::Guided), ("reference", Operators::Reference)]))?,
            racing: settings
                .racing
                .as_ref()
                .map(|v| match v.integer() {
                    Some(i) if i >= 1 => count("racing", v, 1),
                    _ => Err(refuse(
                        "racing",
                        v,
                        "a positive integer, the examples the fitness scores (glora.search also takes True), or None",
                    )),
                })
                .transpose()?,
        };
        params.validate()?;
        Ok(SearchConfig {
            params,
            threads: settings.threads.as_ref().map(threads).transpose()?,
            metric: settings.metric.as_ref().map(metric).transpose()?,
        })
    }
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig::from_settings(&Settings::default()).expect("the defaults are valid")
    }
}

impl Objective {
    pub fn name(self) -> &'static str {
        match self {
            Objective::Fitness => "fitness",
            Objective::Pareto => "pareto",
        }
    }
}

impl Operators {
    pub fn name(self) -> &'static str {
        match self {
            Operators::Reference => "reference",
            Operators::Guided => "guided",
        }
    }
}

impl NonFinite {
    pub fn name(self) -> &'static str {
        match self {
            NonFinite::Error => "error",
            NonFinite::Worst => "worst",
        }
    }
}
