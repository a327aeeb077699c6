use bits_core::{Hresult, JobState};

use super::*;

fn policy(root: &Path) -> Policy {
    Policy {
        root: root.canonicalize().unwrap(),
        allow_flags: DEFAULT_ALLOW_FLAGS,
        backend: "openssl".into(),
    }
}

fn ok(_: &ConnectionPolicy) -> Result<(), BitsError> {
    Ok(())
}

const ID: &str = "6f1c1f0e-3a52-4b4e-9d0e-2f4f8d9c1a77";

fn spec(extra: &str) -> Vec<u8> {
    format!(
        r#"{{"id":"{ID}","files":[{{"remote_name":"http://127.0.0.1:1/a","local_name":"pkg/a.bin"}}]{extra}}}"#
    )
    .into_bytes()
}

#[test]
fn a_spec_becomes_a_queued_job_with_the_spec_id_under_the_root() {
    let root = tempfile::tempdir().unwrap();
    let p = policy(root.path());
    let s = Spec::parse(&spec(
        r#","priority":"high","security_flags":"0x0100","min_retry_delay":5"#,
    ))
    .unwrap();
    assert!(s.completes());
    let job = s.to_job(&p, ok).unwrap();
    assert_eq!(job.id.to_string(), ID);
    assert_eq!(job.state(), JobState::Queued);
    assert_eq!(job.files[0].local_name, p.root.join("pkg/a.bin"));
    assert_eq!(job.security_flags.bits(), 0x0100);
    assert_eq!(job.priority, Priority::High);
    assert_eq!(job.min_retry_delay, 5);
    assert_eq!(job.display_name, "fleet-6f1c1f0e");
    // The folder is made only when asked.
    assert!(!p.root.join("pkg").exists());
    make_folders(&job, &p.root).unwrap();
    assert!(p.root.join("pkg").is_dir());
}

#[test]
fn unknown_fields_bad_json_and_no_files_are_rejected() {
    for bad in [
        spec(r#","prority":"high""#),
        b"{not json".to_vec(),
        format!(r#"{{"id":"{ID}","files":[]}}"#).into_bytes(),
        b"{\"id\":\"nope\",\"files\":[]}".to_vec(),
        format!(r#"{{"id":"{ID}","files":[{{"remote_name":"http://h/a","local_name":"a","size":1}}]}}"#)
            .into_bytes(),
    ] {
        let e = Spec::parse(&bad).unwrap_err();
        assert!(!e.0.is_empty());
    }
}

#[test]
fn malformed_values_are_rejected_not_stored() {
    let root = tempfile::tempdir().unwrap();
    let p = policy(root.path());
    for extra in [
        r#","priority":"urgent""#,
        r#","proxy":{"usage":"sometimes"}"#,
        r#","security_flags":"lots""#,
        r#","custom_headers":["no colon"]"#,
    ] {
        let s = Spec::parse(&spec(extra)).unwrap();
        assert!(s.to_job(&p, ok).is_err(), "{extra}");
    }
    let s = Spec::parse(
        format!(r#"{{"id":"{ID}","files":[{{"remote_name":"ftp://h/a","local_name":"a"}}]}}"#).as_bytes(),
    )
    .unwrap();
    assert!(s.to_job(&p, ok).unwrap_err().0.contains("file 0"));
}

fn denied(job: &Job) -> bool {
    job.state() == JobState::Error && job.error.as_ref().unwrap().code == Hresult::E_ACCESSDENIED
}

#[test]
fn a_path_outside_the_root_is_an_error_job_with_access_denied() {
    let root = tempfile::tempdir().unwrap();
    let p = policy(root.path());
    for local in ["../escape.bin", "/etc/passwd", "a/../../b", "."] {
        let s = Spec::parse(
            format!(r#"{{"id":"{ID}","files":[{{"remote_name":"http://h/a","local_name":"{local}"}}]}}"#)
                .as_bytes(),
        )
        .unwrap();
        let job = s.to_job(&p, ok).unwrap();
        assert!(denied(&job), "{local}: {:?}", job.error);
        assert_eq!(job.error.as_ref().unwrap().file_index, Some(0));
    }
    // Through a symlink inside the root that points out of it.
    let out = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(out.path(), p.root.join("link")).unwrap();
    let s = Spec::parse(
        format!(r#"{{"id":"{ID}","files":[{{"remote_name":"http://h/a","local_name":"link/x"}}]}}"#)
            .as_bytes(),
    )
    .unwrap();
    assert!(denied(&s.to_job(&p, ok).unwrap()));
    // An absolute path under the root is fine.
    let inside = p.root.join("x.bin");
    let s = Spec::parse(
        format!(
            r#"{{"id":"{ID}","files":[{{"remote_name":"http://h/a","local_name":"{}"}}]}}"#,
            inside.display()
        )
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(s.to_job(&p, ok).unwrap().state(), JobState::Queued);
}

#[test]
fn flags_beyond_the_mask_are_access_denied_and_those_the_backend_refuses_not_implemented() {
    let root = tempfile::tempdir().unwrap();
    let mut p = policy(root.path());
    // 0x0008 (ignore an unknown CA) is not in 0x0F01.
    let s = Spec::parse(&spec(r#","security_flags":8"#)).unwrap();
    let job = s.to_job(&p, ok).unwrap();
    assert!(denied(&job));
    assert!(job.error.as_ref().unwrap().message.contains("0x0008"));
    // Unknown bits too.
    let s = Spec::parse(&spec(r#","security_flags":"0x8000""#)).unwrap();
    assert!(denied(&s.to_job(&p, ok).unwrap()));
    // Allowed by the owner, refused by the transport.
    p.allow_flags = 0x0F1F;
    let refuse = |_: &ConnectionPolicy| Err(BitsError::NotImplemented { what: "test".into() });
    let job = s.to_job(&p, ok).unwrap();
    assert!(denied(&job), "unknown bits stay outside the mask");
    let s = Spec::parse(&spec(r#","security_flags":8"#)).unwrap();
    let job = s.to_job(&p, refuse).unwrap();
    assert_eq!(job.state(), JobState::Error);
    assert_eq!(job.error.as_ref().unwrap().code, Hresult::E_NOTIMPL);
    assert_eq!(s.to_job(&p, ok).unwrap().state(), JobState::Queued);
}

#[test]
fn complete_defaults_to_yes_and_a_spec_round_trips() {
    let s = Spec::parse(&spec(r#","complete":false,"type":"DOWNLOAD""#)).unwrap();
    assert!(!s.completes());
    let again = Spec::parse(&serde_json::to_vec(&s).unwrap()).unwrap();
    assert_eq!(again, s);
}
