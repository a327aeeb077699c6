//! What a job records of its connection's yielding (`bits info`'s
//! `controller` and `yielding`), against a real server on 127.0.0.1: a
//! background job's connection runs a LEDBAT controller, a FOREGROUND
//! one's never does, in a run of one file as in files in flight.

mod support;

use bits_core::{Controller, JobState, Priority};
use support::*;

#[tokio::test]
async fn a_background_job_records_its_controller_and_a_foreground_one_none() {
    for (priority, files) in [
        (Priority::Normal, 1),
        (Priority::Low, 3),
        (Priority::Foreground, 1),
        (Priority::Foreground, 3),
    ] {
        let routes: Vec<(String, Route)> = (0..files)
            .map(|k| (format!("/y{k}"), Route::body(body(50_000))))
            .collect();
        let borrowed: Vec<(&str, Route)> = routes.iter().map(|(p, r)| (p.as_str(), r.clone())).collect();
        let mut env = Env::new(&borrowed);
        env.job.priority = priority;
        assert_eq!(env.run().await.state, JobState::Transferred, "{priority:?}");
        if priority == Priority::Foreground {
            assert_eq!((env.job.controller, env.job.yielding), (Controller::None, false));
        } else {
            // Window clamping where the kernel clamps mid-stream (6.7+), paced reads before.
            assert!(
                matches!(env.job.controller, Controller::WindowClamp | Controller::Paced),
                "{priority:?} {files}: {:?}",
                env.job.controller
            );
            assert!(env.job.yielding);
        }
    }
}
