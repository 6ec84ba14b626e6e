//! Candidates built per second under a budget, by budget-aware sampling, by mutation (per-gene probability 0.2)
//! and by uniform crossover of sampled parents, all repaired into the budget; prints one JSON object.
//!
//!     cargo run --release --example throughput -p glora-engine -- --space vit_b16 --fraction 0.3 --n 200000 --threads 1
//!
//! `--space` is `vit_b16` (48 layers) or `llama7b` (224 layers, no biases), both at rank 4; the budget is
//! `--fraction` of the space's largest count, or `--budget` parameters.

use std::time::Instant;

use glora_engine::operators::{crossover, is_feasible, mutate, sample};
use glora_engine::rng::{stream, Purpose};
use glora_engine::{Budget, Genome, Layer, Space};
use rayon::prelude::*;

fn layer(name: String, out: u64, inn: u64, bias: bool) -> Layer {
    let ab = || vec!["lora_4".into(), "vector".into(), "scalar".into(), "none".into()];
    let de = || vec!["vector".into(), "scalar".into(), "none".into()];
    let d = if bias { de() } else { vec!["none".into()] };
    Layer::new(&name, out, inn, vec![ab(), ab(), vec!["lora_4".into(), "vector".into(), "none".into()], d, de()]).expect("valid layer")
}

fn vit_b16() -> Space {
    let shapes = [("attn.qkv", 2304, 768), ("attn.proj", 768, 768), ("mlp.fc1", 3072, 768), ("mlp.fc2", 768, 3072)];
    Space { layers: (0..12).flat_map(|b| shapes.map(|(n, o, i)| layer(format!("blocks.{b}.{n}"), o, i, true))).collect() }
}

fn llama_7b() -> Space {
    let shapes = [
        ("self_attn.q_proj", 4096, 4096),
        ("self_attn.k_proj", 4096, 4096),
        ("self_attn.v_proj", 4096, 4096),
        ("self_attn.o_proj", 4096, 4096),
        ("mlp.gate_proj", 11008, 4096),
        ("mlp.up_proj", 11008, 4096),
        ("mlp.down_proj", 4096, 11008),
    ];
    Space { layers: (0..32).flat_map(|b| shapes.map(|(n, o, i)| layer(format!("layers.{b}.{n}"), o, i, false))).collect() }
}

fn argument(args: &[String], name: &str, default: &str) -> String {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.into())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let space_name = argument(&args, "--space", "vit_b16");
    let space = match space_name.as_str() {
        "vit_b16" => vit_b16(),
        "llama7b" => llama_7b(),
        other => panic!("unknown --space {other:?}: vit_b16 or llama7b"),
    };
    let flat = space.flatten().expect("valid space");
    let fraction: f64 = argument(&args, "--fraction", "0.3").parse().expect("--fraction is a number");
    let max: u64 =
        argument(&args, "--budget", &((flat.largest as f64 * fraction) as u64).to_string()).parse().expect("--budget is a count");
    let n: usize = argument(&args, "--n", "100000").parse().expect("--n is a count");
    let threads: usize = argument(&args, "--threads", "1").parse().expect("--threads is a count");
    let seed: u64 = argument(&args, "--seed", "0").parse().expect("--seed is a count");
    let budget = Budget { min: 0, max };
    flat.check_budget(budget).expect("a reachable budget");
    let parents: Vec<Genome> = (0..16).map(|i| sample(&flat, budget, &mut stream(seed, 1, Purpose::Random, i))).collect();
    let measure = |op: &(dyn Fn(usize) -> Genome + Sync)| -> String {
        let started = Instant::now();
        let feasible = (0..n).into_par_iter().filter(|&i| is_feasible(&flat, budget, &op(i))).count();
        let per_second = n as f64 / started.elapsed().as_secs_f64();
        format!("{{\"per_second\": {per_second}, \"feasible_share\": {}}}", feasible as f64 / n as f64)
    };
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a thread pool");
    let (s, m, c) = pool.install(|| {
        let s = measure(&|i| sample(&flat, budget, &mut stream(seed, 2, Purpose::Random, i)));
        let m = measure(&|i| mutate(&flat, budget, &parents[i % parents.len()], 0.2, &mut stream(seed, 2, Purpose::Mutation, i)));
        let c = measure(&|i| {
            let mut rng = stream(seed, 2, Purpose::Crossover, i);
            crossover(&flat, budget, &parents[i % parents.len()], &parents[(i * 7 + 3) % parents.len()], &mut rng)
        });
        (s, m, c)
    });
    println!(
        "{{\"space\": \"{space_name}\", \"layers\": {}, \"max_params\": {}, \"budget\": {max}, \"threads\": {threads}, \"n\": {n}, \
         \"sample\": {s}, \"mutation\": {m}, \"crossover\": {c}}}",
        space.layers.len(),
        flat.largest
    );
}
