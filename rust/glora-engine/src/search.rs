//! The evolutionary search as an ask / tell state machine (reference defaults from AutoFormer / NOAH).
//!
//! `ask` returns the next batch of new, feasible, never-evaluated genomes; `tell` takes their scores. The caller
//! owns evaluation, so the engine never calls out and a search can be replayed from recorded scores.

use std::collections::HashSet;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::guided::ValueModel;
use crate::operators::{cross, crossover, mutate, redraw, sample};
use crate::pareto::{self, Point};
use crate::rng::{below, stream, Purpose};
use crate::space::{Budget, FlatSpace, Genome, Space};

/// The largest population, parent, mutant, crossover and generation count a search (or a log header) may give.
pub const MAX_COUNT: usize = 1_000_000;
/// The most candidates a generation tries per wanted one (a log header's `attempts_per_candidate`).
pub const MAX_ATTEMPTS: usize = 1_000;

/// A count named `name` checked against `[least, MAX_COUNT]`; `shown` is the value as given.
pub fn check_count(name: &str, value: i128, least: usize, shown: &str) -> Result<usize> {
    let refuse = |allowed: String| Err(EngineError::BadParameter { name: name.into(), value: shown.into(), allowed });
    if value < least as i128 {
        refuse(if least > 0 { "a positive integer".into() } else { "a non-negative integer".into() })
    } else if value > MAX_COUNT as i128 {
        refuse(format!("at most {MAX_COUNT}"))
    } else {
        Ok(value as usize)
    }
}

/// How parents are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// The top `parents` by fitness (the reference algorithm).
    Fitness,
    /// NSGA-II rank and crowding over fitness and parameter count.
    Pareto,
}

/// How children are made and repaired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operators {
    /// The reference algorithm's: random redraws and uniform crossover, repaired by re-drawing genes in a random
    /// order (a log without the field is one of these).
    Reference,
    /// Guided by an additive estimate of each choice's worth (`crate::guided`): repair and filling toward worth per
    /// parameter, and a local step on the elite.
    Guided,
}

fn reference_operators() -> Operators {
    Operators::Reference
}

/// What to do with a NaN or infinite score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NonFinite {
    Error,
    Worst,
}

/// Every number of the algorithm; the defaults are the reference's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Params {
    pub population: usize,
    pub parents: usize,
    pub mutants: usize,
    pub mutation_prob: f64,
    pub crossovers: usize,
    pub generations: usize,
    pub objective: Objective,
    pub nonfinite: NonFinite,
    /// Candidates tried per wanted one before a generation gives up filling (duplicates are skipped).
    pub attempts_per_candidate: usize,
    #[serde(default = "reference_operators")]
    pub operators: Operators,
    /// With a count of the fitness's examples, candidates are raced on growing shares of them (`crate::racing`);
    /// a log without the field did not race.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub racing: Option<usize>,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            population: 50,
            parents: 10,
            mutants: 25,
            mutation_prob: 0.2,
            crossovers: 25,
            generations: 20,
            objective: Objective::Fitness,
            nonfinite: NonFinite::Error,
            attempts_per_candidate: 10,
            operators: Operators::Guided,
            racing: None,
        }
    }
}

impl Params {
    pub fn validate(&self) -> Result<()> {
        let counts = [
            ("population", self.population, 1),
            ("parents", self.parents, 1),
            ("mutants", self.mutants, 0),
            ("crossovers", self.crossovers, 0),
            ("generations", self.generations, 1),
        ];
        for (name, value, least) in counts {
            check_count(name, value as i128, least, &value.to_string())?;
        }
        if !(0.0..=1.0).contains(&self.mutation_prob) {
            let value = format!("{:?}", self.mutation_prob);
            return Err(EngineError::BadParameter { name: "mutation_prob".into(), value, allowed: "a number in [0, 1]".into() });
        }
        if let Some(examples) = self.racing {
            check_count("racing", examples as i128, 1, &examples.to_string())?;
            if self.objective != Objective::Fitness {
                let allowed = "None with objective \"pareto\" (racing stops candidates below the parents' bar)".into();
                return Err(EngineError::BadParameter { name: "racing".into(), value: examples.to_string(), allowed });
            }
        }
        if !(1..=MAX_ATTEMPTS).contains(&self.attempts_per_candidate) {
            let (value, allowed) = (self.attempts_per_candidate.to_string(), format!("an integer in [1, {MAX_ATTEMPTS}]"));
            return Err(EngineError::BadParameter { name: "attempts_per_candidate".into(), value, allowed });
        }
        Ok(())
    }
}

