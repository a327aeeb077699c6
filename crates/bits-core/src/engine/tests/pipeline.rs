//! The local work done while a request is in flight.

use super::*;

#[tokio::test]
async fn the_previous_file_is_written_out_while_the_next_request_is_in_flight() {
    let mut f = Fixture::new(3);
    let t = InFlight::new(&f, vec![ok(b"one"), ok(b"two"), ok(b"three")]);
    let engine = sequential(t.clone());
    let mut rec = SyncChecker::default();
    assert_eq!(
        engine.run(&mut f.job, &mut rec).await.state,
        JobState::Transferred
    );
    let seen = t.seen.lock().unwrap().clone();
    // Handed over: the file before is still unwritten (its bytes wait in
    // the buffer) and this one not created. Answered: the file before is
    // written out and this one's temporary file is open.
    assert_eq!(
        seen,
        [
            [vec![None, None, None], vec![Some(0), None, None]],
            [vec![Some(0), None, None], vec![Some(3), Some(0), None]],
            [vec![Some(3), Some(0), None], vec![Some(3), Some(3), Some(0)]],
        ]
    );
    assert_eq!(rec.completed_before_sync, Vec::<usize>::new());
    assert_eq!(read(&f.temp(2)), b"three");
    assert!(f.job.files.iter().all(|x| x.completed && x.bytes_transferred > 0));
}

#[tokio::test]
async fn a_file_that_cannot_be_written_out_is_the_one_in_error() {
    // Writing file 0 out fails (disk full) while file 1 is requested.
    let mut f = Fixture::new(2);
    f.job.files[0].temp_name = PathBuf::from("/dev/full");
    let t = InFlight::new(&f, vec![ok(b"one"), ok(b"two")]);
    assert_eq!(
        sequential(t).run(&mut f.job, &mut NoObserver).await.state,
        JobState::Error
    );
    let e = f.job.error.as_ref().unwrap();
    assert_eq!(
        (e.code.0, e.context, e.file_index),
        (0x8007_0070, ErrorContext::LocalFile, Some(0))
    );
    assert!(f.job.files.iter().all(|x| !x.completed));
}

#[tokio::test]
async fn a_temporary_file_opened_early_is_not_left_by_a_response_without_body() {
    let mut f = Fixture::new(2);
    let t = InFlight::new(&f, vec![resp(404, &[], &[])]);
    assert_eq!(
        sequential(t).run(&mut f.job, &mut NoObserver).await.state,
        JobState::Error
    );
    assert_eq!(f.code(), Some(0x8019_0194));
    assert!(!f.temp(0).exists());
    // Opening it failed: that matters only to a response with a body.
    let mut f = Fixture::new(1);
    f.job.files[0].temp_name = f.dir.path().join("no/such/dir/.f.tmp");
    let t = InFlight::new(&f, vec![resp(404, &[], &[])]);
    sequential(t).run(&mut f.job, &mut NoObserver).await;
    assert_eq!(f.code(), Some(0x8019_0194));
    let t = InFlight::new(&f, vec![ok(b"x")]);
    f.job.resume().unwrap();
    sequential(t).run(&mut f.job, &mut NoObserver).await;
    assert_eq!(f.code(), Some(0x8007_0002));
}
