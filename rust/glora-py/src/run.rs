//! Running a search with a Python fitness function, its result, and the report of a replayed log.

use std::path::PathBuf;
use std::sync::Arc;

use glora_engine::replay::{self, ReplayEnd};
use glora_engine::{Evaluated, Fitness, GenerationSummary, Genome, Run, RunError, Search};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::config::SearchConfig;
use crate::convert::{rows, scores, subnet_dict, value};
use crate::errors::to_py;
use crate::space::SearchSpace;

/// One finished generation: its best and mean score and the best so far.
#[pyclass(module = "glora._engine", frozen, eq, get_all)]
#[derive(Clone, PartialEq)]
pub struct Generation {
    pub generation: usize,
    pub evaluated: usize,
    pub best: f64,
    pub mean: f64,
    pub best_so_far: f64,
}

impl From<&GenerationSummary> for Generation {
    fn from(s: &GenerationSummary) -> Self {
        Generation { generation: s.generation, evaluated: s.evaluated, best: s.best, mean: s.mean, best_so_far: s.best_so_far }
    }
}

#[pymethods]
impl Generation {
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("generation", self.generation)?;
        d.set_item("evaluated", self.evaluated)?;
        d.set_item("best", self.best)?;
        d.set_item("mean", self.mean)?;
        d.set_item("best_so_far", self.best_so_far)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!("Generation({}, best={}, mean={}, best_so_far={})", self.generation, self.best, self.mean, self.best_so_far)
    }
}

/// What racing saved in a raced search: the examples per candidate, the candidates stopped before the last one,
/// and the share of the examples scored against scoring every candidate on all of them.
#[pyclass(module = "glora._engine", frozen, eq, get_all)]
#[derive(Clone, PartialEq)]
pub struct Racing {
    pub examples: usize,
    pub stopped: usize,
    pub examples_share: f64,
}

#[pymethods]
impl Racing {
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("examples", self.examples)?;
        d.set_item("stopped", self.stopped)?;
        d.set_item("examples_share", self.examples_share)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!("Racing(examples={}, stopped={}, examples_share={})", self.examples, self.stopped, self.examples_share)
    }
}

/// An evaluated subnet: its score (minus infinity for a non-finite score ranked last) and parameter count.
#[pyclass(module = "glora._engine", frozen)]
pub struct ParetoPoint {
    space: Arc<glora_engine::SearchSpace>,
    point: Evaluated,
}

#[pymethods]
impl ParetoPoint {
    #[getter]
    fn subnet<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        subnet_dict(py, self.space.space(), &self.point.genome)
    }

    #[getter]
    fn score(&self) -> f64 {
        self.point.score
    }

    #[getter]
    fn params(&self) -> u64 {
        self.point.params
    }

    /// The generation that evaluated it.
    #[getter]
    fn generation(&self) -> usize {
        self.point.generation
    }

    fn __eq__(&self, other: &Self) -> bool {
        self.point == other.point
    }

    fn __repr__(&self) -> String {
        format!("ParetoPoint(score={}, params={}, generation={})", self.point.score, self.point.params, self.point.generation)
    }
}

/// What a search holds at its end: the best evaluation, the Pareto front and the history.
struct Outcome {
    space: Arc<glora_engine::SearchSpace>,
    best: Option<Evaluated>,
    front: Vec<Evaluated>,
    history: Vec<Generation>,
    evaluations: usize,
    racing: Option<Racing>,
}

impl Outcome {
    fn new(space: &Arc<glora_engine::SearchSpace>, search: &Search) -> Self {
        Outcome {
            space: Arc::clone(space),
            best: search.best().cloned(),
            front: search.pareto_front().into_iter().cloned().collect(),
            history: search.history().iter().map(Generation::from).collect(),
            evaluations: search.evaluated().len(),
            racing: search.racing_account().map(|a| Racing { examples: a.examples, stopped: a.stopped, examples_share: a.examples_share }),
        }
    }

    fn point(&self, point: &Evaluated) -> ParetoPoint {
        ParetoPoint { space: Arc::clone(&self.space), point: point.clone() }
    }

    /// Any integer is accepted: one beyond the range of i64 means "no limit" or "nothing fits".
    fn best_under(&self, max_params: i128) -> PyResult<ParetoPoint> {
        let clamped = max_params.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
        Search::best_under(&self.front, clamped).map(|p| self.point(p)).map_err(to_py)
    }
}

/// What a search found.
#[pyclass(module = "glora._engine", frozen)]
pub struct SearchResult {
    outcome: Outcome,
    best: Evaluated,
    #[pyo3(get)]
    recovered_evaluations: usize,
    #[pyo3(get)]
    engine_seconds: f64,
    #[pyo3(get)]
    fitness_seconds: f64,
    #[pyo3(get)]
    log: Option<String>,
}