/// One evaluated genome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluated {
    pub generation: usize,
    pub index: usize,
    pub genome: Genome,
    pub score: f64,
    pub params: u64,
    /// Raced and stopped after this many examples (its score is their mean): never a parent nor the best.
    pub stopped_after: Option<usize>,
    /// Its score on each example when raced to the end: the bar later candidates race against.
    pub per_example: Option<Vec<f64>>,
}

impl Evaluated {
    /// Scored on all the examples: a possible parent and best.
    pub fn complete(&self) -> bool {
        self.stopped_after.is_none()
    }
}

/// A candidate's evaluation as the engine is told it.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub score: f64,
    /// Stopped by racing after this many examples.
    pub stopped_after: Option<usize>,
    /// Raced to the end: its score on each example.
    pub per_example: Option<Vec<f64>>,
}

impl Outcome {
    /// A score on the whole data (a search that does not race).
    pub fn whole(score: f64) -> Outcome {
        Outcome { score, stopped_after: None, per_example: None }
    }

    /// What is wrong with this outcome in a search racing over `racing` examples (None: not raced), if anything
    /// (`outcome_problem`).
    pub fn problem(&self, racing: Option<usize>) -> Option<String> {
        outcome_problem(racing, self.score, self.stopped_after, self.per_example.as_deref())
    }
}

/// What is wrong with an evaluation's outcome in a search racing over `racing` examples (None: not raced), if
/// anything: raced outcomes only in a raced search, each either stopped within the examples or scored finitely on
/// every one of them. The one rule `Search::tell_outcomes` and the log reader apply.
pub fn outcome_problem(racing: Option<usize>, score: f64, stopped_after: Option<usize>, per_example: Option<&[f64]>) -> Option<String> {
    match (racing, stopped_after, per_example) {
        (None, None, None) => None,
        (None, _, _) => Some("a raced evaluation in a search that does not race".into()),
        (Some(_), None, None) => Some("an evaluation neither stopped nor scored per example in a raced search".into()),
        (Some(_), Some(_), Some(_)) => Some("an evaluation both stopped and scored on every example".into()),
        (Some(n), Some(m), None) if m == 0 || m > n => Some(format!("stopped_after {m} is not within 1..={n}")),
        (Some(_), Some(_), None) => None,
        (Some(n), None, Some(scores)) if scores.len() != n => {
            Some(format!("per_example holds {} scores, not one for each of the {n} examples", scores.len()))
        }
        (Some(_), None, Some(scores)) if !score.is_finite() || scores.iter().any(|s| !s.is_finite()) => {
            Some("an evaluation scored on every example has a non-finite score".into())
        }
        (Some(_), None, Some(_)) => None,
    }
}

/// What one generation produced. A generation of only non-finite scores (with `nonfinite` "worst") has best, mean and best so far minus infinity,
/// which the log writes as null and reads back as minus infinity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationSummary {
    pub generation: usize,
    pub evaluated: usize,
    #[serde(deserialize_with = "crate::log::score_or_worst")]
    pub best: f64,
    #[serde(deserialize_with = "crate::log::score_or_worst")]
    pub mean: f64,
    #[serde(deserialize_with = "crate::log::score_or_worst")]
    pub best_so_far: f64,
}

/// What racing saved in a raced search.
#[derive(Debug, Clone, PartialEq)]
pub struct RacingAccount {
    /// The examples the fitness scores each candidate on.
    pub examples: usize,
    /// Candidates stopped before the last example (a non-finite score stops one wherever it appears).
    pub stopped: usize,
    /// The examples scored over all evaluations, as a share of scoring every candidate on all of them.
    pub examples_share: f64,
}

