//! Re-running a search from recorded scores: the basis of resume and of `glora-replay`.

use crate::error::{EngineError, Result};
use crate::log::{Header, Record};
use crate::search::{Outcome, Search};

/// Where a replay ended.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplayEnd {
    /// Every logged evaluation was reproduced; `pending` holds the logged outcomes of the first members of the
    /// batch that was under evaluation when the log ended (empty when it ended between batches).
    Reproduced { pending: Vec<Outcome> },
    /// The engine produced another genome than the log at this point.
    Diverged { generation: usize, index: usize, logged: Vec<u16>, produced: Vec<u16> },
}

/// Build the search of `header` and feed it the logged scores, checking each asked genome against the log.
pub fn replay(header: &Header, records: &[Record]) -> Result<(Search, ReplayEnd)> {
    let mut search = Search::new(&header.space, header.budget, header.params.clone(), header.seed)?;
    let mut evals = records.iter().filter_map(|r| match r {
        Record::Eval { generation, index, genome, score, stopped_after, per_example, .. } => {
            let outcome =
                Outcome { score: score.unwrap_or(f64::NEG_INFINITY), stopped_after: *stopped_after, per_example: per_example.clone() };
            Some((*generation, *index, genome, outcome))
        }
        Record::Generation(_) => None,
    });
    let mut next = evals.next();
    while next.is_some() {
        let generation = search.generation();
        let batch: Vec<Vec<u16>> = match search.ask() {
            Some(batch) => batch.to_vec(),
            None => {
                let (g, i, genome, _) = next.unwrap();
                return Ok((search, ReplayEnd::Diverged { generation: g, index: i, logged: genome.clone(), produced: Vec::new() }));
            }
        };
        let mut outcomes = Vec::with_capacity(batch.len());
        for (index, produced) in batch.iter().enumerate() {
            let Some((g, i, logged, outcome)) = next else { break };
            if g != generation || i != index || logged != produced {
                return Ok((search, ReplayEnd::Diverged { generation, index, logged: logged.clone(), produced: produced.clone() }));
            }
            outcomes.push(outcome);
            next = evals.next();
        }
        if outcomes.len() < batch.len() {
            return Ok((search, ReplayEnd::Reproduced { pending: outcomes }));
        }
        search.tell_outcomes(outcomes)?;
    }
    Ok((search, ReplayEnd::Reproduced { pending: Vec::new() }))
}

/// Replay for resuming: a divergence is an error.
pub fn resume(header: &Header, records: &[Record]) -> Result<(Search, Vec<Outcome>)> {
    match replay(header, records)? {
        (search, ReplayEnd::Reproduced { pending }) => Ok((search, pending)),
        (_, ReplayEnd::Diverged { generation, index, logged, produced }) => {
            Err(EngineError::Divergence { generation, index, logged, produced })
        }
    }
}

/// What a log holds, replayed: the basis of `glora-replay`.
pub struct Report {
    pub header: Header,
    pub search: Search,
    pub end: ReplayEnd,
    /// The last line was cut off mid-write (an interrupted run).
    pub truncated_tail: bool,
    pub logged_evaluations: usize,
}

/// Read a log and replay it from its recorded scores, evaluating nothing.
pub fn report(path: &std::path::Path) -> Result<Report> {
    let contents = crate::log::read(path)?;
    let (search, end) = replay(&contents.header, &contents.records)?;
    let logged_evaluations = contents.records.iter().filter(|r| matches!(r, Record::Eval { .. })).count();
    Ok(Report { header: contents.header, search, end, truncated_tail: contents.truncated_tail, logged_evaluations })
}
