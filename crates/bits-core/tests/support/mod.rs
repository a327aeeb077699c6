//! Shared set-up of the engine's integration tests: a real HTTP/1.1 server
//! on 127.0.0.1 (`bits_testkit::http`), the real plain-HTTP transport
//! (`bits_http::PlainHttp`), and jobs whose files live in a temp directory.

#![allow(dead_code, reason = "each test binary uses part of the support module")]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bits_core::{Engine, ErrorContext, Job, JobState, JobType, NoObserver, RunOutcome};
use bits_http::PlainHttp;
pub use bits_testkit::http::{HttpServer, Route};

/// A deterministic body of `len` bytes (no repeating short pattern, so a
/// misplaced range shows).
pub fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 31 + i / 251) % 253) as u8).collect()
}

/// The engine over the real plain-HTTP transport.
pub fn engine() -> Engine {
    Engine::new(Arc::new(PlainHttp::new()))
}

/// A server, a temp directory and a QUEUED job downloading `paths` of the
/// server into files `f0`, `f1`… of the directory.
pub struct Env {
    pub server: HttpServer,
    pub dir: tempfile::TempDir,
    pub job: Job,
    pub engine: Engine,
}

impl Env {
    pub fn new(routes: &[(&str, Route)]) -> Env {
        let server = HttpServer::start();
        for (path, route) in routes {
            server.set(path, route.clone());
        }
        let dir = tempfile::tempdir().unwrap();
        let mut job = Job::new("it", JobType::Download, "plain");
        for (n, (path, _)) in routes.iter().enumerate() {
            job.add_file(&server.url(path), &dir.path().join(format!("f{n}")))
                .unwrap();
        }
        job.resume().unwrap();
        Env {
            server,
            dir,
            job,
            engine: engine(),
        }
    }

    /// A job of only the first `n` routes (the others are redirect targets).
    pub fn files(mut self, n: usize) -> Env {
        self.job.files.truncate(n);
        self
    }

    pub fn flags(mut self, bits: u32) -> Env {
        self.job.security_flags = bits_core::SecurityFlags::new(bits).unwrap();
        self
    }

    pub async fn run(&mut self) -> RunOutcome {
        self.engine.run(&mut self.job, &mut NoObserver).await
    }

    /// Fires the retry timer of a TRANSIENT_ERROR job and runs it again.
    pub async fn retry(&mut self) -> RunOutcome {
        assert_eq!(self.job.state(), JobState::TransientError);
        self.job.apply(bits_core::Event::RetryTimer);
        self.run().await
    }

    pub fn temp(&self, n: usize) -> PathBuf {
        self.job.files[n].temp_name.clone()
    }

    pub fn local(&self, n: usize) -> PathBuf {
        self.job.files[n].local_name.clone()
    }

    /// The job's error as (code, context, file index).
    pub fn error(&self) -> Option<(u32, ErrorContext, Option<usize>)> {
        self.job
            .error
            .as_ref()
            .map(|e| (e.code.0, e.context, e.file_index))
    }

    /// The `Range` headers of the requests for `path`, in order.
    pub fn ranges(&self, path: &str) -> Vec<Option<String>> {
        self.server
            .requests_for(path)
            .iter()
            .map(|r| r.range().map(str::to_string))
            .collect()
    }
}

pub fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// The job's counters agree with the temporary files on disk.
pub fn assert_counters_match_disk(job: &Job) {
    for f in &job.files {
        let on_disk = std::fs::metadata(&f.temp_name).map(|m| m.len()).unwrap_or(0);
        if !f.completed || f.temp_name.exists() {
            assert_eq!(f.bytes_transferred, on_disk, "{}", f.temp_name.display());
        }
    }
}

/// A source file `dir/NAME` of `len` bytes ([`body`]) and a QUEUED job of
/// `kind` that uploads it to `http://ADDR/up/NAME`.
pub fn upload_job(
    dir: &Path,
    addr: std::net::SocketAddr,
    kind: JobType,
    name: &str,
    len: usize,
) -> (Job, PathBuf) {
    let source = dir.join(name);
    std::fs::write(&source, body(len)).unwrap();
    let mut job = Job::new("up", kind, "plain");
    job.add_file(&format!("http://{addr}/up/{name}"), &source)
        .unwrap();
    job.resume().unwrap();
    (job, source)
}