#[pymethods]
impl SearchResult {
    #[getter]
    fn best_subnet<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        subnet_dict(py, self.outcome.space.space(), &self.best.genome)
    }

    #[getter]
    fn best_score(&self) -> f64 {
        self.best.score
    }

    #[getter]
    fn best_params(&self) -> u64 {
        self.best.params
    }

    /// The non-dominated evaluations (score up, parameters down), by increasing parameter count.
    #[getter]
    fn pareto_front(&self) -> Vec<ParetoPoint> {
        self.outcome.front.iter().map(|p| self.outcome.point(p)).collect()
    }

    #[getter]
    fn history(&self) -> Vec<Generation> {
        self.outcome.history.clone()
    }

    #[getter]
    fn evaluations(&self) -> usize {
        self.outcome.evaluations
    }

    /// What racing saved (None when the search did not race).
    #[getter]
    fn racing(&self) -> Option<Racing> {
        self.outcome.racing.clone()
    }

    /// The best point of the Pareto front with at most `max_params` parameters.
    fn best_under(&self, max_params: i128) -> PyResult<ParetoPoint> {
        self.outcome.best_under(max_params)
    }

    fn __repr__(&self) -> String {
        format!("SearchResult(best_score={}, best_params={}, evaluations={})", self.best.score, self.best.params, self.outcome.evaluations)
    }
}

/// The Python functions that score subnets: `fitness(subnets) -> scores`, and for a raced search
/// `per_example(subnets, examples) -> rows` (one row of scores per subnet, one score per example).
struct PyFitness<'a> {
    space: &'a glora_engine::Space,
    fitness: &'a PyObject,
    per_example: Option<&'a PyObject>,
}

impl PyFitness<'_> {
    fn batch<'py>(&self, py: Python<'py>, genomes: &[Genome]) -> PyResult<Bound<'py, PyList>> {
        py.check_signals()?;
        PyList::new(py, genomes.iter().map(|g| subnet_dict(py, self.space, g)).collect::<PyResult<Vec<_>>>()?)
    }
}

impl Fitness for PyFitness<'_> {
    type Error = PyErr;

    fn scores(&mut self, genomes: &[Genome]) -> PyResult<Vec<f64>> {
        Python::with_gil(|py| scores(self.fitness.call1(py, (self.batch(py, genomes)?,))?.bind(py), genomes.len()))
    }

    fn per_example(&mut self, genomes: &[Genome], examples: &[usize]) -> Result<Vec<Vec<f64>>, RunError<PyErr>> {
        let Some(per_example) = self.per_example else {
            return Err(RunError::Engine(glora_engine::EngineError::NoExampleScores));
        };
        Python::with_gil(|py| {
            let returned = per_example.call1(py, (self.batch(py, genomes)?, examples.to_vec()))?;
            rows(returned.bind(py), genomes.len())
        })
        .map_err(RunError::Caller)
    }
}

/// Run a whole search: `fitness(subnets) -> scores` (or, racing, `per_example(subnets, examples) -> rows`) is
/// called once per batch (per stage) on this thread, with the GIL; candidate construction runs without it. With
/// `log`, every evaluation is appended; `resume` continues it.
#[pyfunction]
#[pyo3(signature = (space, fitness, budget, *, seed=None, config=None, log=None, resume=false, glora_version="", on_generation=None, per_example=None))]
#[allow(clippy::too_many_arguments)]
pub fn run_search(
    py: Python<'_>,
    space: PyRef<'_, SearchSpace>,
    fitness: PyObject,
    budget: &Bound<'_, PyAny>,
    seed: Option<&Bound<'_, PyAny>>,
    config: Option<PyRef<'_, SearchConfig>>,
    log: Option<PathBuf>,
    resume: bool,
    glora_version: &str,
    on_generation: Option<PyObject>,
    per_example: Option<PyObject>,
) -> PyResult<SearchResult> {
    let b = crate::convert::budget(budget)?;
    let seed = seed.map_or(Ok(0), check_seed)?;
    if !fitness.bind(py).is_callable() {
        let type_name = fitness.bind(py).get_type().name()?;
        return Err(PyTypeError::new_err(format!("fitness must be callable, got {type_name}")));
    }
    let config = config.map(|c| c.inner.clone()).unwrap_or_default();
    let inner = Arc::clone(&space.inner);
    let run = Run::open(inner.space(), b, &config, seed, glora_version, log.as_deref(), resume).map_err(to_py)?;
    let evaluate = PyFitness { space: inner.space(), fitness: &fitness, per_example: per_example.as_ref() };
    let report = |summary: &GenerationSummary| match &on_generation {
        Some(callback) => Python::with_gil(|py| callback.call1(py, (Generation::from(summary),)).map(drop)),
        None => Ok(()),
    };
    let finished = py.allow_threads(|| run.drive(evaluate, report)).map_err(|err| match err {
        RunError::Engine(e) => to_py(e),
        RunError::Caller(e) => e,
    })?;
    let outcome = Outcome::new(&inner, &finished.search);
    let best = outcome.best.clone().ok_or_else(|| to_py(glora_engine::EngineError::NoPointWithin { max_params: 0, smallest: None }))?;
    Ok(SearchResult {
        outcome,
        best,
        recovered_evaluations: finished.recovered,
        engine_seconds: finished.engine_seconds,
        fitness_seconds: finished.fitness_seconds,
        log: finished.log.map(|p| p.display().to_string()),
    })
}

