//! `SearchConfig`: the search's settings, checked and defaulted by the engine.

use glora_engine::error::py_repr;
use glora_engine::{Params, Settings, Value};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::convert::value;
use crate::errors::to_py;

const NAMES: [&str; 12] = [
    "population",
    "parents",
    "mutants",
    "crossovers",
    "mutation_prob",
    "generations",
    "objective",
    "nonfinite",
    "operators",
    "threads",
    "metric",
    "racing",
];

/// The settings of `glora.search`. Left out, each takes its default: population 50, parents 10,
/// mutants half the population, crossovers the other half, mutation_prob 0.2, generations 20,
/// objective "fitness" (or "pareto"), nonfinite "error" (or "worst"), operators "guided" (or "reference", the
/// reference algorithm's random redraws and repair), threads all cores (at most 1024, capped at the
/// machine's cores), metric none (else the name of what the scores measure, recorded in the log), racing none
/// (else the number of examples the fitness scores each subnet on: candidates are raced on growing shares of them).
#[pyclass(module = "glora._engine", frozen, eq)]
#[derive(Clone, PartialEq)]
pub struct SearchConfig {
    settings: Settings,
    pub inner: glora_engine::SearchConfig,
}

fn slot<'a>(settings: &'a mut Settings, name: &str) -> Option<&'a mut Option<Value>> {
    Some(match name {
        "population" => &mut settings.population,
        "parents" => &mut settings.parents,
        "mutants" => &mut settings.mutants,
        "crossovers" => &mut settings.crossovers,
        "mutation_prob" => &mut settings.mutation_prob,
        "generations" => &mut settings.generations,
        "objective" => &mut settings.objective,
        "nonfinite" => &mut settings.nonfinite,
        "operators" => &mut settings.operators,
        "threads" => &mut settings.threads,
        "metric" => &mut settings.metric,
        "racing" => &mut settings.racing,
        _ => return None,
    })
}

impl SearchConfig {
    fn checked(settings: Settings) -> PyResult<Self> {
        let inner = glora_engine::SearchConfig::from_settings(&settings).map_err(to_py)?;
        Ok(SearchConfig { settings, inner })
    }

    /// The settings a log records.
    pub fn from_params(params: &Params, metric: Option<&str>) -> PyResult<Self> {
        let count = |v: usize| Some(Value::Int(v as i128));
        SearchConfig::checked(Settings {
            population: count(params.population),
            parents: count(params.parents),
            mutants: count(params.mutants),
            crossovers: count(params.crossovers),
            mutation_prob: Some(Value::Float(params.mutation_prob)),
            generations: count(params.generations),
            objective: Some(Value::Text(params.objective.name().into())),
            nonfinite: Some(Value::Text(params.nonfinite.name().into())),
            operators: Some(Value::Text(params.operators.name().into())),
            threads: None,
            metric: metric.map(|m| Value::Text(m.into())),
            racing: params.racing.map(count).unwrap_or_default(),
        })
    }

    fn with(&self, changes: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let mut settings = self.settings.clone();
        for (key, given) in changes.into_iter().flatten() {
            let name: String = key.extract()?;
            let Some(slot) = slot(&mut settings, &name) else {
                return Err(PyTypeError::new_err(format!(
                    "unknown search setting {}; the settings are {}",
                    py_repr(&name),
                    NAMES.join(", ")
                )));
            };
            *slot = if given.is_none() { None } else { Some(value(&given)?) };
        }
        SearchConfig::checked(settings)
    }
}

