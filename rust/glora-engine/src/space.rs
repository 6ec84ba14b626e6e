//! The search space: layers of genes, each gene a list of choices with a parameter cost (docs/method.md,
//! section 2). Costs are computed here from a layer's shape and its offered choice names.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::Value;
use crate::error::{py_list, py_repr, EngineError, Result};

/// The five support tensors of a layer, in genome order.
pub const GENES: [&str; 5] = ["A", "B", "C", "D", "E"];

/// One gene (a support tensor of one layer): its choice names and their parameter costs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gene {
    pub gene: String,
    pub choices: Vec<String>,
    pub costs: Vec<u64>,
}

/// One layer: its name, its shape as a matrix (out, in) and its genes A..E.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    pub name: String,
    #[serde(default)]
    pub out_features: u64,
    #[serde(default)]
    pub in_features: u64,
    pub genes: Vec<Gene>,
}

/// The whole space; genomes index its genes in layer order, then gene order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Space {
    pub layers: Vec<Layer>,
}

/// A genome: the chosen choice index of every gene, flattened over layers.
pub type Genome = Vec<u16>;

/// A subnet as produced: per layer in space order, its name and one choice name per gene (A..E).
pub type Subnet = Vec<(String, Vec<String>)>;

/// A subnet as given by a user: layer name to gene name to choice name.
pub type SubnetMap = BTreeMap<String, BTreeMap<String, String>>;

/// Allowed total parameter counts, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    pub min: u64,
    pub max: u64,
}

/// A budget as the user wrote it: a maximum, a (min, max) pair, or something else (shown as written).
#[derive(Debug, Clone, PartialEq)]
pub enum BudgetSpec {
    Max(Value),
    Range(Value, Value),
    Malformed(String),
}

impl Value {
    fn whole(&self, what: &str) -> Result<u64> {
        let refuse = |allowed: &str| EngineError::BadBudget { reason: format!("budget {what} must be {allowed}, got {self}") };
        let whole = "a non-negative whole number of parameters";
        let too_large = format!("at most {} parameters", u64::MAX);
        if let Some(v) = self.integer() {
            return match u64::try_from(v) {
                Ok(v) => Ok(v),
                Err(_) if v > 0 => Err(refuse(&too_large)),
                Err(_) => Err(refuse(whole)),
            };
        }
        match *self {
            Value::Float(v) if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < u64::MAX as f64 => Ok(v as u64),
            Value::Float(v) if v >= u64::MAX as f64 && v.fract() == 0.0 => Err(refuse(&too_large)),
            _ => Err(refuse(whole)),
        }
    }
}

impl Budget {
    /// The checked `[min, max]` of a budget given as a maximum or a (min, max) pair.
    pub fn from_spec(spec: &BudgetSpec) -> Result<Budget> {
        match spec {
            BudgetSpec::Max(max) => Ok(Budget { min: 0, max: max.whole("maximum")? }),
            BudgetSpec::Range(min, max) => {
                let (min, max) = (min.whole("minimum")?, max.whole("maximum")?);
                if min > max {
                    return Err(EngineError::BadBudget { reason: format!("budget minimum {min} exceeds its maximum {max}") });
                }
                Ok(Budget { min, max })
            }
            BudgetSpec::Malformed(shown) => {
                Err(EngineError::BadBudget { reason: format!("budget must be a maximum or a (min, max) pair, got {shown}") })
            }
        }
    }
}

/// The trainable parameters of `choice` for `gene` on an `out x in` layer (docs/method.md, section 2):
/// A, B: `lora_r` r(out + in), vector out, scalar 1; C: `lora_r` r(in + 1), vector in; D, E: vector out, scalar 1;
/// none 0.
pub fn choice_cost(gene: &str, choice: &str, out_features: u64, in_features: u64) -> std::result::Result<u64, String> {
    let rank = choice.strip_prefix("lora_").map(|r| match r.parse::<u64>() {
        Ok(rank) if rank >= 1 && r.bytes().all(|b| b.is_ascii_digit()) => Ok(rank),
        _ => Err(format!("malformed choice {choice:?}: a lora choice is lora_<rank>, rank at least 1")),
    });
    if let Some(Err(reason)) = &rank {
        return Err(reason.clone());
    }
    let cost = match (gene, choice, rank) {
        (_, "none", _) => Some(0),
        ("A" | "B" | "D" | "E", "scalar", _) => Some(1),
        ("A" | "B" | "D" | "E", "vector", _) => Some(out_features),
        ("C", "vector", _) => Some(in_features),
        ("A" | "B", _, Some(rank)) => in_features.checked_add(out_features).and_then(|n| n.checked_mul(rank.ok()?)),
        ("C", _, Some(rank)) => in_features.checked_add(1).and_then(|n| n.checked_mul(rank.ok()?)),
        _ if !GENES.contains(&gene) => return Err(format!("unknown gene; genes are {}", GENES.join(", "))),
        _ => return Err(format!("choice {choice:?} is not offered by gene {gene}")),
    };
    cost.ok_or_else(|| format!("the cost of choice {choice:?} on a {out_features} x {in_features} layer exceeds {}", u64::MAX))
}