pub struct Search {
    flat: FlatSpace,
    budget: Budget,
    params: Params,
    seed: u64,
    evaluated: Vec<Evaluated>,
    seen: HashSet<Genome>,
    generation: usize,
    pending: Option<Vec<Genome>>,
    history: Vec<GenerationSummary>,
    exhausted: bool,
    /// The guided operators' worth estimate, refitted (warm-started) before each generation's offspring.
    model: Option<ValueModel>,
}

impl Search {
    pub fn new(space: &Space, budget: Budget, params: Params, seed: u64) -> Result<Search> {
        params.validate()?;
        let flat = space.flatten()?;
        flat.check_budget(budget)?;
        Ok(Search {
            flat,
            budget,
            params,
            seed,
            evaluated: Vec::new(),
            seen: HashSet::new(),
            generation: 0,
            pending: None,
            history: Vec::new(),
            exhausted: false,
            model: None,
        })
    }

    pub fn flat(&self) -> &FlatSpace {
        &self.flat
    }

    pub fn generation(&self) -> usize {
        self.generation
    }

    pub fn evaluated(&self) -> &[Evaluated] {
        &self.evaluated
    }

    /// What the search does with a non-finite score.
    pub fn nonfinite(&self) -> NonFinite {
        self.params.nonfinite
    }

    pub fn history(&self) -> &[GenerationSummary] {
        &self.history
    }

    pub fn is_done(&self) -> bool {
        self.pending.is_none() && (self.exhausted || self.generation >= self.params.generations)
    }

    /// The next batch to evaluate, or None when the search is over. Asking again before `tell` returns the same.
    pub fn ask(&mut self) -> Option<&[Genome]> {
        if self.pending.is_none() && !self.is_done() {
            if self.generation > 0 && self.params.operators == Operators::Guided {
                self.model = Some(ValueModel::fit(&self.flat, &self.evaluated, self.model.as_ref()));
            }
            let batch = if self.generation == 0 { self.random_fill(Vec::new()) } else { self.offspring() };
            if batch.is_empty() {
                self.exhausted = true;
            } else {
                self.pending = Some(batch);
            }
        }
        self.pending.as_deref()
    }

    /// Scores for the batch last asked, in its order (a search that does not race).
    pub fn tell(&mut self, scores: &[f64]) -> Result<GenerationSummary> {
        self.tell_outcomes(scores.iter().map(|&s| Outcome::whole(s)).collect())
    }

    /// Outcomes for the batch last asked, in its order: whole scores, or a raced search's outcomes.
    pub fn tell_outcomes(&mut self, outcomes: Vec<Outcome>) -> Result<GenerationSummary> {
        let batch = self.pending.as_ref().ok_or(EngineError::NothingAsked)?;
        if outcomes.len() != batch.len() {
            return Err(EngineError::WrongScoreCount { expected: batch.len(), got: outcomes.len() });
        }
        let mut clean = Vec::with_capacity(outcomes.len());
        for (index, mut outcome) in outcomes.into_iter().enumerate() {
            self.check_outcome(index, &outcome)?;
            if !outcome.score.is_finite() {
                if self.params.nonfinite == NonFinite::Worst {
                    outcome.score = f64::NEG_INFINITY;
                } else {
                    return Err(EngineError::NonFiniteScore { index, value: outcome.score });
                }
            }
            clean.push(outcome);
        }
        let batch = self.pending.take().unwrap();
        let first = self.evaluated.len();
        for (index, (genome, outcome)) in batch.into_iter().zip(clean).enumerate() {
            let params = self.flat.cost(&genome);
            self.seen.insert(genome.clone());
            let Outcome { score, stopped_after, per_example } = outcome;
            self.evaluated.push(Evaluated { generation: self.generation, index, genome, score, params, stopped_after, per_example });
        }
        let told = &self.evaluated[first..];
        let finite: Vec<f64> = told.iter().map(|e| e.score).filter(|s| s.is_finite()).collect();
        let best_of =
            |evaluated: &[Evaluated]| evaluated.iter().filter(|e| e.complete()).map(|e| e.score).fold(f64::NEG_INFINITY, f64::max);
        let summary = GenerationSummary {
            generation: self.generation,
            evaluated: told.len(),
            best: best_of(told),
            mean: if finite.is_empty() { f64::NEG_INFINITY } else { finite.iter().sum::<f64>() / finite.len() as f64 },
            best_so_far: best_of(&self.evaluated),
        };
        self.history.push(summary.clone());
        self.generation += 1;
        Ok(summary)
    }

