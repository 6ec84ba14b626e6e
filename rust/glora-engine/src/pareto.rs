//! Two objectives, fitness (higher is better) and parameter count (lower is better): non-dominated sorting and
//! crowding distance in the manner of NSGA-II.

/// A point: fitness and parameter count.
#[derive(Clone, Copy, Debug)]
pub struct Point {
    pub score: f64,
    pub params: u64,
}

fn dominates(a: Point, b: Point) -> bool {
    a.score >= b.score && a.params <= b.params && (a.score > b.score || a.params < b.params)
}

/// Indices grouped into fronts: front 0 is non-dominated, front 1 is non-dominated once front 0 is removed, ...
pub fn fronts(points: &[Point]) -> Vec<Vec<usize>> {
    let n = points.len();
    let mut dominated_by = vec![0usize; n];
    let mut dominates_list: Vec<Vec<usize>> = vec![Vec::new(); n];
    for i in 0..n {
        for j in (i + 1)..n {
            if dominates(points[i], points[j]) {
                dominates_list[i].push(j);
                dominated_by[j] += 1;
            } else if dominates(points[j], points[i]) {
                dominates_list[j].push(i);
                dominated_by[i] += 1;
            }
        }
    }
    let mut result = Vec::new();
    let mut current: Vec<usize> = (0..n).filter(|&i| dominated_by[i] == 0).collect();
    while !current.is_empty() {
        let mut next = Vec::new();
        for &i in &current {
            for &j in &dominates_list[i] {
                dominated_by[j] -= 1;
                if dominated_by[j] == 0 {
                    next.push(j);
                }
            }
        }
        next.sort_unstable();
        result.push(current);
        current = next;
    }
    result
}

/// Crowding distance of each member of one front (infinite at the ends of each objective).
pub fn crowding(points: &[Point], front: &[usize]) -> Vec<f64> {
    let m = front.len();
    let mut distance = vec![0.0f64; m];
    if m <= 2 {
        return vec![f64::INFINITY; m];
    }
    let objectives: [&dyn Fn(usize) -> f64; 2] = [&|i| points[i].score, &|i| points[i].params as f64];
    for objective in objectives {
        let mut order: Vec<usize> = (0..m).collect();
        order.sort_by(|&a, &b| objective(front[a]).total_cmp(&objective(front[b])).then(front[a].cmp(&front[b])));
        let lo = objective(front[order[0]]);
        let hi = objective(front[order[m - 1]]);
        distance[order[0]] = f64::INFINITY;
        distance[order[m - 1]] = f64::INFINITY;
        if hi > lo && hi.is_finite() && lo.is_finite() {
            for k in 1..m - 1 {
                distance[order[k]] += (objective(front[order[k + 1]]) - objective(front[order[k - 1]])) / (hi - lo);
            }
        }
    }
    distance
}

/// The first `k` indices by NSGA-II order: front rank, then larger crowding distance, then index.
pub fn select(points: &[Point], k: usize) -> Vec<usize> {
    let mut chosen = Vec::with_capacity(k);
    for front in fronts(points) {
        if chosen.len() >= k {
            break;
        }
        let dist = crowding(points, &front);
        let mut order: Vec<usize> = (0..front.len()).collect();
        order.sort_by(|&a, &b| dist[b].total_cmp(&dist[a]).then(front[a].cmp(&front[b])));
        chosen.extend(order.into_iter().map(|i| front[i]).take(k - chosen.len()));
    }
    chosen
}
