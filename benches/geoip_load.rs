//! Loading the 56 MB GeoLite2-City database into memory, verified and ready
//! for lookups (what a reload costs).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use geoedge_geoip::GeoDb;

mod common;

fn load(c: &mut Criterion) {
    let dir = common::geodata_dir();
    for name in ["GeoLite2-City.mmdb", "dbip-city-lite-latest.mmdb"] {
        let path = dir.join(name);
        if !path.exists() {
            eprintln!("note: {} missing; run .ci/run to fetch it", path.display());
            continue;
        }
        c.bench_function(&format!("geoip_load/{name}"), |b| {
            b.iter(|| std::hint::black_box(GeoDb::open(&path).unwrap()))
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = load
}
criterion_main!(benches);
