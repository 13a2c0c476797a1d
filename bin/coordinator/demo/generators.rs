//! `demo generators`: the seed's `yield` half in Rust terms.
//!
//! 1. A lazy, endless job source (Rust's iterators are lazy like Python's generators)
//!    feeding `imap`, stopped after `k` results: the pool pulls input only as its
//!    in-flight window frees up, so it pulls and computes a bounded number of jobs.
//! 2. The seed's ATM: a generator, once exhausted, stays exhausted; in Rust that is a
//!    *fused* iterator, and a plain one may start giving again. A new one starts fresh.
//! 3. The seed's tree search, whose candidate list grows while it is consumed, written as
//!    an iterator over the matches: here on the seed's 10,000 Gaussian samples, in a
//!    vantage-point tree, which is what the seed's `_median` and child rules describe.

use procpool::{Backend, Pool, Registry, Task};
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::io::{self, Write};

/// Errors of a demo, boxed: every one ends the demo with its message.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// `x^3`, after 1 ms of pretend work (a job that costs nothing would let the pool keep
/// thousands in flight, which is right for throughput but hides the point here).
#[derive(Serialize, Deserialize)]
struct Cube(u64);

impl Task for Cube {
    const NAME: &'static str = "demo-generators-cube";
    type Context = ();
    type Output = u64;
    fn run(self, _: &()) -> u64 {
        std::thread::sleep(std::time::Duration::from_millis(1));
        self.0.pow(3)
    }
}

/// Registers this demo's task.
pub fn register(registry: Registry) -> Registry {
    registry.task::<Cube>()
}

/// Settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Workers.
    pub workers: usize,
    /// Results to take from the endless source.
    pub take: usize,
    /// Samples in the tree.
    pub samples: usize,
    /// The tree search's radius around the origin.
    pub radius: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            workers: 2,
            take: 10,
            samples: 10_000,
            radius: 0.2,
        }
    }
}

/// Part 1: an endless source feeding `imap`.
#[derive(Debug, Serialize)]
pub struct Endless {
    /// Jobs pulled from the source before any result was asked for.
    pub pulled_before_use: u64,
    /// `k`: results taken.
    pub k: usize,
    /// The first `k` cubes, in order.
    pub results: Vec<u64>,
    /// Jobs the pool pulled from the source.
    pub pulled: u64,
    /// Jobs the workers actually computed (results that came back, taken or not).
    pub computed: u64,
    /// The largest in-flight window the pool used.
    pub window: usize,
}

/// Part 2: the seed's ATM, step by step.
#[derive(Debug, Serialize)]
pub struct Atm {
    /// Each step: what was done, and what came out (`None`: exhausted).
    pub steps: Vec<(String, Vec<Option<String>>)>,
}

/// Part 3: the tree search.
#[derive(Debug, Serialize)]
pub struct TreeSearch {
    /// Samples in the tree (one per node).
    pub nodes: usize,
    /// The tree's depth.
    pub depth: usize,
    /// The search radius around the origin.
    pub radius: f64,
    /// Samples the search found within the radius.
    pub found: usize,
    /// Found by checking every sample, for comparison.
    pub brute_force: usize,
    /// Nodes the search looked at.
    pub visited: usize,
    /// The longest the candidate list got.
    pub peak_candidates: usize,
    /// The first matches, in the order the iterator yielded them.
    pub first: Vec<[f64; 2]>,
    /// `found / (n * pi * r^2)`: the density at the origin through a round window.
    pub density: f64,
}

/// What the demo saw.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Part 1.
    pub endless: Endless,
    /// Part 2.
    pub atm: Atm,
    /// Part 3.
    pub tree: TreeSearch,
}

/// Runs the demo.
pub fn run(opts: &Options) -> Result<Report, Error> {
    Ok(Report {
        endless: endless(opts)?,
        atm: atm(),
        tree: tree_search(opts)?,
    })
}

fn endless(opts: &Options) -> Result<Endless, Error> {
    let pool = Pool::<Cube>::builder()
        .workers(opts.workers)
        .backend(Backend::Process)
        .build()?;
    let pulled = Cell::new(0u64);
    // Like `(cube(x) for x in itertools.count(1))`: creating it runs nothing.
    let source = (1..).map(|x| {
        pulled.set(pulled.get() + 1);
        Cube(x)
    });
    let pulled_before_use = pulled.get();
    let mut window = pool.window();
    let mut results = Vec::new();
    for r in pool.imap(source).take(opts.take) {
        results.push(r?);
        window = window.max(pool.window());
    }
    // The imap is dropped: jobs pulled but not started are withdrawn; join waits for the
    // ones already running, so the count below is complete.
    pool.join();
    Ok(Endless {
        pulled_before_use,
        k: opts.take,
        results,
        pulled: pulled.get(),
        computed: pool.stats().jobs_done,
        window,
    })
}

