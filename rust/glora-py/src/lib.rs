//! Python bindings of the glora search engine: type conversion, error mapping, GIL release around rayon work.
//! The search loop itself is `glora_engine::Search` (ask / tell); this module only drives it with a Python
//! callable, once per batch, and writes the run log.

use std::path::Path;
use std::time::Instant;

use glora_engine::log::{self, Header, LogWriter, Record};
use glora_engine::replay::{self, ReplayEnd};
use glora_engine::{Budget, EngineError, Evaluated, Genome, Params, Search, Space};
use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use serde_json::{json, Value};

create_exception!(_engine, SearchError, PyValueError, "A search refused or stopped by bad input; `kind` and `details` say which.");
create_exception!(_engine, ImpossibleBudgetError, SearchError, "No genome satisfies the budget; `details` holds the smallest and largest counts.");
create_exception!(_engine, ScoreError, SearchError, "The fitness function returned the wrong number of scores or a non-finite score.");
create_exception!(_engine, LogError, SearchError, "A run log is unreadable, corrupt, or does not match the search.");
create_exception!(_engine, DivergenceError, LogError, "Replaying a log produced other genomes than it records.");

fn kind_and_details(err: &EngineError) -> (&'static str, Value) {
    match err {
        EngineError::EmptySpace => ("empty_space", json!({})),
        EngineError::BadGene { layer, gene, reason } => ("bad_gene", json!({"layer": layer, "gene": gene, "reason": reason})),
        EngineError::ImpossibleBudget { min, max, smallest, largest } => {
            ("impossible_budget", json!({"min": min, "max": max, "smallest": smallest, "largest": largest}))
        }
        EngineError::NarrowBudget { min, max, step } => ("narrow_budget", json!({"min": min, "max": max, "step": step})),
        EngineError::BadParameter { name, reason } => ("bad_parameter", json!({"name": name, "reason": reason})),
        EngineError::WrongScoreCount { expected, got } => ("wrong_score_count", json!({"expected": expected, "got": got})),
        EngineError::NonFiniteScore { index, value } => ("non_finite_score", json!({"index": index, "value": value.to_string()})),
        EngineError::NothingAsked => ("nothing_asked", json!({})),
        EngineError::BadGenome(reason) => ("bad_genome", json!({"reason": reason})),
        EngineError::CorruptLog { path, line, reason } => ("corrupt_log", json!({"path": path, "line": line, "reason": reason})),
        EngineError::LogMismatch { path, differences } => ("log_mismatch", json!({"path": path, "differences": differences})),
        EngineError::LogIo { path, reason } => ("log_io", json!({"path": path, "reason": reason})),
        EngineError::Divergence { generation, index, logged, produced } => {
            ("divergence", json!({"generation": generation, "index": index, "logged": logged, "produced": produced}))
        }
    }
}

/// Map an engine error to its Python exception class, with `kind` and `details` attributes.
fn to_py(py: Python<'_>, err: EngineError) -> PyErr {
    let message = err.to_string();
    let py_err = match &err {
        EngineError::ImpossibleBudget { .. } | EngineError::NarrowBudget { .. } => ImpossibleBudgetError::new_err(message),
        EngineError::WrongScoreCount { .. } | EngineError::NonFiniteScore { .. } => ScoreError::new_err(message),
        EngineError::Divergence { .. } => DivergenceError::new_err(message),
        EngineError::CorruptLog { .. } | EngineError::LogMismatch { .. } | EngineError::LogIo { .. } => LogError::new_err(message),
        _ => SearchError::new_err(message),
    };
    let (kind, details) = kind_and_details(&err);
    let value = py_err.value(py);
    let _ = value.setattr("kind", kind);
    if let Ok(json_mod) = py.import("json") {
        if let Ok(obj) = json_mod.call_method1("loads", (details.to_string(),)) {
            let _ = value.setattr("details", obj);
        }
    }
    py_err
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> PyResult<T> {
    serde_json::from_str(text).map_err(|e| SearchError::new_err(format!("malformed {what}: {e}")))
}

fn evaluated_json(e: &Evaluated) -> Value {
    json!({"generation": e.generation, "index": e.index, "genome": e.genome, "score": if e.score.is_finite() { json!(e.score) } else { Value::Null }, "params": e.params})
}

fn summary_json(search: &Search) -> Value {
    json!({
        "best": search.best().map(evaluated_json),
        "front": search.pareto_front().into_iter().map(evaluated_json).collect::<Vec<_>>(),
        "history": search.history(),
        "evaluations": search.evaluated().len(),
        "generations": search.generation(),
        "done": search.is_done(),
    })
}

fn with_pool<T: Send>(threads: Option<usize>, work: impl FnOnce() -> T + Send) -> PyResult<T> {
    match threads {
        None => Ok(work()),
        Some(n) => {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .map_err(|e| SearchError::new_err(format!("cannot start {n} threads: {e}")))?;
            Ok(pool.install(work))
        }
    }
}

/// Open the search: fresh (with a new log if a path is given) or resumed from an existing log.
fn open(py: Python<'_>, header: &Header, log_path: Option<&str>, resume: bool) -> PyResult<(Search, Vec<f64>, Option<LogWriter>, usize)> {
    let err = |e| to_py(py, e);
    let Some(path) = log_path else {
        let search = Search::new(&header.space, header.budget, header.params.clone(), header.seed).map_err(err)?;
        return Ok((search, Vec::new(), None, 0));
    };
    let p = Path::new(path);
    let has_content = p.exists() && std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false);
    if resume && has_content {
        let contents = log::read(p).map_err(err)?;
        let differences = contents.header.differences(header);
        if !differences.is_empty() {
            return Err(err(EngineError::LogMismatch { path: path.into(), differences: differences.join("; ") }));
        }
        let (search, pending) = replay::resume(&contents.header, &contents.records).map_err(err)?;
        let recovered = search.evaluated().len() + pending.len();
        let writer = LogWriter::resume(p, contents.valid_len).map_err(err)?;
        return Ok((search, pending, Some(writer), recovered));
    }
    let search = Search::new(&header.space, header.budget, header.params.clone(), header.seed).map_err(err)?;
    let writer = LogWriter::create(p, header).map_err(err)?;
    Ok((search, Vec::new(), Some(writer), 0))
}

