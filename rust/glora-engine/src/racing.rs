//! Racing a generation's candidates (docs/method.md, section 4): each is scored on a growing share of the fitness's
//! examples (a quarter, a half, then all of them, in one seeded order fixed for the whole search) and stopped as soon
//! as its scores, paired example by example with those of the bar subnet (the worst parent, the one a candidate has
//! to beat to become a parent), put its mean on all the examples below the bar's by `Z` standard errors.
//!
//! A stopped candidate keeps the mean of the examples it was scored on: the guided operators learn from it, but it
//! never becomes a parent nor the best. A candidate raced to the end keeps its score on every example, the bar of
//! later generations. Each decision depends only on the candidate's own scores and on the bar fixed when its
//! generation began, so the same scores give the same search, and a resumed log replays it exactly.

use crate::driver::RunError;
use crate::error::EngineError;
use crate::rng::{shuffle, stream, Purpose};
use crate::search::{NonFinite, Outcome};
use crate::space::Genome;

/// The shares of the examples after which a candidate may be stopped; the last stage scores the rest.
pub const CHECKPOINTS: [f64; 2] = [0.25, 0.5];
/// How many standard errors below the bar a candidate's estimate must lie to be stopped (one-sided: about 2.3 %
/// of wrong stops per look for normal errors, up to about 4.5 % over the two looks; fewer where the differences
/// are far from normal, as 0/1 accuracy differences on a few examples are).
pub const Z: f64 = 2.0;

/// The examples each stage scores: a seeded order of all of them cut at the checkpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    order: Vec<usize>,
    ends: Vec<usize>,
}

impl Plan {
    /// The stages for `examples` examples under `seed`.
    pub fn new(examples: usize, seed: u64) -> Plan {
        let mut order: Vec<usize> = (0..examples).collect();
        shuffle(&mut stream(seed, 0, Purpose::Racing, 0), &mut order);
        let mut ends: Vec<usize> = CHECKPOINTS.iter().map(|share| (share * examples as f64).ceil() as usize).collect();
        ends.push(examples);
        ends.retain(|&end| end > 0);
        ends.dedup();
        Plan { order, ends }
    }

    pub fn examples(&self) -> usize {
        self.order.len()
    }

    pub fn stages(&self) -> usize {
        self.ends.len()
    }

    /// The examples stage `stage` scores (indices into the fitness's examples).
    pub fn stage(&self, stage: usize) -> &[usize] {
        let start = if stage == 0 { 0 } else { self.ends[stage - 1] };
        &self.order[start..self.ends[stage]]
    }

    /// The examples scored by the end of stage `stage`.
    fn seen(&self, stage: usize) -> &[usize] {
        &self.order[..self.ends[stage]]
    }
}

/// Whether a candidate's scores on the `seen` examples (of `n`) put its mean on all `n` below the bar's by `Z`
/// standard errors of the paired differences (with the finite-population correction: the mean over all `n` is
/// known exactly once all are seen).
pub fn behind(candidate: &[f64], bar: &[f64], seen: &[usize], n: usize) -> bool {
    let m = seen.len();
    if m < 2 || m >= n {
        return false;
    }
    let diffs: Vec<f64> = seen.iter().map(|&i| candidate[i] - bar[i]).collect();
    let mean = diffs.iter().sum::<f64>() / m as f64;
    let var = diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (m - 1) as f64;
    let se = (var / m as f64 * (1.0 - m as f64 / n as f64)).sqrt();
    mean + Z * se < 0.0
}

