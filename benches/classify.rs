//! Classification throughput on one 512 x 512 tile with a year of history, in pixels per
//! second: the shipped learned model beside the index rules as the peer measured in the same
//! run. Both run in a rayon pool of an explicit size (default 2 threads, or
//! `GENGBAO_BENCH_THREADS`), as in the pipeline; libtorch itself runs one thread per batch.
//! `cargo bench --bench classify`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gengbao::classify::{Classifier, ClassifierInput, IndexBaseline, TorchClassifier};
use gengbao::geo::composite::{ArchivedPeriod, Composite, NdviStats};
use gengbao::geo::sensor::SensorProfile;
use rand::{Rng, SeedableRng};

const SIDE: usize = 512;

fn tile(profile: &SensorProfile) -> (Composite, Vec<ArchivedPeriod>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let n = SIDE * SIDE;
    let bands = ndarray::Array3::from_shape_simple_fn((profile.bands.len(), SIDE, SIDE), || {
        rng.gen_range(0.01f32..0.5)
    });
    let history = (0..5)
        .map(|_| {
            let v: Vec<f32> = (0..n).map(|_| rng.gen_range(-0.1f32..0.9)).collect();
            ArchivedPeriod {
                ndvi: NdviStats {
                    median: v.clone(),
                    min: v.iter().map(|x| x - 0.1).collect(),
                    max: v.iter().map(|x| x + 0.1).collect(),
                },
                bands: None,
            }
        })
        .collect();
    (Composite::single(profile, bands), history)
}

fn classify(c: &mut Criterion) {
    let profile = SensorProfile::by_name("sentinel2-l2a").unwrap();
    let threads: usize = std::env::var("GENGBAO_BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    let (composite, history) = tile(profile);
    let learned = TorchClassifier::builtin(profile).unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let mut group = c.benchmark_group("classify_512x512_tile");
    group.throughput(Throughput::Elements((SIDE * SIDE) as u64));
    group.sample_size(20);
    let input = ClassifierInput {
        profile,
        composite: &composite,
        history: &history,
        runner_up: false,
        wanted: None,
    };
    group.bench_function(format!("learned_{threads}_threads"), |b| {
        b.iter(|| pool.install(|| learned.classify(&input).unwrap()))
    });
    group.bench_function("index_rules", |b| {
        b.iter(|| pool.install(|| IndexBaseline.classify(&input).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, classify);
criterion_main!(benches);
