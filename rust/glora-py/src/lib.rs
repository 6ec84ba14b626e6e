//! Python bindings of the glora search engine: type conversion, error mapping, and the GIL released around the
//! engine's parallel work. The search domain itself lives in `glora_engine`.

mod config;
mod convert;
mod errors;
mod run;
mod space;

use pyo3::prelude::*;

#[pymodule]
fn _engine(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", glora_engine::VERSION)?;
    m.add("GENES", glora_engine::GENES.to_vec())?;
    m.add_class::<space::LayerSpace>()?;
    m.add_class::<space::SearchSpace>()?;
    m.add_class::<config::SearchConfig>()?;
    m.add_class::<run::Generation>()?;
    m.add_class::<run::ParetoPoint>()?;
    m.add_class::<run::Racing>()?;
    m.add_class::<run::SearchResult>()?;
    m.add_class::<run::Divergence>()?;
    m.add_class::<run::LogReport>()?;
    m.add_function(wrap_pyfunction!(space::budget_bounds, m)?)?;
    m.add_function(wrap_pyfunction!(run::run_search, m)?)?;
    m.add_function(wrap_pyfunction!(run::read_log, m)?)?;
    m.add_function(wrap_pyfunction!(run::check_seed, m)?)?;
    Ok(())
}
