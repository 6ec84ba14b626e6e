//! Operators that spend the budget where it pays (docs/method.md, section 4).
//!
//! An additive estimate of each choice's worth is fitted to every score seen so far: `score ~ mean + sum over
//! genes of worth[gene][choice]`, by ridge least squares (a few conjugate-gradient steps, warm-started from the
//! last generation's fit), deterministic and cheap next to one fitness call. With it, a child that breaks the budget is
//! repaired by the moves that lose the least estimated worth per parameter saved, a child that leaves budget
//! unused takes the moves that gain the most per parameter added, and the elite is improved by its best-estimated
//! single-gene changes (a local step). The estimate only proposes: every candidate is still scored by the fitness.

use std::cmp::Ordering;

use rayon::prelude::*;

use crate::operators;
use crate::search::Evaluated;
use crate::space::{Budget, FlatSpace, Genome};

/// Conjugate-gradient iterations per fit, at most.
const ITERATIONS: usize = 30;
/// The squared residual, relative to the right-hand side's, at which the fit stops early.
const TOLERANCE: f64 = 1e-8;
/// Greedy passes per repair, at most.
const PASSES: usize = 8;
/// Ridge weight: keeps the least-squares problem well posed (each gene's one-hot columns sum to the intercept's).
const RIDGE: f64 = 1e-3;

/// The fitted worth of every choice of every gene, in score units: gene `g`'s choice `c` at `w[offsets[g] + c]`.
pub struct ValueModel {
    offsets: Vec<usize>,
    w: Vec<f64>,
}

/// One change of one gene, with its estimated gain and the parameters it adds (negative: saves).
#[derive(Clone, Copy)]
struct Move {
    gene: usize,
    choice: u16,
    gain: f64,
    added: i128,
}

impl ValueModel {
    /// The ridge least-squares fit of the centred scores on the one-hot choices of the evaluated genomes with
    /// finite scores, approximated by at most `ITERATIONS` conjugate-gradient steps on the normal equations,
    /// started from `previous` (the last generation's fit); its sums run in a fixed order, so the fit is the same on
    /// any thread count. With fewer
    /// than two such genomes, or scores so large that the fit overflows, every worth is zero.
    pub fn fit(flat: &FlatSpace, evaluated: &[Evaluated], previous: Option<&ValueModel>) -> ValueModel {
        let offsets: Vec<usize> = flat.costs.iter().scan(0, |at, c| Some(std::mem::replace(at, *at + c.len()))).collect();
        let width = flat.costs.iter().map(Vec::len).sum();
        let mut w = previous.map_or_else(|| vec![0.0; width], |p| p.w.clone());
        let rows: Vec<&Evaluated> = evaluated.iter().filter(|e| e.score.is_finite()).collect();
        if rows.len() < 2 {
            return ValueModel { offsets, w: vec![0.0; width] };
        }
        let genes = flat.n_genes();
        let design: Vec<usize> = rows.iter().flat_map(|e| e.genome.iter().zip(&offsets).map(|(&c, &at)| at + c as usize)).collect();
        // each column's rows, ascending: the normal-equation product sums them in a fixed order, in parallel
        let mut by_column: Vec<Vec<usize>> = vec![Vec::new(); width];
        for (row, cols) in design.chunks_exact(genes).enumerate() {
            cols.iter().for_each(|&j| by_column[j].push(row));
        }
        let normal = |v: &[f64]| -> Vec<f64> {
            let dots: Vec<f64> = design.par_chunks_exact(genes).map(|cols| cols.iter().map(|&j| v[j]).sum()).collect();
            by_column.par_iter().zip(v).map(|(rows, x)| rows.iter().fold(RIDGE * x, |acc, &row| acc + dots[row])).collect()
        };
        let mean = rows.iter().map(|e| e.score).sum::<f64>() / rows.len() as f64;
        let mut r = vec![0.0; width];
        for (cols, e) in design.chunks_exact(genes).zip(&rows) {
            cols.iter().for_each(|&j| r[j] += e.score - mean);
        }
        let tolerance = TOLERANCE * r.iter().map(|x| x * x).sum::<f64>();
        r.iter_mut().zip(normal(&w)).for_each(|(x, a)| *x -= a);
        let mut p = r.clone();
        let mut rr: f64 = r.iter().map(|x| x * x).sum();
        for _ in 0..ITERATIONS {
            if rr <= tolerance {
                break;
            }
            let q = normal(&p);
            let alpha = rr / p.iter().zip(&q).map(|(a, b)| a * b).sum::<f64>();
            w.iter_mut().zip(&p).for_each(|(x, d)| *x += alpha * d);
            r.iter_mut().zip(&q).for_each(|(x, d)| *x -= alpha * d);
            let next: f64 = r.iter().map(|x| x * x).sum();
            let beta = next / rr;
            p.iter_mut().zip(&r).for_each(|(d, x)| *d = x + beta * *d);
            rr = next;
        }
        if !w.iter().all(|x| x.is_finite()) {
            w.iter_mut().for_each(|x| *x = 0.0);
        }
        ValueModel { offsets, w }
    }

    fn worth(&self, gene: usize) -> &[f64] {
        let at = self.offsets[gene];
        let end = self.offsets.get(gene + 1).copied().unwrap_or(self.w.len());
        &self.w[at..end]
    }

    /// The estimated score of `genome`, up to the fitted mean.
    pub fn estimate(&self, genome: &[u16]) -> f64 {
        genome.iter().enumerate().map(|(g, &c)| self.worth(g)[c as usize]).sum()
    }

