//! roamd: the roam agent.
fn main() {
    eprintln!("roamd: the agent is not built yet (issue 4)");
    std::process::exit(2);
}