impl Layer {
    fn difference(&self, other: &Layer, position: usize) -> Option<String> {
        if self.name != other.name {
            return Some(format!("layer {position} is named {} (log) vs {} (this search)", py_repr(&self.name), py_repr(&other.name)));
        }
        let at = format!("layer {}", py_repr(&self.name));
        if self.out_features != other.out_features {
            return Some(format!("{at} out_features {} (log) vs {} (this search)", self.out_features, other.out_features));
        }
        if self.in_features != other.in_features {
            return Some(format!("{at} in_features {} (log) vs {} (this search)", self.in_features, other.in_features));
        }
        let genes = |l: &Layer| l.genes.iter().map(|g| g.gene.clone()).collect::<Vec<_>>();
        if genes(self) != genes(other) {
            return Some(format!("{at} genes {} (log) vs {} (this search)", py_list(&genes(self)), py_list(&genes(other))));
        }
        self.genes.iter().zip(&other.genes).find(|(a, b)| a != b).map(|(a, b)| {
            if a.choices != b.choices {
                format!("{at} gene {} offers {} (log) vs {} (this search)", a.gene, py_list(&a.choices), py_list(&b.choices))
            } else {
                format!("{at} gene {} costs {:?} (log) vs {:?} (this search)", a.gene, a.costs, b.costs)
            }
        })
    }

    /// A layer of shape `out x in` offering `choices[g]` for gene `GENES[g]`; the costs follow from the shape.
    pub fn new(name: &str, out_features: u64, in_features: u64, choices: Vec<Vec<String>>) -> Result<Layer> {
        if choices.len() != GENES.len() {
            return Err(EngineError::BadGene {
                layer: name.into(),
                gene: String::new(),
                reason: format!("{} genes given, a layer has {} ({})", choices.len(), GENES.len(), GENES.join(", ")),
            });
        }
        let genes = GENES
            .iter()
            .zip(choices)
            .map(|(&gene, choices)| {
                let costs = choices
                    .iter()
                    .map(|c| choice_cost(gene, c, out_features, in_features))
                    .collect::<std::result::Result<Vec<u64>, String>>()
                    .map_err(|reason| EngineError::BadGene { layer: name.into(), gene: gene.into(), reason })?;
                Ok(Gene { gene: gene.into(), choices, costs })
            })
            .collect::<Result<Vec<Gene>>>()?;
        Ok(Layer { name: name.into(), out_features, in_features, genes })
    }
}

/// A space flattened for fast work: per gene, its costs, the cheapest and dearest cost.
#[derive(Debug, Clone)]
pub struct FlatSpace {
    pub costs: Vec<Vec<u64>>,
    pub min_cost: Vec<u64>,
    pub max_cost: Vec<u64>,
    pub smallest: u64,
    pub largest: u64,
    /// The largest gap between two cost-adjacent choices of one gene.
    pub max_step: u64,
}