/// The seed's `Bank`: its ATMs give while there is no crisis.
struct Bank {
    crisis: Cell<bool>,
}

impl Bank {
    /// Like the seed's generator: once it has said "no more", it never gives again.
    fn create_atm(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.create_plain_atm().fuse()
    }

    /// A plain iterator: Rust's `Iterator` contract lets it give again after a `None`.
    fn create_plain_atm(&self) -> impl Iterator<Item = &'static str> + '_ {
        std::iter::from_fn(|| (!self.crisis.get()).then_some("$100"))
    }
}

fn atm() -> Atm {
    let mut steps = Vec::new();
    let mut step = |what: &str, got: Vec<Option<&str>>| {
        let got = got.into_iter().map(|g| g.map(str::to_owned)).collect();
        steps.push((what.to_owned(), got));
    };
    let hsbc = Bank {
        crisis: Cell::new(false),
    };
    let mut corner_street_atm = hsbc.create_atm();
    let two = vec![corner_street_atm.next(), corner_street_atm.next()];
    step("corner_street_atm.next() twice", two);
    let five = corner_street_atm.by_ref().take(5).map(Some).collect();
    step("corner_street_atm.take(5)", five);
    hsbc.crisis.set(true);
    step(
        "crisis: corner_street_atm.next()",
        vec![corner_street_atm.next()],
    );
    let mut wall_street_atm = hsbc.create_atm();
    step(
        "crisis: a new wall_street_atm.next()",
        vec![wall_street_atm.next()],
    );
    let mut plain_atm = hsbc.create_plain_atm();
    step("crisis: a plain (unfused) atm", vec![plain_atm.next()]);
    hsbc.crisis.set(false);
    step(
        "after: corner_street_atm.next()",
        vec![corner_street_atm.next()],
    );
    step(
        "after: wall_street_atm.next()",
        vec![wall_street_atm.next()],
    );
    step("after: the plain atm", vec![plain_atm.next()]);
    let fresh = hsbc.create_atm().take(3).map(Some).collect();
    step("after: brand_new_atm.take(3)", fresh);
    Atm { steps }
}

/// A vantage-point tree node: one sample; inside `median` of it go left, the rest right.
struct Node {
    point: [f64; 2],
    median: f64,
    left: Option<Box<Node>>,
    right: Option<Box<Node>>,
}

fn dist(a: [f64; 2], b: [f64; 2]) -> f64 {
    (a[0] - b[0]).hypot(a[1] - b[1])
}

impl Node {
    /// Builds a tree over `points` (the last one becomes the root's vantage point).
    fn build(mut points: Vec<[f64; 2]>) -> Option<Box<Node>> {
        let point = points.pop()?;
        let mut by_dist: Vec<(f64, [f64; 2])> =
            points.into_iter().map(|p| (dist(point, p), p)).collect();
        let mid = by_dist.len() / 2;
        let median = if by_dist.is_empty() {
            0.0
        } else {
            by_dist.select_nth_unstable_by(mid, |a, b| a.0.total_cmp(&b.0));
            by_dist[mid].0
        };
        let (inside, outside): (Vec<_>, Vec<_>) =
            by_dist.into_iter().partition(|(d, _)| *d < median);
        Some(Box::new(Node {
            point,
            median,
            left: Node::build(inside.into_iter().map(|(_, p)| p).collect()),
            right: Node::build(outside.into_iter().map(|(_, p)| p).collect()),
        }))
    }

    fn depth(&self) -> usize {
        1 + [&self.left, &self.right]
            .iter()
            .filter_map(|c| c.as_deref().map(Node::depth))
            .max()
            .unwrap_or(0)
    }

    /// The seed's `_get_child_candidates`: the children that may hold matches. Yields at
    /// most two values, lazily, like the seed's two `yield`s.
    fn child_candidates(&self, distance: f64, max_dist: f64) -> impl Iterator<Item = &Node> {
        let left = self
            .left
            .as_deref()
            .filter(|_| distance - max_dist < self.median);
        let right = self
            .right
            .as_deref()
            .filter(|_| distance + max_dist >= self.median);
        left.into_iter().chain(right)
    }
}

/// The seed's search loop as an iterator: each `next()` runs the loop until the next match.
struct Within<'t> {
    obj: [f64; 2],
    min_dist: f64,
    max_dist: f64,
    candidates: Vec<&'t Node>,
    visited: usize,
    peak: usize,
}

