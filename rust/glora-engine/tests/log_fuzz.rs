//! The log reader, replay and resume on mutated logs (byte flips, truncations, line swaps, field deletions, huge
//! numbers): every input is read or refused with an error, never a panic.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::{budget, fitness, layer};
use glora_engine::driver::Run;
use glora_engine::{replay, NonFinite, Params, SearchConfig, Space};
use proptest::prelude::*;
use serde_json::Value as Json;

fn space() -> Space {
    Space { layers: vec![layer("a", 16, 8, 2), layer("b", 8, 16, 2)] }
}

fn config() -> SearchConfig {
    let params =
        Params { population: 12, parents: 4, mutants: 5, crossovers: 5, generations: 3, nonfinite: NonFinite::Worst, ..Params::default() };
    SearchConfig { params, threads: Some(1), metric: Some("neg_loss".into()) }
}

/// The same search raced over 8 examples.
fn raced_config() -> SearchConfig {
    let c = config();
    SearchConfig { params: Params { racing: Some(8), ..c.params }, ..c }
}

/// Scores per example: the synthetic fitness spread over the examples, one non-finite row per call.
struct PerExample;

impl glora_engine::Fitness for PerExample {
    type Error = ();

    fn scores(&mut self, _: &[Vec<u16>]) -> Result<Vec<f64>, ()> {
        Err(())
    }

    fn per_example(&mut self, genomes: &[Vec<u16>], examples: &[usize]) -> Result<Vec<Vec<f64>>, glora_engine::RunError<()>> {
        let row = |i: usize, g: &[u16]| {
            examples.iter().map(|&e| if i == 0 { f64::NAN } else { fitness(g) + (e % 3) as f64 - 4.0 * (g[0] % 2) as f64 }).collect()
        };
        Ok(genomes.iter().enumerate().map(|(i, g)| row(i, g)).collect())
    }
}

/// A complete raced log (stopped and complete candidates, a non-finite one per call).
fn raced_source() -> &'static str {
    static LOG: OnceLock<String> = OnceLock::new();
    LOG.get_or_init(|| {
        let path = dir().join("raced-source.jsonl");
        let _ = std::fs::remove_file(&path);
        let run = Run::open(&space(), budget(150), &raced_config(), 3, "test", Some(&path), false).unwrap();
        run.drive(PerExample, |_| Ok(())).unwrap();
        std::fs::read_to_string(&path).unwrap()
    })
}

fn dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("glora-log-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A complete log with one non-finite score per generation.
fn source() -> &'static str {
    static LOG: OnceLock<String> = OnceLock::new();
    LOG.get_or_init(|| {
        let path = dir().join("source.jsonl");
        let _ = std::fs::remove_file(&path);
        let run = Run::open(&space(), budget(150), &config(), 3, "test", Some(&path), false).unwrap();
        let evaluate =
            |batch: &[Vec<u16>]| Ok::<_, ()>(batch.iter().enumerate().map(|(i, g)| if i == 0 { f64::NAN } else { fitness(g) }).collect());
        run.drive(evaluate, |_| Ok(())).unwrap();
        std::fs::read_to_string(&path).unwrap()
    })
}

fn json_paths(value: &Json, prefix: Vec<Json>, out: &mut Vec<Vec<Json>>) {
    let children: Vec<(Json, &Json)> = match value {
        Json::Object(map) => map.iter().map(|(k, v)| (Json::from(k.as_str()), v)).collect(),
        Json::Array(items) => items.iter().enumerate().map(|(i, v)| (Json::from(i), v)).collect(),
        _ => Vec::new(),
    };
    for (key, child) in children {
        let mut path = prefix.clone();
        path.push(key);
        out.push(path.clone());
        json_paths(child, path, out);
    }
}

fn parent_of<'a>(value: &'a mut Json, path: &[Json]) -> &'a mut Json {
    path.iter().fold(value, |v, key| match key {
        Json::String(k) => &mut v[k.as_str()],
        _ => &mut v[key.as_u64().unwrap() as usize],
    })
}

const REPLACEMENTS: [&str; 10] =
    ["1e400", "-1", "18446744073709551616", "9223372036854775808", "1000000000000", "0", "null", "\"x\"", "[]", "65536"];

/// Delete (`replace` None) or replace the field at `pick` of line `line`'s JSON.
fn edit_field(text: &str, line: usize, pick: usize, replace: Option<usize>) -> String {
    let mut lines: Vec<String> = text.split('\n').map(String::from).collect();
    let line = line % lines.len();
    let Ok(mut value) = serde_json::from_str::<Json>(&lines[line]) else { return text.into() };
    let mut paths = Vec::new();
    json_paths(&value, Vec::new(), &mut paths);
    if paths.is_empty() {
        return text.into();
    }
    let path = &paths[pick % paths.len()];
    let (last, head) = path.split_last().unwrap();
    let parent = parent_of(&mut value, head);
    match (replace, last, parent) {
        (None, Json::String(k), Json::Object(map)) => drop(map.remove(k.as_str())),
        (None, key, Json::Array(items)) => drop(items.remove(key.as_u64().unwrap() as usize)),
        (Some(r), Json::String(k), Json::Object(map)) => drop(map.insert(k.clone(), raw(r))),
        (Some(r), key, Json::Array(items)) => items[key.as_u64().unwrap() as usize] = raw(r),
        _ => return text.into(),
    }
    lines[line] = value.to_string().replace("\"__RAW__1e400\"", "1e400");
    lines.join("\n")
}

