//! The Parzen kernel's layouts and the LSCV terms, single thread:
//!
//! - `precompute/*`: building each layout for n = 1e6, d = 2 (N(0, I), seed 123, point 0):
//!   `distances` and `index` write into buffers allocated and touched once outside the
//!   timing (as a caller's shared-memory buffers are); `prepared_new` (a `PreparedIndex`) allocates its own
//!   (page faults included); `u32_keys` the keys of the u32 variant; `partial_*` a
//!   `PartialIndex` for 100 widths (its own small allocations included).
//! - `widths/*`: counting 100 widths (`linspace(1.0, 1.2, 100)` and `linspace(0.1, 1.2,
//!   100)`) with each layout; throughput is samples × widths, so criterion's elements/s
//!   is the inverse of ns per sample per width.
//! - `lscv/*`: the LSCV terms at n = 1e4, d = 2, N(0, I): single widths (throughput in
//!   candidate pairs), 100-width sweeps over 1.0..1.2 and 0.1..1.2, and the preparation.
//!
//! Run with `cargo bench -p parzen --bench kernel` (filter: `-- widths`). Figures from one
//! run on the 2-core AMD EPYC VM are in the `estimate` and `lscv` module docs.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput};
use parzen::estimate::{BucketKey, IndexView, count_scan, fill_distances, fill_index};
use parzen::{Gaussian, Lscv, PartialIndex, PreparedIndex, Samples};

const N: usize = 1_000_000;

fn linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| a + (b - a) * i as f64 / (n - 1) as f64)
        .collect()
}

fn half_width(h: f64) -> f64 {
    let t = 0.5 * h;
    if t * 2.0 > h {
        f64::from_bits(t.to_bits() - 1)
    } else {
        t
    }
}

/// The u32-key variant tried and not kept: keys are the top 32 bits of each distance's bit
/// pattern (monotone), one pass counts `key < key(t)` and `key == key(t)` in u32 lanes, and
/// only when some key equals `key(t)` a second pass resolves those against the f64 values.
fn count_u32(keys: &[u32], dists: &[f64], h: f64) -> u64 {
    let t = half_width(h);
    let kt = (t.to_bits() >> 32) as u32;
    let (mut below, mut equal) = (0u64, 0u64);
    for block in keys.chunks(1 << 16) {
        let mut lt = [0u32; 16];
        let mut eq = [0u32; 16];
        let mut chunks = block.chunks_exact(16);
        for c in &mut chunks {
            for i in 0..16 {
                lt[i] += u32::from(c[i] < kt);
                eq[i] += u32::from(c[i] == kt);
            }
        }
        for &k in chunks.remainder() {
            below += u64::from(k < kt);
            equal += u64::from(k == kt);
        }
        below += lt.iter().map(|&v| u64::from(v)).sum::<u64>();
        equal += eq.iter().map(|&v| u64::from(v)).sum::<u64>();
    }
    if equal > 0 {
        below += keys
            .iter()
            .zip(dists)
            .filter(|&(&k, &d)| k == kt && d <= t)
            .count() as u64;
    }
    below
}

fn samples() -> Samples {
    match Gaussian::standard(2).and_then(|g| g.sample(N, 123)) {
        Ok(s) => s,
        Err(e) => panic!("sampling failed: {e}"),
    }
}