impl Iterator for Within<'_> {
    type Item = [f64; 2];
    fn next(&mut self) -> Option<[f64; 2]> {
        // `while candidates:` ... `node = candidates.pop()`
        while let Some(node) = self.candidates.pop() {
            self.visited += 1;
            let distance = dist(node.point, self.obj);
            // `candidates.extend(node._get_child_candidates(...))`: extend takes any
            // iterator, as Python's takes any iterable.
            self.candidates
                .extend(node.child_candidates(distance, self.max_dist));
            self.peak = self.peak.max(self.candidates.len());
            if distance <= self.max_dist && distance >= self.min_dist {
                return Some(node.point);
            }
        }
        None
    }
}

fn tree_search(opts: &Options) -> Result<TreeSearch, Error> {
    let samples = parzen::Gaussian::standard(2)?.sample(opts.samples, 123)?;
    let points: Vec<[f64; 2]> = samples.rows().map(|r| [r[0], r[1]]).collect();
    let origin = [0.0, 0.0];
    let brute_force = points
        .iter()
        .filter(|p| dist(**p, origin) <= opts.radius)
        .count();
    let nodes = points.len();
    let root = Node::build(points);
    let depth = root.as_deref().map_or(0, Node::depth);
    let mut search = Within {
        obj: origin,
        min_dist: 0.0,
        max_dist: opts.radius,
        candidates: root.as_deref().into_iter().collect(),
        visited: 0,
        peak: 0,
    };
    let first: Vec<[f64; 2]> = search.by_ref().take(3).collect();
    let found = first.len() + search.by_ref().count();
    Ok(TreeSearch {
        nodes,
        depth,
        radius: opts.radius,
        found,
        brute_force,
        visited: search.visited,
        peak_candidates: search.peak,
        first,
        density: found as f64 / (nodes as f64 * std::f64::consts::PI * opts.radius.powi(2)),
    })
}

impl Report {
    /// Writes the report for people.
    pub fn write_text(&self, out: &mut dyn Write) -> io::Result<()> {
        let e = &self.endless;
        writeln!(out, "1. An endless, lazy job source feeding imap")?;
        writeln!(
            out,
            "  source = (1..).map(Cube): {} jobs pulled on creation (it is lazy)",
            e.pulled_before_use
        )?;
        writeln!(out, "  pool.imap(source).take({}) = {:?}", e.k, e.results)?;
        writeln!(
            out,
            "  pulled {} jobs, computed {}, window {}: computed <= pulled <= k + window = {}",
            e.pulled,
            e.computed,
            e.window,
            e.k + e.window
        )?;
        writeln!(
            out,
            "  Each job takes 1 ms. The pool pulls input only while fewer than `window` \
             positions are in flight or waiting to be read, so an endless source costs a \
             bounded amount of work; dropping the iterator withdraws what was pulled but not \
             yet sent to a worker. (The window adapts: for jobs of a microsecond it grows to \
             thousands, to keep the workers busy.)"
        )?;
        writeln!(
            out,
            "2. The seed's ATM: an exhausted generator stays exhausted"
        )?;
        for (what, got) in &self.atm.steps {
            let got: Vec<&str> = got.iter().map(|g| g.as_deref().unwrap_or("None")).collect();
            writeln!(out, "  {what:<40} {}", got.join(" "))?;
        }
        writeln!(
            out,
            "  Python's generator, once it has returned, raises StopIteration forever; a Rust \
             iterator promises that only when fused (`.fuse()`, or a type marked FusedIterator). \
             The plain one started giving again. A brand-new ATM starts fresh."
        )?;
        let t = &self.tree;
        writeln!(
            out,
            "3. The seed's tree search, as an iterator (candidates grow while being consumed)"
        )?;
        writeln!(
            out,
            "  {} samples of N(0, I) (seed 123) in a vantage-point tree of depth {}",
            t.nodes, t.depth
        )?;
        let first: Vec<String> = t
            .first
            .iter()
            .map(|p| format!("({:.3}, {:.3})", p[0], p[1]))
            .collect();
        writeln!(
            out,
            "  within {} of the origin: {} samples (checking all gives {}); first yielded: {}",
            t.radius,
            t.found,
            t.brute_force,
            first.join(" ")
        )?;
        writeln!(
            out,
            "  the search looked at {} of {} nodes; the candidate list peaked at {}",
            t.visited, t.nodes, t.peak_candidates
        )?;
        writeln!(
            out,
            "  (a round Parzen window: {} / (n pi r^2) = {:.4}, true density 0.1592)",
            t.found, t.density
        )
    }
}
