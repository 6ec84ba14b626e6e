//! The run log: an append-only JSON Lines file. Line 1 is the header (space, budget, seed, parameters); then
//! one record per evaluated genome and one per finished generation. A kill mid-line leaves a truncated last
//! line, which reading reports and resuming discards.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::search::{GenerationSummary, Params};
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
    pub space: Space,
}

impl Header {
    pub fn new(glora_version: &str, space: Space, budget: Budget, params: Params, seed: u64) -> Header {
        Header { format: FORMAT.into(), format_version: FORMAT_VERSION, glora_version: glora_version.into(), seed, budget, params, space }
    }

    /// What differs between a logged header and the search being resumed (the glora version may differ).
    pub fn differences(&self, other: &Header) -> Vec<String> {
        let mut out = Vec::new();
        if self.seed != other.seed {
            out.push(format!("seed {} (log) vs {}", self.seed, other.seed));
        }
        if self.budget != other.budget {
            out.push(format!("budget [{}, {}] (log) vs [{}, {}]", self.budget.min, self.budget.max, other.budget.min, other.budget.max));
        }
        if self.params != other.params {
            let a = serde_json::to_value(&self.params).unwrap_or_default();
            let b = serde_json::to_value(&other.params).unwrap_or_default();
            if let (Some(a), Some(b)) = (a.as_object(), b.as_object()) {
                for (key, value) in a {
                    if b.get(key) != Some(value) {
                        out.push(format!("{key} {value} (log) vs {}", b.get(key).cloned().unwrap_or_default()));
                    }
                }
            }
        }
        if self.space != other.space {
            out.push(space_difference(&self.space, &other.space));
        }
        out
    }
}

fn space_difference(a: &Space, b: &Space) -> String {
    if a.layers.len() != b.layers.len() {
        return format!("space has {} layers (log) vs {}", a.layers.len(), b.layers.len());
    }
    for (la, lb) in a.layers.iter().zip(&b.layers) {
        if la != lb {
            return format!("space differs at layer {:?} (log) vs {:?}", la.name, lb.name);
        }
    }
    "space differs".into()
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
        score: Option<f64>,
        params: u64,
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

/// Read and check a whole log.
pub fn read(path: &Path) -> Result<LogContents> {
    let mut text = String::new();
    File::open(path).and_then(|mut f| f.read_to_string(&mut text)).map_err(|e| io_error(path, e))?;
    let mut header: Option<Header> = None;
    let mut records = Vec::new();
    let mut valid_len = 0u64;
    let mut truncated_tail = false;
    let mut offset = 0usize;
    let mut line_no = 0usize;
    while offset < text.len() {
        line_no += 1;
        let (line, complete) = match text[offset..].find('\n') {
            Some(end) => (&text[offset..offset + end], true),
            None => (&text[offset..], false),
        };
        let next = offset + line.len() + usize::from(complete);
        if !complete {
            truncated_tail = true;
            break;
        }
        if line_no == 1 {
            let h: Header = serde_json::from_str(line).map_err(|e| corrupt(path, 1, format!("bad header: {e}")))?;
            if h.format != FORMAT {
                return Err(corrupt(path, 1, format!("not a glora search log (format {:?})", h.format)));
            }
            if h.format_version != FORMAT_VERSION {
                return Err(corrupt(path, 1, format!("format version {} is not {}", h.format_version, FORMAT_VERSION)));
            }
            header = Some(h);
        } else {
            let record: Record = serde_json::from_str(line).map_err(|e| corrupt(path, line_no, e.to_string()))?;
            records.push(record);
        }
        offset = next;
        valid_len = offset as u64;
    }
    let header = header.ok_or_else(|| corrupt(path, 1, "the log has no complete header line"))?;
    Ok(LogContents { header, records, valid_len, truncated_tail })
}

/// Appends records, flushing and syncing each batch before returning.
pub struct LogWriter {
    file: File,
    path: PathBuf,
}

impl LogWriter {
    /// Start a new log with `header`; refuses to overwrite a non-empty file.
    pub fn create(path: &Path, header: &Header) -> Result<LogWriter> {
        if path.exists() && std::fs::metadata(path).map(|m| m.len() > 0).unwrap_or(false) {
            return Err(EngineError::LogIo {
                path: path.display().to_string(),
                reason: "the file exists and is not empty; resume it or choose another path".into(),
            });
        }
        let file = OpenOptions::new().create(true).write(true).truncate(true).open(path).map_err(|e| io_error(path, e))?;
        let mut writer = LogWriter { file, path: path.to_path_buf() };
        let line = serde_json::to_string(header).expect("header serialises");
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
        })
        .collect()
}
