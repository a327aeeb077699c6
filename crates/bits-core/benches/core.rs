//! Micro-benchmarks of bits-core's hot paths that do no I/O: flag parsing and
//! validation, the state machine step, and the progress bookkeeping the
//! engine and the CLI do on every chunk and every file.
//!
//! `cargo bench -p bits-core` (not run in CI; it only has to compile under
//! `cargo clippy --all-targets`).

use std::hint::black_box;
use std::path::PathBuf;

use bits_core::state::{check_operation, next_state};
use bits_core::{Event, Job, JobState, JobType, Operation, SecurityFlags};
use criterion::{criterion_group, criterion_main, Criterion};

fn flags(c: &mut Criterion) {
    let mut g = c.benchmark_group("flags");
    g.bench_function("parse hex 0x0104", |b| {
        b.iter(|| SecurityFlags::parse(black_box("0x0104")))
    });
    g.bench_function("parse decimal 260", |b| {
        b.iter(|| SecurityFlags::parse(black_box("260")))
    });
    g.bench_function("parse invalid 0x0300", |b| {
        b.iter(|| SecurityFlags::parse(black_box("0x0300")))
    });
    g.bench_function("new: validate 0..0x1000", |b| {
        b.iter(|| {
            let mut ok = 0u32;
            for bits in 0..0x1000u32 {
                ok += u32::from(SecurityFlags::new(black_box(bits)).is_ok());
            }
            ok
        })
    });
    g.bench_function("redirect_policy + cert_bits", |b| {
        let f = SecurityFlags::parse("0x010C").expect("valid flags");
        b.iter(|| {
            let f = black_box(f);
            (f.redirect_policy(), f.cert_bits(), f.crl_check())
        })
    });
    g.finish();
}

fn state(c: &mut Criterion) {
    let mut g = c.benchmark_group("state");
    g.bench_function("next_state: every (state, event)", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for s in JobState::ALL {
                for e in Event::ALL {
                    n += next_state(black_box(s), black_box(e)) as usize;
                }
            }
            n
        })
    });
    g.bench_function("check_operation: every (state, op)", |b| {
        b.iter(|| {
            let mut ok = 0usize;
            for s in JobState::ALL {
                for op in Operation::ALL {
                    ok +=
                        usize::from(check_operation(black_box(s), JobType::Download, black_box(op)).is_ok());
                }
            }
            ok
        })
    });
    g.bench_function("Job::apply BytesMoved (the per-chunk step)", |b| {
        let mut job = job_with_files(1);
        job.resume().expect("resume");
        job.apply(Event::Scheduled);
        job.apply(Event::Connected);
        b.iter(|| job.apply(black_box(Event::BytesMoved)))
    });
    g.finish();
}

/// A download job with `n` files, suspended.
fn job_with_files(n: usize) -> Job {
    let mut job = Job::new("bench", JobType::Download, "openssl");
    for i in 0..n {
        job.add_file(
            &format!("https://127.0.0.1:8443/many/f{i:05}.bin"),
            &PathBuf::from(format!("/tmp/bench/f{i:05}.bin")),
        )
        .expect("valid file");
    }
    job
}

fn progress(c: &mut Criterion) {
    let mut g = c.benchmark_group("progress");
    for n in [1usize, 2000] {
        let mut job = job_with_files(n);
        // Half the files done, as in the middle of a many-file job.
        for (i, f) in job.files.iter_mut().enumerate() {
            f.bytes_total = Some(16384);
            if i < n / 2 {
                f.bytes_transferred = 16384;
                f.completed = true;
            }
        }
        g.bench_function(format!("totals ({n} files)"), |b| {
            b.iter(|| {
                let j = black_box(&job);
                (j.bytes_total(), j.bytes_transferred(), j.files_transferred())
            })
        });
        g.bench_function(format!("next_file ({n} files)"), |b| {
            b.iter(|| black_box(&job).next_file())
        });
        g.bench_function(
            format!("chunk: add bytes + apply + note_progress ({n} files)"),
            |b| {
                let mut job = job.clone();
                let i = n / 2;
                b.iter(|| {
                    job.files[i].bytes_transferred += black_box(16384);
                    job.note_progress();
                    job.apply(Event::BytesMoved)
                })
            },
        );
        g.bench_function(format!("clone the job ({n} files)"), |b| {
            b.iter(|| black_box(&job).clone())
        });
    }
    g.finish();
}

criterion_group!(benches, flags, state, progress);
criterion_main!(benches);
