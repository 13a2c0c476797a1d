//! What every custom-harness test binary here shares: a watchdog that turns a hang into
//! a failure, and a check that turns a false condition into one.

use libtest_mimic::{Failed, Trial};
use std::sync::mpsc;
use std::time::Duration;

/// One test: `Ok`, or a failure that says what went wrong.
pub type TestFn = fn() -> Result<(), Failed>;

/// `Ok` when `cond` holds, otherwise a failure saying `msg()`.
pub fn check(cond: bool, msg: impl FnOnce() -> String) -> Result<(), Failed> {
    if cond { Ok(()) } else { Err(msg().into()) }
}

/// Runs `f` under a watchdog: a hang becomes a failure with the test's name, a panic a
/// failure with its message.
pub fn watchdog(name: &'static str, secs: u64, f: TestFn) -> Trial {
    Trial::test(name, move || {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let r = std::panic::catch_unwind(f)
                .unwrap_or_else(|p| Err(format!("panicked: {}", panic_text(&p)).into()));
            let _ = tx.send(r);
        });
        rx.recv_timeout(Duration::from_secs(secs))
            .unwrap_or_else(|_| Err(format!("{name} did not finish within {secs} s (hang)").into()))
    })
}

/// A panic payload's message (empty when it is neither `&str` nor `String`).
pub fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}
