//! The Agent outside a worker.

use dispatch::Agent;

#[test]
fn try_get_outside_a_worker_is_none() {
    assert!(Agent::try_get().is_none());
}

#[test]
fn get_outside_a_worker_panics_and_says_why() {
    let panic = std::panic::catch_unwind(Agent::get).expect_err("must panic");
    let message = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default();
    assert!(message.contains("outside a cluster worker"), "{message}");
    assert!(message.contains("try_get"), "{message}");
}
