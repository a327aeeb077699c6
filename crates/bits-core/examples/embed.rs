//! Embedding bits-core with a transport of your own.
//!
//! An application makes a [`Job`], runs it with an [`Engine`] over any
//! [`Transport`], watches it through an [`Observer`], and makes the files
//! real with [`complete`]. Here the transport is an in-memory "server", so
//! the example needs no network:
//!
//! ```text
//! cargo run -p bits-core --example embed
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bits_core::engine::complete;
use bits_core::{
    BitsError, BodyStream, ConnectionPolicy, Engine, Job, JobType, Observer, Request, Response,
    SecurityFlags, Transport,
};
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_RANGE, ETAG, LOCATION, RANGE};
use http::{HeaderMap, HeaderValue};

/// A "server" in memory: paths to bodies, plus one redirect.
#[derive(Debug)]
struct MemoryTransport {
    files: HashMap<&'static str, Bytes>,
}

#[async_trait]
impl Transport for MemoryTransport {
    fn name(&self) -> &str {
        "memory"
    }

    /// This transport has no TLS, so it cannot honour any certificate
    /// setting: it refuses them instead of ignoring them (never ignore more
    /// than asked). Redirect policies are the engine's business.
    fn check_policy(&self, policy: &ConnectionPolicy) -> Result<(), BitsError> {
        if policy.flags().cert_bits() == 0 {
            Ok(())
        } else {
            Err(BitsError::NotImplemented {
                what: format!("{policy}: the memory transport has no TLS"),
            })
        }
    }

    async fn send(&self, request: Request) -> Result<Response, BitsError> {
        if request.url.scheme() != "http" {
            return Err(BitsError::NotImplemented {
                what: "the memory transport serves http:// only".into(),
            });
        }
        let mut headers = HeaderMap::new();
        // Transports never follow redirects: they return them, and the
        // engine applies the job's redirect policy.
        if request.url.path() == "/latest" {
            headers.insert(LOCATION, HeaderValue::from_static("/releases/app-2.0.bin"));
            return Ok(Response {
                status: 302,
                headers,
                version: bits_core::Version::HTTP_11,
                body: Chunks::boxed(Bytes::new()),
            });
        }
        let Some(body) = self.files.get(request.url.path()) else {
            return Ok(Response {
                status: 404,
                headers,
                version: bits_core::Version::HTTP_11,
                body: Chunks::boxed(Bytes::new()),
            });
        };
        headers.insert(ETAG, HeaderValue::from_static("\"v1\""));
        // Honour `Range: bytes=N-` so that an interrupted job resumes.
        let start = request
            .headers
            .get(RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("bytes=")?.strip_suffix('-')?.parse::<usize>().ok())
            .filter(|&n| n < body.len());
        let (status, part) = match start {
            Some(n) => {
                let range = format!("bytes {n}-{}/{}", body.len() - 1, body.len());
                headers.insert(CONTENT_RANGE, HeaderValue::from_str(&range).expect("ascii"));
                (206, body.slice(n..))
            }
            None => (200, body.clone()),
        };
        headers.insert(CONTENT_LENGTH, HeaderValue::from(part.len()));
        Ok(Response {
            status,
            headers,
            version: bits_core::Version::HTTP_11,
            body: Chunks::boxed(part),
        })
    }
}

/// A body streamed in 16 KiB chunks.
struct Chunks(Bytes);

impl Chunks {
    fn boxed(bytes: Bytes) -> Box<dyn BodyStream> {
        Box::new(Chunks(bytes))
    }
}

impl fmt::Debug for Chunks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Chunks({} bytes left)", self.0.len())
    }
}

#[async_trait]
impl BodyStream for Chunks {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, BitsError> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let n = self.0.len().min(16 * 1024);
        Ok(Some(self.0.split_to(n)))
    }
}

/// Prints state changes and, now and then, progress.
#[derive(Default)]
struct Printer {
    last_state: Option<bits_core::JobState>,
}

impl Observer for Printer {
    fn on_progress(&mut self, job: &Job) {
        let total = job.bytes_total().map_or("?".to_string(), |t| t.to_string());
        println!("  progress: {} / {total} bytes", job.bytes_transferred());
    }

    fn on_change(&mut self, job: &Job) {
        if self.last_state != Some(job.state()) {
            self.last_state = Some(job.state());
            println!("state: {}", job.state());
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let app: Bytes = (0..200_000u32)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let transport = MemoryTransport {
        files: HashMap::from([
            ("/releases/app-2.0.bin", app.clone()),
            ("/readme.txt", Bytes::from_static(b"read me\n")),
        ]),
    };

    let dir = tempfile::tempdir()?;
    let mut job = Job::new("embed example", JobType::Download, transport.name());
    job.add_file("http://downloads.example/latest", &dir.path().join("app.bin"))?;
    job.add_file("http://downloads.example/readme.txt", &dir.path().join("README"))?;
    // Report redirects: the first file's remote name becomes the final URL.
    job.set_security_flags(SecurityFlags::parse("0x0100")?, |p| transport.check_policy(p))?;
    job.resume()?;

    let engine = Engine::new(Arc::new(transport));
    let outcome = engine.run_until_settled(&mut job, &mut Printer::default()).await;
    if let Some(error) = &job.error {
        return Err(format!(
            "job ended in {}: {} ({})",
            outcome.state, error.message, error.code
        )
        .into());
    }
    println!("redirect reported: {}", job.files[0].remote_name);

    // Nothing exists at LOCAL until complete renames the temporary files.
    assert!(!dir.path().join("app.bin").exists());
    let code = complete(&mut job)?;
    println!("complete: {code}, job {}", job.state());
    assert_eq!(std::fs::read(dir.path().join("app.bin"))?, app);
    print!("README: {}", std::fs::read_to_string(dir.path().join("README"))?);
    Ok(())
}
