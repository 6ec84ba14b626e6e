mod common;

use common::{budget, fitness, layer, run, vit_space};
use glora_engine::driver::{Run, RunError};
use glora_engine::log::{self, LogWriter};
use glora_engine::operators::{crossover, is_feasible, mutate, repair, sample};
use glora_engine::replay::{replay, ReplayEnd};
use glora_engine::rng::{stream, Purpose};
use glora_engine::space::choice_cost;
use glora_engine::{Budget, EngineError, Gene, Layer, NonFinite, Objective, Operators, Params, Search, SearchConfig, Space};
use proptest::prelude::*;
use rand::Rng;

fn random_space(shapes: &[(u64, u64, u64)]) -> Space {
    Space { layers: shapes.iter().enumerate().map(|(i, &(o, n, r))| layer(&format!("l{i}"), o, n, r)).collect() }
}

fn space_strategy() -> impl Strategy<Value = Space> {
    prop::collection::vec((1u64..300, 1u64..300, 1u64..9), 1..12).prop_map(|s| random_space(&s))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_produced_genome_is_valid_and_within_budget(space in space_strategy(), lo in 0.0f64..1.0, width in 0.0f64..1.0, seed in any::<u64>()) {
        let flat = space.flatten().unwrap();
        let span = (flat.largest - flat.smallest) as f64;
        let min = flat.smallest + (lo * span * 0.5) as u64;
        let max = (min + flat.max_step + (width * span) as u64).min(flat.largest);
        let b = Budget { min: if max - min < flat.max_step { flat.smallest } else { min }, max };
        prop_assume!(flat.check_budget(b).is_ok());
        let mut rng = stream(seed, 0, Purpose::Random, 0);
        for _ in 0..30 {
            let g = sample(&flat, b, &mut rng);
            flat.validate(&g).unwrap();
            prop_assert!(is_feasible(&flat, b, &g), "sampled cost {} outside [{}, {}]", flat.cost(&g), b.min, b.max);
            let m = mutate(&flat, b, &g, 0.5, &mut rng);
            prop_assert!(is_feasible(&flat, b, &m));
            let h = sample(&flat, b, &mut rng);
            let c = crossover(&flat, b, &g, &h, &mut rng);
            prop_assert!(is_feasible(&flat, b, &c));
            let wild: Vec<u16> = flat.costs.iter().map(|c| (seed as usize % c.len()) as u16).collect();
            let mut fixed = wild.clone();
            repair(&flat, b, &mut fixed, &mut rng);
            prop_assert!(is_feasible(&flat, b, &fixed));
        }
        let mut search = Search::new(&space, b, Params { generations: 4, population: 12, parents: 4, mutants: 5, crossovers: 5, ..Params::default() }, seed).unwrap();
        while let Some(batch) = search.ask() {
            for g in batch {
                prop_assert!(is_feasible(&flat, b, g));
            }
            let scores: Vec<f64> = batch.iter().map(|g| fitness(g)).collect();
            search.tell(&scores).unwrap();
        }
    }

    #[test]
    fn repair_leaves_feasible_genomes_alone(space in space_strategy(), seed in any::<u64>()) {
        let flat = space.flatten().unwrap();
        let b = budget((flat.smallest + flat.largest) / 2);
        let mut rng = stream(seed, 1, Purpose::Mutation, 3);
        for _ in 0..20 {
            let g = sample(&flat, b, &mut rng);
            let mut again = g.clone();
            repair(&flat, b, &mut again, &mut rng);
            prop_assert_eq!(&again, &g);
        }
    }
}

#[test]
fn same_seed_same_search_for_any_thread_count() {
    let space = vit_space(4);
    let outcome = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut search = Search::new(&space, budget(290_000), Params::default(), 42).unwrap();
            run(&mut search);
            search.evaluated().to_vec()
        })
    };
    let one = outcome(1);
    assert_eq!(one.len(), 50 * 20);
    for threads in [2, 4, 16] {
        assert!(outcome(threads) == one, "{threads} threads give another search");
    }
    let other_seed = {
        let mut search = Search::new(&space, budget(290_000), Params::default(), 43).unwrap();
        run(&mut search);
        search.evaluated().to_vec()
    };
    assert!(other_seed != one);
}

