//! Criterion benchmarks of diff and apply per level, on a synthetic pair.
//! Side-by-side ratios against other tools on the real corpus: scripts/compare.sh.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use deltaward_engine::{
    apply, generate_keypair, ApplyOptions, BuildOptions, Level, Patch, SecretKey, TrustedKeys,
};

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

criterion_group!(benches, bench);
criterion_main!(benches);
