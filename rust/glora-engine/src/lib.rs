//! Evolutionary search over GLoRA layer configurations under a parameter budget.
//!
//! Pure Rust: no Python, no torch. A search space is a list of layers, each a list of genes with their allowed
//! choices and the parameter cost of each choice; a genome is one choice index per gene; a budget is a
//! [min, max] parameter count. Every genome the engine produces is feasible by construction.

pub mod error;
pub mod log;
pub mod operators;
pub mod pareto;
pub mod replay;
pub mod rng;
pub mod search;
pub mod space;

pub use error::{EngineError, Result};
pub use search::{Evaluated, GenerationSummary, NonFinite, Objective, Params, Search};
pub use space::{Budget, FlatSpace, Gene, Genome, Layer, Space};

/// The engine's version (the workspace version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