impl Space {
    /// Check the space and flatten it.
    pub fn flatten(&self) -> Result<FlatSpace> {
        if self.layers.is_empty() {
            return Err(EngineError::EmptySpace);
        }
        let mut costs = Vec::new();
        for layer in &self.layers {
            if layer.genes.is_empty() {
                return Err(EngineError::BadGene { layer: layer.name.clone(), gene: String::new(), reason: "layer has no genes".into() });
            }
            for gene in &layer.genes {
                let bad = |reason: &str| EngineError::BadGene { layer: layer.name.clone(), gene: gene.gene.clone(), reason: reason.into() };
                if gene.choices.is_empty() {
                    return Err(bad("no choices"));
                }
                if gene.choices.len() != gene.costs.len() {
                    return Err(bad("choices and costs differ in length"));
                }
                if gene.choices.len() > u16::MAX as usize {
                    return Err(bad("too many choices"));
                }
                costs.push(gene.costs.clone());
            }
        }
        let min_cost: Vec<u64> = costs.iter().map(|c| c.iter().copied().min().unwrap_or(0)).collect();
        let max_cost: Vec<u64> = costs.iter().map(|c| c.iter().copied().max().unwrap_or(0)).collect();
        let total = |costs: &[u64]| {
            costs
                .iter()
                .try_fold(0u64, |sum, &c| sum.checked_add(c))
                .ok_or_else(|| EngineError::Overflow { what: format!("the space's largest parameter count exceeds {}", u64::MAX) })
        };
        let (smallest, largest) = (total(&min_cost)?, total(&max_cost)?);
        let max_step = costs
            .iter()
            .map(|c| {
                let mut sorted = c.clone();
                sorted.sort_unstable();
                sorted.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0)
            })
            .max()
            .unwrap_or(0);
        Ok(FlatSpace { smallest, largest, costs, min_cost, max_cost, max_step })
    }

    /// Check a space read from a file: every layer has the genes A..E in order, with the costs its shape gives.
    pub fn check_costs(&self) -> Result<()> {
        for layer in &self.layers {
            let names: Vec<&str> = layer.genes.iter().map(|g| g.gene.as_str()).collect();
            if names != GENES {
                let reason = format!("genes {names:?}, a layer has {GENES:?} in this order");
                return Err(EngineError::BadGene { layer: layer.name.clone(), gene: String::new(), reason });
            }
            let choices = layer.genes.iter().map(|g| g.choices.clone()).collect();
            let computed = Layer::new(&layer.name, layer.out_features, layer.in_features, choices)?;
            for (logged, gene) in layer.genes.iter().zip(&computed.genes) {
                if logged.costs != gene.costs {
                    let reason = format!("costs {:?}, the layer's shape gives {:?}", logged.costs, gene.costs);
                    return Err(EngineError::BadGene { layer: layer.name.clone(), gene: gene.gene.clone(), reason });
                }
            }
        }
        Ok(())
    }

    /// The first difference between this space (a log's) and `other` (a search's), naming the layer and field.
    pub fn difference(&self, other: &Space) -> Option<String> {
        if self.layers.len() != other.layers.len() {
            return Some(format!("space has {} layers (log) vs {} (this search)", self.layers.len(), other.layers.len()));
        }
        self.layers.iter().zip(&other.layers).enumerate().find_map(|(i, (a, b))| a.difference(b, i))
    }

    pub fn n_genes(&self) -> usize {
        self.layers.iter().map(|l| l.genes.len()).sum()
    }

    /// The subnet a (valid) genome stands for.
    pub fn to_subnet(&self, genome: &[u16]) -> Subnet {
        let mut choices = genome.iter();
        self.layers
            .iter()
            .map(|layer| {
                let names = layer.genes.iter().map(|g| g.choices[*choices.next().expect("genome covers the space") as usize].clone());
                (layer.name.clone(), names.collect())
            })
            .collect()
    }

    /// The genome of a subnet, naming the unknown and missing layers, a missing gene or a choice not offered.
    pub fn to_genome(&self, subnet: &SubnetMap) -> Result<Genome> {
        let unknown: Vec<String> = subnet.keys().filter(|name| !self.layers.iter().any(|l| &&l.name == name)).cloned().collect();
        let missing: Vec<String> = self.layers.iter().filter(|l| !subnet.contains_key(&l.name)).map(|l| l.name.clone()).collect();
        if !unknown.is_empty() || !missing.is_empty() {
            return Err(EngineError::SubnetLayers { unknown, missing });
        }
        let mut genome = Vec::with_capacity(self.n_genes());
        for layer in &self.layers {
            let config = &subnet[&layer.name];
            for gene in &layer.genes {
                let choice = config
                    .get(&gene.gene)
                    .ok_or_else(|| EngineError::MissingGene { layer: layer.name.clone(), gene: gene.gene.clone() })?;
                let index = gene.choices.iter().position(|c| c == choice).ok_or_else(|| EngineError::UnknownChoice {
                    layer: layer.name.clone(),
                    gene: gene.gene.clone(),
                    choice: choice.clone(),
                    offered: gene.choices.clone(),
                })?;
                genome.push(index as u16);
            }
        }
        Ok(genome)
    }
}

impl FlatSpace {
    pub fn n_genes(&self) -> usize {
        self.costs.len()
    }

    pub fn cost(&self, genome: &[u16]) -> u64 {
        genome.iter().zip(&self.costs).map(|(&c, costs)| costs[c as usize]).sum()
    }