    /// The changes of gene `g` of `genome` to each of its other choices.
    fn moves_of<'a>(&'a self, flat: &'a FlatSpace, genome: &[u16], g: usize) -> impl Iterator<Item = Move> + 'a {
        let cur = genome[g] as usize;
        let (costs, worth) = (&flat.costs[g], self.worth(g));
        (0..costs.len()).filter(move |&c| c != cur).map(move |c| Move {
            gene: g,
            choice: c as u16,
            gain: worth[c] - worth[cur],
            added: i128::from(costs[c]) - i128::from(costs[cur]),
        })
    }

    /// One greedy pass of `phase`: every gene's best move by the phase's key, taken in key order while each still
    /// helps and keeps the cost within what the phase allows; returns the new cost and whether anything changed.
    fn pass(&self, flat: &FlatSpace, genome: &mut [u16], mut cost: i128, phase: Phase, (min, max): (i128, i128)) -> (i128, bool) {
        let key = |m: &Move| -> Option<(bool, f64)> {
            match phase {
                Phase::Shrink if m.added < 0 && cost + m.added >= min => Some((m.gain >= 0.0, m.gain / -m.added as f64)),
                Phase::Grow if m.added > 0 && cost + m.added <= max => Some((m.gain >= 0.0, m.gain / m.added as f64)),
                Phase::Fill if m.gain > 0.0 && (min..=max).contains(&(cost + m.added)) => {
                    Some((m.added <= 0, if m.added <= 0 { m.gain } else { m.gain / m.added as f64 }))
                }
                _ => None,
            }
        };
        let mut best: Vec<((bool, f64), Move)> = (0..genome.len())
            .filter_map(|g| {
                self.moves_of(flat, genome, g).filter_map(|m| key(&m).map(|k| (k, m))).fold(
                    None,
                    |acc: Option<((bool, f64), Move)>, (k, m)| match acc {
                        Some((bk, _)) if order(k, bk) != Ordering::Greater => acc,
                        _ => Some((k, m)),
                    },
                )
            })
            .collect();
        best.sort_by(|a, b| order(b.0, a.0));
        let mut changed = false;
        for (_, m) in best {
            let done = match phase {
                Phase::Shrink => cost <= max,
                Phase::Grow => cost >= min,
                Phase::Fill => false,
            };
            if done {
                break;
            }
            if (min..=max).contains(&(cost + m.added))
                || (phase == Phase::Shrink && cost + m.added >= min)
                || (phase == Phase::Grow && cost + m.added <= max)
            {
                genome[m.gene] = m.choice;
                cost += m.added;
                changed = true;
            }
        }
        (cost, changed)
    }

    /// Make `genome` feasible by the moves worth the most per parameter, then (with `fill`) take the moves the
    /// estimate says gain while it stays within the budget, a few greedy passes at most; the construction's repair
    /// finishes anything the greedy passes cannot, so the result is always feasible.
    pub fn repair<R: rand::Rng>(&self, flat: &FlatSpace, budget: Budget, genome: &mut [u16], fill: bool, rng: &mut R) {
        let bounds = (i128::from(budget.min), i128::from(budget.max));
        let mut cost = i128::from(flat.cost(genome));
        for _ in 0..PASSES {
            let phase = if cost > bounds.1 {
                Phase::Shrink
            } else if cost < bounds.0 {
                Phase::Grow
            } else if fill {
                Phase::Fill
            } else {
                break;
            };
            let (next, changed) = self.pass(flat, genome, cost, phase, bounds);
            cost = next;
            if !changed {
                break;
            }
        }
        operators::repair(flat, budget, genome, rng);
    }

    /// Children of `elite`, best estimated first, each from one change of one gene then repaired (and with `fill`
    /// filled) toward worth per parameter, so a downgrade can pay for upgrades elsewhere; kept when estimated better
    /// than `elite`. The changes tried are the `seeds` with the largest gains and the `seeds` cheapest downgrades per
    /// parameter.
    pub fn local_moves<R: rand::Rng>(
        &self,
        flat: &FlatSpace,
        budget: Budget,
        elite: &[u16],
        seeds: usize,
        fill: bool,
        rng: &mut R,
    ) -> Vec<Genome> {
        let base = self.estimate(elite);
        let all: Vec<Move> = (0..elite.len()).flat_map(|g| self.moves_of(flat, elite, g)).collect();
        let mut gains: Vec<&Move> = all.iter().filter(|m| m.gain > 0.0).collect();
        gains.sort_by(|a, b| b.gain.total_cmp(&a.gain));
        let mut savings: Vec<&Move> = all.iter().filter(|m| m.added < 0 && m.gain <= 0.0).collect();
        savings.sort_by(|a, b| (b.gain / -b.added as f64).total_cmp(&(a.gain / -a.added as f64)));
        let mut children: Vec<(f64, Genome)> = gains
            .into_iter()
            .take(seeds)
            .chain(savings.into_iter().take(seeds))
            .map(|m| {
                let mut child = elite.to_vec();
                child[m.gene] = m.choice;
                self.repair(flat, budget, &mut child, fill, rng);
                (self.estimate(&child), child)
            })
            .filter(|(estimate, child)| *estimate > base && child.as_slice() != elite)
            .collect();
        children.sort_by(|a, b| b.0.total_cmp(&a.0));
        children.into_iter().map(|(_, child)| child).collect()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Over the budget: save parameters, losing the least worth per parameter saved.
    Shrink,
    /// Under the budget's minimum: add parameters, gaining the most worth per parameter added.
    Grow,
    /// Within the budget: take gains, free ones first, then the most worth per parameter added.
    Fill,
}

/// The order of (preferred, ratio) keys: preferred first, then by ratio.
fn order(a: (bool, f64), b: (bool, f64)) -> Ordering {
    a.0.cmp(&b.0).then(a.1.total_cmp(&b.1))
}
