fn main() {
    bulkhead_runtime_build::link();
}
