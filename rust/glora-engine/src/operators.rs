//! Budget-aware construction of genomes: sampling, repair, mutation and crossover.
//!
//! Genes are visited in a random order; a choice is eligible when the genes still to come can bring the total
//! into the budget (their cheapest and dearest sums bound what is reachable). Sampling draws uniformly among the
//! eligible choices; repair keeps the current choice when eligible, else takes the eligible choice closest in
//! cost. With a budget that `FlatSpace::check_budget` accepts, an eligible choice always exists, so every
//! genome built here is feasible by construction: no rejection loop.

use rand::Rng;

use crate::rng::{below, shuffle};
use crate::space::{Budget, FlatSpace, Genome};

#[derive(Clone, Copy)]
enum Mode {
    Sample,
    Repair,
}

fn construct<R: Rng>(space: &FlatSpace, budget: Budget, genome: &mut [u16], rng: &mut R, mode: Mode) {
    let n = space.n_genes();
    let mut order: Vec<u32> = (0..n as u32).collect();
    shuffle(rng, &mut order);
    let mut rest_min: u64 = space.smallest;
    let mut rest_max: u64 = space.largest;
    let mut total: u64 = 0;
    for &g in &order {
        let g = g as usize;
        rest_min -= space.min_cost[g];
        rest_max -= space.max_cost[g];
        let costs = &space.costs[g];
        let eligible = |c: u64| total + c + rest_min <= budget.max && total + c + rest_max >= budget.min;
        let current = genome[g] as usize;
        let chosen = match mode {
            Mode::Repair if current < costs.len() && eligible(costs[current]) => current,
            Mode::Sample => pick_uniform(costs, &eligible, rng),
            Mode::Repair => pick_nearest(costs, costs.get(current).copied().unwrap_or(0), &eligible, rng),
        };
        genome[g] = chosen as u16;
        total += costs[chosen];
    }
}

fn pick_uniform<R: Rng>(costs: &[u64], eligible: &impl Fn(u64) -> bool, rng: &mut R) -> usize {
    let count = costs.iter().filter(|&&c| eligible(c)).count();
    debug_assert!(count > 0, "checked budgets always leave an eligible choice");
    let k = below(rng, count.max(1));
    costs.iter().enumerate().filter(|(_, &c)| eligible(c)).nth(k).map(|(i, _)| i).unwrap_or(0)
}

fn pick_nearest<R: Rng>(costs: &[u64], target: u64, eligible: &impl Fn(u64) -> bool, rng: &mut R) -> usize {
    let best = costs.iter().filter(|&&c| eligible(c)).map(|&c| c.abs_diff(target)).min().unwrap_or(0);
    let ties: Vec<usize> = (0..costs.len()).filter(|&i| eligible(costs[i]) && costs[i].abs_diff(target) == best).collect();
    if ties.is_empty() {
        return 0;
    }
    ties[below(rng, ties.len())]
}

/// A feasible genome drawn with budget-aware sampling.
pub fn sample<R: Rng>(space: &FlatSpace, budget: Budget, rng: &mut R) -> Genome {
    let mut genome = vec![0u16; space.n_genes()];
    construct(space, budget, &mut genome, rng, Mode::Sample);
    genome
}

pub fn is_feasible(space: &FlatSpace, budget: Budget, genome: &[u16]) -> bool {
    let cost = space.cost(genome);
    budget.min <= cost && cost <= budget.max
}

/// Make `genome` feasible, changing as few genes as the construction allows; a feasible genome is left as is.
pub fn repair<R: Rng>(space: &FlatSpace, budget: Budget, genome: &mut [u16], rng: &mut R) {
    if !is_feasible(space, budget, genome) {
        construct(space, budget, genome, rng, Mode::Repair);
    }
}

/// `parent` with each gene redrawn with probability `prob` (uniformly over its choices), not yet repaired.
pub fn redraw<R: Rng>(space: &FlatSpace, parent: &[u16], prob: f64, rng: &mut R) -> Genome {
    let mut child = parent.to_vec();
    for (g, costs) in space.costs.iter().enumerate() {
        if rng.gen::<f64>() < prob {
            child[g] = below(rng, costs.len()) as u16;
        }
    }
    child
}

/// Each gene from either parent with probability 1/2, not yet repaired.
pub fn cross<R: Rng>(a: &[u16], b: &[u16], rng: &mut R) -> Genome {
    a.iter().zip(b).map(|(&x, &y)| if rng.gen::<bool>() { x } else { y }).collect()
}

/// Redraw each gene with probability `prob` (uniformly over its choices), then repair.
pub fn mutate<R: Rng>(space: &FlatSpace, budget: Budget, parent: &[u16], prob: f64, rng: &mut R) -> Genome {
    let mut child = redraw(space, parent, prob, rng);
    repair(space, budget, &mut child, rng);
    child
}

/// Take each gene from either parent with probability 1/2, then repair.
pub fn crossover<R: Rng>(space: &FlatSpace, budget: Budget, a: &[u16], b: &[u16], rng: &mut R) -> Genome {
    let mut child = cross(a, b, rng);
    repair(space, budget, &mut child, rng);
    child
}
