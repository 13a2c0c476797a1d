//! Ctrl-C and SIGTERM: the first one stops dispatch and kills every worker (the pool's
//! owner then reaps them and reports what finished, exiting with 128 + the signal); a
//! second one exits at once. Workers live in their own process group, so a terminal's
//! Ctrl-C reaches only the coordinator and the shutdown is ours to run. A first signal
//! that comes after the last result is only noted: the report is printed and the run ends
//! as it would have without it.

use procpool::Terminator;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Catches SIGINT and SIGTERM for the rest of the process's life.
#[derive(Clone)]
pub struct Interrupts {
    caught: Arc<AtomicI32>,
    building: Arc<AtomicBool>,
    /// Every result is in: a signal no longer changes what is printed.
    finished: Arc<AtomicBool>,
    pool: Arc<Mutex<Option<Terminator>>>,
    /// Handed to a pool's builder, so a signal stops the pool even while it starts.
    starting: Terminator,
}

/// The conventional name of the signals we catch.
pub fn name(signal: i32) -> &'static str {
    match signal {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

impl Interrupts {
    /// Installs the handlers and the thread that acts on them.
    pub fn install() -> io::Result<Interrupts> {
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        let me = Interrupts {
            caught: Arc::new(AtomicI32::new(0)),
            building: Arc::new(AtomicBool::new(false)),
            finished: Arc::new(AtomicBool::new(false)),
            pool: Arc::new(Mutex::new(None)),
            starting: Terminator::new(),
        };
        let seen = me.clone();
        std::thread::Builder::new()
            .name("coordinator-signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    if seen.caught.swap(signal, Ordering::SeqCst) != 0 {
                        eprintln!("coordinator: second {}, exiting now", name(signal));
                        std::process::exit(128 + signal);
                    }
                    if seen.finished.load(Ordering::SeqCst) {
                        // The results are all in: they are printed, and the run ends as
                        // it would have (a second signal still exits at once).
                        eprintln!(
                            "coordinator: caught {} after the last result; printing the report",
                            name(signal)
                        );
                        continue;
                    }
                    let pool = seen.pool.lock().unwrap_or_else(PoisonError::into_inner);
                    match pool.as_ref() {
                        Some(t) => {
                            eprintln!("coordinator: caught {}; stopping the workers", name(signal));
                            t.terminate();
                        }
                        // No worker exists yet: nothing to clean up, stop right here.
                        None if !seen.building.load(Ordering::SeqCst) => {
                            eprintln!(
                                "coordinator: caught {} before any worker started; exiting",
                                name(signal)
                            );
                            std::process::exit(128 + signal);
                        }
                        // Workers are starting: the pool being built stops at once.
                        None => {
                            eprintln!(
                                "coordinator: caught {} while workers were starting; stopping them",
                                name(signal)
                            );
                            seen.starting.terminate();
                        }
                    }
                }
            })?;
        Ok(me)
    }

    /// Workers are about to start: from now on a signal stops them instead of the process.
    pub fn building(&self) {
        self.building.store(true, Ordering::SeqCst);
    }

    /// The terminator to hand to a pool's builder (`PoolBuilder::terminator`): a signal
    /// then stops the pool even while its workers are starting.
    pub fn terminator(&self) -> &Terminator {
        &self.starting
    }

    /// Hands over the running pool; if a signal came already, terminates it now.
    pub fn arm(&self, terminator: Terminator) {
        let mut slot = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        if self.caught().is_some() {
            terminator.terminate();
        }
        *slot = Some(terminator);
    }

    /// Every result is in (or the run has stopped taking them): from now on a first
    /// signal is only noted, so that a complete run is never reported as interrupted.
    pub fn finished(&self) {
        self.finished.store(true, Ordering::SeqCst);
    }

    /// Forgets the pool (it is about to be dropped).
    pub fn disarm(&self) {
        *self.pool.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// The first signal caught, if any.
    pub fn caught(&self) -> Option<i32> {
        match self.caught.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s),
        }
    }
}
