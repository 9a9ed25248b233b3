//! Criterion benchmarks of each stage on a synthetic pair, with throughput in bytes:
//! `index` (block and anchor indexes of the old image), `match` (every new block
//! against them), `encode` (one 4 MiB delta frame against its window, per coder),
//! `diff` (the whole build per level) and `apply`.
//! Side-by-side ratios against other tools on the real corpus: scripts/compare.sh.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use deltaward_engine::{
    apply,
    fuzzing::{bsdiff_encode, index, match_blocks, zstd_encode, MatchFinder, ZstdSettings},
    generate_keypair, ApplyOptions, BuildOptions, Level, Patch, SecretKey, TrustedKeys,
};

/// The diff's stages on their own.
fn stages(c: &mut Criterion) {
    let (old, new) = deltaward_benches::synthetic_pair(16 << 20);
    let mut g = c.benchmark_group("index");
    g.throughput(Throughput::Bytes(old.len() as u64));
    g.sample_size(10);
    g.bench_function("block+anchor", |b| b.iter(|| index(&old, 4096)));
    g.finish();

    let mut g = c.benchmark_group("match");
    g.throughput(Throughput::Bytes(new.len() as u64));
    g.sample_size(10);
    g.bench_function("blocks", |b| b.iter(|| match_blocks(&old, &new, 4096)));
    g.finish();

    // One delta frame: 4 MiB of the new image against the 8 MiB window around it.
    let (frame, window) = (&new[4 << 20..8 << 20], &old[2 << 20..10 << 20]);
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.sample_size(10);
    for (name, finder, level) in [
        ("bsdiff-hashchain", MatchFinder::HashChain, 3),
        ("bsdiff-sparsehashchain", MatchFinder::SparseHashChain, 3),
        ("bsdiff-suffixarray", MatchFinder::SuffixArray, 19),
    ] {
        let zstd = ZstdSettings {
            level,
            long_distance: false,
        };
        g.bench_function(name, |b| {
            b.iter(|| bsdiff_encode(window, frame, finder, zstd).expect("encode"))
        });
    }
    for level in [3, 6, 19] {
        let s = ZstdSettings {
            level,
            long_distance: true,
        };
        g.bench_with_input(BenchmarkId::new("zstd", level), &s, |b, s| {
            b.iter(|| zstd_encode(window, frame, *s).expect("encode"))
        });
    }
    g.finish();
}

fn bench(c: &mut Criterion) {
    let (old, new) = deltaward_benches::synthetic_pair(16 << 20);
    let kp = generate_keypair(None).expect("keygen");
    let key = SecretKey::from_text(&kp.secret, None).expect("secret");
    let mut trusted = TrustedKeys::new();
    trusted.add_text(&kp.public).expect("public");

    let mut g = c.benchmark_group("diff");
    g.throughput(Throughput::Bytes(new.len() as u64));
    g.sample_size(10);
    for level in [Level::Fast, Level::Default] {
        g.bench_with_input(
            BenchmarkId::from_parameter(level.name()),
            &level,
            |b, &level| {
                b.iter(|| {
                    Patch::build(&old, &new, &BuildOptions::default().level(level)).expect("build")
                })
            },
        );
    }
    g.finish();

    let patch = Patch::build(&old, &new, &BuildOptions::default())
        .expect("build")
        .sign(&key)
        .expect("sign");
    let mut bytes = Vec::new();
    patch.write_to(&mut bytes).expect("write");
    let mut g = c.benchmark_group("apply");
    g.throughput(Throughput::Bytes(new.len() as u64));
    g.sample_size(10);
    g.bench_function("default", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(new.len());
            apply(
                &old.as_slice(),
                &mut bytes.as_slice(),
                &mut out,
                &trusted,
                &ApplyOptions::default(),
                &|_| {},
            )
            .expect("apply");
            out
        })
    });
    g.finish();
}

criterion_group!(benches, stages, bench);
criterion_main!(benches);
