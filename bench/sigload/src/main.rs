//! Load generator for Switchboard's signaling benchmarks (placeholder, being written).
fn main() {}
