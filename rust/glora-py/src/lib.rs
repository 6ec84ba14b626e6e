//! Python bindings of the glora search engine: type conversion, error mapping, GIL release.

use pyo3::prelude::*;

#[pymodule]
fn _engine(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", glora_engine::VERSION)?;
    Ok(())
}
