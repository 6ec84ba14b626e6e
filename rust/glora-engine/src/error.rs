use thiserror::Error;

/// Every way a search can be refused or stopped by bad input.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum EngineError {
    #[error("the search space is empty: it has no layers")]
    EmptySpace,
    #[error("layer {layer:?}, gene {gene:?}: {reason}")]
    BadGene { layer: String, gene: String, reason: String },
    #[error("impossible budget [{min}, {max}]: achievable parameter counts range from {smallest} to {largest}")]
    ImpossibleBudget { min: u64, max: u64, smallest: u64, largest: u64 },
    #[error(
        "budget window [{min}, {max}] is narrower than the largest step between two choices of one gene ({step}); \
         widen it so that every window position holds a reachable count"
    )]
    NarrowBudget { min: u64, max: u64, step: u64 },
    #[error("invalid search parameter {name}: {reason}")]
    BadParameter { name: String, reason: String },
    #[error("expected {expected} scores for the batch, got {got}")]
    WrongScoreCount { expected: usize, got: usize },
    #[error("score {index} of the batch is not finite ({value}); pass nonfinite=\"worst\" to rank such subnets last")]
    NonFiniteScore { index: usize, value: f64 },
    #[error("no batch is waiting for scores: call ask() first")]
    NothingAsked,
    #[error("malformed genome: {0}")]
    BadGenome(String),
    #[error("log {path}: line {line}: {reason}")]
    CorruptLog { path: String, line: usize, reason: String },
    #[error("log {path} does not match this search: {differences}")]
    LogMismatch { path: String, differences: String },
    #[error("log {path}: {reason}")]
    LogIo { path: String, reason: String },
    #[error("replay diverges at generation {generation}, candidate {index}: the log has {logged:?}, the engine produces {produced:?}")]
    Divergence { generation: usize, index: usize, logged: Vec<u16>, produced: Vec<u16> },
}

pub type Result<T> = std::result::Result<T, EngineError>;
