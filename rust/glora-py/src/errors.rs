//! Engine errors as the exceptions of `glora.errors`, each with `kind` and `details` (a dict).

use glora_engine::EngineError;
use pyo3::exceptions::PyKeyError;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyDict, PyModule};

static ERRORS: GILOnceCell<Py<PyModule>> = GILOnceCell::new();

fn class_name(err: &EngineError) -> &'static str {
    match err {
        EngineError::ImpossibleBudget { .. } | EngineError::NarrowBudget { .. } => "ImpossibleBudgetError",
        EngineError::ScoresNotASequence { .. }
        | EngineError::WrongScoreCount { .. }
        | EngineError::WrongExampleCount { .. }
        | EngineError::RowNotASequence { .. }
        | EngineError::BadOutcome { .. }
        | EngineError::NoExampleScores
        | EngineError::ScoreNotANumber { .. }
        | EngineError::NonFiniteScore { .. } => "ScoreError",
        EngineError::Divergence { .. } => "DivergenceError",
        EngineError::CorruptLog { .. } | EngineError::LogMismatch { .. } | EngineError::LogIo { .. } => "LogError",
        _ => "SearchError",
    }
}

fn kind_and_details<'py>(py: Python<'py>, err: &EngineError) -> PyResult<(&'static str, Bound<'py, PyDict>)> {
    let d = PyDict::new(py);
    let kind = match err {
        EngineError::EmptySpace => "empty_space",
        EngineError::BadGene { layer, gene, reason } => {
            d.set_item("layer", layer)?;
            d.set_item("gene", gene)?;
            d.set_item("reason", reason)?;
            "bad_gene"
        }
        EngineError::ImpossibleBudget { min, max, smallest, largest } => {
            d.set_item("min", min)?;
            d.set_item("max", max)?;
            d.set_item("smallest", smallest)?;
            d.set_item("largest", largest)?;
            "impossible_budget"
        }
        EngineError::NarrowBudget { min, max, step } => {
            d.set_item("min", min)?;
            d.set_item("max", max)?;
            d.set_item("step", step)?;
            "narrow_budget"
        }
        EngineError::BadBudget { reason } => {
            d.set_item("reason", reason)?;
            "bad_budget"
        }
        EngineError::Overflow { what } => {
            d.set_item("reason", what)?;
            "overflow"
        }
        EngineError::BadSpaceData { reason } => {
            d.set_item("reason", reason)?;
            "bad_space_data"
        }
        EngineError::BadParameter { name, value, allowed } => {
            d.set_item("name", name)?;
            d.set_item("value", value)?;
            d.set_item("allowed", allowed)?;
            "bad_parameter"
        }
        EngineError::ScoresNotASequence { expected, type_name } => {
            d.set_item("expected", expected)?;
            d.set_item("type", type_name)?;
            "not_a_sequence"
        }
        EngineError::WrongScoreCount { expected, got } => {
            d.set_item("expected", expected)?;
            d.set_item("got", got)?;
            "wrong_score_count"
        }
        EngineError::WrongExampleCount { index, expected, got } => {
            d.set_item("index", index)?;
            d.set_item("expected", expected)?;
            d.set_item("got", got)?;
            "wrong_example_count"
        }
        EngineError::RowNotASequence { index, type_name } => {
            d.set_item("index", index)?;
            d.set_item("type", type_name)?;
            "row_not_a_sequence"
        }
        EngineError::BadOutcome { index, reason } => {
            d.set_item("index", index)?;
            d.set_item("reason", reason)?;
            "bad_outcome"
        }
        EngineError::NoExampleScores => "no_example_scores",
        EngineError::ScoreNotANumber { index, value } => {
            d.set_item("index", index)?;
            d.set_item("value", value)?;
            "not_a_number"
        }
        EngineError::NonFiniteScore { index, value } => {
            d.set_item("index", index)?;
            d.set_item("value", value)?;
            "non_finite_score"
        }
        EngineError::NothingAsked => "nothing_asked",
        EngineError::BadGenome(reason) => {
            d.set_item("reason", reason)?;
            "bad_genome"
        }
        EngineError::SubnetLayers { unknown, missing } => {
            d.set_item("unknown", unknown)?;
            d.set_item("missing", missing)?;
            "subnet_layers"
        }
        EngineError::MissingGene { layer, gene } => {
            d.set_item("layer", layer)?;
            d.set_item("gene", gene)?;
            "missing_gene"
        }
        EngineError::UnknownChoice { layer, gene, choice, offered } => {
            d.set_item("layer", layer)?;
            d.set_item("gene", gene)?;
            d.set_item("choice", choice)?;
            d.set_item("offered", offered)?;
            "unknown_choice"
        }
        EngineError::NoExtreme { which, min, max, reached } => {
            d.set_item("which", which)?;
            d.set_item("min", min)?;
            d.set_item("max", max)?;
            d.set_item("reached", reached)?;
            "no_extreme"
        }
        EngineError::NoPointWithin { max_params, smallest } => {
            d.set_item("max_params", max_params)?;
            d.set_item("smallest", smallest)?;
            "no_point_within"
        }
        EngineError::CorruptLog { path, line, reason } => {
            d.set_item("path", path)?;
            d.set_item("line", line)?;
            d.set_item("reason", reason)?;
            "corrupt_log"
        }
        EngineError::LogMismatch { path, differences } => {
            d.set_item("path", path)?;
            d.set_item("differences", differences)?;
            "log_mismatch"
        }
        EngineError::LogIo { path, reason } => {
            d.set_item("path", path)?;
            d.set_item("reason", reason)?;
            "log_io"
        }
        EngineError::Divergence { generation, index, logged, produced } => {
            d.set_item("generation", generation)?;
            d.set_item("index", index)?;
            d.set_item("logged", logged)?;
            d.set_item("produced", produced)?;
            "divergence"
        }
    };
    Ok((kind, d))
}

fn build(py: Python<'_>, err: &EngineError) -> PyResult<PyErr> {
    let message = err.to_string();
    if let EngineError::SubnetLayers { .. } = err {
        return Ok(PyKeyError::new_err(message));
    }
    let module = ERRORS.get_or_try_init(py, || PyModule::import(py, "glora.errors").map(Bound::unbind))?.bind(py);
    let (kind, details) = kind_and_details(py, err)?;
    let kwargs = PyDict::new(py);
    kwargs.set_item("kind", kind)?;
    kwargs.set_item("details", details)?;
    let instance = module.getattr(class_name(err))?.call((message,), Some(&kwargs))?;
    Ok(PyErr::from_value(instance))
}

/// The Python exception of an engine error.
pub fn to_py(err: EngineError) -> PyErr {
    Python::with_gil(|py| build(py, &err).unwrap_or_else(|failure| failure))
}