fn raw(index: usize) -> Json {
    match REPLACEMENTS[index % REPLACEMENTS.len()] {
        "1e400" => Json::from("__RAW__1e400"),
        text => serde_json::from_str(text).unwrap_or(Json::Null),
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(Vec<(usize, u8)>),
    Truncate(usize),
    Swap(usize, usize),
    Delete(usize, usize),
    Replace(usize, usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        prop::collection::vec((any::<usize>(), any::<u8>()), 1..5).prop_map(Mutation::Flip),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::Swap(a, b)),
        (prop_oneof![Just(0usize), any::<usize>()], any::<usize>()).prop_map(|(l, p)| Mutation::Delete(l, p)),
        (prop_oneof![Just(0usize), any::<usize>()], any::<usize>(), any::<usize>()).prop_map(|(l, p, r)| Mutation::Replace(l, p, r)),
    ]
}

fn apply(text: &str, mutation: &Mutation) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    match mutation {
        Mutation::Flip(flips) => {
            for &(at, byte) in flips {
                let n = bytes.len();
                bytes[at % n] = byte;
            }
            bytes
        }
        Mutation::Truncate(at) => bytes[..at % bytes.len()].to_vec(),
        Mutation::Swap(a, b) => {
            let mut lines: Vec<&str> = text.split('\n').collect();
            let n = lines.len();
            lines.swap(a % n, b % n);
            lines.join("\n").into_bytes()
        }
        Mutation::Delete(line, pick) => edit_field(text, *line, *pick, None).into_bytes(),
        Mutation::Replace(line, pick, r) => edit_field(text, *line, *pick, Some(*r)).into_bytes(),
    }
}

fn exercise(path: &Path, config: &SearchConfig) {
    let _ = replay::report(path);
    let _ = Run::open(&space(), budget(150), config, 3, "test", Some(path), true);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn mutated_logs_are_read_or_refused_never_a_panic(mutation in mutation(), case in any::<u64>()) {
        let path = dir().join(format!("case-{case}.jsonl"));
        std::fs::write(&path, apply(source(), &mutation)).unwrap();
        exercise(&path, &config());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn mutated_raced_logs_are_read_or_refused_never_a_panic(mutation in mutation(), case in any::<u64>()) {
        let path = dir().join(format!("raced-{case}.jsonl"));
        std::fs::write(&path, apply(raced_source(), &mutation)).unwrap();
        exercise(&path, &raced_config());
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn the_raced_source_log_replays_with_stopped_and_complete_candidates() {
    let path = dir().join("raced-intact.jsonl");
    std::fs::write(&path, raced_source()).unwrap();
    let report = replay::report(&path).unwrap();
    assert!(matches!(report.end, replay::ReplayEnd::Reproduced { .. }) && report.search.is_done());
    let evaluated = report.search.evaluated();
    assert!(evaluated.iter().any(|e| e.complete()) && evaluated.iter().any(|e| e.stopped_after.is_some_and(|m| m < 8)));
    assert!(Run::open(&space(), budget(150), &raced_config(), 3, "test", Some(&path), true).is_ok());
    let err = Run::open(&space(), budget(150), &config(), 3, "test", Some(&path), true).err().unwrap().to_string();
    assert!(err.contains("racing 8 (log) vs null (this search)"), "{err}");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn the_source_log_replays_and_resumes() {
    let path = dir().join("intact.jsonl");
    std::fs::write(&path, source()).unwrap();
    let report = replay::report(&path).unwrap();
    assert!(matches!(report.end, replay::ReplayEnd::Reproduced { .. }) && report.search.is_done());
    assert_eq!(report.header.metric.as_deref(), Some("neg_loss"));
    assert!(report.search.evaluated().iter().any(|e| e.score == f64::NEG_INFINITY));
    assert!(Run::open(&space(), budget(150), &config(), 3, "test", Some(&path), true).is_ok());
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn resume_compares_metrics_only_when_both_name_one() {
    let path = dir().join("metric.jsonl");
    std::fs::write(&path, source()).unwrap();
    let named = |metric: Option<&str>| SearchConfig { metric: metric.map(String::from), ..config() };
    let open = |metric: Option<&str>| Run::open(&space(), budget(150), &named(metric), 3, "test", Some(&path), true);
    assert!(open(Some("neg_loss")).is_ok());
    assert!(open(None).is_ok());
    let err = open(Some("accuracy")).err().expect("another metric is refused").to_string();
    assert!(err.contains("metric 'neg_loss' (log) vs 'accuracy' (this search)"), "{err}");
    // a log written without a metric (older logs) resumes under a named one, and still reads
    let unnamed = dir().join("unnamed.jsonl");
    let _ = std::fs::remove_file(&unnamed);
    let run = Run::open(&space(), budget(150), &named(None), 3, "test", Some(&unnamed), false).unwrap();
    run.drive(|batch: &[Vec<u16>]| Ok::<_, ()>(batch.iter().map(|g| fitness(g)).collect()), |_| Ok(())).unwrap();
    assert!(!std::fs::read_to_string(&unnamed).unwrap().lines().next().unwrap().contains("metric"));
    assert_eq!(replay::report(&unnamed).unwrap().header.metric, None);
    assert!(Run::open(&space(), budget(150), &named(Some("accuracy")), 3, "test", Some(&unnamed), true).is_ok());
    std::fs::remove_file(&path).unwrap();
    std::fs::remove_file(&unnamed).unwrap();
}
