//! Named points where the kill -9 tests stop the process.
//!
//! In a debug build, `CONSENTRY_TEST_PAUSE_AT=<point>` makes the process print
//! `consentry: paused at <point>` on stderr when it reaches that point and wait there; the
//! test then kills it with SIGKILL and checks that a restart resumes to the same end state
//! as an uninterrupted run. Release builds compile every point away, so a production
//! binary never honours the variable.

/// Marks a point between two steps of a job.
pub fn reach(point: &'static str) {
    #[cfg(debug_assertions)]
    {
        use std::sync::OnceLock;
        static WANTED: OnceLock<Option<String>> = OnceLock::new();
        let wanted = WANTED.get_or_init(|| std::env::var("CONSENTRY_TEST_PAUSE_AT").ok());
        if wanted.as_deref() == Some(point) {
            eprintln!("consentry: paused at {point}");
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = point;
}
