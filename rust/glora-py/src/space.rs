//! `LayerSpace` and `SearchSpace`: a model's search space, with the engine's counts, sampling and extremes.

use std::sync::Arc;

use glora_engine::error::py_repr;
use glora_engine::search::check_count;
use glora_engine::{EngineError, Layer, Space, GENES};
use pyo3::exceptions::PyKeyError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use crate::convert::{subnet_dict, subnet_map};
use crate::errors::to_py;

/// One GLoRA layer: its shape as a matrix and, for each gene, the offered choices; the engine computes their
/// parameter costs (docs/method.md, section 2).
#[pyclass(module = "glora._engine", frozen, eq)]
#[derive(Clone, PartialEq)]
pub struct LayerSpace {
    pub layer: Layer,
}

#[pymethods]
impl LayerSpace {
    #[new]
    fn new(name: &str, out_features: u64, in_features: u64, choices: &Bound<'_, PyDict>) -> PyResult<Self> {
        for key in choices.keys() {
            let gene: String = key.extract()?;
            if !GENES.contains(&gene.as_str()) {
                let reason = format!("unknown gene; genes are {}", GENES.join(", "));
                return Err(to_py(EngineError::BadGene { layer: name.into(), gene, reason }));
            }
        }
        let mut per_gene = Vec::with_capacity(GENES.len());
        for gene in GENES {
            let Some(offered) = choices.get_item(gene)? else {
                return Err(to_py(EngineError::BadGene { layer: name.into(), gene: gene.into(), reason: "no choices offered".into() }));
            };
            per_gene.push(offered.extract::<Vec<String>>()?);
        }
        Layer::new(name, out_features, in_features, per_gene).map(|layer| LayerSpace { layer }).map_err(to_py)
    }

    #[getter]
    fn name(&self) -> &str {
        &self.layer.name
    }

    #[getter]
    fn out_features(&self) -> u64 {
        self.layer.out_features
    }

    #[getter]
    fn in_features(&self) -> u64 {
        self.layer.in_features
    }

    /// Each gene's offered choice names.
    #[getter]
    fn choices<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        for gene in &self.layer.genes {
            out.set_item(&gene.gene, PyTuple::new(py, &gene.choices)?)?;
        }
        Ok(out)
    }

    /// Each gene's choices with their parameter costs.
    #[getter]
    fn costs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        for gene in &self.layer.genes {
            let costs = PyDict::new(py);
            for (choice, cost) in gene.choices.iter().zip(&gene.costs) {
                costs.set_item(choice, cost)?;
            }
            out.set_item(&gene.gene, costs)?;
        }
        Ok(out)
    }

    fn __repr__(&self) -> String {
        format!("LayerSpace({:?}, {}, {})", self.layer.name, self.layer.out_features, self.layer.in_features)
    }
}

/// All GLoRA layers of a model, in module order; a genome is one choice index per gene, layers in order.
#[pyclass(module = "glora._engine", frozen)]
pub struct SearchSpace {
    pub inner: Arc<glora_engine::SearchSpace>,
}

impl SearchSpace {
    pub fn from_space(space: Space) -> PyResult<Self> {
        glora_engine::SearchSpace::new(space).map(|s| SearchSpace { inner: Arc::new(s) }).map_err(to_py)
    }

    fn subnets<'py>(&self, py: Python<'py>, genomes: &[Vec<u16>]) -> PyResult<Bound<'py, PyList>> {
        let dicts = genomes.iter().map(|g| subnet_dict(py, self.inner.space(), g)).collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, dicts)
    }
}

#[pymethods]
impl SearchSpace {
    #[new]
    fn new(layers: Vec<PyRef<'_, LayerSpace>>) -> PyResult<Self> {
        SearchSpace::from_space(Space { layers: layers.iter().map(|l| l.layer.clone()).collect() })
    }

    #[getter]
    fn layers(&self) -> Vec<LayerSpace> {
        self.inner.space().layers.iter().map(|layer| LayerSpace { layer: layer.clone() }).collect()
    }

    #[getter]
    fn names(&self) -> Vec<String> {
        self.inner.space().layers.iter().map(|l| l.name.clone()).collect()
    }

    /// The smallest parameter count of a subnet.
    #[getter]
    fn min_params(&self) -> u64 {
        self.inner.flat().smallest
    }

    /// The largest parameter count of a subnet.
    #[getter]
    fn max_params(&self) -> u64 {
        self.inner.flat().largest
    }

    fn __len__(&self) -> usize {
        self.inner.space().layers.len()
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(PyList::new(py, self.layers())?.try_iter()?.into_any())
    }

    fn __getitem__(&self, name: &str) -> PyResult<LayerSpace> {
        match self.inner.space().layers.iter().find(|l| l.name == name) {
            Some(layer) => Ok(LayerSpace { layer: layer.clone() }),
            None => Err(PyKeyError::new_err(format!("no GLoRA layer named {name:?} in the search space"))),
        }
    }

    fn __eq__(&self, other: &Self) -> bool {
        self.inner.space() == other.inner.space()
    }

    /// The parameter count of a subnet whose choices this space offers.
    fn count(&self, subnet: &Bound<'_, PyAny>) -> PyResult<u64> {
        self.inner.count(&subnet_map(subnet)?).map_err(to_py)
    }