#[pymethods]
impl SearchConfig {
    #[new]
    #[pyo3(signature = (*, population=None, parents=None, mutants=None, crossovers=None, mutation_prob=None, generations=None, objective=None, nonfinite=None, operators=None, threads=None, metric=None, racing=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        population: Option<&Bound<'_, PyAny>>,
        parents: Option<&Bound<'_, PyAny>>,
        mutants: Option<&Bound<'_, PyAny>>,
        crossovers: Option<&Bound<'_, PyAny>>,
        mutation_prob: Option<&Bound<'_, PyAny>>,
        generations: Option<&Bound<'_, PyAny>>,
        objective: Option<&Bound<'_, PyAny>>,
        nonfinite: Option<&Bound<'_, PyAny>>,
        operators: Option<&Bound<'_, PyAny>>,
        threads: Option<&Bound<'_, PyAny>>,
        metric: Option<&Bound<'_, PyAny>>,
        racing: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let given = |v: Option<&Bound<'_, PyAny>>| v.map(value).transpose();
        SearchConfig::checked(Settings {
            population: given(population)?,
            parents: given(parents)?,
            mutants: given(mutants)?,
            crossovers: given(crossovers)?,
            mutation_prob: given(mutation_prob)?,
            generations: given(generations)?,
            objective: given(objective)?,
            nonfinite: given(nonfinite)?,
            operators: given(operators)?,
            threads: given(threads)?,
            metric: given(metric)?,
            racing: given(racing)?,
        })
    }

    /// A copy with some settings changed (`None` restores a default).
    #[pyo3(signature = (**changes))]
    fn replace(&self, changes: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        self.with(changes)
    }

    #[getter]
    fn population(&self) -> usize {
        self.inner.params.population
    }

    #[getter]
    fn parents(&self) -> usize {
        self.inner.params.parents
    }

    #[getter]
    fn mutants(&self) -> usize {
        self.inner.params.mutants
    }

    #[getter]
    fn crossovers(&self) -> usize {
        self.inner.params.crossovers
    }

    #[getter]
    fn mutation_prob(&self) -> f64 {
        self.inner.params.mutation_prob
    }

    #[getter]
    fn generations(&self) -> usize {
        self.inner.params.generations
    }

    #[getter]
    fn objective(&self) -> &'static str {
        self.inner.params.objective.name()
    }

    #[getter]
    fn nonfinite(&self) -> &'static str {
        self.inner.params.nonfinite.name()
    }

    #[getter]
    fn operators(&self) -> &'static str {
        self.inner.params.operators.name()
    }

    #[getter]
    fn threads(&self) -> Option<usize> {
        self.inner.threads
    }

    #[getter]
    fn metric(&self) -> Option<&str> {
        self.inner.metric.as_deref()
    }

    #[getter]
    fn racing(&self) -> Option<usize> {
        self.inner.params.racing
    }

    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        let p = &self.inner.params;
        d.set_item("population", p.population)?;
        d.set_item("parents", p.parents)?;
        d.set_item("mutants", p.mutants)?;
        d.set_item("crossovers", p.crossovers)?;
        d.set_item("mutation_prob", p.mutation_prob)?;
        d.set_item("generations", p.generations)?;
        d.set_item("objective", p.objective.name())?;
        d.set_item("nonfinite", p.nonfinite.name())?;
        d.set_item("operators", p.operators.name())?;
        d.set_item("threads", self.inner.threads)?;
        d.set_item("metric", self.inner.metric.as_deref())?;
        d.set_item("racing", p.racing)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        let p = &self.inner.params;
        format!(
            "SearchConfig(population={}, parents={}, mutants={}, crossovers={}, mutation_prob={:?}, generations={}, objective={}, \
             nonfinite={}, operators={}, threads={}, metric={}, racing={})",
            p.population,
            p.parents,
            p.mutants,
            p.crossovers,
            p.mutation_prob,
            p.generations,
            py_repr(p.objective.name()),
            py_repr(p.nonfinite.name()),
            py_repr(p.operators.name()),
            self.inner.threads.map_or("None".into(), |t| t.to_string()),
            self.inner.metric.as_deref().map_or("None".into(), py_repr),
            p.racing.map_or("None".into(), |r| r.to_string())
        )
    }
}
