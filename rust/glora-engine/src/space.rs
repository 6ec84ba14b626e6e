//! The search space: layers of genes, each gene a list of choices with a parameter cost.

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

/// One gene (a support tensor of one layer): its choice names and their parameter costs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gene {
    pub gene: String,
    pub choices: Vec<String>,
    pub costs: Vec<u64>,
}

/// One layer: its name, its shape as a matrix (informational, kept in logs) and its genes.
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

/// Allowed total parameter counts, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    pub min: u64,
    pub max: u64,
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
        let min_cost: Vec<u64> = costs.iter().map(|c| *c.iter().min().unwrap()).collect();
        let max_cost: Vec<u64> = costs.iter().map(|c| *c.iter().max().unwrap()).collect();
        let max_step = costs
            .iter()
            .map(|c| {
                let mut sorted = c.clone();
                sorted.sort_unstable();
                sorted.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0)
            })
            .max()
            .unwrap_or(0);
        Ok(FlatSpace {
            smallest: min_cost.iter().sum(),
            largest: max_cost.iter().sum(),
            costs,
            min_cost,
            max_cost,
            max_step,
        })
    }

    pub fn n_genes(&self) -> usize {
        self.layers.iter().map(|l| l.genes.len()).sum()
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
}
