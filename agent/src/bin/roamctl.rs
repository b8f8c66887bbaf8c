//! roamctl: the roam command line.
fn main() {
    eprintln!("roamctl: not built yet");
    std::process::exit(2);
}
