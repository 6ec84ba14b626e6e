//! Evolutionary search over GLoRA layer configurations under a parameter budget.
//!
//! Pure Rust: no Python, no torch. A search space is a list of layers, each a list of genes with their allowed
//! choices and the parameter cost of each choice; a genome is one choice index per gene.

/// The engine's version (the workspace version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