/// Run a whole search. `evaluate(genomes) -> scores` is called once per batch on this thread; `on_generation`
/// (optional) receives each finished generation's summary as JSON. Returns the result as JSON.
#[pyfunction]
#[pyo3(signature = (space_json, budget_min, budget_max, params_json, seed, evaluate, log_path=None, resume=false, threads=None, glora_version="", on_generation=None))]
#[allow(clippy::too_many_arguments)]
fn run_search(
    py: Python<'_>,
    space_json: &str,
    budget_min: u64,
    budget_max: u64,
    params_json: &str,
    seed: u64,
    evaluate: &Bound<'_, PyAny>,
    log_path: Option<&str>,
    resume: bool,
    threads: Option<usize>,
    glora_version: &str,
    on_generation: Option<&Bound<'_, PyAny>>,
) -> PyResult<String> {
    let space: Space = parse("space", space_json)?;
    let params: Params = parse("search parameters", params_json)?;
    let header = Header::new(glora_version, space, Budget { min: budget_min, max: budget_max }, params, seed);
    let (mut search, mut known, mut writer, recovered) = open(py, &header, log_path, resume)?;
    let (mut engine_s, mut fitness_s) = (0.0f64, 0.0f64);
    loop {
        let started = Instant::now();
        let batch: Option<Vec<Genome>> = py.allow_threads(|| with_pool(threads, || search.ask().map(|b| b.to_vec())))?;
        engine_s += started.elapsed().as_secs_f64();
        let Some(batch) = batch else { break };
        py.check_signals()?;
        let todo: Vec<Genome> = batch[known.len()..].to_vec();
        let started = Instant::now();
        let returned = evaluate.call1((todo.clone(),))?;
        fitness_s += started.elapsed().as_secs_f64();
        let fresh: Vec<f64> = returned.extract()?;
        if fresh.len() != todo.len() {
            return Err(to_py(py, EngineError::WrongScoreCount { expected: todo.len(), got: fresh.len() }));
        }
        let started = Instant::now();
        let skip = known.len();
        let mut scores = std::mem::take(&mut known);
        scores.extend(fresh);
        let summary = search.tell(&scores).map_err(|e| to_py(py, e))?;
        if let Some(w) = writer.as_mut() {
            let evaluated = search.evaluated();
            let mut records = log::eval_records(&evaluated[evaluated.len() - scores.len() + skip..]);
            records.push(Record::Generation(summary.clone()));
            w.append(&records).map_err(|e| to_py(py, e))?;
        }
        engine_s += started.elapsed().as_secs_f64();
        if let Some(callback) = on_generation {
            callback.call1((serde_json::to_string(&summary).expect("summary serialises"),))?;
        }
    }
    let mut result = summary_json(&search);
    result["engine_seconds"] = json!(engine_s);
    result["fitness_seconds"] = json!(fitness_s);
    result["recovered_evaluations"] = json!(recovered);
    Ok(result.to_string())
}

/// Replay a log from its recorded scores without evaluating anything. Returns JSON: the header, whether the
/// replay reproduced every logged genome (or where it diverged), whether the log ends mid-line, and the summary.
#[pyfunction]
fn replay_log(py: Python<'_>, path: &str) -> PyResult<String> {
    let contents = py.allow_threads(|| log::read(Path::new(path))).map_err(|e| to_py(py, e))?;
    let (search, end) = py.allow_threads(|| replay::replay(&contents.header, &contents.records)).map_err(|e| to_py(py, e))?;
    let logged = contents.records.iter().filter(|r| matches!(r, Record::Eval { .. })).count();
    let divergence = match end {
        ReplayEnd::Reproduced { .. } => Value::Null,
        ReplayEnd::Diverged { generation, index, logged, produced } => json!({"generation": generation, "index": index, "logged": logged, "produced": produced}),
    };
    let mut result = summary_json(&search);
    result["header"] = serde_json::to_value(&contents.header).expect("header serialises");
    result["divergence"] = divergence;
    result["truncated_tail"] = json!(contents.truncated_tail);
    result["logged_evaluations"] = json!(logged);
    Ok(result.to_string())
}