    /// Check a budget against the space: reachable at all, and wide enough for construction to always succeed.
    pub fn check_budget(&self, budget: Budget) -> Result<()> {
        if budget.min > budget.max || budget.max < self.smallest || budget.min > self.largest {
            return Err(EngineError::ImpossibleBudget { min: budget.min, max: budget.max, smallest: self.smallest, largest: self.largest });
        }
        let clipped_min = budget.min.max(self.smallest);
        let clipped_max = budget.max.min(self.largest);
        let touches_end = clipped_min == self.smallest || clipped_max == self.largest;
        if !touches_end && clipped_max - clipped_min < self.max_step {
            return Err(EngineError::NarrowBudget { min: budget.min, max: budget.max, step: self.max_step });
        }
        Ok(())
    }

    pub fn validate(&self, genome: &[u16]) -> Result<()> {
        if genome.len() != self.n_genes() {
            return Err(EngineError::BadGenome(format!("{} genes, the space has {}", genome.len(), self.n_genes())));
        }
        for (i, (&c, costs)) in genome.iter().zip(&self.costs).enumerate() {
            if c as usize >= costs.len() {
                return Err(EngineError::BadGenome(format!("gene {i} has choice {c}, it offers {}", costs.len())));
            }
        }
        Ok(())
    }

    /// The dearest subnet within `budget`: every gene at its dearest choice, then, while the count is above the
    /// budget, the dearest gene (the first such in genome order) steps down to its next cheaper choice.
    /// Deterministic; the sandwich rule of supernet training trains it (docs/method.md, section 3).
    pub fn largest_within(&self, budget: Budget) -> Result<Genome> {
        self.extreme(budget, true)
    }

    /// The cheapest subnet within `budget`, built as `largest_within` with every comparison reversed.
    pub fn smallest_within(&self, budget: Budget) -> Result<Genome> {
        self.extreme(budget, false)
    }

    fn extreme(&self, budget: Budget, largest: bool) -> Result<Genome> {
        // `better(a, b)`: a is strictly preferred; keeping the first of equals gives Python's max/min tie-breaking
        let better = |a: u64, b: u64| if largest { a > b } else { a < b };
        let first_best = |indices: &mut dyn Iterator<Item = usize>, costs: &[u64]| -> Option<usize> {
            indices.fold(None, |best: Option<usize>, i| match best {
                Some(b) if !better(costs[i], costs[b]) => Some(b),
                _ => Some(i),
            })
        };
        let mut genome: Genome = self.costs.iter().map(|c| first_best(&mut (0..c.len()), c).unwrap_or(0) as u16).collect();
        let mut total = self.cost(&genome);
        while if largest { total > budget.max } else { total < budget.min } {
            let mut best: Option<(u64, usize, usize)> = None;
            for (g, costs) in self.costs.iter().enumerate() {
                let current = costs[genome[g] as usize];
                let mut steps = (0..costs.len()).filter(|&i| better(current, costs[i]));
                let Some(next) = first_best(&mut steps, costs) else { continue };
                if best.is_none() || best.is_some_and(|(cost, _, _)| better(current, cost)) {
                    best = Some((current, g, next));
                }
            }
            let Some((current, g, next)) = best else { break };
            genome[g] = next as u16;
            total = total - current + self.costs[g][next];
        }
        if total < budget.min || total > budget.max {
            let which = if largest { "largest" } else { "smallest" };
            return Err(EngineError::NoExtreme { which: which.into(), min: budget.min, max: budget.max, reached: total });
        }
        Ok(genome)
    }
}

/// A checked space with its flat form: what the bindings and the driver work on.
#[derive(Debug, Clone)]
pub struct SearchSpace {
    space: Space,
    flat: FlatSpace,
}

impl SearchSpace {
    pub fn new(space: Space) -> Result<SearchSpace> {
        let flat = space.flatten()?;
        Ok(SearchSpace { space, flat })
    }

    pub fn space(&self) -> &Space {
        &self.space
    }

    pub fn flat(&self) -> &FlatSpace {
        &self.flat
    }

    /// The parameter count of a subnet, checking it as `Space::to_genome` does.
    pub fn count(&self, subnet: &SubnetMap) -> Result<u64> {
        Ok(self.flat.cost(&self.space.to_genome(subnet)?))
    }

    /// `n` feasible genomes, draw `i` from the random stream `index0 + i` of `seed` (docs/method.md, section 4).
    pub fn sample(&self, budget: Budget, n: usize, seed: u64, index0: usize) -> Result<Vec<Genome>> {
        use crate::rng::{stream, Purpose};
        use rayon::prelude::*;
        self.flat.check_budget(budget)?;
        let flat = &self.flat;
        Ok((0..n)
            .into_par_iter()
            .map(|i| crate::operators::sample(flat, budget, &mut stream(seed, 0, Purpose::Random, index0.wrapping_add(i))))
            .collect())
    }
}
