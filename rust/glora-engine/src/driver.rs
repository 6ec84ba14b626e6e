//! The ask / tell driver with its run log: open a search (fresh, with a new log, or resumed from a log), then
//! drive it to the end with an evaluation function called once per batch on the calling thread.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::config::SearchConfig;
use crate::error::{EngineError, Result};
use crate::log::{self, Header, LogWriter, Record};
use crate::racing::{self, Plan};
use crate::replay;
use crate::search::{GenerationSummary, Outcome, Search};
use crate::space::{Budget, Genome, Space};

/// Why a run stopped early: the engine refused something, or the caller's evaluation or callback failed.
#[derive(Debug)]
pub enum RunError<E> {
    Engine(EngineError),
    Caller(E),
}

impl<E> From<EngineError> for RunError<E> {
    fn from(err: EngineError) -> Self {
        RunError::Engine(err)
    }
}

/// What scores the candidates: whole subnets, and for a raced search each subnet on given examples.
pub trait Fitness {
    type Error;

    /// One score per genome.
    fn scores(&mut self, genomes: &[Genome]) -> std::result::Result<Vec<f64>, Self::Error>;

    /// Each genome's score on each of `examples` (indices into the fitness's examples), one row per genome.
    fn per_example(&mut self, genomes: &[Genome], examples: &[usize]) -> std::result::Result<Vec<Vec<f64>>, RunError<Self::Error>> {
        let _ = (genomes, examples);
        Err(EngineError::NoExampleScores.into())
    }
}

/// A function of a batch of genomes to their scores.
impl<F, E> Fitness for F
where
    F: FnMut(&[Genome]) -> std::result::Result<Vec<f64>, E>,
{
    type Error = E;

    fn scores(&mut self, genomes: &[Genome]) -> std::result::Result<Vec<f64>, E> {
        self(genomes)
    }
}

/// A search ready to run, with the scores recovered from its log.
pub struct Run {
    search: Search,
    /// Logged outcomes of the first members of the batch under evaluation when the log ended.
    known: Vec<Outcome>,
    /// The stages of a raced search.
    plan: Option<Plan>,
    writer: Option<LogWriter>,
    recovered: usize,
    pool: Option<rayon::ThreadPool>,
    log: Option<PathBuf>,
}

/// A finished run.
pub struct Finished {
    pub search: Search,
    /// Evaluations read back from the log instead of evaluated.
    pub recovered: usize,
    pub engine_seconds: f64,
    pub fitness_seconds: f64,
    pub log: Option<PathBuf>,
}

const INCOMPLETE: &str = "the log holds no complete header line and is not the beginning of this search's header; \
                          it records no evaluation: delete it to start afresh, or choose another path";

fn has_content(path: &Path) -> bool {
    std::fs::metadata(path).map(|m| m.len() > 0).unwrap_or(false)
}

