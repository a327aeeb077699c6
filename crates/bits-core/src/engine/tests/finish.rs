//! `complete` and `cancel`.

use super::*;

#[tokio::test]
async fn complete_renames_finished_files_atomically() {
    let mut f = Fixture::new(2);
    std::fs::write(f.local(1), b"old local").unwrap();
    let s = Scripted::new(vec![ok(b"one"), ok(b"two")]);
    run(&s, &mut f).await;
    assert_eq!(complete(&mut f.job).unwrap(), Hresult::S_OK);
    assert_eq!(f.job.state(), JobState::Acknowledged);
    assert_eq!(
        (read(&f.local(0)), read(&f.local(1))),
        (b"one".to_vec(), b"two".to_vec())
    );
    assert!(!f.temp(0).exists() && !f.temp(1).exists());
    assert_eq!(
        complete(&mut f.job).unwrap_err().hresult(),
        Hresult::BG_E_INVALID_STATE
    );
    assert_eq!(
        cancel(&mut f.job).unwrap_err().hresult(),
        Hresult::BG_E_INVALID_STATE
    );
}

#[tokio::test]
async fn complete_in_error_keeps_finished_files_only() {
    let mut f = Fixture::new(3);
    let s = Scripted::new(vec![
        ok(b"one"),
        resp(200, &[("content-length", "9")], &[b"part"]),
    ]);
    f.job.set_no_progress_timeout(0).unwrap();
    assert_eq!(run(&s, &mut f).await.state, JobState::Error);
    assert!(f.temp(1).exists());
    assert_eq!(complete(&mut f.job).unwrap(), Hresult::BG_S_PARTIAL_COMPLETE);
    assert_eq!(read(&f.local(0)), b"one");
    assert!(!f.local(1).exists() && !f.temp(1).exists() && !f.local(2).exists());
    assert_eq!(f.job.state(), JobState::Acknowledged);
}

/// A TRANSFERRED job of `n` files, each temporary file holding `content(k)`.
fn transferred(n: usize, content: impl Fn(usize) -> String) -> Fixture {
    let mut f = Fixture::new(n);
    for k in 0..n {
        std::fs::write(f.temp(k), content(k)).unwrap();
        f.job.files[k].completed = true;
    }
    f.job.apply(Event::AllFilesDone);
    assert_eq!(f.job.state(), JobState::Transferred);
    f
}

/// Makes LOCAL of file `k` a non-empty directory, which no rename replaces.
fn block_local(f: &Fixture, k: usize) {
    std::fs::create_dir(f.local(k)).unwrap();
    std::fs::write(f.local(k).join("x"), b"").unwrap();
}

#[test]
fn a_failed_rename_leaves_the_job_as_it_was() {
    let mut f = transferred(2, |_| "data".into());
    // LOCAL of file 1 is a non-empty directory: rename fails.
    block_local(&f, 1);
    let e = complete(&mut f.job).unwrap_err();
    assert_eq!(e.context(), ErrorContext::LocalFile);
    assert_eq!(f.job.state(), JobState::Transferred);
    assert_eq!(read(&f.local(0)), b"data");
    // Fixed, complete again: file 0 (already renamed) is skipped.
    std::fs::remove_dir_all(f.local(1)).unwrap();
    assert_eq!(complete(&mut f.job).unwrap(), Hresult::S_OK);
    assert_eq!(read(&f.local(1)), b"data");
}

#[test]
fn a_second_complete_skips_the_files_the_first_renamed_and_finishes() {
    let mut f = transferred(4, |n| format!("data {n}"));
    // LOCAL of file 2 is a non-empty directory: files 0 and 1 are renamed,
    // file 2 fails, file 3 is not tried.
    block_local(&f, 2);
    let e = complete(&mut f.job).unwrap_err();
    assert_eq!(e.context(), ErrorContext::LocalFile);
    assert_eq!(f.job.state(), JobState::Transferred);
    for n in 0..2 {
        assert!(!f.temp(n).exists());
        assert_eq!(read(&f.local(n)), format!("data {n}").as_bytes());
    }
    assert!(f.temp(2).exists() && f.temp(3).exists() && !f.local(3).exists());
    // Not fixed yet: the same error again, the renamed files untouched.
    let e = complete(&mut f.job).unwrap_err();
    assert_eq!(e.context(), ErrorContext::LocalFile);
    assert_eq!(f.job.state(), JobState::Transferred);
    // Fixed: files 0 and 1 are skipped (already in place), 2 and 3 renamed.
    std::fs::remove_dir_all(f.local(2)).unwrap();
    assert_eq!(complete(&mut f.job).unwrap(), Hresult::S_OK);
    assert_eq!(f.job.state(), JobState::Acknowledged);
    for n in 0..4 {
        assert!(!f.temp(n).exists());
        assert_eq!(read(&f.local(n)), format!("data {n}").as_bytes());
    }
}

#[test]
fn a_missing_temp_file_without_its_local_is_an_error() {
    let mut f = transferred(3, |_| "data".into());
    // File 1's temporary file vanished and nothing is at its LOCAL.
    std::fs::remove_file(f.temp(1)).unwrap();
    let e = complete(&mut f.job).unwrap_err();
    assert_eq!(e.context(), ErrorContext::LocalFile);
    assert_eq!(f.job.state(), JobState::Transferred);
    assert_eq!(read(&f.local(0)), b"data");
    assert!(!f.local(1).exists());
    // The rename stopped there: file 2 waits in its temporary file.
    assert!(f.temp(2).exists() && !f.local(2).exists());
    // Still an error the next time: nothing makes it look renamed.
    assert_eq!(
        complete(&mut f.job).unwrap_err().context(),
        ErrorContext::LocalFile
    );
    assert!(!f.local(1).exists() && f.temp(2).exists());
}

#[test]
fn cancel_deletes_every_temp_file_and_no_local_file() {
    let mut f = Fixture::new(3);
    std::fs::write(f.temp(0), b"done").unwrap();
    f.job.files[0].completed = true;
    std::fs::write(f.temp(1), b"part").unwrap();
    std::fs::write(f.local(2), b"user's own file").unwrap();
    assert_eq!(cancel(&mut f.job).unwrap(), Hresult::S_OK);
    assert_eq!(f.job.state(), JobState::Cancelled);
    assert!(!f.temp(0).exists() && !f.temp(1).exists() && !f.local(0).exists());
    assert_eq!(read(&f.local(2)), b"user's own file");
}

#[test]
fn cancel_reports_temp_files_it_cannot_delete() {
    let mut f = Fixture::new(1);
    // A directory in the temp file's place cannot be removed as a file.
    std::fs::create_dir(f.temp(0)).unwrap();
    assert_eq!(cancel(&mut f.job).unwrap(), Hresult::BG_S_UNABLE_TO_DELETE_FILES);
    assert_eq!(f.job.state(), JobState::Cancelled);
}
