//! Policy benchmarks (filled in with the evaluator).
fn main() {
    divan::main();
}