#[test]
fn every_genome_is_evaluated_once() {
    let space = random_space(&[(3, 2, 1), (2, 2, 1)]);
    let flat = space.flatten().unwrap();
    let mut search = Search::new(&space, budget(flat.largest), Params::default(), 1).unwrap();
    run(&mut search);
    let mut genomes: Vec<_> = search.evaluated().iter().map(|e| e.genome.clone()).collect();
    let n = genomes.len();
    genomes.sort();
    genomes.dedup();
    assert_eq!(genomes.len(), n);
    assert!(n <= 4 * 4 * 3 * 3 * 3 * 4 * 4 * 3 * 3 * 3);
}

#[test]
fn tiny_space_is_exhausted_without_hanging() {
    let space = Space {
        layers: vec![Layer {
            name: "x".into(),
            out_features: 1,
            in_features: 1,
            genes: vec![Gene { gene: "A".into(), choices: vec!["a".into(), "b".into()], costs: vec![0, 1] }],
        }],
    };
    let mut search = Search::new(&space, budget(1), Params::default(), 0).unwrap();
    run(&mut search);
    assert_eq!(search.evaluated().len(), 2);
    assert!(search.is_done());
}

#[test]
fn evolution_beats_random_search_on_a_known_optimum() {
    // Fitness rewards lora choices (index 0) on the genes A and B of every layer; the budget allows exactly
    // eight such upgrades at most, so the optimum takes them where they pay most.
    let space = vit_space(4);
    let flat = space.flatten().unwrap();
    let weight = |g: usize| 1.0 + (g % 7) as f64;
    let score =
        |genome: &[u16]| -> f64 { genome.iter().enumerate().map(|(g, &c)| if c == 0 && g % 5 < 2 { weight(g) } else { 0.0 }).sum() };
    let b = budget(300_000);
    let mut search = Search::new(&space, b, Params::default(), 7).unwrap();
    while let Some(batch) = search.ask() {
        let s: Vec<f64> = batch.iter().map(|g| score(g)).collect();
        search.tell(&s).unwrap();
    }
    let evolved = search.best().unwrap().score;
    let mut rng = stream(99, 0, Purpose::Random, 0);
    let random_best = (0..search.evaluated().len()).map(|_| score(&sample(&flat, b, &mut rng))).fold(0.0, f64::max);
    assert!(evolved > random_best, "evolution {evolved} vs random {random_best}");
}

/// The best total value of one choice per gene within `max` parameters: a multiple-choice knapsack.
fn knapsack_optimum(costs: &[Vec<u64>], values: &[Vec<f64>], max: u64) -> f64 {
    let cap = max as usize;
    let mut best = vec![f64::NEG_INFINITY; cap + 1];
    best[0] = 0.0;
    for (costs, values) in costs.iter().zip(values) {
        let mut next = vec![f64::NEG_INFINITY; cap + 1];
        for w in (0..=cap).filter(|&w| best[w] > f64::NEG_INFINITY) {
            for (&cost, &value) in costs.iter().zip(values) {
                let to = w + cost as usize;
                if to <= cap && best[w] + value > next[to] {
                    next[to] = best[w] + value;
                }
            }
        }
        best = next;
    }
    best.into_iter().fold(f64::NEG_INFINITY, f64::max)
}

