//! The serial backend: jobs run inline, in the calling thread, the moment they are sent.
//! Same policy, same events, no concurrency: the baseline every speedup is measured against.

use super::{Event, Payload, WorkerKey};
use crate::task::Task;
use crate::wire::worker::run_caught;

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

    pub(crate) fn spawn(&mut self, key: WorkerKey) -> Result<u32, crate::Error> {
        let pid = std::process::id();
        self.events.push(Event::Hello { worker: key, pid });
        self.events.push(Event::Ready { worker: key });
        Ok(pid)
    }

    pub(crate) fn send(&mut self, key: WorkerKey, jobs: &mut [(u64, Payload<T>)]) {
        for (id, p) in jobs.iter_mut() {
            if let Payload::Value(v) = p {
                if let Some(job) = v.take() {
                    let (outcome, compute_ns) = run_caught(job, &self.ctx);
                    self.events.push(Event::Done {
                        worker: key,
                        id: *id,
                        compute_ns,
                        outcome,
                    });
                }
            }
        }
    }

    pub(crate) fn collect(&mut self, out: &mut Vec<Event<T::Output>>) {
        out.append(&mut self.events);
    }

    pub(crate) fn retire(&mut self, key: WorkerKey) {
        self.events.push(Event::Exited {
            worker: key,
            status: "finished".into(),
            stderr_tail: String::new(),
        });
    }
}
