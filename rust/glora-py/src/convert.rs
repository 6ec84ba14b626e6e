//! Python values to the engine's types: user-given values, budgets, subnets and scores.

use glora_engine::{Budget, BudgetSpec, EngineError, SubnetMap, Value};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PySet, PyString, PyTuple};

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
    match obj.extract::<i128>() {
        Ok(v) => Ok(Value::Int(v)),
        Err(_) if obj.is_instance_of::<PyInt>() => Ok(Value::BigInt(obj.repr()?.to_string())),
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

/// One score: a Python int or float, or a 0-d numeric array or tensor (numpy scalars, torch 0-d tensors), read by
/// its `item()`; booleans, strings, containers and anything else are refused. The one place scores are checked
/// for type; their count and finiteness are the engine's to check.
fn score(item: &Bound<'_, PyAny>) -> Option<f64> {
    let plain = |x: &Bound<'_, PyAny>| {
        let number = (x.is_instance_of::<PyFloat>() || x.is_instance_of::<PyInt>()) && !x.is_instance_of::<PyBool>();
        if number {
            x.extract::<f64>().ok()
        } else {
            None
        }
    };
    if let Some(v) = plain(item) {
        return Some(v);
    }
    let zero_dim = item.getattr("ndim").and_then(|n| n.extract::<usize>()).is_ok_and(|n| n == 0);
    if zero_dim {
        return item.call_method0("item").ok().and_then(|v| plain(&v));
    }
    None
}

fn describe(obj: &Bound<'_, PyAny>) -> PyResult<String> {
    let mut shown = obj.repr()?.to_string();
    if shown.chars().count() > 60 {
        shown = shown.chars().take(57).collect::<String>() + "...";
    }
    Ok(format!("{shown} ({})", obj.get_type().name()?))
}

/// The scores a fitness function returned: a sequence (list, tuple, 1-d array or tensor) of one score each.
pub fn scores(returned: &Bound<'_, PyAny>, expected: usize) -> PyResult<Vec<f64>> {
    let Some(items) = ordered_items(returned)? else {
        return Err(to_py(EngineError::ScoresNotASequence { expected, type_name: describe(returned)? }));
    };
    let mut out = Vec::with_capacity(expected);
    for (index, item) in items.enumerate() {
        let item = item?;
        match score(&item) {
            Some(v) => out.push(v),
            None => return Err(to_py(EngineError::ScoreNotANumber { index, value: describe(&item)? })),
        }
    }
    Ok(out)
}

/// The scores per example a raced fitness returned: one row (a sequence of scores, as `scores` reads them) per
/// subnet; the counts are the engine's to check.
pub fn rows(returned: &Bound<'_, PyAny>, expected: usize) -> PyResult<Vec<Vec<f64>>> {
    let Some(items) = ordered_items(returned)? else {
        return Err(to_py(EngineError::ScoresNotASequence { expected, type_name: describe(returned)? }));
    };
    let mut out = Vec::with_capacity(expected);
    for (index, row) in items.enumerate() {
        let row = row?;
        if ordered_items(&row)?.is_none() {
            return Err(to_py(EngineError::RowNotASequence { index, type_name: describe(&row)? }));
        }
        out.push(scores(&row, row.len().unwrap_or(0))?);
    }
    Ok(out)
}

/// The items of an ordered sequence (list, tuple, array, tensor, iterator), or None for anything else: mappings,
/// sets, text and objects that cannot be iterated.
fn ordered_items<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, pyo3::types::PyIterator>>> {
    let unordered =
        obj.is_instance_of::<PyDict>() || obj.is_instance_of::<PySet>() || obj.is_instance_of::<PyFrozenSet>() || obj.hasattr("keys")?;
    let text = obj.is_instance_of::<PyString>() || obj.is_instance_of::<PyBytes>() || obj.is_instance_of::<PyByteArray>();
    Ok(if unordered || text { None } else { obj.try_iter().ok() })
}
