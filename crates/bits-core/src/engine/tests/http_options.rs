//! The HttpOptions a job carries into its requests
//! (`docs/spec/http-options.md`): custom headers with the engine's own
//! under one credential rule, the HTTP method, and the embedder's
//! server-certificate validator in the policy every request carries. The
//! same rules against a real HTTP server: `tests/http_options.rs`.

use uuid::Uuid;

use super::*;
use crate::http_options::{PinSet, ServerCertValidator};
use crate::transport::Method;

fn values(s: &Scripted, n: usize, name: &str) -> Vec<String> {
    s.requests.lock().unwrap()[n]
        .headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn custom_headers_join_the_engines_and_credentials_stay_with_the_origin() {
    let mut f = Fixture::new(1);
    f.job
        .set_custom_headers(&[
            "X-Custom: c1",
            "Cookie: k=job",
            "User-Agent: job-agent",
            "X-Custom: c2",
        ])
        .unwrap();
    let engine_headers = headers(&[
        ("authorization", "Bearer engine"),
        ("user-agent", "engine-agent"),
        ("x-engine", "e"),
    ]);
    let s = Scripted::with(
        vec![
            redirect(302, "http://h:80/same"),
            redirect(307, "http://g/other"),
            ok(b"x"),
        ],
        EngineOptions::default(),
        engine_headers,
    );
    assert_eq!(run(&s, &mut f).await.state, JobState::Transferred);
    assert_eq!(s.urls(), ["http://h/f0", "http://h/same", "http://g/other"]);
    for n in 0..3 {
        // Everything but credentials goes everywhere; the job's User-Agent
        // replaces the engine's; a name given twice is sent twice.
        assert_eq!(values(&s, n, "x-custom"), ["c1", "c2"], "request {n}");
        assert_eq!(values(&s, n, "x-engine"), ["e"], "request {n}");
        assert_eq!(values(&s, n, "user-agent"), ["job-agent"], "request {n}");
    }
    for n in 0..2 {
        assert_eq!(values(&s, n, "authorization"), ["Bearer engine"]);
        assert_eq!(values(&s, n, "cookie"), ["k=job"]);
    }
    // Another origin: neither the engine's nor the job's credentials.
    assert!(values(&s, 2, "authorization").is_empty());
    assert!(values(&s, 2, "cookie").is_empty());
}

#[tokio::test]
async fn a_job_without_custom_headers_sends_the_engines_only() {
    let mut f = Fixture::new(1);
    let s = Scripted::with(
        vec![ok(b"x")],
        EngineOptions::default(),
        headers(&[("x-engine", "e")]),
    );
    assert_eq!(run(&s, &mut f).await.state, JobState::Transferred);
    let reqs = s.requests.lock().unwrap();
    assert_eq!(reqs[0].headers.len(), 1);
    assert_eq!(reqs[0].method, Method::GET);
}

#[tokio::test]
async fn custom_headers_go_with_a_resumed_range_request() {
    let mut f = Fixture::new(1);
    f.job.set_custom_headers(&["X-Custom: c"]).unwrap();
    std::fs::write(f.temp(0), b"abc").unwrap();
    f.job.files[0].validator = Some("\"v1\"".into());
    let s = Scripted::new(vec![resp(
        206,
        &[("content-range", "bytes 3-5/6"), ("etag", "\"v1\"")],
        &[b"def"],
    )]);
    assert_eq!(run(&s, &mut f).await.state, JobState::Transferred);
    assert_eq!(s.header(0, "range").as_deref(), Some("bytes=3-"));
    assert_eq!(s.header(0, "if-range").as_deref(), Some("\"v1\""));
    assert_eq!(s.header(0, "x-custom").as_deref(), Some("c"));
    assert_eq!(read(&f.temp(0)), b"abcdef");
}

fn custom_method(f: &mut Fixture, method: &str) {
    f.job.suspend().unwrap();
    f.job.resumed = false;
    f.job.set_http_method(method).unwrap();
    f.job.resume().unwrap();
}

#[tokio::test]
async fn a_custom_method_has_no_body_and_no_range_and_drops_bytes_on_disk() {
    let mut f = Fixture::new(2);
    custom_method(&mut f, "POST");
    // Bytes on disk the counters do not know of (a daemon killed before it
    // saved them), and no restart flag: the engine empties the file itself.
    std::fs::write(f.temp(0), b"stale").unwrap();
    f.job.files[0].validator = Some("\"v1\"".into());
    assert!(!f.job.files[0].restart);
    let s = Scripted::new(vec![ok(b"fresh"), redirect(307, "/moved"), ok(b"two")]);
    assert_eq!(run(&s, &mut f).await.state, JobState::Transferred);
    for r in s.requests.lock().unwrap().iter() {
        assert_eq!(r.method.as_str(), "POST", "{}", r.url);
        assert!(r.body.is_none());
        assert!(r.headers.get("range").is_none() && r.headers.get("if-range").is_none());
    }
    assert_eq!(s.urls(), ["http://h/f0", "http://h/f1", "http://h/moved"]);
    assert_eq!(read(&f.temp(0)), b"fresh");
    assert_eq!(read(&f.temp(1)), b"two");
}

#[tokio::test]
async fn a_custom_method_takes_no_partial_answer() {
    let mut f = Fixture::new(1);
    custom_method(&mut f, "PUT");
    let s = Scripted::new(vec![resp(206, &[("content-range", "bytes 0-2/6")], &[b"abc"])]);
    assert_eq!(run(&s, &mut f).await.state, JobState::Error);
    let invalid = BitsError::InvalidServerResponse { what: String::new() };
    assert_eq!(f.code(), Some(invalid.hresult().0));
}

#[tokio::test]
async fn with_a_custom_method_a_transient_failure_is_fatal_and_resume_restarts() {
    let mut f = Fixture::new(1);
    custom_method(&mut f, "POST");
    let s = Scripted::new(vec![
        resp(200, &[("content-length", "6")], &[b"abc"]),
        resp(503, &[], &[]),
        ok(b"abcdef"),
    ]);
    // Cut short: kept on disk, but ERROR at once.
    assert_eq!(run(&s, &mut f).await.state, JobState::Error);
    assert_eq!(f.code(), Some(0x8007_2EFE));
    assert_eq!(f.job.files[0].bytes_transferred, 3);
    f.job.resume().unwrap();
    assert!(f.job.files[0].restart);
    // A 503: ERROR, not TRANSIENT_ERROR.
    let out = run(&s, &mut f).await;
    assert_eq!((out.state, out.retry_after), (JobState::Error, None));
    assert_eq!(f.code(), Some(0x8019_01F7));
    f.job.resume().unwrap();
    assert_eq!(run(&s, &mut f).await.state, JobState::Transferred);
    assert_eq!(read(&f.temp(0)), b"abcdef");
    assert!(s
        .requests
        .lock()
        .unwrap()
        .iter()
        .all(|r| r.headers.get("range").is_none()));
}

/// Accepts (or rejects with `reject`) and records every question.
#[derive(Debug, Default)]
struct Recording {
    asked: Mutex<Vec<(Uuid, usize, Vec<u8>)>>,
    reject: Option<(usize, Hresult)>,
}

impl Recording {
    fn asked(&self) -> Vec<(usize, String)> {
        self.asked
            .lock()
            .unwrap()
            .iter()
            .map(|(_, i, leaf)| (*i, String::from_utf8(leaf.clone()).unwrap()))
            .collect()
    }
}

impl ServerCertValidator for Recording {
    fn validate(&self, job: Uuid, file_index: usize, leaf: &[u8], chain: &[Vec<u8>]) -> Result<(), Hresult> {
        assert_eq!(chain.first().map(Vec::as_slice), Some(leaf));
        self.asked.lock().unwrap().push((job, file_index, leaf.to_vec()));
        match self.reject {
            Some((i, code)) if i == file_index => Err(code),
            _ => Ok(()),
        }
    }
}

/// A transport that does what a TLS transport does with a request's
/// policy: on a new connection (one per host here) it runs
/// `check_server` with a leaf naming the host, before answering; it
/// records every policy it gets, and answers `ok`, or 503 for a path
/// named `busy*` the first time.
#[derive(Debug, Default)]
struct PolicyRecorder {
    policies: Mutex<Vec<ConnectionPolicy>>,
    busy_once: Mutex<Vec<String>>,
    refuse_validators: bool,
}

#[async_trait::async_trait]
impl Transport for PolicyRecorder {
    fn name(&self) -> &str {
        "policy-recorder"
    }
    fn check_policy(&self, policy: &ConnectionPolicy) -> Result<(), BitsError> {
        if self.refuse_validators && policy.validator().is_some() {
            return Err(BitsError::NotImplemented {
                what: "validators".into(),
            });
        }
        Ok(())
    }
    async fn send(&self, request: Request) -> Result<Response, BitsError> {
        self.policies.lock().unwrap().push(request.policy.clone());
        let host = request.url.host_str().unwrap().to_string();
        let port = request.url.port_or_known_default().unwrap();
        request
            .policy
            .check_server(&host, port, &[host.clone().into_bytes()], &[[7; 32]])?;
        let path = request.url.path().to_string();
        if path.starts_with("/busy") && !self.busy_once.lock().unwrap().contains(&path) {
            self.busy_once.lock().unwrap().push(path);
            return resp(503, &[], &[]);
        }
        ok(b"x")
    }
}

fn validator_fixture(urls: &[&str]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut job = Job::new("v", JobType::Download, "policy-recorder");
    for (n, url) in urls.iter().enumerate() {
        job.add_file(url, &dir.path().join(format!("f{n}"))).unwrap();
    }
    Fixture { dir, job }
}

#[tokio::test]
async fn the_policy_carries_the_jobs_check_with_the_file_index_across_runs() {
    let t = Arc::new(PolicyRecorder::default());
    let engine = sequential(t.clone());
    let v = Arc::new(Recording::default());
    let mut f = validator_fixture(&["https://a/f0", "https://b/busy1", "https://c/f2", "https://a/f3"]);
    engine.set_server_cert_validator(&f.job, Some(v.clone())).unwrap();
    f.job.resume().unwrap();
    // f1 gets a 503: TRANSIENT_ERROR; the retry asks b no more (accepted),
    // and c is asked about file 2. a's certificate is asked about once.
    assert_eq!(
        engine.run(&mut f.job, &mut NoObserver).await.state,
        JobState::TransientError
    );
    f.job.apply(Event::RetryTimer);
    assert_eq!(
        engine.run(&mut f.job, &mut NoObserver).await.state,
        JobState::Transferred
    );
    assert_eq!(
        v.asked(),
        [(0, "a".to_string()), (1, "b".to_string()), (2, "c".to_string())]
    );
    assert!(v.asked.lock().unwrap().iter().all(|(job, ..)| *job == f.job.id));
    let policies = t.policies.lock().unwrap().clone();
    assert_eq!(policies.len(), 5);
    let check = policies[0].validator().expect("the job's check").clone();
    for p in &policies {
        // One check for the job, reused across runs, on top of its own policy.
        assert_eq!(p.validator(), Some(&check));
        assert_eq!(p.clone().with_validator(None), f.job.connection_policy());
    }
    // A clone of the engine holds the same validator.
    assert!(engine.clone().server_cert_validator(f.job.id).is_some());
}

#[tokio::test]
async fn setting_the_validator_again_or_new_pins_clear_its_cache() {
    let t = Arc::new(PolicyRecorder::default());
    let engine = sequential(t.clone());
    let v = Arc::new(Recording::default());
    let mut f = validator_fixture(&["https://a/f0"]);
    let again = |f: &mut Fixture| {
        f.job.suspend().unwrap();
        f.job.files[0].completed = false;
    };
    engine.set_server_cert_validator(&f.job, Some(v.clone())).unwrap();
    f.job.resume().unwrap();
    engine.run(&mut f.job, &mut NoObserver).await;
    // Run again under the same check: cached.
    again(&mut f);
    f.job.resume().unwrap();
    engine.run(&mut f.job, &mut NoObserver).await;
    assert_eq!(v.asked().len(), 1);
    // Set again: asked again.
    again(&mut f);
    engine.set_server_cert_validator(&f.job, Some(v.clone())).unwrap();
    f.job.resume().unwrap();
    engine.run(&mut f.job, &mut NoObserver).await;
    assert_eq!(v.asked().len(), 2);
    // New pins (matching the transport's key): asked again.
    again(&mut f);
    let pins = PinSet::parse(&format!("sha256//{}", BASE64_SEVENS)).unwrap();
    f.job.set_server_cert_pins(pins, |_| Ok(())).unwrap();
    f.job.resume().unwrap();
    assert_eq!(
        engine.run(&mut f.job, &mut NoObserver).await.state,
        JobState::Transferred
    );
    assert_eq!(v.asked().len(), 3);
    let policies = t.policies.lock().unwrap().clone();
    assert_eq!(policies[0], policies[1]);
    assert_ne!(policies[1], policies[2]);
    assert_ne!(policies[2], policies[3]);
    assert!(policies[3].pins().is_some() && policies[3].validator().is_some());
    // Removed: the next run carries no validator.
    again(&mut f);
    engine.set_server_cert_validator(&f.job, None).unwrap();
    assert!(engine.server_cert_validator(f.job.id).is_none());
    f.job.resume().unwrap();
    engine.run(&mut f.job, &mut NoObserver).await;
    assert_eq!(v.asked().len(), 3);
    assert!(t.policies.lock().unwrap()[4].validator().is_none());
}

/// `sha256//` of 32 bytes of 7, the key the [`PolicyRecorder`] presents.
const BASE64_SEVENS: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

#[tokio::test]
async fn a_rejection_is_transient_with_the_validators_code_and_the_file() {
    let t = Arc::new(PolicyRecorder::default());
    let engine = sequential(t);
    let v = Arc::new(Recording {
        reject: Some((1, Hresult(0x8000_1234))),
        ..Recording::default()
    });
    let mut f = validator_fixture(&["https://a/f0", "https://b/f1"]);
    engine.set_server_cert_validator(&f.job, Some(v)).unwrap();
    f.job.resume().unwrap();
    let out = engine.run(&mut f.job, &mut NoObserver).await;
    assert_eq!(out.state, JobState::TransientError);
    let e = f.job.error.as_ref().unwrap();
    assert_eq!(
        (e.code.0, e.context, e.file_index),
        (0x8000_1234, ErrorContext::ServerCertificateCallback, Some(1))
    );
}

#[tokio::test]
async fn the_validator_is_set_only_while_suspended_and_only_if_honoured() {
    let t = Arc::new(PolicyRecorder::default());
    let engine = sequential(t);
    let v: Arc<dyn ServerCertValidator> = Arc::new(Recording::default());
    let code = |r: Result<(), BitsError>| r.unwrap_err().hresult().0;

    let mut f = validator_fixture(&["https://a/f0"]);
    // QUEUED, TRANSIENT_ERROR, ERROR, TRANSFERRED: read-only.
    f.job.resume().unwrap();
    let mut seen = vec![];
    for make in [
        None,
        Some(BitsError::ConnectionReset { reason: "r".into() }),
        Some(BitsError::UnknownCa),
    ] {
        if let Some(e) = make {
            f.job.fail(&e, Some(0), SystemTime::now());
        }
        seen.push(f.job.state());
        assert_eq!(
            code(engine.set_server_cert_validator(&f.job, Some(v.clone()))),
            0x8020_0075
        );
        assert_eq!(code(engine.set_server_cert_validator(&f.job, None)), 0x8020_0075);
        f.job.resume().unwrap();
    }
    assert_eq!(
        seen,
        [JobState::Queued, JobState::TransientError, JobState::Error]
    );
    assert_eq!(
        engine.run(&mut f.job, &mut NoObserver).await.state,
        JobState::Transferred
    );
    assert_eq!(
        code(engine.set_server_cert_validator(&f.job, Some(v.clone()))),
        0x8020_0075
    );
    // ACKNOWLEDGED and CANCELLED: BG_E_INVALID_STATE.
    complete(&mut f.job).unwrap();
    assert_eq!(
        code(engine.set_server_cert_validator(&f.job, Some(v.clone()))),
        0x8020_0002
    );
    let mut g = validator_fixture(&["https://a/f0"]);
    cancel(&mut g.job).unwrap();
    assert_eq!(
        code(engine.set_server_cert_validator(&g.job, Some(v.clone()))),
        0x8020_0002
    );
    assert!(engine.server_cert_validator(f.job.id).is_none());

    // A transport that cannot honour a validator: E_NOTIMPL, nothing kept.
    let refusing = sequential(Arc::new(PolicyRecorder {
        refuse_validators: true,
        ..PolicyRecorder::default()
    }));
    let h = validator_fixture(&["https://a/f0"]);
    assert_eq!(h.job.state(), JobState::Suspended);
    assert_eq!(
        code(refusing.set_server_cert_validator(&h.job, Some(v.clone()))),
        0x8000_4001
    );
    assert!(refusing.server_cert_validator(h.job.id).is_none());
    // SUSPENDED and honoured: kept, and removed again.
    engine.set_server_cert_validator(&h.job, Some(v)).unwrap();
    assert!(engine.server_cert_validator(h.job.id).is_some());
    engine.set_server_cert_validator(&h.job, None).unwrap();
    assert!(engine.server_cert_validator(h.job.id).is_none());
}

/// Every event logged while it is the default subscriber, formatted with
/// its fields (message included).
#[derive(Default, Clone)]
struct Capture(Arc<Mutex<Vec<String>>>);

struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={value:?}", field.name()));
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut line = String::from("span");
        span.record(&mut Fields(&mut line));
        self.0.lock().unwrap().push(line);
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let mut line = String::from("record");
        values.record(&mut Fields(&mut line));
        self.0.lock().unwrap().push(line);
    }
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut line = String::from("event");
        event.record(&mut Fields(&mut line));
        self.0.lock().unwrap().push(line);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test]
async fn header_values_are_never_logged_names_are() {
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());
    let mut f = Fixture::new(2);
    f.job
        .set_custom_headers(&["X-Secret: value-one", "Authorization: Bearer value-two"])
        .unwrap();
    let s = Scripted::with(
        vec![redirect(302, "http://g/elsewhere"), ok(b"x"), resp(404, &[], &[])],
        EngineOptions::default(),
        headers(&[("cookie", "value-three")]),
    );
    assert_eq!(run(&s, &mut f).await.state, JobState::Error);
    let lines = capture.0.lock().unwrap().clone();
    let all = lines.join("\n");
    // The redirect, the withheld credentials, the failure were logged…
    assert!(all.contains("redirect") && all.contains("404"), "{all}");
    assert!(all.contains("authorization") && all.contains("cookie"), "{all}");
    // …and no value.
    for secret in ["value-one", "value-two", "value-three"] {
        assert!(!all.contains(secret), "{secret} logged:\n{all}");
    }
    let e = f.job.error.as_ref().unwrap();
    assert!(!e.message.contains("value-"), "{}", e.message);
}