fn bench(c: &mut Criterion) {
    let s = samples();
    let p = [0.0, 0.0];
    let key = BucketKey::for_samples(&s, &p).unwrap();
    let mut dists = vec![0.0; N];
    let mut offsets = vec![0u64; key.offsets_len()];
    let mut values = vec![0.0; N];
    let mut keys = vec![0u32; N];
    fill_distances(&s, &p, &mut dists).unwrap();
    fill_index(&s, &p, &key, &mut offsets, &mut values).unwrap();
    for (k, d) in keys.iter_mut().zip(&dists) {
        *k = (d.to_bits() >> 32) as u32;
    }

    let mut g = c.benchmark_group("precompute");
    g.sample_size(20);
    g.bench_function("distances", |b| {
        b.iter(|| fill_distances(&s, &p, black_box(&mut dists)).unwrap())
    });
    g.bench_function("index", |b| {
        b.iter(|| {
            let key = BucketKey::for_samples(&s, &p).unwrap();
            fill_index(
                &s,
                &p,
                &key,
                black_box(&mut offsets),
                black_box(&mut values),
            )
            .unwrap()
        })
    });
    g.bench_function("u32_keys", |b| {
        b.iter(|| {
            fill_distances(&s, &p, &mut dists).unwrap();
            for (k, d) in keys.iter_mut().zip(&dists) {
                *k = (d.to_bits() >> 32) as u32;
            }
            black_box(&keys);
        })
    });
    for (name, widths) in [
        ("partial_1.0-1.2", linspace(1.0, 1.2, 100)),
        ("partial_0.1-1.2", linspace(0.1, 1.2, 100)),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| PartialIndex::new(&s, &p, black_box(&widths)).unwrap())
        });
    }
    g.bench_function("prepared_new", |b| {
        b.iter_batched(
            || (),
            |()| PreparedIndex::new(&s, &p).unwrap(),
            BatchSize::PerIteration,
        )
    });
    g.finish();

    let view = IndexView::new(key, 2, &offsets, &values).unwrap();
    for (name, widths) in [
        ("1.0-1.2", linspace(1.0, 1.2, 100)),
        ("0.1-1.2", linspace(0.1, 1.2, 100)),
    ] {
        let expect: Vec<u64> = widths.iter().map(|&h| count_scan(&dists, h)).collect();
        let got: Vec<u64> = widths.iter().map(|&h| view.count(h)).collect();
        assert_eq!(got, expect, "index and scan disagree");
        let got: Vec<u64> = widths
            .iter()
            .map(|&h| count_u32(&keys, &dists, h))
            .collect();
        assert_eq!(got, expect, "u32 keys and scan disagree");

        let mut g = c.benchmark_group(format!("widths/{name}"));
        g.throughput(Throughput::Elements((N * widths.len()) as u64));
        g.sample_size(10);
        g.bench_function("scan_f64", |b| {
            b.iter(|| {
                widths
                    .iter()
                    .map(|&h| count_scan(black_box(&dists), h))
                    .sum::<u64>()
            })
        });
        g.bench_function("scan_u32_keys", |b| {
            b.iter(|| {
                widths
                    .iter()
                    .map(|&h| count_u32(black_box(&keys), &dists, h))
                    .sum::<u64>()
            })
        });
        g.bench_function("index", |b| {
            b.iter(|| {
                widths
                    .iter()
                    .map(|&h| black_box(view).count(h))
                    .sum::<u64>()
            })
        });
        g.finish();
    }
}

/// LSCV terms at n = 1e4, d = 2, N(0, I): single widths (throughput = candidate pairs, so
/// elements/s is pairs per second) and whole 100-width sweeps.
fn bench_lscv(c: &mut Criterion) {
    let n = 10_000;
    let s = match Gaussian::standard(2).and_then(|g| g.sample(n, 123)) {
        Ok(s) => s,
        Err(e) => panic!("sampling failed: {e}"),
    };
    let lscv = Lscv::new(&s).unwrap();
    let view = lscv.view();
    let mut g = c.benchmark_group("lscv/width");
    g.sample_size(10);
    for h in [0.1, 0.5, 1.0, 1.2] {
        g.throughput(Throughput::Elements(view.candidate_pairs(h)));
        g.bench_function(format!("h={h}"), |b| b.iter(|| view.terms(black_box(h))));
    }
    g.finish();
    let mut g = c.benchmark_group("lscv/sweep");
    g.sample_size(10);
    for (name, widths) in [
        ("1.0-1.2", linspace(1.0, 1.2, 100)),
        ("0.1-1.2", linspace(0.1, 1.2, 100)),
    ] {
        let pairs: u64 = widths.iter().map(|&h| view.candidate_pairs(h)).sum();
        g.throughput(Throughput::Elements(pairs));
        g.bench_function(name, |b| {
            b.iter(|| widths.iter().map(|&h| view.terms(h).c).sum::<u64>())
        });
    }
    g.finish();
    let mut g = c.benchmark_group("lscv/prepare");
    g.sample_size(10);
    g.bench_function("n=1e4", |b| b.iter(|| Lscv::new(black_box(&s)).unwrap()));
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_lscv(&mut c);
    bench(&mut c);
    c.final_summary();
}
