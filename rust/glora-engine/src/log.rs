//! The run log: an append-only JSON Lines file. Line 1 is the header (space, budget, seed, parameters and, when
//! given, the metric the scores are); then one record per evaluated genome and one per finished generation. A
//! non-finite score (ranked worst) is written as null and read back as minus infinity. A kill mid-line leaves a
//! truncated last line, which reading reports and resuming discards.
//!
//! Reading checks everything a search relies on, so a damaged log is refused with its line number: the header's
//! counts within the engine's limits, each layer's genes A..E with the costs its shape gives, no null score
//! in a search that refuses non-finite scores, and raced records (`stopped_after`, or `per_example`: the score on
//! every example) exactly in a raced search; replaying checks the rest of each outcome.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{py_repr, EngineError, Result};
use crate::search::{outcome_problem, GenerationSummary, NonFinite, Params};
use crate::space::{Budget, Genome, Space};

pub const FORMAT: &str = "glora-search-log";
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    pub format_version: u32,
    pub glora_version: String,
    pub seed: u64,
    pub budget: Budget,
    pub params: Params,
    /// What the scores measure, when the caller named it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    pub space: Space,
}

impl Header {
    pub fn new(glora_version: &str, space: Space, budget: Budget, params: Params, seed: u64, metric: Option<String>) -> Header {
        let glora_version = glora_version.into();
        Header { format: FORMAT.into(), format_version: FORMAT_VERSION, glora_version, seed, budget, params, metric, space }
    }

    /// What differs between a logged header and the search being resumed (the glora version may differ; the
    /// metrics are compared only when both name one, so a log without a metric resumes under any).
    pub fn differences(&self, other: &Header) -> Vec<String> {
        let mut out = Vec::new();
        if self.seed != other.seed {
            out.push(format!("seed {} (log) vs {} (this search)", self.seed, other.seed));
        }
        if self.budget != other.budget {
            let (a, b) = (self.budget, other.budget);
            out.push(format!("budget [{}, {}] (log) vs [{}, {}] (this search)", a.min, a.max, b.min, b.max));
        }
        if self.metric.is_some() && other.metric.is_some() && self.metric != other.metric {
            let shown = |m: &Option<String>| m.as_deref().map_or("none".into(), py_repr);
            out.push(format!("metric {} (log) vs {} (this search)", shown(&self.metric), shown(&other.metric)));
        }
        if self.params != other.params {
            let a = serde_json::to_value(&self.params).unwrap_or_default();
            let b = serde_json::to_value(&other.params).unwrap_or_default();
            if let (Some(a), Some(b)) = (a.as_object(), b.as_object()) {
                // a setting left out of one side (racing when None) reads as null there
                let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
                for key in keys {
                    let (x, y) = (a.get(key).cloned().unwrap_or_default(), b.get(key).cloned().unwrap_or_default());
                    if x != y {
                        out.push(format!("{key} {x} (log) vs {y} (this search)"));
                    }
                }
            }
        }
        out.extend(self.space.difference(&other.space));
        out
    }

    /// The header as its log line (without the newline).
    pub fn line(&self) -> String {
        serde_json::to_string(self).expect("a header serialises")
    }

    /// Everything a search builds on: the counts within limits, the space's costs from its shapes, the budget
    /// reachable (the same checks as `Search::new`).
    fn check(&self) -> Result<()> {
        self.params.validate()?;
        self.space.check_costs()?;
        self.space.flatten()?.check_budget(self.budget)
    }
}

/// A score field: a number, or null for a non-finite score ranked worst (minus infinity); never absent.
pub fn score_or_worst<'de, D: Deserializer<'de>>(deserializer: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NEG_INFINITY))
}

fn required<'de, D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Option<f64>, D::Error> {
    Option::<f64>::deserialize(deserializer)
}

/// A record after the header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Record {
    Eval {
        generation: usize,
        index: usize,
        genome: Genome,
        /// None for a non-finite score ranked as worst.
        #[serde(deserialize_with = "required")]
        score: Option<f64>,
        params: u64,
        /// A raced search: stopped after this many examples.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stopped_after: Option<usize>,
        /// A raced search: the score on each example of a candidate raced to the end.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        per_example: Option<Vec<f64>>,
    },
    Generation(GenerationSummary),
}

/// What a log holds.
#[derive(Debug, Clone)]
pub struct LogContents {
    pub header: Header,
    pub records: Vec<Record>,
    /// Byte length of the complete lines; anything after it is a truncated last line.
    pub valid_len: u64,
    pub truncated_tail: bool,
}

fn corrupt(path: &Path, line: usize, reason: impl Into<String>) -> EngineError {
    EngineError::CorruptLog { path: path.display().to_string(), line, reason: reason.into() }
}

fn io_error(path: &Path, err: std::io::Error) -> EngineError {
    EngineError::LogIo { path: path.display().to_string(), reason: err.to_string() }
}

/// The first line of a log that holds no complete line (a write cut inside the header), else None.
pub fn incomplete_header(path: &Path) -> Result<Option<Vec<u8>>> {
    let bytes = std::fs::read(path).map_err(|e| io_error(path, e))?;
    Ok(if bytes.contains(&b'\n') { None } else { Some(bytes) })
}

