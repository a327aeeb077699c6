//! `complete` and `cancel` after real downloads: what lands at LOCAL, what
//! is deleted, and partial completion.

mod support;

use bits_core::engine::{cancel, complete};
use bits_core::{Hresult, JobState};
use support::*;

#[tokio::test]
async fn complete_moves_every_file_to_local() {
    let (a, b) = (body(120_000), body(10));
    let mut env = Env::new(&[("/a", Route::body(a.clone())), ("/b", Route::body(b.clone()))]);
    std::fs::write(env.local(1), b"an older version").unwrap();
    assert_eq!(env.run().await.state, JobState::Transferred);
    assert!(!env.local(0).exists(), "nothing at LOCAL before complete");
    assert_eq!(complete(&mut env.job).unwrap(), Hresult::S_OK);
    assert_eq!(env.job.state(), JobState::Acknowledged);
    assert_eq!((read(&env.local(0)), read(&env.local(1))), (a, b));
    assert!(!env.temp(0).exists() && !env.temp(1).exists());
    // Only the two files: no temporary file is left in the directory.
    assert_eq!(std::fs::read_dir(env.dir.path()).unwrap().count(), 2);
}

#[tokio::test]
async fn complete_after_an_error_keeps_only_finished_files() {
    let a = body(5000);
    let mut env = Env::new(&[
        ("/a", Route::body(a.clone())),
        ("/b", Route::body(body(90_000)).truncate_after(20_000)),
        ("/c", Route::body("never reached")),
    ]);
    env.job.set_no_progress_timeout(0).unwrap();
    assert_eq!(env.run().await.state, JobState::Error);
    assert!(env.temp(1).exists());
    assert_eq!(complete(&mut env.job).unwrap(), Hresult::BG_S_PARTIAL_COMPLETE);
    assert_eq!(read(&env.local(0)), a);
    assert!(!env.local(1).exists() && !env.temp(1).exists());
    // Files run in parallel: /c may have finished before /b failed. Each
    // file finishes on its own: whole at LOCAL, or nowhere.
    if env.job.files[2].completed {
        assert_eq!(read(&env.local(2)), b"never reached");
    } else {
        assert!(!env.local(2).exists() && !env.temp(2).exists());
    }
    assert_eq!(env.job.state(), JobState::Acknowledged);
}

#[tokio::test]
async fn cancel_deletes_temporary_files_and_leaves_local_alone() {
    let mut env = Env::new(&[
        ("/a", Route::body(body(5000))),
        ("/b", Route::body(body(50_000)).truncate_after(7000)),
    ]);
    std::fs::write(env.local(1), b"the user's file").unwrap();
    assert_eq!(env.run().await.state, JobState::TransientError);
    assert!(env.temp(0).exists() && env.temp(1).exists());
    assert_eq!(cancel(&mut env.job).unwrap(), Hresult::S_OK);
    assert_eq!(env.job.state(), JobState::Cancelled);
    assert!(!env.temp(0).exists() && !env.temp(1).exists() && !env.local(0).exists());
    assert_eq!(read(&env.local(1)), b"the user's file");
    assert_eq!(
        complete(&mut env.job).unwrap_err().hresult(),
        Hresult::BG_E_INVALID_STATE
    );
}

#[tokio::test]
async fn local_files_carry_the_servers_last_modified_time() {
    let mut env = Env::new(&[(
        "/a",
        Route::body(body(1000)).last_modified("Sun, 06 Nov 1994 08:49:37 GMT"),
    )]);
    assert_eq!(env.run().await.state, JobState::Transferred);
    assert_eq!(complete(&mut env.job).unwrap(), Hresult::S_OK);
    let mtime = std::fs::metadata(env.local(0)).unwrap().modified().unwrap();
    assert_eq!(
        mtime,
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(784_111_777)
    );
}
