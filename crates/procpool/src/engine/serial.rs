//! The serial engine: jobs run inline, in the calling thread, the moment they are sent.
//! Same policy, same events, no concurrency: the baseline every speedup is measured against.

use super::{Payload, SpawnError, WorkerKey};
use crate::policy::{ChunkId, Event, Exit, Finished};
use crate::task::{Task, run_caught};

/// Runs jobs in the caller's thread.
pub(crate) struct SerialEngine<T: Task> {
    ctx: T::Context,
    events: Vec<Event<T::Output>>,
}

impl<T: Task> SerialEngine<T> {
    pub(crate) fn new(ctx: T::Context) -> Self {
        SerialEngine {
            ctx,
            events: Vec::new(),
        }
    }

    pub(crate) fn spawn(&mut self, key: WorkerKey) -> Result<u32, SpawnError> {
        let pid = std::process::id();
        self.events.push(Event::Hello { worker: key, pid });
        self.events.push(Event::Ready { worker: key });
        Ok(pid)
    }

    pub(crate) fn send(&mut self, key: WorkerKey, chunk: ChunkId, jobs: &mut [Payload<T>]) {
        let mut results = Vec::with_capacity(jobs.len());
        for p in jobs.iter_mut() {
            if let Payload::Value(v) = p {
                if let Some(job) = v.take() {
                    let (outcome, compute_ns) = run_caught(job, &self.ctx);
                    results.push(Finished {
                        compute_ns,
                        phases: None,
                        outcome: outcome.map_err(Box::new),
                    });
                }
            }
        }
        self.events.push(Event::Done {
            worker: key,
            chunk,
            first: 0,
            results,
        });
    }

    pub(crate) fn collect(&mut self, out: &mut Vec<Event<T::Output>>) {
        out.append(&mut self.events);
    }

    pub(crate) fn retire(&mut self, key: WorkerKey) {
        self.events.push(Event::Exited {
            worker: key,
            exit: Exit {
                status: "finished".into(),
                code: Some(0),
                stderr_tail: String::new(),
            },
        });
    }
}
