//! Process pools inside plain `cargo test`: the default libtest harness, `#[test]`
//! functions, and one line (`procpool::test_support!`) that lets this test binary serve as
//! its own workers.

use procpool::{Backend, Pool, Registry, Task};
use serde::{Deserialize, Serialize};

/// Squares a number, and says which process did it.
#[derive(Serialize, Deserialize)]
struct Square(u64);

impl Task for Square {
    const NAME: &'static str = "square";
    type Context = ();
    type Output = (u64, u32);
    fn run(self, _: &()) -> (u64, u32) {
        (self.0 * self.0, std::process::id())
    }
}

procpool::test_support!(Registry::new().task::<Square>());

#[test]
fn a_process_pool_runs_inside_cargo_test() {
    let pool = Pool::<Square>::builder()
        .backend(Backend::Process)
        .workers(2)
        .build()
        .expect("a process pool starts inside a #[test]");
    let out = pool.map((0..20).map(Square)).expect("map");
    let squares: Vec<u64> = out.iter().map(|(s, _)| *s).collect();
    assert_eq!(squares, (0..20).map(|i| i * i).collect::<Vec<_>>());
    let me = std::process::id();
    assert!(
        out.iter().all(|(_, pid)| *pid != me),
        "jobs ran in the test process itself"
    );
    let workers = pool.pids();
    assert_eq!(workers.len(), 2);
    assert!(workers.iter().all(|&p| p != me && p != 0), "{workers:?}");
}

#[test]
fn a_second_test_gets_its_own_pool() {
    let pool = Pool::<Square>::new(1).expect("pool");
    assert_eq!(pool.apply(Square(7)).expect("apply").0, 49);
}