#[test]
fn guided_operators_reach_the_optimum_of_an_additive_fitness() {
    // 80 genes; each choice has a random value (lora up to 3, vector or scalar up to 1, none 0) and a subnet scores
    // the sum: the optimum under the budget is a knapsack solved exactly. 1,000 evaluations (the defaults).
    let shapes = [(96u64, 64u64), (64, 96), (80, 80), (32, 128)];
    let space = Space { layers: (0..16).map(|i| layer(&format!("l{i}"), shapes[i % 4].0, shapes[i % 4].1, 4)).collect() };
    let flat = space.flatten().unwrap();
    let names: Vec<&Vec<String>> = space.layers.iter().flat_map(|l| l.genes.iter().map(|g| &g.choices)).collect();
    let (mut guided, mut reference) = (vec![], vec![]);
    for value_seed in 0..3 {
        let mut rng = stream(value_seed, 0, Purpose::Random, 0);
        let values: Vec<Vec<f64>> = names
            .iter()
            .map(|choices| {
                let worth = |c: &String| {
                    if c == "none" {
                        0.0
                    } else if c.starts_with("lora") {
                        3.0
                    } else {
                        1.0
                    }
                };
                choices.iter().map(|c| worth(c) * rng.gen::<f64>()).collect()
            })
            .collect();
        let score = |g: &[u16]| -> f64 { g.iter().zip(&values).map(|(&c, v)| v[c as usize]).sum() };
        for max in [2000, 4000, 8000] {
            let optimum = knapsack_optimum(&flat.costs, &values, max);
            for (operators, ratios) in [(Operators::Guided, &mut guided), (Operators::Reference, &mut reference)] {
                let mut search = Search::new(&space, budget(max), Params { operators, ..Params::default() }, 1).unwrap();
                while let Some(batch) = search.ask() {
                    let scores: Vec<f64> = batch.iter().map(|g| score(g)).collect();
                    search.tell(&scores).unwrap();
                }
                ratios.push(search.best().unwrap().score / optimum);
            }
        }
    }
    let mean = |r: &[f64]| r.iter().sum::<f64>() / r.len() as f64;
    assert!(guided.iter().all(|&r| (0.98..=1.0 + 1e-9).contains(&r)), "guided reaches {guided:?} of the optimum");
    assert!(mean(&reference) < 0.95, "the reference operators reach {reference:?}: the test no longer tells them apart");
}

#[test]
fn pareto_mode_returns_a_front() {
    let space = vit_space(4);
    let params = Params { objective: Objective::Pareto, generations: 6, ..Params::default() };
    let mut search = Search::new(&space, budget(900_000), params, 3).unwrap();
    run(&mut search);
    let front = search.pareto_front();
    assert!(front.len() > 1);
    for w in front.windows(2) {
        assert!(w[0].params < w[1].params && w[0].score < w[1].score);
    }
    for e in search.evaluated() {
        assert!(!front.iter().any(|f| f.score < e.score && f.params >= e.params && e.genome != f.genome && f.params == e.params));
    }
}

