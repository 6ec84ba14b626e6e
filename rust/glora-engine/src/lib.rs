//! Evolutionary search over GLoRA layer configurations under a parameter budget (docs/method.md, section 4).
//!
//! Pure Rust: no Python, no torch. A search space is a list of layers, each with five genes whose choices cost
//! parameters computed from the layer's shape; a genome is one choice index per gene; a budget is a [min, max]
//! parameter count. Every genome the engine produces is feasible by construction. `driver::Run` runs a search
//! with its log (create, resume); `replay` re-runs a log from its recorded scores.

pub mod config;
pub mod driver;
pub mod error;
pub mod guided;
pub mod log;
pub mod operators;
pub mod pareto;
pub mod racing;
pub mod replay;
pub mod rng;
pub mod search;
pub mod space;

pub use config::{SearchConfig, Settings, Value};
pub use driver::{Finished, Fitness, Run, RunError};
pub use error::{EngineError, Result};
pub use search::{Evaluated, GenerationSummary, NonFinite, Objective, Operators, Outcome, Params, RacingAccount, Search};
pub use space::{Budget, BudgetSpec, FlatSpace, Gene, Genome, Layer, SearchSpace, Space, Subnet, SubnetMap, GENES};

/// The engine's version (the workspace version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
