use thiserror::Error;

/// Every way a search can be refused or stopped by bad input. Messages name what is wrong, its value and what is
/// allowed; strings shown as `'x'` are quoted the way Python shows them, since Python users read them.
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
    #[error("{reason}")]
    BadBudget { reason: String },
    #[error("{what}")]
    Overflow { what: String },
    #[error("malformed space data: {reason}")]
    BadSpaceData { reason: String },
    #[error("{name} must be {allowed}, got {value}")]
    BadParameter { name: String, value: String, allowed: String },
    #[error("fitness must return a sequence of {expected} scores, got {type_name}")]
    ScoresNotASequence { expected: usize, type_name: String },
    #[error("fitness returned {got} scores for a batch of {expected} subnets")]
    WrongScoreCount { expected: usize, got: usize },
    #[error("score {index} of the batch is not a number: {value}; a score is an int, a float, a numpy number or a 0-d tensor")]
    ScoreNotANumber { index: usize, value: String },
    #[error("score {index} of the batch is not finite ({value}); pass nonfinite=\"worst\" to rank such subnets last")]
    NonFiniteScore { index: usize, value: f64 },
    #[error("per_example returned {got} scores in row {index}, expected {expected}: one per example it was given")]
    WrongExampleCount { index: usize, expected: usize, got: usize },
    #[error("per_example must return one row of scores per subnet; row {index} is {type_name}")]
    RowNotASequence { index: usize, type_name: String },
    #[error("outcome {index} of the batch: {reason}")]
    BadOutcome { index: usize, reason: String },
    #[error("the search races its candidates, so its fitness must score each subnet on each example (per_example)")]
    NoExampleScores,
    #[error("no batch is waiting for scores: call ask() first")]
    NothingAsked,
    #[error("malformed genome: {0}")]
    BadGenome(String),
    #[error("subnet does not match the model's GLoRA layers: {}", layer_mismatch(unknown, missing))]
    SubnetLayers { unknown: Vec<String>, missing: Vec<String> },
    #[error("layer {}: configuration lacks gene {gene}", py_repr(layer))]
    MissingGene { layer: String, gene: String },
    #[error(
        "layer {}: choice {} for gene {gene} is not in the search space (offered: {})",
        py_repr(layer),
        py_repr(choice),
        py_list(offered)
    )]
    UnknownChoice { layer: String, gene: String, choice: String, offered: Vec<String> },
    #[error("no {which} subnet fits the budget [{min}, {max}] (reached {reached})")]
    NoExtreme { which: String, min: u64, max: u64, reached: u64 },
    #[error("{}", no_point_message(*max_params, *smallest))]
    NoPointWithin { max_params: i64, smallest: Option<u64> },
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

/// A string as Python's `repr` shows it.
pub fn py_repr(text: &str) -> String {
    if text.contains('\'') && !text.contains('"') {
        format!("\"{}\"", text.replace('\\', "\\\\"))
    } else {
        format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

/// A list of strings as Python's `repr` shows it.
pub fn py_list(items: &[String]) -> String {
    format!("[{}]", items.iter().map(|s| py_repr(s)).collect::<Vec<_>>().join(", "))
}

fn first_five(names: &[String]) -> String {
    let shown: Vec<String> = names.iter().take(5).cloned().collect();
    format!("{}{}", py_list(&shown), if names.len() > 5 { " ..." } else { "" })
}

fn layer_mismatch(unknown: &[String], missing: &[String]) -> String {
    let mut parts = Vec::new();
    if !unknown.is_empty() {
        parts.push(format!("unknown layer(s) {}", first_five(unknown)));
    }
    if !missing.is_empty() {
        parts.push(format!("missing layer(s) {}", first_five(missing)));
    }
    parts.join("; ")
}

fn no_point_message(max_params: i64, smallest: Option<u64>) -> String {
    match smallest {
        Some(smallest) => format!("no evaluated subnet has at most {max_params} parameters (smallest on the front: {smallest})"),
        None => "the search recorded no evaluation".into(),
    }
}