    fn check_outcome(&self, index: usize, outcome: &Outcome) -> Result<()> {
        outcome.problem(self.params.racing).map_or(Ok(()), |reason| Err(EngineError::BadOutcome { index, reason }))
    }

    /// What racing saved so far (None when the search does not race).
    pub fn racing_account(&self) -> Option<RacingAccount> {
        let examples = self.params.racing?;
        let stopped = self.evaluated.iter().filter(|e| e.stopped_after.is_some_and(|m| m < examples)).count();
        let seen: usize = self.evaluated.iter().map(|e| e.stopped_after.unwrap_or(examples)).sum();
        let total = self.evaluated.len() * examples;
        Some(RacingAccount { examples, stopped, examples_share: if total == 0 { 1.0 } else { seen as f64 / total as f64 } })
    }

    /// The per-example scores a raced candidate has to beat: the worst parent's, once there are as many
    /// candidates raced to the end as parents (before, every candidate becomes a parent).
    pub fn bar(&self) -> Option<&[f64]> {
        self.params.racing?;
        let order = self.ranked();
        if order.len() < self.params.parents {
            return None;
        }
        self.evaluated[order[self.params.parents - 1]].per_example.as_deref()
    }

    /// Indices of the complete evaluations, best first (earliest among equal scores).
    fn ranked(&self) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.evaluated.len()).filter(|&i| self.evaluated[i].complete()).collect();
        idx.sort_by(|&a, &b| self.evaluated[b].score.total_cmp(&self.evaluated[a].score).then(a.cmp(&b)));
        idx
    }

    /// Candidates from `make(index)` for indices 0, 1, 2, ..., built in parallel chunks, keeping new distinct ones
    /// in index order until `want` are kept or the attempts run out. The result does not depend on thread count.
    fn collect<F>(&self, want: usize, taken: &mut HashSet<Genome>, make: F) -> Vec<Genome>
    where
        F: Fn(usize) -> Genome + Sync,
    {
        let mut kept = Vec::with_capacity(want);
        let limit = want.saturating_mul(self.params.attempts_per_candidate);
        let mut next = 0;
        while kept.len() < want && next < limit {
            let chunk = (want - kept.len()).max(16).min(limit - next);
            let made: Vec<Genome> = (next..next + chunk).into_par_iter().map(&make).collect();
            next += chunk;
            for genome in made {
                if kept.len() < want && !self.seen.contains(&genome) && taken.insert(genome.clone()) {
                    kept.push(genome);
                }
            }
        }
        kept
    }

    fn random_fill(&self, mut batch: Vec<Genome>) -> Vec<Genome> {
        let want = self.params.population.saturating_sub(batch.len());
        let mut taken: HashSet<Genome> = batch.iter().cloned().collect();
        let (flat, budget, seed, generation) = (&self.flat, self.budget, self.seed, self.generation);
        let extra = self.collect(want, &mut taken, |i| sample(flat, budget, &mut stream(seed, generation, Purpose::Random, i)));
        batch.extend(extra);
        batch
    }

    fn parents(&self) -> Vec<Genome> {
        let k = self.params.parents.min(self.evaluated.len());
        let order: Vec<usize> = match self.params.objective {
            Objective::Fitness => {
                let mut idx = self.ranked();
                idx.truncate(k);
                idx
            }
            Objective::Pareto => {
                let (points, idx) = self.points();
                pareto::select(&points, k).into_iter().map(|i| idx[i]).collect()
            }
        };
        order.into_iter().map(|i| self.evaluated[i].genome.clone()).collect()
    }

    fn offspring(&self) -> Vec<Genome> {
        let parents = self.parents();
        if parents.is_empty() {
            return self.random_fill(Vec::new());
        }
        let (flat, budget, seed, generation, prob) = (&self.flat, self.budget, self.seed, self.generation, self.params.mutation_prob);
        let mut taken = HashSet::new();
        let mut batch = Vec::new();
        let (mutants, crossed) = match self.params.operators {
            Operators::Reference => {
                let mutants = self.collect(self.params.mutants, &mut taken, |i| {
                    let mut rng = stream(seed, generation, Purpose::Mutation, i);
                    let parent = &parents[below(&mut rng, parents.len())];
                    mutate(flat, budget, parent, prob, &mut rng)
                });
                let crossed = self.collect(self.params.crossovers, &mut taken, |i| {
                    let mut rng = stream(seed, generation, Purpose::Crossover, i);
                    let a = &parents[below(&mut rng, parents.len())];
                    let b = &parents[below(&mut rng, parents.len())];
                    crossover(flat, budget, a, b, &mut rng)
                });
                (mutants, crossed)
            }
            Operators::Guided => {
                let model = self.model.as_ref().expect("ask fits the model before the offspring");
                let fill = self.params.objective == Objective::Fitness;
                let elite = &self.best().expect("parents exist, so something was evaluated").genome;
                let mut rng = stream(seed, generation, Purpose::Local, 0);
                let local_want = self.params.mutants / 2;
                if local_want > 0 {
                    for child in model.local_moves(flat, budget, elite, 2 * local_want, fill, &mut rng) {
                        if batch.len() == local_want {
                            break;
                        }
                        if !self.seen.contains(&child) && taken.insert(child.clone()) {
                            batch.push(child);
                        }
                    }
                }
                let mutants = self.collect(self.params.mutants - batch.len(), &mut taken, |i| {
                    let mut rng = stream(seed, generation, Purpose::Mutation, i);
                    let parent = &parents[below(&mut rng, parents.len())];
                    let mut child = redraw(flat, parent, prob, &mut rng);
                    model.repair(flat, budget, &mut child, fill, &mut rng);
                    child
                });
                let crossed = self.collect(self.params.crossovers, &mut taken, |i| {
                    let mut rng = stream(seed, generation, Purpose::Crossover, i);
                    let a = &parents[below(&mut rng, parents.len())];
                    let b = &parents[below(&mut rng, parents.len())];
                    let mut child = cross(a, b, &mut rng);
                    model.repair(flat, budget, &mut child, fill, &mut rng);
                    child
                });
                (mutants, crossed)
            }
        };
        batch.extend(mutants);
        batch.extend(crossed);
        self.random_fill(batch)
    }

    /// The complete evaluations as points, with their indices into `evaluated`.
    fn points(&self) -> (Vec<Point>, Vec<usize>) {
        let idx: Vec<usize> = (0..self.evaluated.len()).filter(|&i| self.evaluated[i].complete()).collect();
        (idx.iter().map(|&i| Point { score: self.evaluated[i].score, params: self.evaluated[i].params }).collect(), idx)
    }

    /// The best genome scored on all the examples (earliest among equal scores).
    pub fn best(&self) -> Option<&Evaluated> {
        let complete = self.evaluated.iter().enumerate().filter(|(_, e)| e.complete());
        complete.max_by(|(i, a), (j, b)| a.score.total_cmp(&b.score).then(j.cmp(i))).map(|(_, e)| e)
    }

    /// The best of the Pareto front with at most `max_params` parameters (docs/method.md, section 4).
    pub fn best_under(front: &[Evaluated], max_params: i64) -> Result<&Evaluated> {
        let fitting = front.iter().filter(|e| i128::from(e.params) <= i128::from(max_params));
        fitting
            .fold(None, |best: Option<&Evaluated>, e| match best {
                Some(b) if e.score <= b.score => Some(b),
                _ => Some(e),
            })
            .ok_or(EngineError::NoPointWithin { max_params, smallest: front.first().map(|e| e.params) })
    }

    /// The non-dominated genomes scored on all the examples (fitness up, parameters down), by increasing parameter
    /// count.
    pub fn pareto_front(&self) -> Vec<&Evaluated> {
        let (points, idx) = self.points();
        let mut front: Vec<&Evaluated> =
            pareto::fronts(&points).first().map(|f| f.iter().map(|&i| &self.evaluated[idx[i]]).collect()).unwrap_or_default();
        front.sort_by(|a, b| a.params.cmp(&b.params).then(b.score.total_cmp(&a.score)));
        front
    }
}