/// Where a replay produced another genome than its log records.
#[pyclass(module = "glora._engine", frozen, eq, get_all)]
#[derive(Clone, PartialEq)]
pub struct Divergence {
    pub generation: usize,
    pub index: usize,
    pub logged: Vec<u16>,
    pub produced: Vec<u16>,
}

/// A search log, replayed from its recorded scores: its settings, whether the engine reproduces it, and what
/// it found.
#[pyclass(module = "glora._engine", frozen)]
pub struct LogReport {
    outcome: Outcome,
    #[pyo3(get)]
    log: String,
    #[pyo3(get)]
    glora_version: String,
    #[pyo3(get)]
    seed: u64,
    #[pyo3(get)]
    budget: (u64, u64),
    #[pyo3(get)]
    config: SearchConfig,
    #[pyo3(get)]
    logged_evaluations: usize,
    #[pyo3(get)]
    generations: usize,
    /// Every logged genome reproduced and the search finished.
    #[pyo3(get)]
    complete: bool,
    /// The last line was cut off mid-write (an interrupted run); resuming discards it.
    #[pyo3(get)]
    truncated_tail: bool,
    #[pyo3(get)]
    divergence: Option<Divergence>,
    /// Every replayed evaluation as (generation, parameters, score), in the order evaluated.
    #[pyo3(get)]
    evaluated: Vec<(usize, u64, f64)>,
}

#[pymethods]
impl LogReport {
    #[getter]
    fn space(&self) -> SearchSpace {
        SearchSpace { inner: Arc::clone(&self.outcome.space) }
    }

    /// What the scores measure, as the search named it (None when it did not).
    #[getter]
    fn metric(&self) -> Option<String> {
        self.config.inner.metric.clone()
    }

    #[getter]
    fn replayed_evaluations(&self) -> usize {
        self.outcome.evaluations
    }

    /// What racing saved in the replayed evaluations (None when the search did not race).
    #[getter]
    fn racing(&self) -> Option<Racing> {
        self.outcome.racing.clone()
    }

    #[getter]
    fn history(&self) -> Vec<Generation> {
        self.outcome.history.clone()
    }

    #[getter]
    fn best(&self) -> Option<ParetoPoint> {
        self.outcome.best.as_ref().map(|p| self.outcome.point(p))
    }

    #[getter]
    fn front(&self) -> Vec<ParetoPoint> {
        self.outcome.front.iter().map(|p| self.outcome.point(p)).collect()
    }

    /// The best point of the Pareto front with at most `max_params` parameters.
    fn best_under(&self, max_params: i128) -> PyResult<ParetoPoint> {
        self.outcome.best_under(max_params)
    }
}

/// Read a search log and replay it from its recorded scores, evaluating nothing.
#[pyfunction]
pub fn read_log(py: Python<'_>, path: PathBuf) -> PyResult<LogReport> {
    let report = py.allow_threads(|| replay::report(&path)).map_err(to_py)?;
    let space = SearchSpace::from_space(report.header.space.clone())?;
    let outcome = Outcome::new(&space.inner, &report.search);
    let divergence = match report.end {
        ReplayEnd::Reproduced { .. } => None,
        ReplayEnd::Diverged { generation, index, logged, produced } => Some(Divergence { generation, index, logged, produced }),
    };
    Ok(LogReport {
        log: path.display().to_string(),
        glora_version: report.header.glora_version.clone(),
        seed: report.header.seed,
        budget: (report.header.budget.min, report.header.budget.max),
        config: SearchConfig::from_params(&report.header.params, report.header.metric.as_deref())?,
        logged_evaluations: report.logged_evaluations,
        generations: report.search.generation(),
        complete: report.search.is_done() && divergence.is_none(),
        truncated_tail: report.truncated_tail,
        divergence,
        evaluated: report.search.evaluated().iter().map(|e| (e.generation, e.params, e.score)).collect(),
        outcome,
    })
}

/// A search seed, checked: a non-negative integer.
#[pyfunction]
pub fn check_seed(seed: &Bound<'_, PyAny>) -> PyResult<u64> {
    glora_engine::config::seed(&value(seed)?).map_err(to_py)
}