/// `n` feasible genomes drawn with budget-aware sampling, stream `index0 + i` of `seed` each.
#[pyfunction]
#[pyo3(signature = (space_json, budget_min, budget_max, n, seed, index0=0))]
fn sample_genomes(py: Python<'_>, space_json: &str, budget_min: u64, budget_max: u64, n: usize, seed: u64, index0: usize) -> PyResult<Vec<Genome>> {
    use glora_engine::rng::{stream, Purpose};
    use rayon::prelude::*;
    let space: Space = parse("space", space_json)?;
    let flat = space.flatten().map_err(|e| to_py(py, e))?;
    let budget = Budget { min: budget_min, max: budget_max };
    flat.check_budget(budget).map_err(|e| to_py(py, e))?;
    Ok(py.allow_threads(|| {
        (0..n)
            .into_par_iter()
            .map(|i| glora_engine::operators::sample(&flat, budget, &mut stream(seed, 0, Purpose::Random, index0 + i)))
            .collect()
    }))
}

/// Throughput of candidate construction, for benchmarks: `n` candidates each by sampling, by mutation (per-gene
/// probability 0.2) and by uniform crossover of sampled parents, all repaired into the budget, on `threads`
/// threads. Returns JSON: per operator the candidates per second and the share that is feasible.
#[pyfunction]
#[pyo3(signature = (space_json, budget_min, budget_max, n, seed, threads=1))]
fn engine_throughput(py: Python<'_>, space_json: &str, budget_min: u64, budget_max: u64, n: usize, seed: u64, threads: usize) -> PyResult<String> {
    use glora_engine::operators::{crossover, is_feasible, mutate, sample};
    use glora_engine::rng::{stream, Purpose};
    use rayon::prelude::*;
    let space: Space = parse("space", space_json)?;
    let flat = space.flatten().map_err(|e| to_py(py, e))?;
    let budget = Budget { min: budget_min, max: budget_max };
    flat.check_budget(budget).map_err(|e| to_py(py, e))?;
    let parents: Vec<Genome> = (0..16).map(|i| sample(&flat, budget, &mut stream(seed, 1, Purpose::Random, i))).collect();
    let measure = |op: &(dyn Fn(usize) -> Genome + Sync)| -> (f64, f64) {
        let started = Instant::now();
        let feasible = (0..n).into_par_iter().filter(|&i| is_feasible(&flat, budget, &op(i))).count();
        (n as f64 / started.elapsed().as_secs_f64(), feasible as f64 / n as f64)
    };
    let result = py.allow_threads(|| {
        with_pool(Some(threads), || {
            let s = measure(&|i| sample(&flat, budget, &mut stream(seed, 2, Purpose::Random, i)));
            let m = measure(&|i| {
                let mut rng = stream(seed, 2, Purpose::Mutation, i);
                mutate(&flat, budget, &parents[i % parents.len()], 0.2, &mut rng)
            });
            let c = measure(&|i| {
                let mut rng = stream(seed, 2, Purpose::Crossover, i);
                crossover(&flat, budget, &parents[i % parents.len()], &parents[(i * 7 + 3) % parents.len()], &mut rng)
            });
            json!({
                "sample": {"per_second": s.0, "feasible_share": s.1},
                "mutation": {"per_second": m.0, "feasible_share": m.1},
                "crossover": {"per_second": c.0, "feasible_share": c.1},
            })
        })
    })?;
    Ok(result.to_string())
}

/// Default search parameters as JSON (the reference's numbers).
#[pyfunction]
fn default_params() -> String {
    serde_json::to_string(&Params::default()).expect("params serialise")
}

#[pymodule]
fn _engine(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", glora_engine::VERSION)?;
    m.add("SearchError", py.get_type::<SearchError>())?;
    m.add("ImpossibleBudgetError", py.get_type::<ImpossibleBudgetError>())?;
    m.add("ScoreError", py.get_type::<ScoreError>())?;
    m.add("LogError", py.get_type::<LogError>())?;
    m.add("DivergenceError", py.get_type::<DivergenceError>())?;
    m.add_function(wrap_pyfunction!(run_search, m)?)?;
    m.add_function(wrap_pyfunction!(replay_log, m)?)?;
    m.add_function(wrap_pyfunction!(sample_genomes, m)?)?;
    m.add_function(wrap_pyfunction!(default_params, m)?)?;
    m.add_function(wrap_pyfunction!(engine_throughput, m)?)?;
    Ok(())
}
