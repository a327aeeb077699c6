//! Micro-benchmark of the store's progress write: `Store::save` of a job
//! with 1 and 2,000 files into a real SQLite file, as the daemon does on
//! every state change and file done, and reading it back, as `bits wait`
//! and `transfer` do every 200 ms.
//!
//! `bits-cli` is a binary without a library target, so the bench compiles
//! the store module (`src/store/`) and the error module it uses from `src/`
//! directly. Under `cargo clippy --all-targets` their unit tests are compiled in too,
//! hence `unused_imports`. `cargo bench -p bits-cli --bench store` (not run in CI).

#[allow(dead_code, unused_imports, missing_docs, missing_debug_implementations)]
#[path = "../src/error.rs"]
mod error;
#[allow(dead_code, unused_imports, missing_docs, missing_debug_implementations)]
#[path = "../src/store/mod.rs"]
mod store;

use std::hint::black_box;
use std::path::PathBuf;

use bits_core::{Job, JobType};
use criterion::{criterion_group, criterion_main, Criterion};

/// A download job with `n` files, half of them done.
fn job_with_files(n: usize) -> Job {
    let mut job = Job::new("bench", JobType::Download, "openssl");
    for i in 0..n {
        job.add_file(
            &format!("https://127.0.0.1:8443/many/f{i:05}.bin"),
            &PathBuf::from(format!("/tmp/bench/f{i:05}.bin")),
        )
        .expect("valid file");
    }
    for (i, f) in job.files.iter_mut().enumerate() {
        f.bytes_total = Some(16384);
        if i < n / 2 {
            f.bytes_transferred = 16384;
            f.completed = true;
        }
    }
    job
}

fn save(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = store::Store::open(&dir.path().join("store")).expect("store");
    let mut g = c.benchmark_group("store");
    for n in [1usize, 2000] {
        let mut job = job_with_files(n);
        store.insert(&job).expect("insert");
        g.bench_function(format!("save progress ({n} files)"), |b| {
            b.iter(|| {
                job.files[n / 2].bytes_transferred += 1;
                store.save(black_box(&job)).expect("save")
            })
        });
        g.bench_function(format!("get ({n} files)"), |b| {
            b.iter(|| store.get(black_box(job.id)).expect("get"))
        });
    }
    g.finish();
}

criterion_group!(benches, save);
criterion_main!(benches);