/// Race `genomes` through the stages of `plan` against `bar` (without one, every candidate is scored on all the
/// examples at once): `per_example(genomes, examples)` returns each still-running genome's score on each of
/// `examples`.
pub fn race<E>(
    plan: &Plan,
    bar: Option<&[f64]>,
    nonfinite: NonFinite,
    genomes: &[Genome],
    mut per_example: impl FnMut(&[Genome], &[usize]) -> Result<Vec<Vec<f64>>, RunError<E>>,
) -> Result<Vec<Outcome>, RunError<E>> {
    let n = plan.examples();
    let mut scores = vec![vec![f64::NAN; n]; genomes.len()];
    let mut outcomes: Vec<Option<Outcome>> = vec![None; genomes.len()];
    let stages = if bar.is_some() { plan.stages() } else { 1 };
    for stage in 0..stages {
        let running: Vec<usize> = (0..genomes.len()).filter(|&i| outcomes[i].is_none()).collect();
        if running.is_empty() {
            break;
        }
        let (examples, seen) = if bar.is_some() { (plan.stage(stage), plan.seen(stage)) } else { (&plan.order[..], &plan.order[..]) };
        let batch: Vec<Genome> = running.iter().map(|&i| genomes[i].clone()).collect();
        let rows = per_example(&batch, examples)?;
        if rows.len() != batch.len() {
            return Err(EngineError::WrongScoreCount { expected: batch.len(), got: rows.len() }.into());
        }
        for (position, (row, &i)) in rows.iter().zip(&running).enumerate() {
            if row.len() != examples.len() {
                return Err(EngineError::WrongExampleCount { index: position, expected: examples.len(), got: row.len() }.into());
            }
            for (&example, &value) in examples.iter().zip(row) {
                scores[i][example] = value;
            }
            if let Some(&value) = row.iter().find(|v| !v.is_finite()) {
                if nonfinite == NonFinite::Error {
                    return Err(EngineError::NonFiniteScore { index: position, value }.into());
                }
                outcomes[i] = Some(Outcome { score: f64::NEG_INFINITY, stopped_after: Some(seen.len()), per_example: None });
            } else if bar.is_some_and(|bar| behind(&scores[i], bar, seen, n)) {
                let mean = seen.iter().map(|&e| scores[i][e]).sum::<f64>() / seen.len() as f64;
                outcomes[i] = Some(Outcome { score: mean, stopped_after: Some(seen.len()), per_example: None });
            }
        }
    }
    Ok(outcomes
        .into_iter()
        .zip(scores)
        .map(|(outcome, scores)| {
            outcome.unwrap_or_else(|| {
                let score = plan.order.iter().map(|&e| scores[e]).sum::<f64>() / n as f64;
                Outcome { score, stopped_after: None, per_example: Some(scores) }
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stages_cover_every_example_once_for_any_count() {
        for n in 1..60 {
            let plan = Plan::new(n, 7);
            let mut all: Vec<usize> = (0..plan.stages()).flat_map(|s| plan.stage(s).to_vec()).collect();
            assert!(plan.stage(0).len() >= n / 4 && (0..plan.stages()).all(|s| !plan.stage(s).is_empty()));
            all.sort_unstable();
            assert_eq!(all, (0..n).collect::<Vec<_>>());
        }
        assert_eq!(Plan::new(200, 1), Plan::new(200, 1));
        assert_ne!(Plan::new(200, 1).stage(0), Plan::new(200, 2).stage(0));
    }

    #[test]
    fn behind_needs_the_paired_mean_two_standard_errors_below_the_bar() {
        let bar = vec![0.0; 100];
        let seen: Vec<usize> = (0..25).collect();
        // differences alternate d - 1 and d + 1: standard deviation about 1, standard error about 0.18 with the
        // finite-population correction (25 of 100)
        let candidate = |d: f64| (0..100).map(|i| d + if i % 2 == 0 { -1.0 } else { 1.0 }).collect::<Vec<f64>>();
        assert!(behind(&candidate(-0.5), &bar, &seen, 100));
        assert!(!behind(&candidate(-0.3), &bar, &seen, 100));
        assert!(!behind(&candidate(0.5), &bar, &seen, 100));
        // every example seen: the whole-data means decide, not the test; one example: no estimate of the spread
        assert!(!behind(&candidate(-5.0), &bar, &(0..100).collect::<Vec<_>>(), 100));
        assert!(!behind(&candidate(-5.0), &bar, &[0], 100));
        // equal to the bar on every example: never behind; uniformly below: behind
        assert!(!behind(&bar, &bar, &seen, 100));
        assert!(behind(&vec![-0.01; 100], &bar, &seen, 100));
    }

    #[test]
    fn a_race_stops_the_clearly_worse_and_scores_the_rest_on_every_example() {
        let plan = Plan::new(40, 3);
        let bar: Vec<f64> = (0..40).map(|i| (i % 7) as f64).collect();
        let genomes: Vec<Genome> = vec![vec![0], vec![1], vec![2]];
        let offset = [0.5, -3.0, 0.0];
        let mut asked = Vec::new();
        let outcomes = race::<()>(&plan, Some(&bar), NonFinite::Error, &genomes, |batch, examples| {
            asked.push((batch.len(), examples.len()));
            Ok(batch.iter().map(|g| examples.iter().map(|&e| bar[e] + offset[g[0] as usize]).collect()).collect())
        })
        .unwrap();
        assert_eq!(asked, vec![(3, 10), (2, 10), (2, 20)]);
        assert_eq!(outcomes[1].stopped_after, Some(10));
        let expected = plan.stage(0).iter().map(|&e| bar[e] - 3.0).sum::<f64>() / 10.0;
        assert!(outcomes[1].per_example.is_none() && outcomes[1].score == expected);
        for i in [0, 2] {
            let scores = outcomes[i].per_example.as_ref().unwrap();
            assert!(outcomes[i].stopped_after.is_none() && scores.iter().zip(&bar).all(|(s, b)| s - b == offset[i]));
        }
        // without a bar every candidate is scored on all the examples in one call
        asked.clear();
        let all = race::<()>(&plan, None, NonFinite::Error, &genomes, |batch, examples| {
            asked.push((batch.len(), examples.len()));
            Ok(batch.iter().map(|_| vec![0.0; examples.len()]).collect())
        })
        .unwrap();
        assert_eq!(asked, vec![(3, 40)]);
        assert!(all.iter().all(|o| o.stopped_after.is_none()));
    }
}