fn header(path: &Path, line: &str) -> Result<Header> {
    let header: Header = serde_json::from_str(line).map_err(|e| corrupt(path, 1, format!("bad header: {e}")))?;
    if header.format != FORMAT {
        return Err(corrupt(path, 1, format!("not a glora search log (format {})", py_repr(&header.format))));
    }
    if header.format_version != FORMAT_VERSION {
        return Err(corrupt(path, 1, format!("format version {} is not {FORMAT_VERSION}", header.format_version)));
    }
    header.check().map_err(|e| corrupt(path, 1, format!("bad header: {e}")))?;
    Ok(header)
}

fn record(path: &Path, line_no: usize, line: &str, header: &Header) -> Result<Record> {
    let record: Record = serde_json::from_str(line).map_err(|e| corrupt(path, line_no, e.to_string()))?;
    if let Record::Eval { score, stopped_after, per_example, .. } = &record {
        if score.is_none() && header.params.nonfinite == NonFinite::Error {
            return Err(corrupt(path, line_no, "score is null (non-finite), which a search with nonfinite \"error\" never logs"));
        }
        let score = score.unwrap_or(f64::NEG_INFINITY);
        if let Some(reason) = outcome_problem(header.params.racing, score, *stopped_after, per_example.as_deref()) {
            return Err(corrupt(path, line_no, reason));
        }
    }
    Ok(record)
}

/// Read and check a whole log.
pub fn read(path: &Path) -> Result<LogContents> {
    let mut text = String::new();
    File::open(path).and_then(|mut f| f.read_to_string(&mut text)).map_err(|e| io_error(path, e))?;
    let mut lines = text.split_inclusive('\n');
    let first = lines.next().filter(|l| l.ends_with('\n')).ok_or_else(|| corrupt(path, 1, "the log has no complete header line"))?;
    let header = header(path, first.trim_end_matches('\n'))?;
    let mut records = Vec::new();
    let mut valid_len = first.len() as u64;
    let mut truncated_tail = false;
    for (i, line) in lines.enumerate() {
        let Some(line) = line.strip_suffix('\n') else {
            truncated_tail = true;
            break;
        };
        records.push(record(path, i + 2, line, &header)?);
        valid_len += line.len() as u64 + 1;
    }
    Ok(LogContents { header, records, valid_len, truncated_tail })
}

/// Appends records, flushing and syncing each batch before returning.
pub struct LogWriter {
    file: File,
    path: PathBuf,
}

impl LogWriter {
    /// Start a new log with `header`; refuses to overwrite a non-empty file unless told that it holds only the
    /// beginning of this very header (`replace_partial`: a write cut inside it, before any evaluation).
    pub fn create(path: &Path, header: &Header, replace_partial: bool) -> Result<LogWriter> {
        let line = header.line();
        if !replace_partial && path.exists() && std::fs::metadata(path).map(|m| m.len() > 0).unwrap_or(false) {
            return Err(EngineError::LogIo {
                path: path.display().to_string(),
                reason: "the file exists and is not empty; resume it or choose another path".into(),
            });
        }
        let file = OpenOptions::new().create(true).write(true).truncate(true).open(path).map_err(|e| io_error(path, e))?;
        let mut writer = LogWriter { file, path: path.to_path_buf() };
        writer.write_lines(&[line])?;
        Ok(writer)
    }

    /// Continue a log after its last complete line (a truncated tail is cut off).
    pub fn resume(path: &Path, valid_len: u64) -> Result<LogWriter> {
        let mut file = OpenOptions::new().write(true).open(path).map_err(|e| io_error(path, e))?;
        file.set_len(valid_len).map_err(|e| io_error(path, e))?;
        file.seek(SeekFrom::End(0)).map_err(|e| io_error(path, e))?;
        Ok(LogWriter { file, path: path.to_path_buf() })
    }

    pub fn append(&mut self, records: &[Record]) -> Result<()> {
        let lines: Vec<String> = records.iter().map(|r| serde_json::to_string(r).expect("record serialises")).collect();
        self.write_lines(&lines)
    }

    fn write_lines(&mut self, lines: &[String]) -> Result<()> {
        let mut buffer = String::new();
        for line in lines {
            buffer.push_str(line);
            buffer.push('\n');
        }
        self.file.write_all(buffer.as_bytes()).map_err(|e| io_error(&self.path, e))?;
        self.file.flush().map_err(|e| io_error(&self.path, e))?;
        self.file.sync_data().map_err(|e| io_error(&self.path, e))
    }
}

/// The eval records of a finished batch.
pub fn eval_records(evaluated: &[crate::search::Evaluated]) -> Vec<Record> {
    evaluated
        .iter()
        .map(|e| Record::Eval {
            generation: e.generation,
            index: e.index,
            genome: e.genome.clone(),
            score: if e.score.is_finite() { Some(e.score) } else { None },
            params: e.params,
            stopped_after: e.stopped_after,
            per_example: e.per_example.clone(),
        })
        .collect()
}
