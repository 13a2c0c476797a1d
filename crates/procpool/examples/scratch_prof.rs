use procpool::{Backend, Chunk, Pool, Registry, Task};
use serde::{Deserialize, Serialize};
#[derive(Serialize, Deserialize)]
struct Nop;
impl Task for Nop {
    const NAME: &'static str = "nop";
    type Context = ();
    type Output = ();
    fn run(self, _: &()) {}
}
fn main() -> Result<(), procpool::Error> {
    procpool::serve_if_worker(Registry::new().task::<Nop>());
    let b = match std::env::args().nth(1).as_deref() {
        Some("thread") => Backend::Thread,
        Some("process") => Backend::Process,
        _ => Backend::Serial,
    };
    let pool = Pool::<Nop>::builder()
        .workers(2)
        .backend(b)
        .chunksize(Chunk::Auto)
        .build()?;
    let t = std::time::Instant::now();
    let n = 300_000;
    pool.map((0..n).map(|_| Nop))?;
    eprintln!("{b}: {:.0} jobs/s", n as f64 / t.elapsed().as_secs_f64());
    Ok(())
}
