//! Python values to the engine's types: user-given values, budgets, subnets and scores.

use glora_engine::{Budget, BudgetSpec, EngineError, SubnetMap, Value};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyList, PyString, PyTuple};

use crate::errors::to_py;

/// A value as given, for the engine to check.
pub fn value(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    if obj.is_instance_of::<PyBool>() {
        return Ok(Value::Other(obj.repr()?.to_string()));
    }
    if obj.is_instance_of::<PyFloat>() {
        return Ok(Value::Float(obj.extract()?));
    }
    if obj.is_instance_of::<PyString>() {
        return Ok(Value::Text(obj.extract()?));
    }
    match obj.extract::<i64>() {
        Ok(v) => Ok(Value::Int(v)),
        Err(_) => Ok(Value::Other(obj.repr()?.to_string())),
    }
}

/// A checked budget from a maximum or a (min, max) pair.
pub fn budget(obj: &Bound<'_, PyAny>) -> PyResult<Budget> {
    let spec = if obj.is_instance_of::<PyTuple>() || obj.is_instance_of::<PyList>() {
        if obj.len()? == 2 {
            BudgetSpec::Range(value(&obj.get_item(0)?)?, value(&obj.get_item(1)?)?)
        } else {
            BudgetSpec::Malformed(obj.repr()?.to_string())
        }
    } else {
        BudgetSpec::Max(value(obj)?)
    };
    Budget::from_spec(&spec).map_err(to_py)
}

/// A subnet dict (layer name to gene to choice name).
pub fn subnet_map(obj: &Bound<'_, PyAny>) -> PyResult<SubnetMap> {
    if !obj.is_instance_of::<PyDict>() {
        let type_name = obj.get_type().name()?;
        return Err(PyTypeError::new_err(format!("a subnet must be a dict of layer names to gene choices, got {type_name}")));
    }
    obj.extract()
}

/// A subnet as a dict: layer name to gene to choice name.
pub fn subnet_dict<'py>(py: Python<'py>, space: &glora_engine::Space, genome: &[u16]) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    for (name, choices) in space.to_subnet(genome) {
        let config = PyDict::new(py);
        for (gene, choice) in glora_engine::GENES.iter().zip(choices) {
            config.set_item(gene, choice)?;
        }
        out.set_item(name, config)?;
    }
    Ok(out)
}

/// The scores a fitness function returned, as numbers (their count and finiteness are the engine's to check).
pub fn scores(returned: &Bound<'_, PyAny>, expected: usize) -> PyResult<Vec<f64>> {
    let not_a_sequence = || -> PyResult<PyErr> {
        Ok(to_py(EngineError::ScoresNotASequence { expected, type_name: returned.get_type().name()?.to_string() }))
    };
    let Ok(items) = returned.try_iter() else { return Err(not_a_sequence()?) };
    let mut out = Vec::with_capacity(expected);
    for (index, item) in items.enumerate() {
        let item = item?;
        match item.extract::<f64>() {
            Ok(v) => out.push(v),
            Err(_) => return Err(to_py(EngineError::ScoreNotANumber { index, value: item.repr()?.to_string() })),
        }
    }
    Ok(out)
}
