#![allow(dead_code)]
use glora_engine::{Budget, Layer, Search, Space};

/// A space shaped like ViT-B/16's 48 target layers at rank 4 (qkv, proj, fc1, fc2 per block).
pub fn vit_space(rank: u64) -> Space {
    let shapes = [(2304u64, 768u64), (768, 768), (3072, 768), (768, 3072)];
    let layers =
        (0..12).flat_map(|b| shapes.iter().enumerate().map(move |(k, &(o, i))| layer(&format!("blocks.{b}.{k}"), o, i, rank))).collect();
    Space { layers }
}

pub fn layer(name: &str, out: u64, inn: u64, rank: u64) -> Layer {
    let ab = || vec![format!("lora_{rank}"), "vector".into(), "scalar".into(), "none".into()];
    let c = vec![format!("lora_{rank}"), "vector".into(), "none".into()];
    let de = || vec!["vector".into(), "scalar".into(), "none".into()];
    Layer::new(name, out, inn, vec![ab(), ab(), c, de(), de()]).unwrap()
}

/// A synthetic fitness: each gene contributes a fixed random-looking value per choice.
pub fn fitness(genome: &[u16]) -> f64 {
    genome.iter().enumerate().map(|(g, &c)| (((g as u64 * 7919 + c as u64 * 104729) % 1000) as f64) / 1000.0).sum()
}

pub fn run(search: &mut Search) {
    while let Some(batch) = search.ask() {
        let scores: Vec<f64> = batch.iter().map(|g| fitness(g)).collect();
        search.tell(&scores).unwrap();
    }
}

pub fn budget(max: u64) -> Budget {
    Budget { min: 0, max }
}