impl Run {
    /// Open a search of `space` under `budget`. With `log`, every evaluation is appended to it; with `resume`
    /// and a non-empty log, the logged evaluations are replayed (their header must match this search) and the
    /// run continues where the log ends. A log cut inside its header (no evaluation recorded) whose text begins
    /// this search's header is started afresh; any other file without a complete line is refused untouched.
    /// `threads` is capped at the machine's cores (the result does not depend on it).
    pub fn open(
        space: &Space,
        budget: Budget,
        config: &SearchConfig,
        seed: u64,
        glora_version: &str,
        log: Option<&Path>,
        resume: bool,
    ) -> Result<Run> {
        let header = Header::new(glora_version, space.clone(), budget, config.params.clone(), seed, config.metric.clone());
        let pool = match config.threads {
            None => None,
            Some(n) => {
                let cores = std::thread::available_parallelism().map_or(1, usize::from);
                Some(rayon::ThreadPoolBuilder::new().num_threads(n.min(cores)).build().map_err(|e| EngineError::BadParameter {
                    name: "threads".into(),
                    value: n.to_string(),
                    allowed: format!("a thread count this machine can start ({e})"),
                })?)
            }
        };
        let plan = config.params.racing.map(|examples| Plan::new(examples, seed));
        let start = |writer: Option<LogWriter>, search: Search| Run {
            search,
            known: Vec::new(),
            plan: plan.clone(),
            writer,
            recovered: 0,
            pool: None,
            log: log.map(Path::to_path_buf),
        };
        let new_search = || Search::new(&header.space, header.budget, header.params.clone(), header.seed);
        let mut run = match log {
            None => start(None, new_search()?),
            Some(path) if resume && has_content(path) => match log::incomplete_header(path)? {
                Some(begun) if header.line().as_bytes().starts_with(&begun) => {
                    start(Some(LogWriter::create(path, &header, true)?), new_search()?)
                }
                Some(_) => return Err(EngineError::LogIo { path: path.display().to_string(), reason: INCOMPLETE.into() }),
                None => {
                    let contents = log::read(path)?;
                    let differences = contents.header.differences(&header);
                    if !differences.is_empty() {
                        return Err(EngineError::LogMismatch { path: path.display().to_string(), differences: differences.join("; ") });
                    }
                    let (search, known) = replay::resume(&contents.header, &contents.records)?;
                    let recovered = search.evaluated().len() + known.len();
                    let mut writer = LogWriter::resume(path, contents.valid_len)?;
                    // a log cut between a batch's last evaluation and its generation record gets that record back
                    if known.is_empty() && matches!(contents.records.last(), Some(Record::Eval { .. })) {
                        if let Some(summary) = search.history().last() {
                            writer.append(&[Record::Generation(summary.clone())])?;
                        }
                    }
                    Run { search, known, plan, writer: Some(writer), recovered, pool: None, log: Some(path.to_path_buf()) }
                }
            },
            Some(path) => {
                let search = new_search()?;
                start(Some(LogWriter::create(path, &header, false)?), search)
            }
        };
        run.pool = pool;
        Ok(run)
    }

    /// Evaluations recovered from the log.
    pub fn recovered(&self) -> usize {
        self.recovered
    }

    /// Run to the end. `fitness` scores the genomes of each batch still to evaluate (recovered ones are left
    /// out): one score per genome, or, in a raced search, their scores per example stage by stage;
    /// `on_generation` sees each finished generation.
    pub fn drive<F: Fitness>(
        mut self,
        mut fitness: F,
        mut on_generation: impl FnMut(&GenerationSummary) -> std::result::Result<(), F::Error>,
    ) -> std::result::Result<Finished, RunError<F::Error>> {
        let (mut engine_seconds, mut fitness_seconds) = (0.0f64, 0.0f64);
        loop {
            let started = Instant::now();
            let search = &mut self.search;
            let batch: Option<Vec<Genome>> = match &self.pool {
                Some(pool) => pool.install(|| search.ask().map(<[Genome]>::to_vec)),
                None => search.ask().map(<[Genome]>::to_vec),
            };
            engine_seconds += started.elapsed().as_secs_f64();
            let Some(batch) = batch else { break };
            let skip = self.known.len();
            let todo = &batch[skip..];
            let started = Instant::now();
            let fresh = match &self.plan {
                None => {
                    let scores = fitness.scores(todo).map_err(RunError::Caller)?;
                    if scores.len() != todo.len() {
                        return Err(EngineError::WrongScoreCount { expected: todo.len(), got: scores.len() }.into());
                    }
                    scores.into_iter().map(Outcome::whole).collect()
                }
                Some(plan) => {
                    let bar = self.search.bar().map(<[f64]>::to_vec);
                    racing::race(plan, bar.as_deref(), self.search.nonfinite(), todo, |g, e| fitness.per_example(g, e))?
                }
            };
            fitness_seconds += started.elapsed().as_secs_f64();
            let started = Instant::now();
            let mut outcomes = std::mem::take(&mut self.known);
            outcomes.extend(fresh);
            let told = outcomes.len();
            let summary = self.search.tell_outcomes(outcomes)?;
            if let Some(writer) = self.writer.as_mut() {
                let evaluated = self.search.evaluated();
                let mut records = log::eval_records(&evaluated[evaluated.len() - told + skip..]);
                records.push(Record::Generation(summary.clone()));
                writer.append(&records)?;
            }
            engine_seconds += started.elapsed().as_secs_f64();
            on_generation(&summary).map_err(RunError::Caller)?;
        }
        Ok(Finished { search: self.search, recovered: self.recovered, engine_seconds, fitness_seconds, log: self.log })
    }
}