#[test]
fn bad_input_is_refused() {
    assert_eq!(Search::new(&Space { layers: vec![] }, budget(1), Params::default(), 0).err(), Some(EngineError::EmptySpace));
    let space = vit_space(4);
    let flat = space.flatten().unwrap();
    match Search::new(&space, Budget { min: flat.largest + 1, max: flat.largest + 5 }, Params::default(), 0).err() {
        Some(EngineError::ImpossibleBudget { smallest, largest, .. }) => assert_eq!((smallest, largest), (0, flat.largest)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(Search::new(&space, Budget { min: 5000, max: 5010 }, Params::default(), 0), Err(EngineError::NarrowBudget { .. })));
    assert!(matches!(
        Search::new(&space, budget(1000), Params { mutation_prob: 1.5, ..Params::default() }, 0),
        Err(EngineError::BadParameter { .. })
    ));
    let mut search = Search::new(&space, budget(100_000), Params::default(), 0).unwrap();
    assert_eq!(search.tell(&[1.0]).err(), Some(EngineError::NothingAsked));
    let n = search.ask().unwrap().len();
    assert_eq!(search.tell(&[1.0]).err(), Some(EngineError::WrongScoreCount { expected: n, got: 1 }));
    let mut scores = vec![0.5; n];
    scores[3] = f64::NAN;
    assert!(matches!(search.tell(&scores), Err(EngineError::NonFiniteScore { index: 3, .. })));
    let mut lenient = Search::new(&space, budget(100_000), Params { nonfinite: NonFinite::Worst, ..Params::default() }, 0).unwrap();
    let n = lenient.ask().unwrap().len();
    let mut scores = vec![0.5; n];
    scores[0] = f64::INFINITY;
    lenient.tell(&scores).unwrap();
    assert_eq!(lenient.evaluated()[0].score, f64::NEG_INFINITY);
}

fn config(params: &Params) -> SearchConfig {
    SearchConfig { params: params.clone(), threads: None, metric: None }
}

/// A logged run through the driver, stopped after `stop_after` generations.
fn write_log(path: &std::path::Path, space: &Space, b: Budget, params: &Params, seed: u64, stop_after: usize) -> Search {
    let run = Run::open(space, b, &config(params), seed, "test", Some(path), false).unwrap();
    let mut generations = 0;
    let evaluate = |batch: &[Vec<u16>]| Ok::<_, ()>(batch.iter().map(|g| fitness(g)).collect());
    let stop = |_: &glora_engine::GenerationSummary| {
        generations += 1;
        if generations >= stop_after {
            Err(())
        } else {
            Ok(())
        }
    };
    match run.drive(evaluate, stop) {
        Ok(finished) => finished.search,
        Err(RunError::Caller(())) => replay(&log::read(path).unwrap().header, &log::read(path).unwrap().records).unwrap().0,
        Err(RunError::Engine(e)) => panic!("{e}"),
    }
}

fn resumed(path: &std::path::Path, space: &Space, b: Budget, params: &Params, seed: u64) -> (Search, usize, usize) {
    let run = Run::open(space, b, &config(params), seed, "test", Some(path), true).unwrap();
    let recovered = run.recovered();
    let mut evaluated = 0;
    let finished = run
        .drive(
            |batch: &[Vec<u16>]| {
                evaluated += batch.len();
                Ok::<_, ()>(batch.iter().map(|g| fitness(g)).collect())
            },
            |_| Ok(()),
        )
        .unwrap();
    (finished.search, recovered, evaluated)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn resume_from_any_cut_equals_the_uninterrupted_run(cut in 0.0f64..1.0, seed in 0u64..1000) {
        let dir = std::env::temp_dir().join(format!("glora-engine-resume-{}-{seed}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("run.jsonl");
        let _ = std::fs::remove_file(&path);
        let space = random_space(&[(64, 32, 4), (32, 64, 4), (48, 48, 4), (16, 80, 4)]);
        let params = Params { generations: 4, population: 20, mutants: 10, crossovers: 10, ..Params::default() };
        let b = budget(1500);
        let full = write_log(&path, &space, b, &params, seed, usize::MAX);
        let data = std::fs::read(&path).unwrap();
        let header_end = data.iter().position(|&c| c == b'\n').unwrap() + 1;
        let at = header_end + ((data.len() - header_end) as f64 * cut) as usize;
        std::fs::write(&path, &data[..at]).unwrap();
        let (search, recovered, evaluated) = resumed(&path, &space, b, &params, seed);
        prop_assert!(search.evaluated() == full.evaluated());
        prop_assert_eq!(recovered + evaluated, full.evaluated().len());
        prop_assert_eq!(std::fs::read(&path).unwrap(), data);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn extremes_are_within_budget_and_extreme(space in space_strategy(), lo in 0.0f64..1.0, width in 0.0f64..1.0) {
        let flat = space.flatten().unwrap();
        let span = (flat.largest - flat.smallest) as f64;
        let min = flat.smallest + (lo * span * 0.5) as u64;
        let max = (min + flat.max_step + (width * span) as u64).min(flat.largest);
        let b = Budget { min: if max - min < flat.max_step { flat.smallest } else { min }, max };
        prop_assume!(flat.check_budget(b).is_ok());
        if let Ok(large) = flat.largest_within(b) {
            prop_assert!(is_feasible(&flat, b, &large));
        }
        if let Ok(small) = flat.smallest_within(b) {
            prop_assert!(is_feasible(&flat, b, &small));
        }
        let whole = Budget { min: flat.smallest, max: flat.largest };
        prop_assert_eq!(flat.cost(&flat.largest_within(whole).unwrap()), flat.largest);
        prop_assert_eq!(flat.cost(&flat.smallest_within(whole).unwrap()), flat.smallest);
    }

    #[test]
    fn costs_follow_the_table(out in 1u64..5000, inn in 1u64..5000, rank in 1u64..64) {
        let lora = format!("lora_{rank}");
        for gene in ["A", "B"] {
            prop_assert_eq!(choice_cost(gene, &lora, out, inn), Ok(rank * (out + inn)));
            prop_assert_eq!(choice_cost(gene, "vector", out, inn), Ok(out));
            prop_assert_eq!(choice_cost(gene, "scalar", out, inn), Ok(1));
        }
        prop_assert_eq!(choice_cost("C", &lora, out, inn), Ok(rank * (inn + 1)));
        prop_assert_eq!(choice_cost("C", "vector", out, inn), Ok(inn));
        for gene in ["D", "E"] {
            prop_assert_eq!(choice_cost(gene, "vector", out, inn), Ok(out));
            prop_assert_eq!(choice_cost(gene, "scalar", out, inn), Ok(1));
            prop_assert!(choice_cost(gene, &lora, out, inn).is_err());
        }
        for gene in ["A", "B", "C", "D", "E"] {
            prop_assert_eq!(choice_cost(gene, "none", out, inn), Ok(0));
        }
        prop_assert!(choice_cost("C", "scalar", out, inn).is_err());
        prop_assert!(choice_cost("A", "lora_0", out, inn).is_err());
        prop_assert!(choice_cost("A", "lora_x", out, inn).is_err());
        prop_assert!(choice_cost("F", "none", out, inn).is_err() || choice_cost("F", "vector", out, inn).is_err());
    }
}

#[test]
fn extremes_step_the_dearest_gene_first() {
    // one layer 4 x 4 at rank 2: A, B lora 16, vector 4, scalar 1; C lora 10, vector 4; D, E vector 4, scalar 1
    let space = Space { layers: vec![layer("x", 4, 4, 2)] };
    let flat = space.flatten().unwrap();
    assert_eq!(flat.largest, 16 + 16 + 10 + 4 + 4);
    // the dearest genes step down first, A before B among equals: A 16 -> 4, then B 16 -> 4
    assert_eq!(flat.largest_within(budget(26)).unwrap(), vec![1, 1, 0, 0, 0]);
    assert_eq!(flat.smallest_within(Budget { min: 2, max: 50 }).unwrap(), vec![2, 2, 2, 2, 2]);
    assert!(matches!(flat.largest_within(Budget { min: 30, max: 30 }), Err(EngineError::NoExtreme { .. })));
}

#[test]
fn log_round_trip_replay_and_truncation() {
    let dir = std::env::temp_dir().join(format!("glora-engine-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("run.jsonl");
    let _ = std::fs::remove_file(&path);
    let space = vit_space(4);
    let params = Params { generations: 5, ..Params::default() };
    let full = write_log(&path, &space, budget(400_000), &params, 11, usize::MAX);
    let contents = log::read(&path).unwrap();
    assert!(!contents.truncated_tail);
    let (replayed, end) = replay(&contents.header, &contents.records).unwrap();
    assert_eq!(end, ReplayEnd::Reproduced { pending: vec![] });
    assert!(replayed.evaluated() == full.evaluated(), "replay differs from the logged run");

    // cut mid-line inside generation 2: the tail is reported, the complete evaluations are replayed
    let text = std::fs::read_to_string(&path).unwrap();
    let cut = text.match_indices("\"generation\":2").nth(5).unwrap().0;
    std::fs::write(&path, &text[..cut]).unwrap();
    let contents = log::read(&path).unwrap();
    assert!(contents.truncated_tail);
    let (partial, end) = replay(&contents.header, &contents.records).unwrap();
    assert_eq!(partial.generation(), 2);
    match end {
        ReplayEnd::Reproduced { pending } => assert!(!pending.is_empty() && pending.len() < 50),
        other => panic!("{other:?}"),
    }

    // a corrupt middle line is reported with its number
    let mut lines: Vec<&str> = text.lines().collect();
    lines[7] = "{not json";
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    match log::read(&path) {
        Err(EngineError::CorruptLog { line, .. }) => assert_eq!(line, 8),
        other => panic!("{other:?}"),
    }

    // a log from another seed diverges at once
    let _ = std::fs::remove_file(&path);
    write_log(&path, &space, budget(400_000), &params, 11, usize::MAX);
    let mut contents = log::read(&path).unwrap();
    contents.header.seed = 12;
    let (_, end) = replay(&contents.header, &contents.records).unwrap();
    assert!(matches!(end, ReplayEnd::Diverged { generation: 0, index: 0, .. }));
    assert!(LogWriter::create(&path, &contents.header, false).is_err(), "an existing log must not be overwritten");

    // a header without the operators field (an older log) is a search with the reference operators
    let _ = std::fs::remove_file(&path);
    let reference = Params { operators: Operators::Reference, ..params.clone() };
    let full = write_log(&path, &space, budget(400_000), &reference, 11, usize::MAX);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(",\"operators\":\"reference\""));
    std::fs::write(&path, text.replacen(",\"operators\":\"reference\"", "", 1)).unwrap();
    let contents = log::read(&path).unwrap();
    assert_eq!(contents.header.params.operators, Operators::Reference);
    let (replayed, end) = replay(&contents.header, &contents.records).unwrap();
    assert_eq!(end, ReplayEnd::Reproduced { pending: vec![] });
    assert!(replayed.evaluated() == full.evaluated());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A raced fitness: the synthetic fitness plus a per-example offset fixed per genome and example.
struct Raced<'a> {
    forwarded: &'a std::cell::Cell<usize>,
}

impl glora_engine::Fitness for Raced<'_> {
    type Error = ();

    fn scores(&mut self, _: &[Vec<u16>]) -> Result<Vec<f64>, ()> {
        Err(())
    }

    fn per_example(&mut self, genomes: &[Vec<u16>], examples: &[usize]) -> Result<Vec<Vec<f64>>, RunError<()>> {
        self.forwarded.set(self.forwarded.get() + genomes.len() * examples.len());
        let noise = |g: &[u16], e: usize| {
            let h = g.iter().fold(e as u64 * 2654435761, |h, &c| h.wrapping_mul(31).wrapping_add(u64::from(c)));
            ((h % 1000) as f64 / 1000.0 - 0.5) * 4.0
        };
        Ok(genomes.iter().map(|g| examples.iter().map(|&e| fitness(g) + noise(g, e)).collect()).collect())
    }
}

#[test]
fn a_raced_search_stops_candidates_logs_them_and_replays_exactly() {
    let dir = std::env::temp_dir().join(format!("glora-engine-raced-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("raced.jsonl");
    let space = vit_space(4);
    let params = Params { racing: Some(80), generations: 8, ..Params::default() };
    let run = Run::open(&space, budget(290_000), &config(&params), 11, "test", Some(&path), false).unwrap();
    let forwarded = std::cell::Cell::new(0);
    let search = run.drive(Raced { forwarded: &forwarded }, |_| Ok(())).unwrap().search;
    let stopped = search.evaluated().iter().filter(|e| !e.complete()).count();
    assert!(stopped > 0 && forwarded.get() < search.evaluated().len() * 80);
    assert!(search.best().unwrap().complete() && search.pareto_front().iter().all(|e| e.complete()));
    let contents = log::read(&path).unwrap();
    let (replayed, end) = replay(&contents.header, &contents.records).unwrap();
    assert_eq!(end, ReplayEnd::Reproduced { pending: vec![] });
    assert_eq!(replayed.evaluated(), search.evaluated());
    // the same search without racing forwards every example of every candidate
    let whole = Search::new(&space, budget(290_000), Params { racing: None, ..params.clone() }, 11).unwrap();
    assert!(whole.bar().is_none());
    // a fitness without scores per example is refused by name
    let path2 = dir.join("plain.jsonl");
    let run = Run::open(&space, budget(290_000), &config(&params), 11, "test", Some(&path2), false).unwrap();
    let plain = |batch: &[Vec<u16>]| Ok::<_, ()>(batch.iter().map(|g| fitness(g)).collect());
    assert!(matches!(run.drive(plain, |_| Ok(())), Err(RunError::Engine(EngineError::NoExampleScores))));
    std::fs::remove_dir_all(&dir).unwrap();
}