    /// One choice index per gene, layers in order.
    fn to_genome(&self, subnet: &Bound<'_, PyAny>) -> PyResult<Vec<u16>> {
        self.inner.space().to_genome(&subnet_map(subnet)?).map_err(to_py)
    }

    fn to_subnet<'py>(&self, py: Python<'py>, genome: Vec<u16>) -> PyResult<Bound<'py, PyDict>> {
        self.inner.flat().validate(&genome).map_err(to_py)?;
        subnet_dict(py, self.inner.space(), &genome)
    }

    /// The budget as checked `(min, max)` bounds that this space can meet.
    fn check_budget(&self, budget: &Bound<'_, PyAny>) -> PyResult<(u64, u64)> {
        let b = crate::convert::budget(budget)?;
        self.inner.flat().check_budget(b).map_err(to_py)?;
        Ok((b.min, b.max))
    }

    /// `n` subnets within `budget` by budget-aware sampling; draw `i` is a fixed function of `(seed, index0 + i)`.
    #[pyo3(signature = (budget, n, seed, index0=0))]
    fn sample<'py>(&self, py: Python<'py>, budget: &Bound<'py, PyAny>, n: usize, seed: u64, index0: usize) -> PyResult<Bound<'py, PyList>> {
        let b = crate::convert::budget(budget)?;
        check_count("n", n as i128, 0, &n.to_string()).map_err(to_py)?;
        let inner = Arc::clone(&self.inner);
        let genomes = py.allow_threads(move || inner.sample(b, n, seed, index0)).map_err(to_py)?;
        self.subnets(py, &genomes)
    }

    /// The dearest subnet within `budget` (the sandwich rule's largest path).
    fn largest_within<'py>(&self, py: Python<'py>, budget: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDict>> {
        let genome = self.inner.flat().largest_within(crate::convert::budget(budget)?).map_err(to_py)?;
        subnet_dict(py, self.inner.space(), &genome)
    }

    /// The cheapest subnet within `budget` (the sandwich rule's smallest path).
    fn smallest_within<'py>(&self, py: Python<'py>, budget: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDict>> {
        let genome = self.inner.flat().smallest_within(crate::convert::budget(budget)?).map_err(to_py)?;
        subnet_dict(py, self.inner.space(), &genome)
    }

    /// The space as plain data, in the form of a search log's header.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let layers = PyList::empty(py);
        for layer in &self.inner.space().layers {
            let genes = PyList::empty(py);
            for gene in &layer.genes {
                let g = PyDict::new(py);
                g.set_item("gene", &gene.gene)?;
                g.set_item("choices", &gene.choices)?;
                g.set_item("costs", &gene.costs)?;
                genes.append(g)?;
            }
            let l = PyDict::new(py);
            l.set_item("name", &layer.name)?;
            l.set_item("out_features", layer.out_features)?;
            l.set_item("in_features", layer.in_features)?;
            l.set_item("genes", genes)?;
            layers.append(l)?;
        }
        let out = PyDict::new(py);
        out.set_item("layers", layers)?;
        Ok(out)
    }

    /// The space of `to_dict`'s data; the costs are computed again from the shapes.
    #[staticmethod]
    fn from_dict(data: &Bound<'_, PyAny>) -> PyResult<Self> {
        let mut layers = Vec::new();
        for (i, layer) in field(data, "layers", "the space")?.try_iter()?.enumerate() {
            let layer = layer?;
            let place = format!("layer {i}");
            let genes = PyDict::new(layer.py());
            for gene in field(&layer, "genes", &place)?.try_iter()? {
                let gene = gene?;
                genes.set_item(field(&gene, "gene", &place)?, field(&gene, "choices", &place)?)?;
            }
            let number =
                |key: &str| field(&layer, key, &place)?.extract::<u64>().map_err(|_| malformed(&place, key, "a non-negative integer"));
            let name: String = field(&layer, "name", &place)?.extract().map_err(|_| malformed(&place, "name", "a string"))?;
            layers.push(LayerSpace::new(&name, number("out_features")?, number("in_features")?, &genes)?.layer);
        }
        SearchSpace::from_space(Space { layers })
    }

    fn __repr__(&self) -> String {
        format!("SearchSpace({} layers, {} to {} parameters)", self.__len__(), self.min_params(), self.max_params())
    }
}

fn malformed(place: &str, key: &str, wanted: &str) -> PyErr {
    to_py(EngineError::BadSpaceData { reason: format!("{place}: {} must be {wanted}", py_repr(key)) })
}

/// `obj[key]`, or a SearchError naming what lacks it.
fn field<'py>(obj: &Bound<'py, PyAny>, key: &str, place: &str) -> PyResult<Bound<'py, PyAny>> {
    obj.get_item(key).map_err(|_| to_py(EngineError::BadSpaceData { reason: format!("{place} lacks {}", py_repr(key)) }))
}

/// `(min, max)` parameters from a maximum or a `(min, max)` pair; raises on anything else.
#[pyfunction]
pub fn budget_bounds(budget: &Bound<'_, PyAny>) -> PyResult<(u64, u64)> {
    let b = crate::convert::budget(budget)?;
    Ok((b.min, b.max))
}
